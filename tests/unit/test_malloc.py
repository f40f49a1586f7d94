"""The server bounds glibc's malloc arenas unless the operator chose a number."""

from __future__ import annotations

import os
import platform

import pytest

from fhir_gateway.malloc import limit_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_arenas_bounded_here_and_for_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_arenas(2) is True
    assert os.environ["MALLOC_ARENA_MAX"] == "2"  # uvicorn's worker processes inherit it


def test_operator_choice_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_arenas(2) is False
    assert os.environ["MALLOC_ARENA_MAX"] == "8"
