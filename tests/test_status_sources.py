"""Status sources on the local stack: polling a Statuspage-compatible server through incidents,
broadcasts and real deliveries, webhooks, policies, failures and crashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib import aws, broadcasts, incidents, status_sources
from chalicelib.domain import BroadcastStatus, IncidentStatus, Phase
from chalicelib.errors import BadRequest, Conflict, NotFound, Unauthorized
from chalicelib.runtime import services
from chalicelib.status_sources import FetchResult, SourceTables, forewarn_incident_id
from forewarn_cli.local.statuspage_server import SimulatedClock, StatuspageServer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "status"
T0 = datetime(2024, 3, 1, 10, tzinfo=UTC)
MOBILE_NORTH = {"services": ["mobile"], "regions": ["north"]}
SIGNING_KEY = "s3cr3t-signing-key-for-tests-only"

RunQueues = Callable[..., Any]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def stamp(minutes: float) -> str:
    return at(minutes).isoformat().replace("+00:00", "Z")


def update(uid: str, status: str, minutes: float, *components: str) -> dict[str, Any]:
    return {
        "id": uid,
        "status": status,
        "body": f"{status}: details",
        "display_at": stamp(minutes),
        "created_at": stamp(minutes),
        "affected_components": [
            {"code": c, "name": c, "old_status": "operational", "new_status": "major_outage"}
            for c in components
        ]
        or None,
    }


def upstream(
    incident_id: str,
    *updates: dict[str, Any],
    impact: str = "major",
    component: str = "mobile-data",
    name: str = "Mobile data down",
) -> dict[str, Any]:
    return {
        "id": incident_id,
        "name": name,
        "status": updates[-1]["status"],
        "impact": impact,
        "created_at": updates[0]["display_at"],
        "shortlink": f"https://stspg.io/{incident_id}",
        "components": [{"id": component, "name": component, "status": "major_outage"}],
        "incident_updates": list(updates),
    }


def no_sleep(seconds: float) -> None:
    pass


def poll(minutes: float) -> dict[str, Any]:
    return status_sources.poll_due_sources(services(), at(minutes), sleep=no_sleep)


def seed(
    count: int, *, service: tuple[str, str, str] = ("mobile", "north", "10115"), first: int = 0
) -> None:
    for index in range(first, first + count):
        services().store.upsert_customer(customer(index, services=(service,)))


def add_source(source_id: str = "carrier", **config: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "source_id": source_id,
        "kind": "statuspage",
        "components": {"mobile-data": MOBILE_NORTH},
        "policy": {"mode": "auto", "auto_min_impact": "minor"},
        **config,
    }
    return status_sources.create_source(services(), payload)


def source_broadcasts(source_id: str, upstream_id: str) -> list[Any]:
    incident_id = forewarn_incident_id(source_id, upstream_id)
    return sorted(services().store.broadcasts_for_incident(incident_id), key=lambda b: b.created_at)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(at(-5))


@pytest.fixture
def page(clock: SimulatedClock) -> Iterator[StatuspageServer]:
    with StatuspageServer(clock=clock) as server:
        yield server


def tick(clock: SimulatedClock, minutes: float) -> dict[str, Any]:
    clock.set(at(minutes))
    return poll(minutes)


# -- polling end to end ----------------------------------------------------------------------


def test_each_phase_of_an_upstream_incident_reaches_the_same_customers_once(
    stack: Stack, run_queues: RunQueues, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(4)
    services().store.upsert_customer(customer(9, services=(("tv", "north", "10115"),)))
    page.add(
        [
            upstream(
                "up1",
                update("u1", "investigating", 0, "mobile-data"),
                update("u2", "identified", 12),
                update("u3", "monitoring", 31),
                update("u4", "resolved", 45),
                update("u5", "postmortem", 600),
            )
        ]
    )
    add_source(url=page.url)
    assert tick(clock, -4)["actions"] == []  # the first poll: a page with nothing open
    outcomes = []
    for minute in (1, 2, 13, 32, 46, 601, 602):
        report = tick(clock, minute)
        assert report["errors"] == {}
        outcomes += [(a["key"], a["outcome"], minute) for a in report["actions"]]
        run_queues()
    assert outcomes == [
        ("initial", "sent", 1),
        ("update:u2", "sent", 13),
        ("update:u3", "sent", 32),
        ("resolved", "sent", 46),
    ]
    sent = source_broadcasts("carrier", "up1")
    assert [b.phase for b in sent] == [Phase.INITIAL, Phase.UPDATE, Phase.UPDATE, Phase.RESOLVED]
    assert all(b.status is BroadcastStatus.SENT for b in sent)
    assert {b.created_by for b in sent} == {"source:carrier"}
    assert sent[0].variables == {"status_link": "https://stspg.io/up1"}
    # What the page said stays with each notice, for the incident's timeline.
    assert [(b.source_update or {}).get("body") for b in sent] == [
        "investigating: details",
        "identified: details",
        "monitoring: details",
        "resolved: details",
    ]
    assert sent[1].source_update == {
        "source": "carrier",
        "status": "identified",
        "body": "identified: details",
        "display_at": stamp(12),
    }
    incident = services().store.get_incident(forewarn_incident_id("carrier", "up1"))
    assert incident is not None
    assert incident.status is IncidentStatus.RESOLVED
    assert (incident.services, incident.regions) == (("mobile",), ("north",))
    # The lead time starts at the page's first update, a minute before the poll saw it.
    assert incident.first_signal_at == stamp(0)
    assert incident.created_at > incident.first_signal_at
    phones = [m["phone_number"] for m in stack.delivered()["sms"]]
    assert sorted(set(phones)) == [f"+1415555{i:04d}" for i in range(4)]
    assert len(phones) == 4 * 4


def test_an_unchanged_page_is_asked_conditionally_and_its_304_changes_nothing(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock
) -> None:
    page.add([upstream("up1", update("u1", "investigating", 0, "mobile-data"))])
    add_source(url=page.url)
    assert tick(clock, 1)["polled"] == {"carrier": "changed"}
    report = tick(clock, 2)
    assert report["polled"] == {"carrier": "not_modified"}
    assert report["actions"] == []
    last = [r for r in page.requests if r.path == "/api/v2/incidents.json"][-1]
    assert last.status == 304
    assert last.if_none_match
    assert last.if_modified_since
    assert len(source_broadcasts("carrier", "up1")) == 1


def test_a_source_that_is_not_due_is_left_alone_until_its_interval_passes(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock
) -> None:
    add_source(url=page.url, poll_seconds=300)
    assert tick(clock, 0)["polled"] == {"carrier": "changed"}
    assert tick(clock, 1)["polled"] == {}
    # Due at +5 min; a schedule firing a few seconds early still polls it.
    assert tick(clock, 5 - 5 / 60)["polled"] == {"carrier": "not_modified"}


def test_a_failing_source_is_reported_and_never_blocks_a_healthy_one(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock
) -> None:
    page.add([upstream("up1", update("u1", "investigating", 0, "mobile-data"))])
    with StatuspageServer(clock=clock) as broken:
        broken.go_down(503)
        add_source("broken", url=broken.url)
        add_source("healthy", url=page.url)
        report = tick(clock, 1)
        assert report["polled"] == {"broken": "failed", "healthy": "changed"}
        assert [a["key"] for a in report["actions"]] == ["initial"]
        assert "HTTP 503 (after 3 attempts)" in report["errors"]["broken"]
        view = status_sources.get_source(services(), "broken")
        assert view["poll"]["failures"] == 1
        assert "HTTP 503" in view["poll"]["last_error"]["message"]
        # Backs off: the broken source is not asked again at the next minute, then recovers.
        assert tick(clock, 2)["polled"] == {"healthy": "not_modified"}
        broken.come_back()
        assert tick(clock, 3)["polled"] == {"broken": "changed", "healthy": "not_modified"}
        assert status_sources.get_source(services(), "broken")["poll"]["last_error"] is None


def test_a_source_that_hangs_times_out_without_holding_up_the_others(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_sources, "FETCH_TIMEOUT_SECONDS", 0.3)
    page.add([upstream("up1", update("u1", "investigating", 0, "mobile-data"))])
    with StatuspageServer(clock=clock) as slow:
        slow.hang_next(10, seconds=3)
        add_source("slow", url=slow.url)
        add_source("healthy", url=page.url)
        started = time.monotonic()
        report = tick(clock, 1)
        assert time.monotonic() - started < 6
    assert report["polled"] == {"slow": "failed", "healthy": "changed"}
    assert "timed out" in report["errors"]["slow"]
    assert [a["source_id"] for a in report["actions"]] == ["healthy"]


def test_a_transient_error_is_retried_with_backoff_within_the_same_poll(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock
) -> None:
    page.add([upstream("up1", update("u1", "investigating", 0, "mobile-data"))])
    add_source(url=page.url)
    page.fail_next(2, status=502, path="/api/v2/incidents.json")
    waits: list[float] = []
    clock.set(at(1))
    report = status_sources.poll_due_sources(services(), at(1), sleep=waits.append)
    assert report["polled"] == {"carrier": "changed"}
    assert [a["key"] for a in report["actions"]] == ["initial"]
    assert waits == [0.5, 1.0]


def test_a_feed_source_opens_and_resolves_an_event_from_its_entries(
    stack: Stack, run_queues: RunQueues
) -> None:
    seed(2)
    feed = (FIXTURES / "aws_health.rss").read_bytes().decode()
    items = re.findall(r"<item>.*?</item>", feed, flags=re.DOTALL)
    head, tail = feed.split(items[0])[0], "</channel></rss>"
    documents = {"now": (head + items[1] + tail).encode()}  # only the first SMS message

    def fetch(url: str, headers: Mapping[str, str], timeout: float) -> FetchResult:
        assert url == "https://status.example.com/rss"
        return FetchResult(200, documents["now"])

    status_sources.create_source(
        services(),
        {
            "source_id": "aws",
            "kind": "feed",
            "url": "https://status.example.com/rss",
            "group_pattern": r"#(.+)_\d+$",
            "default": {"services": ["mobile"]},
            "policy": {"mode": "auto", "auto_min_impact": "minor"},
        },
    )
    moment = datetime(2024, 3, 1, 17, 11, tzinfo=UTC)  # a minute after the first entry
    first = status_sources.poll_due_sources(services(), moment, fetch=fetch)
    run_queues()
    documents["now"] = feed.encode()
    second = status_sources.poll_due_sources(services(), moment + timedelta(hours=6), fetch=fetch)
    run_queues()
    assert [a["kind"] for a in first["actions"]] == ["open"]
    # The resolved entry closes the SMS event, so the later API-errors event (same feed group,
    # same services) finds nothing open to join and opens an incident of its own.
    kinds = [(a["kind"], a["outcome"].split(":")[0]) for a in second["actions"]]
    assert kinds == [("resolve", "sent"), ("open", "sent")]
    assert len(stack.delivered()["sms"]) == 2 * 3


# -- joining, policy, and sends that must wait -----------------------------------------------


def test_an_incident_on_the_same_services_joins_the_open_one_and_the_last_resolution_clears(
    stack: Stack, run_queues: RunQueues, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(3)
    page.add(
        [
            upstream(
                "data",
                update("d1", "investigating", 0, "mobile-data"),
                update("d2", "resolved", 20),
            ),
            upstream(
                "voice",
                update("v1", "investigating", 5, "mobile-voice"),
                update("v2", "identified", 10),
                update("v3", "resolved", 30),
                component="mobile-voice",
                name="Calls failing",
            ),
        ]
    )
    add_source(url=page.url, components={"mobile-data": MOBILE_NORTH, "mobile-voice": MOBILE_NORTH})
    seen: list[tuple[str, str, str]] = []
    for minute in (1, 6, 11, 21, 31):
        seen += [(a["incident"], a["key"], a["outcome"]) for a in tick(clock, minute)["actions"]]
        run_queues()
    data_incident = forewarn_incident_id("carrier", "data")
    assert seen == [
        ("data", "initial", "sent"),
        ("voice", "initial", f"joined:{data_incident}"),
        ("voice", "update:v2", "sent"),
        ("data", "resolved", "sent (partial: other upstream incidents still open)"),
        ("voice", "resolved", "sent"),
    ]
    phases = [b.phase for b in source_broadcasts("carrier", "data")]
    assert phases == [Phase.INITIAL, Phase.UPDATE, Phase.UPDATE, Phase.RESOLVED]
    assert services().store.get_incident(forewarn_incident_id("carrier", "voice")) is None
    assert len(stack.delivered()["sms"]) == 3 * 4


def test_the_policy_drafts_below_its_impact_and_sends_at_or_above_it(
    stack: Stack, run_queues: RunQueues, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(2)
    seed(2, service=("tv", "south", "75001"), first=10)
    page.add(
        [
            upstream("small", update("s1", "investigating", 0, "mobile-data"), impact="minor"),
            upstream("big", update("b1", "investigating", 0, "tv"), impact="major", component="tv"),
        ]
    )
    add_source(
        url=page.url,
        components={"mobile-data": MOBILE_NORTH, "tv": {"services": ["tv"], "regions": ["south"]}},
        policy={"mode": "auto", "auto_min_impact": "major"},
    )
    outcomes = {a["incident"]: a["outcome"] for a in tick(clock, 1)["actions"]}
    run_queues()
    assert outcomes == {"small": "draft", "big": "sent"}
    (draft,) = source_broadcasts("carrier", "small")
    assert draft.status is BroadcastStatus.DRAFT
    assert draft.created_by == "source:carrier"
    phones = sorted(m["phone_number"] for m in stack.delivered()["sms"])
    assert phones == ["+14155550010", "+14155550011"]


def test_in_draft_mode_every_notice_waits_for_ops(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(2)
    page.add(
        [
            upstream(
                "up1",
                update("u1", "investigating", 0, "mobile-data"),
                update("u2", "identified", 5),
                impact="critical",
            )
        ]
    )
    add_source(url=page.url, policy={"mode": "draft"})
    outcomes = [a["outcome"] for m in (1, 6) for a in tick(clock, m)["actions"]]
    assert outcomes == ["draft", "draft"]
    drafted = source_broadcasts("carrier", "up1")
    assert [(b.phase, b.status) for b in drafted] == [
        (Phase.INITIAL, BroadcastStatus.DRAFT),
        (Phase.UPDATE, BroadcastStatus.DRAFT),
    ]
    assert stack.delivered()["sms"] == []


@contextmanager
def queues_running() -> Iterator[Callable[[], None]]:
    """The app's queue consumers, started only when the test says so."""
    import app
    from forewarn_cli.local.events import EventRunner

    runner = EventRunner(
        app.app, aws.client("sqs"), concurrency=2, poll_wait_seconds=0, schedules=False
    )
    runner.start()
    try:
        yield lambda: None if runner.drain(60) else pytest.fail("queues did not drain")
    finally:
        runner.stop()


