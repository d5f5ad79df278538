"""Carrier lanes: the parcels of one carrier to one area, watched for disruptions.

Every carrier event applied to a shipment counts in its lane's hourly bucket, in the same
transaction that saves the shipment, so a retried webhook never counts twice: all events,
and those that are trouble (an exception, a failed attempt, a return to sender, an estimate
moving past what the customer was told). The trouble count is a series judged by the same
detector as social complaints (`chalicelib.emerging.TopicWatch`, cluster `delivery`): a
count improbably high against the lane's own seasonal baseline, while at least a tenth of
the lane's events are trouble, opens an emerging issue. The issue opens an incident and
drafts one broadcast to every customer with an outbound parcel still on its way on that
lane; ops review and approve it like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib import aws, broadcasts, incidents, observability
from chalicelib.domain import Broadcast, Incident, utcnow
from chalicelib.emerging import BucketCounts, Issue, Policy, bucket_start
from chalicelib.errors import Conflict
from chalicelib.shipments import Shipment, carrier_name, is_disruption, lane_of
from chalicelib.signals_store import bucket_add, lane_seen

if TYPE_CHECKING:
    from chalicelib.broadcasts import Services
    from chalicelib.listening import ListenReport
    from chalicelib.signals_store import SignalTables

log = logging.getLogger(__name__)

CLUSTER = "delivery"
TEMPLATE = "lane_disruption"
SERVICE = "deliveries"
ACTOR = "lanes"

# Parcels move in hours, not minutes: an hourly bucket holds enough events to judge, and a
# disruption that shows within two hours is still news before most parcels were due.
# The share gate keeps a busy day from counting as a disruption: twice the volume brings
# twice the exceptions, but not a larger share of them.
POLICY = Policy(
    bucket_seconds=3600,
    max_tail=1e-4,
    min_posts=5,
    min_negative_share=0.1,
    close_after_seconds=6 * 3600,
    samples=0,
)


def tally(signals_table: str, before: Shipment, after: Shipment, now: datetime) -> list[Any]:
    """TransactWriteItems entries counting one applied event in its lane (none without a
    carrier)."""
    lane = lane_of(after)
    if lane is None:
        return []
    trouble = int(is_disruption(before, after))
    counts = BucketCounts(posts=1, negative=trouble, complaint=trouble, clusters={CLUSTER: trouble})
    bucket = bucket_start(now, POLICY.bucket_seconds)
    return [
        {"Update": bucket_add(signals_table, lane, bucket, counts)},
        {"Update": lane_seen(signals_table, lane, now)},
    ]


class Ops(Protocol):
    def send(self, subject: str, body: str) -> None: ...


@dataclass(frozen=True)
class LaneNotifier:
    """What a lane issue sets off: an incident, a drafted broadcast, and a word to ops."""

    services: Services
    signals: SignalTables
    ops: Ops

    def issue_opened(self, issue: Issue) -> None:
        incident, broadcast = open_incident(self.services, self.signals, issue)
        self.ops.send(*describe(issue, incident, broadcast, self.services.settings.public_url))


def judge_lanes(
    services: Services,
    signals: SignalTables,
    ops: Ops,
    now: datetime,
    *,
    grace_seconds: int = 0,
) -> ListenReport:
    """Fold every closed hour of every lane with recent events into its detector."""
    from chalicelib.listening import Listener, ListenReport
    from chalicelib.posts import Topic

    listener = Listener(
        signals,
        POLICY,
        notifier=LaneNotifier(services, signals, ops),
        grace_seconds=grace_seconds,
    )
    report = ListenReport()
    for lane, first_seen in sorted(signals.lanes().items()):
        report.topics += 1
        try:
            listener.judge(Topic(lane, ""), now, report, first=first_seen)
        except Conflict:
            log.info("lane %s is being judged by another scan", lane)
    return report


@dataclass(frozen=True)
class Lane:
    carrier: str
    area: str

    @classmethod
    def parse(cls, lane: str) -> Lane:
        _, carrier, area = lane.split(":", 2)
        return cls(carrier, area)

    @property
    def region(self) -> str | None:
        return None if self.area == "all" or self.area.startswith("zip-") else self.area

    def describe(self) -> str:
        carrier = carrier_name(self.carrier)
        if self.area == "all":
            where = "all areas"
        elif self.area.startswith("zip-"):
            where = f"postal codes {self.area.removeprefix('zip-').upper()}…"
        else:
            where = f"the {self.area} region"
        return f"{carrier} deliveries to {where}"


def open_incident(
    services: Services, signals: SignalTables, issue: Issue
) -> tuple[Incident, Broadcast]:
    """The issue's incident and its drafted broadcast, each created once: the incident id
    comes from the issue id, so a repeated call finds what an earlier one made."""
    lane = Lane.parse(issue.topic)
    wanted = "inc_" + issue.issue_id.removeprefix("iss_")
    incident_id = wanted if signals.link_issue(issue.issue_id, wanted) else None
    incident_id = incident_id or signals.get_issue(issue.issue_id).incident_id or wanted
    store = services.store
    incident = store.get_incident(incident_id)
    if incident is None:
        payload = {
            "title": f"{lane.describe()} are running late",
            "services": [SERVICE],
            "regions": [lane.region] if lane.region else [],
        }
        try:
            incident = incidents.create_incident(
                store, payload, incident_id=incident_id, first_signal_at=issue.opened_at
            )
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            incident = incidents.get_incident(store, incident_id)
        else:
            # Only the call that created it: see chalicelib/handoff.py.
            observability.elapsed("SignalToIncidentSeconds", issue.opened_at, utcnow())
    existing = store.broadcasts_for_incident(incident_id)
    if existing:
        return incident, existing[0]
    broadcast = broadcasts.create_broadcast(
        services,
        {"incident_id": incident_id, "template": TEMPLATE, "audience": {"lanes": [issue.topic]}},
        actor=ACTOR,
    )
    log.info("lane %s: incident %s, draft %s", issue.topic, incident_id, broadcast.broadcast_id)
    return incident, broadcast


def describe(
    issue: Issue, incident: Incident, broadcast: Broadcast, public_url: str
) -> tuple[str, str]:
    """Subject and plain-text body of the ops alert (no customer data)."""
    lane = Lane.parse(issue.topic)
    subject = f"Carrier disruption: {lane.describe()}"[:100]
    events = issue.counts[0]["posts"] if issue.counts else 0
    body = "\n".join(
        [
            f"{issue.posts} parcels ran into trouble in one hour against a baseline of "
            f"{issue.baseline:.1f}; {issue.negative_share:.0%} of the {events} carrier events "
            "on this lane.",
            f"Opened {issue.opened_at}; incident {incident.incident_id}.",
            "",
            "A broadcast to every customer with a parcel on its way on this lane is drafted;"
            " review and approve it:",
            f"{public_url}/api/broadcasts/{broadcast.broadcast_id}",
        ]
    )
    return subject, body
