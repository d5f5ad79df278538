"""Shipments: the registry rows, carrier events in one vocabulary, and which notice they call for.

Nothing here talks to AWS. EasyPost and AfterShip payloads become `ShipmentEvent`s with one
status vocabulary; `apply_event` decides whether an event moves a shipment (never backwards)
and which per-customer notice, if any, it triggers. Notice ids derive from the shipment and
a per-kind counter kept on the shipment, so a replayed event can never produce a second id.

Ordering. An event's time is its latest carrier scan (EasyPost `tracking_details[].datetime`,
AfterShip `checkpoints[].checkpoint_time`), not when the webhook arrived: providers retry and
reorder deliveries, so a webhook sent yesterday can arrive after today's. An event is applied
only when its latest scan is newer than the shipment's; at the same scan time, a higher
progress or a later notification of the same scan (a revised estimate) still counts.
Progress has a rank (pre_transit < in_transit < out_for_delivery < available_for_pickup <
delivered); exceptions, failed attempts, return to sender and the like carry no rank and
never lower it; and delivered is final — the story behind this module is a returned phone
the carrier showed delivered while the customer was still billed for it.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from chalicelib.customers import CUSTOMER_ID, FieldError, _postal_code, _slug
from chalicelib.errors import BadRequest

MAX_BATCH = 500


class Direction(StrEnum):
    OUTBOUND = "outbound"
    RETURN = "return"


class Status(StrEnum):
    UNKNOWN = "unknown"
    PRE_TRANSIT = "pre_transit"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    AVAILABLE_FOR_PICKUP = "available_for_pickup"
    DELIVERED = "delivered"
    ATTEMPT_FAILED = "attempt_failed"
    EXCEPTION = "exception"
    RETURN_TO_SENDER = "return_to_sender"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# How far along a shipment is. Statuses missing here are events, not progress: they are
# shown while they are the latest news but never lower the rank.
RANK: dict[Status, int] = {
    Status.UNKNOWN: 0,
    Status.PRE_TRANSIT: 1,
    Status.IN_TRANSIT: 2,
    Status.OUT_FOR_DELIVERY: 3,
    Status.AVAILABLE_FOR_PICKUP: 4,
    Status.DELIVERED: 5,
}


class NoticeKind(StrEnum):
    DELAYED = "shipment_delayed"
    OUT_FOR_DELIVERY = "shipment_out_for_delivery"
    DELIVERED = "shipment_delivered"
    ATTEMPT_FAILED = "shipment_attempt_failed"
    AVAILABLE_FOR_PICKUP = "shipment_available_for_pickup"
    RETURN_RECEIVED = "return_received"


# The notice an outbound shipment's customer gets when it enters a status.
_NOTICE_ON_STATUS: dict[Status, NoticeKind] = {
    Status.OUT_FOR_DELIVERY: NoticeKind.OUT_FOR_DELIVERY,
    Status.DELIVERED: NoticeKind.DELIVERED,
    Status.ATTEMPT_FAILED: NoticeKind.ATTEMPT_FAILED,
    Status.AVAILABLE_FOR_PICKUP: NoticeKind.AVAILABLE_FOR_PICKUP,
    Status.EXCEPTION: NoticeKind.DELAYED,
    Status.RETURN_TO_SENDER: NoticeKind.DELAYED,
}

RETURN_EVENT_TYPE = "return.received"
NOTICE_JOB = "notice"
RETURN_JOB = "return_received"


# --- values ----------------------------------------------------------------------------------


def iso_time(moment: datetime) -> str:
    """UTC, second precision, `Z`: stored times compare correctly as strings too."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time (or a Unix timestamp); naive times are taken as UTC."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC).replace(microsecond=0)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        # Carriers without a known place report UTC (EasyPost says so); AfterShip's local
        # checkpoint times without an offset are rare and at worst hours off.
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def parse_day(value: object) -> date | None:
    """The calendar date of `2025-11-23` or of a time such as `2025-11-23T18:00:00-05:00`.

    An estimate is a day where the parcel is delivered, so the date is taken as written,
    not converted to UTC (which would move a late-evening estimate to the next day).
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not re.match(r"\d{4}-\d{2}-\d{2}(?:$|[T ])", text) or parse_time(text[:10]) is None:
        return None
    if len(text) > 10 and parse_time(text) is None:
        return None
    return date.fromisoformat(text[:10])


@dataclass(frozen=True)
class Shipment:
    tracking_code: str
    carrier: str
    customer_id: str
    order_id: str
    direction: Direction
    promised_date: date | None = None
    # Where the parcel goes, for lanes (a carrier and an area); both optional.
    region: str = ""
    postal_code: str = ""
    status: Status = Status.UNKNOWN
    est_delivery: date | None = None
    last_event_at: datetime | None = None
    updated_at: str = ""
    # Bookkeeping for ordering and notices (see the module docstring).
    rank: int = 0
    status_detail: str | None = None
    last_sent_at: datetime | None = None
    delivered_at: datetime | None = None
    notice_counts: Mapping[str, int] = field(default_factory=dict)

    def registry_fields(self) -> dict[str, Any]:
        """What an import sets; everything else comes from carrier events."""
        return {
            "tracking_code": self.tracking_code,
            "carrier": self.carrier,
            "customer_id": self.customer_id,
            "order_id": self.order_id,
            "direction": self.direction.value,
            "promised_date": self.promised_date.isoformat() if self.promised_date else None,
            "region": self.region or None,
            "postal_code": self.postal_code or None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.registry_fields(),
            "status": self.status.value,
            "status_detail": self.status_detail,
            "rank": self.rank,
            "est_delivery": self.est_delivery.isoformat() if self.est_delivery else None,
            "last_event_at": iso_time(self.last_event_at) if self.last_event_at else None,
            "last_sent_at": iso_time(self.last_sent_at) if self.last_sent_at else None,
            "delivered_at": iso_time(self.delivered_at) if self.delivered_at else None,
            "notice_counts": dict(self.notice_counts),
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Shipment:
        """Rebuild a shipment that was validated before it was stored."""
        return cls(
            tracking_code=str(data["tracking_code"]),
            carrier=str(data.get("carrier") or ""),
            customer_id=str(data["customer_id"]),
            order_id=str(data.get("order_id") or ""),
            direction=Direction(str(data.get("direction") or Direction.OUTBOUND.value)),
            promised_date=parse_day(data.get("promised_date")),
            region=str(data.get("region") or ""),
            postal_code=str(data.get("postal_code") or ""),
            status=Status(str(data.get("status") or Status.UNKNOWN.value)),
            est_delivery=parse_day(data.get("est_delivery")),
            last_event_at=parse_time(data.get("last_event_at")),
            updated_at=str(data.get("updated_at") or ""),
            rank=int(data.get("rank") or 0),
            status_detail=data.get("status_detail") or None,
            last_sent_at=parse_time(data.get("last_sent_at")),
            delivered_at=parse_time(data.get("delivered_at")),
            notice_counts={str(k): int(v) for k, v in (data.get("notice_counts") or {}).items()},
        )


@dataclass(frozen=True)
class ShipmentEvent:
    provider: str
    event_id: str
    tracking_code: str
    status: Status
    detail: str | None
    occurred_at: datetime
    est_delivery: date | None
    carrier: str | None
    # When the provider produced this notification; orders events about the same scan.
    sent_at: datetime | None = None
    # The provider's own words for the status and what we kept of the payload: no names,
    # addresses, signatures, carrier messages or locations (they can identify a person).
    summary: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.provider}#{self.event_id}"

    @property
    def rank(self) -> int | None:
        return RANK.get(self.status)


class IgnoredEvent(Exception):
    """A well-formed, signed event that is not about a shipment (e.g. EasyPost `batch.created`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- tracking codes --------------------------------------------------------------------------

_TRACKING_CODE = re.compile(r"[A-Z0-9][A-Z0-9-]{4,39}")


def normalise_tracking_code(value: str) -> str:
    """Carriers print codes with spaces and in either case; we key on one form."""
    return re.sub(r"\s+", "", value).upper()


# --- EasyPost --------------------------------------------------------------------------------

_EASYPOST_STATUS: dict[str, Status] = {
    "unknown": Status.UNKNOWN,
    "pre_transit": Status.PRE_TRANSIT,
    "in_transit": Status.IN_TRANSIT,
    "out_for_delivery": Status.OUT_FOR_DELIVERY,
    "delivered": Status.DELIVERED,
    "available_for_pickup": Status.AVAILABLE_FOR_PICKUP,
    "return_to_sender": Status.RETURN_TO_SENDER,
    "failure": Status.EXCEPTION,
    "cancelled": Status.CANCELLED,
    # EasyPost could not track the code at all: nothing a customer should hear about.
    "error": Status.UNKNOWN,
}
_EASYPOST_TRACKER_EVENTS = frozenset({"tracker.created", "tracker.updated"})


def easypost_event(payload: object) -> ShipmentEvent:
    """Normalise an EasyPost Event (`tracker.created` / `tracker.updated`)."""
    data = _object(payload, "body")
    description = str(data.get("description") or "")
    if description not in _EASYPOST_TRACKER_EVENTS:
        raise IgnoredEvent(f"EasyPost event {description or '(no description)'} is not tracking")
    event_id = _required_str(data, "id", "event")
    tracker = _object(data.get("result"), "result")
    tracking_code = _tracking_code(tracker.get("tracking_code"), "result.tracking_code")
    raw_status = str(tracker.get("status") or "unknown")
    status = _EASYPOST_STATUS.get(raw_status)
    if status is None:
        raise BadRequest(
            f"result.status {raw_status[:40]!r} is not an EasyPost tracker status; "
            f"expected one of {', '.join(_EASYPOST_STATUS)}"
        )
    detail = _short(tracker.get("status_detail"))
    details = [d for d in _list(tracker.get("tracking_details")) if isinstance(d, Mapping)]
    scans = [t for t in (parse_time(d.get("datetime")) for d in details) if t is not None]
    if status is Status.EXCEPTION and _easypost_attempt(detail, details):
        status = Status.ATTEMPT_FAILED
    sent_at = parse_time(data.get("updated_at")) or parse_time(data.get("created_at"))
    occurred_at = max(scans) if scans else parse_time(tracker.get("updated_at")) or sent_at
    if occurred_at is None:
        raise BadRequest("the event has no time: no tracking_details[].datetime or updated_at")
    carrier = _short(tracker.get("carrier"))
    return ShipmentEvent(
        provider="easypost",
        event_id=event_id,
        tracking_code=tracking_code,
        status=status,
        detail=detail,
        occurred_at=occurred_at,
        est_delivery=parse_day(tracker.get("est_delivery_date")),
        carrier=carrier,
        sent_at=sent_at,
        summary={
            "provider": "easypost",
            "event": description,
            "status": raw_status,
            "status_detail": detail,
            "carrier": carrier,
            "scans": len(details),
            "latest_scan_at": iso_time(occurred_at),
        },
    )


def _easypost_attempt(detail: str | None, details: Sequence[Mapping[str, Any]]) -> bool:
    # EasyPost reports a missed delivery as `failure`; only the detail or the carrier's
    # message tells a missed attempt (worth a "we'll try again" notice) from a lost parcel.
    words = [detail or ""]
    if details:
        latest = max(details, key=lambda d: iso_time(parse_time(d.get("datetime")) or _EPOCH))
        words += [str(latest.get("status_detail") or ""), str(latest.get("message") or "")]
    text = " ".join(words).lower()
    return "attempt" in text or "notice left" in text


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- AfterShip -------------------------------------------------------------------------------

_AFTERSHIP_TAG: dict[str, Status] = {
    "Pending": Status.UNKNOWN,
    "InfoReceived": Status.PRE_TRANSIT,
    "InTransit": Status.IN_TRANSIT,
    "OutForDelivery": Status.OUT_FOR_DELIVERY,
    "AttemptFail": Status.ATTEMPT_FAILED,
    "Delivered": Status.DELIVERED,
    "AvailableForPickup": Status.AVAILABLE_FOR_PICKUP,
    "Exception": Status.EXCEPTION,
    "Expired": Status.EXPIRED,
}


def aftership_event(payload: object) -> ShipmentEvent:
    """Normalise an AfterShip webhook (`tracking_update`, `edd_revise`, ...)."""
    data = _object(payload, "body")
    event_id = _required_str(data, "event_id", "event")
    message = data.get("msg")
    if not isinstance(message, Mapping) or "tracking_number" not in message:
        raise IgnoredEvent(f"AfterShip event {str(data.get('event'))[:40]!r} is not tracking")
    tracking_code = _tracking_code(message.get("tracking_number"), "msg.tracking_number")
    tag = str(message.get("tag") or "Pending")
    status = _AFTERSHIP_TAG.get(tag)
    if status is None:
        raise BadRequest(
            f"msg.tag {tag[:40]!r} is not an AfterShip tag; expected one of "
            f"{', '.join(_AFTERSHIP_TAG)}"
        )
    checkpoints = [c for c in _list(message.get("checkpoints")) if isinstance(c, Mapping)]
    scans = [t for t in (parse_time(c.get("checkpoint_time")) for c in checkpoints) if t]
    sent_at = parse_time(data.get("ts"))
    occurred_at = max(scans) if scans else parse_time(message.get("updated_at")) or sent_at
    if occurred_at is None:
        raise BadRequest("the event has no time: no msg.checkpoints[].checkpoint_time or ts")
    subtag = _short(message.get("subtag"))
    carrier = _short(message.get("slug"))
    return ShipmentEvent(
        provider="aftership",
        event_id=event_id,
        tracking_code=tracking_code,
        status=status,
        detail=subtag,
        occurred_at=occurred_at,
        est_delivery=_aftership_estimate(message),
        carrier=carrier,
        sent_at=sent_at,
        summary={
            "provider": "aftership",
            "event": _short(data.get("event")),
            "status": tag,
            "status_detail": subtag,
            "carrier": carrier,
            "scans": len(checkpoints),
            "latest_scan_at": iso_time(occurred_at),
        },
    )


def _aftership_estimate(message: Mapping[str, Any]) -> date | None:
    # Newest API versions first; `expected_delivery` is the legacy (v4) field.
    latest = message.get("latest_estimated_delivery")
    if isinstance(latest, Mapping):
        found = parse_day(latest.get("datetime")) or parse_day(latest.get("datetime_max"))
        if found:
            return found
    for name in ("courier_estimated_delivery_date", "aftership_estimated_delivery_date"):
        block = message.get(name)
        if isinstance(block, Mapping):
            found = parse_day(block.get("estimated_delivery_date"))
            if found:
                return found
    return parse_day(message.get("expected_delivery"))


# --- applying an event -----------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """One per-customer notice an applied event calls for, with everything it needs."""

    notice_id: str
    kind: NoticeKind
    job: dict[str, Any]


@dataclass(frozen=True)
class Applied:
    shipment: Shipment
    notice: Notice | None
    # Set when a return is first delivered: the `return.received` job for billing.
    return_job: dict[str, Any] | None = None

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The queue jobs to send, by a deterministic id (the dedup key downstream)."""
        found: dict[str, dict[str, Any]] = {}
        if self.notice:
            found[self.notice.notice_id] = self.notice.job
        if self.return_job:
            found[str(self.return_job["event_id"])] = self.return_job
        return found


def is_newer(event: ShipmentEvent, shipment: Shipment) -> bool:
    """Whether `event` is later news than what the shipment already reflects."""
    if shipment.last_event_at is None:
        return True
    if event.occurred_at != shipment.last_event_at:
        return event.occurred_at > shipment.last_event_at
    rank = event.rank
    if rank is not None and rank > shipment.rank:
        return True
    return (
        event.sent_at is not None
        and shipment.last_sent_at is not None
        and event.sent_at > shipment.last_sent_at
    )


def apply_event(shipment: Shipment, event: ShipmentEvent, *, now: datetime) -> Applied | None:
    """The shipment after `event`, and the notice it triggers; None when the event is stale."""
    if not is_newer(event, shipment):
        return None
    status, rank, detail = shipment.status, shipment.rank, shipment.status_detail
    if shipment.status is not Status.DELIVERED:
        event_rank = event.rank
        if event_rank is None:
            status, detail = event.status, event.detail
        elif event_rank >= shipment.rank:
            status, rank, detail = event.status, event_rank, event.detail
    after = replace(
        shipment,
        status=status,
        rank=rank,
        status_detail=detail,
        est_delivery=event.est_delivery or shipment.est_delivery,
        last_event_at=event.occurred_at,
        last_sent_at=event.sent_at or shipment.last_sent_at,
        delivered_at=(
            event.occurred_at
            if status is Status.DELIVERED and shipment.status is not Status.DELIVERED
            else shipment.delivered_at
        ),
        carrier=shipment.carrier or (event.carrier or ""),
        updated_at=iso_time(now),
    )
    kind = notice_kind(shipment, after)
    notice: Notice | None = None
    if kind is not None:
        counts = {**after.notice_counts, kind.value: after.notice_counts.get(kind.value, 0) + 1}
        after = replace(after, notice_counts=counts)
        notice_id = make_notice_id(after.tracking_code, kind, counts[kind.value])
        notice = Notice(notice_id, kind, notice_job(after, kind, notice_id, event))
    return_job = None
    if (
        after.direction is Direction.RETURN
        and after.status is Status.DELIVERED
        and shipment.status is not Status.DELIVERED
    ):
        return_job = {
            "type": RETURN_JOB,
            "event_id": return_event_id(after.tracking_code),
            "tracking_code": after.tracking_code,
        }
    return Applied(after, notice, return_job)


def notice_kind(before: Shipment, after: Shipment) -> NoticeKind | None:
    """Which notice the change from `before` to `after` calls for, if any.

    Only changes are news: a second "in transit" says nothing, a second "out for delivery"
    after a failed attempt does. Returns tell the customer one thing: we have it.
    """
    if after.direction is Direction.RETURN:
        if after.status is Status.DELIVERED and before.status is not Status.DELIVERED:
            return NoticeKind.RETURN_RECEIVED
        return None
    if after.status is not before.status and after.status in _NOTICE_ON_STATUS:
        return _NOTICE_ON_STATUS[after.status]
    if after.status is Status.DELIVERED:
        return None
    if _moved_later(before, after):
        return NoticeKind.DELAYED
    return None


def _moved_later(before: Shipment, after: Shipment) -> bool:
    # Late against what the customer was last told: the promise, or a previous estimate
    # if that was later still. An estimate moving within the promise is not a delay.
    if after.est_delivery is None or after.est_delivery == before.est_delivery:
        return False
    known = [d for d in (before.promised_date, before.est_delivery) if d is not None]
    return bool(known) and after.est_delivery > max(known)


# --- lanes -----------------------------------------------------------------------------------

# Statuses after which a parcel is no longer awaited: a lane's trouble cannot reach it.
_SETTLED = frozenset({Status.DELIVERED, Status.CANCELLED, Status.EXPIRED})
_TROUBLE = frozenset({Status.EXCEPTION, Status.ATTEMPT_FAILED, Status.RETURN_TO_SENDER})
# Without a region, parcels group by the first characters of the postal code: a US ZIP3 is
# one sorting centre, where carrier disruptions usually sit.
POSTAL_PREFIX_LENGTH = 3


_CARRIER_NAMES = {
    "usps": "USPS",
    "ups": "UPS",
    "fedex": "FedEx",
    "dhl": "DHL",
    "dhl-express": "DHL Express",
    "royal-mail": "Royal Mail",
    "canada-post": "Canada Post",
    "la-poste-colissimo": "Colissimo",
    "dpd": "DPD",
    "gls": "GLS",
}


def carrier_name(carrier: str) -> str:
    if not carrier:
        return "the carrier"
    return _CARRIER_NAMES.get(carrier.lower(), carrier)


def lane_of(shipment: Shipment) -> str | None:
    """`lane:<carrier>:<area>`, the series a parcel's troubles count in (None without a
    carrier); the area is the registry's region, else a postal prefix, else `all`."""
    carrier = re.sub(r"[^a-z0-9]+", "-", shipment.carrier.lower()).strip("-")
    if not carrier:
        return None
    if shipment.region:
        area = shipment.region
    elif shipment.postal_code:
        prefix = re.sub(r"[^A-Z0-9]", "", shipment.postal_code)[:POSTAL_PREFIX_LENGTH]
        area = f"zip-{prefix.lower()}"
    else:
        area = "all"
    return f"lane:{carrier}:{area}"


