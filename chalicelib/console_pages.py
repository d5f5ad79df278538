"""What each console page shows and what its forms do; `console` serves them.

Post texts, author handles and sample texts are untrusted: they reach the templates as
plain strings, which the templates' autoescaping turns into text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from chalicelib import charts, handoff, replies
from chalicelib.audit import AuditLog
from chalicelib.broadcasts import Services
from chalicelib.console import Page, PageRequest, Redirect, local_path
from chalicelib.domain import Channel
from chalicelib.errors import BadRequest
from chalicelib.signals_store import SignalTables

DONE = {"dismiss": "dismissed", "handle": "handled", "link": "linked"}
FLAG_FILTERS = ("state", "topic", "issue", "sentiment", "min_followers", "cursor")
# What a redirect after an action may say; the query names one, never free text.
NOTICES = {
    "replied": "Replied on X.",
    "dismissed": "Dismissed.",
    "handled": "Marked as handled.",
    "linked": "Linked to the incident.",
}


def dashboard(services: Services, signals: SignalTables) -> Page:
    issues = [
        {
            "issue": issue,
            "chart": charts.issue_chart(
                issue.counts, title=f"{issue.topic}: {issue.cluster}", chart_id=issue.issue_id
            ),
        }
        for issue in signals.issues("open", limit=20)
    ]
    incidents = [
        {"incident": incident, "deliveries": _delivery_totals(services, incident.incident_id)}
        for incident in services.store.open_incidents(limit=50)
    ]
    return Page(
        "dashboard.html.j2", {"title": "Dashboard", "issues": issues, "incidents": incidents}
    )


def _delivery_totals(services: Services, incident_id: str) -> dict[str, int]:
    totals = {"broadcasts": 0, "planned": 0, "sent": 0, "failed": 0}
    for broadcast in services.store.broadcasts_for_incident(incident_id):
        totals["broadcasts"] += 1
        for channel in Channel:
            counts = broadcast.counts.get(channel)
            if counts is not None:
                totals["planned"] += counts.planned
                totals["sent"] += counts.sent
                totals["failed"] += counts.failed
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


def audit_log(audit: AuditLog) -> Page:
    return Page("audit.html.j2", {"title": "Audit log", "entries": audit.recent(limit=200)})


def _with_query(path: str, query: Mapping[str, str]) -> str:
    return f"{path}?{urlencode(query)}" if query else path
