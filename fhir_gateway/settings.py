"""One settings object, read from `GATEWAY_*` environment variables and passed down explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_database_url(home: Path) -> str:
    """The embedded database: `<home>/var/gateway.db` (home: `GATEWAY_HOME`, default the current
    directory, so `serve`, `token` and `clients` run anywhere find the same database and dev key)."""
    return f"sqlite:///{(Path(home) / 'var' / 'gateway.db').resolve()}"


@dataclass(frozen=True)
class Settings:
    # "" = the embedded SQLite database under <home>/var/ (filled in on construction)
    database_url: str = ""
    home: Path = Path(".")  # GATEWAY_HOME: holds var/ (embedded database, dev signing key)
    base_url: str = ""  # public base of the FHIR endpoint; "" = derive from the request
    profiles_dir: Path = REPO_ROOT / "profiles"
    mappings_dir: Path = REPO_ROOT / "mappings"
    examples_dir: Path = REPO_ROOT / "examples"
    load_examples: bool = True  # load examples/directory into an empty embedded database on serve
    log_level: str = "INFO"
    log_json: bool = True
    default_page_size: int = 50
    max_page_size: int = 1000
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_depth: int = 64  # deeper JSON nesting: 400 (checked in one pass over the parsed body)
    max_bundle_entries: int = 1000  # a bigger Bundle: 413, before any entry is processed
    max_v2_message_bytes: int = 1024 * 1024  # POST /v2 and the MLLP listener
    max_v2_segments: int = 200  # segments per v2 message (AR above; checked before parsing); 0 = off
    max_v2_repetitions: int = 50  # repetitions per v2 field (AR above; checked before parsing); 0 = off
    # searches (URL, form body, If-None-Exist, Bundle entry urls): more is 400 too-costly, checked
    # before any database work (0: no cap)
    max_search_or_values: int = 100  # comma-separated values in one parameter (`_id=a,b,…`)
    max_search_values: int = 500  # values over all parameters of one search
    max_query_parameters: int = 50  # parameters in one query string (search or not)
    rate_limit_per_second: float = 200  # per client id (source address when unauthenticated); 0 = off
    rate_limit_burst: int = 400  # bucket size (0: twice the rate)
    # failed authentications per source address (bucket: twice the rate); 0 = off, and off with
    # rate_limit_per_second = 0. Small: a well-behaved client fails once per expired token at most
    rate_limit_auth_failures_per_second: float = 5
    # origins whose browser apps may call the API (CORS), comma-separated, e.g.
    # `https://app.example.nl,https://test.example.nl`; "" = off (api/transport.py)
    cors_origins: str = ""
    insecure_dev: bool = False  # requests without a token act as admin: developer machines only
    # Subscription endpoints may be http(s) to the loopback interface (tests, a developer machine);
    # otherwise https to a public host only (workflow/subscriptions.py::endpoint_problem)
    subscription_loopback_http: bool = False
    token_key: str = ""  # gateway signing key: private JWK, JWK Set or PEM (from a secret store)
    token_key_file: str = ""  # ... or a file holding it; none: a dev key under ./var/ (SQLite only)
    access_token_lifetime: int = 300  # seconds, at most 300
    console_password: str = ""  # operator console sign-in (≥ 12 characters); else an admin access token
    worker_in_app: bool = False  # run the outbox/timer worker inside the server process (`serve` turns it on)
    outbox_max_attempts: int = 10  # then dead letter
    outbox_backoff_seconds: int = 2  # first retry delay; doubles, with jitter
    outbox_backoff_max_seconds: int = 3600
    outbox_batch: int = 50  # rows a worker claims at once
    outbox_lease_seconds: int = 60  # a claim not finished by then is taken over
    outbox_timeout_seconds: int = 10  # per delivery

    def __post_init__(self) -> None:
        """Derive what depends on `home`: the default database, a relative key file."""
        if not self.database_url:
            object.__setattr__(self, "database_url", default_database_url(self.home))
        key_file = str(self.token_key_file or "")
        if key_file and not Path(key_file).is_absolute():
            object.__setattr__(self, "token_key_file", str((Path(self.home) / key_file).resolve()))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read `GATEWAY_<FIELD>` variables; explicit overrides (CLI options) win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"GATEWAY_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _coerce(f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _coerce(type_name: object, raw: str) -> object:
    name = str(type_name)
    if name == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if name == "int":
        return int(raw)
    if name == "float":
        return float(raw)
    if name == "Path":
        return Path(raw)
    return raw
