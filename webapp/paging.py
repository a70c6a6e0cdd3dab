"""The next-page headers of the keyset-paged lists (tasks, assignments): a page followed by more
carries its cursor (orchestration.paging) and the address of the next page."""

from __future__ import annotations

from typing import Any

from flask import url_for

NEXT_PAGE_HEADERS = {
    "X-Next-Cursor": {
        "description": "with `limit`, when more follow: pass it as `after`",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'with `limit`, when more follow: the next page, `rel="next"`',
        "schema": {"type": "string"},
    },
}


def next_page_headers(
    endpoint: str, query: dict[str, Any], cursor: str | None, **view_args: Any
) -> dict[str, str]:
    """The headers of a page: none for the last, else X-Next-Cursor and a Link to the same
    query from just after it (an offset, already spent, is not carried on)."""
    if cursor is None:
        return {}
    following = {k: v for k, v in query.items() if k != "offset"} | {"after": cursor}
    address = url_for(endpoint, **view_args, **following, _external=False)
    return {"X-Next-Cursor": cursor, "Link": f'<{address}>; rel="next"'}
