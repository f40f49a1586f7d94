"""Shared pieces for the fault tests: a referral stream against a real server and the store audit."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from benchmarks.harness import fhir_headers, search_all, token
from tests.wor import referral_bundle

REFERRAL_SYSTEM = "https://his.hadegeinoord.example.nl/verwijzing"


@dataclass
class Stream:
    """Client threads posting distinct referrals until stopped; remembers every answer."""

    base: str
    tok: str
    tag: str
    threads: int = 2
    bodies: dict[str, bytes] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)  # referral id -> status | exception name
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # bodies of non-2xx answers
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Stream:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, n: int) -> None:
        i = 0
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                rid = f"{self.tag}-{n}-{i}"
                i += 1
                body = orjson.dumps(referral_bundle(rid))
                with self._lock:
                    self.bodies[rid] = body
                try:
                    r = client.post("/fhir", content=body, headers=fhir_headers(self.tok))
                    answer: Any = r.status_code
                    if r.status_code >= 300:
                        with self._lock:
                            self.outcomes.append({"status": r.status_code, "body": _json(r)})
                except httpx.HTTPError as exc:
                    answer = type(exc).__name__
                    time.sleep(0.05)
                with self._lock:
                    self.answers[rid] = answer

    def ok(self) -> list[str]:
        with self._lock:
            return [rid for rid, a in self.answers.items() if a in (200, 201)]

    def join(self) -> None:
        self.stop.set()
        for t in self._workers:
            t.join(timeout=60)


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return r.text[:500]


def all_of(
    base: str, headers: dict[str, str], rtype: str, params: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every resource of a type (follows `next` links)."""
    with httpx.Client(timeout=60) as client:
        return search_all(client, f"{base}/fhir/{rtype}", headers, params)


def store_audit(base: str, env: dict[str, str]) -> dict[str, Any]:
    """Referral id -> count of ServiceRequests; per SR the number of Tasks and CarePlans."""
    headers = fhir_headers(token(env, "gateway-admin"))
    srs = all_of(base, headers, "ServiceRequest")
    tasks = all_of(base, headers, "Task")
    careplans = all_of(base, headers, "CarePlan")
    by_referral = Counter(
        ident["value"]
        for sr in srs
        for ident in sr.get("identifier", [])
        if ident.get("system") == REFERRAL_SYSTEM
    )
    task_focus = Counter(t.get("focus", {}).get("reference") for t in tasks)
    plan_for = Counter(
        ref["reference"]
        for cp in careplans
        for ref in cp.get("supportingInfo", [])
        if ref.get("reference", "").startswith("ServiceRequest/")
    )
    per_sr = {
        f"ServiceRequest/{sr['id']}": (
            task_focus[f"ServiceRequest/{sr['id']}"],
            plan_for[f"ServiceRequest/{sr['id']}"],
        )
        for sr in srs
    }
    return {"by_referral": by_referral, "per_sr": per_sr, "tasks": len(tasks), "careplans": len(careplans)}


def resend(base: str, tok: str, bodies: dict[str, bytes]) -> Counter[Any]:
    statuses: Counter[Any] = Counter()
    with httpx.Client(base_url=base, timeout=30) as client:
        for body in bodies.values():
            statuses[client.post("/fhir", content=body, headers=fhir_headers(tok)).status_code] += 1
    return statuses
