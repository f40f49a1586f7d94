"""Alembic environment: runs on the connection handed over by `fhir_gateway.store.migrate`."""

from alembic import context

from fhir_gateway.store.tables import SQLModel

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
