"""SMART Backend Services through the real app: discovery, the token endpoint with real signed
client assertions (RS384/ES384), bearer-token checks on API calls, the CLI. No mocks."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from fhir_gateway.api.auth import install_auth, is_public
from fhir_gateway.api.http import fhir_response
from fhir_gateway.app import create_app
from fhir_gateway.commands.clients import clients as clients_cli
from fhir_gateway.commands.clients import token as token_cli
from fhir_gateway.fhir.outcome import FhirError
from fhir_gateway.rest.router import error_response
from fhir_gateway.security.authn import JWT_BEARER, make_client_assertion
from fhir_gateway.security.clients import load_client_registrations, set_client_active
from fhir_gateway.security.scopes import require_scope
from fhir_gateway.security.tokens import GatewayKeys, TokenService, generate_gateway_key
from fhir_gateway.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clients"
TOKEN_URL = "http://gateway.test/auth/token"
GP = "praktijk-de-geinoord-his"  # RS384 key
WELFARE = "welzijn-de-brug-cms"  # ES384 key


def private_key(client_id: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{client_id}.dev-only.private.jwk").read_text())


def assertion(client_id: str = WELFARE, **changes: Any) -> str:
    return make_client_assertion(client_id, private_key(client_id), changes.pop("aud", TOKEN_URL), **changes)


def form(client_assertion: str, scope: str = "system/Task.rs", **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": client_assertion,
        "scope": scope,
        **extra,
    }


def add_test_routes(app: FastAPI) -> None:
    """Behind the auth middleware like /fhir: echo the principal; demand a scope."""

    @app.get("/test/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        p = request.state.principal
        return {
            "client_id": p.client_id,
            "organization": p.organization,
            "role": p.role,
            "scopes": list(p.scopes),
        }

    @app.get("/test/needs/{rtype}/{interaction}")
    async def needs(request: Request, rtype: str, interaction: str) -> Any:
        try:
            require_scope(request.state.principal, rtype, interaction)
        except FhirError as exc:
            return fhir_response(error_response(exc))
        return {"ok": True}


def build(url: str, tokens: TokenService | None = None, **settings: Any) -> TestClient:
    known = {f.name for f in dataclasses.fields(Settings)}
    s = Settings(database_url=url, **{k: v for k, v in settings.items() if k in known})
    for name, value in settings.items():
        if name not in known:  # e.g. insecure_dev, until Settings has the field
            object.__setattr__(s, name, value)
    app = create_app(s)
    if not hasattr(app.state, "tokens"):  # the lead's create_app may already wire it
        install_auth(app, s, app.state.ctx.database, tokens)
    add_test_routes(app)
    load_client_registrations(app.state.ctx.database, EXAMPLES)
    return TestClient(app, base_url="http://gateway.test")


@pytest.fixture
def tokens() -> TokenService:
    keys = GatewayKeys.from_document(json.dumps(generate_gateway_key().as_dict(private=True)), "test")
    return TokenService(keys, "urn:fhir-gateway")


@pytest.fixture
def api(database_url: str, tokens: TokenService) -> Iterator[TestClient]:
    with build(database_url, tokens) as c:
        yield c


def get_token(api: TestClient, client_id: str = WELFARE, scope: str = "system/Task.rs") -> str:
    resp = api.post("/auth/token", data=form(assertion(client_id), scope))
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def oauth_error(resp: Any, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == code, body
    assert resp.headers["cache-control"] == "no-store"
    return body["error_description"]


# -- discovery and public paths ------------------------------------------------------------------
def test_smart_configuration(api: TestClient) -> None:
    resp = api.get("/.well-known/smart-configuration")
    assert resp.status_code == 200
    conf = resp.json()
    assert conf["token_endpoint"] == TOKEN_URL
    assert conf["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert conf["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert conf["grant_types_supported"] == ["client_credentials"]
    assert {"client-confidential-asymmetric", "permission-v2"} <= set(conf["capabilities"])
    assert "system/*.cruds" in conf["scopes_supported"]


def test_smart_configuration_relative_to_the_fhir_base(api: TestClient) -> None:
    """SMART App Launch puts discovery at `[base]/.well-known/…`: the same public document."""
    api.headers.pop("Authorization", None)
    resp = api.get("/fhir/.well-known/smart-configuration")
    assert resp.status_code == 200
    assert resp.json() == api.get("/.well-known/smart-configuration").json()
    assert is_public("/fhir/.well-known/smart-configuration")
    assert not is_public("/fhir/.well-known/../Patient")


def test_smart_configuration_uses_base_url(sqlite_url: str, tokens: TokenService) -> None:
    with build(sqlite_url, tokens, base_url="https://wor.example.nl/fhir") as c:
        assert c.get("/.well-known/smart-configuration").json()["token_endpoint"] == (
            "https://wor.example.nl/auth/token"
        )
        # an assertion for the request-derived URL is not good enough once the base is configured
        oauth_error(c.post("/auth/token", data=form(assertion())), 401, "invalid_client")
        ok = c.post("/auth/token", data=form(assertion(aud="https://wor.example.nl/auth/token")))
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path", ["/fhir/metadata", "/healthz", "/readyz", "/metrics"])
def test_public_paths_need_no_token(api: TestClient, path: str) -> None:
    assert api.get(path).status_code == 200


def test_dot_segments_do_not_make_a_path_public() -> None:
    assert is_public("/.well-known/smart-configuration") and is_public("/fhir/metadata")
    assert not is_public("/.well-known/../fhir/Patient")
    assert not is_public("/fhir/metadata/../Patient")
    assert not is_public("/fhir//metadata") and not is_public("/fhir/Patient")


# -- the token endpoint ------------------------------------------------------------------------
def test_rs384_assertion_gets_a_token(api: TestClient) -> None:
    resp = api.post("/auth/token", data=form(assertion(GP), "system/ServiceRequest.cr system/Task.rs"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/ServiceRequest.cr system/Task.rs"
    assert resp.headers["cache-control"] == "no-store"
    who = api.get("/test/whoami", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert who == {
        "client_id": GP,
        "organization": "Organization/praktijk-de-geinoord",
        "role": "gp-practice",
        "scopes": ["system/ServiceRequest.cr", "system/Task.rs"],
    }


def test_es384_assertion_gets_a_token_and_reads_fhir(api: TestClient) -> None:
    token = get_token(api, WELFARE, "system/Task.rus system/Organization.rs")
    resp = api.get("/fhir/Organization", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["resourceType"] == "Bundle"


def test_assertion_signed_with_wrong_key(api: TestClient) -> None:
    registered = private_key(WELFARE)
    impostor = ECKey.generate_key("P-384", private=True).as_dict(private=True)
    impostor["kid"] = registered["kid"]
    bad = make_client_assertion(WELFARE, impostor, TOKEN_URL)
    assert "signature" in oauth_error(api.post("/auth/token", data=form(bad)), 401, "invalid_client")
    # another registered client's key, presented under this client's id
    other = make_client_assertion(WELFARE, private_key("welzijn-houten-doet-mee-cms"), TOKEN_URL)
    oauth_error(api.post("/auth/token", data=form(other)), 401, "invalid_client")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(client_id: str = WELFARE) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 60, "jti": uuid.uuid4().hex}


def test_alg_none_refused(api: TestClient) -> None:
    kid = private_key(WELFARE)["kid"]
    unsigned = f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(_claims())}."
    assert "alg" in oauth_error(api.post("/auth/token", data=form(unsigned)), 401, "invalid_client")


def test_hs256_refused(api: TestClient) -> None:
    kid = private_key(WELFARE)["kid"]
    secret = OctKey.import_key(b"0123456789abcdef0123456789abcdef")
    token = jwt.encode({"alg": "HS256", "kid": kid}, _claims(), secret, algorithms=["HS256"])
    assert "alg" in oauth_error(api.post("/auth/token", data=form(token)), 401, "invalid_client")


def test_other_strong_alg_refused(api: TestClient) -> None:
    jwk = {k: v for k, v in private_key(GP).items() if k != "alg"}  # joserfc would refuse RS256 otherwise
    key = RSAKey.import_key(jwk)
    token = jwt.encode({"alg": "RS256", "kid": key.kid}, _claims(GP), key, algorithms=["RS256"])
    oauth_error(api.post("/auth/token", data=form(token)), 401, "invalid_client")


def test_wrong_audience(api: TestClient) -> None:
    bad = assertion(aud="https://other-gateway.example.nl/auth/token")
    assert "aud" in oauth_error(api.post("/auth/token", data=form(bad)), 401, "invalid_client")


def test_expired_assertion(api: TestClient) -> None:
    old = assertion(now=int(time.time()) - 400, lifetime=60)
    assert "expired" in oauth_error(api.post("/auth/token", data=form(old)), 401, "invalid_client")


def test_exp_too_far_in_future(api: TestClient) -> None:
    far = assertion(lifetime=3600)
    assert "five minutes" in oauth_error(api.post("/auth/token", data=form(far)), 401, "invalid_client")


def test_iss_and_sub_must_match(api: TestClient) -> None:
    key = ECKey.import_key(private_key(WELFARE))
    claims = {**_claims(), "sub": "someone-else"}
    token = jwt.encode({"alg": "ES384", "kid": key.kid}, claims, key, algorithms=["ES384"])
    oauth_error(api.post("/auth/token", data=form(token)), 401, "invalid_client")


def test_missing_jti(api: TestClient) -> None:
    key = ECKey.import_key(private_key(WELFARE))
    claims = {k: v for k, v in _claims().items() if k != "jti"}
    token = jwt.encode({"alg": "ES384", "kid": key.kid}, claims, key, algorithms=["ES384"])
    assert "jti" in oauth_error(api.post("/auth/token", data=form(token)), 401, "invalid_client")


def test_replayed_jti(api: TestClient) -> None:
    once = assertion(jti="the-same-jti")
    assert api.post("/auth/token", data=form(once)).status_code == 200
    # RFC 7523 §3.2: a client assertion that is not valid (here: replayed) is invalid_client
    assert "replay" in oauth_error(api.post("/auth/token", data=form(once)), 401, "invalid_client")
    # the same jti from another client is that client's business
    other = assertion("welzijn-houten-doet-mee-cms", jti="the-same-jti")
    assert api.post("/auth/token", data=form(other)).status_code == 200


def test_unknown_client(api: TestClient) -> None:
    stranger = ECKey.generate_key("P-384", private=True, auto_kid=True)
    bad = make_client_assertion("nobody", stranger.as_dict(private=True), TOKEN_URL)
    oauth_error(api.post("/auth/token", data=form(bad)), 401, "invalid_client")


def test_inactive_client(api: TestClient) -> None:
    set_client_active(api.app.state.ctx.database, WELFARE, False)
    oauth_error(api.post("/auth/token", data=form(assertion())), 401, "invalid_client")


def test_scope_narrowed_to_allowed(api: TestClient) -> None:
    resp = api.post("/auth/token", data=form(assertion(), "system/*.cruds openid"))
    assert resp.status_code == 200, resp.text
    granted = resp.json()["scope"].split()
    assert "system/Task.rus" in granted and "system/Patient.r" in granted
    assert not any(s.startswith("system/*") for s in granted)
    resp = api.post("/auth/token", data=form(assertion(), "system/Task.cruds"))
    assert resp.json()["scope"] == "system/Task.rus"


def test_invalid_scope(api: TestClient) -> None:
    resp = api.post("/auth/token", data=form(assertion(), "system/Consent.c system/Practitioner.d"))
    oauth_error(resp, 400, "invalid_scope")
    oauth_error(api.post("/auth/token", data=form(assertion(), "")), 400, "invalid_request")


def test_v1_scopes_translated(api: TestClient) -> None:
    resp = api.post("/auth/token", data=form(assertion(), "system/Task.read system/CarePlan.write"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["scope"] == "system/CarePlan.u system/Task.rs"


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"client_assertion_type": "urn:other"}, 401, "invalid_client"),
        ({"client_assertion": ""}, 401, "invalid_client"),
        ({"client_secret": "hunter2"}, 401, "invalid_client"),
        ({"client_id": "someone-else"}, 401, "invalid_client"),
    ],
)
def test_bad_token_requests(api: TestClient, data: dict[str, str], status: int, code: str) -> None:
    oauth_error(api.post("/auth/token", data={**form(assertion()), **data}), status, code)


def test_duplicate_parameter_and_wrong_content_type(api: TestClient) -> None:
    body = "grant_type=client_credentials&grant_type=client_credentials&scope=system/Task.r"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    oauth_error(api.post("/auth/token", content=body, headers=headers), 400, "invalid_request")
    oauth_error(api.post("/auth/token", json=form(assertion())), 400, "invalid_request")


def test_missing_grant_type_is_invalid_request(api: TestClient) -> None:
    data = {k: v for k, v in form(assertion()).items() if k != "grant_type"}
    assert "grant_type" in oauth_error(api.post("/auth/token", data=data), 400, "invalid_request")


def test_oversized_token_request_is_an_oauth_413(api: TestClient) -> None:
    """The body limit answers before the endpoint runs; on the token endpoint in OAuth form,
    whether the size is declared up front or only found while the body streams."""
    big = {**form(assertion()), "pad": "x" * 70_000}
    assert "65536 bytes" in oauth_error(api.post("/auth/token", data=big), 413, "invalid_request")
    body = "&".join(f"{k}={v}" for k, v in big.items()).encode()

    def chunks() -> Iterator[bytes]:
        yield from (body[i : i + 8192] for i in range(0, len(body), 8192))

    headers = {"content-type": "application/x-www-form-urlencoded"}
    oauth_error(api.post("/auth/token", content=chunks(), headers=headers), 413, "invalid_request")
    # the FHIR API keeps its OperationOutcome for the same refusal (the default limit is 10 MiB)
    fhir = api.post(
        "/fhir/Patient",
        content=b" " * (10 * 1024 * 1024 + 1),
        headers={
            "content-type": "application/fhir+json",
            "authorization": f"Bearer {get_token(api, GP, 'system/Patient.c')}",
        },
    )
    assert fhir.status_code == 413 and _outcome_code(fhir) == "too-costly"


def test_wrong_method_on_the_token_endpoint_is_an_oauth_405(api: TestClient) -> None:
    resp = api.get("/auth/token")
    oauth_error(resp, 405, "invalid_request")
    assert "POST" in resp.headers["allow"]
    other = api.post("/healthz")  # elsewhere outside /fhir: still an OperationOutcome
    assert other.status_code == 405 and _outcome_code(other) == "not-supported"


def test_throttled_token_requests_get_an_oauth_429(sqlite_url: str, tokens: TokenService) -> None:
    with build(sqlite_url, tokens, rate_limit_per_second=0.2, rate_limit_burst=1) as c:
        assert c.post("/auth/token", data=form(assertion())).status_code == 200
        resp = c.post("/auth/token", data=form(assertion()))
        assert "Too many requests" in oauth_error(resp, 429, "temporarily_unavailable")
        assert int(resp.headers["retry-after"]) >= 1


def test_a_bad_assertion_flood_never_blocks_a_valid_assertion_from_that_address(
    sqlite_url: str, tokens: TokenService
) -> None:
    """Forged assertions (a registered client, the wrong key) from one address: 401, then 429
    once its failure budget (bucket 2) is spent; a valid assertion from there still gets its token."""
    with build(sqlite_url, tokens, rate_limit_per_second=100, rate_limit_auth_failures_per_second=1) as c:
        wrong_key = ECKey.generate_key("P-384", private=True).as_dict(private=True)
        forged = make_client_assertion(WELFARE, {**wrong_key, "kid": private_key(WELFARE)["kid"]}, TOKEN_URL)
        flood = [c.post("/auth/token", data=form(forged)) for _ in range(8)]
        assert [r.status_code for r in flood[:2]] == [401, 401]
        oauth_error(flood[0], 401, "invalid_client")
        for resp in flood[2:]:
            assert "failed authentications" in oauth_error(resp, 429, "temporarily_unavailable")
            assert int(resp.headers["retry-after"]) >= 1
        granted = c.post("/auth/token", data=form(assertion()))
        assert granted.status_code == 200, granted.text
        bearer = {"Authorization": f"Bearer {granted.json()['access_token']}"}
        assert c.get("/test/whoami", headers=bearer).json()["client_id"] == WELFARE
        assert 'gateway_http_throttled_total{kind="address"} 6.0' in c.get("/metrics").text


def test_a_store_that_refuses_gives_an_oauth_503(sqlite_url: str, tokens: TokenService) -> None:
    """SQLite's own SQLITE_READONLY (`PRAGMA query_only`, as in tests/faults): the jti of the
    assertion cannot be recorded, so no token; 503 + Retry-After in the OAuth shape."""
    import sqlalchemy as sa

    with build(sqlite_url, tokens) as c:
        read_only = [True]

        @sa.event.listens_for(c.app.state.ctx.database.engine, "checkout")
        def _apply(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            dbapi_connection.execute(f"PRAGMA query_only = {'ON' if read_only[0] else 'OFF'}")

        resp = c.post("/auth/token", data=form(assertion()))
        assert "read-only" in oauth_error(resp, 503, "temporarily_unavailable")
        assert resp.headers["retry-after"]
        read_only[0] = False
        assert c.post("/auth/token", data=form(assertion())).status_code == 200


def test_a_bug_in_the_token_endpoint_is_an_oauth_500(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection, not a mock: signing fails as a bug would."""

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("signing key vanished")

    monkeypatch.setattr(api.app.state.tokens, "issue", broken)
    description = oauth_error(api.post("/auth/token", data=form(assertion())), 500, "server_error")
    assert "vanished" not in description  # the log has the detail, the client does not