def awaited(shipment: Shipment) -> bool:
    """An outbound parcel its customer is still waiting for."""
    return shipment.direction is Direction.OUTBOUND and shipment.status not in _SETTLED


def is_disruption(before: Shipment, after: Shipment) -> bool:
    """The change is trouble on the way: an exception, a failed attempt, a return to the
    sender, or the estimate moving past what the customer was told."""
    if after.status in _TROUBLE:
        return after.status is not before.status
    return after.status is not Status.DELIVERED and _moved_later(before, after)


def make_notice_id(tracking_code: str, kind: NoticeKind, n: int) -> str:
    return f"shp_{tracking_code}_{kind.value}_{n}"


def return_event_id(tracking_code: str) -> str:
    return f"ret_{tracking_code}"


def notice_job(
    shipment: Shipment, kind: NoticeKind, notice_id: str, event: ShipmentEvent
) -> dict[str, Any]:
    """The queue message for one notice: ids and the few facts the templates show."""
    return {
        "type": NOTICE_JOB,
        "notice_id": notice_id,
        "kind": kind.value,
        "customer_id": shipment.customer_id,
        "tracking_code": shipment.tracking_code,
        "order_id": shipment.order_id,
        "carrier": shipment.carrier,
        "status": shipment.status.value,
        "reason": reason_phrase(event.provider, shipment.status, shipment.status_detail),
        "est_delivery": shipment.est_delivery.isoformat() if shipment.est_delivery else None,
        "promised_date": shipment.promised_date.isoformat() if shipment.promised_date else None,
        "event_at": iso_time(event.occurred_at),
    }