def test_an_all_clear_waits_for_the_initial_audience_and_then_goes(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(3)
    add_source(url=page.url)
    tick(clock, 0)
    page.add(
        [
            upstream(
                "blip",
                update("b1", "investigating", 0.2, "mobile-data"),
                update("b2", "resolved", 0.7),
            )
        ]
    )
    # Nothing plans the initial yet, so its audience is not frozen when the all-clear is made.
    report = tick(clock, 1)
    assert [(a["key"], a["outcome"]) for a in report["actions"]] == [
        ("initial", "sent"),
        ("resolved", "awaiting_send"),
    ]
    assert status_sources.flush_unsent(services(), at(1.1))["sent_waiting"] == []
    with queues_running() as drain:
        drain()  # the initial's planner freezes its audience
        later = status_sources.flush_unsent(services(), at(1.2))
        drain()
    (resolved,) = [b for b in source_broadcasts("carrier", "blip") if b.phase is Phase.RESOLVED]
    assert later["sent_waiting"] == [
        {
            "broadcast_id": resolved.broadcast_id,
            "at": at(1.2).isoformat().replace("+00:00", ".000Z"),
        }
    ]
    assert len(stack.delivered()["sms"]) == 3 * 2


def test_a_maintenance_heads_up_falls_due_by_the_lead_time_even_while_the_page_answers_304(
    stack: Stack, run_queues: RunQueues, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(2)  # mobile in the north, in Berlin
    services().store.upsert_customer(
        replace(customer(2, locale="fr-CA"), time_zone="America/Toronto")
    )
    # Not on the mapped component's services and regions: told nothing.
    services().store.upsert_customer(customer(8, services=(("mobile", "south", "80331"),)))
    services().store.upsert_customer(customer(9, services=(("tv", "north", "10115"),)))
    page.add(
        [
            {
                "id": "mnt1",
                "name": "Core network upgrade",
                "status": "scheduled",
                "impact": "maintenance",
                "created_at": stamp(-10),
                "scheduled_for": stamp(180),
                "scheduled_until": stamp(240),
                "components": [{"id": "mobile-data", "name": "Mobile data"}],
                "incident_updates": [],
            }
        ]
    )
    add_source(url=page.url, policy={"mode": "auto", "maintenance_lead_minutes": 60})
    assert tick(clock, 0)["actions"] == []
    report = tick(clock, 121)
    assert report["polled"] == {"carrier": "not_modified"}
    (headsup,) = report["actions"]
    assert headsup["kind"] == "headsup"
    assert headsup["display_at"] == "2024-03-01T12:00:00.000Z"
    assert headsup["outcome"] == "sent"
    incident = services().store.get_incident(headsup["forewarn_incident_id"])
    assert incident is not None
    assert (
        incident.title
        == "Planned maintenance: Core network upgrade (2024-03-01 13:00 to 14:00 UTC)"
    )
    (broadcast,) = source_broadcasts("carrier", "mnt1")
    assert (broadcast.phase, broadcast.template) == (Phase.INITIAL, "maintenance_headsup")
    assert broadcast.variables == {
        "window_start": "2024-03-01T13:00:00Z",
        "window_end": "2024-03-01T14:00:00Z",
    }
    # Sent ahead of the window, on the poller's clock.
    assert broadcast.created_at < broadcast.variables["window_start"]
    run_queues()
    texts = {m["phone_number"]: m["message"] for m in stack.delivered()["sms"]}
    assert len(stack.delivered()["sms"]) == 3
    assert texts == {
        "+14155550000": (
            "Forewarn Telecom: planned mobile maintenance in north, 1 Mar 14:00-15:00 CET. "
            "Brief outages possible. Reply STOP to opt out."
        ),
        "+14155550001": (
            "Forewarn Telecom: planned mobile maintenance in north, 1 Mar 14:00-15:00 CET. "
            "Brief outages possible. Reply STOP to opt out."
        ),
        "+14155550002": (
            "Forewarn Telecom: maintenance mobile (north) prévue 01/03 08:00-09:00 EST, "
            "coupures possibles. Répondez STOP pour vous désabonner."
        ),
    }
    assert tick(clock, 122)["actions"] == []
    closed = tick(clock, 241)["actions"]
    assert [a["kind"] for a in closed] == ["close"]
    run_queues()
    # Once: neither later polls nor the end of the window send anything more.
    assert len(stack.delivered()["sms"]) == 3
    assert len(source_broadcasts("carrier", "mnt1")) == 1
    resolved = services().store.get_incident(headsup["forewarn_incident_id"])
    assert resolved is not None
    assert resolved.status is IncidentStatus.RESOLVED


def test_a_maintenance_heads_up_in_draft_mode_waits_for_ops_with_its_window(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(1)
    page.add(
        [
            {
                "id": "mnt2",
                "name": "Radio swap",
                "status": "scheduled",
                "impact": "maintenance",
                "created_at": stamp(-10),
                "scheduled_for": stamp(90),
                # No end announced: the start alone still says when.
                "shortlink": "https://stspg.io/mnt2",
                "components": [{"id": "mobile-data", "name": "Mobile data"}],
                "incident_updates": [],
            }
        ]
    )
    add_source(url=page.url, policy={"mode": "draft"})
    tick(clock, 0)
    (headsup,) = tick(clock, 31)["actions"]
    assert (headsup["kind"], headsup["outcome"]) == ("headsup", "draft")
    (broadcast,) = source_broadcasts("carrier", "mnt2")
    assert broadcast.variables == {
        "status_link": "https://stspg.io/mnt2",
        "window_start": "2024-03-01T11:30:00Z",
    }
    preview = broadcasts.preview(services(), broadcast.broadcast_id)
    sms = preview["rendered"]["sms"]
    assert "1 Mar 12:30 CET." in sms["text"]
    assert sms["segments"]["segments"] == 1
    assert stack.delivered()["sms"] == []


# -- crashes ---------------------------------------------------------------------------------


def test_a_crash_between_the_claim_and_its_record_never_sends_twice(
    stack: Stack,
    run_queues: RunQueues,
    page: StatuspageServer,
    clock: SimulatedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(3)
    page.add([upstream("up1", update("u1", "investigating", 0, "mobile-data"))])
    add_source(url=page.url)
    real_record = SourceTables.record
    calls = {"n": 0}

    def crash_once(self: SourceTables, *args: Any) -> int | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("the process died here")
        return real_record(self, *args)

    monkeypatch.setattr(SourceTables, "record", crash_once)
    first = tick(clock, 1)
    assert first["actions"] == []
    assert first["errors"] == {"carrier/up1": "ConnectionError"}
    # The claim is still held: the next minute leaves the incident alone.
    busy = tick(clock, 2)
    assert busy["actions"] == []
    assert busy["problems"] == ["carrier/up1: busy, retried next run"]
    # Once the claim's lease is over, the broadcast the dead run made is adopted and sent.
    recovered = tick(clock, 5)
    assert [(a["key"], a["outcome"]) for a in recovered["actions"]] == [("initial", "sent")]
    run_queues()
    assert len(source_broadcasts("carrier", "up1")) == 1
    assert len(stack.delivered()["sms"]) == 3


def test_a_crash_after_sending_but_before_saving_the_state_never_sends_twice(
    stack: Stack,
    run_queues: RunQueues,
    page: StatuspageServer,
    clock: SimulatedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(3)
    page.add(
        [
            upstream(
                "up1",
                update("u1", "investigating", 0, "mobile-data"),
                update("u2", "identified", 3),
            )
        ]
    )
    add_source(url=page.url)
    tick(clock, 1)
    run_queues()
    real_save = SourceTables.save_state

    def crash_on_update(self: SourceTables, source_id: str, stored: Any) -> Any:
        if "update:u2" in stored.state.acted:
            raise ConnectionError("the process died here")
        return real_save(self, source_id, stored)

    monkeypatch.setattr(SourceTables, "save_state", crash_on_update)
    assert tick(clock, 4)["errors"] == {"carrier/up1": "ConnectionError"}
    monkeypatch.setattr(SourceTables, "save_state", real_save)
    retried = tick(clock, 5)
    assert [(a["key"], a["outcome"]) for a in retried["actions"]] == [("update:u2", "sent")]
    run_queues()
    phases = [b.phase for b in source_broadcasts("carrier", "up1")]
    assert phases == [Phase.INITIAL, Phase.UPDATE]
    assert len(stack.delivered()["sms"]) == 3 * 2


# -- webhooks --------------------------------------------------------------------------------


@pytest.fixture
def signing_key(stack: Stack) -> Iterator[str]:
    aws.client("secretsmanager").put_secret_value(
        SecretId=services().settings.webhook_secret_id,
        SecretString=json.dumps({"sources.noc": SIGNING_KEY, "easypost": "other"}),
    )
    status_sources.reset_secret_cache()
    status_sources.create_source(
        services(),
        {
            "source_id": "noc",
            "kind": "webhook",
            "components": {"broadband-east": {"services": ["broadband"], "regions": ["east"]}},
            "policy": {"mode": "auto", "auto_min_impact": "major"},
        },
    )
    yield SIGNING_KEY
    status_sources.reset_secret_cache()


def signed(body: bytes, key: str = SIGNING_KEY) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def signed_body() -> bytes:
    data = json.loads((FIXTURES / "signed_webhook.json").read_text())
    now = datetime.now(UTC)
    # Recent, so that it is news rather than history.
    data["incident"]["updates"][0]["display_at"] = (now - timedelta(minutes=3)).isoformat()
    data["incident"]["updates"][1]["display_at"] = (now - timedelta(minutes=1)).isoformat()
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "header_name", ["X-Forewarn-Signature", "x-forewarn-signature", "X-FOREWARN-SIGNATURE"]
)
def test_a_validly_signed_webhook_is_accepted_whatever_the_case_of_its_header_name(
    signing_key: str, header_name: str
) -> None:
    body = signed_body()
    result = status_sources.receive_signed_webhook(
        services(), "noc", body, {header_name: signed(body)}
    )
    assert [(a["kind"], a["outcome"]) for a in result["actions"]] == [("open", "sent")]
    incident = services().store.get_incident(forewarn_incident_id("noc", "noc-2024-0301-1"))
    assert incident is not None
    assert (incident.services, incident.regions) == (("broadband",), ("east",))
    assert incident.status is IncidentStatus.IDENTIFIED


def test_a_repeated_webhook_delivery_acts_once(signing_key: str) -> None:
    body = signed_body()
    headers = {"X-Forewarn-Signature": signed(body)}
    first = status_sources.receive_signed_webhook(services(), "noc", body, headers)
    again = status_sources.receive_signed_webhook(services(), "noc", body, headers)
    assert len(first["actions"]) == 1
    assert again["actions"] == []
    assert len(source_broadcasts("noc", "noc-2024-0301-1")) == 1


def _forged(body: bytes) -> dict[str, str]:
    return {"X-Forewarn-Signature": signed(body, key="not-the-key")}


def _missing(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json"}


def _base64(body: bytes) -> dict[str, str]:
    digest = hmac.new(SIGNING_KEY.encode(), body, hashlib.sha256).digest()
    return {"X-Forewarn-Signature": "sha256=" + base64.b64encode(digest).decode()}


def _no_prefix(body: bytes) -> dict[str, str]:
    return {"X-Forewarn-Signature": signed(body).removeprefix("sha256=")}


def _other_body(body: bytes) -> dict[str, str]:
    return {"X-Forewarn-Signature": signed(body + b" ")}


def _truncated(body: bytes) -> dict[str, str]:
    return {"X-Forewarn-Signature": signed(body)[:-2]}


@pytest.mark.parametrize(
    "make_headers", [_forged, _missing, _base64, _no_prefix, _other_body, _truncated]
)
def test_a_webhook_without_a_valid_signature_is_refused_before_its_body_is_read(
    signing_key: str, make_headers: Callable[[bytes], dict[str, str]]
) -> None:
    body = signed_body()
    with pytest.raises(Unauthorized) as refused:
        status_sources.receive_signed_webhook(services(), "noc", body, make_headers(body))
    assert SIGNING_KEY not in refused.value.message
    assert services().store.get_incident(forewarn_incident_id("noc", "noc-2024-0301-1")) is None
    # Not even the body's JSON was looked at: garbage is refused the same way.
    with pytest.raises(Unauthorized):
        status_sources.receive_signed_webhook(services(), "noc", b"{not json", make_headers(body))


def test_a_webhook_for_a_source_without_a_key_is_refused(signing_key: str) -> None:
    body = signed_body()
    for source_id in ("nobody", "carrier"):
        with pytest.raises(Unauthorized, match="signature does not verify"):
            status_sources.receive_signed_webhook(
                services(), source_id, body, {"X-Forewarn-Signature": signed(body)}
            )


def test_a_rotated_key_is_picked_up_without_waiting_for_the_cache(signing_key: str) -> None:
    body = signed_body()
    status_sources.receive_signed_webhook(
        services(), "noc", body, {"X-Forewarn-Signature": signed(body)}
    )
    aws.client("secretsmanager").put_secret_value(
        SecretId=services().settings.webhook_secret_id,
        SecretString=json.dumps({"sources": {"noc": "a-new-key"}}),
    )
    result = status_sources.receive_signed_webhook(
        services(), "noc", body, {"x-forewarn-signature": signed(body, key="a-new-key")}
    )
    assert result["actions"] == []  # already handled, but accepted with the new key


def test_a_statuspage_webhook_needs_the_sources_token(stack: Stack) -> None:
    view = add_source(
        "pushed", components={}, default={"services": ["mobile"], "regions": ["south"]}
    )
    token = view.pop("webhook_token")
    assert view["webhook_token_set"] is True
    data = json.loads((FIXTURES / "statuspage_webhook_incident.json").read_text())
    now = datetime.now(UTC)
    for index, update_ in enumerate(data["incident"]["incident_updates"]):
        update_["display_at"] = (now - timedelta(minutes=index + 1)).isoformat()
    body = json.dumps(data).encode()
    for bad in (None, "", token[:-1], token + "x"):
        with pytest.raises(Unauthorized):
            status_sources.receive_statuspage_webhook(services(), "pushed", body, {}, token=bad)
    with pytest.raises(Unauthorized):
        status_sources.receive_statuspage_webhook(services(), "nobody", body, {}, token=token)
    started = time.monotonic()
    result = status_sources.receive_statuspage_webhook(services(), "pushed", body, {}, token=token)
    assert time.monotonic() - started < 5
    assert [(a["kind"], a["covers"]) for a in result["actions"]] == [
        ("open", ["upd0hook0001", "upd0hook0002"])
    ]
    component = (FIXTURES / "statuspage_webhook_component.json").read_bytes()
    accepted = status_sources.receive_statuspage_webhook(
        services(), "pushed", component, {}, token=token
    )
    assert accepted["accepted"] == "component_update"
    with pytest.raises(BadRequest, match="not valid JSON"):
        status_sources.receive_statuspage_webhook(services(), "pushed", b"<xml/>", {}, token=token)


# -- the ops API -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"kind": "pager"}, "kind must be one of"),
        ({"url": "ftp://status.example.com"}, "url must be an http"),
        ({"url": "https://x.example.com/api/v2/summary.json"}, "without /api/v2"),
        ({"components": {}}, "map at least one component"),
        ({"poll_seconds": 5}, "poll_seconds must be from 60"),
        ({"policy": {"mode": "sometimes"}}, "policy.mode"),
        ({"channels": ["pigeon"]}, "channels must be a list"),
        ({"group_pattern": "(.+)"}, "for feed sources only"),
        ({"colour": "red"}, "unknown fields: colour"),
    ],
)
def test_a_bad_source_configuration_is_refused_with_the_field_named(
    stack: Stack, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        add_source(**{"url": "https://status.example.com", **payload})


def test_sources_are_created_listed_changed_and_polled_on_demand(
    stack: Stack, page: StatuspageServer, clock: SimulatedClock
) -> None:
    created = add_source(url=page.url, poll_seconds=3600)
    assert created["version"] == 1
    assert "webhook_token" in created
    with pytest.raises(Conflict):
        add_source(url=page.url)
    changed = status_sources.update_source(
        services(), "carrier", {"policy": {"mode": "draft"}, "rotate_webhook_token": True}
    )
    assert changed["policy"]["mode"] == "draft"
    assert changed["version"] == 2
    assert changed["webhook_token"] != created["webhook_token"]
    with pytest.raises(BadRequest, match="kind cannot change"):
        status_sources.update_source(services(), "carrier", {"kind": "feed"})
    listed = status_sources.list_sources(services())["sources"]
    assert [s["source_id"] for s in listed] == ["carrier"]
    assert "webhook_token" not in listed[0]
    page.add([upstream("up1", update("u1", "investigating", 0, "mobile-data"))])
    clock.set(at(1))
    now = status_sources.poll_source_now(services(), "carrier", at(1))
    assert [a["outcome"] for a in now["actions"]] == ["draft"]
    assert status_sources.get_source(services(), "carrier")["poll"]["last_result"] == "changed"
    with pytest.raises(NotFound):
        status_sources.get_source(services(), "nobody")
    status_sources.create_source(
        services(), {"source_id": "hook", "kind": "webhook", "default": {"services": ["tv"]}}
    )
    with pytest.raises(BadRequest, match="not polled"):
        status_sources.poll_source_now(services(), "hook")


def test_an_incident_ops_resolved_by_hand_is_neither_joined_nor_notified_again(
    stack: Stack, run_queues: RunQueues, page: StatuspageServer, clock: SimulatedClock
) -> None:
    page.add(
        [
            upstream(
                "first",
                update("f1", "investigating", 0, "mobile-data"),
                update("f2", "identified", 10),
                update("f3", "resolved", 20),
            ),
            upstream("second", update("s1", "investigating", 5, "mobile-data")),
        ]
    )
    add_source(url=page.url)
    tick(clock, 1)
    run_queues()
    closed = forewarn_incident_id("carrier", "first")
    incidents.update_incident(services().store, closed, {"status": "resolved"}, at(2))
    second = tick(clock, 6)["actions"]
    assert [(a["incident"], a["outcome"]) for a in second] == [("second", "sent")]
    assert second[0]["forewarn_incident_id"] == forewarn_incident_id("carrier", "second")
    later = [
        (a["key"], a["outcome"]) for a in tick(clock, 11)["actions"] + tick(clock, 21)["actions"]
    ]
    assert later == [
        ("update:f2", "skipped:incident closed in Forewarn"),
        ("resolved", "skipped:incident closed in Forewarn"),
    ]
    assert [b.phase for b in source_broadcasts("carrier", "first")] == [Phase.INITIAL]


def test_a_lost_audience_frozen_flag_is_restored_before_an_update_is_sent(
    stack: Stack, run_queues: RunQueues, page: StatuspageServer, clock: SimulatedClock
) -> None:
    seed(2)
    page.add(
        [
            upstream(
                "up1",
                update("u1", "investigating", 0, "mobile-data"),
                update("u2", "identified", 3),
            )
        ]
    )
    add_source(url=page.url)
    tick(clock, 1)
    run_queues()
    # What a concurrent whole-item incident write does to the planner's freeze.
    incident_id = forewarn_incident_id("carrier", "up1")
    incident = services().store.get_incident(incident_id)
    assert incident is not None
    assert incident.audience_frozen
    aws.client("dynamodb").update_item(
        TableName=services().settings.names.incidents,
        Key={"incident_id": {"S": incident_id}},
        UpdateExpression="SET audience_frozen = :f",
        ExpressionAttributeValues={":f": {"BOOL": False}},
    )
    assert [(a["key"], a["outcome"]) for a in tick(clock, 4)["actions"]] == [("update:u2", "sent")]
    run_queues()
    assert len(stack.delivered()["sms"]) == 2 * 2


def test_a_pushed_maintenance_gets_its_heads_up_from_the_schedule_when_the_lead_time_comes(
    signing_key: str,
) -> None:
    now = datetime.now(UTC)
    starts = now + timedelta(hours=3)
    body = json.dumps(
        {
            "incident": {
                "id": "mnt-7",
                "name": "Fibre splicing",
                "components": ["broadband-east"],
                "scheduled_for": starts.isoformat(),
                "scheduled_until": (starts + timedelta(hours=1)).isoformat(),
                "updates": [{"id": "m1", "status": "scheduled", "display_at": now.isoformat()}],
            }
        }
    ).encode()
    pushed = status_sources.receive_signed_webhook(
        services(), "noc", body, {"X-Forewarn-Signature": signed(body)}
    )
    assert pushed["actions"] == []
    early = status_sources.poll_due_sources(services(), now + timedelta(minutes=30))
    assert early["actions"] == []
    due = status_sources.poll_due_sources(services(), starts - timedelta(minutes=59))
    assert [(a["incident"], a["kind"]) for a in due["actions"]] == [("mnt-7", "headsup")]
    assert (
        status_sources.poll_due_sources(services(), starts - timedelta(minutes=58))["actions"] == []
    )
