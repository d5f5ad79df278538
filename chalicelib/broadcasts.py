"""Broadcasts: draft → approved → sending → sent, and the planner that fans them out.

Sending never happens inside an API request. `send` hands the broadcast to the planner
queue; each planner step resolves one page of the audience, freezes it (initial phase),
enqueues one delivery job per recipient and moves the broadcast's plan cursor, so a
planner that dies mid-way resumes where it stopped and counts nothing twice.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from chalicelib import audiences, concurrency, notices, observability, queues
from chalicelib.config import Settings
from chalicelib.domain import (
    DELIVERABLE_CHANNELS,
    AudienceSelector,
    Broadcast,
    BroadcastStatus,
    Channel,
    ChannelCounts,
    Customer,
    Incident,
    Phase,
    Subscription,
    iso,
    parse_enum,
    utcnow,
)
from chalicelib.errors import BadRequest, Conflict, Forbidden, ForewarnError, NotFound
from chalicelib.incidents import get_incident, parse_moment
from chalicelib.store import BATCH_WRITE_ITEMS, Store

log = logging.getLogger(__name__)

_FIELDS = {
    "incident_id",
    "phase",
    "channels",
    "audience",
    "template",
    "variables",
    "public_post",
    "quiet_hours",
}
# What a status source said that led to a broadcast: shown on the incident's timeline.
SOURCE_UPDATE_FIELDS = ("source", "status", "body", "display_at")
MAX_SOURCE_UPDATE_LENGTH = 2000
# `window_start` and `window_end` bound a planned maintenance (ISO 8601 with an offset, kept
# in UTC); templates show them in each customer's own zone.
VARIABLES = ("workaround", "status_link", "window_start", "window_end")
MAX_VARIABLE_LENGTH = 500
SOCIAL_LIMIT = 280


@dataclass(frozen=True)
class Services:
    """What the broadcast flow needs from the outside world."""

    store: Store
    settings: Settings
    # The brand's X account, for public posts (`x.x_poster`); created on first use.
    poster: Callable[[], Any] | None = None


def _channels(value: object) -> tuple[Channel, ...]:
    if value is None:
        return (Channel.SMS, Channel.EMAIL)
    if not isinstance(value, list) or not value:
        raise BadRequest('channels must be a non-empty list, e.g. ["sms", "email"]')
    channels = tuple(dict.fromkeys(parse_enum(Channel, v, "channels[]") for v in value))
    if not set(channels) & set(DELIVERABLE_CHANNELS):
        raise BadRequest("channels must include sms or email")
    return channels


def _variables(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadRequest("variables must be an object")
    unknown = sorted(set(value) - set(VARIABLES))
    if unknown:
        raise BadRequest(
            f"unknown variables: {', '.join(map(str, unknown))} (allowed: {', '.join(VARIABLES)})"
        )
    result: dict[str, str] = {}
    for key, text in value.items():
        if not isinstance(text, str) or len(text) > MAX_VARIABLE_LENGTH:
            raise BadRequest(f"variables.{key} must be a string of at most 500 characters")
        result[str(key)] = text.strip()
    link = result.get("status_link", "")
    if link and not link.startswith(("https://", "http://")):
        raise BadRequest("variables.status_link must be an http(s) URL")
    return _window(result)


def _window(variables: dict[str, str]) -> dict[str, str]:
    """Normalise the maintenance window to UTC and refuse one that cannot be shown."""
    start = parse_moment(variables.get("window_start"), "variables.window_start")
    end = parse_moment(variables.get("window_end"), "variables.window_end")
    if end is not None and start is None:
        raise BadRequest("variables.window_end needs variables.window_start")
    # Both are UTC in one fixed-width format, so text order is time order.
    if start is not None and end is not None and end <= start:
        raise BadRequest("variables.window_end must be after variables.window_start")
    for key, moment in (("window_start", start), ("window_end", end)):
        if key in variables:
            variables[key] = moment or ""
    return variables


def _source_update(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - set(SOURCE_UPDATE_FIELDS):
        raise BadRequest(f"source_update must be an object of {', '.join(SOURCE_UPDATE_FIELDS)}")
    return {key: str(value.get(key, ""))[:MAX_SOURCE_UPDATE_LENGTH] for key in SOURCE_UPDATE_FIELDS}


def _holds_for_quiet_hours(settings: Settings, template: str, choice: object) -> bool:
    """Whether recipients in their quiet hours wait for the morning. The stage's policy
    (`QUIET_HOURS_OVERRIDE`) names the templates that may go out at night, outage notices by
    default; ops may still hold one of those ("hold"), never send another kind ("send")."""
    may_override = template in settings.quiet_hours_override
    if choice is None:
        return not may_override
    if choice == "hold":
        return True
    if choice == "send":
        if not may_override:
            raise BadRequest(
                f"{template} notices wait for quiet hours; only "
                f"{', '.join(sorted(settings.quiet_hours_override)) or 'no template'} may go "
                "out inside them (QUIET_HOURS_OVERRIDE)"
            )
        return False
    raise BadRequest('quiet_hours must be "hold" or "send"')


def create_broadcast(
    services: Services,
    payload: object,
    *,
    actor: str,
    now: datetime | None = None,
    source_update: Mapping[str, str] | None = None,
) -> Broadcast:
    """A draft. `source_update` is what a status source said (its poller passes it; the API
    cannot, so nobody can put words in a source's mouth on the incident's timeline)."""
    if not isinstance(payload, Mapping):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(payload) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(unknown)}")
    incident_id = payload.get("incident_id")
    if not isinstance(incident_id, str):
        raise BadRequest("incident_id is required")
    incident = get_incident(services.store, incident_id)
    phase = parse_enum(Phase, payload.get("phase", "initial"), "phase")
    siblings = services.store.broadcasts_for_incident(incident_id)
    audience: AudienceSelector | None = None
    if phase is Phase.INITIAL:
        if any(b.phase is Phase.INITIAL for b in siblings):
            raise Conflict("this incident already has an initial broadcast; send an update")
        audience = AudienceSelector.from_dict(
            payload.get("audience")
            or {"services": list(incident.services), "regions": list(incident.regions)}
        )
    else:
        if payload.get("audience") is not None:
            raise BadRequest(
                "updates and the all-clear go to the initial broadcast's frozen audience; "
                "omit 'audience'"
            )
        if not any(b.phase is Phase.INITIAL for b in siblings):
            raise Conflict("send the initial broadcast of this incident first")
    template = payload.get("template") or notices.kind_for_phase(phase)
    if not isinstance(template, str) or template not in notices.available_kinds():
        raise BadRequest(f"template must be one of: {', '.join(notices.available_kinds())}")
    channels = _channels(payload.get("channels"))
    public_post = payload.get("public_post", False)
    if not isinstance(public_post, bool):
        raise BadRequest("public_post must be true or false")
    hold = _holds_for_quiet_hours(services.settings, template, payload.get("quiet_hours"))
    broadcast = Broadcast(
        broadcast_id=f"bc_{uuid.uuid4().hex[:16]}",
        incident_id=incident.incident_id,
        phase=phase,
        template=template,
        channels=channels,
        audience=audience,
        variables=_variables(payload.get("variables")),
        status=BroadcastStatus.DRAFT,
        created_by=actor,
        created_at=iso(now or utcnow()),
        counts={c: ChannelCounts() for c in channels},
        public_post=public_post,
        source_update=_source_update(source_update),
        hold_quiet_hours=hold,
    )
    services.store.create_broadcast(broadcast)
    return broadcast


def get_broadcast(store: Store, broadcast_id: str) -> Broadcast:
    broadcast = store.get_broadcast(broadcast_id, consistent=True)
    if broadcast is None:
        raise NotFound(f"no broadcast {broadcast_id}")
    return broadcast


def list_for_incident(store: Store, incident_id: str) -> dict[str, Any]:
    get_incident(store, incident_id)
    found = sorted(store.broadcasts_for_incident(incident_id), key=lambda b: b.created_at)
    return {"broadcasts": [b.to_dict() for b in found]}


def _selector(broadcast: Broadcast) -> AudienceSelector | None:
    """The initial phase resolves its selector; later phases read the frozen snapshot."""
    return broadcast.audience if broadcast.phase is Phase.INITIAL else None


def count_audience(store: Store, broadcast: Broadcast, page_size: int) -> audiences.AudienceCount:
    count = audiences.AudienceCount()
    for page in audiences.iterate_pages(
        store, selector=_selector(broadcast), incident_id=broadcast.incident_id, size=page_size
    ):
        count.add(page.customers, broadcast.channels)
    return count


def placeholder_customer(incident: Incident) -> Customer:
    return Customer(
        customer_id="sample",
        name="Alex Sample",
        phone=None,
        email=None,
        x_handle=None,
        channels=(Channel.SMS,),
        locale="en",
        time_zone="UTC",
        services=(
            Subscription(
                incident.services[0], incident.regions[0] if incident.regions else "all", "00000"
            ),
        ),
    )


def render_for(
    settings: Settings,
    broadcast: Broadcast,
    incident: Incident,
    customer: Customer,
    channel: Channel,
    *,
    unsubscribe_url: str | None = None,
) -> notices.RenderedNotice:
    context = notices.notice_context(
        customer,
        incident,
        broadcast.variables,
        brand=settings.brand,
        unsubscribe_url=unsubscribe_url,
    )
    return notices.render_notice(broadcast.template, channel, customer.locale, context)


def preview(
    services: Services, broadcast_id: str, *, customer_id: str | None = None
) -> dict[str, Any]:
    """Every channel rendered for one sample customer, and who would receive what."""
    store = services.store
    broadcast = get_broadcast(store, broadcast_id)
    incident = get_incident(store, broadcast.incident_id)
    count = count_audience(store, broadcast, services.settings.plan_page_size)
    if customer_id is not None:
        sample = store.get_customer(customer_id)
        if sample is None:
            raise NotFound(f"no customer {customer_id}")
    else:
        sample = count.sample or placeholder_customer(incident)
    rendered: dict[str, Any] = {}
    for channel in (*broadcast.channels, Channel.SOCIAL):
        notice = render_for(services.settings, broadcast, incident, sample, channel)
        entry: dict[str, object] = dict(notice.to_dict())
        if channel is Channel.SMS:
            entry["segments"] = notices.sms_segments(notice.text).to_dict()
        if channel is Channel.SOCIAL:
            entry["length"] = len(notice.text)
            entry["fits"] = len(notice.text) <= SOCIAL_LIMIT
        rendered[channel.value] = entry
    return {
        "broadcast": broadcast.to_dict(),
        "sample_customer_id": sample.customer_id,
        "locale": sample.locale,
        "recipients": count.to_dict(broadcast.channels),
        "rendered": rendered,
    }


def approve(
    services: Services,
    broadcast_id: str,
    *,
    actor: str,
    now: datetime | None = None,
    automated: bool = False,
) -> Broadcast:
    """Approve a draft. Above `second_approval_threshold` recipients a person cannot
    approve their own draft: one mistyped audience can text a million people. `automated`
    is a status source's policy, which a person approved when they configured it."""
    store = services.store
    broadcast = get_broadcast(store, broadcast_id)
    if broadcast.status is not BroadcastStatus.DRAFT:
        raise Conflict(f"broadcast is {broadcast.status.value}; only a draft can be approved")
    if not automated and actor == broadcast.created_by:
        threshold = services.settings.second_approval_threshold
        reach = count_audience(store, broadcast, services.settings.plan_page_size).total
        if reach > threshold:
            raise Forbidden(
                f"this broadcast reaches {reach} customers (more than {threshold}): "
                "someone other than its author must approve it"
            )
    # A template that cannot render must fail here, not for every recipient later.
    incident = get_incident(store, broadcast.incident_id)
    sample = placeholder_customer(incident)
    for channel in broadcast.channels:
        render_for(services.settings, broadcast, incident, sample, channel)
    if broadcast.public_post:
        post = render_for(services.settings, broadcast, incident, sample, Channel.SOCIAL).text
        if len(post) > SOCIAL_LIMIT:
            raise BadRequest(
                f"the public post is {len(post)} characters; X allows {SOCIAL_LIMIT}: "
                "shorten the wording or do without the public post"
            )
    if not store.transition(
        broadcast_id,
        BroadcastStatus.DRAFT,
        BroadcastStatus.APPROVED,
        approved_by=actor,
        approved_at=iso(now or utcnow()),
    ):
        raise Conflict("broadcast changed while approving; reload it")
    return get_broadcast(store, broadcast_id)


