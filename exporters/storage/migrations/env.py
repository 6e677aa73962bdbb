"""Alembic environment: always runs on the connection :func:`upgrade` passes in."""

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through exporters.storage.migrations.upgrade(engine)")

context.configure(
    connection=connection,
    version_table=config.get_main_option("version_table"),
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs go through table copies
)
with context.begin_transaction():
    context.run_migrations()
