"""The migrations round trip on their own scratch database, and agree with the models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, create_engine, pool, text

from db import migrate
from db.models import Base
from db.queries import Q
from tests.conftest import run_tag, scratch_database_url, worker_id


@pytest.fixture
def scratch_url() -> Iterator[str]:
    url = scratch_database_url(f"orch_test_{run_tag()}_migrations_{worker_id()}")
    migrate.drop_database(url)
    try:
        yield url
    finally:
        migrate.drop_database(url)


def inventory(conn: Connection) -> dict[str, set[str]]:
    """Everything the migrations may create in the public schema."""

    def names(sql: str) -> set[str]:
        return set(conn.execute(text(sql)).scalars())

    return {
        "tables": names(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_name <> 'alembic_version'"
        ),
        "types": names(
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'public' AND t.typtype = 'e'"
        ),
        "functions": names(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public'"
        ),
        "triggers": names("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"),
        "sequences": names(
            "SELECT sequence_name FROM information_schema.sequences "
            "WHERE sequence_schema = 'public'"
        ),
    }


def test_upgrade_downgrade_upgrade(scratch_url: str) -> None:
    engine = create_engine(scratch_url, poolclass=pool.NullPool)
    try:
        migrate.upgrade(scratch_url)
        with engine.connect() as conn:
            head = inventory(conn)
            assert head["tables"] == set(Base.metadata.tables)
            assert head["types"] == {
                "task_status",
                "team_status",
                "member_status",
                "member_role",
                "decomposition_status",
            }
            assert head["functions"] >= {
                "skills_valid",
                "task_dependencies_same_team",
                "can_start_task",
            }
            assert "task_dependencies_same_team" in head["triggers"]
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            assert version is not None

        migrate.downgrade(scratch_url, "base")
        with engine.connect() as conn:
            assert inventory(conn) == {
                "tables": set(),
                "types": set(),
                "functions": set(),
                "triggers": set(),
                "sequences": set(),
            }
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 0

        migrate.upgrade(scratch_url)
        with engine.connect() as conn:
            assert inventory(conn) == head
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == version
    finally:
        engine.dispose()


def test_models_match_the_migrated_schema(scratch_url: str) -> None:
    """Autogenerate finds nothing to do: the models and the migrations describe one schema."""
    migrate.upgrade(scratch_url)
    engine = create_engine(scratch_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_server_default": False})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_migrate_creates_a_missing_database(scratch_url: str) -> None:
    assert migrate.ensure_database(scratch_url) is True
    assert migrate.ensure_database(scratch_url) is False


def test_ranks_are_backfilled_in_an_order_of_the_existing_graph(scratch_url: str) -> None:
    """0002 ranks the tasks already there: every waits-for edge ordered, whatever the order
    the rows were created in (here an older task waits for a newer one, and a subtask is
    older than its parent)."""
    migrate.upgrade(scratch_url, "0001")
    engine = create_engine(scratch_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            team = conn.execute(text("INSERT INTO teams (name) VALUES ('t') RETURNING id")).scalar()
            ids: dict[str | None, Any] = {}
            for name, parent, age in [
                ("old", None, 40),
                ("parent", None, 20),
                ("child", "parent", 30),
                ("new", None, 10),
            ]:
                ids[name] = conn.execute(
                    text(
                        "INSERT INTO tasks (team_id, title, parent_task_id, created_at) "
                        "VALUES (:team, :title, :parent, now() - make_interval(secs => :age)) "
                        "RETURNING id"
                    ),
                    {"team": team, "title": name, "parent": ids.get(parent), "age": age},
                ).scalar()
            for task, dep in [("old", "new"), ("new", "child")]:
                conn.execute(
                    text(
                        "INSERT INTO task_dependencies (task_id, depends_on_task_id) "
                        "VALUES (:t, :d)"
                    ),
                    {"t": ids[task], "d": ids[dep]},
                )
        migrate.upgrade(scratch_url)
        with engine.connect() as conn:
            assert conn.execute(Q["rank_violations"], {"team_id": team}).scalar() == 0
            rows = conn.execute(
                text("SELECT title, end_rank FROM tasks WHERE team_id = :t"), {"t": team}
            )
            ranks = {title: rank for title, rank in rows}
            assert ranks["parent"] < ranks["new"] < ranks["old"]
    finally:
        engine.dispose()