def return_received_event(shipment: Shipment) -> dict[str, Any]:
    """The outbound `return.received` event billing listens to."""
    received = shipment.delivered_at or shipment.last_event_at
    return {
        "type": RETURN_EVENT_TYPE,
        "event_id": return_event_id(shipment.tracking_code),
        "tracking_code": shipment.tracking_code,
        "order_id": shipment.order_id,
        "customer_id": shipment.customer_id,
        "carrier": shipment.carrier,
        "received_at": iso_time(received) if received else None,
    }


# Provider details we can put in words without quoting the carrier (whose messages can name
# people and places). Unknown details say nothing rather than something wrong.
_REASONS: dict[str, str] = {
    "weather_delay": "bad weather",
    "delayed": "a delay in the carrier's network",
    "transit_exception": "a problem in transit",
    "delivery_exception": "a delivery problem",
    "address_correction": "the address needs checking",
    "damaged": "the parcel was damaged",
    "lost": "the carrier cannot find the parcel",
    "held": "the parcel is held by the carrier",
    "missorted": "the parcel was mis-sorted",
    "refused": "delivery was refused",
    "Exception_002": "the recipient has moved",
    "Exception_003": "delivery was refused",
    "Exception_004": "customs clearance",
    "Exception_005": "circumstances outside the carrier's control",
    "AttemptFail_002": "nobody was available to receive it",
    "AttemptFail_003": "the business was closed",
}


