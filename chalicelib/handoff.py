"""From signal to action: tell ops about a new emerging issue, turn an issue into an incident
with a drafted broadcast in one call, and let the social team work through flagged posts.

An issue whose cause already has an open incident (a status source opened it, or another
issue) joins that incident rather than opening a second one (`chalicelib.causes`): when it
opens, if the scan can tell (the ops alert says so), and at the latest when ops promote it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib import aws, broadcasts, causes, incidents, observability
from chalicelib.broadcasts import Services
from chalicelib.config import Settings
from chalicelib.domain import Broadcast, Incident, IncidentStatus, Phase, utcnow
from chalicelib.emerging import Issue
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.signals_store import FlagFilter, SignalTables
from chalicelib.status_feeds import Scope
from chalicelib.store import Store

log = logging.getLogger(__name__)

FLAG_STATES = ("open", "dismissed", "handled")
FLAG_ACTIONS = ("dismiss", "handle", "link")
SAMPLE_CHARS = 200
# Who linked an issue's flags when the scan did it, not a person.
AUTO_LINK_ACTOR = "forewarn:same-cause"


def describe(issue: Issue, public_url: str, joined: Incident | None = None) -> tuple[str, str]:
    """Subject and plain-text body of the ops alert. Sample texts are untrusted, shown as
    text only; author handles stay out (the console has them)."""
    cluster = issue.cluster.replace("_", " ")
    subject = f"Emerging issue: {cluster} complaints about {issue.topic}"[:100]
    lines = [*_joined_lines(joined, public_url)]
    lines += [
        f"{issue.posts} {cluster} complaints in 5 minutes against a baseline of "
        f"{issue.baseline:.1f}; {issue.negative_share:.0%} of posts negative.",
        f"Opened {issue.opened_at}.",
        "Top terms: " + (", ".join(t for t, _ in issue.terms[:5]) or "-"),
        "Locations: " + (", ".join(f"{p} ({n})" for p, n in issue.locations[:5]) or "unknown"),
    ]
    if issue.region:
        lines.append(f"Region: {issue.region}")
    lines.append("")
    lines += [f'- "{s["text"][:SAMPLE_CHARS]}"' for s in issue.samples[:3]]
    lines += ["", f"Review: {public_url}/api/emerging/{issue.issue_id}"]
    return subject, "\n".join(lines)


def _joined_lines(joined: Incident | None, public_url: str) -> list[str]:
    if joined is None:
        return []
    return [
        f"Linked to open incident {joined.incident_id} ({joined.title}, {joined.status.value}): "
        "same service and time window, so its customers hear of this cause from it; "
        "no second incident is needed.",
        f"Incident: {public_url}/api/incidents/{joined.incident_id}",
        "",
    ]


@dataclass(frozen=True)
class OpsNotifier:
    settings: Settings
    # With both, a new issue whose cause already has an open incident is linked to it before
    # ops are told; without (the backtest), ops are only told.
    services: Services | None = None
    signals: SignalTables | None = None

    def issue_opened(self, issue: Issue) -> None:
        self.send(*describe(issue, self.settings.public_url, self._link(issue)))
        log.info("ops told of issue %s (%s)", issue.issue_id, issue.cluster)

    def send(self, subject: str, body: str) -> None:
        """To the ops topic and the ops address, whichever the stage has."""
        if self.settings.ops_topic_arn:
            aws.client("sns").publish(
                TopicArn=self.settings.ops_topic_arn, Subject=subject, Message=body
            )
        if self.settings.ops_email:
            aws.client("ses").send_email(
                Source=self.settings.sender_email,
                Destination={"ToAddresses": [self.settings.ops_email]},
                Message={
                    "Subject": {"Data": subject, "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": body, "Charset": "UTF-8"}},
                },
            )

    def _link(self, issue: Issue) -> Incident | None:
        if self.services is None or self.signals is None:
            return None
        try:
            return link_to_open_incident(self.services, self.signals, issue)
        except Exception:
            # The alert matters more than the link: ops still hear of the issue, and
            # promoting it looks for the open incident again.
            log.exception("issue %s: looking for its open incident failed", issue.issue_id)
            return None


def own_incident_id(issue_id: str) -> str:
    """The incident an issue opens when no open incident has its cause; derived, so a
    repeated promote aims at the same one."""
    digest = hashlib.sha256(f"{causes.SOCIAL}\n{issue_id}".encode()).hexdigest()
    return f"inc_{digest[:16]}"


def link_to_open_incident(
    services: Services, signals: SignalTables, issue: Issue
) -> Incident | None:
    """At an issue's opening: link it (and its flags) to the open incident of its cause, if
    there is one; the incident it is linked to."""
    scope = _issue_scope(signals, issue, {})
    if scope is None:
        return None  # a topic without services cannot share a cause with an incident
    stored = signals.get_issue(issue.issue_id)
    incident_id = stored.incident_id
    if incident_id is None:
        joined = _join_open_incident(services, signals, stored, scope)
        if joined is None:
            return None
        incident_id = _link(signals, issue.issue_id, joined.incident_id)
    if incident_id == own_incident_id(issue.issue_id):
        return None  # ops promoted it meanwhile, to an incident of its own
    incident = services.store.get_incident(incident_id)
    if incident is not None:
        link_issue_flags(signals, issue.issue_id, incident_id, actor=AUTO_LINK_ACTOR)
    return incident


def promote(
    services: Services,
    signals: SignalTables,
    issue_id: str,
    payload: object,
    *,
    actor: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Link the issue to the open incident of its cause, or open one and draft its initial
    broadcast; once.

    The incident id is claimed on the issue before anything is created, so two people
    promoting at once get one incident, and a call that failed half-way finishes the job
    when repeated. An incident that has an initial broadcast gets no second one: its
    audience hears of this cause from the one it has.
    """
    body = payload if isinstance(payload, Mapping) else {}
    if payload is not None and not isinstance(payload, Mapping):
        raise BadRequest("request body must be a JSON object")
    now = now or utcnow()
    issue = signals.get_issue(issue_id)
    scope = _issue_scope(signals, issue, body)
    if scope is None:
        raise BadRequest(f"topic {issue.topic} names no services; give 'services' in the body")
    incident_id = issue.incident_id
    if incident_id is None:
        joined = _join_open_incident(services, signals, issue, scope)
        incident_id = _link(signals, issue_id, joined.incident_id if joined else None)
    incident = services.store.get_incident(incident_id) or _open_incident(
        services.store, issue, scope, body, incident_id, now
    )
    if incident.status is not IncidentStatus.RESOLVED:
        # So that a status-source incident (or another issue) of the same cause joins it.
        causes.OpenIncidents(services.settings.names).mark_issue(
            incident, issue_id, must_exist=False
        )
    initial = _initial(services.store, incident_id) or _draft_initial(
        services, incident_id, body, actor=actor, now=now
    )
    linked = link_issue_flags(signals, issue_id, incident_id, actor=actor)
    return {
        "issue_id": issue_id,
        "incident": incident.to_dict(),
        "broadcast": initial.to_dict(),
        "flags_linked": linked,
        "joined": incident_id != own_incident_id(issue_id),
    }