def halt(
    services: Services, broadcast_id: str, *, actor: str, now: datetime | None = None
) -> Broadcast:
    """The kill switch: an approved or sending broadcast stops for good. The planner stops
    at its next step and delivery workers drop its jobs from their next batch on."""
    store = services.store
    for status in (BroadcastStatus.SENDING, BroadcastStatus.APPROVED):
        if store.transition(
            broadcast_id,
            status,
            BroadcastStatus.HALTED,
            halted_by=actor,
            halted_at=iso(now or utcnow()),
        ):
            # Who halted it is on the broadcast (`halted_by`) and in the audit log; a
            # person's name has no place in the logs.
            log.warning("broadcast %s halted", broadcast_id)
            return get_broadcast(store, broadcast_id)
    broadcast = get_broadcast(store, broadcast_id)
    raise Conflict(
        f"broadcast is {broadcast.status.value}; only an approved or sending one can be stopped"
    )


def dry_run(services: Services, broadcast_id: str) -> dict[str, Any]:
    """Everything a send would do except sending: the audience counted page by page as the
    planner would, and each (channel, locale) notice rendered for a real recipient of it,
    so that a template that fails for one language shows before anyone is texted."""
    store, settings = services.store, services.settings
    broadcast = get_broadcast(store, broadcast_id)
    incident = get_incident(store, broadcast.incident_id)
    count = audiences.AudienceCount()
    samples: dict[tuple[Channel, str], Customer] = {}
    recipients: Counter[tuple[Channel, str]] = Counter()
    for page in audiences.iterate_pages(
        store,
        selector=_selector(broadcast),
        incident_id=broadcast.incident_id,
        size=settings.plan_page_size,
    ):
        count.add(page.customers, broadcast.channels)
        for customer in page.customers:
            channel = customer.primary_channel(broadcast.channels)
            if channel is not None:
                samples.setdefault((channel, customer.locale), customer)
                recipients[(channel, customer.locale)] += 1
    rendered: list[dict[str, Any]] = []
    sms_segments = 0
    for (channel, locale), sample in sorted(
        samples.items(), key=lambda i: (i[0][0].value, i[0][1])
    ):
        entry: dict[str, Any] = {
            "channel": channel.value,
            "locale": locale,
            "recipients": recipients[(channel, locale)],
            "sample_customer_id": sample.customer_id,
        }
        try:
            notice = render_for(settings, broadcast, incident, sample, channel)
        except ForewarnError as exc:
            entry["error"] = exc.message
        else:
            entry["text"] = notice.text
            if channel is Channel.SMS:
                segments = notices.sms_segments(notice.text)
                entry["segments"] = segments.to_dict()
                sms_segments += segments.segments * recipients[(channel, locale)]
        rendered.append(entry)
    return {
        "broadcast": broadcast.to_dict(),
        "recipients": count.to_dict(broadcast.channels),
        "notices": rendered,
        "errors": sum(1 for entry in rendered if "error" in entry),
        "sms_segments": sms_segments,
    }


