"""The delivery worker: one job is one (broadcast, customer, channel), sent at most once.

The ledger row is claimed with a conditional write before the provider is called and
settled after, together with the broadcast's counter. A redelivered job finds the row
settled and sends nothing. A job whose previous worker stopped between the send call and
the settle finds an expired claim: the send most likely happened, so it is recorded as
sent (in doubt) rather than repeated — a duplicate is the worse failure for a notice.

Fallback: when a channel cannot carry the notice for good (a landline, an invalid number,
a hard-bounced or suppressed address), its row settles as `fell_back` and the customer's
next channel, in their order of preference, carries the same notice under its own row.
A retried job walks the same route and skips rows already `fell_back`, so a worker that
stops mid-way resumes at the next channel and never sends twice (`send_once`). Parcel
notices and digests (chalicelib/customer_notices.py) go through the same `send_once`.

Before a send: the address must not be suppressed, the frequency cap may fold the notice
into the customer's digest instead (chalicelib/digests.py), and the channel's send rate
must have room (chalicelib/send_rates.py). A message whose recipients are in their quiet
hours (`not_before`) goes back to the queue until they end, untouched.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from chalicelib import channels, digests, notices, observability, queues, unsubscribe
from chalicelib.broadcasts import (
    Services,
    delivery_jobs,
    finish_if_complete,
    note_first_notice,
    render_for,
)
from chalicelib.digests import DigestJob, Digests
from chalicelib.domain import (
    DELIVERABLE_CHANNELS,
    Broadcast,
    BroadcastStatus,
    Channel,
    Customer,
    Incident,
    utcnow,
)
from chalicelib.errors import ForewarnError
from chalicelib.send_rates import Pacer, SendRates
from chalicelib.store import ClaimState
from chalicelib.suppressions import Suppressions
from chalicelib.suppressions import key as suppression_key

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 900


class Outcome(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DROPPED = "dropped"
    HALTED = "halted"
    SUPPRESSED = "suppressed"
    # Handed to the customer's next channel (internal to `send_once`).
    FELL_BACK = "fell_back"
    # Held for quiet hours: the job comes back when they end.
    DEFERRED = "deferred"
    # Held back by the frequency cap: the customer's digest carries it.
    DIGESTED = "digested"
    # The channel's send rate had no room: the job goes back to the queue as a new message,
    # since a rate limit is no failure and must not use up the receives that lead to the DLQ.
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class DeliveryJob:
    broadcast_id: str
    customer: Customer
    channel: Channel
    # Epoch seconds before which the recipient is in quiet hours; 0: at once.
    not_before: int = 0

    @classmethod
    def from_message(cls, body: str) -> list[DeliveryJob]:
        """The jobs one queue message carries (see `broadcasts.delivery_jobs`)."""
        data = json.loads(body)
        return [
            cls(
                broadcast_id=str(data["broadcast_id"]),
                customer=Customer.from_dict(recipient["customer"]),
                channel=Channel(recipient["channel"]),
                not_before=int(data.get("not_before", 0)),
            )
            for recipient in data["recipients"]
        ]

    def route(self, offered: Sequence[Channel]) -> tuple[Channel, ...]:
        """The planned channel, then the customer's later preferences as fallbacks."""
        route = self.customer.route(offered)
        return route[route.index(self.channel) :] if self.channel in route else (self.channel,)


def batch_gates(services: Services, jobs: Sequence[DeliveryJob]) -> Gates:
    """The suppressions of every address the jobs may use, fallbacks included, in one
    BatchGetItem, and a pacer sized to the batch's planned channels."""
    addresses = [
        (channel, contact)
        for job in jobs
        for channel in job.customer.route(DELIVERABLE_CHANNELS)
        if (contact := job.customer.contact(channel))
    ]
    found = Suppressions(services.settings.names, services.store.db).reasons(addresses)
    window = services.settings.digest_window_seconds
    return Gates(
        lambda channel, address: found.get(suppression_key(channel, address)),
        pacer(services, Counter(job.channel for job in jobs)),
        Digests(services.settings.names, services.store.db, window_seconds=window)
        if window
        else None,
    )


