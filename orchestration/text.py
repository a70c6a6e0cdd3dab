"""Checks on text that every way in (the HTTP parser, the plan schema, a model's answer) makes
the same way: what PostgreSQL cannot store, and what says nothing."""

from __future__ import annotations

from marshmallow import ValidationError


def storable_problem(text: str) -> str | None:
    """Why PostgreSQL cannot store text (NUL characters, unpaired surrogates), or None."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogates"
    return None


def made_storable(text: str) -> str:
    """text with what PostgreSQL cannot store (storable_problem) replaced by U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if storable_problem(text) is not None:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def storable(text: str) -> None:
    """A marshmallow validator: storable_problem as a ValidationError."""
    problem = storable_problem(text)
    if problem is not None:
        raise ValidationError(problem)


def not_blank(text: str) -> None:
    """A marshmallow validator: some text besides whitespace (a title of spaces names nothing)."""
    if not text.strip():
        raise ValidationError("must not be blank")
