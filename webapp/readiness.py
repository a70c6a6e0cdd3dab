"""What `GET /ready` checks beyond "the services answer": the database is at the latest Alembic
revision, so no route is about to fail on a missing table or column."""

from __future__ import annotations

import functools

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.engine import get_engine
from db.migrate import alembic_config
from orchestration.config import get_settings
from orchestration.errors import Unavailable

MIGRATE = "run make migrate"

# Databases found at the latest revision. /ready is polled and a schema is not downgraded
# under a running API, so once at head a database is not asked again.
_at_head: set[str] = set()


@functools.cache
def _revisions() -> tuple[frozenset[str], frozenset[str]]:
    """(the heads, every revision) of this code's migrations, read from disk once."""
    script = ScriptDirectory.from_config(alembic_config(get_settings().database_url))
    known = frozenset(rev.revision for rev in script.walk_revisions())
    return frozenset(script.get_heads()), known


def current_revisions() -> frozenset[str]:
    """The revisions recorded in the database (empty when it was never migrated)."""
    with get_engine().connect() as conn:
        return frozenset(MigrationContext.configure(conn).get_current_heads())


def check_schema() -> None:
    """Raise Unavailable saying what to do when the database is not at the latest revision."""
    url = get_settings().database_url
    if url in _at_head:
        return
    heads, known = _revisions()
    current = current_revisions()
    if current == heads:
        _at_head.add(url)
        return
    if not current:
        raise Unavailable(f"schema not migrated ({MIGRATE})")
    have, want = ", ".join(sorted(current)), ", ".join(sorted(heads))
    if current <= known:
        raise Unavailable(f"schema at revision {have}, behind {want} ({MIGRATE})")
    raise Unavailable(
        f"schema at revision {have}, which this code does not know (it expects {want}): "
        "deploy the code that migrated it"
    )


def forget() -> None:
    """Ask every database again (tests migrate and drop databases)."""
    _at_head.clear()