@dataclass
class BatchContext:
    """Broadcasts and incidents read once per batch, not once per recipient."""

    services: Services
    gates: Gates
    broadcasts: dict[str, Broadcast | None] = field(default_factory=dict)
    incidents: dict[str, Incident | None] = field(default_factory=dict)

    def lookup(self, broadcast_id: str) -> tuple[Broadcast, Incident] | None:
        store = self.services.store
        if broadcast_id not in self.broadcasts:
            self.broadcasts[broadcast_id] = store.get_broadcast(broadcast_id)
        broadcast = self.broadcasts[broadcast_id]
        if broadcast is None:
            return None
        if broadcast.incident_id not in self.incidents:
            self.incidents[broadcast.incident_id] = store.get_incident(broadcast.incident_id)
        incident = self.incidents[broadcast.incident_id]
        return (broadcast, incident) if incident else None


@dataclass(frozen=True)
class Delivery:
    """One notice for one customer, in the ledger under `ledger_id` (a broadcast or notice
    id), carried by the first channel of `route` that can."""

    ledger_id: str
    customer: Customer
    route: tuple[Channel, ...]
    # Renders the notice for a channel, given its unsubscribe link; raises ForewarnError.
    render: Callable[[Channel, str | None], notices.RenderedNotice]
    # Whether the broadcast's counters move with the ledger (parcel notices have none).
    counted: bool = True
    # It waited for the customer's quiet hours to end (recorded on the ledger row).
    held: bool = False
    # What the customer's digest says of it; None: never held back by the frequency cap.
    digest_entry: Mapping[str, str] | None = None


def pacer(services: Services, planned: Mapping[Channel, int]) -> Pacer:
    settings = services.settings
    rates = SendRates(settings.names, services.store.db, limits=settings.send_rates)
    return Pacer(rates, planned)


@dataclass(frozen=True)
class Gates:
    """What a batch checks before each send: suppressed addresses, the frequency cap, and
    the send rates."""

    suppressed: Callable[[Channel, str], str | None]
    pacer: Pacer
    # The frequency cap; None when the stage has none.
    cap: Digests | None = None


def send_once(services: Services, delivery: Delivery, gates: Gates) -> Outcome:
    """Walk the route until a channel sends, fails for the last time, or must be retried."""
    for index, channel in enumerate(delivery.route):
        fallback = delivery.route[index + 1] if index + 1 < len(delivery.route) else None
        outcome = _send_on(services, delivery, channel, fallback, gates)
        if outcome is not Outcome.FELL_BACK:
            return outcome
    # Every row on the route had fallen back before: the last one cannot have.
    return Outcome.DUPLICATE


