"""Carrier lanes: troubles counted once per event, an improbable spike on one lane opens an
issue, and its broadcast reaches every customer with a parcel on its way there, once."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib import audiences, broadcasts, lanes, shipment_api
from chalicelib.domain import AudienceSelector, Channel
from chalicelib.emerging import BucketCounts
from chalicelib.errors import BadRequest
from chalicelib.runtime import services, signals
from chalicelib.shipments import (
    Direction,
    Shipment,
    ShipmentEvent,
    Status,
    is_disruption,
    lane_of,
)
from chalicelib.signals_store import bucket_add, lane_seen

NOW = datetime(2025, 11, 25, 12, 0, tzinfo=UTC)
LANE = "lane:ups:south"


def shipment(**changes: Any) -> Shipment:
    base = Shipment("1Z0001", "UPS", "c0001", "o1", Direction.OUTBOUND)
    return replace(base, **changes)


# --- which lane, and what is trouble --------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "lane"),
    [
        ({"region": "south"}, "lane:ups:south"),
        ({"region": "south", "postal_code": "75001"}, "lane:ups:south"),
        ({"postal_code": "SW1A 1AA"}, "lane:ups:zip-sw1"),
        ({}, "lane:ups:all"),
        ({"carrier": "Royal Mail", "region": "north"}, "lane:royal-mail:north"),
        ({"carrier": ""}, None),
    ],
)
def test_a_parcel_counts_in_the_lane_of_its_carrier_and_area(
    changes: dict[str, object], lane: str | None
) -> None:
    assert lane_of(shipment(**changes)) == lane


@pytest.mark.parametrize(
    ("before", "after", "trouble"),
    [
        ({}, {"status": Status.EXCEPTION}, True),
        ({}, {"status": Status.ATTEMPT_FAILED}, True),
        ({}, {"status": Status.RETURN_TO_SENDER}, True),
        ({"status": Status.EXCEPTION}, {"status": Status.EXCEPTION}, False),
        ({}, {"status": Status.IN_TRANSIT}, False),
        ({"promised_date": date(2025, 11, 26)}, {"est_delivery": date(2025, 11, 28)}, True),
        ({"promised_date": date(2025, 11, 26)}, {"est_delivery": date(2025, 11, 25)}, False),
        ({}, {"status": Status.DELIVERED}, False),
    ],
)
def test_trouble_is_an_exception_a_failed_attempt_a_return_or_a_later_estimate(
    before: dict[str, object], after: dict[str, object], trouble: bool
) -> None:
    old = shipment(**before)
    assert is_disruption(old, shipment(**{**before, **after})) is trouble


def test_a_lane_audience_names_one_lane_and_nothing_else() -> None:
    selector = AudienceSelector.from_dict({"lanes": [LANE]})
    assert selector.lanes == (LANE,)
    assert selector.to_dict()["lanes"] == [LANE]
    with pytest.raises(BadRequest, match="one lane"):
        AudienceSelector.from_dict({"lanes": [LANE, "lane:ups:north"]})
    with pytest.raises(BadRequest, match="one lane"):
        AudienceSelector.from_dict({"lanes": [LANE], "services": ["mobile"]})


def test_a_lane_is_named_for_people() -> None:
    assert lanes.Lane.parse("lane:ups:south").describe() == "UPS deliveries to the south region"
    assert lanes.Lane.parse("lane:dhl:zip-750").describe() == "DHL deliveries to postal codes 750…"
    assert lanes.Lane.parse("lane:fedex:all").region is None


# --- on the local stack ---------------------------------------------------------------------


@dataclass
class Ops:
    sent: list[tuple[str, str]] = field(default_factory=list)

    def send(self, subject: str, body: str) -> None:
        self.sent.append((subject, body))


@pytest.fixture
def env(stack: Stack) -> Stack:
    return stack


def register(code: str, index: int, *, region: str = "south", direction: str = "outbound") -> None:
    store = services().store
    store.upsert_customer(customer(index))
    row = {
        "tracking_code": code,
        "carrier": "ups",
        "customer_id": f"c{index:04d}",
        "order_id": f"o-{code}",
        "direction": direction,
        "promised_date": "2025-11-27",
        "region": region,
    }
    report = shipment_api.import_shipments(store, {"shipments": [row]})
    assert report["rejected"] == [], report


def event(code: str, status: Status, n: int, at: datetime = NOW) -> ShipmentEvent:
    return ShipmentEvent(
        provider="easypost",
        event_id=f"evt_{code}_{n}",
        tracking_code=code,
        status=status,
        detail=None,
        occurred_at=at - timedelta(minutes=5),
        est_delivery=None,
        carrier="UPS",
    )


def counts(lane: str, at: datetime) -> BucketCounts:
    hour = at.replace(minute=0, second=0, microsecond=0)
    return signals().bucket_counts(lane, hour, hour).get(hour, BucketCounts())


def lane_customers(lane: str, size: int) -> list[str]:
    store = services().store
    pages = audiences.iterate_pages(
        store, selector=AudienceSelector((), lanes=(lane,)), incident_id="-", size=size
    )
    return [c.customer_id for page in pages for c in page.customers]


def test_an_event_counts_once_in_its_lane_even_when_the_webhook_is_retried(env: Stack) -> None:
    register("1ZLANE0001", 1)
    trouble = event("1ZLANE0001", Status.EXCEPTION, 1)
    assert shipment_api.process_event(services(), trouble, now=NOW)["status"] == "applied"
    assert shipment_api.process_event(services(), trouble, now=NOW)["status"] == "duplicate"
    calm = event("1ZLANE0001", Status.IN_TRANSIT, 2, NOW + timedelta(minutes=1))
    assert shipment_api.process_event(services(), calm, now=NOW)["status"] == "applied"
    found = counts(LANE, NOW)
    assert (found.posts, found.negative, found.clusters.get("delivery")) == (2, 1, 1)
    assert list(signals().lanes()) == [LANE]


def test_the_lane_audience_is_each_customer_with_a_parcel_still_on_its_way_once(
    env: Stack,
) -> None:
    register("1ZLANE0001", 1)
    register("1ZLANE0002", 1)  # a second parcel of the same customer
    register("1ZLANE0003", 2)
    register("1ZLANE0004", 3)  # delivered below
    register("1ZLANE0005", 4, direction="return")  # nobody waits for a return
    register("1ZLANE0006", 5, region="north")  # another lane
    register("1ZLANE0007", 6)
    delivered = event("1ZLANE0004", Status.DELIVERED, 1)
    assert shipment_api.process_event(services(), delivered, now=NOW)["status"] == "applied"
    # Page sizes of 1 and 2 put a page boundary between the two parcels of c0001.
    for size in (1, 2, 50):
        assert lane_customers(LANE, size) == ["c0001", "c0002", "c0006"]


def seed_history(lane: str, hours: int, end: datetime) -> None:
    """A lane's past: 20 events an hour, one of them trouble every third hour."""
    db, table = signals().db, services().settings.names.signals
    start = end - timedelta(hours=hours)
    db.update_item(**lane_seen(table, lane, start))
    for hour in range(hours):
        trouble = int(hour % 3 == 0)
        bucket = BucketCounts(20, trouble, trouble, {"delivery": trouble})
        db.update_item(**bucket_add(table, lane, start + timedelta(hours=hour), bucket))


