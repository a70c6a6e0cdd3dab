"""Words the offline agents understand: verbs with the skill and the stage of work they imply,
nouns that hint at a skill, and helpers to split text into comparable words.

Skill names are those of the specialization presets (orchestration.scoring), so a task the
heuristic planner writes can be matched by the assignment scorer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from orchestration.scoring import SPECIALIZATION_PRESETS

# Skills in a fixed order: ties between skills are broken by this order.
SKILLS: tuple[str, ...] = (
    "coding",
    "debugging",
    "testing",
    "deployment",
    "writing",
    "editing",
    "research",
    "documentation",
    "analysis",
    "data_processing",
    "summarization",
)

# Stages of work: a later stage naturally follows an earlier one on the same material.
GATHER, ANALYZE, DESIGN, MAKE, CHECK, FIX, RELEASE, FOLLOW_UP = 1, 2, 3, 4, 5, 6, 7, 8


class Verb:
    """What a verb says about the work: its skill (None when only the object can tell), its
    stage, whether its object decides the skill (generic verbs such as "create"), and whether
    it is also a common noun ("test plan", "report")."""

    __slots__ = ("ambiguous", "generic", "lemma", "skill", "stage")

    def __init__(
        self,
        lemma: str,
        skill: str | None,
        stage: int | None,
        *,
        generic: bool = False,
        ambiguous: bool = False,
    ) -> None:
        self.lemma = lemma
        self.skill = skill
        self.stage = stage
        self.generic = generic
        self.ambiguous = ambiguous


def _verbs() -> dict[str, Verb]:
    table: list[tuple[str, str | None, int | None, str]] = [
        # lemma, skill, stage, flags: g = generic (the object decides), a = also a noun
        ("research", "research", GATHER, "a"),
        ("investigate", "research", GATHER, ""),
        ("explore", "research", GATHER, ""),
        ("survey", "research", GATHER, "a"),
        ("study", "research", GATHER, "a"),
        ("gather", "research", GATHER, ""),
        ("find", "research", GATHER, "g"),
        ("identify", "research", GATHER, ""),
        ("look", "research", GATHER, ""),
        ("search", "research", GATHER, "a"),
        ("interview", "research", GATHER, "a"),
        ("discover", "research", GATHER, ""),
        ("read", "research", GATHER, ""),
        ("learn", "research", GATHER, ""),
        ("collect", "data_processing", GATHER, ""),
        ("scrape", "data_processing", GATHER, ""),
        ("fetch", "data_processing", GATHER, ""),
        ("download", "data_processing", GATHER, ""),
        ("analyze", "analysis", ANALYZE, ""),
        ("analyse", "analysis", ANALYZE, ""),
        ("evaluate", "analysis", ANALYZE, ""),
        ("assess", "analysis", ANALYZE, ""),
        ("compare", "analysis", ANALYZE, ""),
        ("measure", "analysis", ANALYZE, "a"),
        ("estimate", "analysis", ANALYZE, "a"),
        ("forecast", "analysis", ANALYZE, "a"),
        ("quantify", "analysis", ANALYZE, ""),
        ("calculate", "analysis", ANALYZE, ""),
        ("rank", "analysis", ANALYZE, "a"),
        ("prioritize", "analysis", ANALYZE, ""),
        ("prioritise", "analysis", ANALYZE, ""),
        ("process", "data_processing", ANALYZE, "a"),
        ("clean", "data_processing", ANALYZE, ""),
        ("transform", "data_processing", ANALYZE, ""),
        ("aggregate", "data_processing", ANALYZE, "a"),
        ("extract", "data_processing", ANALYZE, "a"),
        ("parse", "data_processing", ANALYZE, ""),
        ("import", "data_processing", ANALYZE, "a"),
        ("load", "data_processing", ANALYZE, "a"),
        ("normalize", "data_processing", ANALYZE, ""),
        ("label", "data_processing", ANALYZE, "a"),
        ("merge", "data_processing", ANALYZE, "a"),
        ("summarize", "summarization", DESIGN, ""),
        ("summarise", "summarization", DESIGN, ""),
        ("condense", "summarization", DESIGN, ""),
        ("synthesize", "summarization", DESIGN, ""),
        ("synthesise", "summarization", DESIGN, ""),
        ("recap", "summarization", DESIGN, "a"),
        ("plan", None, DESIGN, "ga"),
        ("design", None, DESIGN, "ga"),
        ("outline", "writing", DESIGN, "a"),
        ("define", None, DESIGN, "g"),
        ("specify", "documentation", DESIGN, ""),
        ("architect", "coding", DESIGN, "a"),
        ("choose", None, DESIGN, "g"),
        ("select", None, DESIGN, "g"),
        ("decide", None, DESIGN, "g"),
        ("sketch", None, DESIGN, "ga"),
        ("brainstorm", "writing", DESIGN, ""),
        ("write", "writing", MAKE, "g"),
        ("draft", "writing", MAKE, "a"),
        ("compose", "writing", MAKE, ""),
        ("author", "writing", MAKE, "a"),
        ("translate", "writing", MAKE, ""),
        ("describe", "writing", MAKE, ""),
        ("explain", "writing", MAKE, ""),
        ("create", None, MAKE, "g"),
        ("make", None, MAKE, "g"),
        ("prepare", None, MAKE, "g"),
        ("produce", None, MAKE, "g"),
        ("add", None, MAKE, "g"),
        ("update", None, MAKE, "ga"),
        ("improve", None, MAKE, "g"),
        ("optimize", "coding", MAKE, ""),
        ("optimise", "coding", MAKE, ""),
        ("build", "coding", MAKE, ""),
        ("implement", "coding", MAKE, ""),
        ("develop", "coding", MAKE, "g"),
        ("code", "coding", MAKE, "a"),
        ("program", "coding", MAKE, "a"),
        ("refactor", "coding", MAKE, ""),
        ("integrate", "coding", MAKE, ""),
        ("automate", "coding", MAKE, ""),
        ("prototype", "coding", MAKE, "a"),
        ("migrate", "coding", MAKE, ""),
        ("port", "coding", MAKE, "a"),
        ("extend", "coding", MAKE, ""),
        ("visualize", "data_processing", MAKE, ""),
        ("visualise", "data_processing", MAKE, ""),
        ("chart", "data_processing", MAKE, "a"),
        ("configure", "deployment", MAKE, ""),
        ("set", "deployment", MAKE, "g"),
        ("install", "deployment", MAKE, ""),
        ("provision", "deployment", MAKE, "a"),
        ("containerize", "deployment", MAKE, ""),
        ("organize", None, MAKE, "g"),
        ("organise", None, MAKE, "g"),
        ("schedule", None, MAKE, "ga"),
        ("book", None, MAKE, "ga"),
        ("order", None, MAKE, "ga"),
        ("buy", None, MAKE, "g"),
        ("hire", None, MAKE, "g"),
        ("contact", None, MAKE, "ga"),
        ("list", None, MAKE, "ga"),
        ("record", None, MAKE, "ga"),
        ("test", "testing", CHECK, "a"),
        ("verify", "testing", CHECK, ""),
        ("validate", "testing", CHECK, ""),
        ("check", "testing", CHECK, "ga"),
        ("benchmark", "testing", CHECK, "a"),
        ("audit", "testing", CHECK, "a"),
        ("review", "editing", CHECK, "ga"),
        ("proofread", "editing", CHECK, ""),
        ("edit", "editing", CHECK, ""),
        ("document", "documentation", CHECK, "a"),
        ("fix", "debugging", FIX, "a"),
        ("debug", "debugging", FIX, ""),
        ("troubleshoot", "debugging", FIX, ""),
        ("diagnose", "debugging", FIX, ""),
        ("resolve", "debugging", FIX, ""),
        ("patch", "debugging", FIX, "a"),
        ("reproduce", "debugging", FIX, ""),
        ("revise", "editing", FIX, ""),
        ("rewrite", "editing", FIX, ""),
        ("polish", "editing", FIX, ""),
        ("deploy", "deployment", RELEASE, ""),
        ("release", "deployment", RELEASE, "a"),
        ("ship", "deployment", RELEASE, "a"),
        ("launch", "deployment", RELEASE, "ga"),
        ("host", "deployment", RELEASE, "a"),
        ("publish", None, RELEASE, "g"),
        ("roll", "deployment", RELEASE, ""),
        ("submit", None, RELEASE, "g"),
        ("send", None, RELEASE, "g"),
        ("deliver", None, RELEASE, "g"),
        ("monitor", "deployment", FOLLOW_UP, "a"),
        ("maintain", "deployment", FOLLOW_UP, ""),
        ("present", "summarization", FOLLOW_UP, "ga"),
        ("report", "summarization", FOLLOW_UP, "a"),
        ("share", None, FOLLOW_UP, "g"),
        ("announce", "writing", FOLLOW_UP, ""),
        ("promote", "writing", FOLLOW_UP, ""),
        ("email", "writing", FOLLOW_UP, "a"),
    ]
    return {
        lemma: Verb(lemma, skill, stage, generic="g" in flags, ambiguous="a" in flags)
        for lemma, skill, stage, flags in table
    }


VERBS: dict[str, Verb] = _verbs()

_IRREGULAR: dict[str, str] = {
    "wrote": "write",
    "written": "write",
    "built": "build",
    "made": "make",
    "found": "find",
    "read": "read",
    "sent": "send",
    "set": "set",
    "chose": "choose",
    "chosen": "choose",
    "learnt": "learn",
    "bought": "buy",
    "done": "do",
}


def _inflections(lemma: str) -> set[str]:
    forms = {lemma, lemma + "s", lemma + "es", lemma + "ed", lemma + "ing"}
    if lemma.endswith("e"):
        forms |= {lemma + "d", lemma[:-1] + "ing"}
    if lemma.endswith("y") and lemma[-2:-1] not in "aeiou":
        forms |= {lemma[:-1] + "ies", lemma[:-1] + "ied"}
    if re.fullmatch(r".*[^aeiou][aeiou][bdgklmnprt]", lemma):
        forms |= {lemma + lemma[-1] + "ing", lemma + lemma[-1] + "ed"}
    return forms


def _forms() -> tuple[dict[str, str], dict[str, str]]:
    """Every inflected form -> lemma, and the gerund/past forms only (for conditions such as
    "after researching ...")."""
    forms: dict[str, str] = {}
    for lemma in VERBS:
        for form in sorted(_inflections(lemma)):
            forms.setdefault(form, lemma)
    for form, lemma in _IRREGULAR.items():
        if lemma in VERBS:
            forms.setdefault(form, lemma)
    for lemma in VERBS:
        forms[lemma] = lemma
    return forms, {f: lemma for f, lemma in forms.items() if f != lemma}


VERB_FORMS, _DERIVED_FORMS = _forms()

# Nouns (and a few other words) that hint at a skill.
SKILL_KEYWORDS: dict[str, frozenset[str]] = {
    "coding": frozenset(
        [
            "code",
            "codebase",
            "app",
            "apps",
            "application",
            "applications",
            "api",
            "apis",
            "backend",
            "frontend",
            "website",
            "websites",
            "webpage",
            "webapp",
            "web",
            "dashboard",
            "dashboards",
            "ui",
            "ux",
            "interface",
            "feature",
            "features",
            "function",
            "functions",
            "script",
            "scripts",
            "library",
            "module",
            "modules",
            "database",
            "schema",
            "sql",
            "endpoint",
            "endpoints",
            "service",
            "microservice",
            "bot",
            "chatbot",
            "plugin",
            "cli",
            "software",
            "algorithm",
            "prototype",
            "python",
            "javascript",
            "typescript",
            "rust",
            "java",
            "golang",
            "react",
            "component",
            "components",
            "repository",
            "repo",
            "login",
            "authentication",
            "class",
            "classes",
            "sdk",
            "mobile",
            "android",
            "ios",
            "widget",
            "scraper",
            "crawler",
        ]
    ),
    "debugging": frozenset(
        [
            "bug",
            "bugs",
            "error",
            "errors",
            "crash",
            "crashes",
            "regression",
            "regressions",
            "failure",
            "failures",
            "leak",
            "leaks",
            "exception",
            "exceptions",
            "defect",
            "defects",
            "stacktrace",
            "traceback",
            "incident",
            "outage",
        ]
    ),
    "testing": frozenset(
        [
            "test",
            "tests",
            "testing",
            "qa",
            "coverage",
            "testcase",
            "testcases",
            "assertions",
            "e2e",
            "unittest",
            "pytest",
            "acceptance",
            "smoke",
        ]
    ),
    "deployment": frozenset(
        [
            "deployment",
            "deployments",
            "production",
            "staging",
            "server",
            "servers",
            "docker",
            "container",
            "containers",
            "kubernetes",
            "k8s",
            "ci",
            "cd",
            "cloud",
            "aws",
            "gcp",
            "azure",
            "infrastructure",
            "hosting",
            "domain",
            "dns",
            "rollout",
            "terraform",
            "helm",
            "cluster",
        ]
    ),
    "writing": frozenset(
        [
            "report",
            "reports",
            "article",
            "articles",
            "blog",
            "post",
            "posts",
            "essay",
            "copy",
            "story",
            "stories",
            "email",
            "emails",
            "newsletter",
            "proposal",
            "letter",
            "press",
            "content",
            "speech",
            "whitepaper",
            "memo",
            "announcement",
            "slides",
            "presentation",
            "caption",
            "captions",
            "headline",
            "headlines",
            "pitch",
        ]
    ),
    "editing": frozenset(
        [
            "proofreading",
            "typo",
            "typos",
            "grammar",
            "spelling",
            "style",
            "tone",
            "wording",
            "readability",
        ]
    ),
    "research": frozenset(
        [
            "market",
            "markets",
            "literature",
            "sources",
            "competitor",
            "competitors",
            "landscape",
            "papers",
            "background",
            "alternatives",
            "vendors",
            "suppliers",
            "customers",
            "audience",
            "state-of-the-art",
            "prior",
        ]
    ),
    "documentation": frozenset(
        [
            "documentation",
            "docs",
            "readme",
            "manual",
            "guide",
            "guides",
            "tutorial",
            "tutorials",
            "wiki",
            "changelog",
            "specification",
            "spec",
            "specs",
            "faq",
            "handbook",
            "runbook",
            "docstrings",
            "reference",
        ]
    ),
    "analysis": frozenset(
        [
            "analysis",
            "analyses",
            "comparison",
            "comparisons",
            "metrics",
            "statistics",
            "stats",
            "trends",
            "trend",
            "insights",
            "kpi",
            "kpis",
            "forecast",
            "pricing",
            "price",
            "prices",
            "costs",
            "cost",
            "budget",
            "roi",
            "risks",
            "risk",
            "segmentation",
            "evaluation",
            "performance",
        ]
    ),
    "data_processing": frozenset(
        [
            "data",
            "dataset",
            "datasets",
            "csv",
            "spreadsheet",
            "spreadsheets",
            "etl",
            "records",
            "logs",
            "pipeline",
            "pipelines",
            "json",
            "table",
            "tables",
            "ingestion",
            "cleaning",
            "excel",
        ]
    ),
    "summarization": frozenset(
        [
            "summary",
            "summaries",
            "findings",
            "overview",
            "recap",
            "highlights",
            "takeaways",
            "conclusions",
            "abstract",
            "digest",
            "tldr",
            "synopsis",
        ]
    ),
}

STOPWORDS: frozenset[str] = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "of",
        "to",
        "in",
        "on",
        "for",
        "with",
        "by",
        "from",
        "at",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "them",
        "they",
        "we",
        "our",
        "us",
        "you",
        "your",
        "i",
        "me",
        "my",
        "he",
        "she",
        "his",
        "her",
        "all",
        "any",
        "each",
        "every",
        "some",
        "such",
        "no",
        "not",
        "only",
        "own",
        "same",
        "so",
        "than",
        "too",
        "very",
        "can",
        "will",
        "just",
        "should",
        "would",
        "could",
        "may",
        "might",
        "must",
        "shall",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "having",
        "into",
        "over",
        "under",
        "about",
        "after",
        "before",
        "once",
        "then",
        "when",
        "while",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "how",
        "also",
        "more",
        "most",
        "other",
        "new",
        "make",
        "sure",
        "please",
        "need",
        "needs",
        "want",
        "wants",
        "etc",
        "via",
        "per",
        "using",
        "use",
        "based",
        "up",
        "out",
        "off",
    ]
)

# Words after which a verb is clearly a verb: "test the app", "report it", "set up".
_OBJECT_STARTERS: frozenset[str] = frozenset(
    [
        "a",
        "an",
        "the",
        "our",
        "my",
        "your",
        "their",
        "its",
        "his",
        "her",
        "this",
        "that",
        "these",
        "those",
        "all",
        "each",
        "every",
        "some",
        "any",
        "it",
        "them",
        "us",
        "me",
        "both",
        "several",
        "one",
        "two",
        "three",
        "four",
        "five",
        "new",
        "existing",
        "current",
        "up",
        "out",
        "into",
        "on",
        "for",
        "with",
        "about",
        "through",
        "over",
        "across",
        "to",
        "from",
        "basic",
        "simple",
        "initial",
        "final",
        "full",
        "complete",
        "whether",
        "how",
        "what",
        "why",
    ]
)

# First words of a sentence that describes the situation rather than asks for work.
CONTEXT_STARTERS: frozenset[str] = frozenset(
    [
        "the",
        "a",
        "an",
        "our",
        "we",
        "i",
        "my",
        "it",
        "this",
        "that",
        "these",
        "those",
        "there",
        "they",
        "he",
        "she",
        "you",
        "your",
        "its",
        "their",
        "his",
        "her",
        "currently",
        "today",
        "right",
        "now",
        "note",
        "because",
        "since",
        "as",
        "although",
        "though",
        "some",
        "many",
        "most",
        "context",
        "background",
        "budget",
        "deadline",
    ]
)


def word_set(text: str) -> frozenset[str]:
    """The whitespace-separated words of text, as a set."""
    return frozenset(text.split())


_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_'\u2019-]*")


def words(text: str) -> list[str]:
    """The words of text, lowercased, without punctuation."""
    return [w.lower().replace("\u2019", "'") for w in _WORD_RE.findall(text)]


def lemma_of(word: str) -> str | None:
    """The verb lemma of any known form of a verb, else None."""
    return VERB_FORMS.get(word.lower())


def base_verb(word: str) -> str | None:
    """The lemma when word is a base-form verb."""
    w = word.lower()
    return w if w in VERBS else None


def derived_verb(word: str) -> str | None:
    """The lemma when word is a gerund or past form of a known verb ("researching")."""
    return _DERIVED_FORMS.get(word.lower())


def stem(word: str) -> str:
    """A crude stem so that "tests", "tested" and "testing" compare equal."""
    w = word.lower()
    lemma = VERB_FORMS.get(w)
    if lemma is not None:
        return lemma
    for suffix in ("ies", "ing", "ed", "es", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            if suffix == "ies":
                return w[:-3] + "y"
            if suffix == "es" and not w.endswith(("ses", "xes", "zes", "ches", "shes")):
                return w[:-1]
            if suffix == "s" and w.endswith("ss"):
                return w
            return w[: -len(suffix)]
    return w


def significant_words(text: str) -> list[str]:
    """Stems of the words that carry meaning, in order, without repeats."""
    seen: dict[str, None] = {}
    for w in words(text):
        if w in STOPWORDS or (len(w) < 3 and not w.isdigit()):
            continue
        seen.setdefault(stem(w), None)
    return list(seen)


def starts_with_verb(text: str) -> bool:
    """Does this clause start with an imperative verb we know ("deploy the app", "test",
    "report the results")? A verb that is also a common noun needs an object starter after it,
    so "test plan" is not a verb phrase but "test the plan" is."""
    ws = words(text)
    if not ws:
        return False
    verb = base_verb(ws[0])
    if verb is None:
        return False
    if not VERBS[verb].ambiguous or len(ws) == 1:
        return True
    return ws[1] in _OBJECT_STARTERS


def starts_with_gerund(text: str) -> bool:
    ws = words(text)
    return bool(ws) and ws[0].endswith("ing") and derived_verb(ws[0]) is not None


def team_skills(profiles: Iterable[tuple[str | None, Mapping[str, float] | None]]) -> set[str]:
    """The skills someone has: the specialization's preset plus the member's own skills."""
    held: set[str] = set()
    for specialization, skills in profiles:
        held.update(SPECIALIZATION_PRESETS.get(specialization or "", {}))
        held.update(k for k, v in (skills or {}).items() if v and float(v) > 0)
    return held


def normalize_skill(skill: str) -> str:
    return re.sub(r"[\s_\-]+", " ", skill.strip().lower())
