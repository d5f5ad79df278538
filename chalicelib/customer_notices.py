"""Per-customer notices from shipment events, and the `return.received` event for billing.

Both travel on the notice queue (`names.notice_queue`) as JSON jobs that `chalicelib.
shipments` builds: `{"type": "notice", ...}` for a customer notice, `{"type":
"return_received", ...}` for the billing event. `handle_batch` is the queue's worker.

A notice goes through the broadcast worker's `deliveries.send_once`: render first, claim the
ledger row under the notice id, send, settle, with the same fallback along the customer's
channels; uncounted, as there is no broadcast counter to move. The notice id is
deterministic, so a duplicate job finds the row settled and sends nothing.

Templates live in `templates/_shipments/<kind>/<locale>/<part>.j2`. The leading `_` keeps
these kinds out of `notices.available_kinds()`, which lists the templates a broadcast may
use: a shipment notice needs an order and a tracking code, not an incident.

`return.received` is published to the returns SNS topic and, when a partner URL is
configured, POSTed there signed (`X-Forewarn-Signature`). Each step is flagged on the
shipment only after it succeeded, so a crash repeats it (same `event_id`, for the receiver
to deduplicate) rather than losing it, and a finished step never runs again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from chalicelib import aws, deliveries, digests, notices, observability, queues, webhooks
from chalicelib.broadcasts import Services
from chalicelib.config import Settings
from chalicelib.deliveries import Delivery, Gates, Outcome, backoff_seconds
from chalicelib.digests import DigestJob, Digests
from chalicelib.domain import DELIVERABLE_CHANNELS, Channel, Customer, utcnow, zone
from chalicelib.errors import BadRequest, ForewarnError
from chalicelib.quiet_hours import QuietHours
from chalicelib.send_rates import Pacer
from chalicelib.shipment_store import ShipmentStore
from chalicelib.shipments import (
    NOTICE_JOB,
    RETURN_JOB,
    NoticeKind,
    carrier_name,
    return_received_event,
)
from chalicelib.suppressions import Suppressions

log = logging.getLogger(__name__)

TEMPLATE_ROOT = "_shipments"
WEBHOOK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    # For DEFERRED: when the notice may go out.
    not_before: datetime | None = None


@dataclass(frozen=True)
class NoticeJob:
    notice_id: str
    kind: NoticeKind
    customer_id: str
    tracking_code: str
    order_id: str
    carrier: str
    status: str
    reason: str
    est_delivery: date | None
    promised_date: date | None
    event_at: datetime

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NoticeJob:
        def day(value: object) -> date | None:
            return date.fromisoformat(str(value)) if value else None

        return cls(
            notice_id=str(data["notice_id"]),
            kind=NoticeKind(data["kind"]),
            customer_id=str(data["customer_id"]),
            tracking_code=str(data["tracking_code"]),
            order_id=str(data.get("order_id") or ""),
            carrier=str(data.get("carrier") or ""),
            status=str(data.get("status") or ""),
            reason=str(data.get("reason") or ""),
            est_delivery=day(data.get("est_delivery")),
            promised_date=day(data.get("promised_date")),
            event_at=datetime.fromisoformat(str(data["event_at"]).replace("Z", "+00:00")),
        )


@dataclass(frozen=True)
class ReturnJob:
    event_id: str
    tracking_code: str


Job = NoticeJob | ReturnJob | DigestJob


def parse_job(body: str) -> Job:
    """The job a queue message carries; ValueError/KeyError/TypeError when malformed."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise TypeError("a job is a JSON object")
    if data.get("type") == NOTICE_JOB:
        return NoticeJob.from_dict(data)
    if data.get("type") == RETURN_JOB:
        return ReturnJob(str(data["event_id"]), str(data["tracking_code"]))
    if data.get("type") == digests.DIGEST_JOB:
        return DigestJob.from_dict(data)
    raise ValueError(f"unknown job type {str(data.get('type'))[:40]!r}")


def enqueue(settings: Settings, jobs: Sequence[Mapping[str, Any]]) -> None:
    queues.send_json(settings.names.notice_queue, jobs)


# --- quiet hours -----------------------------------------------------------------------------


def defer_until(
    customer: Customer, kind: NoticeKind, now: datetime, quiet: QuietHours | None
) -> datetime | None:
    """When a notice of `kind` may reach `customer`, if not now; None sends it now.

    Parcel notices are not urgent: one that would land in the customer's quiet hours (in
    their `time_zone`) waits for the window's end, and the worker holds the message until then
    (SQS visibility, at most 12 h; each hold counts as one receive towards the dead-letter
    queue's limit of 8). Every kind waits alike: none is worth a text at 3 a.m. Outage
    broadcasts do not pass through here.
    """
    return quiet.ends_after(now, customer.time_zone) if quiet else None


