"""Keyset cursors of the paged lists (tasks, assignments): a cursor is the position of a page's
last row in its list's order, opaque to clients, so the next page starts right after it. Unlike
an offset it costs nothing to skip to and does not shift while rows are added."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from orchestration.errors import InvalidInput

CURSOR_ERROR = "not a cursor of this list: pass on the X-Next-Cursor of the page before"


def encode_cursor(position: list[Any]) -> str:
    """The cursor of a position (a list of JSON values)."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, length: int) -> list[Any]:
    """The position of a cursor from encode_cursor, of length values; InvalidInput (naming the
    `after` parameter) for anything else."""
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as exc:
        raise bad_cursor() from exc
    if not isinstance(position, list) or len(position) != length:
        raise bad_cursor()
    return position


def timestamp_and_id(created_at: Any, row_id: Any) -> tuple[datetime, uuid.UUID]:
    """A cursor's (time with its zone, uuid) pair, as encode_cursor wrote them."""
    try:
        at, id_ = datetime.fromisoformat(created_at), uuid.UUID(row_id)
    except (ValueError, TypeError, AttributeError) as exc:
        raise bad_cursor() from exc
    if at.tzinfo is None:
        raise bad_cursor()
    return at, id_


def bad_cursor() -> InvalidInput:
    return InvalidInput(CURSOR_ERROR, {"after": [CURSOR_ERROR]})