SETTLED_WITH_REASON = ("failed", "suppressed", "fell_back")


def reconcile(services: Services, broadcast_id: str) -> dict[str, Any]:
    """Account for every customer of the broadcast: audience = sent + suppressed + failed
    (with reasons) + deferred (held for quiet hours) + waiting + unreachable, from the
    counters and, row by row, the ledger; every disagreement between the two, or with the
    audience, is named in `gaps`. A notice that fell back to another channel is planned
    twice, once per channel, and counted once."""
    broadcast = get_broadcast(services.store, broadcast_id)
    counted = broadcast.total()
    ledger: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    released: set[str] = set()  # customers whose held notice has come out of quiet hours
    for row in services.store.deliveries(broadcast_id):
        status = str(row.get("status", ""))
        ledger[status] += 1
        if row.get("held"):
            released.add(str(row.get("customer_id")))
        if status in SETTLED_WITH_REASON:
            reasons[str(row.get("reason") or "no reason recorded")] += 1
    settled = {status: ledger[status] for status in ("sent", "digested", *SETTLED_WITH_REASON)}
    waiting = counted.planned - sum(settled.values())
    gaps = [
        f"{status}: the broadcast counts {count}, the ledger holds {settled[status]}"
        for status in settled
        if (count := getattr(counted, status)) != settled[status]
    ]
    if broadcast.status is BroadcastStatus.SENT and waiting:
        gaps.append(f"{waiting} planned notice(s) not settled, yet the broadcast is sent")
    if waiting < 0:
        gaps.append(f"{-waiting} more notice(s) settled than were planned")
    deferred = min(max(0, waiting), broadcast.deferred - len(released))
    return {
        "broadcast_id": broadcast_id,
        "status": broadcast.status.value,
        "planning_done": broadcast.planning_done,
        "audience": counted.planned - counted.fell_back + broadcast.unreachable,
        "unreachable": broadcast.unreachable,
        **settled,
        "deferred": deferred,
        "waiting": max(0, waiting) - deferred,
        "in_flight": ledger["sending"],
        "to_retry": ledger["retry"],
        "reasons": dict(reasons.most_common()),
        "gaps": gaps,
    }


