"""What the shipment routes call: the registry import, one shipment, and the carrier webhooks.

A carrier webhook is acknowledged (2xx) whenever retrying it could not change the outcome:
applied, a duplicate, stale (older than what we know), an unknown tracking code (recorded),
or a signed event that is not about tracking. It fails only when the request is not
genuine (401, nothing changed), not JSON or not the provider's shape (400), or when we could
not finish (5xx): the provider then retries, and every step is safe to repeat (see
chalicelib/shipment_store.py).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from chalicelib import customer_notices, lanes, shipments, webhooks
from chalicelib.broadcasts import Services
from chalicelib.customer_import import RejectedBatch
from chalicelib.customers import FieldError
from chalicelib.domain import utcnow
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.shipment_store import ShipmentRecord, ShipmentStore
from chalicelib.shipments import ShipmentEvent, ShipmentRowError
from chalicelib.store import Store

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1_000_000
# Version conflicts mean another event for the same parcel landed in between; a few
# re-reads settle it, more would mean something is wrong.
MAX_APPLY_ATTEMPTS = 5


def shipment_store(store: Store) -> ShipmentStore:
    """The shipment tables on the same DynamoDB client as `store`."""
    return ShipmentStore(store.names, store.db)


# --- registry --------------------------------------------------------------------------------


def import_shipments(
    store: Store, payload: object, *, now: datetime | None = None
) -> dict[str, Any]:
    """Upsert a batch `{"shipments": [...]}` (≤ 500). Each bad row is reported whole, with
    every problem; the valid rows are written. Importing the same rows again changes nothing.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("shipments"), list):
        raise BadRequest('request body must be {"shipments": [...]}')
    rows: list[object] = payload["shipments"]
    if len(rows) > shipments.MAX_BATCH:
        raise BadRequest(
            f"a batch may hold at most {shipments.MAX_BATCH} shipments, got {len(rows)};"
            " split it into smaller batches"
        )
    shipping = shipment_store(store)
    known = shipping.existing_customers(
        str(row["customer_id"]).strip()
        for row in rows
        if isinstance(row, Mapping) and isinstance(row.get("customer_id"), str)
    )
    valid, rejected = shipments.validate_batch(rows, known.__contains__)
    outcomes: Counter[str] = Counter()
    moment = now or utcnow()
    for number, shipment in valid:
        try:
            outcomes[shipping.upsert(shipment, now=moment)] += 1
        except Conflict as exc:
            rejected.append(
                ShipmentRowError(
                    number, shipment.tracking_code, (FieldError("tracking_code", exc.message),)
                )
            )
    result = {
        "created": outcomes["created"],
        "updated": outcomes["updated"],
        "unchanged": outcomes["unchanged"],
        "rejected": [r.to_dict() for r in sorted(rejected, key=lambda r: r.row)],
    }
    if rows and not valid:
        raise RejectedBatch(result)
    return result


def get_shipment(store: Store, tracking_code: str) -> dict[str, Any]:
    """One shipment for ops: registry fields, status, notices sent so far, unsent jobs."""
    code = shipments.normalise_tracking_code(tracking_code)
    record = shipment_store(store).get(code)
    if record is None:
        raise NotFound(f"no shipment {code[:40]}")
    return record.to_dict()


def customer_shipments(store: Store, customer_id: str) -> dict[str, Any]:
    """A customer's shipments, most recently changed first (for agents and ops)."""
    if store.get_customer(customer_id) is None:
        raise NotFound(f"no customer {customer_id[:64]}")
    found = shipment_store(store).for_customer(customer_id)
    return {"customer_id": customer_id, "shipments": [s.to_dict() for s in found]}


# --- webhooks --------------------------------------------------------------------------------


def receive_easypost(
    services: Services, raw_body: bytes, headers: Mapping[str, str]
) -> dict[str, Any]:
    return _receive(
        services,
        raw_body,
        headers,
        secret_name=webhooks.EASYPOST,
        verify=webhooks.verify_easypost,
        normalise=shipments.easypost_event,
    )


def receive_aftership(
    services: Services, raw_body: bytes, headers: Mapping[str, str]
) -> dict[str, Any]:
    return _receive(
        services,
        raw_body,
        headers,
        secret_name=webhooks.AFTERSHIP,
        verify=webhooks.verify_aftership,
        normalise=shipments.aftership_event,
    )


def _receive(
    services: Services,
    raw_body: bytes,
    headers: Mapping[str, str],
    *,
    secret_name: str,
    verify: Callable[[bytes, Mapping[str, str], str], None],
    normalise: Callable[[object], ShipmentEvent],
) -> dict[str, Any]:
    if len(raw_body) > MAX_WEBHOOK_BYTES:
        raise BadRequest(f"request body is larger than {MAX_WEBHOOK_BYTES} bytes")
    # The signature covers the exact bytes received; nothing is parsed before it holds.
    verify(raw_body, headers, webhooks.signing_secret(secret_name))
    try:
        payload = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON") from None
    try:
        event = normalise(payload)
    except shipments.IgnoredEvent as ignored:
        return {"status": "ignored", "reason": ignored.reason}
    return process_event(services, event)


def process_event(
    services: Services, event: ShipmentEvent, *, now: datetime | None = None
) -> dict[str, Any]:
    """Apply one normalised carrier event, exactly once in effect."""
    moment = now or utcnow()
    shipping = shipment_store(services.store)
    reply: dict[str, Any] = {"event_id": event.event_id, "tracking_code": event.tracking_code}
    if shipping.event_seen(event.key):
        return {"status": "duplicate", **reply}
    outcome, jobs_sent = "stale", list[str]()
    for _ in range(MAX_APPLY_ATTEMPTS):
        record = shipping.get(event.tracking_code)
        if record is None:
            shipping.record_event(
                event.key,
                outcome="unknown_tracking",
                tracking_code=event.tracking_code,
                summary=event.summary,
                now=moment,
            )
            log.info("event %s is for a tracking code not in the registry", event.key)
            return {"status": "unknown_tracking", **reply}
        applied = shipments.apply_event(record.shipment, event, now=moment)
        if applied is None:
            break
        jobs = applied.jobs()
        counted = lanes.tally(
            services.store.names.signals, record.shipment, applied.shipment, moment
        )
        if shipping.save_applied(record, applied.shipment, jobs, event_key=event.key, also=counted):
            outcome, jobs_sent = "applied", sorted(jobs)
            record = ShipmentRecord(
                applied.shipment,
                record.version + 1,
                {**record.pending, **jobs},
                record.return_published_at,
                record.return_webhook_at,
            )
            break
    else:
        raise Conflict(f"shipment {event.tracking_code} keeps changing; retry the event")
    flush_pending(services, shipping, record)
    shipping.record_event(
        event.key,
        outcome=outcome,
        tracking_code=event.tracking_code,
        summary=event.summary,
        now=moment,
    )
    return {
        "status": outcome,
        **reply,
        "shipment_status": record.shipment.status.value,
        "jobs": jobs_sent,
    }


def flush_pending(services: Services, shipping: ShipmentStore, record: ShipmentRecord) -> None:
    """Send the shipment's unsent jobs to the notice queue, then forget them."""
    if not record.pending:
        return
    customer_notices.enqueue(services.settings, list(record.pending.values()))
    shipping.clear_pending(record.shipment.tracking_code, list(record.pending))
