"""Named statements of db/queries.sql, as SQLAlchemy text clauses (Q["ready_tasks"], ...)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from decimal import Decimal
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


def pg_array(values: Iterable[uuid.UUID | str | Decimal | int | None]) -> str:
    """An array parameter of ids (uuids or their text) or numbers (None as NULL), as
    PostgreSQL's array literal for a statement that casts it (CAST(:ids AS uuid[])): one
    join, where psycopg's array dumper spends microseconds on each element, milliseconds on
    the thousands a batch sends."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