def _send_on(
    services: Services,
    delivery: Delivery,
    channel: Channel,
    fallback: Channel | None,
    gates: Gates,
) -> Outcome:
    store, settings = services.store, services.settings
    customer_id = delivery.customer.customer_id
    contact = delivery.customer.contact(channel)
    unsubscribe_url = (
        unsubscribe.link(settings, contact) if channel is Channel.EMAIL and contact else None
    )
    # Render before claiming, so the window between claim and send holds no slow work.
    notice: notices.RenderedNotice | None = None
    render_error = ""
    try:
        notice = delivery.render(channel, unsubscribe_url)
    except ForewarnError as exc:
        render_error = exc.message
    claim = store.claim_delivery(
        delivery.ledger_id,
        customer_id,
        channel,
        lease_seconds=settings.delivery_lease_seconds,
        held=delivery.held,
    )
    if claim.state is ClaimState.SETTLED:
        if claim.status == "digested" and gates.cap is not None:
            # The worker that joined the digest may have stopped before queueing it.
            window = gates.cap.window_of(customer_id, delivery.ledger_id)
            if window is not None:
                digests.enqueue(settings.names, DigestJob(customer_id, window), time.time())
        return Outcome.FELL_BACK if claim.status == "fell_back" else Outcome.DUPLICATE
    if claim.state is ClaimState.IN_FLIGHT:
        return Outcome.RETRY
    record = functools.partial(
        store.record_outcome,
        delivery.ledger_id,
        customer_id,
        channel,
        attempt_id=claim.attempt_id,
        count=delivery.counted,
    )

    def settle(**outcome: Any) -> bool:
        settled = record(**outcome)
        # Counted where the row settles, and only by the write that settled it: a retried
        # job that finds the row settled counts nothing, as the broadcast's counters.
        if settled:
            observability.notice_settled(channel.value, outcome["status"])
        return settled

    if claim.state is ClaimState.IN_DOUBT:
        settle(
            status="sent",
            counter="sent",
            reason="in doubt: the previous worker stopped after calling the provider",
        )
        return Outcome.DUPLICATE

    def cannot(outcome: Outcome, reason: str) -> Outcome:
        if fallback is None:
            settle(status=outcome.value, counter=outcome.value, reason=reason)
            return outcome
        if settle(
            status="fell_back",
            counter="fell_back",
            reason=f"{reason} (handed to {fallback.value})",
            moves_to=fallback,
        ):
            return Outcome.FELL_BACK
        # Another worker settled this row meanwhile; it owns what comes next.
        return Outcome.DUPLICATE

    def release(reason: str) -> Outcome:
        store.release_delivery(
            delivery.ledger_id, customer_id, channel, attempt_id=claim.attempt_id, reason=reason
        )
        return Outcome.RETRY

    if contact and (why := gates.suppressed(channel, contact)):
        return cannot(Outcome.SUPPRESSED, f"suppressed: {why}")
    if notice is None or not contact:
        return cannot(Outcome.FAILED, render_error or f"no {channel.value} contact")
    try:
        if gates.cap is not None and delivery.digest_entry is not None:
            joined = _join_open_digest(services, delivery, delivery.digest_entry, gates.cap, settle)
            if joined is Outcome.RETRY:
                return release("the customer's digest window changed meanwhile")
            if joined is not None:
                return joined
        cost = notices.sms_segments(notice.text).segments if channel is Channel.SMS else 1
        if not gates.pacer.acquire(channel, cost):
            release(f"{channel.value} send rate reached; next window")
            return Outcome.RATE_LIMITED
    except Exception as exc:
        # Nothing was sent: give the claim back now. Left to expire, it would be taken for
        # a send that happened (in doubt) and the customer never told.
        log.warning("before sending: %s", type(exc).__name__)
        return release(f"before sending: {type(exc).__name__}")
    try:
        provider_id = channels.send(
            channel,
            contact,
            notice,
            sender=settings.sender_email,
            brand=settings.brand,
            unsubscribe_url=unsubscribe_url,
        )
    except channels.TransientSendError as exc:
        return release(exc.reason)
    except channels.PermanentSendError as exc:
        return cannot(Outcome.FAILED, exc.reason)
    settle(status="sent", counter="sent", provider_id=provider_id)
    return Outcome.SENT


def _join_open_digest(
    services: Services,
    delivery: Delivery,
    entry: Mapping[str, str],
    cap: Digests,
    settle: Callable[..., bool],
) -> Outcome | None:
    """None when the notice may go out now; DIGESTED when it joined the customer's open
    window instead (settled, counted and added to the digest in one transaction); RETRY
    when the window kept changing under it."""
    customer_id = delivery.customer.customer_id
    for _ in range(2):
        now = time.time()
        window = cap.admit(customer_id, delivery.ledger_id, now)
        if window is None:
            return None
        join = cap.join(customer_id, delivery.ledger_id, window, now, entry)
        if settle(status="digested", counter="digested", also=[join]):
            digests.enqueue(services.settings.names, DigestJob(customer_id, window), now)
            return Outcome.DIGESTED
    # The window closed under us twice, or another worker settled the row: later.
    return Outcome.RETRY


