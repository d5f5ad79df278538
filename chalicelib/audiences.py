"""Who a broadcast reaches, resolved page by page with DynamoDB queries.

An initial broadcast resolves its selector against the subscription index: one Query
stream per (service, region or postal prefix). A customer can match several streams (two
services, two addresses, overlapping prefixes); it is emitted only from the first match in
stream order, which every page can decide on its own from the customer's own data, so the
planner keeps no state between pages. Updates and the all-clear read the incident's frozen
snapshot instead.

A lane selector (one carrier lane) reads GSI `by-lane` of the shipments table, which holds
only outbound parcels still on their way, sorted `<customer>#<tracking code>`: a customer
with several parcels there is emitted at their first, and a page that starts right after
one of theirs (the start key says whose it was) skips the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from chalicelib.domain import AudienceSelector, Channel, Customer, Subscription
from chalicelib.store import Store, decode_cursor, encode_cursor

END = "END"


@dataclass(frozen=True)
class Stream:
    service: str
    by_postal: bool
    prefix: str

    def sort_key(self, customer: Customer, subscription: Subscription) -> str:
        if self.by_postal:
            return f"{subscription.postal_code}#{subscription.region}#{customer.customer_id}"
        return f"{subscription.region}#{subscription.postal_code}#{customer.customer_id}"

    def covers(self, customer: Customer, subscription: Subscription) -> bool:
        return subscription.service == self.service and self.sort_key(
            customer, subscription
        ).startswith(self.prefix)


def streams_for(selector: AudienceSelector) -> list[Stream]:
    streams: list[Stream] = []
    for service in selector.services:
        if selector.regions:
            for region in selector.regions:
                for prefix in selector.postal_prefixes or ("",):
                    streams.append(Stream(service, False, f"{region}#{prefix}"))
        elif selector.postal_prefixes:
            streams.extend(Stream(service, True, p) for p in selector.postal_prefixes)
        else:
            streams.append(Stream(service, False, ""))
    return streams


def first_match(
    customer: Customer, selector: AudienceSelector, streams: Sequence[Stream]
) -> tuple[int, str] | None:
    """The (stream, sort key) at which this customer counts; None if it is not in the audience."""
    matches = [
        (index, stream.sort_key(customer, sub))
        for index, stream in enumerate(streams)
        for sub in customer.services
        if stream.covers(customer, sub) and selector.matches(sub, customer.segments)
    ]
    return min(matches) if matches else None


@dataclass
class AudiencePage:
    customers: list[Customer]
    next_cursor: str

    @property
    def done(self) -> bool:
        return self.next_cursor == END


def selector_page(
    store: Store, selector: AudienceSelector, cursor: str, *, size: int
) -> AudiencePage:
    """At least `size` audience members (fewer at the end) from the subscription index."""
    if selector.lanes:
        return lane_page(store, selector.lanes[0], cursor, size=size)
    streams = streams_for(selector)
    index, start_key = decode_cursor(cursor)
    found: list[Customer] = []
    while index < len(streams) and len(found) < size:
        stream = streams[index]
        page = store.query_subscriptions(
            stream.service,
            by_postal=stream.by_postal,
            key_prefix=stream.prefix,
            start_key=start_key,
            limit=size,
        )
        for row in page.items:
            if first_match(row.customer, selector, streams) == (index, row.sort_key):
                found.append(row.customer)
        if page.next_key:
            start_key = page.next_key
        else:
            index, start_key = index + 1, None
    next_cursor = END if index >= len(streams) else encode_cursor(index, start_key)
    return AudiencePage(found, next_cursor)


def lane_page(store: Store, lane: str, cursor: str, *, size: int) -> AudiencePage:
    _, start_key = decode_cursor(cursor)
    previous = _customer_of(str(start_key.get("lane_sort", {}).get("S", ""))) if start_key else None
    wanted: list[str] = []
    while len(wanted) < size:
        page = store.query_lane(lane, start_key=start_key, limit=size)
        for sort_key in page.items:
            customer_id = _customer_of(sort_key)
            if customer_id != previous:
                wanted.append(customer_id)
            previous = customer_id
        start_key = page.next_key
        if not start_key:
            break
    found = store.get_customers(wanted)
    # A customer deleted since their parcel was registered has nobody left to tell.
    customers = [found[c] for c in wanted if c in found]
    return AudiencePage(customers, encode_cursor(0, start_key) if start_key else END)


def _customer_of(lane_sort: str) -> str:
    return lane_sort.rsplit("#", 1)[0]


def snapshot_page(store: Store, incident_id: str, cursor: str, *, size: int) -> AudiencePage:
    _, start_key = decode_cursor(cursor)
    page = store.query_audience(incident_id, start_key=start_key, limit=size)
    next_cursor = encode_cursor(0, page.next_key) if page.next_key else END
    return AudiencePage(page.items, next_cursor)


@dataclass
class AudienceCount:
    total: int = 0
    unreachable: int = 0
    by_channel: Counter[Channel] = field(default_factory=Counter)
    sample: Customer | None = None

    def add(self, customers: Sequence[Customer], channels: Sequence[Channel]) -> None:
        for customer in customers:
            self.total += 1
            primary = customer.primary_channel(channels)
            if primary is None:
                self.unreachable += 1
            else:
                self.by_channel[primary] += 1
            if self.sample is None:
                self.sample = customer

    def to_dict(self, channels: Sequence[Channel]) -> dict[str, object]:
        return {
            "total": self.total,
            "unreachable": self.unreachable,
            "by_channel": {c.value: self.by_channel.get(c, 0) for c in channels},
        }


def page_at(
    store: Store,
    *,
    selector: AudienceSelector | None,
    incident_id: str,
    cursor: str,
    size: int,
) -> AudiencePage:
    """The page at `cursor`: of the selector's audience, or without one, of the snapshot."""
    if selector is not None:
        return selector_page(store, selector, cursor, size=size)
    return snapshot_page(store, incident_id, cursor, size=size)


def iterate_pages(
    store: Store,
    *,
    selector: AudienceSelector | None,
    incident_id: str,
    size: int,
) -> Iterator[AudiencePage]:
    cursor = ""
    while True:
        page = page_at(store, selector=selector, incident_id=incident_id, cursor=cursor, size=size)
        yield page
        if page.done:
            return
        cursor = page.next_cursor
