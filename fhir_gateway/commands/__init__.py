"""The `fhir-gateway` subcommands of each area (clients, outbox, report, v2); `cli.py` assembles them.

They sit above every other package (like `app.py`): a command may use anything, nothing uses a
command."""
