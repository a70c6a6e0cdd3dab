"""`python -m db.migrate [revision]`: create the database if missing, then upgrade."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from orchestration.config import get_settings

HERE = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


@contextmanager
def _server(database_url: str) -> Iterator[Connection]:
    """An autocommit connection to the server's `postgres` database: CREATE and DROP
    DATABASE run outside any transaction and not from the database they name."""
    admin = create_engine(
        make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            yield conn
    finally:
        admin.dispose()


def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL when it does not exist; True if created."""
    name = make_url(database_url).database
    with _server(database_url) as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).scalar()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            return True
        return False


def drop_database(database_url: str) -> None:
    with _server(database_url) as conn:
        conn.execute(
            text(f'DROP DATABASE IF EXISTS "{make_url(database_url).database}" WITH (FORCE)')
        )


def copy_database(source_url: str, copy_url: str) -> None:
    """Create copy_url's database as a copy of source_url's as it is now (CREATE DATABASE
    ... TEMPLATE); PostgreSQL refuses while anyone is connected to the source."""
    source, copy = make_url(source_url).database, make_url(copy_url).database
    with _server(source_url) as conn:
        conn.execute(text(f'CREATE DATABASE "{copy}" TEMPLATE "{source}"'))


def upgrade(database_url: str, revision: str = "head") -> None:
    ensure_database(database_url)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def main(argv: list[str]) -> int:
    revision = argv[0] if argv else "head"
    url = get_settings().database_url
    upgrade(url, revision)
    print(f"migrated {make_url(url).render_as_string(hide_password=True)} to {revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