def reason_phrase(provider: str, status: Status, detail: str | None) -> str:
    if status is Status.RETURN_TO_SENDER:
        return "the parcel is being returned to us"
    return _REASONS.get(detail or "", "")


# --- registry rows ---------------------------------------------------------------------------

SHIPMENT_FIELDS = ("tracking_code", "carrier", "customer_id", "order_id", "direction")
OPTIONAL_FIELDS = ("promised_date", "region", "postal_code")
CSV_COLUMNS: tuple[str, ...] = (*SHIPMENT_FIELDS, *OPTIONAL_FIELDS)

_ORDER_ID = re.compile(r"[A-Za-z0-9_.#/-]{1,64}")
_CARRIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.&-]{0,39}")


@dataclass(frozen=True)
class ShipmentRowError:
    row: int
    tracking_code: str | None
    errors: tuple[FieldError, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "row": self.row,
            "tracking_code": self.tracking_code,
            "errors": [error.to_dict() for error in self.errors],
        }


def validate_row(raw: object, customer_exists: Callable[[str], bool]) -> Shipment:
    """The shipment `raw` describes, or InvalidShipment listing every problem in it."""
    if not isinstance(raw, Mapping):
        raise InvalidShipment([FieldError("shipment", "a shipment must be an object")])
    errors: list[FieldError] = []
    for key in raw:
        if key not in CSV_COLUMNS:
            guess = difflib.get_close_matches(str(key), CSV_COLUMNS, n=1)
            hint = f"did you mean {guess[0]!r}?" if guess else f"allowed: {', '.join(CSV_COLUMNS)}"
            errors.append(FieldError(str(key), f"unknown field {str(key)!r}; {hint}"))
    values = {name: _text(raw.get(name), name, errors) for name in CSV_COLUMNS}
    tracking_code = normalise_tracking_code(values["tracking_code"] or "")
    if values["tracking_code"] is not None and not _TRACKING_CODE.fullmatch(tracking_code):
        errors.append(
            FieldError(
                "tracking_code",
                f"tracking_code {_shown(values['tracking_code'])} must be 5-40 letters, digits"
                " or '-' (spaces are ignored)",
            )
        )
    carrier = values["carrier"]
    if carrier is not None and not _CARRIER.fullmatch(carrier):
        errors.append(
            FieldError("carrier", f"carrier {_shown(carrier)} must be 1-40 letters or digits")
        )
    customer_id = values["customer_id"]
    if customer_id is not None:
        if not CUSTOMER_ID.fullmatch(customer_id):
            errors.append(
                FieldError("customer_id", f"customer_id {_shown(customer_id)} is not a valid id")
            )
        elif not customer_exists(customer_id):
            errors.append(
                FieldError(
                    "customer_id",
                    f"no customer {customer_id!r}; import the customer before their shipments",
                )
            )
    order_id = values["order_id"]
    if order_id is not None and not _ORDER_ID.fullmatch(order_id):
        errors.append(
            FieldError(
                "order_id",
                f"order_id {_shown(order_id)} must be 1-64 letters, digits or _ . # / -",
            )
        )
    direction: Direction | None = None
    if values["direction"] is not None:
        try:
            direction = Direction(values["direction"].lower())
        except ValueError:
            errors.append(
                FieldError(
                    "direction",
                    f"direction {_shown(values['direction'])} must be outbound or return",
                )
            )
    promised: date | None = None
    if values["promised_date"] is not None:
        promised = _iso_date(values["promised_date"])
        if promised is None:
            errors.append(
                FieldError(
                    "promised_date",
                    f"promised_date {_shown(values['promised_date'])} must be an ISO date"
                    " such as 2025-11-23",
                )
            )
    region = _slug(values["region"], "region", errors) if values["region"] else None
    postal_code = (
        _postal_code(values["postal_code"], "postal_code", errors)
        if values["postal_code"]
        else None
    )
    for name in SHIPMENT_FIELDS:
        if values[name] is None and not any(e.field == name for e in errors):
            errors.append(FieldError(name, f"{name} is required"))
    if errors or direction is None:
        raise InvalidShipment(errors)
    return Shipment(
        tracking_code=tracking_code,
        carrier=carrier or "",
        customer_id=customer_id or "",
        order_id=order_id or "",
        direction=direction,
        promised_date=promised,
        region=region or "",
        postal_code=postal_code or "",
    )


