"""Alembic environment: runs on the connection the ledger passes in (``config.attributes['connection']``)."""
from alembic import context
from sqlalchemy import create_engine, text

from oblivio.ledger.models import Base

config = context.config
target_metadata = Base.metadata


def run(connection) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes migrating a fresh database at once: the second waits, then finds the schema there.
        connection.execute(text("SELECT pg_advisory_xact_lock(7311942)"))
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        run(conn)
