"""Named statements of db/queries.sql, as SQLAlchemy text clauses (Q["ready_tasks"], ...)."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import TextClause, text

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def load(path: Path) -> dict[str, TextClause]:
    source = path.read_text()
    parts = _HEADER.split(source)
    statements: dict[str, TextClause] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(line for line in body.splitlines() if not line.startswith("--")).strip()
        statements[name] = text(sql.rstrip(";"))
    return statements


Q = load(Path(__file__).with_name("queries.sql"))
