"""Skill-based assignment scoring (seed epic 3). Pure: no I/O, no framework imports.

Works on ORM rows and on any object with the attributes named in CONTRACT.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

SPECIALIZATION_PRESETS: dict[str, dict[str, float]] = {
    "Technical Executor": {"coding": 0.9, "debugging": 0.8, "testing": 0.7, "deployment": 0.6},
    "Content Creator": {"writing": 0.9, "editing": 0.8, "research": 0.7, "documentation": 0.8},
    "Researcher/Analyzer": {
        "research": 0.9,
        "analysis": 0.9,
        "data_processing": 0.7,
        "summarization": 0.8,
    },
}

NO_REQUIREMENTS_SCORE = 0.5
NO_HISTORY_SUCCESS_RATE = 0.5


class NoWorkersAvailable(Exception):
    """find_best_worker was given no candidates."""


class WorkerLike(Protocol):
    @property
    def agent_id(self) -> Any: ...
    @property
    def specialization(self) -> str | None: ...
    @property
    def skills(self) -> Mapping[str, Any] | None: ...
    @property
    def current_workload(self) -> int: ...
    @property
    def max_concurrent_tasks(self) -> int: ...
    @property
    def tasks_completed(self) -> int: ...
    @property
    def tasks_failed(self) -> int: ...


class TaskLike(Protocol):
    @property
    def required_skills(self) -> Sequence[str] | None: ...


W = TypeVar("W", bound=WorkerLike)


@dataclass(frozen=True)
class SkillProfile:
    skills: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_specialization(cls, specialization: str | None) -> SkillProfile:
        return cls(dict(SPECIALIZATION_PRESETS.get(specialization or "", {})))

    @classmethod
    def of(cls, worker: WorkerLike) -> SkillProfile:
        """The specialization's preset, overridden and extended by the member's own skills."""
        skills = dict(SPECIALIZATION_PRESETS.get(worker.specialization or "", {}))
        skills.update(getattr(worker, "skills", None) or {})
        return cls(skills)

    def match_score(self, required_skills: Iterable[str] | None) -> float:
        required = list(required_skills or [])
        if not required:
            return NO_REQUIREMENTS_SCORE
        total = sum(float(self.skills.get(skill, 0.0)) for skill in required)
        return total / len(required)


@dataclass(frozen=True)
class ScoreBreakdown:
    skill: float
    workload: float
    success_rate: float
    total: float

    def as_dict(self) -> dict[str, float]:
        return {"skill": self.skill, "workload": self.workload, "success_rate": self.success_rate}


def required_skills_of(task: TaskLike) -> list[str]:
    return [str(s) for s in (getattr(task, "required_skills", None) or [])]


def workload_score(worker: WorkerLike) -> float:
    if worker.max_concurrent_tasks <= 0:
        return 0.0
    free = 1.0 - worker.current_workload / worker.max_concurrent_tasks
    return min(1.0, max(0.0, free))


def success_rate(worker: WorkerLike) -> float:
    finished = worker.tasks_completed + worker.tasks_failed
    if finished <= 0:
        return NO_HISTORY_SUCCESS_RATE
    return worker.tasks_completed / finished


@dataclass(frozen=True)
class AssignmentScorer:
    skill_weight: float = 0.5
    workload_weight: float = 0.3
    success_rate_weight: float = 0.2

    def breakdown(
        self, task: TaskLike, worker: WorkerLike, required_skills: Sequence[str] | None = None
    ) -> ScoreBreakdown:
        required = required_skills_of(task) if required_skills is None else list(required_skills)
        skill = min(1.0, max(0.0, SkillProfile.of(worker).match_score(required)))
        load = workload_score(worker)
        success = success_rate(worker)
        total = (
            skill * self.skill_weight
            + load * self.workload_weight
            + success * self.success_rate_weight
        )
        return ScoreBreakdown(skill, load, success, total)

    def calculate_score(
        self, task: TaskLike, worker: WorkerLike, required_skills: Sequence[str] | None = None
    ) -> float:
        return self.breakdown(task, worker, required_skills).total

    def find_best_worker(self, task: TaskLike, workers: Sequence[W]) -> W:
        """The highest-scoring worker; the first of equals wins."""
        if not workers:
            raise NoWorkersAvailable("no workers available")
        required = required_skills_of(task)
        best = workers[0]
        best_score = self.calculate_score(task, best, required)
        for worker in workers[1:]:
            score = self.calculate_score(task, worker, required)
            if score > best_score:
                best, best_score = worker, score
        return best

    def explain(self, task: TaskLike, worker: WorkerLike) -> str:
        parts = self.breakdown(task, worker)
        load_pct = (
            worker.current_workload / worker.max_concurrent_tasks * 100
            if worker.max_concurrent_tasks > 0
            else 100.0
        )
        return (
            f"Assigned to {worker.agent_id} ({worker.specialization or 'Generalist'})\n"
            f"- Skill Match: {parts.skill * 100:.1f}%\n"
            f"- Current Workload: {worker.current_workload}/{worker.max_concurrent_tasks}"
            f" ({load_pct:.0f}%)\n"
            f"- Success Rate: {parts.success_rate * 100:.1f}%"
            f" ({worker.tasks_completed} completed, {worker.tasks_failed} failed)"
        )
