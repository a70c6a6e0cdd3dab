"""Plans shared by the pipeline scenarios."""

from __future__ import annotations

from typing import Any

# A diamond (b and c after a, d after both) whose corners are a three-level hierarchy: 9 tasks,
# 5 of them leaves (A1, B, C, D11, D2).
DIAMOND_AND_HIERARCHY: dict[str, Any] = {
    "key": "root",
    "title": "ship it",
    "subtasks": [
        {"key": "a", "title": "A", "subtasks": [{"key": "a1", "title": "A1"}]},
        {"key": "b", "title": "B", "depends_on": ["a"]},
        {"key": "c", "title": "C", "depends_on": ["a"]},
        {
            "key": "d",
            "title": "D",
            "depends_on": ["b", "c"],
            "subtasks": [
                {"key": "d1", "title": "D1", "subtasks": [{"key": "d11", "title": "D11"}]},
                {"key": "d2", "title": "D2", "depends_on": ["d1"]},
            ],
        },
    ],
}
