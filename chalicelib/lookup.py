"""Customer lookup for contact-center agents and the IVR: who is calling, what is broken for
them right now, and everything we have already told them.

`find_customer` takes what the caller gives: a customer id, a phone number (E.164 or a
national format such as "(415) 555-0101", read as `DEFAULT_PHONE_REGION`) or an email
address (any case). Phones and emails are normalised with the checks the customer import
applies (phonenumbers, email-validator), then found through the sparse GSIs `by-phone` and
`by-email` of the customers table. The query is personal data: nothing here logs it, and no
error message repeats it.

`customer_overview` assembles what the agent sees, all of it read with key lookups and
queries: the customer, the unresolved incidents that affect them (their subscriptions match
the incident's services and regions as an audience selector would, or they are in the
incident's frozen audience), every ledger row of theirs (broadcast notices and shipment
notices share the delivery ledger) newest first, and their latest shipments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from chalicelib.customers import CUSTOMER_ID, e164
from chalicelib.domain import AudienceSelector, Broadcast, Customer, Incident, iso, utcnow
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.shipments import NoticeKind, Shipment
from chalicelib.store import Item, Store, email_key

__all__ = [
    "DEFAULT_PHONE_REGION",
    "NOTICE_LIMIT",
    "SHIPMENT_LIMIT",
    "customer_overview",
    "find_customer",
]

# How a phone number typed without a country code is read (the demo base is North American).
DEFAULT_PHONE_REGION = "US"
# Longest query taken: an email address is at most 254 characters.
MAX_QUERY_LENGTH = 254
# Customers sharing one phone or email that a lookup lists before giving up.
MAX_MATCHES = 10
# Notices shown, newest first; and ledger rows read to find them (a bound on one lookup).
NOTICE_LIMIT = 100
LEDGER_READ_LIMIT = 1000
SHIPMENT_LIMIT = 5

# What a typed phone number may look like: digits and the separators people put between
# them, optionally after "+"; letters (extensions, words) are not a phone number.
_PHONE_LIKE = re.compile(r"\+?[0-9 ().-]+")
_MIN_PHONE_DIGITS = 7
_SHIPMENT_PREFIX = "shp_"
_HIDDEN_SHIPMENT_FIELDS = ("rank", "notice_counts", "last_sent_at")


# --- finding the caller ------------------------------------------------------------------------


def find_customer(
    store: Store, query: str, *, default_region: str = DEFAULT_PHONE_REGION
) -> Customer:
    """The customer `query` names: a customer id, a phone number or an email address.

    BadRequest when the query is empty or none of the three; NotFound when it is well
    formed but nobody has it; Conflict (code `ambiguous`, the candidates' ids in `details`)
    when several customers share the phone number or address.
    """
    text = query.strip() if isinstance(query, str) else ""
    if not text:
        raise BadRequest("give a customer id, a phone number or an email address")
    if len(text) > MAX_QUERY_LENGTH:
        raise BadRequest(
            f"a lookup is at most {MAX_QUERY_LENGTH} characters: a customer id,"
            " a phone number or an email address"
        )
    if "@" in text:
        return _by_email(store, text)
    id_shaped = bool(CUSTOMER_ID.fullmatch(text))
    if id_shaped:
        customer = store.get_customer(text)
        if customer is not None:
            return customer
    if _PHONE_LIKE.fullmatch(text) and sum(c.isdigit() for c in text) >= _MIN_PHONE_DIGITS:
        phone = normalise_phone(text, default_region)
        if phone is not None:
            return _by_phone(store, phone)
        if not id_shaped:
            raise BadRequest(
                "that is not a valid phone number: give it with its country code"
                " (e.g. +1 415 555 0101) or as a national number"
            )
    if id_shaped:
        raise NotFound("no customer with that id")
    raise BadRequest("a lookup is a customer id, a phone number or an email address")


def normalise_phone(text: str, default_region: str = DEFAULT_PHONE_REGION) -> str | None:
    """The E.164 form of a phone number, as the customer import stores it; None when it is
    not a valid number. A number without "+" is read in `default_region`."""
    return e164(text, default_region)[0]


def normalise_email(text: str) -> str | None:
    """An address as the customer import normalises it; None when it is not valid."""
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def _by_phone(store: Store, phone: str) -> Customer:
    ids = store.customer_ids_by_phone(phone, limit=MAX_MATCHES)
    # The index is eventually consistent: keep only customers whose record still says so.
    found = [c for c in store.get_customers(ids).values() if c.phone == phone]
    return _one(found, "no customer with that phone number", "that phone number")


def _by_email(store: Store, text: str) -> Customer:
    email = normalise_email(text)
    if email is None:
        raise BadRequest("that is not a valid email address")
    ids = store.customer_ids_by_email(email, limit=MAX_MATCHES)
    key = email_key(email)
    found = [c for c in store.get_customers(ids).values() if email_key(c.email) == key]
    return _one(found, "no customer with that email address", "that email address")


def _one(found: Sequence[Customer], missing: str, what: str) -> Customer:
    if not found:
        raise NotFound(missing)
    if len(found) > 1:
        ids = sorted(c.customer_id for c in found)
        raise Conflict(
            f"{len(ids)} customers share {what}; look one up by customer id",
            code="ambiguous",
            details={"customer_ids": ids},
        )
    return found[0]


# --- what the agent sees -----------------------------------------------------------------------


def customer_overview(
    store: Store, customer_id: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """The customer, their active incidents, the notices they were sent (newest first, at
    most NOTICE_LIMIT) and their latest shipments, ready for JSON."""
    customer = store.get_customer(customer_id)
    if customer is None:
        raise NotFound("no customer with that id")
    moment = now or utcnow()
    notices, more_notices = _notices(store, customer.customer_id)
    shipments, more_shipments = _shipments(store, customer.customer_id)
    return {
        "customer": customer.to_dict(),
        "active_incidents": _active_incidents(store, customer, moment),
        "notices": notices,
        "more_notices": more_notices,
        "shipments": shipments,
        "more_shipments": more_shipments,
        "generated_at": iso(moment),
    }


def _active_incidents(store: Store, customer: Customer, now: datetime) -> list[dict[str, Any]]:
    incidents = store.open_incidents()
    members = store.audience_memberships(customer.customer_id, [i.incident_id for i in incidents])
    found: list[dict[str, Any]] = []
    for incident in incidents:
        affected = _affected_services(customer, incident)
        in_audience = incident.incident_id in members
        # A carrier-lane incident reaches customers through their parcels, not their
        # services: the snapshot is what says it concerns them.
        if affected or in_audience:
            found.append(_incident_entry(incident, affected, in_audience, now))
    return found


def _affected_services(customer: Customer, incident: Incident) -> list[dict[str, str]]:
    """The customer's subscriptions an audience of the incident's services and regions
    (none: every region) would select."""
    selector = AudienceSelector(services=incident.services, regions=incident.regions)
    return [
        {"service": s.service, "region": s.region, "postal_code": s.postal_code}
        for s in customer.services
        if selector.matches(s, customer.segments)
    ]


def _incident_entry(
    incident: Incident, affected: list[dict[str, str]], in_audience: bool, now: datetime
) -> dict[str, Any]:
    due = _moment(incident.next_update_due)
    return {
        "incident_id": incident.incident_id,
        "title": incident.title,
        "status": incident.status.value,
        "services": list(incident.services),
        "regions": list(incident.regions),
        "created_at": incident.created_at,
        "updated_at": incident.updated_at,
        "next_update_due": incident.next_update_due,
        "update_overdue": due is not None and due < now,
        "affected_services": affected,
        # Only meaningful once frozen: until the initial notice has gone out the snapshot
        # is missing or partial.
        "audience_frozen": incident.audience_frozen,
        "in_audience": in_audience,
    }


def _moment(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _notices(store: Store, customer_id: str) -> tuple[list[dict[str, Any]], bool]:
    rows: list[Item] = []
    start_key: dict[str, Any] | None = None
    unread = False
    while True:
        page = store.deliveries_for_customer(customer_id, start_key=start_key, limit=200)
        rows.extend(page.items)
        start_key = page.next_key
        if not start_key:
            break
        if len(rows) >= LEDGER_READ_LIMIT:
            unread = True
            break
    # The index orders rows by broadcast id; the agent wants the latest first.
    rows.sort(key=lambda r: (int(r.get("updated_at") or 0), str(r["broadcast_id"])), reverse=True)
    shown = rows[:NOTICE_LIMIT]
    ids = [str(r["broadcast_id"]) for r in shown]
    broadcasts = store.get_broadcasts(i for i in ids if not i.startswith(_SHIPMENT_PREFIX))
    incidents = store.get_incidents(b.incident_id for b in broadcasts.values())
    entries = [_notice_entry(row, broadcasts, incidents) for row in shown]
    return entries, unread or len(rows) > NOTICE_LIMIT


def _notice_entry(
    row: Mapping[str, Any], broadcasts: Mapping[str, Broadcast], incidents: Mapping[str, Incident]
) -> dict[str, Any]:
    notice_id = str(row["broadcast_id"])
    updated = int(row.get("updated_at") or 0)
    entry: dict[str, Any] = {
        "kind": "broadcast",
        "notice_id": notice_id,
        "channel": row.get("channel"),
        "status": row.get("status"),
        "updated_at": iso(datetime.fromtimestamp(updated, UTC)) if updated else None,
        "attempts": int(row.get("attempts") or 0),
        "provider_id": row.get("provider_id") or None,
        "reason": row.get("reason") or None,
        "broadcast_id": None,
        "phase": None,
        "template": None,
        "incident_id": None,
        "incident_title": None,
        "notice_kind": None,
        "tracking_code": None,
    }
    if notice_id.startswith(_SHIPMENT_PREFIX):
        kind, tracking_code = _shipment_notice(notice_id)
        entry.update(kind="shipment", notice_kind=kind, tracking_code=tracking_code)
        return entry
    entry["broadcast_id"] = notice_id
    broadcast = broadcasts.get(notice_id)
    if broadcast is not None:
        incident = incidents.get(broadcast.incident_id)
        entry.update(
            phase=broadcast.phase.value,
            template=broadcast.template,
            incident_id=broadcast.incident_id,
            incident_title=incident.title if incident else None,
        )
    return entry


def _shipment_notice(notice_id: str) -> tuple[str | None, str | None]:
    """(notice kind, tracking code) of a shipment notice id, `shp_<tracking>_<kind>_<n>`
    (chalicelib.shipments.make_notice_id); tracking codes and kinds both hold "_"."""
    head, _, count = notice_id.removeprefix(_SHIPMENT_PREFIX).rpartition("_")
    if count.isdigit():
        for kind in NoticeKind:
            suffix = f"_{kind.value}"
            if head.endswith(suffix) and len(head) > len(suffix):
                return kind.value, head[: -len(suffix)]
    return None, None


def _shipments(store: Store, customer_id: str) -> tuple[list[dict[str, Any]], bool]:
    page = store.recent_shipments(customer_id, limit=SHIPMENT_LIMIT + 1)
    entries = []
    for item in page.items[:SHIPMENT_LIMIT]:
        data = Shipment.from_dict(item).to_dict()
        entries.append({k: v for k, v in data.items() if k not in _HIDDEN_SHIPMENT_FIELDS})
    return entries, len(page.items) > SHIPMENT_LIMIT


def lookup(store: Store, query: str | None) -> dict[str, Any]:
    """Who is calling, from what the agent or the IVR has: the customer's overview."""
    return customer_overview(store, find_customer(store, query or "").customer_id)
