"""JSON responses written a chunk of rows at a time, so that a team's whole list of tasks or
its whole graph is never in the API's memory at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response, current_app, stream_with_context


def json_array(chunks: Iterable[list[Any]], dump: Callable[[Any], Any]) -> Iterator[str]:
    """A JSON array of dump(row) for every row of the chunks, a chunk a piece, serialised as
    the app serialises its other responses."""
    encode = current_app.json.dumps
    yield "["
    separator = ""
    for chunk in chunks:
        if chunk:
            yield separator + ",".join(encode(dump(row), separators=(",", ":")) for row in chunk)
            separator = ","
    yield "]"


def streamed(body: Iterator[str]) -> Response:
    """A 200 JSON response written as body yields it. Whatever can fail with an error status
    must fail before: once the response has started, its status is sent."""
    return Response(stream_with_context(body), mimetype="application/json")
