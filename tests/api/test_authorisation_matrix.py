"""The authorisation matrix (tests/api/authorisation.py), asserted cell by cell on both backends.

Every principal probes every interaction on every resource type after one played loop; the
outcomes must equal the matrix. Routes and operations without cells fail the coverage test, and
docs/authorisation-matrix.md must be the rendering of the cells asserted here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api import authorisation as matrix
from tests.api.test_v2_authorisation import V2_CELLS
from tests.conftest import authorize, make_client
from tests.wor import load_directory


@pytest.fixture
def loop(database_url: str) -> Iterator[matrix.Loop]:
    with make_client(database_url) as client:
        load_directory(client)
        yield matrix.play(client)


def _differences(expected: dict[str, matrix.Cells], seen: dict[str, matrix.Cells]) -> list[str]:
    return [
        f"{interaction} {rtype} as {who}: {got!r} != {want!r}"
        for interaction, cells in expected.items()
        for rtype, outcomes in cells.items()
        for who, want, got in zip(matrix.PRINCIPALS, outcomes, seen[interaction][rtype], strict=True)
        if got != want
    ]


def test_every_cell(loop: matrix.Loop) -> None:
    seen = matrix.observe(loop)
    failures = _differences(matrix.MATRIX, seen)
    assert not failures, "\n".join(failures)
    deleted: dict[str, matrix.Cells] = {"delete": {}}
    # the administrator's delete last, the owner's (welfare 1's Subscription) just before it, so
    # the others try to delete what still exists
    order = sorted(
        enumerate(matrix.PRINCIPALS), key=lambda p: (p[1] == matrix.ADMIN, p[1] == matrix.W1, -p[0])
    )
    for i, who in order:
        loop.who = who
        authorize(loop.client, who)
        for rtype in matrix.DELETE:
            deleted["delete"].setdefault(rtype, ("",) * len(matrix.PRINCIPALS))
            outcomes = list(deleted["delete"][rtype])
            outcomes[i] = matrix.probe_delete(loop, rtype)
            deleted["delete"][rtype] = tuple(outcomes)
    failures = _differences({"delete": matrix.DELETE}, deleted)
    assert not failures, "\n".join(failures)


def test_no_principal_but_admin_and_practice_a_ever_gets_practice_as_records() -> None:
    """The rule behind the cells, checked on the cells themselves: B and the welfare organisation
    that takes no part never see A's record, and a conditional create never hands it over."""
    outsiders = (matrix.PRINCIPALS.index(matrix.GP_B), matrix.PRINCIPALS.index(matrix.W2))
    for interaction, cells in matrix.MATRIX.items():
        for rtype, outcomes in cells.items():
            if rtype in ("Organization", "-") or interaction in ("create", "$validate", "metadata"):
                continue  # the directory is public; a create answers with what the caller sent
            for i in outsiders:
                assert outcomes[i].split()[0] not in ("200", "204") or outcomes[i].endswith(
                    ("none", "own")
                ), (
                    interaction,
                    rtype,
                    matrix.PRINCIPALS[i],
                )


def test_every_route_has_its_cells(loop: matrix.Loop) -> None:
    app = loop.client.app
    router = app.state.router  # type: ignore[attr-defined]
    handlers = {route.handler.__name__ for route in router.routes}
    assert handlers == set(matrix.ROUTE_CELLS), "a FHIR route without cells in tests/api/authorisation.py"
    rows = {*matrix.MATRIX, "delete"}
    for handler, interactions in matrix.ROUTE_CELLS.items():
        assert set(interactions) <= rows, (handler, set(interactions) - rows)
    assert set(router.operations) == set(matrix.OPERATION_CELLS), "an operation without cells"
    assert set(matrix.OPERATION_CELLS.values()) <= rows
    assert matrix.app_routes(app) == set(matrix.APP_ROUTES), "an HTTP route without cells"


def test_routes_outside_the_fhir_api(loop: matrix.Loop) -> None:
    client = loop.client
    failures = []
    for (method, path), expected in matrix.APP_ROUTES.items():
        if not isinstance(expected, tuple):
            continue  # owned by the module named in the table
        url = path.replace("{event_id}", "no-such-event")
        for who, want in zip((None, matrix.GP_A, matrix.ADMIN), expected, strict=True):
            if who is None:
                client.headers.pop("Authorization", None)
            else:
                authorize(client, who)
            got = str(client.request(method, url, follow_redirects=False).status_code)
            if got != want:
                failures.append(f"{method} {path} as {who or 'anonymous'}: {got} != {want}")
    assert not failures, "\n".join(failures)


def test_the_document_is_the_rendering_of_these_cells() -> None:
    assert matrix.DOC.read_text(encoding="utf-8") == matrix.render(V2_CELLS), (
        "docs/authorisation-matrix.md is stale: python -m tests.api.authorisation"
    )