def send(services: Services, broadcast_id: str) -> Broadcast:
    store = services.store
    broadcast = get_broadcast(store, broadcast_id)
    if broadcast.status is not BroadcastStatus.APPROVED:
        raise Conflict(f"broadcast is {broadcast.status.value}; approve it before sending")
    if broadcast.phase is not Phase.INITIAL:
        incident = get_incident(store, broadcast.incident_id)
        if not incident.audience_frozen:
            raise Conflict("the initial broadcast has not finished resolving its audience yet")
    if not store.transition(
        broadcast_id,
        BroadcastStatus.APPROVED,
        BroadcastStatus.SENDING,
        plan_touched=int(time.time()),
    ):
        raise Conflict("broadcast changed while sending; reload it")
    queues.send_json(services.settings.names.planner_queue, [{"broadcast_id": broadcast_id}])
    return get_broadcast(store, broadcast_id)


def plan_message(services: Services, body: str) -> None:
    try:
        broadcast_id = json.loads(body)["broadcast_id"]
    except (ValueError, KeyError, TypeError):
        # Never plannable; leave it for the dead-letter queue rather than crash-loop silently.
        raise ValueError("malformed planner message") from None
    with observability.correlated(broadcast_id=str(broadcast_id)):
        plan_step(services, str(broadcast_id))