# -- bearer tokens on API calls ----------------------------------------------------------------
def _outcome_code(resp: Any) -> str:
    assert resp.headers["content-type"].startswith("application/fhir+json")
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["code"]


def test_missing_token_401(api: TestClient) -> None:
    resp = api.get("/fhir/Patient")
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Bearer realm="fhir-gateway"'
    assert _outcome_code(resp) == "login"
    assert api.get("/fhir/Patient", headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code == 401


def _assert_invalid_token(resp: Any) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"].startswith('Bearer realm="fhir-gateway", error="invalid_token"')
    assert _outcome_code(resp) == "security"


def test_invalid_expired_tampered_and_foreign_tokens_401(api: TestClient) -> None:
    from fhir_gateway.security.clients import get_client

    tokens: TokenService = api.app.state.tokens
    client = get_client(api.app.state.ctx.database, WELFARE)
    assert client is not None
    expired = tokens.issue(client, "system/Task.rs", now=int(time.time()) - 400).access_token
    valid = tokens.issue(client, "system/Task.rs").access_token
    head, payload, sig = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered = f"{head}.{_b64({**claims, 'role': 'admin'})}.{sig}"
    foreign_keys = GatewayKeys.from_document(json.dumps(generate_gateway_key().as_dict(private=True)), "x")
    foreign = TokenService(foreign_keys, tokens.issuer).issue(client, "system/Task.rs").access_token
    client_assertion = assertion()  # a client assertion is no access token
    for bad in ("not-a-jwt", expired, tampered, foreign, client_assertion):
        _assert_invalid_token(api.get("/fhir/Task", headers={"Authorization": f"Bearer {bad}"}))
    assert api.get("/fhir/Task", headers={"Authorization": f"Bearer {valid}"}).status_code == 200


def test_malformed_bearer_header_400(api: TestClient) -> None:
    resp = api.get("/fhir/Task", headers={"Authorization": "Bearer a b"})
    assert resp.status_code == 400
    assert 'error="invalid_request"' in resp.headers["www-authenticate"]


def test_missing_scope_403(api: TestClient) -> None:
    auth = {"Authorization": f"Bearer {get_token(api, WELFARE, 'system/Task.rs')}"}
    assert api.get("/test/needs/Task/r", headers=auth).json() == {"ok": True}
    resp = api.get("/test/needs/Task/u", headers=auth)
    assert resp.status_code == 403
    assert _outcome_code(resp) == "forbidden"
    assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]


