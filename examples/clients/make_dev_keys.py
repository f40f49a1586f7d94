"""Generate the DEVELOPMENT client registrations and key pairs in this folder.

One system client per organisation in `examples/directory/directory.json` (GP practices →
`gp-practice`, welfare organisations → `welfare-org`) plus one `admin`. Each gets a key pair:
the private half goes to `<client_id>.dev-only.private.jwk`, the public half into the
registration `<client_id>.client.json` (marked `dev_only`).

These private keys are committed on purpose, so tests and demos can sign client assertions.
That makes them PUBLIC: never register them on a gateway that holds real patient data.

    python examples/clients/make_dev_keys.py          # keeps existing keys, rewrites registrations
    python examples/clients/make_dev_keys.py --force  # new keys for every client
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, RSAKey

HERE = Path(__file__).resolve().parent
DIRECTORY = HERE.parent / "directory" / "directory.json"
GP_TYPE, WELFARE_TYPE = "Z3", "cg"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"

GP_SCOPES = [
    "system/ServiceRequest.crs",
    "system/Task.rus",
    "system/CarePlan.rs",
    "system/Communication.rs",
    "system/Patient.crus",
    "system/Practitioner.crus",
    "system/PractitionerRole.crus",
    "system/Consent.cru",
    "system/Organization.rs",
    "system/HealthcareService.rs",
    "system/Subscription.cruds",  # their own rest-hook Subscriptions (README: Notifications)
]
WELFARE_SCOPES = [
    "system/Task.rus",
    "system/CarePlan.rus",
    "system/ServiceRequest.rs",
    "system/Patient.r",
    "system/Communication.crs",
    "system/QuestionnaireResponse.crs",
    "system/Organization.rs",
    "system/Practitioner.rs",  # who referred (Task.requester), a practice's locum included
    "system/PractitionerRole.rs",
    "system/Subscription.cruds",  # their own rest-hook Subscriptions (README: Notifications)
]
ADMIN_SCOPES = ["system/*.cruds"]


def organisations() -> list[tuple[str, str, str, list[str]]]:
    """(id, name, type code, AGB codes) of every Organization in the example directory."""
    bundle = json.loads(DIRECTORY.read_text())
    out = []
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] != "Organization":
            continue
        codes = [c.get("code") for t in res.get("type", []) for c in t.get("coding", [])]
        agb = [i["value"] for i in res.get("identifier", []) if i.get("system") == AGB]
        out.append((res["id"], res["name"], GP_TYPE if GP_TYPE in codes else WELFARE_TYPE, agb))
    return out


def new_key(kind: str) -> ECKey | RSAKey:
    if kind == "RSA":
        return RSAKey.generate_key(2048, {"alg": "RS384", "use": "sig"}, private=True, auto_kid=True)
    return ECKey.generate_key("P-384", {"alg": "ES384", "use": "sig"}, private=True, auto_kid=True)


def key_for(client_id: str, kind: str, force: bool) -> ECKey | RSAKey:
    path = HERE / f"{client_id}.dev-only.private.jwk"
    if path.exists() and not force:
        data = json.loads(path.read_text())
        return RSAKey.import_key(data) if data["kty"] == "RSA" else ECKey.import_key(data)
    key = new_key(kind)
    private = key.as_dict(private=True)
    private.update({"kid": key.kid, "alg": "RS384" if kind == "RSA" else "ES384", "use": "sig"})
    path.write_text(json.dumps(private, indent=2) + "\n")
    return key


def registration(
    client_id: str, name: str, org: str | None, role: str, scopes: list[str], key: Any, facilities: list[str]
) -> dict:
    """A GP practice may send HL7 v2 as its own AGB code (MSH-4): `v2_facilities`."""
    public = key.as_dict(private=False)
    public.update({"kid": key.kid, "alg": "RS384" if public["kty"] == "RSA" else "ES384", "use": "sig"})
    return {
        "client_id": client_id,
        "name": f"{name} (DEV ONLY — private key is in the repository)",
        "organization": org,
        "role": role,
        "scopes": scopes,
        **({"v2_facilities": facilities} if facilities else {}),
        "active": True,
        "dev_only": True,
        "jwks": {"keys": [public]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="replace existing private keys")
    args = parser.parse_args()
    clients: list[tuple[str, str, str | None, str, list[str], str, list[str]]] = []
    for org_id, name, kind, agb in organisations():
        if kind == GP_TYPE:  # GP systems sign RS384, welfare systems ES384: both paths stay exercised
            org = f"Organization/{org_id}"
            clients.append((f"{org_id}-his", name, org, "gp-practice", GP_SCOPES, "RSA", agb))
        else:
            org = f"Organization/{org_id}"
            clients.append((f"{org_id}-cms", name, org, "welfare-org", WELFARE_SCOPES, "EC", []))
    clients.append(("gateway-admin", "Gateway administrator", None, "admin", ADMIN_SCOPES, "EC", []))
    for client_id, name, org, role, scopes, kind, facilities in clients:
        key = key_for(client_id, kind, args.force)
        doc = registration(client_id, name, org, role, scopes, key, facilities)
        (HERE / f"{client_id}.client.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        print(f"{client_id:36} {role:12} {org or '-'}")


if __name__ == "__main__":
    main()
