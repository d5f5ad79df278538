"""Shipments: carrier payloads in one vocabulary, never backwards, one notice per change, and
`return.received` for billing exactly once. The AWS parts run on the local stack."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib import (
    aws,
    channels,
    customer_notices,
    deliveries,
    queues,
    runtime,
    secrets,
    shipment_api,
)
from chalicelib.customer_import import RejectedBatch
from chalicelib.errors import BadRequest, NotFound, Unauthorized
from chalicelib.queues import QueueMessage
from chalicelib.runtime import services
from chalicelib.shipments import (
    Applied,
    Direction,
    IgnoredEvent,
    NoticeKind,
    Shipment,
    ShipmentEvent,
    Status,
    aftership_event,
    apply_event,
    easypost_event,
    read_csv,
    validate_batch,
)
from chalicelib.webhooks import verify_forewarn

FIXTURES = Path(__file__).parent / "fixtures" / "shipments"
NOW = datetime(2025, 11, 25, 12, 0, tzinfo=UTC)
EASYPOST_SECRET = "ep-whsec-ﬁnal"  # changes under NFKD, as EasyPost keys with it normalised
AFTERSHIP_SECRET = "as-whsec-0123456789"
RETURN_SECRET = "return-hook-secret"
USPS = "9400111899223197428490"
UPS = "1Z999AA10123456784"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- normalisation ---------------------------------------------------------------------------


def test_easypost_event_is_normalised_from_its_latest_scan() -> None:
    event = easypost_event(load("easypost_tracker_updated_in_transit"))
    assert event.provider == "easypost"
    assert event.event_id == "evt_3f2a9c1e54b611f0a1b2c3d4e5f60718"
    assert event.key == "easypost#evt_3f2a9c1e54b611f0a1b2c3d4e5f60718"
    assert event.tracking_code == USPS  # printed with spaces in the payload
    assert event.status is Status.IN_TRANSIT
    assert event.detail == "arrived_at_facility"
    assert event.occurred_at == at("2025-11-21T08:15:00Z")
    assert event.sent_at == at("2025-11-21T08:20:11Z")
    assert event.est_delivery == date(2025, 11, 24)
    assert event.carrier == "USPS"


def test_easypost_summary_keeps_no_names_places_or_carrier_messages() -> None:
    event = easypost_event(load("easypost_tracker_updated_delivered"))
    assert event.status is Status.DELIVERED
    kept = json.dumps(event.summary)
    for personal in ("TESTPERSON", "MADISON", "53703", "Front Door", "SPRINGFIELD"):
        assert personal not in kept
    assert event.summary["status"] == "delivered"
    assert event.summary["scans"] == 4


def test_easypost_failure_with_a_notice_left_is_a_failed_attempt() -> None:
    event = easypost_event(load("easypost_tracker_updated_failure_notice_left"))
    assert event.status is Status.ATTEMPT_FAILED
    assert event.occurred_at == at("2025-11-23T17:51:00Z")


def test_easypost_failure_without_an_attempt_is_an_exception() -> None:
    payload = load("easypost_tracker_updated_failure_notice_left")
    payload["result"]["tracking_details"][-1]["message"] = "Package damaged in transit"
    payload["result"]["status_detail"] = "damaged"
    event = easypost_event(payload)
    assert event.status is Status.EXCEPTION
    assert event.detail == "damaged"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("unknown", Status.UNKNOWN),
        ("pre_transit", Status.PRE_TRANSIT),
        ("in_transit", Status.IN_TRANSIT),
        ("out_for_delivery", Status.OUT_FOR_DELIVERY),
        ("delivered", Status.DELIVERED),
        ("available_for_pickup", Status.AVAILABLE_FOR_PICKUP),
        ("return_to_sender", Status.RETURN_TO_SENDER),
        ("cancelled", Status.CANCELLED),
        ("error", Status.UNKNOWN),
    ],
)
def test_every_easypost_tracker_status_maps_to_our_vocabulary(raw: str, status: Status) -> None:
    payload = load("easypost_tracker_updated_in_transit")
    payload["result"]["status"] = raw
    assert easypost_event(payload).status is status


def test_aftership_event_is_normalised_with_checkpoint_times_in_utc() -> None:
    event = aftership_event(load("aftership_tracking_update_in_transit"))
    assert event.provider == "aftership"
    assert event.event_id == "2f6c1d8e-7b3a-4c9e-9a51-0d4e8b6f2a17"
    assert event.tracking_code == UPS
    assert event.status is Status.IN_TRANSIT
    assert event.occurred_at == at("2025-11-20T22:20:00Z")  # 16:20 at UTC-6
    assert event.sent_at == at("2025-11-20T22:31:44Z")  # `ts`
    assert event.est_delivery == date(2025, 11, 24)
    assert event.carrier == "ups"


def test_aftership_summary_drops_the_customer_name_email_phone_and_locations() -> None:
    kept = json.dumps(aftership_event(load("aftership_tracking_update_in_transit")).summary)
    for personal in ("Alex Sample", "alex.sample@example.com", "+14155550100", "Dallas"):
        assert personal not in kept


@pytest.mark.parametrize(
    ("tag", "status"),
    [
        ("Pending", Status.UNKNOWN),
        ("InfoReceived", Status.PRE_TRANSIT),
        ("InTransit", Status.IN_TRANSIT),
        ("OutForDelivery", Status.OUT_FOR_DELIVERY),
        ("AttemptFail", Status.ATTEMPT_FAILED),
        ("Delivered", Status.DELIVERED),
        ("AvailableForPickup", Status.AVAILABLE_FOR_PICKUP),
        ("Exception", Status.EXCEPTION),
        ("Expired", Status.EXPIRED),
    ],
)
def test_every_aftership_tag_maps_to_our_vocabulary(tag: str, status: Status) -> None:
    payload = load("aftership_tracking_update_in_transit")
    payload["msg"]["tag"] = tag
    assert aftership_event(payload).status is status


def test_aftership_estimate_falls_back_to_the_legacy_expected_delivery() -> None:
    payload = load("aftership_tracking_update_in_transit")
    del payload["msg"]["latest_estimated_delivery"]
    del payload["msg"]["courier_estimated_delivery_date"]
    payload["msg"]["expected_delivery"] = "2025-11-26T18:00:00+00:00"
    assert aftership_event(payload).est_delivery == date(2025, 11, 26)


def test_signed_events_that_are_not_about_tracking_are_ignored() -> None:
    with pytest.raises(IgnoredEvent):
        easypost_event({"id": "evt_1", "description": "batch.created", "result": {}})
    with pytest.raises(IgnoredEvent):
        aftership_event({"event_id": "e-1", "event": "tracking_pending_time", "msg": {}})


@pytest.mark.parametrize(
    "change",
    [
        {"status": "teleported"},
        {"tracking_code": "x"},
        {"tracking_details": [], "updated_at": None},
    ],
)
def test_easypost_payloads_we_cannot_read_are_bad_requests(change: dict[str, Any]) -> None:
    payload = load("easypost_tracker_updated_in_transit")
    payload["result"].update(change)
    if "updated_at" in change:
        payload["created_at"] = payload["updated_at"] = None
    with pytest.raises(BadRequest):
        easypost_event(payload)


# --- ordering: never backwards -----------------------------------------------------------------


def shipment(**changes: Any) -> Shipment:
    base = Shipment(
        tracking_code=UPS,
        carrier="ups",
        customer_id="c0001",
        order_id="5512",
        direction=Direction.OUTBOUND,
        promised_date=date(2025, 11, 24),
    )
    return replace(base, **changes)


def event(
    status: Status,
    when: str,
    *,
    est: date | None = None,
    sent: str | None = None,
    event_id: str = "e",
    detail: str | None = None,
) -> ShipmentEvent:
    return ShipmentEvent(
        provider="aftership",
        event_id=event_id,
        tracking_code=UPS,
        status=status,
        detail=detail,
        occurred_at=at(when),
        est_delivery=est,
        carrier="ups",
        sent_at=at(sent) if sent else None,
    )


def step(current: Shipment, *events: ShipmentEvent) -> tuple[Shipment, list[Applied | None]]:
    results: list[Applied | None] = []
    for e in events:
        applied = apply_event(current, e, now=NOW)
        results.append(applied)
        if applied is not None:
            current = applied.shipment
    return current, results


def kinds(results: list[Applied | None]) -> list[str | None]:
    return [r.notice.kind.value if r and r.notice else None for r in results]


def test_a_late_older_event_never_moves_a_shipment_backwards() -> None:
    final, results = step(
        shipment(),
        event(Status.OUT_FOR_DELIVERY, "2025-11-24T08:00:00Z"),
        event(Status.IN_TRANSIT, "2025-11-22T10:00:00Z"),
    )
    assert results[1] is None
    assert final.status is Status.OUT_FOR_DELIVERY
    assert final.last_event_at == at("2025-11-24T08:00:00Z")


def test_a_newer_scan_of_lower_progress_keeps_the_status_but_updates_the_estimate() -> None:
    final, results = step(
        shipment(),
        event(Status.OUT_FOR_DELIVERY, "2025-11-24T08:00:00Z", est=date(2025, 11, 24)),
        event(Status.IN_TRANSIT, "2025-11-24T20:00:00Z", est=date(2025, 11, 26)),
    )
    assert results[1] is not None
    assert final.status is Status.OUT_FOR_DELIVERY
    assert final.est_delivery == date(2025, 11, 26)
    assert kinds(results) == ["shipment_out_for_delivery", "shipment_delayed"]


def test_a_failed_attempt_shows_without_lowering_progress_and_a_new_round_notifies_again() -> None:
    final, results = step(
        shipment(),
        event(Status.OUT_FOR_DELIVERY, "2025-11-24T08:00:00Z"),
        event(Status.ATTEMPT_FAILED, "2025-11-24T12:45:00Z"),
        event(Status.IN_TRANSIT, "2025-11-24T20:00:00Z"),
        event(Status.OUT_FOR_DELIVERY, "2025-11-25T08:00:00Z"),
    )
    assert kinds(results) == [
        "shipment_out_for_delivery",
        "shipment_attempt_failed",
        None,
        "shipment_out_for_delivery",
    ]
    assert final.rank == 3
    assert final.notice_counts == {"shipment_out_for_delivery": 2, "shipment_attempt_failed": 1}
    second = results[3]
    assert second is not None
    assert second.notice is not None
    assert second.notice.notice_id == f"shp_{UPS}_shipment_out_for_delivery_2"


def test_delivered_is_final_whatever_comes_after() -> None:
    final, results = step(
        shipment(),
        event(Status.DELIVERED, "2025-11-24T15:00:00Z"),
        event(Status.EXCEPTION, "2025-11-25T09:00:00Z"),
        event(Status.IN_TRANSIT, "2025-11-26T09:00:00Z", est=date(2025, 11, 30)),
    )
    assert final.status is Status.DELIVERED
    assert final.delivered_at == at("2025-11-24T15:00:00Z")
    assert kinds(results) == ["shipment_delivered", None, None]


def test_at_the_same_scan_time_more_progress_applies_and_less_does_not() -> None:
    _, results = step(
        shipment(),
        event(Status.IN_TRANSIT, "2025-11-24T08:00:00Z"),
        event(Status.OUT_FOR_DELIVERY, "2025-11-24T08:00:00Z"),
        event(Status.IN_TRANSIT, "2025-11-24T08:00:00Z"),
    )
    assert [r is not None for r in results] == [True, True, False]


def test_a_revised_estimate_about_the_same_scan_applies_only_if_sent_later() -> None:
    scan = "2025-11-22T10:00:00Z"
    final, results = step(
        shipment(),
        event(Status.IN_TRANSIT, scan, est=date(2025, 11, 24), sent="2025-11-22T10:05:00Z"),
        event(Status.IN_TRANSIT, scan, est=date(2025, 11, 27), sent="2025-11-23T09:00:00Z"),
        event(Status.IN_TRANSIT, scan, est=date(2025, 11, 25), sent="2025-11-22T18:00:00Z"),
    )
    assert [r is not None for r in results] == [True, True, False]
    assert final.est_delivery == date(2025, 11, 27)
    assert kinds(results) == [None, "shipment_delayed", None]


def test_the_same_event_applied_twice_is_stale_the_second_time() -> None:
    once = event(Status.OUT_FOR_DELIVERY, "2025-11-24T08:00:00Z", sent="2025-11-24T08:01:00Z")
    _, results = step(shipment(), once, once)
    assert results[1] is None


# --- which notice ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "before", "after", "kind"),
    [
        (
            Direction.OUTBOUND,
            Status.IN_TRANSIT,
            Status.OUT_FOR_DELIVERY,
            "shipment_out_for_delivery",
        ),
        (Direction.OUTBOUND, Status.OUT_FOR_DELIVERY, Status.DELIVERED, "shipment_delivered"),
        (
            Direction.OUTBOUND,
            Status.OUT_FOR_DELIVERY,
            Status.ATTEMPT_FAILED,
            "shipment_attempt_failed",
        ),
        (
            Direction.OUTBOUND,
            Status.IN_TRANSIT,
            Status.AVAILABLE_FOR_PICKUP,
            "shipment_available_for_pickup",
        ),
        (Direction.OUTBOUND, Status.IN_TRANSIT, Status.EXCEPTION, "shipment_delayed"),
        (Direction.OUTBOUND, Status.IN_TRANSIT, Status.RETURN_TO_SENDER, "shipment_delayed"),
        (Direction.OUTBOUND, Status.PRE_TRANSIT, Status.IN_TRANSIT, None),
        (Direction.OUTBOUND, Status.IN_TRANSIT, Status.IN_TRANSIT, None),
        (Direction.OUTBOUND, Status.IN_TRANSIT, Status.EXPIRED, None),
        (Direction.RETURN, Status.IN_TRANSIT, Status.DELIVERED, "return_received"),
        (Direction.RETURN, Status.IN_TRANSIT, Status.OUT_FOR_DELIVERY, None),
        (Direction.RETURN, Status.IN_TRANSIT, Status.EXCEPTION, None),
    ],
)
def test_each_change_triggers_its_notice_kind(
    direction: Direction, before: Status, after: Status, kind: str | None
) -> None:
    start = shipment(
        direction=direction,
        status=before,
        rank={Status.PRE_TRANSIT: 1, Status.IN_TRANSIT: 2, Status.OUT_FOR_DELIVERY: 3}[before],
        last_event_at=at("2025-11-22T10:00:00Z"),
    )
    applied = apply_event(start, event(after, "2025-11-23T10:00:00Z"), now=NOW)
    assert applied is not None
    assert (applied.notice.kind.value if applied.notice else None) == kind
    if kind:
        assert applied.notice is not None
        assert applied.notice.notice_id == f"shp_{UPS}_{kind}_1"


def test_only_a_delivered_return_asks_for_the_return_received_event() -> None:
    start = shipment(direction=Direction.RETURN, status=Status.IN_TRANSIT, rank=2)
    delivered = apply_event(start, event(Status.DELIVERED, "2025-11-23T10:00:00Z"), now=NOW)
    assert delivered is not None
    assert delivered.return_job == {
        "type": "return_received",
        "event_id": f"ret_{UPS}",
        "tracking_code": UPS,
    }
    assert sorted(delivered.jobs()) == [f"ret_{UPS}", f"shp_{UPS}_return_received_1"]
    outbound = apply_event(
        replace(start, direction=Direction.OUTBOUND),
        event(Status.DELIVERED, "2025-11-23T10:00:00Z"),
        now=NOW,
    )
    assert outbound is not None
    assert outbound.return_job is None


@pytest.mark.parametrize(
    ("promised", "previous", "new", "delayed"),
    [
        (date(2025, 11, 24), None, date(2025, 11, 26), True),  # later than promised
        (date(2025, 11, 24), None, date(2025, 11, 23), False),  # early
        (date(2025, 11, 24), date(2025, 11, 20), date(2025, 11, 22), False),  # within promise
        (date(2025, 11, 24), date(2025, 11, 26), date(2025, 11, 28), True),  # later again
        (None, date(2025, 11, 20), date(2025, 11, 21), True),  # no promise: the estimate
        (None, None, date(2025, 11, 21), False),  # nothing to be late against
    ],
)
def test_a_moved_estimate_is_a_delay_only_when_later_than_what_the_customer_was_told(
    promised: date | None, previous: date | None, new: date, delayed: bool
) -> None:
    start = shipment(
        promised_date=promised,
        est_delivery=previous,
        status=Status.IN_TRANSIT,
        rank=2,
        last_event_at=at("2025-11-19T10:00:00Z"),
    )
    applied = apply_event(start, event(Status.IN_TRANSIT, "2025-11-20T10:00:00Z", est=new), now=NOW)
    assert applied is not None
    assert (applied.notice is not None) is delayed


def test_a_notice_job_carries_what_the_templates_need_and_no_personal_data() -> None:
    applied = apply_event(
        shipment(status=Status.IN_TRANSIT, rank=2),
        event(Status.EXCEPTION, "2025-11-23T10:00:00Z", detail="Exception_004"),
        now=NOW,
    )
    assert applied is not None
    assert applied.notice is not None
    assert applied.notice.job == {
        "type": "notice",
        "notice_id": f"shp_{UPS}_shipment_delayed_1",
        "kind": "shipment_delayed",
        "customer_id": "c0001",
        "tracking_code": UPS,
        "order_id": "5512",
        "carrier": "ups",
        "status": "exception",
        "reason": "customs clearance",
        "est_delivery": None,
        "promised_date": "2025-11-24",
        "event_at": "2025-11-23T10:00:00Z",
    }


# --- registry rows -----------------------------------------------------------------------------


def test_a_valid_row_is_normalised() -> None:
    valid, rejected = validate_batch(
        [
            {
                "tracking_code": " 1z999aa1 0123456784 ",
                "carrier": "UPS",
                "customer_id": "c0001",
                "order_id": "5512",
                "direction": "Return",
                "promised_date": "2025-11-24",
            }
        ],
        {"c0001"}.__contains__,
    )
    assert rejected == []
    assert valid[0][1].tracking_code == UPS
    assert valid[0][1].direction is Direction.RETURN
    assert valid[0][1].promised_date == date(2025, 11, 24)


def test_a_bad_row_is_reported_whole_with_every_problem() -> None:
    _, rejected = validate_batch(
        [
            {
                "tracking_code": "no!",
                "carrier": "UPS",
                "customer_id": "c-ghost",
                "direction": "sideways",
                "promised_date": "24/11/2025",
                "promised": "x",
            }
        ],
        lambda customer_id: False,
    )
    fields = sorted(error.field for error in rejected[0].errors)
    assert fields == [
        "customer_id",
        "direction",
        "order_id",
        "promised",
        "promised_date",
        "tracking_code",
    ]
    messages = " ".join(error.message for error in rejected[0].errors)
    assert "did you mean 'promised_date'" in messages
    assert "no customer 'c-ghost'" in messages
    assert "2025-11-23" in messages


def test_a_tracking_code_repeated_in_a_batch_is_rejected_after_its_first_row() -> None:
    row = {
        "tracking_code": UPS,
        "carrier": "ups",
        "customer_id": "c0001",
        "order_id": "1",
        "direction": "outbound",
    }
    valid, rejected = validate_batch([row, dict(row, order_id="2")], {"c0001"}.__contains__)
    assert [number for number, _ in valid] == [1]
    assert rejected[0].row == 2
    assert "more than once" in rejected[0].errors[0].message


def test_a_batch_over_500_rows_is_refused() -> None:
    with pytest.raises(BadRequest, match="at most 500"):
        validate_batch([{}] * 501, lambda c: True)


def test_the_csv_reader_keeps_file_lines_and_drops_empty_cells() -> None:
    text = (
        "\ufefftracking_code,carrier,customer_id,order_id,direction,promised_date\n"
        f"{UPS},ups,c0001,5512,outbound,2025-11-24\n"
        "\n"
        f"{USPS},usps,c0002,5513,return,\n"
    )
    assert read_csv(text) == [
        (
            2,
            {
                "tracking_code": UPS,
                "carrier": "ups",
                "customer_id": "c0001",
                "order_id": "5512",
                "direction": "outbound",
                "promised_date": "2025-11-24",
            },
        ),
        (
            4,
            {
                "tracking_code": USPS,
                "carrier": "usps",
                "customer_id": "c0002",
                "order_id": "5513",
                "direction": "return",
            },
        ),
    ]


def test_the_csv_reader_names_missing_and_unknown_columns() -> None:
    with pytest.raises(BadRequest) as caught:
        read_csv("tracking_code,carrier,customer,order_id\n")
    assert "unknown column(s): 'customer'" in caught.value.message
    assert "missing required column(s): customer_id, direction" in caught.value.message


# --- on the local stack: the registry ----------------------------------------------------------


@dataclass
class Env:
    topic_arn: str
    sms_before: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    aws.client("secretsmanager").put_secret_value(
        SecretId="forewarn/test/webhooks",
        SecretString=json.dumps(
            {
                "easypost": EASYPOST_SECRET,
                "aftership": AFTERSHIP_SECRET,
                "return_webhook": RETURN_SECRET,
            }
        ),
    )
    topic_arn = aws.client("sns").create_topic(Name="forewarn-test-returns")["TopicArn"]
    monkeypatch.setenv("RETURNS_TOPIC_ARN", topic_arn)
    runtime.reset()
    secrets.reset()
    yield Env(topic_arn)
    secrets.reset()


def register(
    code: str,
    *,
    index: int = 1,
    direction: str = "outbound",
    promised: str | None = "2025-11-24",
    carrier: str = "usps",
    channels_: tuple[str, ...] = ("sms",),
) -> dict[str, Any]:
    store = services().store
    store.upsert_customer(customer(index, channels=channels_))
    row = {
        "tracking_code": code,
        "carrier": carrier,
        "customer_id": f"c{index:04d}",
        "order_id": "5512",
        "direction": direction,
    }
    if promised:
        row["promised_date"] = promised
    return shipment_api.import_shipments(store, {"shipments": [row]})


def test_import_creates_then_leaves_unchanged_then_updates(env: Env) -> None:
    assert register(UPS)["created"] == 1
    assert register(UPS)["unchanged"] == 1
    assert register(UPS, promised="2025-11-28")["updated"] == 1
    shown = shipment_api.get_shipment(services().store, UPS.lower())
    assert shown["promised_date"] == "2025-11-28"
    assert shown["status"] == "unknown"
    assert shown["customer_id"] == "c0001"


def test_import_reports_a_row_for_an_unknown_customer_and_writes_the_others(env: Env) -> None:
    services().store.upsert_customer(customer(1))
    report = shipment_api.import_shipments(
        services().store,
        {
            "shipments": [
                {
                    "tracking_code": UPS,
                    "carrier": "ups",
                    "customer_id": "c0001",
                    "order_id": "1",
                    "direction": "outbound",
                },
                {
                    "tracking_code": USPS,
                    "carrier": "usps",
                    "customer_id": "c0404",
                    "order_id": "2",
                    "direction": "return",
                },
            ]
        },
    )
    assert (report["created"], len(report["rejected"])) == (1, 1)
    assert report["rejected"][0]["row"] == 2
    assert report["rejected"][0]["tracking_code"] == USPS
    assert report["rejected"][0]["errors"][0]["field"] == "customer_id"
    with pytest.raises(NotFound):
        shipment_api.get_shipment(services().store, USPS)


def test_import_where_every_row_is_bad_writes_nothing_and_says_why(env: Env) -> None:
    with pytest.raises(RejectedBatch) as caught:
        shipment_api.import_shipments(services().store, {"shipments": [{"carrier": "ups"}]})
    assert caught.value.status == 422
    assert caught.value.details is not None
    assert caught.value.details["rejected"][0]["row"] == 1


def test_import_needs_a_shipments_list(env: Env) -> None:
    with pytest.raises(BadRequest, match="shipments"):
        shipment_api.import_shipments(services().store, {"customers": []})


def test_a_customers_shipments_are_listed_newest_first(env: Env) -> None:
    register(UPS)
    register(USPS)
    listed = shipment_api.customer_shipments(services().store, "c0001")
    assert [s["tracking_code"] for s in listed["shipments"]] == [USPS, UPS]
    with pytest.raises(NotFound, match="no customer"):
        shipment_api.customer_shipments(services().store, "c9999")


# --- on the local stack: webhooks --------------------------------------------------------------


def easypost_body(name: str, **result: Any) -> bytes:
    payload = load(name)
    event_id = result.pop("event_id", None)
    if event_id:
        payload["id"] = event_id
    payload["result"].update(result)
    return json.dumps(payload).encode()


def easypost_headers(body: bytes, secret: str = EASYPOST_SECRET) -> dict[str, str]:
    key = unicodedata.normalize("NFKD", secret).encode()
    # API Gateway lower-cases header names.
    return {"x-hmac-signature": "hmac-sha256-hex=" + hmac.new(key, body, "sha256").hexdigest()}


def aftership_headers(body: bytes) -> dict[str, str]:
    digest = hmac.new(AFTERSHIP_SECRET.encode(), body, hashlib.sha256).digest()
    return {"aftership-hmac-sha256": base64.b64encode(digest).decode()}


def post_easypost(body: bytes) -> dict[str, Any]:
    return shipment_api.receive_easypost(services(), body, easypost_headers(body))


def out_for_delivery_body(event_id: str = "evt_ofd_1") -> bytes:
    payload = load("easypost_tracker_updated_delivered")
    payload["id"] = event_id
    payload["result"]["status"] = "out_for_delivery"
    payload["result"]["tracking_details"] = payload["result"]["tracking_details"][:3]
    return json.dumps(payload).encode()


def receive(queue_name: str) -> list[QueueMessage]:
    sqs, url = aws.client("sqs"), queues.queue_url(queue_name)
    found: list[QueueMessage] = []
    while True:
        response = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=60,
            AttributeNames=["ApproximateReceiveCount"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return found
        found.extend(
            QueueMessage(
                m["MessageId"],
                m["Body"],
                m["ReceiptHandle"],
                int(m["Attributes"]["ApproximateReceiveCount"]),
            )
            for m in messages
        )


def notice_messages() -> list[QueueMessage]:
    return receive(services().settings.names.notice_queue)


def jobs(messages: list[QueueMessage]) -> list[dict[str, Any]]:
    return [json.loads(m.body) for m in messages]


def work(messages: list[QueueMessage]) -> list[str]:
    """Run the worker as Lambda would: delete what succeeded, leave what failed."""
    failed = customer_notices.handle_batch(services(), messages)
    sqs, url = aws.client("sqs"), queues.queue_url(services().settings.names.notice_queue)
    for message in messages:
        if message.message_id not in failed:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message.receipt_handle)
    return failed


def sms_texts(stack: Stack) -> list[str]:
    return [m["message"] for m in stack.delivered()["sms"]]


def test_a_signed_event_moves_the_shipment_and_queues_its_notice(env: Env) -> None:
    register(USPS)
    first = post_easypost(easypost_body("easypost_tracker_updated_in_transit"))
    assert first["status"] == "applied"
    assert first["jobs"] == []  # in transit, on time: nothing to say
    second = post_easypost(out_for_delivery_body())
    assert second == {
        "status": "applied",
        "event_id": "evt_ofd_1",
        "tracking_code": USPS,
        "shipment_status": "out_for_delivery",
        "jobs": [f"shp_{USPS}_shipment_out_for_delivery_1"],
    }
    assert [j["kind"] for j in jobs(notice_messages())] == ["shipment_out_for_delivery"]
    shown = shipment_api.get_shipment(services().store, USPS)
    assert shown["status"] == "out_for_delivery"
    assert shown["pending_jobs"] == []
    assert shown["est_delivery"] == "2025-11-23"


def test_a_replayed_event_is_acknowledged_and_sends_nothing_twice(env: Env) -> None:
    register(USPS)
    body = out_for_delivery_body()
    assert post_easypost(body)["status"] == "applied"
    assert post_easypost(body)["status"] == "duplicate"
    assert len(notice_messages()) == 1


def test_a_late_older_event_is_stale_and_changes_nothing(env: Env) -> None:
    register(USPS)
    assert post_easypost(easypost_body("easypost_tracker_updated_delivered"))["status"] == "applied"
    late = post_easypost(easypost_body("easypost_tracker_updated_in_transit"))
    assert late["status"] == "stale"
    assert late["shipment_status"] == "delivered"
    assert shipment_api.get_shipment(services().store, USPS)["status"] == "delivered"
    assert [j["kind"] for j in jobs(notice_messages())] == ["shipment_delivered"]


def test_a_forged_event_is_refused_and_changes_nothing(env: Env) -> None:
    register(USPS)
    body = out_for_delivery_body()
    with pytest.raises(Unauthorized):
        shipment_api.receive_easypost(services(), body, easypost_headers(body, "guessed"))
    tampered = body.replace(b"out_for_delivery", b"delivered", 1)
    with pytest.raises(Unauthorized):
        shipment_api.receive_easypost(services(), tampered, easypost_headers(body))
    with pytest.raises(Unauthorized):
        shipment_api.receive_easypost(services(), body, {})
    assert shipment_api.get_shipment(services().store, USPS)["status"] == "unknown"
    assert not shipment_api.shipment_store(services().store).event_seen("easypost#evt_ofd_1")
    assert notice_messages() == []


def test_a_signed_body_that_is_not_json_is_a_bad_request(env: Env) -> None:
    body = b"{not json"
    with pytest.raises(BadRequest, match="not valid JSON"):
        shipment_api.receive_easypost(services(), body, easypost_headers(body))


def test_an_unknown_tracking_code_is_acknowledged_and_recorded(env: Env) -> None:
    body = out_for_delivery_body()
    assert post_easypost(body)["status"] == "unknown_tracking"
    recorded = shipment_api.shipment_store(services().store).get_event("easypost#evt_ofd_1")
    assert recorded is not None
    assert recorded["outcome"] == "unknown_tracking"
    assert recorded["tracking_code"] == USPS
    # Kept 30 days (the table's TTL), long past any provider's retry window.
    assert 29 * 86400 < recorded["expires_at"] - time.time() <= 30 * 86400
    assert post_easypost(body)["status"] == "duplicate"


def test_a_signed_event_of_another_kind_is_acknowledged_as_ignored(env: Env) -> None:
    body = json.dumps({"id": "evt_9", "description": "batch.created", "result": {}}).encode()
    assert post_easypost(body)["status"] == "ignored"


def test_a_crash_after_the_shipment_update_loses_no_notice(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(USPS)
    body = out_for_delivery_body()
    real_enqueue = customer_notices.enqueue

    def queue_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("SQS unreachable")

    monkeypatch.setattr(customer_notices, "enqueue", queue_down)
    with pytest.raises(ConnectionError):
        post_easypost(body)
    shown = shipment_api.get_shipment(services().store, USPS)
    assert shown["status"] == "out_for_delivery"
    assert shown["pending_jobs"] == [f"shp_{USPS}_shipment_out_for_delivery_1"]
    assert not shipment_api.shipment_store(services().store).event_seen("easypost#evt_ofd_1")

    monkeypatch.setattr(customer_notices, "enqueue", real_enqueue)
    retried = post_easypost(body)  # the provider retries after our 5xx
    assert retried["status"] == "stale"
    assert [j["notice_id"] for j in jobs(notice_messages())] == [
        f"shp_{USPS}_shipment_out_for_delivery_1"
    ]
    assert shipment_api.get_shipment(services().store, USPS)["pending_jobs"] == []
    assert post_easypost(body)["status"] == "duplicate"


def test_an_aftership_failed_attempt_queues_the_next_steps_notice(env: Env) -> None:
    register(UPS, carrier="ups")
    body = (FIXTURES / "aftership_tracking_update_attempt_fail.json").read_bytes()
    result = shipment_api.receive_aftership(services(), body, aftership_headers(body))
    assert result["status"] == "applied"
    assert result["shipment_status"] == "attempt_failed"
    (job,) = jobs(notice_messages())
    assert job["kind"] == "shipment_attempt_failed"
    assert job["reason"] == "nobody was available to receive it"
    with pytest.raises(Unauthorized):
        shipment_api.receive_aftership(services(), body, easypost_headers(body))


# --- on the local stack: the notice worker -----------------------------------------------------


def test_the_worker_claims_sends_and_settles_a_notice_once(env: Env, stack: Stack) -> None:
    register(USPS)
    post_easypost(out_for_delivery_body())
    messages = notice_messages()
    assert work(messages) == []
    (text,) = sms_texts(stack)
    assert "order 5512 is out for delivery with USPS today, Sun 23 Nov" in text
    notice_id = f"shp_{USPS}_shipment_out_for_delivery_1"
    (row,) = services().store.deliveries(notice_id)
    assert (row["status"], row["customer_id"], row["channel"]) == ("sent", "c0001", "sms")
    # Per-customer notices settle without touching the broadcasts table.
    scanned = aws.client("dynamodb").scan(TableName=services().settings.names.broadcasts)
    assert scanned["Count"] == 0

    customer_notices.enqueue(services().settings, jobs(messages))  # a duplicate job
    assert work(notice_messages()) == []
    assert len(sms_texts(stack)) == 1


def test_an_email_customer_gets_a_subject_text_and_html(env: Env, stack: Stack) -> None:
    register(USPS, channels_=("email", "sms"))
    post_easypost(easypost_body("easypost_tracker_updated_delivered"))
    assert work(notice_messages()) == []
    (raw,) = [m["raw_data"] for m in stack.delivered()["email"]]
    assert "Subject: Your order 5512 was delivered" in raw
    assert "text/html" in raw
    assert sms_texts(stack) == []


def test_a_transient_send_error_is_retried_and_the_notice_sent_once(
    env: Env, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(USPS)
    post_easypost(out_for_delivery_body())
    messages = notice_messages()
    real_send = channels.send_sms
    calls: list[str] = []

    def throttled_once(phone: str, text: str) -> str:
        calls.append(phone)
        if len(calls) == 1:
            raise channels.TransientSendError("Throttling")
        return real_send(phone, text)

    monkeypatch.setattr(channels, "send_sms", throttled_once)
    assert work(messages) == [messages[0].message_id]
    notice_id = f"shp_{USPS}_shipment_out_for_delivery_1"
    assert [r["status"] for r in services().store.deliveries(notice_id)] == ["retry"]
    assert work(messages) == []  # SQS redelivers the same message
    assert work(messages) == []  # and once more, as a duplicate
    assert len(calls) == 2
    assert len(sms_texts(stack)) == 1
    assert [r["status"] for r in services().store.deliveries(notice_id)] == ["sent"]


def test_a_permanent_send_error_settles_the_notice_failed_with_its_reason(
    env: Env, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(USPS)
    post_easypost(out_for_delivery_body())

    def rejected(phone: str, text: str) -> str:
        raise channels.PermanentSendError("InvalidParameter: not a mobile number")

    monkeypatch.setattr(channels, "send_sms", rejected)
    assert work(notice_messages()) == []
    (row,) = services().store.deliveries(f"shp_{USPS}_shipment_out_for_delivery_1")
    assert row["status"] == "failed"
    assert row["reason"] == "InvalidParameter: not a mobile number"


def test_a_customer_who_texted_stop_gets_no_parcel_notice_and_it_is_counted_suppressed(
    env: Env, stack: Stack
) -> None:
    from chalicelib.domain import Channel
    from chalicelib.suppressions import Suppressions

    register(USPS)
    Suppressions(services().settings.names).suppress(
        Channel.SMS, "+14155550001", reason="texted STOP"
    )
    post_easypost(out_for_delivery_body())
    assert work(notice_messages()) == []
    assert sms_texts(stack) == []
    (row,) = services().store.deliveries(f"shp_{USPS}_shipment_out_for_delivery_1")
    assert (row["status"], row["reason"]) == ("suppressed", "suppressed: texted STOP")


def test_a_notice_for_an_unknown_customer_is_dropped_not_retried(env: Env, stack: Stack) -> None:
    notice_id = f"shp_{USPS}_shipment_delivered_1"
    job: dict[str, Any] = {
        "type": "notice",
        "notice_id": notice_id,
        "kind": "shipment_delivered",
        "customer_id": "c0404",
        "tracking_code": USPS,
        "order_id": "5512",
        "carrier": "usps",
        "status": "delivered",
        "reason": "",
        "est_delivery": None,
        "promised_date": None,
        "event_at": "2025-11-23T15:42:00Z",
    }
    customer_notices.enqueue(services().settings, [job])
    assert work(notice_messages()) == []
    assert sms_texts(stack) == []
    assert list(services().store.deliveries(notice_id)) == []


def test_a_malformed_job_is_reported_failed_so_it_reaches_the_dead_letter_queue(env: Env) -> None:
    customer_notices.enqueue(services().settings, [{"type": "notice", "kind": "nonsense"}])
    messages = notice_messages()
    assert work(messages) == [messages[0].message_id]


def test_without_quiet_hours_a_notice_goes_at_any_hour() -> None:
    assert customer_notices.defer_until(customer(1), NoticeKind.DELIVERED, NOW, None) is None


def test_a_parcel_notice_due_at_night_waits_for_the_end_of_the_customers_quiet_hours(
    env: Env, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib import runtime

    monkeypatch.setenv("QUIET_HOURS", "21:00-08:00")
    runtime.reset()
    register(USPS)  # the customer lives in Europe/Berlin
    post_easypost(out_for_delivery_body())
    job = customer_notices.NoticeJob.from_dict(json.loads(notice_messages()[0].body))
    night = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    result = customer_notices.deliver_notice(services(), job, now=night)
    assert (result.outcome, result.not_before) == (
        deliveries.Outcome.DEFERRED,
        datetime(2026, 11, 24, 7, 0, tzinfo=UTC),  # 08:00 in Berlin
    )
    morning = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    assert customer_notices.deliver_notice(services(), job, now=morning).outcome is (
        deliveries.Outcome.SENT
    )
    assert len(sms_texts(stack)) == 1


def test_a_deferred_notice_is_held_not_sent_and_not_claimed(
    env: Env, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(USPS)
    post_easypost(out_for_delivery_body())
    monkeypatch.setattr(
        customer_notices, "defer_until", lambda c, kind, now, quiet: now + timedelta(hours=7)
    )
    messages = notice_messages()
    assert work(messages) == [messages[0].message_id]
    assert sms_texts(stack) == []
    assert list(services().store.deliveries(f"shp_{USPS}_shipment_out_for_delivery_1")) == []


# --- on the local stack: return.received -------------------------------------------------------


def listen(topic_arn: str) -> str:
    """An SQS queue subscribed to the topic, as billing would subscribe."""
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="billing-listener")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    aws.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return "billing-listener"


def published(listener: str) -> list[dict[str, Any]]:
    return [json.loads(json.loads(m.body)["Message"]) for m in receive(listener)]


def test_a_delivered_return_tells_billing_once_and_the_customer_nothing_is_owed(
    env: Env, stack: Stack
) -> None:
    listener = listen(env.topic_arn)
    register(USPS, direction="return")
    body = easypost_body("easypost_tracker_updated_delivered")
    assert post_easypost(body)["jobs"] == [f"ret_{USPS}", f"shp_{USPS}_return_received_1"]
    messages = notice_messages()
    assert work(messages) == []

    assert published(listener) == [
        {
            "type": "return.received",
            "event_id": f"ret_{USPS}",
            "tracking_code": USPS,
            "order_id": "5512",
            "customer_id": "c0001",
            "carrier": "usps",
            "received_at": "2025-11-23T15:42:00Z",
        }
    ]
    (text,) = sms_texts(stack)
    assert "we received your return of order 5512 on Sun 23 Nov. Nothing more is owed" in text

    # The carrier replays the event, and the queue delivers the jobs again: nothing repeats.
    assert post_easypost(body)["status"] == "duplicate"
    customer_notices.enqueue(services().settings, jobs(messages))
    assert work(notice_messages()) == []
    assert published(listener) == []
    assert len(sms_texts(stack)) == 1
    assert shipment_api.get_shipment(services().store, USPS)["return_published_at"]


def test_a_return_event_waits_rather_than_being_lost_when_the_topic_is_unset(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(USPS, direction="return")
    post_easypost(easypost_body("easypost_tracker_updated_delivered"))
    monkeypatch.delenv("RETURNS_TOPIC_ARN")
    runtime.reset()
    returns = [m for m in notice_messages() if json.loads(m.body)["type"] == "return_received"]
    assert work(returns) == [returns[0].message_id]
    assert shipment_api.get_shipment(services().store, USPS)["return_published_at"] is None


@dataclass
class Partner:
    url: str
    statuses: list[int]
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def partner() -> Iterator[Partner]:
    """A local HTTP server standing in for billing's webhook endpoint."""
    state = Partner(url="", statuses=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(state.statuses.pop(0) if state.statuses else 204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/returns"
    yield state
    server.shutdown()
    server.server_close()


def test_a_delivered_return_is_posted_signed_to_the_partner_and_retried_until_accepted(
    env: Env, partner: Partner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RETURN_WEBHOOK_URL", partner.url)
    runtime.reset()
    listener = listen(env.topic_arn)
    register(USPS, direction="return")
    post_easypost(easypost_body("easypost_tracker_updated_delivered"))
    returns = [m for m in notice_messages() if json.loads(m.body)["type"] == "return_received"]

    partner.statuses = [500]
    assert work(returns) == [returns[0].message_id]
    assert "HTTP 500" in caplog.text
    assert RETURN_SECRET not in caplog.text
    assert work(returns) == []  # the retry

    assert len(published(listener)) == 1  # SNS once, although the message ran twice
    assert len(partner.received) == 2
    headers, body = partner.received[-1]
    verify_forewarn(body, headers, RETURN_SECRET)
    assert json.loads(body)["event_id"] == f"ret_{USPS}"
    assert headers["x-forewarn-event-id"] == f"ret_{USPS}"
    shown = shipment_api.get_shipment(services().store, USPS)
    assert shown["return_webhook_at"]
    assert shown["return_published_at"]

    assert work(returns) == []  # a duplicate after success posts nothing
    assert len(partner.received) == 2


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_import_posts_the_rows_and_reports_each_rejected_row_by_file_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from forewarn_cli.client import ApiClient, ApiError
    from forewarn_cli.shipments_command import shipments

    csv_file = tmp_path / "shipments.csv"
    csv_file.write_text(
        "tracking_code,carrier,customer_id,order_id,direction,promised_date\n"
        f"{UPS},ups,c0001,5512,outbound,2025-11-24\n"
        "\n"
        f"{USPS},usps,c0404,5513,return,\n"
    )
    posted: list[tuple[str, Any]] = []

    def post(self: ApiClient, path: str, body: Any = None) -> Any:
        posted.append((path, body))
        raise ApiError(
            422,
            "unprocessable",
            "all rows were rejected",
            {
                "created": 0,
                "updated": 0,
                "unchanged": 1,
                "rejected": [
                    {
                        "row": 2,
                        "tracking_code": USPS,
                        "errors": [{"field": "customer_id", "message": "no customer 'c0404'"}],
                    }
                ],
            },
        )

    monkeypatch.setattr(ApiClient, "post", post)
    result = CliRunner().invoke(
        shipments, ["import", str(csv_file)], obj={"api_url": "http://api", "token": "t"}
    )
    assert result.exit_code == 1
    assert posted[0][0] == "/api/shipments"
    assert [row["tracking_code"] for row in posted[0][1]["shipments"]] == [UPS, USPS]
    assert f"line 4 ({USPS}): customer_id: no customer 'c0404'" in result.output
    assert "0 created, 0 updated, 1 unchanged, 1 rejected" in result.output


def test_cli_show_prints_the_shipment(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from forewarn_cli.client import ApiClient
    from forewarn_cli.shipments_command import shipments

    asked: list[str] = []

    def get(self: ApiClient, path: str) -> Any:
        asked.append(path)
        return {
            **shipment(status=Status.DELIVERED).to_dict(),
            "pending_jobs": [],
            "return_published_at": None,
            "return_webhook_at": None,
        }

    monkeypatch.setattr(ApiClient, "get", get)
    result = CliRunner().invoke(
        shipments, ["show", UPS], obj={"api_url": "http://api", "token": "t"}
    )
    assert result.exit_code == 0, result.output
    assert asked == [f"/api/shipments/{UPS}"]
    assert "delivered" in result.output
    assert "c0001" in result.output
