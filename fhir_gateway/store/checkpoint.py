"""SQLite WAL checkpoints in a background thread instead of inside a request's commit.

With SQLite's automatic checkpoint, every ~8th referral commit also copied the WAL into the
database file and waited for its fsync: two thirds of all commit time (a 120-page commit: 3.3 ms
with auto-checkpoint, 1.1 ms without, on this project's machines). Here a thread of its own runs
PASSIVE checkpoints (they never block writers or readers) on its own connection; sqlite3 releases
the GIL while it works, so requests go on meanwhile. Under a steady stream of writes a PASSIVE
checkpoint never finds the WAL fully copied, so SQLite never starts it over and it grows; once it
holds `restart_frames`, a RESTART checkpoint taken under the process's writer lock copies the few
frames left and lets the next commit write the WAL from its start again. Durability does not change: a commit is in
the WAL before the gateway answers, and the WAL is the database until it is checkpointed.

The connections keep a large automatic-checkpoint threshold as a safety net: if this thread
stalls, a commit checkpoints once the WAL reaches it, as SQLite would by itself.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import AbstractContextManager

log = logging.getLogger(__name__)

AUTOCHECKPOINT_PAGES = 16_384  # the safety net (64 MiB of 4 KiB pages), see the module docstring
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL file is cut back to this after a reset


class WalCheckpointer:
    """Checkpoints the WAL of one SQLite file every `interval` seconds while it has frames."""

    def __init__(
        self,
        path: str,
        writer_lock: AbstractContextManager[object],
        *,
        interval: float = 0.2,
        restart_frames: int = 2_000,
    ) -> None:
        self.path = path
        self.writer_lock = writer_lock
        self.interval = interval
        self.restart_frames = restart_frames
        self.checkpoints = 0  # completed PASSIVE checkpoints that moved frames (for tests/metrics)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)

    def start(self) -> WalCheckpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self.interval):
                try:
                    if connection is None:
                        connection = sqlite3.connect(self.path, timeout=1, isolation_level=None)
                        connection.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
                    self.checkpoint_once(connection)
                except sqlite3.Error as exc:  # busy, disk full, read-only...: the next round retries
                    log.warning("WAL checkpoint failed: %s", type(exc).__name__)
                    if connection is not None:
                        connection.close()
                        connection = None
        finally:
            if connection is not None:
                connection.close()

    def checkpoint_once(self, connection: sqlite3.Connection) -> None:
        _busy, frames, moved = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if moved > 0:
            self.checkpoints += 1
        if frames >= self.restart_frames:
            with self.writer_lock:
                connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
