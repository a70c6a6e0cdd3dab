"""JSON responses written a chunk of rows at a time, so that a team's whole list of tasks or
its whole graph is never in the API's memory at once."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from flask import Response, current_app, stream_with_context

T = TypeVar("T")
Dump = Callable[[Any], Any]


def started(chunks: Iterator[T]) -> Iterator[T]:
    """chunks, its first one read now: what fails at the start (an unknown team, a bad query)
    fails before the response has a status, and is answered with its own."""
    first = next(chunks)
    return itertools.chain([first], chunks)


def json_array(chunks: Iterable[list[Any]], dump: Dump) -> Iterator[str]:
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


def json_object(
    sections: Iterable[tuple[str, list[Any]]], dumps: Mapping[str, Dump]
) -> Iterator[str]:
    """A JSON object of arrays from (name, rows) chunks, each name's chunks together: name's
    rows through dumps[name]."""
    yield "{"
    for i, (name, chunks) in enumerate(itertools.groupby(sections, key=operator.itemgetter(0))):
        yield ("," if i else "") + f'"{name}":'
        yield from json_array((rows for _, rows in chunks), dumps[name])
    yield "}"


def streamed(body: Iterator[str]) -> Response:
    """A 200 JSON response written as body yields it (see started)."""
    return Response(stream_with_context(body), mimetype="application/json")
