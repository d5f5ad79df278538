"""From signal to action: tell ops about a new emerging issue, turn an issue into an incident
with a drafted broadcast in one call, and let the social team work through flagged posts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib import aws, broadcasts, incidents
from chalicelib.broadcasts import Services
from chalicelib.config import Settings
from chalicelib.emerging import Issue
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.signals_store import FlagFilter, SignalTables
from chalicelib.store import Store

log = logging.getLogger(__name__)

FLAG_STATES = ("open", "dismissed", "handled")
FLAG_ACTIONS = ("dismiss", "handle", "link")
SAMPLE_CHARS = 200


def describe(issue: Issue, public_url: str) -> tuple[str, str]:
    """Subject and plain-text body of the ops alert. Sample texts are untrusted, shown as
    text only; author handles stay out (the console has them)."""
    cluster = issue.cluster.replace("_", " ")
    subject = f"Emerging issue: {cluster} complaints about {issue.topic}"[:100]
    lines = [
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


@dataclass(frozen=True)
class OpsNotifier:
    settings: Settings

    def issue_opened(self, issue: Issue) -> None:
        subject, body = describe(issue, self.settings.public_url)
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
        log.info("ops told of issue %s (%s)", issue.issue_id, issue.cluster)


def promote(
    services: Services, signals: SignalTables, issue_id: str, payload: object, *, actor: str
) -> dict[str, Any]:
    """Open an incident for the issue and draft its initial broadcast, once.

    The incident id is claimed on the issue before anything is created, so two people
    promoting at once get one incident, and a call that failed half-way finishes the job
    when repeated.
    """
    body = payload if isinstance(payload, Mapping) else {}
    if payload is not None and not isinstance(payload, Mapping):
        raise BadRequest("request body must be a JSON object")
    issue = signals.get_issue(issue_id)
    topic = next((t for t in signals.topics() if t.id == issue.topic), None)
    services_named = body.get("services") or list(topic.services if topic else ())
    if not services_named:
        raise BadRequest(f"topic {issue.topic} names no services; give 'services' in the body")
    incident_id = issue.incident_id
    if incident_id is None:
        claimed = f"inc_{uuid.uuid4().hex[:16]}"
        if signals.link_issue(issue_id, claimed):
            incident_id = claimed
        else:
            incident_id = signals.get_issue(issue_id).incident_id
    if incident_id is None:  # pragma: no cover - link_issue failed without a link: gone
        raise Conflict(f"emerging issue {issue_id} changed concurrently; retry")
    incident = services.store.get_incident(incident_id)
    if incident is None:
        cluster = issue.cluster.replace("_", " ")
        incident = incidents.create_incident(
            services.store,
            {
                "title": body.get("title") or f"{cluster.capitalize()} reported by customers",
                "services": services_named,
                "regions": body.get("regions") or ([issue.region] if issue.region else []),
            },
            incident_id=incident_id,
        )
    drafts = services.store.broadcasts_for_incident(incident_id)
    draft = drafts[0] if drafts else None
    if draft is None:
        draft = broadcasts.create_broadcast(
            services,
            {
                "incident_id": incident_id,
                **({"channels": body["channels"]} if "channels" in body else {}),
            },
            actor=actor,
        )
    linked = link_issue_flags(signals, issue_id, incident_id, actor=actor)
    return {
        "issue_id": issue_id,
        "incident": incident.to_dict(),
        "broadcast": draft.to_dict(),
        "flags_linked": linked,
    }


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
