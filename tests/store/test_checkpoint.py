"""The SQLite WAL is checkpointed by a background thread and starts over, however steady the writes."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from fhir_gateway.store.checkpoint import WalCheckpointer
from fhir_gateway.store.database import Database
from fhir_gateway.store.repository import Repository


def _wal_frames(path: Path) -> int:
    with sqlite3.connect(path, isolation_level=None) as probe:
        return int(probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


def test_steady_writes_keep_the_wal_bounded(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # only the background thread checkpoints
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    lock = threading.RLock()
    checkpointer = WalCheckpointer(str(path), lock, interval=0.01, restart_frames=40).start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # a writer that never pauses
            with lock:
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("INSERT INTO t (body) VALUES (?)", (b"x" * 3000,))
                writer.execute("COMMIT")
    finally:
        checkpointer.stop()
    rows = writer.execute("SELECT count(*) FROM t").fetchone()[0]
    writer.close()
    assert checkpointer.checkpoints > 0
    # without restarts the WAL would hold a frame or more per row written
    assert rows > 200
    assert _wal_frames(path) < rows / 2


def test_database_runs_one_checkpointer_from_the_first_write_until_dispose(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'gw.db'}")
    db.upgrade()
    assert db._checkpointer is None  # reads and migrations start none
    with db.connection(write=True) as conn:
        Repository(conn).create({"resourceType": "Patient", "active": True})
    checkpointer = db._checkpointer
    assert checkpointer is not None and checkpointer._thread.is_alive()
    with db.connection(write=True) as conn:
        Repository(conn).create({"resourceType": "Patient", "active": False})
    assert db._checkpointer is checkpointer
    db.dispose()
    assert not checkpointer._thread.is_alive()
    assert db._checkpointer is None
