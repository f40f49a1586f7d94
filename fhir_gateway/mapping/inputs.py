"""Build the named inputs the mappings expect, from region settings; and `map_file` for the CLI.

The workflow calls `referral_inputs` / `feedback_for` + `feedback_inputs` so every caller computes
deadlines and picks feedback texts the same way, from the region's data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping as MappingABC
from datetime import datetime
from pathlib import Path
from typing import Any

from fhir_gateway.mapping.dates import add_months, fhir_datetime, parse_datetime, working_days_after
from fhir_gateway.mapping.engine import MappingError
from fhir_gateway.mapping.loader import load_mappings
from fhir_gateway.vocabulary import FEEDBACK_KINDS, MILESTONES


def _route_dict(route: Any) -> dict[str, Any]:
    if hasattr(route, "as_dict"):
        return route.as_dict()
    if isinstance(route, MappingABC):
        return dict(route)
    raise TypeError("route must be a Route or a dict")


def referral_inputs(
    route: Any,
    settings: dict[str, Any],
    now: datetime | str,
    *,
    consent: dict[str, Any] | None = None,
    task: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Inputs of servicerequest-to-task / -to-careplan: route, region, now, deadlines, consent, task."""
    moment = parse_datetime(now)
    today = moment.date()
    intake = settings["intake"]
    return {
        "route": _route_dict(route),
        "region": settings,
        "now": fhir_datetime(moment),
        "today": today.isoformat(),
        "intakeDeadline": working_days_after(
            today, intake["working_days"], intake.get("public_holidays", True)
        ).isoformat(),
        "plannedEnd": add_months(today, settings["trajectory"]["months"]).isoformat(),
        "consent": consent,
        "task": task,
    }


def feedback_for(
    settings: dict[str, Any],
    *,
    status: str | None = None,
    milestone: str | None = None,
    kind: str | None = None,
    text: str | None = None,
) -> dict[str, Any] | None:
    """Which feedback a Task change sends to the practice, per the region's `feedback` tables.

    The milestone decides when its entry names a kind (it is the more specific event); otherwise
    the new Task.status does. `kind`/`text` override (e.g. a coach's free-text question).
    None means: this change sends no feedback in this region.
    """
    fb = settings.get("feedback") or {}
    entry = (fb.get("on_milestone") or {}).get(milestone) if milestone else None
    entry = entry if isinstance(entry, dict) else ({"kind": entry} if entry else {})
    chosen = kind or entry.get("kind") or ((fb.get("on_status") or {}).get(status) if status else None)
    if not chosen:
        return None
    kinds = fb.get("kinds") or {}
    if chosen not in kinds:
        raise MappingError(f"region {settings.get('name')!r} has no feedback kind {chosen!r}")
    kind_entry = kinds[chosen] or {}
    sentence = text or (entry.get("text") if entry.get("kind") == chosen else None) or kind_entry.get("text")
    result: dict[str, Any] = {
        "kind": {"system": FEEDBACK_KINDS, "code": chosen, "display": kind_entry.get("display")},
        "text": sentence,
    }
    if milestone:
        result["milestone"] = {"system": MILESTONES, "code": milestone, "display": entry.get("display")}
    return result


def feedback_inputs(
    settings: dict[str, Any],
    now: datetime | str,
    feedback: dict[str, Any],
    *,
    practice: str | None = None,
    positive_health: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Inputs of milestone-to-communication; `practice` is 'Organization/<id>' of the requester's practice."""
    return {
        "region": settings,
        "now": fhir_datetime(parse_datetime(now)),
        "feedback": feedback,
        "practice": practice,
        "positiveHealth": positive_health,
    }


def map_file(path: Path, mapping_name: str, inputs: dict[str, Any], mappings_dir: Path) -> dict[str, Any]:
    """`fhir-gateway map FILE`: map a resource (or the first fitting resource of a Bundle) from a file.

    Missing inputs are filled the way the workflow would: `now` (current time), `region` settings
    from `route.region`, the deadlines, and `feedback` from `milestone`/`status` inputs.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    mappings = load_mappings(Path(mappings_dir))
    route = inputs.get("route") or {}
    region = route.get("region") if isinstance(route, MappingABC) else getattr(route, "region", None)
    mapping = mappings.get(mapping_name, region)
    source = data
    if data.get("resourceType") == "Bundle" and mapping.source_type != "Bundle":
        found = [
            e["resource"]
            for e in data.get("entry", ())
            if (e.get("resource") or {}).get("resourceType") == mapping.source_type
        ]
        if not found:
            raise MappingError(f"{path}: the Bundle holds no {mapping.source_type}")
        source = found[0]
    settings = mappings.region_settings(region)
    now = inputs.get("now") or datetime.now().astimezone()
    full: dict[str, Any] = {}
    if route:
        full.update(referral_inputs(route, settings, now))
    else:
        full.update({"region": settings, "now": fhir_datetime(parse_datetime(now))})
    if "feedback" not in inputs and (inputs.get("milestone") or inputs.get("status")):
        full["feedback"] = feedback_for(
            settings, status=inputs.get("status"), milestone=inputs.get("milestone")
        )
    full.update({k: v for k, v in inputs.items() if k not in ("now", "route")})
    return mapping.apply(source, full)
