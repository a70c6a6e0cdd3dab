"""Skill-based assignment scoring: the seed's tests (3.1.4), the contract's examples, and
properties checked against an exact (fractions) oracle."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from db.models import Task, TeamMember
from orchestration.scoring import (
    SPECIALIZATION_PRESETS,
    AssignmentScorer,
    NoWorkersAvailable,
    SkillProfile,
)

SKILL_NAMES = sorted({s for preset in SPECIALIZATION_PRESETS.values() for s in preset} | {"rust"})


def worker(**overrides: Any) -> SimpleNamespace:
    """The seed's `TeamMember { ..Default::default() }`."""
    fields: dict[str, Any] = {
        "agent_id": "worker-1",
        "specialization": None,
        "skills": None,
        "current_workload": 0,
        "max_concurrent_tasks": 3,
        "tasks_completed": 0,
        "tasks_failed": 0,
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


def task(required_skills: list[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(required_skills=required_skills)


# --- the seed's tests (3.1.4) -------------------------------------------------------------


def test_skill_matching() -> None:
    profile = SkillProfile.from_specialization("Technical Executor")
    score = profile.match_score(["coding", "testing"])
    assert score > 0.7, "Expected high skill match for coding/testing"


def test_workload_scoring() -> None:
    scorer = AssignmentScorer()
    worker_busy = worker(current_workload=3, max_concurrent_tasks=3)
    worker_free = worker(current_workload=0, max_concurrent_tasks=3)
    score_busy = scorer.calculate_score(task(), worker_busy, [])
    score_free = scorer.calculate_score(task(), worker_free, [])
    assert score_free > score_busy, "Free worker should score higher"


def test_best_worker_selection() -> None:
    scorer = AssignmentScorer()
    workers = [
        worker(
            specialization="Technical Executor",
            current_workload=2,
            max_concurrent_tasks=3,
            tasks_completed=10,
            tasks_failed=1,
        ),
        worker(
            specialization="Content Creator",
            current_workload=0,
            max_concurrent_tasks=3,
            tasks_completed=5,
            tasks_failed=0,
        ),
    ]
    best = scorer.find_best_worker(task(["coding", "testing"]), workers)
    assert best.specialization == "Technical Executor"


# --- the contract's examples --------------------------------------------------------------


def test_contract_match_score_example() -> None:
    score = SkillProfile.from_specialization("Technical Executor").match_score(
        ["coding", "testing"]
    )
    assert score == pytest.approx(0.8)


@pytest.mark.parametrize("required", [None, []])
def test_no_required_skills_scores_one_half(required: list[str] | None) -> None:
    for specialization in [*SPECIALIZATION_PRESETS, None, "Unknown"]:
        assert SkillProfile.from_specialization(specialization).match_score(required) == 0.5
    assert AssignmentScorer().breakdown(task(required), worker()).skill == 0.5


def test_unmatched_skills_count_as_zero() -> None:
    profile = SkillProfile.from_specialization("Content Creator")
    assert profile.match_score(["writing", "coding"]) == pytest.approx(0.45)
    assert SkillProfile.from_specialization(None).match_score(["coding"]) == 0.0


def test_contract_weights() -> None:
    scorer = AssignmentScorer()
    assert (scorer.skill_weight, scorer.workload_weight, scorer.success_rate_weight) == (
        0.5,
        0.3,
        0.2,
    )
    w = worker(
        specialization="Technical Executor",
        current_workload=2,
        max_concurrent_tasks=3,
        tasks_completed=10,
        tasks_failed=1,
    )
    expected = 0.5 * 0.8 + 0.3 * (1 - 2 / 3) + 0.2 * (10 / 11)
    assert scorer.calculate_score(task(["coding", "testing"]), w) == pytest.approx(expected)


def test_contract_explanation_text() -> None:
    w = worker(
        agent_id="worker-7",
        specialization="Technical Executor",
        current_workload=2,
        max_concurrent_tasks=3,
        tasks_completed=10,
        tasks_failed=1,
    )
    assert AssignmentScorer().explain(task(["coding", "testing"]), w) == (
        "Assigned to worker-7 (Technical Executor)\n"
        "- Skill Match: 80.0%\n"
        "- Current Workload: 2/3 (67%)\n"
        "- Success Rate: 90.9% (10 completed, 1 failed)"
    )


def test_explanation_names_a_generalist_and_no_history() -> None:
    text = AssignmentScorer().explain(task(), worker(agent_id="w", specialization=None))
    assert text.splitlines() == [
        "Assigned to w (Generalist)",
        "- Skill Match: 50.0%",
        "- Current Workload: 0/3 (0%)",
        "- Success Rate: 50.0% (0 completed, 0 failed)",
    ]


def test_custom_skills_override_and_extend_the_preset() -> None:
    w = worker(specialization="Technical Executor", skills={"coding": 0.5, "rust": 1.0})
    profile = SkillProfile.of(w)
    assert profile.skills["coding"] == 0.5  # overridden
    assert profile.skills["rust"] == 1.0  # extended
    assert profile.skills["testing"] == 0.7  # kept from the preset
    assert profile.match_score(["coding", "rust"]) == pytest.approx(0.75)
    assert AssignmentScorer().breakdown(task(["coding", "rust"]), w).skill == pytest.approx(0.75)


def test_custom_skills_without_specialization() -> None:
    w = worker(specialization=None, skills={"writing": 0.6})
    assert SkillProfile.of(w).match_score(["writing"]) == pytest.approx(0.6)


def test_workload_and_success_rate_edges() -> None:
    scorer = AssignmentScorer()
    assert scorer.breakdown(task(), worker(current_workload=3)).workload == 0.0
    assert scorer.breakdown(task(), worker(current_workload=5)).workload == 0.0
    assert scorer.breakdown(task(), worker(max_concurrent_tasks=0)).workload == 0.0
    assert scorer.breakdown(task(), worker()).success_rate == 0.5
    assert scorer.breakdown(task(), worker(tasks_failed=4)).success_rate == 0.0
    assert scorer.breakdown(task(), worker(tasks_completed=4)).success_rate == 1.0


def test_no_workers_available() -> None:
    with pytest.raises(NoWorkersAvailable):
        AssignmentScorer().find_best_worker(task(["coding"]), [])


def test_first_of_equals_wins() -> None:
    a, b, c = worker(agent_id="a"), worker(agent_id="b"), worker(agent_id="c")
    assert AssignmentScorer().find_best_worker(task(["coding"]), [a, b, c]) is a
    assert AssignmentScorer().find_best_worker(task(["coding"]), [c, b, a]) is c


def test_works_on_orm_rows() -> None:
    # `Any`: scoring's TaskLike/WorkerLike protocols declare plain (mutable, hence invariant)
    # attributes, which mypy will not match with `Mapped[list[str] | None]` columns; the rows
    # themselves work, which is what this test checks.
    rows: list[Any] = [
        TeamMember(
            agent_id="writer",
            specialization="Content Creator",
            skills=None,
            current_workload=0,
            max_concurrent_tasks=3,
            tasks_completed=5,
            tasks_failed=0,
        ),
        TeamMember(
            agent_id="coder",
            specialization="Technical Executor",
            skills={"rust": 0.9},
            current_workload=2,
            max_concurrent_tasks=3,
            tasks_completed=10,
            tasks_failed=1,
        ),
    ]
    row_task: Any = Task(title="t", required_skills=["coding", "testing"])
    scorer = AssignmentScorer()
    assert scorer.find_best_worker(row_task, rows) is rows[1]
    assert scorer.calculate_score(row_task, rows[1]) == pytest.approx(
        scorer.calculate_score(task(["coding", "testing"]), worker(**_attrs(rows[1])))
    )
    assert scorer.explain(row_task, rows[1]).startswith("Assigned to coder (Technical Executor)\n")
    rust_task: Any = Task(title="t", required_skills=["rust"])
    no_skills_task: Any = Task(title="t")
    assert scorer.breakdown(rust_task, rows[1]).skill == 0.9
    assert scorer.breakdown(no_skills_task, rows[0]).skill == 0.5


def _attrs(row: TeamMember) -> dict[str, Any]:
    names = ["agent_id", "specialization", "skills", "current_workload", "max_concurrent_tasks"]
    return {n: getattr(row, n) for n in [*names, "tasks_completed", "tasks_failed"]}


def test_explicit_required_skills_override_the_task() -> None:
    w = worker(specialization="Technical Executor")
    scorer = AssignmentScorer()
    assert scorer.breakdown(task(["writing"]), w, ["coding"]).skill == pytest.approx(0.9)
    assert scorer.breakdown(task(["coding"]), w, []).skill == 0.5


# --- properties ----------------------------------------------------------------------------

proficiency = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
skills_dicts = st.none() | st.dictionaries(st.sampled_from(SKILL_NAMES), proficiency, max_size=4)
specializations = st.sampled_from([*SPECIALIZATION_PRESETS, None, "Unknown"])
required_lists = st.none() | st.lists(st.sampled_from(SKILL_NAMES), max_size=5)


@st.composite
def workers(draw: st.DrawFn, agent_id: str = "w") -> SimpleNamespace:
    capacity = draw(st.integers(min_value=0, max_value=10))
    return worker(
        agent_id=agent_id,
        specialization=draw(specializations),
        skills=draw(skills_dicts),
        max_concurrent_tasks=capacity,
        current_workload=draw(st.integers(min_value=0, max_value=capacity + 2)),
        tasks_completed=draw(st.integers(min_value=0, max_value=50)),
        tasks_failed=draw(st.integers(min_value=0, max_value=50)),
    )


def oracle_components(required: list[str] | None, w: SimpleNamespace) -> tuple[Fraction, ...]:
    """The contract's definitions, in exact arithmetic."""
    profile = dict(SPECIALIZATION_PRESETS.get(w.specialization or "", {}))
    profile.update(w.skills or {})
    if not required:
        skill = Fraction(1, 2)
    else:
        skill = sum((Fraction(profile.get(s, 0.0)) for s in required), Fraction(0)) / len(required)
    if w.max_concurrent_tasks == 0:
        load = Fraction(0)
    else:
        load = max(Fraction(0), 1 - Fraction(w.current_workload, w.max_concurrent_tasks))
    finished = w.tasks_completed + w.tasks_failed
    success = Fraction(1, 2) if finished == 0 else Fraction(w.tasks_completed, finished)
    total = skill * Fraction(1, 2) + load * Fraction(3, 10) + success * Fraction(1, 5)
    return skill, load, success, total


@given(workers(), required_lists)
def test_scores_and_components_within_unit_interval(w: SimpleNamespace, required: Any) -> None:
    parts = AssignmentScorer().breakdown(task(required), w)
    for value in (parts.skill, parts.workload, parts.success_rate, parts.total):
        assert 0.0 <= value <= 1.0
    assert AssignmentScorer().calculate_score(task(required), w) == parts.total


@given(workers(), required_lists)
def test_score_matches_the_exact_oracle(w: SimpleNamespace, required: Any) -> None:
    parts = AssignmentScorer().breakdown(task(required), w)
    skill, load, success, total = oracle_components(required, w)
    assert parts.skill == pytest.approx(float(skill), abs=1e-9)
    assert parts.workload == pytest.approx(float(load), abs=1e-9)
    assert parts.success_rate == pytest.approx(float(success), abs=1e-9)
    assert parts.total == pytest.approx(float(total), abs=1e-9)
    assert parts.as_dict() == {
        "skill": parts.skill,
        "workload": parts.workload,
        "success_rate": parts.success_rate,
    }


@given(workers(), required_lists, st.integers(0, 12), st.integers(0, 12))
def test_total_is_non_increasing_in_workload(
    w: SimpleNamespace, required: Any, load_a: int, load_b: int
) -> None:
    low, high = sorted((load_a, load_b))
    scorer = AssignmentScorer()
    less_busy = scorer.calculate_score(
        task(required), worker(**{**vars(w), "current_workload": low})
    )
    busier = scorer.calculate_score(task(required), worker(**{**vars(w), "current_workload": high}))
    assert less_busy >= busier


@given(
    workers(),
    required_lists,
    st.tuples(st.integers(0, 30), st.integers(0, 30)),
    st.tuples(st.integers(0, 30), st.integers(0, 30)),
)
def test_total_is_non_decreasing_in_success_rate(
    w: SimpleNamespace,
    required: Any,
    history_a: tuple[int, int],
    history_b: tuple[int, int],
) -> None:
    def rate(history: tuple[int, int]) -> Fraction:
        done, failed = history
        return Fraction(1, 2) if done + failed == 0 else Fraction(done, done + failed)

    worse, better = sorted((history_a, history_b), key=rate)
    scorer = AssignmentScorer()

    def score(history: tuple[int, int]) -> float:
        done, failed = history
        return scorer.calculate_score(
            task(required), worker(**{**vars(w), "tasks_completed": done, "tasks_failed": failed})
        )

    assert score(worse) <= score(better)


@st.composite
def worker_lists(draw: st.DrawFn) -> list[SimpleNamespace]:
    size = draw(st.integers(min_value=1, max_value=8))
    pool = [draw(workers(agent_id=f"w{i}")) for i in range(size)]
    # Repeat some workers' attributes exactly, so ties are common.
    picks = draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=10))
    return [worker(**{**vars(pool[i]), "agent_id": f"a{n}"}) for n, i in enumerate(picks)]


@given(worker_lists(), required_lists)
def test_find_best_worker_is_the_first_argmax(
    candidates: list[SimpleNamespace], required: Any
) -> None:
    scorer = AssignmentScorer()
    t = task(required)
    scores = [scorer.calculate_score(t, w) for w in candidates]
    expected = candidates[scores.index(max(scores))]
    assert scorer.find_best_worker(t, candidates) is expected
    # ... and the exact oracle agrees that nobody scores more than it (up to rounding).
    best_exact = max(oracle_components(required, w)[3] for w in candidates)
    assert float(oracle_components(required, expected)[3]) == pytest.approx(
        float(best_exact), abs=1e-9
    )