def deliver(job: DeliveryJob, context: BatchContext) -> Outcome:
    found = context.lookup(job.broadcast_id)
    if found is None:
        log.warning("dropping a job for unknown broadcast %s", job.broadcast_id)
        return Outcome.DROPPED
    broadcast, incident = found
    if broadcast.status is BroadcastStatus.HALTED:
        # The kill switch: read once per batch, so a stop takes effect within a batch.
        return Outcome.HALTED
    settings = context.services.settings

    def render(channel: Channel, unsubscribe_url: str | None) -> notices.RenderedNotice:
        return render_for(
            settings, broadcast, incident, job.customer, channel, unsubscribe_url=unsubscribe_url
        )

    route = job.route(broadcast.channels)
    delivery = Delivery(
        job.broadcast_id,
        job.customer,
        route,
        render,
        held=job.not_before > 0,
        digest_entry=digests.entry(broadcast, incident),
    )
    return send_once(context.services, delivery, context.gates)


def _jobs_of(jobs: Sequence[DeliveryJob]) -> list[dict[str, Any]]:
    """Queue messages for `jobs`, as the planner writes them."""
    groups: dict[tuple[str, int], list[DeliveryJob]] = {}
    for job in jobs:
        groups.setdefault((job.broadcast_id, job.not_before), []).append(job)
    return [
        body
        for (broadcast_id, not_before), group in groups.items()
        for body in delivery_jobs(
            broadcast_id, [(job.customer, job.channel) for job in group], not_before=not_before
        )
    ]


def backoff_seconds(receive_count: int, base: float = 2.0) -> int:
    """Exponential backoff with jitter, so throttled retries spread out."""
    ceiling = min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, receive_count - 1))
    return max(1, int(random.uniform(ceiling / 2, ceiling)))


def _deliver_safely(job: DeliveryJob, context: BatchContext, message_id: str) -> Outcome:
    try:
        return deliver(job, context)
    except Exception as exc:
        # The claim, if taken, expires; the retry then settles it (see the module docstring).
        log.error("delivery job %s raised %s", message_id, type(exc).__name__)
        return Outcome.RETRY


def handle_batch(services: Services, messages: Sequence[queues.QueueMessage]) -> list[str]:
    """Deliver a batch; returns the ids of the messages SQS must deliver again."""
    failed: list[str] = []
    touched: set[str] = set()
    sent: set[str] = set()
    parsed: list[tuple[queues.QueueMessage, list[DeliveryJob]]] = []
    queue = services.settings.names.delivery_queue
    now = utcnow().timestamp()
    for message in messages:
        try:
            jobs = DeliveryJob.from_message(message.body)
        except (ValueError, KeyError, TypeError, AttributeError):
            # Never succeeds: let it reach the dead-letter queue for a person to look at.
            log.error("malformed delivery job %s", message.message_id)
            failed.append(message.message_id)
            continue
        wait = max((job.not_before for job in jobs), default=0) - now
        if wait > 0:
            # Quiet hours where these recipients are: back when they end (each hold is one
            # receive, well within the dead-letter limit for a window of at most 12 h).
            failed.append(message.message_id)
            queues.retry_later(queue, message.receipt_handle, math.ceil(wait))
            continue
        parsed.append((message, jobs))
    context = BatchContext(services, batch_gates(services, [j for _, jobs in parsed for j in jobs]))
    for message, jobs in parsed:
        outcomes = []
        for job in jobs:
            with observability.correlated(broadcast_id=job.broadcast_id):
                outcomes.append(_deliver_safely(job, context, message.message_id))
        touched.update(job.broadcast_id for job in jobs)
        sent.update(
            j.broadcast_id for j, o in zip(jobs, outcomes, strict=True) if o is Outcome.SENT
        )
        if Outcome.RETRY in outcomes:
            failed.append(message.message_id)
            queues.retry_later(
                queue, message.receipt_handle, backoff_seconds(message.receive_count)
            )
        elif Outcome.RATE_LIMITED in outcomes:
            # Sent again before this one is deleted: a crash in between leaves a duplicate
            # message, which the ledger makes harmless, rather than a lost one.
            waiting = [j for j, o in zip(jobs, outcomes, strict=True) if o is Outcome.RATE_LIMITED]
            queues.send_json(queue, _jobs_of(waiting), delay_seconds=random.randint(1, 5))
    for broadcast_id in sent:
        if found := context.lookup(broadcast_id):
            note_first_notice(services.store, *found, utcnow())
    for broadcast_id in touched:
        finish_if_complete(services.store, broadcast_id)
    return failed