def _issue_scope(signals: SignalTables, issue: Issue, body: Mapping[str, Any]) -> Scope | None:
    """Whose customers the issue concerns: the body's choice, else the topic's services and
    the issue's region (none: everywhere). None when nothing names a service."""
    named = body.get("services")
    if not named:
        topic = next((t for t in signals.topics() if t.id == issue.topic), None)
        named = list(topic.services) if topic else []
    regions = body.get("regions") or ([issue.region] if issue.region else [])
    services_ = _names(named, "services")
    return Scope(services_, _names(regions, "regions")) if services_ else None


def _names(value: object, field: str) -> tuple[str, ...]:
    # Checked here as well as by incidents: the scope is compared before any incident exists.
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{field} must be a list of strings")
    return tuple(dict.fromkeys(v.strip().lower() for v in value))


def _join_open_incident(
    services: Services, signals: SignalTables, issue: Issue, scope: Scope
) -> Incident | None:
    """The open incident of the issue's cause, marked as holding the issue; None when there
    is none (or it closed while being joined)."""
    registry = causes.OpenIncidents(services.settings.names)
    began = causes.parse_moment(issue.opened_at)
    found = causes.find_open_incident(registry, services.store, scope, began)
    if found is None or not registry.mark_issue(found, issue.issue_id, must_exist=True):
        return None
    return found