def test_insecure_dev_acts_as_admin_without_token(sqlite_url: str, tokens: TokenService) -> None:
    with build(sqlite_url, tokens, insecure_dev=True) as c:
        assert c.get("/test/whoami").json()["role"] == "admin"
        assert c.get("/fhir/Patient").status_code == 200
        _assert_invalid_token(c.get("/fhir/Patient", headers={"Authorization": "Bearer forged"}))


def test_secure_by_default(sqlite_url: str, tokens: TokenService) -> None:
    with build(sqlite_url, tokens) as c:
        assert c.get("/test/whoami").status_code == 401


# -- command line ------------------------------------------------------------------------------
def test_cli_token_is_accepted_by_the_gateway(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url)
    with build(sqlite_url) as c:  # default key: the development key beside the SQLite file
        runner = CliRunner()
        obj = {"settings": settings}
        result = runner.invoke(token_cli, [GP, "--scope", "system/Task.rs"], obj=obj)
        assert result.exit_code == 0, result.output
        who = c.get("/test/whoami", headers={"Authorization": f"Bearer {result.output.strip()}"}).json()
        assert who["client_id"] == GP and who["scopes"] == ["system/Task.rs"]
        result = runner.invoke(token_cli, [GP, "--scope", "system/Task.d"], obj=obj)
        assert result.exit_code != 0 and "invalid_scope" in result.output
        listing = runner.invoke(clients_cli, [], obj=obj)
        assert listing.exit_code == 0 and WELFARE in listing.output and "DEV-ONLY" in listing.output


