"""Every Celery setting of the project (`celery -A orchestration worker|beat|flower`)."""

from __future__ import annotations

from datetime import timedelta

from orchestration.config import get_settings

_settings = get_settings()

broker_url = _settings.redis_url
result_backend = _settings.redis_url
broker_connection_retry_on_startup = True
broker_transport_options = {"visibility_timeout": 3600}
result_expires = 3600
task_ignore_result = True

imports = ("orchestration.tasks",)
task_default_queue = "orchestration"
task_routes = {"orchestration.*": {"queue": "orchestration"}}
task_serializer = "json"
accept_content = ["json"]

# A message is acknowledged after its task ran, so a killed worker's pass runs again.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_time_limit = 120
task_soft_time_limit = 100
worker_concurrency = 2
worker_max_tasks_per_child = 10_000
worker_hijack_root_logger = False

# Flower shows tasks (and agent executions) from these events; ORCH_TASK_EVENTS=off saves
# their cost (bench 1 measures both).
worker_send_task_events = _settings.task_events
task_send_sent_event = _settings.task_events
task_track_started = True

beat_schedule = {
    "orchestrate-active-teams": {
        "task": "orchestration.orchestrate_active_teams",
        "schedule": timedelta(seconds=_settings.pass_interval),
        "options": {"expires": max(1.0, _settings.pass_interval)},
    },
    "reconcile-streams": {
        "task": "orchestration.reconcile_streams",
        "schedule": timedelta(seconds=_settings.reconcile_interval),
        "options": {"expires": max(1.0, _settings.reconcile_interval)},
    },
    # ORCH_HISTORY_DAYS: the task does nothing while it is 0.
    "prune-history": {
        "task": "orchestration.prune_history",
        "schedule": timedelta(hours=1),
        "options": {"expires": 3600},
    },
}
beat_max_loop_interval = min(5.0, _settings.pass_interval)
