"""Database layer: models, engine and sessions, named queries, migrations."""