def plan_step(services: Services, broadcast_id: str) -> None:
    """Plan the page at the broadcast's cursor, then hand the rest to the next step."""
    store, settings = services.store, services.settings
    broadcast = store.get_broadcast(broadcast_id, consistent=True)
    if broadcast is None or broadcast.status is not BroadcastStatus.SENDING:
        return
    if broadcast.planning_done:
        finish_if_complete(store, broadcast_id)
        return
    cursor = broadcast.plan_cursor
    size = settings.plan_page_size
    selector = _selector(broadcast)
    page = audiences.page_at(
        store, selector=selector, incident_id=broadcast.incident_id, cursor=cursor, size=size
    )
    recipients = [
        (customer, channel)
        for customer in page.customers
        if (channel := customer.primary_channel(broadcast.channels)) is not None
    ]
    planned = Counter(channel for _, channel in recipients)
    held = _holds(settings, broadcast, recipients, utcnow())
    jobs = [
        job
        for not_before, group in held.items()
        for job in delivery_jobs(broadcast_id, group, not_before=not_before)
    ]
    _write_and_send(
        settings, store, broadcast.incident_id, page.customers if selector else [], jobs
    )
    if page.done and selector is not None:
        # Freeze before the final commit: a retry of this step can then still freeze it.
        store.freeze_audience(broadcast.incident_id)
    committed = store.commit_plan_page(
        broadcast_id,
        expected_cursor=cursor,
        next_cursor=page.next_cursor,
        planned=planned,
        unreachable=len(page.customers) - sum(planned.values()),
        done=page.done,
        deferred=sum(len(group) for not_before, group in held.items() if not_before),
    )
    if not committed:
        # Another step planned this page first; it carries the plan on.
        return
    log.info("planned %d recipients of %s", len(recipients), broadcast_id)
    if broadcast.public_post and not broadcast.public_post_id:
        # Every step tries (the claim lets one post): a step that died before posting is
        # made good by the next. Imported here: public_posts builds on this module.
        from chalicelib import public_posts

        public_posts.publish(services, broadcast)
    if not page.done:
        queues.send_json(settings.names.planner_queue, [{"broadcast_id": broadcast_id}])
        return
    finish_if_complete(store, broadcast_id)


def _write_and_send(
    settings: Settings,
    store: Store,
    incident_id: str,
    snapshot: Sequence[Customer],
    jobs: Sequence[dict[str, Any]],
) -> None:
    """Write the page's snapshot rows and send its delivery jobs, `plan_concurrency` calls
    at a time: one after another they made a step of 1,000 take about a second. Every call
    is idempotent, so a step that fails part way is simply run again."""
    writes = [
        partial(store.put_audience, incident_id, snapshot[start : start + BATCH_WRITE_ITEMS])
        for start in range(0, len(snapshot), BATCH_WRITE_ITEMS)
    ]
    sends = [
        partial(
            queues.send_json, settings.names.delivery_queue, jobs[start : start + queues.SEND_BATCH]
        )
        for start in range(0, len(jobs), queues.SEND_BATCH)
    ]
    concurrency.run_all([*writes, *sends], workers=settings.plan_concurrency)


