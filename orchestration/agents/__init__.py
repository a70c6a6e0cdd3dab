"""Agent plug-ins, chosen by settings (see CONTRACT.md, Environment).

- ``get_planner()``: ORCH_PLANNER = ``heuristic`` (default, offline, deterministic) or ``llm``
- ``get_executor()``: ORCH_EXECUTOR = ``simulated`` (default), ``llm``, or a dotted path to a
  Python callable (``package.module:function`` or ``package.module.function``)
- ``get_reviewer()``: ORCH_REVIEWER = ``rules`` (default) or ``llm``

The llm choices talk to any OpenAI-compatible chat-completions server (LLM_BASE_URL, LLM_API_KEY,
LLM_MODEL, LLM_TIMEOUT, LLM_PRICES). Each getter builds its agent once per process and builds it
again when the settings change (orchestration.config.reload_settings()). An unknown name, or a
choice missing what it needs, raises AgentConfigError (an orchestration.errors.AgentError).
Importing this package opens no connection; neither does building an agent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from orchestration.agents.base import (
    AgentConfigError,
    AgentProfile,
    DependencyOutput,
    ExecutionFailed,
    ExecutionResult,
    Executor,
    Planner,
    Reviewer,
    ReviewVerdict,
    TaskContext,
)
from orchestration.agents.heuristic import HeuristicPlanner
from orchestration.agents.llm import LLMExecutor, LLMPlanner, LLMReviewer
from orchestration.agents.llm_client import ChatClient
from orchestration.agents.pycallable import CallableExecutor
from orchestration.agents.rules import RulesReviewer
from orchestration.agents.simulated import SimulatedExecutor
from orchestration.config import Settings, get_settings

__all__ = [
    "AgentConfigError",
    "AgentProfile",
    "DependencyOutput",
    "ExecutionFailed",
    "ExecutionResult",
    "Executor",
    "Planner",
    "ReviewVerdict",
    "Reviewer",
    "TaskContext",
    "build_executor",
    "build_planner",
    "build_reviewer",
    "check_agents",
    "get_executor",
    "get_planner",
    "get_reviewer",
    "reset_agents",
]

PLANNERS = ("heuristic", "llm")
EXECUTORS = ("simulated", "llm")
REVIEWERS = ("rules", "llm")


def build_planner(settings: Settings) -> Planner:
    """A new planner for these settings."""
    name = (settings.planner or "").strip().lower()
    if name == "heuristic":
        return HeuristicPlanner()
    if name == "llm":
        return LLMPlanner(ChatClient.from_settings(settings))
    raise AgentConfigError(
        f"unknown ORCH_PLANNER {settings.planner!r}: use one of {', '.join(PLANNERS)}"
    )


def build_executor(settings: Settings) -> Executor:
    """A new executor for these settings."""
    raw = (settings.executor or "").strip()
    name = raw.lower()
    if name == "simulated":
        return SimulatedExecutor.from_settings(settings)
    if name == "llm":
        return LLMExecutor(ChatClient.from_settings(settings))
    if ":" in raw or "." in raw:
        return CallableExecutor.from_spec(raw)
    raise AgentConfigError(
        f"unknown ORCH_EXECUTOR {settings.executor!r}: use simulated, llm, or a dotted path to "
        "a callable such as 'package.module:function'"
    )


def build_reviewer(settings: Settings) -> Reviewer:
    """A new reviewer for these settings."""
    name = (settings.reviewer or "").strip().lower()
    if name == "rules":
        return RulesReviewer()
    if name == "llm":
        return LLMReviewer(ChatClient.from_settings(settings))
    raise AgentConfigError(
        f"unknown ORCH_REVIEWER {settings.reviewer!r}: use one of {', '.join(REVIEWERS)}"
    )


T = TypeVar("T")
_lock = threading.Lock()
_cache: dict[str, tuple[Settings, Any]] = {}


def _cached(kind: str, build: Callable[[Settings], T]) -> T:
    settings = get_settings()
    with _lock:
        hit = _cache.get(kind)
        if hit is not None and (hit[0] is settings or hit[0] == settings):
            return hit[1]
        agent = build(settings)
        _cache[kind] = (settings, agent)
        return agent


def get_planner() -> Planner:
    """The configured planner (ORCH_PLANNER), cached until the settings change."""
    return _cached("planner", build_planner)


def get_executor() -> Executor:
    """The configured executor (ORCH_EXECUTOR), cached until the settings change."""
    return _cached("executor", build_executor)


def get_reviewer() -> Reviewer:
    """The configured reviewer (ORCH_REVIEWER), cached until the settings change."""
    return _cached("reviewer", build_reviewer)


_GETTERS: dict[str, tuple[str, Callable[[], Any]]] = {
    "planner": ("ORCH_PLANNER", get_planner),
    "executor": ("ORCH_EXECUTOR", get_executor),
    "reviewer": ("ORCH_REVIEWER", get_reviewer),
}


def check_agents(*kinds: str) -> None:
    """Resolve the configured agents of these kinds ("planner", "executor", "reviewer") now,
    so that a process refuses to start on a setting that cannot work rather than failing
    every task later. AgentConfigError, one line naming the variable, otherwise. The agents
    built stay cached for the get_* functions."""
    settings = get_settings()
    for kind in kinds:
        variable, get = _GETTERS[kind]
        try:
            get()
        except AgentConfigError as exc:
            message = " ".join(str(exc).split())
            if variable not in message:
                message = f"{variable}={getattr(settings, kind)!r}: {message}"
            raise AgentConfigError(message) from exc


def reset_agents() -> None:
    """Forget the cached agents (the next get_* builds them again)."""
    with _lock:
        _cache.clear()
