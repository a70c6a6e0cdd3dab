"""Request bodies: strict JSON, checked before any schema sees it.

Standard JSON only (no NaN or Infinity, no number that overflows a float), nesting bounded so no
parser or validator recurses without limit, and no string PostgreSQL cannot store (NUL
characters, unpaired surrogates). Malformed JSON is a 400; a string that cannot be stored is a
422 naming where it is.
"""

from __future__ import annotations

import json
import math
from typing import Any

import flask
import marshmallow as ma
from flask_smorest import Blueprint as SmorestBlueprint
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import BadRequest

from orchestration.errors import InvalidInput
from orchestration.plans import MAX_PLAN_NESTING
from orchestration.text import storable_problem

# A plan node n levels down sits 2n + 1 levels deep in {"plan": ...}, its list fields 2 more.
# Room for plans twice as deep as PlanSchema allows, so that one too deep reaches the schema
# and gets its 422 naming the limit; only a document deeper than that is malformed (400).
MAX_JSON_DEPTH = 4 * MAX_PLAN_NESTING + 8
_CACHE_KEY = "orch_json_body"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"number {raw[:40]} is out of range")
    return value


def loads(data: bytes) -> Any:
    """Parse a request body; BadRequest (400) when it is not JSON, InvalidInput (422) when it
    holds something no field can accept."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadRequest(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    check_storable(value)
    return value


def check_storable(value: Any) -> None:
    """Walk a parsed document (iteratively) and refuse what PostgreSQL cannot store."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise BadRequest(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, str):
            _check_string(item, path)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_string(key, (*path, key))
                stack.append((child, (*path, key)))
        elif isinstance(item, list):
            stack.extend((child, (*path, str(index))) for index, child in enumerate(item))


def _check_string(text: str, path: tuple[str, ...]) -> None:
    problem = storable_problem(text)
    if problem is not None:
        where = ".".join(_printable(p) for p in path) or "_schema"
        raise InvalidInput(f"{where}: {problem}", {where: [problem]})


def _printable(part: str) -> str:
    return part.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def request_json() -> Any:
    """The current request's JSON body (parsed once), or webargs' `missing` when empty."""
    cache = flask.g
    if _CACHE_KEY not in cache:
        data = flask.request.get_data(cache=True)
        setattr(cache, _CACHE_KEY, loads(data) if data.strip() else core.missing)
    return getattr(cache, _CACHE_KEY)


class Parser(FlaskParser):
    """webargs' parser with the strict body above. Any non-empty body is read as JSON whatever
    its Content-Type (the API speaks JSON only)."""

    def load_json(self, req: flask.Request, schema: ma.Schema) -> Any:
        return request_json()


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = Parser()
