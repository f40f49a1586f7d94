"""Bound glibc's malloc arenas for the server processes.

glibc gives each thread that allocates under contention an arena of its own (up to 8 per core),
and memory freed in one arena is not reused by another. With the request threadpool, the outbox
worker and SQLite's checkpointer, the server's RSS rose ~9 MB/min for as long as a 30 req/s soak
ran, although the Python heap stayed flat; with two arenas the same soak was flat (-0.6 MB/min).
`MALLOC_ARENA_MAX` set by the operator wins; elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter number, glibc <malloc.h>


def limit_arenas(arenas: int = ARENAS) -> bool:
    """For this process (threads started from now on) and, through the environment, for the
    processes it starts (uvicorn workers). True if glibc took it."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the operator decided
    os.environ["MALLOC_ARENA_MAX"] = str(arenas)
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    ok = bool(mallopt(_M_ARENA_MAX, arenas))
    if not ok:
        log.warning("mallopt(M_ARENA_MAX) refused; RSS may grow with the number of threads")
    return ok
