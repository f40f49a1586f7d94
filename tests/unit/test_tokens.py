"""Gateway signing keys, access-token issue/verify, and client-registration checks (real crypto)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from fhir_gateway.security.clients import (
    RegistrationError,
    read_registrations,
    registration_files,
    validate_public_jwks,
    validate_registration,
)
from fhir_gateway.security.tokens import (
    GatewayKeys,
    InvalidToken,
    KeyConfigError,
    TokenService,
    dev_key_path,
    generate_gateway_key,
    load_gateway_keys,
)
from fhir_gateway.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clients"


def _keys() -> GatewayKeys:
    return GatewayKeys.from_document(
        orjson.dumps(generate_gateway_key().as_dict(private=True)).decode(), "test"
    )


def _client(**changes: object):
    reg = read_registrations([EXAMPLES / "welzijn-de-brug-cms.client.json"])[0]
    return reg if not changes else validate_registration({**reg.to_json(), **changes})


@pytest.fixture
def service() -> TokenService:
    return TokenService(_keys(), "https://gw.example.nl/fhir")


def test_issue_and_verify(service: TokenService) -> None:
    issued = service.issue(_client(), ["system/Task.rs", "system/CarePlan.r"])
    assert issued.expires_in == 300
    assert issued.scope == "system/CarePlan.r system/Task.rs"
    principal = service.verify(issued.access_token)
    assert principal.client_id == "welzijn-de-brug-cms"
    assert principal.organization == "Organization/welzijn-de-brug"
    assert principal.role == "welfare-org"
    assert principal.scopes == ("system/CarePlan.r", "system/Task.rs")
    assert principal.authenticated
    header = json.loads(base64.urlsafe_b64decode(issued.access_token.split(".")[0] + "=="))
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"


def test_lifetime_capped_at_300(service: TokenService) -> None:
    assert service.issue(_client(), "system/Task.r", lifetime=3600).expires_in == 300
    assert TokenService(service.keys, service.issuer, lifetime=9999).lifetime == 300


def test_expired_token_refused(service: TokenService) -> None:
    old = service.issue(_client(), "system/Task.r", now=int(time.time()) - 400)
    with pytest.raises(InvalidToken, match="expired"):
        service.verify(old.access_token)


def test_a_remembered_token_still_expires(service: TokenService) -> None:
    issued = service.issue(_client(), "system/Task.r")
    now = int(time.time())
    assert service.verify(issued.access_token, now=now).client_id == "welzijn-de-brug-cms"
    assert issued.access_token in service._verified  # the signature is checked once
    assert service.verify(issued.access_token, now=now + 60).client_id == "welzijn-de-brug-cms"
    with pytest.raises(InvalidToken, match="expired"):
        service.verify(issued.access_token, now=now + 400)


def test_a_refused_token_is_not_remembered(service: TokenService) -> None:
    old = service.issue(_client(), "system/Task.r", now=int(time.time()) - 400)
    for _ in range(2):
        with pytest.raises(InvalidToken, match="expired"):
            service.verify(old.access_token)
    assert old.access_token not in service._verified


def test_tampered_signature_refused(service: TokenService) -> None:
    token = service.issue(_client(), "system/Task.r").access_token
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "system/*.cruds"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        service.verify(f"{head}.{forged}.{sig}")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken):
        service.verify(f"{head}.{payload}.{flipped}")


def test_token_from_another_gateway_key_refused(service: TokenService) -> None:
    other = TokenService(_keys(), service.issuer)
    with pytest.raises(InvalidToken):
        service.verify(other.issue(_client(), "system/Task.r").access_token)


def test_token_from_another_issuer_name_refused(service: TokenService) -> None:
    other = TokenService(service.keys, "https://elsewhere.example.nl/fhir")
    with pytest.raises(InvalidToken, match="audience"):
        service.verify(other.issue(_client(), "system/Task.r").access_token)


def test_client_assertion_shaped_jwt_is_not_an_access_token(service: TokenService) -> None:
    now = int(time.time())
    claims = {"iss": service.issuer, "aud": service.issuer, "sub": "x", "exp": now + 60, "iat": now}
    token = jwt.encode({"alg": "ES256", "kid": service.keys.signing.kid}, claims, service.keys.signing)
    with pytest.raises(InvalidToken, match="not an access token"):
        service.verify(token)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "x" * 9000])
def test_garbage_refused(service: TokenService, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        service.verify(garbage)


def test_jwks_rotation_first_signs_all_verify() -> None:
    old, new = generate_gateway_key(), generate_gateway_key()
    before = GatewayKeys.from_document(json.dumps({"keys": [old.as_dict(private=True)]}), "t")
    after = GatewayKeys.from_document(
        json.dumps({"keys": [new.as_dict(private=True), old.as_dict(private=False)]}), "t"
    )
    token = TokenService(before, "i").issue(_client(), "system/Task.r").access_token
    assert TokenService(after, "i").verify(token).client_id == "welzijn-de-brug-cms"
    assert after.signing.kid == new.kid


def test_rsa_and_pem_gateway_keys() -> None:
    rsa = RSAKey.generate_key(2048, private=True)
    keys = GatewayKeys.from_document(rsa.as_pem(private=True).decode(), "pem")
    assert keys.alg == "RS256" and keys.signing.kid
    service = TokenService(keys, "i")
    assert service.verify(service.issue(_client(), "system/Task.r").access_token).role == "welfare-org"


@pytest.mark.parametrize(
    "doc",
    [
        lambda: generate_gateway_key().as_dict(private=False),  # public only: cannot sign
        lambda: ECKey.generate_key("P-384", private=True).as_dict(private=True),  # wrong curve for ES256
        lambda: OctKey.generate_key(256).as_dict(private=True),  # symmetric
        lambda: {"not": "a key"},
    ],
)
def test_bad_gateway_keys(doc) -> None:
    with pytest.raises(KeyConfigError):
        GatewayKeys.from_document(json.dumps(doc()), "t")


def test_dev_key_generated_once_beside_sqlite(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/gw.db")
    path = dev_key_path(settings)
    assert path.parent == tmp_path.resolve()
    first = load_gateway_keys(settings)
    assert path.is_file() and (path.stat().st_mode & 0o077) == 0
    second = load_gateway_keys(settings)
    assert first.signing.kid == second.signing.kid
    assert not list(tmp_path.glob(".*"))  # no temp files left


def test_dev_key_of_a_server_database_lives_under_gateway_home(tmp_path: Path) -> None:
    """Not `./var/` of wherever the command runs: every command finds the same key."""
    settings = Settings(database_url="postgresql+psycopg://postgres@127.0.0.1/gw", home=tmp_path)
    assert dev_key_path(settings) == tmp_path.resolve() / "var" / dev_key_path(settings).name


def test_key_file_and_inline_key(tmp_path: Path) -> None:
    key = generate_gateway_key()
    file = tmp_path / "k.jwk"
    file.write_text(json.dumps(key.as_dict(private=True)))
    assert (
        load_gateway_keys(Settings(database_url="sqlite://", token_key_file=str(file))).signing.kid == key.kid
    )
    other = generate_gateway_key()
    inline = json.dumps(other.as_dict(private=True))
    both = Settings(database_url="sqlite://", token_key=inline, token_key_file=str(file))
    assert load_gateway_keys(both).signing.kid == other.kid  # inline wins
    from_env = Settings.from_env({"GATEWAY_TOKEN_KEY": inline})
    assert load_gateway_keys(from_env).signing.kid == other.kid
    with pytest.raises(KeyConfigError):
        load_gateway_keys(Settings(database_url="sqlite://", token_key_file=str(tmp_path / "missing.jwk")))


# -- client registrations ----------------------------------------------------------------------
def test_every_example_registration_is_valid_and_public() -> None:
    regs = read_registrations(registration_files(EXAMPLES))
    assert {r.role for r in regs} == {"gp-practice", "welfare-org", "admin"}
    for reg in regs:
        assert reg.dev_only
        for key in reg.jwks["keys"]:
            assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key)
        assert (EXAMPLES / f"{reg.client_id}.dev-only.private.jwk").is_file()


def test_example_clients_cover_every_directory_organisation() -> None:
    bundle = json.loads((EXAMPLES.parent / "directory" / "directory.json").read_text())
    orgs = {
        f"Organization/{e['resource']['id']}"
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Organization"
    }
    registered = {r.organization for r in read_registrations(registration_files(EXAMPLES))}
    assert orgs <= registered


@pytest.mark.parametrize(
    "key",
    [
        lambda: ECKey.generate_key("P-384", private=True, auto_kid=True).as_dict(private=True),
        lambda: RSAKey.generate_key(2048, private=True, auto_kid=True).as_dict(private=True),
        lambda: {**OctKey.generate_key(256).as_dict(private=True), "kid": "s"},
    ],
)
def test_private_or_secret_key_material_rejected(key) -> None:
    with pytest.raises(RegistrationError, match="private or secret"):
        validate_public_jwks({"keys": [key()]})


@pytest.mark.filterwarnings("ignore:Key size should be")
@pytest.mark.parametrize(
    ("key", "message"),
    [
        (lambda: ECKey.generate_key("P-256", auto_kid=True).as_dict(private=False), "P-384"),
        (lambda: RSAKey.generate_key(1024, auto_kid=True).as_dict(private=False), "2048"),
        (
            lambda: {**ECKey.generate_key("P-384", auto_kid=True).as_dict(private=False), "alg": "ES256"},
            "alg",
        ),
        (lambda: {**ECKey.generate_key("P-384").as_dict(private=False)}, "kid"),
        (lambda: {**ECKey.generate_key("P-384", auto_kid=True).as_dict(private=False), "use": "enc"}, "use"),
    ],
)
def test_unsuitable_public_keys_rejected(key, message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        validate_public_jwks({"keys": [key()]})


def test_registration_checks() -> None:
    base = _client().to_json()
    for changes, message in [
        ({"role": "superuser"}, "role"),
        ({"organization": None}, "organization"),
        ({"organization": "Patient/1"}, "organization"),
        ({"scopes": ["patient/*.read"]}, "scopes"),
        ({"scopes": []}, "scope"),
        ({"client_id": "bad id"}, "client_id"),
        ({"jwks": {"keys": []}}, "jwks"),
    ]:
        with pytest.raises(RegistrationError, match=message):
            validate_registration({**base, **changes})
    assert validate_registration({**base, "scopes": "system/Task.read system/Task.write"}).scopes == (
        "system/Task.cruds",
    )


# -- HL7 v2 senders on a registration ---------------------------------------------------------------
def _gp() -> dict[str, object]:
    return read_registrations([EXAMPLES / "praktijk-de-geinoord-his.client.json"])[0].to_json()


FINGERPRINT = "AB:" * 31 + "CD"


def test_v2_sender_fields_are_checked_and_stored_in_canonical_form() -> None:
    reg = validate_registration(
        {
            **_gp(),
            "v2_facilities": ["01051234", "01051234"],
            "mllp_certificates": [FINGERPRINT],
            "mllp_addresses": ["10.20.0.0/16", "127.0.0.1", "::1"],
        }
    )
    assert reg.v2_facilities == ("01051234",)
    assert reg.mllp_certificates == ("ab" * 31 + "cd",)
    assert reg.mllp_addresses == ("10.20.0.0/16", "127.0.0.1/32", "::1/128")
    assert validate_registration(reg.to_json()) == reg


def test_example_gp_clients_send_v2_as_their_own_agb_code() -> None:
    bundle = json.loads((EXAMPLES.parent / "directory" / "directory.json").read_text())
    agb = {
        f"Organization/{e['resource']['id']}": [
            i["value"] for i in e["resource"].get("identifier", []) if i["system"].endswith("agb-z")
        ]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Organization"
    }
    for reg in read_registrations(registration_files(EXAMPLES)):
        expected = tuple(agb[reg.organization]) if reg.role == "gp-practice" and reg.organization else ()
        assert reg.v2_facilities == expected, reg.client_id
        assert reg.mllp_certificates == () and reg.mllp_addresses == ()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"v2_facilities": "01051234"}, "v2_facilities must be a list"),
        ({"v2_facilities": ["1051234"]}, "not an AGB code"),
        ({"v2_facilities": ["0105123X"]}, "not an AGB code"),
        ({"mllp_certificates": ["abcd"]}, "not a SHA-256 fingerprint"),
        ({"mllp_addresses": ["10.0.0.1/16"]}, "not an IP address or network"),
        ({"mllp_addresses": ["gp.example.nl"]}, "not an IP address or network"),
        ({"v2_facilities": [], "mllp_addresses": ["127.0.0.1"]}, "need v2_facilities"),
        ({"v2_facilities": [f"{n:08d}" for n in range(65)]}, "at most 64"),
    ],
)
def test_bad_v2_sender_fields_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        validate_registration({**_gp(), **changes})


@pytest.mark.parametrize("client", ["welzijn-de-brug-cms", "gateway-admin"])
def test_only_a_gp_practice_may_have_v2_facilities(client: str) -> None:
    doc = read_registrations([EXAMPLES / f"{client}.client.json"])[0].to_json()
    with pytest.raises(RegistrationError, match="only a gp-practice"):
        validate_registration({**doc, "v2_facilities": ["01051234"]})
