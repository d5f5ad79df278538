"""The console's broadcast pages: compose, preview, dry run, approve, send, watch, stop.

Every action goes through `broadcasts`, exactly as the API does; these functions only turn
form fields into its payloads and its results into page contexts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chalicelib import audiences, broadcasts, notices
from chalicelib.broadcasts import Services
from chalicelib.console import Json, Page, PageRequest, Redirect
from chalicelib.domain import (
    DELIVERABLE_CHANNELS,
    AudienceSelector,
    Broadcast,
    BroadcastStatus,
    Channel,
    Phase,
)
from chalicelib.errors import BadRequest
from chalicelib.incidents import get_incident

AUDIENCE_FIELDS = ("services", "regions", "postal_prefixes", "segments")
ACTIONS = {"approve": "approved", "send": "sending", "halt": "halted"}
NOTICES = {
    "created": "Draft saved. Check the preview, then approve.",
    "approved": "Approved.",
    "sending": "Sending started.",
    "halted": "Stopped. Nothing more goes out for this broadcast.",
}
# Seconds between reloads of a broadcast page while it sends.
PROGRESS_REFRESH = 2


def _names(text: str) -> list[str]:
    return [part for part in re.split(r"[\s,]+", text.strip()) if part]


def _selector(fields: Mapping[str, str]) -> dict[str, list[str]]:
    return {name: _names(fields.get(name, "")) for name in AUDIENCE_FIELDS}


def _channels(fields: Mapping[str, str]) -> list[str]:
    return [c.value for c in DELIVERABLE_CHANNELS if fields.get(f"channel_{c.value}")]


def composer(services: Services, request: PageRequest) -> Page:
    store = services.store
    incidents = store.open_incidents(limit=100)
    incident_id = request.query.get("incident_id") or (
        incidents[0].incident_id if incidents else ""
    )
    incident = get_incident(store, incident_id) if incident_id else None
    siblings = store.broadcasts_for_incident(incident_id) if incident_id else []
    has_initial = any(b.phase is Phase.INITIAL for b in siblings)
    audience = {
        "services": ", ".join(incident.services) if incident else "",
        "regions": ", ".join(incident.regions) if incident else "",
        "postal_prefixes": "",
        "segments": "",
    }
    return Page(
        "compose.html.j2",
        {
            "title": "New broadcast",
            "incidents": incidents,
            "incident": incident,
            "phases": [p.value for p in Phase if (p is Phase.INITIAL) != has_initial],
            "templates": notices.available_kinds(),
            "audience": audience,
            "variables": broadcasts.VARIABLES,
        },
    )


def create(services: Services, request: PageRequest) -> Redirect:
    form = request.form
    phase = form.get("phase", "initial")
    payload: dict[str, Any] = {
        "incident_id": form.get("incident_id", ""),
        "phase": phase,
        "channels": _channels(form),
        "variables": {k: form[k] for k in broadcasts.VARIABLES if form.get(k, "").strip()},
        "public_post": bool(form.get("public_post")),
    }
    if form.get("template"):
        payload["template"] = form["template"]
    if form.get("quiet_hours"):
        payload["quiet_hours"] = form["quiet_hours"]
    if phase == Phase.INITIAL.value:
        payload["audience"] = _selector(form)
    created = broadcasts.create_broadcast(services, payload, actor=request.principal.subject)
    return Redirect(f"/console/broadcasts/{created.broadcast_id}", {"done": "created"})


def audience_count(services: Services, request: PageRequest) -> Json:
    """The live recipient count of the composer's audience fields."""
    fields = request.query
    try:
        selector = AudienceSelector.from_dict(_selector(fields))
    except BadRequest as exc:
        return Json({"error": exc.message})
    channels = [Channel(c) for c in _channels(fields)] or list(DELIVERABLE_CHANNELS)
    count = audiences.AudienceCount()
    for page in audiences.iterate_pages(
        services.store,
        selector=selector,
        incident_id="",
        size=services.settings.plan_page_size,
    ):
        count.add(page.customers, channels)
    return Json(count.to_dict(channels))


def review(services: Services, request: PageRequest, broadcast_id: str) -> Page:
    sample = request.query.get("customer_id") or None
    preview = broadcasts.preview(services, broadcast_id, customer_id=sample)
    broadcast = broadcasts.get_broadcast(services.store, broadcast_id)
    incident = get_incident(services.store, broadcast.incident_id)
    threshold = services.settings.second_approval_threshold
    reach = int(preview["recipients"]["total"])
    own_large_draft = (
        broadcast.status is BroadcastStatus.DRAFT
        and broadcast.created_by == request.principal.subject
        and reach > threshold
    )
    return Page(
        "broadcast.html.j2",
        {
            "title": f"Broadcast: {incident.title}",
            "broadcast": broadcast,
            "incident": incident,
            "preview": preview,
            "progress": _progress(broadcast),
            "needs_second_person": own_large_draft,
            "threshold": threshold,
            "refresh": PROGRESS_REFRESH if broadcast.status is BroadcastStatus.SENDING else 0,
            "notice": NOTICES.get(request.query.get("done", ""), ""),
        },
    )


def _progress(broadcast: Broadcast) -> dict[str, Any]:
    rows = [(channel.value, counts) for channel, counts in broadcast.counts.items()]
    total = broadcast.total()
    return {"rows": rows, "planned": total.planned, "settled": total.settled}


def dry_run(services: Services, broadcast_id: str) -> Page:
    report = broadcasts.dry_run(services, broadcast_id)
    return Page("dry_run.html.j2", {"title": "Dry run", "report": report})


def act(services: Services, request: PageRequest, broadcast_id: str, action: str) -> Redirect:
    actor = request.principal.subject
    if action == "approve":
        broadcasts.approve(services, broadcast_id, actor=actor)
    elif action == "send":
        broadcasts.send(services, broadcast_id)
    elif action == "halt":
        broadcasts.halt(services, broadcast_id, actor=actor)
    else:
        raise BadRequest(f"no action {action}; use one of: {', '.join(ACTIONS)}")
    return Redirect(f"/console/broadcasts/{broadcast_id}", {"done": ACTIONS[action]})