def test_a_spike_of_trouble_on_a_lane_opens_one_incident_and_drafts_one_broadcast(
    env: Stack,
) -> None:
    seed_history(LANE, 72, NOW)
    codes = [f"1ZSPIKE{n:04d}" for n in range(12)]
    for n, code in enumerate(codes):
        register(code, n + 1)
    register("1ZCALM0001", 20)
    for code in codes:
        shipment_api.process_event(services(), event(code, Status.EXCEPTION, 1), now=NOW)
    ops = Ops()
    after_hour = NOW + timedelta(hours=1, minutes=1)
    report = lanes.judge_lanes(services(), signals(), ops, after_hour)
    assert len(report.opened) == 1
    issue = signals().get_issue(report.opened[0])
    assert (issue.topic, issue.cluster, issue.posts) == (LANE, "delivery", 12)
    assert issue.incident_id is not None
    store = services().store
    incident = store.get_incident(issue.incident_id)
    assert incident is not None
    assert incident.title == "UPS deliveries to the south region are running late"
    (draft,) = store.broadcasts_for_incident(incident.incident_id)
    assert draft.template == "lane_disruption"
    assert draft.status.value == "draft"
    assert draft.audience == AudienceSelector((), lanes=(LANE,))
    # Every customer with an exception parcel, and the one whose parcel is still fine.
    assert broadcasts.count_audience(store, draft, 5).total == 13
    ((subject, body),) = ops.sent
    assert subject == "Carrier disruption: UPS deliveries to the south region"
    assert draft.broadcast_id in body
    assert "Kim" not in body
    # Judging again, or opening the same issue again, makes nothing new.
    assert lanes.judge_lanes(services(), signals(), ops, after_hour).opened == []
    again = lanes.open_incident(services(), signals(), issue)
    assert again[1].broadcast_id == draft.broadcast_id
    assert len(store.broadcasts_for_incident(incident.incident_id)) == 1
    assert len(ops.sent) == 1


def test_a_busy_hour_with_the_usual_share_of_trouble_opens_nothing(env: Stack) -> None:
    seed_history(LANE, 72, NOW)
    table = services().settings.names.signals
    # Three times the volume and three times the troubles: a peak day, not a disruption.
    signals().db.update_item(
        **bucket_add(table, LANE, NOW, BucketCounts(60, 3, 3, {"delivery": 3}))
    )
    ops = Ops()
    report = lanes.judge_lanes(services(), signals(), ops, NOW + timedelta(hours=1, minutes=1))
    assert report.opened == []
    assert ops.sent == []


@pytest.mark.parametrize("locale", ["en", "es", "fr"])
@pytest.mark.parametrize("channel", list(Channel))
def test_the_lane_notice_renders_in_every_channel_and_locale(locale: str, channel: Channel) -> None:
    from chalicelib import notices
    from chalicelib.domain import Incident, IncidentStatus

    incident = Incident(
        "inc_1",
        "UPS deliveries to the south region are running late",
        IncidentStatus.INVESTIGATING,
        (lanes.SERVICE,),
        ("south",),
        "2025-11-25T12:00:00Z",
        "2025-11-25T12:00:00Z",
        next_update_due="2025-11-25T15:00:00Z",
    )
    context = notices.notice_context(
        customer(1, locale=locale), incident, {"status_link": "https://s.example/x"}, brand="NW"
    )
    rendered = notices.render_notice(lanes.TEMPLATE, channel, locale, context)
    assert rendered.text
    assert "{{" not in rendered.text
    assert "https://s.example/x" in rendered.text
    if channel is not Channel.SOCIAL:
        assert ("16:00" in rendered.text) or ("4:00" in rendered.text)  # Berlin time
    if channel is Channel.EMAIL:
        assert "Kim" in rendered.text
        assert rendered.subject
        assert rendered.html
