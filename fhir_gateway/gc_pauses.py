"""Keep the garbage collector's full collections short in the long-running processes.

After start-up the process holds ≈ 190,000 tracked objects that live as long as it does (models,
profiles, mappings, the directory, the libraries' own). CPython's full (generation 2) collection
walks all of them: measured in-process on the referral path, one took 176 to 223 ms, every few
thousand referrals, and with 16 requests in flight all of them wait it out. `gc.freeze()` after
start-up moves those objects out of the collector's sight (they are never garbage); the same
5,000 referrals then ran without a full collection over them. Nothing is switched off: young
objects are collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Exempt everything alive now from later scans. Cheap (the collector's lists are spliced,
    not walked), so it runs at every app start-up, tests included; the few cycles start-up
    left as garbage stay until `thaw`."""
    gc.freeze()


def thaw() -> None:
    """At shutdown: hand the frozen objects back, so a process that goes on (tests start many
    apps in one process) can collect them once they are garbage."""
    gc.unfreeze()
