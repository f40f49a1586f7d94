"""Metric and log labels carry a path's shape, never ids, and cannot grow without bound."""

from __future__ import annotations

import pytest

from fhir_gateway import observability
from fhir_gateway.observability import route_label


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/fhir/Task/123/_history/2", "/fhir/Task/{id}/_history/{vid}"),
        ("/fhir/Task/$validate", "/fhir/Task/$validate"),
        ("/fhir/Madeup9", "/fhir/{type}"),
        ("/fhir/$made-up", "/fhir/{op}"),
        ("/fhir/Patient/_search", "/fhir/Patient/_search"),
        ("/auth/token", "/auth/token"),
        ("/random/path", "/{other}"),
    ],
)
def test_labels_are_shapes(path: str, label: str) -> None:
    assert route_label(path) == label


def test_made_up_paths_cannot_grow_the_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observability, "_labels", set())
    monkeypatch.setattr(observability, "_MAX_LABELS", 10)
    assert route_label("/fhir/Task/1") == "/fhir/Task/{id}"
    labels = {route_label(f"/console/page{i}") for i in range(50)}
    assert "/{other}" in labels and len(labels) <= 10
    assert route_label("/fhir/Task/2") == "/fhir/Task/{id}"  # known before the cap: kept
