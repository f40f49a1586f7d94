"""Tiny server-side HTML: every value is escaped unless it is already `Safe` markup.

Why not Jinja2: it is not a dependency of the gateway, and a handful of pages do not need a
template language — but they do need escaping that cannot be forgotten. `render` escapes
every argument that is not `Safe`; `Safe` values come only from `render`, `join` and `esc`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from urllib.parse import urlencode


class Safe(str):
    """Markup that is already escaped (or built only from escaped parts)."""

    __slots__ = ()


def esc(value: object) -> Safe:
    if isinstance(value, Safe):
        return value
    return Safe(html.escape("" if value is None else str(value), quote=True))


def render(template: str, **values: object) -> Safe:
    """`str.format` with every value escaped; templates themselves are trusted constants."""
    return Safe(template.format(**{k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[object], sep: str = "") -> Safe:
    return Safe(sep.join(esc(p) for p in parts))


def href(path: str, **params: object) -> str:
    """A link with a query string (escape it with `render` when it goes into an attribute)."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


def options(values: Iterable[tuple[str, str]], selected: str) -> Safe:
    """`<option>`s for a `<select>`; the first value should be the "any" choice."""
    return join(
        render(
            '<option value="{value}"{sel}>{label}</option>',
            value=v,
            label=label,
            sel=Safe(" selected") if v == selected else Safe(""),
        )
        for v, label in values
    )


LAYOUT = """<!doctype html>
<html lang="nl">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · fhir-gateway console</title>
<link rel="stylesheet" href="{base}/static/console.css">
</head>
<body>
<header class="top">
  <span class="brand">fhir-gateway · Welzijn op Recept</span>
  <nav>{nav}</nav>
  {who}
</header>
<main>
<h1>{title}</h1>
{flash}
{body}
</main>
</body>
</html>
"""

NAV = (("referrals", "Verwijzingen"), ("stuck", "Vastgelopen"), ("reports", "Rapportage"))


def layout(
    base: str,
    title: str,
    body: Safe,
    *,
    active: str = "",
    who: str | None = None,
    csrf: str = "",
    flash: str = "",
) -> Safe:
    nav = (
        join(
            render(
                '<a href="{href}"{cls}>{label}</a>',
                href=f"{base}/{key}",
                label=label,
                cls=Safe(' class="active" aria-current="page"') if key == active else Safe(""),
            )
            for key, label in NAV
        )
        if who
        else Safe("")
    )
    who_html = (
        render(
            '<form class="who" method="post" action="{base}/logout"><span>{who}</span>'
            '<input type="hidden" name="csrf" value="{csrf}"><button type="submit">Uitloggen</button></form>',
            base=base,
            who=who,
            csrf=csrf,
        )
        if who
        else Safe("")
    )
    flash_html = render('<p class="flash" role="status">{text}</p>', text=flash) if flash else Safe("")
    return render(LAYOUT, title=title, base=base, nav=nav, who=who_html, body=body, flash=flash_html)