# --- rendering -------------------------------------------------------------------------------


def _day(value: date | None) -> str:
    return f"{value:%a} {value.day} {value:%b}" if value else ""


def _local_day(moment: datetime, time_zone: str) -> str:
    return _day(moment.astimezone(zone(time_zone)).date())


def notice_context(
    customer: Customer, job: NoticeJob, *, brand: str, unsubscribe_url: str | None = None
) -> dict[str, object]:
    """What the shipment templates may use: the order, not the address or the parcel's path."""
    return {
        "first_name": customer.first_name,
        "brand": brand,
        "order_id": job.order_id,
        "tracking_code": job.tracking_code,
        "carrier": carrier_name(job.carrier),
        "status": job.status,
        "reason": job.reason,
        "est_delivery": _day(job.est_delivery),
        "promised_date": _day(job.promised_date),
        "event_day": _local_day(job.event_at, customer.time_zone),
        "opt_out_sms": notices.OPT_OUT_SMS,
        "unsubscribe_url": unsubscribe_url,
        "status_link": "",
    }


def render(
    kind: NoticeKind, channel: Channel, locale: str, context: Mapping[str, object]
) -> notices.RenderedNotice:
    """Like `notices.render_notice`, from `templates/_shipments/`, for SMS and email."""
    if channel not in DELIVERABLE_CHANNELS:
        raise BadRequest(f"shipment notices are not sent on {channel.value}")
    return notices.render_under(f"{TEMPLATE_ROOT}/{kind.value}", channel, locale, context)


# --- the worker ------------------------------------------------------------------------------


def deliver_notice(
    services: Services, job: NoticeJob, *, now: datetime, pacer: Pacer | None = None
) -> Result:
    """Send one parcel notice; `pacer` is the batch's (one per call without it)."""
    store, settings = services.store, services.settings
    customer = store.get_customer(job.customer_id)
    if customer is None:
        # Deleted since the shipment was registered: nobody to tell, and retrying won't help.
        log.warning("notice %s dropped: its customer no longer exists", job.notice_id)
        return Result(Outcome.DROPPED)
    route = customer.route(DELIVERABLE_CHANNELS)
    if not route:
        log.warning("notice %s dropped: the customer has no SMS or email", job.notice_id)
        return Result(Outcome.DROPPED)
    not_before = defer_until(customer, job.kind, now, settings.quiet_hours)
    if not_before is not None and not_before > now:
        return Result(Outcome.DEFERRED, not_before)

    def render_on(channel: Channel, link: str | None) -> notices.RenderedNotice:
        context = notice_context(customer, job, brand=settings.brand, unsubscribe_url=link)
        return render(job.kind, channel, customer.locale, context)

    delivery = Delivery(job.notice_id, customer, route, render_on, counted=False)
    suppressed = Suppressions(settings.names, store.db).reason
    gates = Gates(suppressed, pacer or deliveries.pacer(services, {}))
    return Result(deliveries.send_once(services, delivery, gates))


def deliver_digest(services: Services, job: DigestJob, *, now: datetime, pacer: Pacer) -> Result:
    """One combined message of everything the frequency cap held for the job's window, once
    (chalicelib/digests.py); its entries are cleared only after it was settled."""
    due = datetime.fromtimestamp(job.due, UTC)
    if now < due:
        return Result(Outcome.DEFERRED, due)
    store, settings = services.store, services.settings
    table = Digests(settings.names, store.db, window_seconds=settings.digest_window_seconds)
    pending = table.pending(job)
    customer = store.get_customer(job.customer_id)
    if not pending or customer is None:
        # Already sent and cleared (a repeated job), or the customer is gone.
        return Result(Outcome.DUPLICATE)
    entries = list(pending.values())

    def render_on(channel: Channel, link: str | None) -> notices.RenderedNotice:
        return digests.render(
            channel,
            customer.locale,
            entries,
            first_name=customer.first_name,
            brand=settings.brand,
            unsubscribe_url=link,
        )

    route = customer.route(DELIVERABLE_CHANNELS)
    delivery = Delivery(job.ledger_id, customer, route, render_on, counted=False)
    suppressed = Suppressions(settings.names, store.db).reason
    outcome = deliveries.send_once(services, delivery, Gates(suppressed, pacer))
    if outcome not in (Outcome.RETRY, Outcome.RATE_LIMITED):
        table.clear(job.customer_id, list(pending))
    return Result(outcome)


class PostFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def post_signed(url: str, body: bytes, *, secret: str, event_id: str) -> int:
    """POST `body` signed with `secret`; the HTTP status, or PostFailed (never the secret)."""
    # Imported here: urllib.request pulls in http.client and ssl, a cold-start cost every
    # handler importing this module would pay for a POST that few invocations make.
    import urllib.error
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        # A signed event goes to the configured URL or nowhere: following a redirect would
        # hand it to whoever controls the Location header.
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    if not url.lower().startswith(("https://", "http://")):
        raise PostFailed("the return webhook URL must be http(s)")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above; operator's URL
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Forewarn-Webhooks/1",
            webhooks.FOREWARN_HEADER: webhooks.sign_forewarn(body, secret),
            "X-Forewarn-Event": "return.received",
            "X-Forewarn-Event-Id": event_id,
        },
    )
    opener = urllib.request.build_opener(NoRedirects)
    try:
        with opener.open(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise PostFailed(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        # The reason names the failure (refused, timed out), not the URL or the payload.
        raise PostFailed(type(getattr(exc, "reason", exc)).__name__) from None
    if not 200 <= status < 300:
        raise PostFailed(f"HTTP {status}")
    return status


def publish_return_received(services: Services, job: ReturnJob, *, now: datetime) -> Result:
    """Tell billing (SNS, then the partner URL if set) that a return arrived; each once."""
    settings = services.settings
    shipment_store = ShipmentStore(services.store.names, services.store.db)
    record = shipment_store.get(job.tracking_code)
    if record is None:
        log.error("return.received %s: shipment not found", job.event_id)
        return Result(Outcome.DROPPED)
    event = return_received_event(record.shipment)
    body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    if record.return_published_at is None:
        if not settings.returns_topic_arn:
            # Not lost: the message comes back and ends in the dead-letter queue for a person.
            log.error("return.received %s waits: RETURNS_TOPIC_ARN is not set", job.event_id)
            return Result(Outcome.RETRY)
        aws.client("sns").publish(
            TopicArn=settings.returns_topic_arn,
            Message=body.decode(),
            MessageAttributes={
                "type": {"DataType": "String", "StringValue": event["type"]},
            },
        )
        # Flagged only after the publish: a crash in between publishes again (same
        # event_id) rather than never.
        shipment_store.mark_return_published(job.tracking_code, now=now)
    url = settings.return_webhook_url
    if url and record.return_webhook_at is None:
        try:
            secret = webhooks.signing_secret(webhooks.RETURN_WEBHOOK)
            post_signed(url, body, secret=secret, event_id=job.event_id)
        except PostFailed as exc:
            log.warning("return.received %s: partner POST failed: %s", job.event_id, exc.reason)
            return Result(Outcome.RETRY)
        except ForewarnError:
            return Result(Outcome.RETRY)
        shipment_store.mark_return_webhook(job.tracking_code, now=now)
    return Result(Outcome.SENT)


def _handle_safely(
    services: Services, job: Job, message_id: str, now: datetime, pacer: Pacer
) -> Result:
    try:
        if isinstance(job, NoticeJob):
            return deliver_notice(services, job, now=now, pacer=pacer)
        if isinstance(job, DigestJob):
            return deliver_digest(services, job, now=now, pacer=pacer)
        return publish_return_received(services, job, now=now)
    except Exception as exc:
        # A claim, if taken, expires and the retry settles it (see chalicelib/deliveries.py).
        log.error("notice job %s raised %s", message_id, type(exc).__name__)
        return Result(Outcome.RETRY)


def _notice_id(job: Job) -> str | None:
    """The ledger id a job's logs are correlated by (a digest's names its window)."""
    if isinstance(job, NoticeJob):
        return job.notice_id
    return job.ledger_id if isinstance(job, DigestJob) else None


def handle_batch(services: Services, messages: Sequence[queues.QueueMessage]) -> list[str]:
    """Work a batch of notice-queue messages; the ids SQS must deliver again."""
    failed: list[str] = []
    queue = services.settings.names.notice_queue
    pacer = deliveries.pacer(services, {})
    for message in messages:
        try:
            job = parse_job(message.body)
        except (ValueError, KeyError, TypeError):
            # Never succeeds: let it reach the dead-letter queue for a person to look at.
            log.error("malformed notice job %s", message.message_id)
            failed.append(message.message_id)
            continue
        now = utcnow()
        with observability.correlated(notice_id=_notice_id(job)):
            result = _handle_safely(services, job, message.message_id, now, pacer)
        if result.outcome is Outcome.DEFERRED and result.not_before is not None:
            failed.append(message.message_id)
            wait = int((result.not_before - now).total_seconds()) + 1
            queues.retry_later(queue, message.receipt_handle, wait)
        elif result.outcome in (Outcome.RETRY, Outcome.RATE_LIMITED):
            # A rate-limited parcel notice waits like a retry: parcel notices come a few
            # at a time, far from the receives that would send one to the dead-letter queue.
            failed.append(message.message_id)
            queues.retry_later(
                queue, message.receipt_handle, backoff_seconds(message.receive_count)
            )
    return failed
