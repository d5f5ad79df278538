from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib import broadcasts, customer_notices, deliveries, incidents, lookup, shipment_api
from chalicelib import store as store_module
from chalicelib.domain import Channel, Customer
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.runtime import services
from chalicelib.store import Store, to_dynamo

UPS = "1Z999AA10123456784"
USPS = "9400111899223197428490"


def store() -> Store:
    return services().store


def add(index: int, **options: Any) -> Customer:
    added = customer(index, **options)
    store().upsert_customer(added)
    return added


def open_incident(**overrides: Any) -> str:
    payload = {"title": "Mobile data down", "services": ["mobile"], "regions": ["north"]}
    payload.update(overrides)
    return incidents.create_incident(store(), payload).incident_id


def send(incident_id: str, **payload: Any) -> str:
    draft = broadcasts.create_broadcast(
        services(), {"incident_id": incident_id, **payload}, actor="olivia"
    )
    broadcasts.approve(services(), draft.broadcast_id, actor="olivia")
    broadcasts.send(services(), draft.broadcast_id)
    return draft.broadcast_id


class Clock:
    """The ledger's clock (`store.time`), moved by hand so notices get distinct times."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(store_module, "time", fake)
    return fake


def shipment_notice(tracking_code: str, *, index: int = 1) -> str:
    notice_id = f"shp_{tracking_code}_shipment_delayed_1"
    job = customer_notices.NoticeJob.from_dict(
        {
            "notice_id": notice_id,
            "kind": "shipment_delayed",
            "customer_id": f"c{index:04d}",
            "tracking_code": tracking_code,
            "order_id": "5512",
            "carrier": "ups",
            "status": "exception",
            "reason": "bad weather",
            "promised_date": "2025-11-24",
            "event_at": "2025-11-23T10:00:00Z",
        }
    )
    result = customer_notices.deliver_notice(services(), job, now=job.event_at)
    assert result.outcome is deliveries.Outcome.SENT
    return notice_id


def register_shipment(
    tracking_code: str, carrier: str, *, index: int = 1, now: datetime | None = None
) -> None:
    row = {
        "tracking_code": tracking_code,
        "carrier": carrier,
        "customer_id": f"c{index:04d}",
        "order_id": "5512",
        "direction": "outbound",
    }
    report = shipment_api.import_shipments(store(), {"shipments": [row]}, now=now)
    assert report["created"] == 1


# --- finding the caller ----------------------------------------------------------------------


def test_a_customer_is_found_by_their_id(stack: Stack) -> None:
    add(1)
    add(2)
    assert lookup.find_customer(store(), " c0002 ").customer_id == "c0002"


@pytest.mark.parametrize(
    "typed",
    [
        "+14155550001",
        "+1 415 555 0001",
        "(415) 555-0001",
        "415.555.0001",
        "1-415-555-0001",
        "14155550001",
    ],
)
def test_a_customer_is_found_by_phone_number_however_it_is_typed(stack: Stack, typed: str) -> None:
    add(1)
    add(2)
    assert lookup.find_customer(store(), typed).customer_id == "c0001"


@pytest.mark.parametrize("typed", ["KIM1@Example.COM", "  kim1@EXAMPLE.com ", "kim1@example.com"])
def test_a_customer_is_found_by_email_address_in_any_case(stack: Stack, typed: str) -> None:
    add(1)
    add(11)
    assert lookup.find_customer(store(), typed).customer_id == "c0001"


def test_an_address_stored_with_capitals_is_found_in_lower_case(stack: Stack) -> None:
    record = customer(3)
    store().upsert_customer(replace(record, email="Kim.Tester@Example.com"))
    assert lookup.find_customer(store(), "kim.tester@example.com").customer_id == "c0003"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("c9999", "no customer with that id"),
        ("+1 415 555 9999", "no customer with that phone number"),
        ("nobody@example.com", "no customer with that email address"),
    ],
)
def test_an_unknown_id_phone_number_or_email_address_is_not_found(
    stack: Stack, query: str, message: str
) -> None:
    add(1)
    with pytest.raises(NotFound, match=message):
        lookup.find_customer(store(), query)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "hello world",
        "!!!",
        "kim@",
        "@example.com",
        "(415) 555",
        "+1 555 0000",
        "x" * 300,
    ],
)
def test_a_query_that_is_no_id_phone_number_or_email_address_is_a_bad_request(
    stack: Stack, query: str
) -> None:
    add(1)
    with pytest.raises(BadRequest) as raised:
        lookup.find_customer(store(), query)
    # The query is personal data: it is never repeated back.
    assert query.strip() not in raised.value.message or not query.strip()


def test_a_lookup_logs_nothing_of_what_was_asked(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    add(1)
    with caplog.at_level(logging.DEBUG, logger="chalicelib"):
        lookup.find_customer(store(), "+1 415 555 0001")
        lookup.find_customer(store(), "Kim1@Example.com")
        with pytest.raises(NotFound):
            lookup.find_customer(store(), "someone@example.com")
    assert "415" not in caplog.text
    assert "example.com" not in caplog.text.lower()


def test_customers_sharing_a_phone_number_are_ambiguous_and_named_by_id(stack: Stack) -> None:
    first = add(1)
    store().upsert_customer(replace(customer(2), phone=first.phone))
    with pytest.raises(Conflict) as raised:
        lookup.find_customer(store(), "(415) 555-0001")
    assert raised.value.code == "ambiguous"
    assert raised.value.details == {"customer_ids": ["c0001", "c0002"]}


def test_a_changed_phone_number_finds_the_customer_by_the_new_number_only(stack: Stack) -> None:
    old = add(1)
    store().upsert_customer(replace(old, phone="+14155550777"))
    assert lookup.find_customer(store(), "+14155550777").customer_id == "c0001"
    with pytest.raises(NotFound):
        lookup.find_customer(store(), "+14155550001")


def test_a_customer_stored_before_the_email_index_gains_it_when_imported_again(
    stack: Stack,
) -> None:
    old = customer(1)
    store().db.put_item(
        TableName=store().names.customers, Item=to_dynamo({**old.to_dict(), "version": 1})
    )
    with pytest.raises(NotFound):
        lookup.find_customer(store(), "kim1@example.com")
    assert store().upsert_customer(old) == "updated"
    assert store().upsert_customer(old) == "unchanged"
    assert lookup.find_customer(store(), "kim1@example.com").customer_id == "c0001"


# --- what the agent sees ---------------------------------------------------------------------


def test_a_customer_with_nothing_has_empty_lists(stack: Stack) -> None:
    add(1, services=[("tv", "south", "75001"), ("mobile", "south", "75001")])
    overview = lookup.customer_overview(store(), "c0001")
    assert overview["customer"] == {
        "customer_id": "c0001",
        "name": "Kim Tester1",
        "phone": "+14155550001",
        "email": "kim1@example.com",
        "x_handle": None,
        "channels": ["sms", "email"],
        "locale": "en",
        "time_zone": "Europe/Berlin",
        "services": [
            {"service": "tv", "region": "south", "postal_code": "75001"},
            {"service": "mobile", "region": "south", "postal_code": "75001"},
        ],
        "segments": [],
    }
    assert overview["active_incidents"] == []
    assert overview["notices"] == []
    assert overview["shipments"] == []
    assert overview["more_notices"] is False
    assert overview["more_shipments"] is False


def test_an_unknown_customer_has_no_overview(stack: Stack) -> None:
    with pytest.raises(NotFound, match="no customer with that id"):
        lookup.customer_overview(store(), "c9999")


def test_active_incidents_are_the_unresolved_ones_matching_the_customers_services_and_regions(
    stack: Stack,
) -> None:
    add(1, services=[("mobile", "north", "10115"), ("tv", "east", "20095")])
    here = open_incident(next_update_due="2000-01-01T00:00:00Z")
    everywhere = open_incident(title="TV guide missing", services=["tv"], regions=[])
    open_incident(title="Elsewhere", regions=["south"])
    open_incident(title="Other service", services=["broadband"], regions=["north"])
    resolved = open_incident(title="Fixed already")
    incidents.update_incident(store(), resolved, {"status": "resolved"})

    active = lookup.customer_overview(store(), "c0001")["active_incidents"]

    assert sorted(i["incident_id"] for i in active) == sorted([here, everywhere])
    shown = next(i for i in active if i["incident_id"] == here)
    assert shown["title"] == "Mobile data down"
    assert shown["status"] == "investigating"
    assert shown["services"] == ["mobile"]
    assert shown["regions"] == ["north"]
    assert shown["created_at"]
    assert shown["next_update_due"] == "2000-01-01T00:00:00Z"
    assert shown["update_overdue"] is True
    assert shown["affected_services"] == [
        {"service": "mobile", "region": "north", "postal_code": "10115"}
    ]
    assert (shown["audience_frozen"], shown["in_audience"]) == (False, False)
    tv = next(i for i in active if i["incident_id"] == everywhere)
    assert tv["affected_services"] == [{"service": "tv", "region": "east", "postal_code": "20095"}]
    assert tv["update_overdue"] is False


def test_an_incident_says_whether_the_customer_is_in_its_frozen_audience(
    stack: Stack, run_queues: Callable[..., Any]
) -> None:
    add(1, segments=["vip"])
    add(2)
    incident_id = open_incident()
    send(incident_id, audience={"services": ["mobile"], "regions": ["north"], "segments": ["vip"]})
    run_queues()

    def flags(customer_id: str) -> tuple[bool, bool]:
        (shown,) = lookup.customer_overview(store(), customer_id)["active_incidents"]
        return shown["audience_frozen"], shown["in_audience"]

    assert flags("c0001") == (True, True)
    # Their service is affected, but the notice went to the VIP segment only.
    assert flags("c0002") == (True, False)


def test_an_incident_reaches_a_customer_through_its_audience_snapshot_alone(
    stack: Stack,
) -> None:
    member = add(1)
    incident_id = open_incident(title="Parcels running late", services=["parcels"], regions=[])
    store().put_audience(incident_id, [member])
    (shown,) = lookup.customer_overview(store(), "c0001")["active_incidents"]
    assert shown["incident_id"] == incident_id
    assert shown["affected_services"] == []
    assert shown["in_audience"] is True


def test_notices_show_every_notice_sent_newest_first_with_its_incident_title(
    stack: Stack, run_queues: Callable[..., Any], clock: Clock
) -> None:
    add(1)
    add(2)
    incident_id = open_incident(title="Mobile data down in the north")
    initial = send(incident_id, channels=["sms", "email"])
    run_queues()
    clock.now += 60
    update = send(incident_id, phase="update")
    run_queues()
    clock.now += 60
    parcel = shipment_notice(UPS)

    overview = lookup.customer_overview(store(), "c0001")

    notices = overview["notices"]
    assert [n["notice_id"] for n in notices] == [parcel, update, initial]
    assert [n["kind"] for n in notices] == ["shipment", "broadcast", "broadcast"]
    newest_broadcast = notices[1]
    assert newest_broadcast["broadcast_id"] == update
    assert newest_broadcast["phase"] == "update"
    assert newest_broadcast["template"] == broadcasts.get_broadcast(store(), update).template
    assert newest_broadcast["incident_id"] == incident_id
    assert newest_broadcast["incident_title"] == "Mobile data down in the north"
    assert newest_broadcast["channel"] == Channel.SMS.value
    assert newest_broadcast["status"] == "sent"
    assert newest_broadcast["provider_id"]
    assert newest_broadcast["reason"] is None
    assert notices[2]["phase"] == "initial"
    assert notices[0]["updated_at"] > notices[1]["updated_at"] > notices[2]["updated_at"]
    assert notices[0]["notice_kind"] == "shipment_delayed"
    assert notices[0]["tracking_code"] == UPS
    assert notices[0]["incident_title"] is None
    assert overview["more_notices"] is False
    # The other customer's notices are theirs alone.
    assert [n["notice_id"] for n in lookup.customer_overview(store(), "c0002")["notices"]] == [
        update,
        initial,
    ]


def test_notices_are_capped_with_a_flag_when_more_exist(
    stack: Stack, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(1)
    monkeypatch.setattr(lookup, "NOTICE_LIMIT", 2)
    for n in range(3):
        clock.now += 1
        claim = store().claim_delivery(
            f"shp_X{n}_shipment_delivered_1", "c0001", Channel.SMS, lease_seconds=60
        )
        store().record_outcome(
            f"shp_X{n}_shipment_delivered_1",
            "c0001",
            Channel.SMS,
            attempt_id=claim.attempt_id,
            status="failed",
            counter="failed",
            reason="unreachable",
            count=False,
        )
    overview = lookup.customer_overview(store(), "c0001")
    assert [n["tracking_code"] for n in overview["notices"]] == ["X2", "X1"]
    assert overview["notices"][0]["status"] == "failed"
    assert overview["notices"][0]["reason"] == "unreachable"
    assert overview["more_notices"] is True


def test_the_latest_shipments_come_newest_first_and_are_capped(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(1)
    earlier = datetime.now(UTC) - timedelta(hours=1)
    register_shipment(UPS, "ups", now=earlier)
    register_shipment(USPS, "usps", now=earlier + timedelta(minutes=5))
    overview = lookup.customer_overview(store(), "c0001")
    assert [s["tracking_code"] for s in overview["shipments"]] == [USPS, UPS]
    assert overview["shipments"][0]["status"] == "unknown"
    assert "rank" not in overview["shipments"][0]
    assert overview["more_shipments"] is False
    monkeypatch.setattr(lookup, "SHIPMENT_LIMIT", 1)
    capped = lookup.customer_overview(store(), "c0001")
    assert [s["tracking_code"] for s in capped["shipments"]] == [USPS]
    assert capped["more_shipments"] is True
