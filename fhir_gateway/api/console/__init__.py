"""Operator console (`/console`): server-rendered pages for the people who run the gateway.

Wire it with `app.include_router(build_console_api(ctx, settings))` and keep `/console` off the
bearer check (`CONSOLE_PATHS`): the console authenticates its own users with a session cookie.
"""

from fhir_gateway.api.console.routes import build_console_api
from fhir_gateway.api.console.session import SESSION_COOKIE
from fhir_gateway.api.console.web import PREFIX

CONSOLE_PATHS = frozenset({PREFIX})  # exact path
CONSOLE_PREFIXES = (PREFIX + "/",)  # and everything under it

__all__ = ["CONSOLE_PATHS", "CONSOLE_PREFIXES", "PREFIX", "SESSION_COOKIE", "build_console_api"]