class InvalidShipment(Exception):
    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(error.message for error in self.errors))


def validate_batch(
    rows: Sequence[object], customer_exists: Callable[[str], bool]
) -> tuple[list[tuple[int, Shipment]], list[ShipmentRowError]]:
    """(row number, shipment) for each valid row and every problem of each bad row."""
    if len(rows) > MAX_BATCH:
        raise BadRequest(
            f"a batch may hold at most {MAX_BATCH} shipments, got {len(rows)};"
            " split it into smaller batches"
        )
    valid: list[tuple[int, Shipment]] = []
    rejected: list[ShipmentRowError] = []
    seen: set[str] = set()
    for number, raw in enumerate(rows, start=1):
        code = _row_code(raw)
        errors: list[FieldError] = []
        shipment: Shipment | None = None
        try:
            shipment = validate_row(raw, customer_exists)
        except InvalidShipment as invalid:
            errors.extend(invalid.errors)
        if code is not None:
            if code in seen:
                errors.append(
                    FieldError(
                        "tracking_code",
                        f"tracking_code {code!r} appears more than once in this batch;"
                        " only its first row is considered",
                    )
                )
            seen.add(code)
        if errors or shipment is None:
            rejected.append(ShipmentRowError(number, code, tuple(errors)))
        else:
            valid.append((number, shipment))
    return valid, rejected


