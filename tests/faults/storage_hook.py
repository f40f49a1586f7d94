"""Test-only launcher: `python -m tests.faults.storage_hook serve …` is the real `fhir-gateway`
command with one pool hook that lets a test make the SQLite store refuse writes on command.

The file named by GATEWAY_FAULT_STORAGE holds `full`, `readonly` or nothing; every connection
checkout applies it. `full` caps the database at its current size (`PRAGMA max_page_count`):
a write that needs one more page gets SQLite's own SQLITE_FULL, exactly as on a full disk
(writes that fit in pages already there still succeed, as they would there). `readonly` is
`PRAGMA query_only`: every write gets SQLITE_READONLY, as on a read-only volume. Nothing in
`fhir_gateway/` knows about this hook.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa

CONTROL = Path(os.environ.get("GATEWAY_FAULT_STORAGE", "/nonexistent"))


def mode() -> str:
    try:
        return CONTROL.read_text().strip()
    except FileNotFoundError:
        return ""


@sa.event.listens_for(sa.pool.Pool, "checkout")
def _apply(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    current = mode()
    cursor = dbapi_connection.cursor()
    try:
        if "max_page_count" not in record.info:
            record.info["max_page_count"] = cursor.execute("PRAGMA max_page_count").fetchone()[0]
        # Below the current size SQLite keeps the current size: "no room for one more page".
        cap = 1 if current == "full" else record.info["max_page_count"]
        cursor.execute(f"PRAGMA max_page_count = {int(cap)}")
        cursor.execute(f"PRAGMA query_only = {'ON' if current == 'readonly' else 'OFF'}")
    finally:
        cursor.close()


if __name__ == "__main__":
    from fhir_gateway.cli import main

    main(prog_name="fhir-gateway")