RECIPIENTS_PER_JOB = 10


def _holds(
    settings: Settings,
    broadcast: Broadcast,
    recipients: Sequence[tuple[Customer, Channel]],
    now: datetime,
) -> dict[int, list[tuple[Customer, Channel]]]:
    """The recipients by when their notice may go out (epoch seconds; 0: now), so that each
    queue message holds recipients whose quiet hours end together."""
    quiet = settings.quiet_hours if broadcast.hold_quiet_hours else None
    groups: dict[int, list[tuple[Customer, Channel]]] = {}
    for customer, channel in recipients:
        ends = quiet.ends_after(now, customer.time_zone) if quiet else None
        groups.setdefault(int(ends.timestamp()) if ends else 0, []).append((customer, channel))
    return groups


def delivery_jobs(
    broadcast_id: str, recipients: Sequence[tuple[Customer, Channel]], *, not_before: int = 0
) -> list[dict[str, Any]]:
    """Queue messages of up to ten recipients each: a tenth of the queue calls of one message
    per recipient. A retried message re-sends nothing: the ledger skips settled recipients.
    `not_before` (epoch seconds) holds the message until the recipients' quiet hours end."""
    return [
        {
            "broadcast_id": broadcast_id,
            "recipients": [
                {"channel": channel.value, "customer": customer.to_dict()}
                for customer, channel in recipients[start : start + RECIPIENTS_PER_JOB]
            ],
            **({"not_before": not_before} if not_before else {}),
        }
        for start in range(0, len(recipients), RECIPIENTS_PER_JOB)
    ]


def finish_if_complete(store: Store, broadcast_id: str, now: datetime | None = None) -> bool:
    broadcast = store.get_broadcast(broadcast_id, consistent=True)
    if broadcast is None or broadcast.status is not BroadcastStatus.SENDING:
        return False
    if not broadcast.is_complete():
        return False
    finished_at = now or utcnow()
    finished = store.transition(
        broadcast_id, BroadcastStatus.SENDING, BroadcastStatus.SENT, sent_at=iso(finished_at)
    )
    if finished and broadcast.phase is Phase.INITIAL:
        _record_all_told(store, broadcast, finished_at)
    return finished


def _record_all_told(store: Store, broadcast: Broadcast, finished_at: datetime) -> None:
    """`AllToldSeconds`: from the incident's opening to every customer of its initial
    notice having been told (as the dashboard shows it). Once per broadcast: one caller
    wins the transition to sent."""
    try:
        incident = store.get_incident(broadcast.incident_id)
        if incident is not None:
            observability.elapsed("AllToldSeconds", incident.created_at, finished_at)
    except Exception as exc:
        # A metric must never fail the delivery batch or sweep that finished the broadcast.
        log.warning(
            "all-told time of %s not recorded: %s", broadcast.broadcast_id, type(exc).__name__
        )


def note_first_notice(store: Store, broadcast: Broadcast, incident: Incident, at: datetime) -> None:
    """A notice of `broadcast` went out at `at`. The first for an initial broadcast ends
    the lead time, `LeadTimeSeconds`: from the first signal (an emerging issue's first
    post, a status source's first update, else the incident's opening) to the first
    notice. Once per broadcast: a conditional write lets one worker record it."""
    if broadcast.phase is not Phase.INITIAL or broadcast.first_sent_at:
        return
    try:
        if store.mark_first_sent(broadcast.broadcast_id, iso(at)):
            observability.elapsed("LeadTimeSeconds", incident.signalled_at, at)
    except Exception as exc:
        # As above: a metric never fails the delivery batch.
        log.warning(
            "first notice of %s not recorded: %s", broadcast.broadcast_id, type(exc).__name__
        )


STALLED_PLAN_SECONDS = 120


def sweep(services: Services) -> dict[str, int]:
    """Safety net on a schedule: finish complete broadcasts, restart stalled planning."""
    finished = resumed = 0
    now = int(time.time())
    for broadcast in services.store.broadcasts_in_status(BroadcastStatus.SENDING):
        if broadcast.planning_done:
            finished += finish_if_complete(services.store, broadcast.broadcast_id)
        elif now - broadcast.plan_touched > STALLED_PLAN_SECONDS:
            # A duplicate planner message is harmless: only one step can move the cursor.
            queues.send_json(
                services.settings.names.planner_queue, [{"broadcast_id": broadcast.broadcast_id}]
            )
            resumed += 1
    return {"finished": finished, "resumed": resumed}
