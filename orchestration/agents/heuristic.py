"""The offline, deterministic planner: goal text -> TaskNode tree.

How a goal is read:

- **Structure.** Bulleted or numbered lines (nested by indentation) are steps; an inline
  "1) ... 2) ..." is too. Otherwise each sentence is a step, and a sentence is cut further at
  "then", "after that", "finally", "before", "once"/"after" clauses. Sentences that describe the
  situation ("We sell bikes in Berlin.") are context, not work.
- **Parallel work.** Inside a step, "and" and commas separate actions when what follows starts
  with a verb ("write a report and build a dashboard"); a lone verb shares the next action's
  object ("test and deploy the dashboard" -> "Test the dashboard", "Deploy the dashboard").
  A step of several actions becomes a summary task with one subtask per action.
- **Order.** "then", "next", "after that", ordinals and numbered lists chain a step to the one
  before; "finally"/"lastly" waits for everything before; "once X"/"after X" waits for the earlier
  task X names (or a new task for X when it is an action); "X before Y" runs X first. Actions of
  one step follow the natural stages of work (research < analyse < design < build < test < fix <
  deploy), and a later action on "the" same object named earlier waits for it.
- **Skills** come from the verb and a keyword table over the presets' skill names; when the team
  is known, skills somebody on it has are preferred, and a member's own skill named in the text
  ("python") is used as is.
- **Limits.** Nodes deeper than max_depth are folded into their ancestor (which then covers their
  text, criteria and skills); long goals are grouped into parts; the plan never exceeds
  orchestration.plans.MAX_PLAN_NODES nodes. Only the first MAX_GOAL_CHARS characters are read,
  and every step is linear or bounded, so even a megabyte of text is planned in seconds.

The same goal and team always give the same tree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestration.agents.base import AgentProfile
from orchestration.agents.vocabulary import (
    CONTEXT_STARTERS,
    SKILL_KEYWORDS,
    SKILLS,
    STOPWORDS,
    VERBS,
    base_verb,
    derived_verb,
    normalize_skill,
    significant_words,
    starts_with_gerund,
    starts_with_verb,
    team_skills,
    word_set,
    words,
)
from orchestration.plans import MAX_DEPTH_LIMIT, MAX_PLAN_NODES

MAX_TITLE = 150
MAX_DESCRIPTION = 20_000
MAX_GOAL_CHARS = 100_000  # what the planner reads of a goal (the rest only in the description)
MAX_SKILLS = 3
SECTION_THRESHOLD = 30
SECTION_SIZE = 10
MAX_CHILDREN = 200
ROOT_KEY = "goal"
MAX_ESTIMATED_TOKENS = 10_000_000
REFERENCE_LOOKBACK = 25
CONDITION_LOOKBACK = 200
STAGE_WINDOW = 12

# --------------------------------------------------------------------------------------------
# Text helpers


def _clean(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip(" \t,;:.!?-\u2013\u2014").strip()


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def _title(text: str) -> str:
    return _truncate(_capitalize(_clean(text)), MAX_TITLE) or "Untitled task"


_FILLERS = re.compile(
    r"^(?:(?:please|kindly|also|and|so|just|then)\s+|"
    r"(?:we|i|you|they|the\s+team)\s+(?:really\s+)?(?:need|needs|want|wants|would\s+like|"
    r"should|must|have|has|will|shall|can|could|might|are\s+going|am\s+going|plan|hope)"
    r"(?:\s+to)?\s+|"
    r"(?:i|we)'?d\s+like\s+(?:you\s+)?to\s+|(?:i|we)\s+need\s+you\s+to\s+|"
    r"let'?s\s+|lets\s+|make\s+sure\s+(?:to|that\s+you)\s+|be\s+sure\s+to\s+|try\s+to\s+|"
    r"(?:your|the)\s+(?:task|job|goal)\s+is\s+to\s+|to\s+)",
    re.IGNORECASE,
)


def _strip_fillers(text: str) -> str:
    previous = None
    text = text.strip()
    while previous != text:
        previous = text
        text = _FILLERS.sub("", text, count=1).strip()
    return text


def _imperative(text: str) -> str:
    """ "researching the market" -> "research the market"; "start by testing" -> "test"."""
    text = _strip_fillers(text)
    text = re.sub(r"^(?:start|begin)\s+(?:by|with)\s+", "", text, flags=re.IGNORECASE)
    ws = text.split(" ", 1)
    if ws and starts_with_gerund(text):
        lemma = derived_verb(re.sub(r"[^A-Za-z]", "", ws[0]))
        if lemma:
            return lemma + (" " + ws[1] if len(ws) > 1 else "")
    return text


# Markers at the start of a sentence or a clause.
_LEAD_MARKER = re.compile(
    r"^(?:and\s+|but\s+)?(?P<m>then|next|after\s+that|afterwards?|subsequently|"
    r"finally|lastly|last\s+of\s+all|in\s+the\s+end|eventually|at\s+the\s+end|"
    r"first\s+of\s+all|first(?:ly)?|to\s+(?:start|begin)(?:\s+with)?|initially|"
    r"second(?:ly)?|third(?:ly)?|fourth(?:ly)?|fifth(?:ly)?|"
    r"also|additionally|in\s+addition|meanwhile|in\s+parallel|at\s+the\s+same\s+time|"
    r"simultaneously)\b,?\s*",
    re.IGNORECASE,
)


def _marker_kind(marker: str) -> str:
    m = re.sub(r"\s+", " ", marker.lower())
    if m in {"finally", "lastly", "last of all", "in the end", "eventually", "at the end"}:
        return "finally"
    if m.startswith("first") or m in {"to start", "to begin", "to start with", "to begin with"}:
        return "first"
    if m == "initially":
        return "first"
    if m in {"also", "additionally", "in addition", "meanwhile", "in parallel"} or m in {
        "at the same time",
        "simultaneously",
    }:
        return "parallel"
    return "then"


# Cuts inside a sentence: sequence words between clauses.
_SEQUENCE_SPLIT = re.compile(
    r"(?:\s*[,;]\s*|\s+)(?:and\s+)?(?P<m>then|after\s+that|afterwards?|subsequently)\b,?\s+|"
    r"\s*[,;]\s*(?:and\s+)?(?P<n>next)\b,?\s+|"
    r"(?:\s*[,;]\s*|\s+and\s+|\s*,\s*and\s+)(?P<f>finally|lastly|eventually)\b,?\s+",
    re.IGNORECASE,
)

_SUBORDINATE = re.compile(
    r"^(?P<k>once|after|when|as\s+soon\s+as|following|before)\s+(?P<cond>[^,]+?),\s*(?P<main>.+)$",
    re.IGNORECASE,
)
_INLINE = re.compile(
    r"^(?P<main>.+?)\s+(?:only\s+)?(?P<k>once|after|before|when)\s+(?P<cond>.+)$",
    re.IGNORECASE,
)
_DONE_WORDS = word_set(
    "done finished finish complete completed ready available approved pass passes passed "
    "work works working succeed succeeds exist exists"
)

_ACTION_SPLIT = re.compile(r"(\s*,\s*(?:and\s+)?|\s+and\s+|\s+as\s+well\s+as\s+|\s+plus\s+)")

_PARTICLES = {"set": "up", "look": "into", "roll": "out", "find": "out", "clean": "up"}

_ABBREVIATIONS = word_set(
    "e.g i.e etc vs approx mr mrs ms dr inc ltd co jr sr no fig st u.s cf al resp incl"
)


def _sentences(paragraph: str) -> list[str]:
    parts = re.split(r"(?<=[.!?;])\s+", paragraph.strip())
    out: list[list[str]] = []  # each sentence as its pieces (joined once: linear time)
    for part in parts:
        if out:
            last = out[-1][-1]
            tail = last[:-1].rsplit(" ", 1)[-1] if last.endswith(".") else ""
            initial = len(tail) == 1 and tail.isupper()  # "J. Smith"
            if tail.lower() in _ABBREVIATIONS or initial or not part[:1].strip():
                out[-1].append(part)
                continue
        out.append([part])
    return [s for s in (_clean(" ".join(p)) for p in out) if s]


def _is_context(sentence: str) -> bool:
    """A sentence that describes rather than asks ("Our shop sells bikes.")."""
    ws = words(_strip_fillers(sentence))
    if not ws:
        return True
    if base_verb(ws[0]) is not None:
        return False
    return ws[0] in CONTEXT_STARTERS


# --------------------------------------------------------------------------------------------
# Goal structure


@dataclass
class _Item:
    """A step as written: a list item (with nested items) or a sentence of free text."""

    text: str
    ordered: bool = False
    children: list[_Item] = field(default_factory=list)
    from_list: bool = False


_LIST_LINE = re.compile(
    r"^(?P<indent>\s*)(?:(?P<bullet>[-*+\u2022\u25aa\u25e6\u2023\u2013])|(?P<num>\d{1,3})[.)]|\((?P<pnum>\d{1,3})\)|"
    r"(?P<letter>[A-Za-z])\)|(?P<step>step\s+\d{1,3})\s*[:.)-]?)\s+(?P<text>\S.*)$",
    re.IGNORECASE,
)
_INLINE_NUMBER = re.compile(
    r"(?:(?<=\s)|^)(?P<step>step\s+)?(?P<open>\()?(?P<n>\d{1,2})(?P<close>[.):])\s+", re.IGNORECASE
)


def _strip_marker(line: str) -> str:
    m = _LIST_LINE.match(line)
    return m.group("text").strip() if m else line.strip()


def _free_text_sentences(text: str) -> list[str]:
    """Sentences of free text; a line break is a boundary unless the next line continues the
    sentence (it starts in lower case)."""
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [_strip_marker(line) for line in paragraph.splitlines() if line.strip()]
        joined: list[str] = []
        for line in lines:
            continues = line[:1].islower() and not starts_with_verb(line)
            if joined and (continues or joined[-1].endswith((",", " and", " or"))):
                joined[-1] = f"{joined[-1]} {line}"
            else:
                joined.append(line)
        for line in joined:
            sentences.extend(_sentences(line))
    return sentences


def _inline_numbered(text: str) -> tuple[str, list[str]] | None:
    """ "Do this: 1) a 2) b 3) c" -> ("Do this:", [a, b, c])."""
    matches = list(_INLINE_NUMBER.finditer(text))
    chosen: list[re.Match[str]] = []

    def style(m: re.Match[str]) -> tuple[bool, bool, str]:
        return (bool(m.group("step")), bool(m.group("open")), m.group("close"))

    def boundary(m: re.Match[str]) -> bool:
        """ "2." numbers a step only after a sentence ends: "… done. 2. Next" (not "region 2.")."""
        if m.group("close") != "." or m.group("step") or m.group("open"):
            return True
        before = text[: m.start()].rstrip()
        return not before or before[-1] in ".:;!?"

    for m in matches:
        if int(m.group("n")) != len(chosen) + 1 or not boundary(m):
            continue
        if not chosen or style(m) == style(chosen[0]):
            chosen.append(m)
    if len(chosen) < 2:
        return None
    intro = text[: chosen[0].start()]
    pieces = []
    for i, m in enumerate(chosen):
        end = chosen[i + 1].start() if i + 1 < len(chosen) else len(text)
        pieces.append(text[m.end() : end])
    items = [_clean(p) for p in pieces if _clean(p)]
    return (_clean(intro), items) if len(items) >= 2 else None


def _parse(goal: str) -> tuple[str | None, list[_Item], bool]:
    """(intro, items, list_mode)."""
    text = goal.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4)
    lines = text.split("\n")
    if sum(1 for line in lines if _LIST_LINE.match(line)) >= 2:
        return _parse_list(lines)
    flat = re.sub(r"\s+", " ", text).strip()
    inline = _inline_numbered(flat)
    if inline is not None:
        intro, pieces = inline
        return intro or None, [_Item(p, ordered=True, from_list=True) for p in pieces], True
    return None, [_Item(s) for s in _free_text_sentences(text)], False


def _parse_list(lines: list[str]) -> tuple[str | None, list[_Item], bool]:
    intro_lines: list[str] = []
    outro_lines: list[str] = []
    root: list[_Item] = []
    stack: list[tuple[int, _Item, list[_Item]]] = []  # (indent, item, siblings)
    previous_blank = False
    last: _Item | None = None
    for raw in lines:
        if not raw.strip():
            previous_blank = True
            continue
        m = _LIST_LINE.match(raw)
        if m is None:
            indent = len(raw) - len(raw.lstrip())
            if last is None:
                intro_lines.append(raw.strip())
            elif not previous_blank and (indent > 0 or raw.strip()[:1].islower()):
                last.text = f"{last.text} {raw.strip()}"
            else:
                outro_lines.append(raw.strip())
            previous_blank = False
            continue
        previous_blank = False
        indent = len(m.group("indent"))
        ordered = m.group("bullet") is None
        item = _Item(_clean(m.group("text")), ordered=ordered, from_list=True)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        siblings = stack[-1][1].children if stack else root
        siblings.append(item)
        stack.append((indent, item, siblings))
        last = item
    intro = _clean(" ".join(intro_lines)) or None
    items = [i for i in root if i.text or i.children]
    for sentence in _free_text_sentences("\n".join(outro_lines)):
        items.append(_Item(sentence))
    return intro, items, True


@dataclass
class _Clause:
    """One step of work inside an item: its text, the order word before it and what it waits for."""

    text: str
    marker: str | None = None
    waits_for: str | None = None  # text naming earlier work ("once the API is built")
    full_text: str | None = None  # the text with its condition, kept when nothing matches
    subordinate: bool = False  # the condition came first ("Once X, Y"): X surely comes before


def _lead_marker(text: str) -> tuple[str | None, str]:
    marker: str | None = None
    while True:
        m = _LEAD_MARKER.match(text)
        if m is None or m.end() == 0:
            return marker, text
        kind = _marker_kind(m.group("m"))
        # "finally" beats "then"; the first marker seen otherwise
        if marker is None or kind == "finally":
            marker = kind
        text = text[m.end() :]


def _clauses(sentence: str) -> list[_Clause]:
    marker, text = _lead_marker(_clean(sentence))
    text = _strip_fillers(text)
    clauses: list[_Clause] = []
    sub = _SUBORDINATE.match(text)
    pending_wait: str | None = None
    subordinate = False
    if sub is not None:
        kind = sub.group("k").lower()
        cond, main = sub.group("cond").strip(), sub.group("main").strip()
        if kind == "before":
            if starts_with_verb(cond) or starts_with_gerund(cond):
                first = _clauses(main)
                if first:
                    first[0].marker = first[0].marker or marker
                later = _Clause(_imperative(cond), marker="then")
                return [*first, later]
            text = main
        elif kind != "when" or _DONE_WORDS & set(words(cond)):
            # ("when writing, cite sources" is a manner, not an order: kept whole)
            text, pending_wait, subordinate = main, cond, True
    pieces: list[tuple[str | None, str]] = []
    position = 0
    current_marker = marker
    for m in _SEQUENCE_SPLIT.finditer(text):
        pieces.append((current_marker, text[position : m.start()]))
        word = m.group("m") or m.group("n") or m.group("f")
        current_marker = _marker_kind(word)
        position = m.end()
    pieces.append((current_marker, text[position:]))
    for index, (piece_marker, piece) in enumerate(pieces):
        inner_marker, piece = _lead_marker(_clean(piece))
        piece = _strip_fillers(piece)
        if not piece:
            continue
        clause = _Clause(piece, marker=piece_marker or inner_marker)
        if index == 0 and pending_wait is not None:
            clause.waits_for, clause.subordinate = pending_wait, subordinate
        inline = _INLINE.match(piece)
        if inline is not None and clause.waits_for is None:
            kind = inline.group("k").lower()
            main, cond = inline.group("main").strip(), inline.group("cond").strip()
            if kind == "before":
                if starts_with_verb(cond) or starts_with_gerund(cond):
                    clause.text = main
                    clauses.append(clause)
                    clauses.append(_Clause(_imperative(cond), marker="then"))
                    continue
            elif words(main) and (kind != "when" or _DONE_WORDS & set(words(cond))):
                clause.text, clause.waits_for, clause.full_text = main, cond, piece
        clauses.append(clause)
    return clauses


def _split_actions(text: str) -> list[str]:
    """ "write a report and build a dashboard" -> two actions; "prices, trends" stays one."""
    parts = _ACTION_SPLIT.split(text)
    pieces: list[list[str]] = [[parts[0]]]  # each action as its pieces (linear time)
    has_words = bool(words(parts[0]))
    for i in range(1, len(parts), 2):
        separator, piece = parts[i], parts[i + 1]
        if has_words and starts_with_verb(piece):
            pieces.append([piece])
        else:
            pieces[-1].extend((separator, piece))
        has_words = has_words or bool(words(piece))
    actions = [_clean(_imperative("".join(p))) for p in pieces]
    actions = [a for a in actions if words(a)]
    # a lone verb shares the object of the next action that has one (or of the previous one)
    objects = [_verb_object(a)[1] for a in actions]
    later: list[str] = [""] * len(actions)
    following = ""
    for i in range(len(actions) - 1, -1, -1):
        later[i] = following
        following = objects[i] or following
    preceding = ""
    for i, action in enumerate(actions):
        verb, obj = _verb_object(action)
        if verb is not None and not obj and (later[i] or preceding):
            actions[i] = f"{action} {later[i] or preceding}"
        preceding = objects[i] or preceding
    return actions


def _join_actions(actions: list[str]) -> str:
    parts = [a if i == 0 else a[:1].lower() + a[1:] for i, a in enumerate(actions)]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _strip_tail(obj: str) -> str:
    """The object without a trailing condition: "the app when the tests pass" -> "the app"."""
    return re.split(r"\s+(?:when|once|after|before|if|until|by)\s+", obj, maxsplit=1)[0]


def _verb_object(text: str) -> tuple[str | None, str]:
    """(verb lemma, object phrase): "set up the server" -> ("set", "the server")."""
    parts = _clean(text).split()
    if not parts:
        return None, ""
    first = re.sub(r"[^A-Za-z]", "", parts[0]).lower()
    lemma = base_verb(first) or (derived_verb(first) if first.endswith("ing") else None)
    if lemma is None:
        return None, ""
    rest = parts[1:]
    particle = _PARTICLES.get(lemma)
    if rest and particle and rest[0].lower() == particle:
        rest = rest[1:]
    return lemma, " ".join(rest)


# --------------------------------------------------------------------------------------------
# Skills


@dataclass(frozen=True)
class _SkillContext:
    held: frozenset[str]  # skills someone on the team has (empty: no preference)
    custom: tuple[tuple[str, tuple[str, ...]], ...]  # team skills outside the presets, as words


def _skill_context(team: Sequence[AgentProfile]) -> _SkillContext:
    workers = [p for p in team if (p.role or "").lower() != "manager"] or list(team)
    held = team_skills((p.specialization, p.skills) for p in workers)
    custom = sorted(s for s in held if s not in SKILLS and normalize_skill(s))
    return _SkillContext(
        frozenset(held), tuple((s, tuple(normalize_skill(s).split())) for s in custom)
    )


def _contains_phrase(ws: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tuple(ws[i : i + n]) == phrase for i in range(len(ws) - n + 1))


def _skill_scores(text: str, ctx: _SkillContext, hint: str | None = None) -> dict[str, float]:
    ws = words(text)
    scores: dict[str, float] = {}

    def add(skill: str, amount: float) -> None:
        scores[skill] = scores.get(skill, 0.0) + amount

    if hint:
        add(hint, 3.0)
    verb, _ = _verb_object(text)
    rest = ws
    if verb is not None:
        rest = ws[1:]
        info = VERBS[verb]
        if info.skill and not hint:
            add(info.skill, 0.75 if info.generic else 3.0)
    seen: set[str] = set()
    for w in rest:
        if w in seen or w in STOPWORDS:
            continue
        seen.add(w)
        hits = [skill for skill in SKILLS if w in SKILL_KEYWORDS[skill]]
        if hits:
            for skill in hits:
                add(skill, 1.0)
            continue
        lemma = derived_verb(w)
        if lemma is not None and VERBS[lemma].skill and not VERBS[lemma].generic:
            add(VERBS[lemma].skill or "", 0.5)
    head = _head_noun(_verb_object(text)[1]) if verb is not None else None
    if head is not None:
        # the thing itself weighs more than what qualifies it: "the API documentation"
        for skill in SKILLS:
            if head in SKILL_KEYWORDS[skill]:
                add(skill, 0.5)
    for skill, phrase in ctx.custom:
        if _contains_phrase(ws, phrase):
            add(skill, 2.5)
    return scores


def _head_chunk(obj: str) -> list[str]:
    """The words naming the thing itself, up to a preposition or a participle:
    "a report summarizing the findings" -> ["a", "report"]."""
    chunk: list[str] = []
    for w in words(obj):
        if w in _PREPOSITIONS or (chunk and w.endswith(("ing", "ed")) and derived_verb(w)):
            break
        chunk.append(w)
    return chunk


def _head_noun(obj: str) -> str | None:
    chunk = _head_chunk(obj)
    return chunk[-1] if chunk else None


def _skill_order(skill: str) -> tuple[int, str]:
    return (SKILLS.index(skill), "") if skill in SKILLS else (len(SKILLS), skill)


def _choose_skills(scores: dict[str, float], ctx: _SkillContext) -> list[str]:
    ranked = sorted(
        ((s, v) for s, v in scores.items() if v > 0), key=lambda kv: (-kv[1], _skill_order(kv[0]))
    )
    if ctx.held:
        held = [(s, v) for s, v in ranked if s in ctx.held]
        if held:
            ranked = held
    if not ranked:
        return []
    top = ranked[0][1]
    chosen = [ranked[0][0]]
    for skill, value in ranked[1:]:
        if len(chosen) >= MAX_SKILLS:
            break
        # a team member's own skill named in the text is always worth asking for
        explicit = skill not in SKILLS and skill in ctx.held
        if explicit or (value >= 2.0 and value >= 0.8 * top):
            chosen.append(skill)
    return chosen


_BASE_TOKENS: dict[str | None, int] = {
    "coding": 2000,
    "debugging": 1500,
    "testing": 1200,
    "deployment": 900,
    "writing": 1500,
    "editing": 800,
    "research": 1500,
    "documentation": 1200,
    "analysis": 1300,
    "data_processing": 1200,
    "summarization": 800,
    None: 1000,
}


def _criteria_for(skill: str | None, title: str, obj: str) -> list[str]:
    thing = _object_phrase(obj) or f"“{title}”"
    thing_cap = _capitalize(thing)
    table: dict[str | None, list[str]] = {
        "coding": [
            f"{thing_cap} is implemented and works as described in the task",
            "The code is runnable and comes with short usage notes",
        ],
        "debugging": [
            f"The root cause of the problem in {thing} is identified and explained",
            "The fix is verified so the problem no longer occurs",
        ],
        "testing": [
            f"Tests cover the main behaviour of {thing}",
            "Test results are reported, with every failure explained",
        ],
        "deployment": [
            f"{thing_cap} is deployed and reachable",
            "The deployment steps and configuration are recorded",
        ],
        "writing": [
            f"{thing_cap} is written clearly and completely",
            "The text covers every point the task asks for",
        ],
        "editing": [
            f"Errors of grammar, spelling and style in {thing} are corrected",
            "The revised text keeps the original meaning",
        ],
        "research": [
            f"Relevant sources on {thing} are identified",
            "The key findings are listed with their sources",
        ],
        "documentation": [
            f"The documentation of {thing} is complete and accurate",
            "The documentation includes at least one usage example",
        ],
        "analysis": [
            f"The analysis of {thing} states its method and data",
            "Its conclusions are supported by the data",
        ],
        "data_processing": [
            f"The data for {thing} is collected, cleaned and consistently formatted",
            "The processing steps and the output format are described",
        ],
        "summarization": [
            f"A concise summary of {thing} is provided",
            "The summary captures the main points accurately",
        ],
    }
    return table.get(
        skill,
        [f"{_capitalize(title)} is done as described", "The result is described clearly"],
    )


def _object_phrase(obj: str) -> str:
    """ "a price comparison dashboard" -> "the price comparison dashboard"."""
    obj = _clean(obj)
    if not obj:
        return ""
    first, _, rest = obj.partition(" ")
    if first.lower() in {"a", "an"} and rest:
        return "the " + rest
    return obj


# Single-action goals are broken into the usual stages of that kind of work.
_TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "coding": [
        ("Design {obj}", "coding"),
        ("Implement {obj}", "coding"),
        ("Test {obj}", "testing"),
    ],
    "debugging": [
        ("Reproduce the problem with {obj}", "debugging"),
        ("Find and fix the root cause of the problem with {obj}", "debugging"),
        ("Add a regression test for {obj}", "testing"),
    ],
    "testing": [
        ("Write test cases for {obj}", "testing"),
        ("Run the tests on {obj} and report the results", "testing"),
    ],
    "deployment": [
        ("Prepare the deployment of {obj}", "deployment"),
        ("Deploy {obj}", "deployment"),
        ("Verify {obj} after deployment", "testing"),
    ],
    "writing": [
        ("Outline {obj}", "writing"),
        ("Draft {obj}", "writing"),
        ("Edit and proofread {obj}", "editing"),
    ],
    "editing": [
        ("Review {obj} for errors and unclear passages", "editing"),
        ("Revise {obj}", "editing"),
    ],
    "research": [
        ("Gather sources on {obj}", "research"),
        ("Analyze the information gathered on {obj}", "analysis"),
        ("Summarize the findings on {obj}", "summarization"),
    ],
    "documentation": [
        ("Outline the documentation of {obj}", "documentation"),
        ("Write the documentation of {obj}", "documentation"),
        ("Review the documentation of {obj}", "editing"),
    ],
    "analysis": [
        ("Collect the data needed to analyze {obj}", "data_processing"),
        ("Analyze {obj}", "analysis"),
        ("Summarize the conclusions on {obj}", "summarization"),
    ],
    "data_processing": [
        ("Collect {obj}", "data_processing"),
        ("Clean and transform {obj}", "data_processing"),
        ("Validate {obj}", "analysis"),
    ],
    "summarization": [
        ("Read and note the main points of {obj}", "research"),
        ("Summarize {obj}", "summarization"),
    ],
}


# --------------------------------------------------------------------------------------------
# The tree


@dataclass(eq=False)
class _Node:
    title: str
    text: str
    kind: str  # "root", "group" (a step of several actions), "action", "section"
    children: list[_Node] = field(default_factory=list)
    deps: list[_Node] = field(default_factory=list)
    verb: str | None = None
    obj: str = ""
    note: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    skill: str | None = None  # the skill the text points to, before team preference
    absorbed: list[_Node] = field(default_factory=list)
    into: _Node | None = None
    definite: bool = False  # names "the" object: may refer to earlier work
    _text_words: frozenset[str] | None = None
    _object_words: frozenset[str] | None = None

    @property
    def text_words(self) -> frozenset[str]:
        if self._text_words is None:
            self._text_words = frozenset(significant_words(self.text))
        return self._text_words

    @property
    def object_words(self) -> frozenset[str]:
        if self._object_words is None:
            self._object_words = frozenset(significant_words(self.obj))
        return self._object_words

    @property
    def stage(self) -> int | None:
        return VERBS[self.verb].stage if self.verb else None

    def walk(self) -> Iterable[_Node]:
        yield self
        for child in self.children:
            yield from child.walk()


def _resolve(node: _Node) -> _Node:
    while node.into is not None:
        node = node.into
    return node


class _Builder:
    def __init__(self, ctx: _SkillContext) -> None:
        self.ctx = ctx
        self.made: list[_Node] = []  # every action and group, in text order
        self.step_objects: list[str] = []  # objects named so far in the current step
        self.resolved_pronoun = False
        self.previous_object = ""  # the main object of the previous step
        self.top: list[_Node] = []

    # -- nodes --------------------------------------------------------------------------------

    def action(self, text: str, hint: str | None = None) -> _Node:
        text = _clean(text)
        verb, obj = _verb_object(text)
        ws = obj.split()
        # "it"/"them": the last thing named in this step, else the main thing of the step before
        referent = self.step_objects[-1] if self.step_objects else self.previous_object
        if ws and ws[0].lower() in {"it", "them"} and referent:
            obj = " ".join([_object_phrase(referent), *ws[1:]])
            text = f"{text.split(' ', 1)[0]} {obj}"
            self.resolved_pronoun = True
        if obj and words(obj):
            self.step_objects.append(obj)
        scores = _skill_scores(text, self.ctx, hint)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], _skill_order(kv[0])))
        node = _Node(
            title=_title(text),
            text=text,
            kind="action",
            verb=verb,
            obj=obj,
            scores=scores,
            skill=hint or (ranked[0][0] if ranked and ranked[0][0] in SKILLS else None),
            definite=bool({"the", "this", "that", "these", "those"} & set(words(obj))),
        )
        self.made.append(node)
        return node

    def step(self, text: str) -> _Node:
        """One step: a single action, or a group of actions done side by side (ordered only by
        their stages of work)."""
        self.step_objects = []
        self.resolved_pronoun = False
        try:
            actions = [self.action(a) for a in _split_actions(text)] or [self.action(text)]
        finally:
            if self.step_objects:
                self.previous_object = _strip_tail(self.step_objects[0])
            self.step_objects = []
        if len(actions) == 1:
            return actions[0]
        for i, node in enumerate(actions):
            if node.stage is None:
                continue
            window = actions[max(0, i - STAGE_WINDOW) : i]
            earlier = [a.stage for a in window if a.stage is not None and a.stage < node.stage]
            if earlier:
                previous_stage = max(earlier)
                node.deps.extend(a for a in window if a.stage == previous_stage)
        if self.resolved_pronoun:  # "fix it and add a test" -> "Fix the bug and add a test"
            text = _join_actions([a.text for a in actions])
        group = _Node(title=_title(text), text=_clean(text), kind="group", children=actions)
        self.made.append(group)
        return group

    # -- order --------------------------------------------------------------------------------

    def match(self, condition: str, exclude: set[int]) -> _Node | None:
        """The earlier task a condition ("once the API is built") names, if any."""
        wanted = set(significant_words(condition)) - _DONE_WORDS
        if not wanted:
            return None
        best: tuple[float, float, int] | None = None
        found: _Node | None = None
        start = max(0, len(self.made) - CONDITION_LOOKBACK)  # conditions name recent work
        for index, node in enumerate(self.made[start:], start):
            if id(node) in exclude:
                continue
            have = node.text_words
            overlap = len(wanted & have)
            if overlap == 0:
                continue
            rank = (overlap, overlap / len(have), index)
            if best is None or rank > best:
                best, found = rank, node
        return found

    def link_sequence(self, steps: list[tuple[_Node, str | None]], ordered: bool) -> None:
        """Dependencies between sibling steps from their order words."""
        for i, (node, marker) in enumerate(steps):
            if i == 0:
                continue
            if marker == "finally":
                earlier = [n for n, _ in steps[:i]]
                needed = {id(d) for n in earlier for d in n.deps}
                node.deps.extend(n for n in earlier if id(n) not in needed)
            elif marker == "then" or (ordered and marker != "parallel"):
                node.deps.append(steps[i - 1][0])

    def items(self, items: list[_Item]) -> list[_Node]:
        """Nodes for a list of sibling items, linked by their order words."""
        steps: list[tuple[_Node, str | None]] = []
        ordered = any(item.ordered for item in items)
        actionable = [item for item in items if item.from_list or not _is_context(item.text)]
        if not actionable:
            actionable = items
        for item in actionable:
            if item.children:
                marker, text = _lead_marker(_clean(item.text))
                children = self.items(item.children)
                node = _Node(
                    title=_title(_imperative(text)) if text else "Untitled step",
                    text=_clean(_imperative(text)),
                    kind="group",
                    children=children,
                )
                self.made.append(node)
                steps.append((node, marker))
                continue
            clauses = _clauses(item.text)
            first_of_item = True
            for clause in clauses:
                marker = clause.marker
                dependency: _Node | None = None
                text = clause.text
                if clause.waits_for is not None:
                    dependency = self.match(clause.waits_for, set())
                    if dependency is None and (
                        starts_with_verb(clause.waits_for) or starts_with_gerund(clause.waits_for)
                    ):
                        dependency = self.step(_imperative(clause.waits_for))
                        steps.append((dependency, marker))
                        marker = None
                    elif dependency is None and clause.subordinate and steps:
                        dependency = steps[-1][0]
                    elif dependency is None:
                        text = clause.full_text or clause.text
                node = self.step(text)
                if dependency is not None:
                    node.deps.append(dependency)
                    node.note = f"Starts after: {_clean(clause.waits_for or '')}"
                if not first_of_item and marker is None and item.from_list:
                    marker = "then"
                steps.append((node, marker))
                first_of_item = False
        self.link_sequence(steps, ordered)
        return [node for node, _ in steps]

    def link_references(self) -> None:
        """A later action on "the" thing an earlier action worked on, at a later stage of work,
        waits for the latest such action: "Build a dashboard. ... Test the dashboard."."""
        actions = [n for n in self.made if n.kind == "action"]
        parent = _parents(self.top)
        having: dict[str, list[int]] = {}  # object word -> actions naming it, in order
        for i, node in enumerate(actions):
            head = _head_words(node.obj)
            if node.definite and node.stage is not None and head:
                rarest = min(head, key=lambda w: len(having.get(w, ())))
                # references are local: look back over the last few mentions only
                for j in reversed(having.get(rarest, [])[-REFERENCE_LOOKBACK:]):
                    earlier = actions[j]
                    if not head <= earlier.object_words:
                        continue
                    same_group = parent.get(id(earlier))
                    if same_group is not None and same_group is parent.get(id(node)):
                        break  # the stages inside a group already order them
                    if earlier.stage is not None and earlier.stage < node.stage:
                        if not _waits_for(node, earlier, parent):
                            node.deps.append(earlier)
                        break
            for w in node.object_words:
                having.setdefault(w, []).append(i)


_PREPOSITIONS = word_set(
    "for about in of on with to from by at into using via that which so and or as per"
)


def _head_words(obj: str) -> set[str]:
    """The words naming the thing itself: "the logistics dashboard for region 2" ->
    {"logistics", "dashboard"}."""
    return set(significant_words(" ".join(_head_chunk(obj))))


def _parents(top: list[_Node]) -> dict[int, _Node | None]:
    parent: dict[int, _Node | None] = {}
    for node in top:
        parent[id(node)] = None
        for inner in node.walk():
            for child in inner.children:
                parent[id(child)] = inner
    return parent


def _waits_for(node: _Node, target: _Node, parent: dict[int, _Node | None]) -> bool:
    """Does node already wait for target through declared dependencies (hierarchy included)?"""
    seen: set[int] = set()
    frontier: list[_Node] = []
    current: _Node | None = node
    while current is not None:
        frontier.append(current)
        current = parent.get(id(current))
    budget = 500  # enough for any real goal; beyond it a redundant edge is harmless
    while frontier and budget > 0:
        budget -= 1
        item = frontier.pop()
        for dep in item.deps:
            if id(dep) in seen:
                continue
            seen.add(id(dep))
            if any(n is target for n in dep.walk()):
                return True
            frontier.append(dep)
            up = parent.get(id(dep))
            while up is not None:
                frontier.append(up)
                up = parent.get(id(up))
    return False


# --------------------------------------------------------------------------------------------
# Shaping: templates, sections, limits, depth


def _expand_single(node: _Node, builder: _Builder) -> None:
    """A goal of one action gets the usual stages of that kind of work as subtasks."""
    obj = _object_phrase(node.obj)
    template = _TEMPLATES.get(node.skill or "")
    verb_skill = VERBS[node.verb].skill if node.verb else None
    if not obj or not template or verb_skill != node.skill:
        return
    previous: _Node | None = None
    for pattern, skill in template:
        child = builder.action(pattern.format(obj=obj), hint=skill)
        if previous is not None:
            child.deps.append(previous)
        node.children.append(child)
        previous = child


def _sectionize(node: _Node) -> None:
    for child in node.children:
        _sectionize(child)
    count = len(node.children)
    if count <= SECTION_THRESHOLD:
        return
    size = max(SECTION_SIZE, math.ceil(count / MAX_CHILDREN))
    parts = [node.children[i : i + size] for i in range(0, count, size)]
    sections = []
    for number, part in enumerate(parts, 1):
        title = _truncate(f"Part {number} of {len(parts)}: {part[0].title}", MAX_TITLE)
        sections.append(
            _Node(title=title, text="; ".join(p.text for p in part), kind="section", children=part)
        )
    node.children = sections


def _collapse(node: _Node) -> None:
    """Fold every descendant into node: it now stands for their work."""
    inner = [n for n in node.walk() if n is not node]
    if not inner:
        return
    for n in inner:
        n.into = node
        node.deps.extend(n.deps)
        if not n.children:
            node.absorbed.append(n)
        node.absorbed.extend(n.absorbed)
    node.children = []
    if node.kind == "section":
        node.title = _truncate("; ".join(a.title for a in node.absorbed), MAX_TITLE)


def _height(node: _Node) -> int:
    return 1 + max((_height(c) for c in node.children), default=-1)


def _count(node: _Node) -> int:
    return sum(1 for _ in node.walk())


def _nodes_at(node: _Node, depth: int) -> list[_Node]:
    if depth == 0:
        return [node]
    return [n for c in node.children for n in _nodes_at(c, depth - 1)]


def _limit(root: _Node, max_depth: int) -> None:
    for node in _nodes_at(root, max_depth):
        _collapse(node)
    while _count(root) > MAX_PLAN_NODES and _height(root) > 1:
        for node in _nodes_at(root, _height(root) - 1):
            _collapse(node)
    if _count(root) > MAX_PLAN_NODES:  # pragma: no cover - sections keep this from happening
        keep = root.children[: MAX_PLAN_NODES - 2]
        rest = _Node(title="Remaining steps", text="", kind="section")
        rest.children = root.children[MAX_PLAN_NODES - 2 :]
        _collapse(rest)
        root.children = [*keep, rest]


# --------------------------------------------------------------------------------------------
# Output


class _Emitter:
    def __init__(self, ctx: _SkillContext, root_title: str, goal: str) -> None:
        self.ctx = ctx
        self.root_title = root_title
        self.goal = goal
        self.keys: dict[int, str] = {}
        self.order: dict[int, int] = {}
        self.parent: dict[int, _Node | None] = {}

    def index(self, root: _Node) -> None:
        def visit(node: _Node, key: str, parent: _Node | None) -> None:
            self.keys[id(node)] = key
            self.order[id(node)] = len(self.order)
            self.parent[id(node)] = parent
            for i, child in enumerate(node.children, 1):
                child_key = f"step-{i}" if parent is None else f"{key}.{i}"
                visit(child, child_key, node)

        visit(root, ROOT_KEY, None)

    def ancestors(self, node: _Node) -> set[int]:
        found: set[int] = set()
        up = self.parent.get(id(node))
        while up is not None:
            found.add(id(up))
            up = self.parent.get(id(up))
        return found

    def dependencies(self, node: _Node) -> list[_Node]:
        """Declared dependencies, resolved to kept nodes, only on earlier non-ancestor nodes
        (which keeps the plan free of cycles, hierarchy included)."""
        result: list[_Node] = []
        taken: set[int] = set()
        mine = self.order[id(node)]
        ancestors = self.ancestors(node)
        for dep in node.deps:
            target = _resolve(dep)
            if id(target) not in self.order or target is node or id(target) in ancestors:
                continue
            if self.order[id(target)] >= mine or id(target) in taken:
                continue
            taken.add(id(target))
            result.append(target)
        return result

    def skills(self, node: _Node) -> list[str]:
        if node.absorbed:
            totals: dict[str, float] = {}
            first_seen: dict[str, int] = {}
            for leaf in node.absorbed:
                for skill in _choose_skills(leaf.scores, self.ctx):
                    totals[skill] = totals.get(skill, 0.0) + 1.0
                    first_seen.setdefault(skill, len(first_seen))
            ranked = sorted(totals.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))
            return [s for s, _ in ranked[:MAX_SKILLS]]
        return _choose_skills(node.scores, self.ctx)

    def tokens(self, node: _Node) -> int:
        if node.children:
            return sum(self.tokens(c) for c in node.children)
        if node.absorbed:
            return sum(self.tokens(a) for a in node.absorbed) or self.leaf_tokens(node)
        return self.leaf_tokens(node)

    def leaf_tokens(self, node: _Node) -> int:
        base = _BASE_TOKENS.get(node.skill, _BASE_TOKENS[None])
        raw = base + 20 * len(words(node.text))
        return round(raw / 50.0) * 50

    def criteria(self, node: _Node, is_root: bool) -> list[str]:
        if node.children:
            if is_root:
                return [
                    "Every part of the goal is completed and accepted",
                    f"Together the results achieve the goal: {_truncate(self.root_title, 300)}",
                ]
            return [f"Each part of “{node.title}” is completed and accepted"]
        if node.absorbed:
            merged: dict[str, None] = {}
            for leaf in node.absorbed:
                for criterion in _criteria_for(leaf.skill, leaf.title, leaf.obj):
                    merged.setdefault(criterion, None)
            return list(merged)[:20]
        return _criteria_for(node.skill, node.title, node.obj)

    def description(self, node: _Node, is_root: bool) -> str:
        if is_root:
            return _truncate(self.goal, MAX_DESCRIPTION)
        lines = [f"{_capitalize(node.text) or node.title}."]
        if node.note:
            lines.append(node.note + ".")
        parts = node.children or node.absorbed
        if parts and node.kind != "action":
            lines.append("Covers:\n" + "\n".join(f"- {p.title}" for p in parts))
        elif node.absorbed:
            lines.append("Includes:\n" + "\n".join(f"- {p.title}" for p in node.absorbed))
        lines.append(f"Part of the goal: {self.root_title}")
        return _truncate("\n\n".join(lines), MAX_DESCRIPTION)

    def emit(self, root: _Node) -> dict[str, Any]:
        self.index(root)
        dependents: dict[int, int] = {}
        deps_of: dict[int, list[_Node]] = {}
        for node in root.walk():
            deps_of[id(node)] = self.dependencies(node)
            for dep in deps_of[id(node)]:
                dependents[id(dep)] = dependents.get(id(dep), 0) + 1

        def build(node: _Node) -> dict[str, Any]:
            is_root = node is root
            out: dict[str, Any] = {
                "key": self.keys[id(node)],
                "title": node.title,
                "description": self.description(node, is_root),
                "acceptance_criteria": self.criteria(node, is_root),
                "required_skills": [] if node.children else self.skills(node),
                "estimated_tokens": min(self.tokens(node), MAX_ESTIMATED_TOKENS),
                "priority": 5 + min(3, dependents.get(id(node), 0)),
                "depends_on": [self.keys[id(d)] for d in deps_of[id(node)]],
            }
            if node.children:
                out["subtasks"] = [build(c) for c in node.children]
            return out

        return build(root)


# --------------------------------------------------------------------------------------------


def _readable_part(goal: str) -> str:
    """At most MAX_GOAL_CHARS of the goal, cut after a sentence or line where possible."""
    if len(goal) <= MAX_GOAL_CHARS:
        return goal
    head = goal[:MAX_GOAL_CHARS]
    cut = max(head.rfind("\n"), head.rfind(". "))
    return head[: cut + 1] if cut > MAX_GOAL_CHARS // 2 else head


def _root_title(goal: str, intro: str | None, top: list[_Node], list_mode: bool) -> str:
    if intro:
        first = _sentences(intro)
        title = _title(first[0] if first else intro)
    elif len(top) == 1:
        title = top[0].title
    elif list_mode:
        title = _title("; ".join(node.title for node in top))
    else:
        sentences = _free_text_sentences(goal)
        flat = "; ".join(
            s if i == 0 or not starts_with_verb(s) else s[:1].lower() + s[1:]
            for i, s in enumerate(sentences)
        )
        actionable = [s for s in sentences if not _is_context(s)]
        if len(flat) <= MAX_TITLE or not sentences:
            title = _title(flat)
        else:
            title = _title((actionable or sentences)[0])
    return title if words(title) and words(_clean(goal)) else "Untitled goal"


def build_plan(goal: str, team: Sequence[AgentProfile] = (), max_depth: int = 3) -> dict[str, Any]:
    """The TaskNode tree for goal (see the module docstring). Pure and deterministic."""
    max_depth = max(0, min(int(max_depth), MAX_DEPTH_LIMIT))
    goal_text = str(goal or "").strip()
    ctx = _skill_context(team)
    intro, items, list_mode = _parse(_readable_part(goal_text))
    builder = _Builder(ctx)
    top = builder.items(items) if items else []
    builder.top = top
    builder.link_references()

    root_title = _root_title(_readable_part(goal_text), intro, top, list_mode)

    if len(top) == 1 and not intro:
        root = top[0]
        root.title = root_title
        root.kind = "root" if root.children else root.kind
        if not root.children and max_depth >= 1:
            _expand_single(root, builder)
    else:
        root = _Node(title=root_title, text=goal_text, kind="root", children=top)
        if not top:
            root.scores = _skill_scores(goal_text, ctx)
    _sectionize(root)
    _limit(root, max_depth)
    return _Emitter(ctx, root_title, goal_text or root_title).emit(root)


class HeuristicPlanner:
    """Planner protocol over build_plan."""

    def plan(self, goal: str, team: list[AgentProfile], max_depth: int) -> dict[str, Any]:
        return build_plan(goal, team, max_depth)
