"""One incident per cause: a status-source incident and an emerging issue about the same
service and time window share one incident, one audience and one all-clear."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import Stack
from factories import customer
from listening_factories import TOPIC, PostMaker
from test_status_sources import at, update, upstream

from chalicelib import aws, broadcasts, causes, handoff, incidents, status_sources
from chalicelib.domain import IncidentStatus, Phase, iso
from chalicelib.emerging import Policy
from chalicelib.listening import Listener, Notifier, scan
from chalicelib.replay import ReplaySource
from chalicelib.runtime import services, signals
from chalicelib.signals_store import FlagFilter
from chalicelib.status_sources import forewarn_incident_id
from forewarn_cli.local.statuspage_server import SimulatedClock, StatuspageServer

RunQueues = Callable[..., Any]

POLICY = Policy(bucket_seconds=60)
# The social topic's places put the outage in the south; the status page maps its component
# to the same customers.
MOBILE_SOUTH = {"services": ["mobile"], "regions": ["south"]}
TV_SOUTH = {"services": ["tv"], "regions": ["south"]}
THIRTEEN_HOURS = 13 * 60


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(at(-5))


@pytest.fixture
def page(clock: SimulatedClock) -> Iterator[StatuspageServer]:
    with StatuspageServer(clock=clock) as server:
        yield server


def seed(count: int, *, service: str = "mobile", first: int = 0) -> None:
    for index in range(first, first + count):
        services().store.upsert_customer(customer(index, services=((service, "south", "75001"),)))


def add_source(page: StatuspageServer, components: dict[str, Any] | None = None) -> None:
    status_sources.create_source(
        services(),
        {
            "source_id": "carrier",
            "kind": "statuspage",
            "url": page.url,
            "components": components or {"mobile-data": MOBILE_SOUTH},
            "policy": {"mode": "auto", "auto_min_impact": "minor"},
        },
    )


def tick(clock: SimulatedClock, minutes: float) -> list[tuple[str, str]]:
    """Poll at `minutes`; (action key, outcome) of what was done."""
    clock.set(at(minutes))
    report = status_sources.poll_due_sources(services(), at(minutes), sleep=lambda _: None)
    assert report["errors"] == {}
    return [(a["key"], a["outcome"]) for a in report["actions"]]


def open_issue(notifier: Notifier | None = None) -> str:
    """Complaints about mobile service in Dallas from minute 0: an issue opens within minutes."""
    signals().put_topic(TOPIC)
    maker = PostMaker()
    posts = maker.chatter(at(-120), 120) + maker.outage(at(0), 4)
    now = at(6)
    listener = Listener(signals(), POLICY, notifier=notifier)
    scan(
        listener,
        signals(),
        ReplaySource(posts, lambda: now),
        backfill_seconds=3 * 3600,
        now=lambda: now,
    )
    (issue,) = signals().issues("open")
    assert issue.region == "south"
    return issue.issue_id


def promote(issue_id: str, minutes: float = 7) -> dict[str, Any]:
    return handoff.promote(services(), signals(), issue_id, None, actor="ops", now=at(minutes))


def promote_and_send(run_queues: RunQueues) -> str:
    """Ops promote the issue and send its initial; the incident id."""
    promoted = promote(open_issue())
    assert promoted["joined"] is False
    draft = promoted["broadcast"]["broadcast_id"]
    broadcasts.approve(services(), draft, actor="ops-lead", now=at(7))
    broadcasts.send(services(), draft)
    run_queues()
    return str(promoted["incident"]["incident_id"])


def phases(incident_id: str) -> list[Phase]:
    found = services().store.broadcasts_for_incident(incident_id)
    return [b.phase for b in sorted(found, key=lambda b: b.created_at)]


def sms_per_phone(stack: Stack) -> Counter[str]:
    return Counter(m["phone_number"] for m in stack.delivered()["sms"])


def registered() -> dict[str, causes.OpenIncident]:
    return {e.incident_id: e for e in causes.OpenIncidents(services().settings.names).all()}


# -- one incident, whichever signal comes first -----------------------------------------------


def test_status_incident_joins_promoted_social_issue_and_sends_no_second_initial(
    stack: Stack, run_queues: RunQueues, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(3)
    incident_id = promote_and_send(run_queues)
    page.add([upstream("up1", update("u1", "investigating", 8, "mobile-data"))])
    add_source(page)
    assert tick(clock, 9) == [("initial", f"joined:{incident_id}")]
    run_queues()
    assert phases(incident_id) == [Phase.INITIAL]
    assert services().store.get_incident(forewarn_incident_id("carrier", "up1")) is None
    assert sms_per_phone(stack) == {f"+1415555{i:04d}": 1 for i in range(3)}
    entry = registered()[incident_id]
    assert entry.links == {"carrier/up1"}
    assert len(entry.issues) == 1


def test_promoting_an_issue_joins_the_open_status_incident_and_drafts_nothing_new(
    stack: Stack, run_queues: RunQueues, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(3)
    page.add([upstream("up1", update("u1", "investigating", 0, "mobile-data"))])
    add_source(page)
    assert tick(clock, 1) == [("initial", "sent")]
    run_queues()
    incident_id = forewarn_incident_id("carrier", "up1")
    (initial,) = services().store.broadcasts_for_incident(incident_id)
    issue_id = open_issue()
    promoted = promote(issue_id)
    assert promoted["joined"] is True
    assert promoted["incident"]["incident_id"] == incident_id
    assert promoted["broadcast"]["broadcast_id"] == initial.broadcast_id
    assert promoted["broadcast"]["status"] == "sent"
    assert promoted["flags_linked"] > 0
    again = promote(issue_id, minutes=9)
    assert (again["joined"], again["broadcast"]) == (True, promoted["broadcast"])
    assert phases(incident_id) == [Phase.INITIAL]
    assert signals().get_issue(issue_id).incident_id == incident_id
    flags, _ = signals().flags(FlagFilter(issue_id=issue_id))
    assert {f["incident_id"] for f in flags} == {incident_id}
    assert len(stack.delivered()["sms"]) == 3


def test_the_last_status_resolution_sends_one_all_clear_to_the_same_audience(
    stack: Stack, run_queues: RunQueues, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(3)
    incident_id = promote_and_send(run_queues)
    page.add(
        [
            upstream(
                "up1",
                update("u1", "investigating", 8, "mobile-data"),
                update("u2", "resolved", 30),
            )
        ]
    )
    add_source(page)
    tick(clock, 9)
    seed(1, first=10)  # a customer who arrived after the audience froze hears nothing
    # The issue's mark stays in the registry, yet the last status link going clears it.
    assert tick(clock, 31) == [("resolved", "sent")]
    run_queues()
    assert tick(clock, 32) == []
    run_queues()
    assert phases(incident_id) == [Phase.INITIAL, Phase.RESOLVED]
    assert sms_per_phone(stack) == {f"+1415555{i:04d}": 2 for i in range(3)}
    incident = services().store.get_incident(incident_id)
    assert incident is not None
    assert incident.status is IncidentStatus.RESOLVED
    assert registered() == {}


# -- what is not the same cause ---------------------------------------------------------------


def test_a_status_incident_on_another_service_leaves_the_issue_an_incident_of_its_own(
    stack: Stack, run_queues: RunQueues, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(2, service="tv")
    page.add([upstream("tv1", update("t1", "investigating", 0, "tv"), component="tv")])
    add_source(page, {"tv": TV_SOUTH})
    assert tick(clock, 1) == [("initial", "sent")]
    promoted = promote(open_issue())
    assert promoted["joined"] is False
    assert promoted["incident"]["incident_id"] != forewarn_incident_id("carrier", "tv1")
    assert promoted["incident"]["services"] == ["mobile"]
    assert promoted["broadcast"]["status"] == "draft"
    assert set(registered()) == {
        promoted["incident"]["incident_id"],
        forewarn_incident_id("carrier", "tv1"),
    }


def test_an_incident_created_longer_ago_than_the_window_is_not_joined(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock
) -> None:
    promoted = promote(open_issue())
    later = 7 + THIRTEEN_HOURS
    page.add([upstream("up1", update("u1", "investigating", later, "mobile-data"))])
    add_source(page)
    assert tick(clock, later + 1) == [("initial", "sent")]
    old = services().store.get_incident(promoted["incident"]["incident_id"])
    assert old is not None
    assert old.status is not IncidentStatus.RESOLVED
    assert len(registered()) == 2


def test_the_window_reaches_twelve_hours_either_side_of_the_cause() -> None:
    created = iso(at(0))
    assert causes.within_window(created, at(0) + causes.JOIN_WINDOW)
    assert causes.within_window(created, at(0) - causes.JOIN_WINDOW)
    assert not causes.within_window(created, at(0) + causes.JOIN_WINDOW + timedelta(seconds=1))


def test_a_resolved_incident_is_not_joined_and_is_forgotten(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock
) -> None:
    closed = promote(open_issue())["incident"]["incident_id"]
    incidents.update_incident(services().store, closed, {"status": "resolved"}, at(8))
    page.add([upstream("up1", update("u1", "investigating", 9, "mobile-data"))])
    add_source(page)
    assert tick(clock, 10) == [("initial", "sent")]
    assert set(registered()) == {forewarn_incident_id("carrier", "up1")}


# -- when the issue opens ---------------------------------------------------------------------


def test_an_issue_opening_while_its_cause_has_an_open_incident_is_linked_and_ops_are_told(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.config import settings

    page.add([upstream("up1", update("u1", "investigating", 0, "mobile-data"))])
    add_source(page)
    tick(clock, 1)
    incident_id = forewarn_incident_id("carrier", "up1")
    inbox = ops_inbox(monkeypatch)
    notifier = handoff.OpsNotifier(settings(), services=services(), signals=signals())
    issue_id = open_issue(notifier)
    assert signals().get_issue(issue_id).incident_id == incident_id
    # The posts flagged when it opened are linked; those of later buckets wait for ops.
    flags, _ = signals().flags(FlagFilter(issue_id=issue_id))
    assert incident_id in {f["incident_id"] for f in flags}
    (alert,) = inbox()
    assert f"Linked to open incident {incident_id}" in alert["Message"]
    promoted = promote(issue_id)
    assert (promoted["joined"], promoted["incident"]["incident_id"]) == (True, incident_id)
    assert phases(incident_id) == [Phase.INITIAL]
    flags, _ = signals().flags(FlagFilter(issue_id=issue_id))
    assert {f["incident_id"] for f in flags} == {incident_id}


def test_an_issue_opening_with_no_open_incident_is_left_to_ops(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.config import settings

    inbox = ops_inbox(monkeypatch)
    notifier = handoff.OpsNotifier(settings(), services=services(), signals=signals())
    issue_id = open_issue(notifier)
    assert signals().get_issue(issue_id).incident_id is None
    (alert,) = inbox()
    assert "Linked to open incident" not in alert["Message"]


def ops_inbox(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, Any]]]:
    """An ops SNS topic with a queue subscribed; a function reading what reached it."""
    from chalicelib.config import settings

    sqs, sns = aws.client("sqs"), aws.client("sns")
    topic_arn = sns.create_topic(Name="forewarn-test-ops")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="ops-inbox")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    endpoint = attributes["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=endpoint)
    monkeypatch.setenv("OPS_TOPIC_ARN", topic_arn)
    settings.cache_clear()

    def read() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in messages.get("Messages", [])]

    return read
