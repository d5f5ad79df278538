"""Incidents: what is broken, where, and when customers hear from us next."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from chalicelib.domain import Incident, IncidentStatus, iso, parse_enum, utcnow
from chalicelib.errors import BadRequest, NotFound
from chalicelib.store import Store

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_FIELDS = {"title", "status", "services", "regions", "next_update_due"}


def _names(payload: Mapping[str, object], key: str, *, required: bool) -> tuple[str, ...]:
    value = payload.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{key} must be a list of strings")
    names = tuple(dict.fromkeys(v.strip().lower() for v in value))
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise BadRequest(f"{key} has invalid names: {', '.join(bad[:5])}")
    if required and not names:
        raise BadRequest(f"{key} must name at least one")
    return names


def parse_moment(value: object, field: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be an ISO 8601 date-time string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{field} must be an ISO 8601 date-time, e.g. 2026-11-23T15:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise BadRequest(f"{field} must include a time zone offset or Z")
    return iso(moment)


def _check_fields(payload: object) -> Mapping[str, object]:
    if not isinstance(payload, Mapping):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(payload) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(unknown)}")
    return payload


def create_incident(
    store: Store,
    payload: object,
    now: datetime | None = None,
    *,
    incident_id: str | None = None,
    first_signal_at: str | None = None,
) -> Incident:
    """`first_signal_at`: when what the incident is about was first seen (an emerging
    issue's or a status source's start), where the lead time starts."""
    data = _check_fields(payload)
    title = data.get("title")
    if not isinstance(title, str) or not 1 <= len(title.strip()) <= 200:
        raise BadRequest("title must be a string of 1 to 200 characters")
    moment = iso(now or utcnow())
    incident = Incident(
        incident_id=incident_id or f"inc_{uuid.uuid4().hex[:16]}",
        title=title.strip(),
        status=parse_enum(IncidentStatus, data.get("status", "investigating"), "status"),
        services=_names(data, "services", required=True),
        regions=_names(data, "regions", required=False),
        created_at=moment,
        updated_at=moment,
        next_update_due=parse_moment(data.get("next_update_due"), "next_update_due"),
        first_signal_at=first_signal_at,
    )
    store.create_incident(incident)
    return incident


def get_incident(store: Store, incident_id: str) -> Incident:
    incident = store.get_incident(incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    return incident


def update_incident(
    store: Store, incident_id: str, payload: object, now: datetime | None = None
) -> Incident:
    """Move the status forward and/or set when the next update is due."""
    data = _check_fields(payload)
    if set(data) - {"status", "next_update_due"}:
        raise BadRequest("only status and next_update_due can change")
    current = get_incident(store, incident_id)
    moment = now or utcnow()
    updated = current
    if "status" in data:
        updated = updated.advance(parse_enum(IncidentStatus, data["status"], "status"), moment)
    if "next_update_due" in data:
        updated = replace(
            updated,
            next_update_due=parse_moment(data["next_update_due"], "next_update_due"),
            updated_at=iso(moment),
        )
    if updated.updated_at == current.updated_at:
        updated = replace(updated, updated_at=iso(moment))
    store.save_incident(updated, expected_updated_at=current.updated_at)
    return updated
