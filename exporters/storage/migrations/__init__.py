"""Alembic migrations for the storage schema, run programmatically at exporter start.

No ``alembic.ini`` is needed at run time: :func:`upgrade` builds the Alembic config in code and
points it at the scripts shipped in this package.  To write a new revision during development::

    python -m exporters.storage.migrations revision -m "add column x"

then edit the generated file in ``versions/`` (migrations must be self-contained: never import
:mod:`exporters.storage.schema`, which describes only the newest schema).
"""

from __future__ import annotations

import sys
from pathlib import Path

import sqlalchemy as sa

from exporters.storage.schema import VERSION_TABLE

__all__ = ["alembic_config", "upgrade", "current_revision"]

HERE = Path(__file__).resolve().parent
MIGRATION_LOCK_ID = 0x67656E6169  # "genai": the advisory lock taken while migrating Postgres


def alembic_config(connection: sa.Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_table", VERSION_TABLE)
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest), in one transaction."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several collectors may start against one database: one migrates, the others wait.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        command.upgrade(alembic_config(conn), revision)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def main(argv: list[str]) -> None:
    """Developer entry point: ``revision -m MSG`` writes a new script into versions/."""
    from alembic import command

    if len(argv) >= 3 and argv[0] == "revision" and argv[1] == "-m":
        command.revision(alembic_config(), message=argv[2])
    else:
        raise SystemExit("usage: python -m exporters.storage.migrations revision -m MESSAGE")


if __name__ == "__main__":
    main(sys.argv[1:])
