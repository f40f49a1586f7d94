"""The app freezes its start-up heap (full collections stay short) and thaws it at shutdown."""

from __future__ import annotations

import gc

from tests.conftest import make_client


def test_app_freezes_the_startup_heap_and_thaws_it_at_shutdown(sqlite_url: str) -> None:
    gc.unfreeze()
    with make_client(sqlite_url) as client:
        assert client.get("/fhir/metadata").status_code == 200
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the models, profiles and mappings a running gateway holds
    assert gc.get_freeze_count() == 0