def _link(signals: SignalTables, issue_id: str, incident_id: str | None) -> str:
    """Claim `incident_id` (default: the issue's own) on the issue; the incident it is linked
    to, which is another's when someone linked it first."""
    target = incident_id or own_incident_id(issue_id)
    if signals.link_issue(issue_id, target):
        return target
    linked = signals.get_issue(issue_id).incident_id
    if linked is None:  # pragma: no cover - link_issue failed without a link: gone
        raise Conflict(f"emerging issue {issue_id} changed concurrently; retry")
    return linked


def _open_incident(
    store: Store,
    issue: Issue,
    scope: Scope,
    body: Mapping[str, Any],
    incident_id: str,
    now: datetime,
) -> Incident:
    cluster = issue.cluster.replace("_", " ")
    payload = {
        "title": body.get("title") or f"{cluster.capitalize()} reported by customers",
        "services": list(scope.services),
        "regions": list(scope.regions),
    }
    try:
        created = incidents.create_incident(
            store, payload, now, incident_id=incident_id, first_signal_at=issue.opened_at
        )
    except Exception as exc:
        # Two promotes of one issue at once: the other created it.
        if aws.error_code(exc) != "ConditionalCheckFailedException":
            raise
    else:
        # From the issue's first signal to its incident: the part of the lead time
        # (LeadTimeSeconds, chalicelib/broadcasts.py: to the first notice) before the
        # incident exists.
        observability.elapsed("SignalToIncidentSeconds", issue.opened_at, now)
        return created
    found = store.get_incident(incident_id)
    if found is None:  # pragma: no cover - created and gone again
        raise Conflict(f"incident {incident_id} vanished while being opened")
    return found


def _initial(store: Store, incident_id: str) -> Broadcast | None:
    initials = [b for b in store.broadcasts_for_incident(incident_id) if b.phase is Phase.INITIAL]
    return min(initials, key=lambda b: (b.created_at, b.broadcast_id), default=None)


def _draft_initial(
    services: Services, incident_id: str, body: Mapping[str, Any], *, actor: str, now: datetime
) -> Broadcast:
    channels = {"channels": body["channels"]} if "channels" in body else {}
    return broadcasts.create_broadcast(
        services, {"incident_id": incident_id, **channels}, actor=actor, now=now
    )


def link_issue_flags(signals: SignalTables, issue_id: str, incident_id: str, *, actor: str) -> int:
    flags, _ = signals.flags(FlagFilter(issue_id=issue_id, limit=500))
    for flag in flags:
        signals.set_flag_state(
            flag["post"]["id"], str(flag["state"]), actor=actor, incident_id=incident_id
        )
    return len(flags)


def list_flags(signals: SignalTables, params: Mapping[str, str | None]) -> dict[str, Any]:
    state = params.get("state") or "open"
    if state not in FLAG_STATES:
        raise BadRequest(f"state must be one of: {', '.join(FLAG_STATES)}")
    label = params.get("sentiment")
    if label not in (None, "negative", "neutral", "positive"):
        raise BadRequest("sentiment must be negative, neutral or positive")
    query = FlagFilter(
        state=state,
        topic=params.get("topic"),
        issue_id=params.get("issue"),
        label=label,
        min_followers=_int(params.get("min_followers"), "min_followers", 0, 10**9, 0),
        limit=_int(params.get("limit"), "limit", 1, 200, 50),
        cursor=params.get("cursor"),
    )
    flags, cursor = signals.flags(query)
    return {"flags": flags, "next_cursor": cursor}


def decide_flag(
    store: Store,
    signals: SignalTables,
    post_id: str,
    action: str,
    payload: object,
    *,
    actor: str,
) -> dict[str, Any]:
    """dismiss, handle, or link to an incident (which must exist)."""
    if action not in FLAG_ACTIONS:
        raise NotFound(f"no action {action}; use one of: {', '.join(FLAG_ACTIONS)}")
    if action == "dismiss":
        return signals.set_flag_state(post_id, "dismissed", actor=actor)
    if action == "handle":
        return signals.set_flag_state(post_id, "handled", actor=actor)
    body = payload if isinstance(payload, Mapping) else {}
    incident_id = body.get("incident_id")
    if not isinstance(incident_id, str) or not incident_id:
        raise BadRequest("incident_id is required")
    incidents.get_incident(store, incident_id)
    state = str(signals.get_flag(post_id)["state"])
    return signals.set_flag_state(post_id, state, actor=actor, incident_id=incident_id)


def _int(value: str | None, name: str, low: int, high: int, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return number
