"""The offline reviewer: every acceptance criterion must be addressed by the output.

A criterion is met when the output's "criteria" mapping addresses it (a non-empty answer that is
not a refusal), or when every significant word of the criterion appears in the output's text.
No criteria: accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from orchestration.agents.base import ReviewVerdict, TaskContext
from orchestration.agents.vocabulary import significant_words

_NEGATIVE = re.compile(
    r"^\s*(?:no|none|n/?a|false|todo|tbd|missing|not\s+(?:addressed|done|met|covered))\b",
    re.IGNORECASE,
)


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def _texts(value: Any, skip_criteria: bool = False) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if skip_criteria and key == "criteria":
                continue
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def _addressed(answer: Any) -> bool:
    if answer is None or answer is False:
        return False
    if answer is True:
        return True
    text = " ".join(_texts(answer)).strip()
    return bool(text) and not _NEGATIVE.match(text)


def criterion_met(criterion: str, output: Mapping[str, Any]) -> bool:
    """Is this criterion addressed by the output?"""
    declared = output.get("criteria")
    if isinstance(declared, Mapping):
        wanted = _normal(criterion)
        for key, answer in declared.items():
            if _normal(key) == wanted:
                return _addressed(answer)
    needed = set(significant_words(criterion))
    if not needed:
        return True
    present = set(significant_words(" ".join(_texts(output, skip_criteria=True))))
    return needed <= present


def unmet_criteria(criteria: Iterable[str], output: Mapping[str, Any]) -> list[str]:
    return [c for c in criteria if not criterion_met(c, output or {})]


class RulesReviewer:
    """Reviewer protocol: accepted when every acceptance criterion is met."""

    def review(self, ctx: TaskContext, output: dict[str, Any]) -> ReviewVerdict:
        criteria = [c for c in ctx.acceptance_criteria if c and c.strip()]
        if not criteria:
            return ReviewVerdict(accepted=True, feedback="No acceptance criteria: accepted.")
        if not isinstance(output, Mapping):
            output = {"result": output}
        unmet = unmet_criteria(criteria, output)
        if not unmet:
            return ReviewVerdict(
                accepted=True,
                feedback=f"All {len(criteria)} acceptance criteria are met.",
            )
        lines = "\n".join(f"- {c}" for c in unmet)
        return ReviewVerdict(
            accepted=False,
            feedback=(
                f"{len(unmet)} of {len(criteria)} acceptance criteria not met; the output does "
                f"not address:\n{lines}"
            ),
        )