def _row_code(raw: object) -> str | None:
    value = raw.get("tracking_code") if isinstance(raw, Mapping) else None
    if not isinstance(value, str):
        return None
    code = normalise_tracking_code(value)
    return code if _TRACKING_CODE.fullmatch(code) else None


def read_csv(text: str) -> list[tuple[int, dict[str, object]]]:
    """(file line, JSON-shaped row) for each record of a shipments CSV file with a header."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    rows: list[tuple[int, dict[str, object]]] = []
    header: list[str] | None = None
    end = 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = _csv_header(cells)
                continue
            if any(cell.strip() for cell in cells[len(header) :]):
                raise BadRequest(
                    f"CSV line {start} has {len(cells)} cells but the header names"
                    f" {len(header)} columns; quote cells that contain commas"
                )
            rows.append(
                (
                    start,
                    {
                        column: cell.strip()
                        for column, cell in zip(header, cells, strict=False)
                        if cell.strip()
                    },
                )
            )
    except csv.Error as error:
        raise BadRequest(f"CSV line {reader.line_num}: {error}") from None
    if header is None:
        raise BadRequest(f"the CSV file is empty; it needs a header line: {','.join(CSV_COLUMNS)}")
    return rows


def _csv_header(cells: list[str]) -> list[str]:
    names = [cell.strip().lower() for cell in cells]
    while names and not names[-1]:
        names.pop()
    unknown = [name for name in names if name not in CSV_COLUMNS]
    missing = [name for name in SHIPMENT_FIELDS if name not in names]
    repeated = sorted({name for name in names if names.count(name) > 1})
    problems = []
    if unknown:
        problems.append(f"unknown column(s): {', '.join(map(repr, unknown))}")
    if repeated:
        problems.append(f"repeated column(s): {', '.join(map(repr, repeated))}")
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    if problems:
        raise BadRequest(
            f"CSV header: {'; '.join(problems)}. The columns are: {','.join(CSV_COLUMNS)}"
        )
    return names


# --- small helpers ---------------------------------------------------------------------------


def _object(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadRequest(f"{name} must be a JSON object")
    return value


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _required_str(data: Mapping[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise BadRequest(f"the {what} needs {key!r}: a string of 1-128 characters")
    return value.strip()


def _tracking_code(value: object, name: str) -> str:
    code = normalise_tracking_code(value) if isinstance(value, str) else ""
    if not _TRACKING_CODE.fullmatch(code):
        raise BadRequest(f"{name} must be a tracking code of 5-40 letters, digits or '-'")
    return code


def _short(value: object, limit: int = 64) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:limit]


def _text(value: object, name: str, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError(name, f"{name} must be a string"))
        return None
    return value.strip() or None


def _iso_date(text: str) -> date | None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