def test_cli_add_rejects_private_key_material(sqlite_url: str, tmp_path: Path) -> None:
    obj = {"settings": Settings(database_url=sqlite_url)}
    runner = CliRunner()
    key = ECKey.generate_key("P-384", private=True, auto_kid=True)
    private = tmp_path / "private.jwk"
    private.write_text(json.dumps(key.as_dict(private=True)))
    args = ["add", "new-his", "--organization", "Organization/praktijk-batau", "--role", "gp-practice"]
    result = runner.invoke(clients_cli, [*args, "--jwks", str(private), "--scope", "system/Task.rs"], obj=obj)
    assert result.exit_code != 0 and "private" in result.output
    public = tmp_path / "public.jwks"
    public.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    result = runner.invoke(clients_cli, [*args, "--jwks", str(public), "--scope", "system/Task.rs"], obj=obj)
    assert result.exit_code == 0, result.output
    assert "new-his" in runner.invoke(clients_cli, ["list"], obj=obj).output


def test_expired_jtis_are_purged_and_dev_clients_refusable(database: Any) -> None:
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from fhir_gateway.security.clients import RegistrationError, remember_jti
    from fhir_gateway.store.tables import UsedJtiRow

    past = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=10)  # the store keeps naive UTC
    assert remember_jti(database, "c1", "old", past)
    assert remember_jti(database, "c1", "new", past + timedelta(hours=1))
    assert not remember_jti(database, "c1", "new", past + timedelta(hours=1))
    with database.connection(write=False) as connection:
        left = set(connection.execute(sa.select(UsedJtiRow.__table__.c.jti)).scalars())
    assert left == {"new"}
    with pytest.raises(RegistrationError, match="dev-only"):
        load_client_registrations(database, EXAMPLES, allow_dev_only=False)
