"""What each console page shows and what its forms do; `console` serves them.

Post texts, author handles and sample texts are untrusted: they reach the templates as
plain strings, which the templates' autoescaping turns into text.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from chalicelib import charts, handoff, incidents, lookup, replies
from chalicelib.audit import AuditLog
from chalicelib.broadcasts import Services
from chalicelib.console import Page, PageRequest, Redirect, local_path
from chalicelib.domain import (
    COUNT_FIELDS,
    DELIVERABLE_CHANNELS,
    Incident,
    IncidentStatus,
    Phase,
    utcnow,
)
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.posts import parse_time
from chalicelib.signals_store import SignalTables

DONE = {"dismiss": "dismissed", "handle": "handled", "link": "linked"}
FLAG_FILTERS = ("state", "topic", "issue", "sentiment", "min_followers", "cursor")
# What a redirect after an action may say; the query names one, never free text.
NOTICES = {
    "replied": "Replied on X.",
    "dismissed": "Dismissed.",
    "handled": "Marked as handled.",
    "linked": "Linked to the incident.",
    "updated": "Incident updated.",
}


def dashboard(services: Services, signals: SignalTables) -> Page:
    open_issues = signals.issues("open", limit=20)
    issues = [
        {
            "issue": issue,
            "chart": charts.issue_chart(
                issue.counts, title=f"{issue.topic}: {issue.cluster}", chart_id=issue.issue_id
            ),
        }
        for issue in open_issues
    ]
    # An incident that complaints on X opened or joined shows their volume and negative share.
    linked = {issue.incident_id: issue for issue in open_issues if issue.incident_id}
    rows = [
        {
            "incident": incident,
            "deliveries": _delivery_figures(services, incident),
            "chart": (
                charts.issue_chart(
                    linked[incident.incident_id].counts,
                    title=f"Complaints on X: {incident.title}",
                    width=360,
                    height=140,
                    chart_id=f"inc-{incident.incident_id}",
                )
                if incident.incident_id in linked
                else ""
            ),
        }
        for incident in services.store.open_incidents(limit=50)
    ]
    return Page("dashboard.html.j2", {"title": "Dashboard", "issues": issues, "incidents": rows})


def _delivery_figures(services: Services, incident: Incident) -> dict[str, Any]:
    """Notices planned, sent and failed, and the lead time: from the incident opening to
    every customer of its initial notice having been told."""
    totals: dict[str, Any] = {"broadcasts": 0, "planned": 0, "sent": 0, "failed": 0}
    lead = None
    for broadcast in services.store.broadcasts_for_incident(incident.incident_id):
        total = broadcast.total()
        totals["broadcasts"] += 1
        totals["planned"] += total.planned
        totals["sent"] += total.sent
        totals["failed"] += total.failed
        if broadcast.phase is Phase.INITIAL and broadcast.sent_at:
            lead = parse_time(broadcast.sent_at) - parse_time(incident.created_at)
    totals["lead"] = f"{int(lead.total_seconds() // 60)} min" if lead is not None else "—"
    return totals


def flags(services: Services, signals: SignalTables, request: PageRequest) -> Page:
    chosen = {name: request.query.get(name, "") for name in FLAG_FILTERS}
    listing = handoff.list_flags(signals, {k: v or None for k, v in chosen.items()})
    incidents = services.store.open_incidents(limit=50)
    here = _with_query(request.path, {k: v for k, v in chosen.items() if v})
    return Page(
        "flags.html.j2",
        {
            "title": "Flagged posts",
            "filters": chosen,
            "flags": listing["flags"],
            "next_cursor": listing["next_cursor"],
            "incidents": incidents,
            "reply_templates": [*replies.REPLY_TEMPLATES, replies.CUSTOM],
            "here": here,
            "notice": NOTICES.get(request.query.get("done", ""), ""),
        },
    )


def decide_flag(
    services: Services, signals: SignalTables, request: PageRequest, post_id: str, action: str
) -> Redirect:
    payload: Mapping[str, Any] = {}
    if action == "link":
        incident_id = request.form.get("incident_id", "")
        if not incident_id:
            raise BadRequest("choose the incident to link the post to")
        payload = {"incident_id": incident_id}
    handoff.decide_flag(
        services.store, signals, post_id, action, payload, actor=request.principal.subject
    )
    back = local_path(request.form.get("back"), "/console/flags")
    path, _, query = back.partition("?")
    params = dict(parse_qsl(query))
    params["done"] = DONE[action]
    return Redirect(path, params)


def reply_preview(
    services: Services, signals: SignalTables, request: PageRequest, post_id: str
) -> Page:
    """The reply as it would go out, with the button that posts it."""
    fields = {k: request.query.get(k, "") for k in ("template", "text", "status_link")}
    context: dict[str, Any] = {
        "title": "Reply on X",
        "flag": signals.get_flag(post_id),
        "fields": fields,
        "templates": [*replies.REPLY_TEMPLATES, replies.CUSTOM],
        "limit": replies.MAX_REPLY_CHARS,
        "text": "",
        "message": "",
    }
    try:
        context["text"] = replies.preview_reply(services.store, signals, post_id, fields)
    except BadRequest as exc:
        context["message"] = exc.message
    return Page("reply.html.j2", context)


def reply(
    services: Services,
    signals: SignalTables,
    poster: replies.ReplyPoster,
    request: PageRequest,
    post_id: str,
) -> Redirect:
    replies.reply_to_flag(
        services.store, signals, poster, post_id, request.form, actor=request.principal.subject
    )
    return Redirect("/console/flags", {"done": "replied"})


def incident_page(
    services: Services,
    signals: SignalTables,
    incident_id: str,
    request_done: str = "",
    now: datetime | None = None,
) -> Page:
    """What happened so far, who was told, and when the next update is owed."""
    store = services.store
    incident = incidents.get_incident(store, incident_id)
    found = sorted(store.broadcasts_for_incident(incident_id), key=lambda b: b.created_at)
    initial = next((b for b in found if b.phase is Phase.INITIAL), None)
    issues = [
        issue
        for status in ("open", "closed")
        for issue in signals.issues(status, limit=200)
        if issue.incident_id == incident_id
    ]
    events: list[tuple[str, str]] = [(incident.created_at, "Incident opened")]
    events += [(i.opened_at, f"Emerging issue on X: {i.topic}: {i.cluster}") for i in issues]
    for b in found:
        said = b.source_update
        if said:
            events.append(
                (said["display_at"], f"{said['source']} said ({said['status']}): {said['body']}")
            )
        events.append((b.created_at, f"{b.phase.value} notice drafted by {b.created_by}"))
        if b.approved_at:
            events.append((b.approved_at, f"{b.phase.value} notice approved by {b.approved_by}"))
        if b.sent_at:
            events.append((b.sent_at, f"{b.phase.value} notice delivered to everyone"))
        if b.halted_at:
            events.append((b.halted_at, f"{b.phase.value} notice stopped by {b.halted_by}"))
    if incident.status.value == "resolved":
        events.append((incident.updated_at, "Incident resolved"))
    totals = {
        channel.value: {
            field: sum(getattr(b.counts[channel], field) for b in found if channel in b.counts)
            for field in COUNT_FIELDS
        }
        for channel in DELIVERABLE_CHANNELS
    }
    return Page(
        "incident.html.j2",
        {
            "title": incident.title,
            "incident": incident,
            "broadcasts": found,
            "issues": issues,
            "timeline": sorted(events),
            "audience_size": (
                initial.total().planned + initial.unreachable
                if initial and initial.planning_done
                else None
            ),
            "deliveries": totals,
            "due": _due(incident.next_update_due, now or utcnow()),
            "statuses": [s.value for s in IncidentStatus],
            "notice": NOTICES.get(request_done, ""),
        },
    )


def _due(moment: str | None, now: datetime) -> dict[str, Any] | None:
    """When the next update is owed, in words, and whether that is already past."""
    if not moment:
        return None
    seconds = int((parse_time(moment) - now).total_seconds())
    minutes = abs(seconds) // 60
    span = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
    overdue = seconds < 0
    return {
        "at": moment,
        "overdue": overdue,
        "text": f"overdue by {span}" if overdue else f"in {span}",
    }


def update_incident(services: Services, request: PageRequest, incident_id: str) -> Redirect:
    payload: dict[str, Any] = {}
    form = request.form
    current = incidents.get_incident(services.store, incident_id)
    if form.get("status") and form["status"] != current.status.value:
        payload["status"] = form["status"]
    due = form.get("next_update_due", "").strip()
    if due != (current.next_update_due or ""):
        payload["next_update_due"] = due or None
    if payload:
        incidents.update_incident(services.store, incident_id, payload)
    return Redirect(f"/console/incidents/{incident_id}", {"done": "updated"})


def customer_lookup(services: Services, request: PageRequest) -> Page:
    """For an agent with a caller on the line: who they are, what is wrong where they are,
    and what we have already told them."""
    query = request.query.get("q", "").strip()
    context: dict[str, Any] = {"title": "Customer lookup", "q": query, "found": None}
    if query:
        try:
            context["found"] = lookup.lookup(services.store, query)
        except (BadRequest, NotFound, Conflict) as exc:
            context["message"] = exc.message
            context["candidates"] = (exc.details or {}).get("customer_ids", [])
    return Page("customer.html.j2", context)


def audit_log(audit: AuditLog) -> Page:
    return Page("audit.html.j2", {"title": "Audit log", "entries": audit.recent(limit=200)})


def _with_query(path: str, query: Mapping[str, str]) -> str:
    return f"{path}?{urlencode(query)}" if query else path
