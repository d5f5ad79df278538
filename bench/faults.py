"""Fault injection: a broadcast under throttling, permanent failures, a worker killed between
the send and the settle, and duplicated queue messages, against the same broadcast without
them.

One scenario serves the benchmark (`run`: 10,000 customers on a moto server of its own) and
the test suite (tests/test_fault_injection.py: a few hundred on the test stack). `install`
puts the faults into this process's real boto3 clients and code paths, `check` reads the
figures back from the AWS server's own record of what was sent, the delivery ledger and
`broadcasts.reconcile`.

Each fault is decided by a hash of the seed and of what it concerns (an address and the
number of the attempt, a customer, a queue message's recipients), never by a random draw:
a run can be repeated, an address that fails permanently fails on every attempt, and a
throttled address goes through within `max_throttles` attempts.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.utils import parseaddr
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bench import fanout
from bench.motoserver import MotoProcess
from bench.result import BenchResult, Goal
from forewarn_cli.local.seed import demo_customers

if TYPE_CHECKING:
    from chalicelib.broadcasts import Services
    from chalicelib.domain import Channel, Customer

NAME = "fault_injection"
# Goal on throughput, faulted over fault-free: at least half, i.e. the faults may at most
# double the time a broadcast takes. Set from the fault model before any run: a fifth of
# provider calls throttled means about 1.25 calls per address, but a message is retried
# whole when any of its ten recipients is throttled (1 - 0.8**10 = 89% of messages come
# back once, about a third twice), and each settled recipient of a retried message costs a
# refused claim and a read again: up to about twice the ledger work of a clean run. On top
# come the backoffs of the last retries and a killed worker's lease, seconds against minutes.
GOAL = Goal("at_least", 0.5)
CONCURRENCY = fanout.CONCURRENCY
# Generous: the longest quiet spell the scenario makes is a message waiting out its backoff
# (at most 31 s at its fifth receive); longer than this and something is stuck.
STALL_SECONDS = 300.0
DRAIN_SECONDS = 300.0
LEASE_ENV = "DELIVERY_LEASE_SECONDS"
# Area codes for unique numbers (see `customer_rows`); 10,000 numbers each.
AREA_CODES = (201, 202, 212, 312, 415, 613)
SETTLED_UNSENT = ("failed", "suppressed")


def _fraction(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts`: the same decision on every run and in every
    process, unlike `hash()`, which Python salts per process."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def address_key(channel: Channel | str, address: str) -> str:
    # Email addresses are compared as SES and the suppressions table do: case-insensitively.
    text = str(getattr(channel, "value", channel))
    return f"{text}#{address.lower() if text == 'email' else address}"


@dataclass(frozen=True)
class Faults:
    """What goes wrong, how often, and the seed that decides where."""

    # Share of provider calls (SNS Publish, SES SendRawEmail) answered `Throttling`.
    throttle_rate: float = 0.20
    # Share of addresses the provider refuses for good (InvalidParameter, MessageRejected).
    permanent_rate: float = 0.01
    # Workers killed after the provider accepted a notice and before it was recorded.
    kill_after_send: int = 3
    # Share of delivery-queue messages sent twice; the first message always is.
    duplicate_rate: float = 0.01
    seed: int = 6
    # At most this many throttles per address. A message is received again whenever any of
    # its ten recipients is throttled and goes to the dead-letter queue after 8 receives;
    # uncapped, 0.2**8 per address would put one of 10,000 messages there in about one run
    # in forty, which tests the dead-letter queue, not retries. Three leave receives for a
    # killed worker's lease to run out on top.
    max_throttles: int = 3
    # A killed worker's claim is settled "in doubt" once its lease has run out. With the
    # stages' 60 s its message would come back, still in flight, five to seven times over one
    # to two minutes (backoff 1, 2, 4, 8, 16, 32 s), and that one wait would be the run's
    # tail. The lease must still outlast a live claim-send-settle, which on the local server
    # can queue behind a Query page of about 2 s; a shorter one lets a duplicate message
    # take a live claim for a dead one.
    lease_seconds: int = 10

    def __post_init__(self) -> None:
        for name in ("throttle_rate", "permanent_rate", "duplicate_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1)")
        if self.kill_after_send < 1 or self.lease_seconds < 1 or self.max_throttles < 0:
            raise ValueError(
                "kill_after_send and lease_seconds must be positive, max_throttles not negative"
            )

    def rejects(self, channel: Channel | str, address: str) -> bool:
        """Whether the provider refuses this address on every attempt."""
        key = address_key(channel, address)
        return _fraction(self.seed, "permanent", key) < self.permanent_rate

    def throttles(self, channel: Channel | str, address: str, attempt: int) -> bool:
        """Whether the provider answers this address's `attempt`-th call (from 1) with a
        throttle."""
        key = address_key(channel, address)
        return (
            attempt <= self.max_throttles
            and _fraction(self.seed, "throttle", key, attempt) < self.throttle_rate
        )

    def duplicates(self, recipients: str) -> bool:
        return _fraction(self.seed, "duplicate", recipients) < self.duplicate_rate

    def first_choice_rejected(
        self, customers: Iterable[Customer], offered: Iterable[Channel]
    ) -> list[str]:
        """Customers whose first channel's address the provider refuses: failed without a
        fallback, carried by their next channel with one."""
        offered = tuple(offered)
        return [
            c.customer_id
            for c in customers
            if (channels := c.route(offered)) and self._refuses(c, channels[0])
        ]

    def all_rejected(self, customers: Iterable[Customer], offered: Iterable[Channel]) -> list[str]:
        """Customers every one of whose channels is refused: failed with or without fallback."""
        offered = tuple(offered)
        return [
            c.customer_id
            for c in customers
            if (channels := c.route(offered))
            and all(self._refuses(c, channel) for channel in channels)
        ]

    def victims(self, customers: Iterable[Customer], offered: Iterable[Channel]) -> list[str]:
        """The customers whose worker is killed once their notice has been sent: chosen by
        the seed among those whose first channel accepts, so the kill follows a real send."""
        offered = tuple(offered)
        eligible = [
            c.customer_id
            for c in customers
            if (channels := c.route(offered)) and not self._refuses(c, channels[0])
        ]
        eligible.sort(key=lambda customer_id: _fraction(self.seed, "kill", customer_id))
        return eligible[: self.kill_after_send]

    def _refuses(self, customer: Customer, channel: Channel) -> bool:
        return self.rejects(channel, customer.contact(channel) or "")


@dataclass
class Injected:
    """What the faults did, counted as they happened."""

    provider_calls: int = 0
    throttles: int = 0
    rejections: int = 0
    rejected_addresses: set[str] = field(default_factory=set)
    kills: int = 0
    killed: list[str] = field(default_factory=list)
    duplicated_messages: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider_calls": self.provider_calls,
            "throttles": self.throttles,
            "permanent_rejections": self.rejections,
            "rejected_addresses": len(self.rejected_addresses),
            "kills": self.kills,
            "duplicated_messages": self.duplicated_messages,
        }


class WorkerKilled(RuntimeError):
    """Stands for a worker that died after the provider call and before the settle."""


def provider_error(code: str, status: int = 400) -> tuple[Any, dict[str, Any]]:
    """What botocore makes of an error answer; returned from a `before-call` hook, it is
    raised as the service's own ClientError without a request being made."""
    from botocore.awsrequest import AWSResponse

    return (
        AWSResponse("http://fault", status, {}, None),
        {"Error": {"Code": code, "Message": f"injected {code}"}, "ResponseMetadata": {}},
    )


class Installed:
    """The faults at work in this process; `uninstall` (or leaving the `with`) removes them."""

    def __init__(self, faults: Faults, victims: Sequence[str]) -> None:
        self.faults = faults
        self.victims = tuple(victims)
        self.counts = Injected()
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()
        self._pending_victims = set(victims)
        self._first_message = True
        self._undo: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ the faults

    def provider_answer(self, channel: str, address: str, permanent_code: str) -> Any:
        """None lets the call through; an error answer stands in for the provider's."""
        key = address_key(channel, address)
        with self._lock:
            self.counts.provider_calls += 1
            self._attempts[key] += 1
            if self.faults.throttles(channel, address, self._attempts[key]):
                self.counts.throttles += 1
                return provider_error("Throttling")
            if self.faults.rejects(channel, address):
                self.counts.rejections += 1
                self.counts.rejected_addresses.add(key)
                return provider_error(permanent_code)
        return None

    def kills_now(self, customer_id: str) -> bool:
        with self._lock:
            if customer_id not in self._pending_victims:
                return False
            self._pending_victims.discard(customer_id)
            self.counts.kills += 1
            self.counts.killed.append(customer_id)
            return True

    def copies(self, bodies: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The delivery messages to send a second time."""
        chosen: list[Mapping[str, Any]] = []
        with self._lock:
            for body in bodies:
                recipients = ",".join(
                    str(r.get("customer", {}).get("customer_id", ""))
                    for r in body.get("recipients", [])
                )
                if self._first_message or self.faults.duplicates(recipients):
                    chosen.append(body)
                self._first_message = False
            self.counts.duplicated_messages += len(chosen)
        return chosen

    # ------------------------------------------------------------------ lifecycle

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> Installed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.uninstall()


def install(
    faults: Faults, customers: Sequence[Customer], offered: Iterable[Channel] | None = None
) -> Installed:
    """Put the faults into this process: on the stack it runs against, for the broadcast to
    `customers` on the `offered` channels (default: SMS and email).

    Sets the stage's delivery lease and resets the runtime (its clients and settings) first,
    so the provider hooks sit on the clients the workers will use: install before sending,
    and uninstall before resetting the runtime again.
    """
    from chalicelib import aws, queues, runtime
    from chalicelib.config import settings
    from chalicelib.domain import DELIVERABLE_CHANNELS
    from chalicelib.store import Store

    channels = tuple(offered) if offered is not None else DELIVERABLE_CHANNELS
    installed = Installed(faults, faults.victims(customers, channels))
    previous_lease = os.environ.get(LEASE_ENV)

    def restore_lease() -> None:
        if previous_lease is None:
            os.environ.pop(LEASE_ENV, None)
        else:
            os.environ[LEASE_ENV] = previous_lease
        runtime.reset()

    os.environ[LEASE_ENV] = str(faults.lease_seconds)
    runtime.reset()
    installed._undo.append(restore_lease)

    # The requests as botocore serialised them (the query protocol of SNS and SES): the
    # address is a form field of the body.
    for service, operation, channel, field_name, permanent_code in (
        ("sns", "Publish", "sms", "PhoneNumber", "InvalidParameter"),
        ("ses", "SendRawEmail", "email", "Destinations.member.1", "MessageRejected"),
    ):
        events = aws.client(service).meta.events
        event = f"before-call.{service}.{operation}"
        hook = _provider_hook(installed, channel, field_name, permanent_code)
        events.register(event, hook)
        installed._undo.append(functools.partial(events.unregister, event, hook))

    real_record = Store.record_outcome
    signature = inspect.signature(real_record)

    def record_outcome(store: Any, *args: Any, **kwargs: Any) -> Any:
        call = signature.bind(store, *args, **kwargs).arguments
        # Only a settle that follows an accepted send: killing the settle of a refused send
        # would make the retry record as sent, in doubt, a notice that never went out.
        if (
            call.get("status") == "sent"
            and call.get("provider_id")
            and installed.kills_now(str(call["customer_id"]))
        ):
            raise WorkerKilled("injected: worker killed after sending, before recording")
        return real_record(store, *args, **kwargs)

    setattr(Store, "record_outcome", record_outcome)  # noqa: B010
    installed._undo.append(lambda: setattr(Store, "record_outcome", real_record))

    real_send_json = queues.send_json
    delivery_queue = settings().names.delivery_queue

    def send_json(queue_name: str, bodies: Sequence[Mapping[str, Any]]) -> None:
        if queue_name == delivery_queue:
            # After the originals: the copy is received later, often by another worker.
            bodies = [*bodies, *installed.copies(bodies)]
        real_send_json(queue_name, bodies)

    setattr(queues, "send_json", send_json)  # noqa: B010
    installed._undo.append(lambda: setattr(queues, "send_json", real_send_json))
    return installed


def _provider_hook(
    installed: Installed, channel: str, field_name: str, permanent_code: str
) -> Callable[..., Any]:
    def hook(params: Mapping[str, Any], **kwargs: Any) -> Any:
        return installed.provider_answer(channel, str(params["body"][field_name]), permanent_code)

    return hook


# --------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class Figures:
    """What happened to a broadcast, from the AWS server's record of what it sent, the
    ledger and reconcile; `problems()` names each thing that should not have happened."""

    status: str
    audience: int
    unreachable: int
    sms_recorded: int
    emails_recorded: int
    # Customers sent more than one notice, over all their channels.
    duplicates: int
    # Customers sent nothing whose ledger does not say their last channel failed or was
    # suppressed.
    lost: int
    # Sends to an address of no customer of the broadcast.
    strays: int
    # Customers whose ledger holds a different number of `sent` rows than they were sent.
    ledger_disagrees: int
    # `failed` rows on an address the faults never refused: a transient fault taken for a
    # permanent one, or a failure nobody injected.
    failed_without_cause: int
    dead_letters: int
    ledger: dict[str, int]
    in_doubt: int
    claims: int
    reconcile: dict[str, Any]

    @property
    def sent(self) -> int:
        return self.sms_recorded + self.emails_recorded

    def problems(self) -> list[str]:
        found = [
            f"{value} {label}"
            for value, label in (
                (self.duplicates, "customer(s) sent more than one notice"),
                (self.lost, "customer(s) lost: nothing sent, and not settled failed"),
                (self.strays, "send(s) to addresses outside the audience"),
                (self.ledger_disagrees, "customer(s) whose ledger disagrees with the server"),
                (self.failed_without_cause, "failure(s) on addresses the provider accepts"),
                (self.dead_letters, "delivery message(s) in the dead-letter queue"),
            )
            if value
        ]
        if self.status != "sent":
            found.append(f"the broadcast is {self.status}, not sent")
        found.extend(f"reconcile: {gap}" for gap in self.reconcile.get("gaps", []))
        if self.reconcile.get("sent") != self.sent:
            found.append(
                f"reconcile counts {self.reconcile.get('sent')} sent, the server recorded "
                f"{self.sent}"
            )
        for key in ("waiting", "in_flight", "to_retry"):
            if self.reconcile.get(key):
                found.append(f"reconcile: {self.reconcile[key]} {key.replace('_', ' ')}")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "audience": self.audience,
            "unreachable": self.unreachable,
            "sms_recorded_by_server": self.sms_recorded,
            "emails_recorded_by_server": self.emails_recorded,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "strays": self.strays,
            "ledger_disagrees": self.ledger_disagrees,
            "failed_without_cause": self.failed_without_cause,
            "dead_letters": self.dead_letters,
            "ledger": dict(sorted(self.ledger.items())),
            "in_doubt": self.in_doubt,
            "claims": self.claims,
            "reconcile": {
                k: v for k, v in self.reconcile.items() if k not in ("broadcast_id", "reasons")
            },
            "problems": self.problems(),
        }


def server_record(moto_data: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The sends in moto's `/moto-api/data.json`, as the test stack's `delivered()` has them."""
    return {
        "sms": list(moto_data.get("sns", {}).get("SMS", [])),
        "email": list(moto_data.get("ses", {}).get("RawMessage", [])),
    }


def check(
    services: Services,
    broadcast_id: str,
    customers: Sequence[Customer],
    delivered: Mapping[str, Sequence[Mapping[str, Any]]],
    faults: Faults | None = None,
) -> Figures:
    """The figures of a broadcast to `customers`, `delivered` being the server's record
    (`{"sms": [...], "email": [...]}`). Holds with and without channel fallback: a customer
    counts once over all channels, and their outcome is that of the last channel, in their
    order of preference, that the ledger holds a row for."""
    from chalicelib import aws, broadcasts, queues
    from chalicelib.domain import Channel

    owner: dict[str, str] = {}
    for customer in customers:
        for channel in (Channel.SMS, Channel.EMAIL):
            if contact := customer.contact(channel):
                key = address_key(channel, contact)
                if owner.setdefault(key, customer.customer_id) != customer.customer_id:
                    raise ValueError(
                        f"two customers share {channel.value} {contact}: the server's record "
                        "cannot tell their notices apart"
                    )
    sends: Counter[str] = Counter()
    strays = 0
    for sms in delivered.get("sms", []):
        reached = {owner.get(address_key("sms", str(sms["phone_number"])))}
        strays += None in reached
        sends.update(r for r in reached if r)
    for mail in delivered.get("email", []):
        # moto lists the Destinations and the To header: one address, usually twice.
        reached = {
            owner.get(address_key("email", parseaddr(str(a))[1])) for a in mail["destinations"]
        }
        strays += None in reached
        sends.update(r for r in reached if r)

    rows: dict[str, dict[str, dict[str, Any]]] = {}
    statuses: Counter[str] = Counter()
    in_doubt = claims = 0
    for row in services.store.deliveries(broadcast_id):
        status = str(row.get("status", ""))
        statuses[status] += 1
        claims += int(row.get("attempts", 0))
        in_doubt += status == "sent" and str(row.get("reason") or "").startswith("in doubt")
        rows.setdefault(str(row["customer_id"]), {})[str(row["channel"])] = row

    broadcast = broadcasts.get_broadcast(services.store, broadcast_id)
    unreachable = lost = disagrees = failed_without_cause = 0
    for customer in customers:
        mine = rows.get(customer.customer_id, {})
        sent_rows = sum(r.get("status") == "sent" for r in mine.values())
        disagrees += sent_rows != sends[customer.customer_id]
        for channel_name, row in mine.items():
            if row.get("status") == "failed" and faults is not None:
                contact = customer.contact(Channel(channel_name)) or ""
                failed_without_cause += not faults.rejects(channel_name, contact)
        if not customer.route(broadcast.channels):
            unreachable += 1
            continue
        if sends[customer.customer_id]:
            continue
        last = next((mine[c.value] for c in reversed(customer.channels) if c.value in mine), None)
        lost += last is None or last.get("status") not in SETTLED_UNSENT

    dead_letter_queue = queues.queue_url(f"{services.settings.names.delivery_queue}-dlq")
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=dead_letter_queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return Figures(
        status=broadcast.status.value,
        audience=len(customers),
        unreachable=unreachable,
        sms_recorded=len(delivered.get("sms", [])),
        emails_recorded=len(delivered.get("email", [])),
        duplicates=sum(1 for count in sends.values() if count > 1),
        lost=lost,
        strays=strays,
        ledger_disagrees=disagrees,
        failed_without_cause=failed_without_cause,
        dead_letters=sum(int(v) for v in attributes.values()),
        ledger=dict(statuses),
        in_doubt=in_doubt,
        claims=claims,
        reconcile=broadcasts.reconcile(services, broadcast_id),
    )


# --------------------------------------------------------------------------- the benchmark


def customer_rows(count: int) -> list[dict[str, Any]]:
    """The demo customers, each with a number of their own: the demo set shares 600 numbers
    among larger sets, and `check` tells whose SMS the server recorded by its number."""
    if count > len(AREA_CODES) * 10_000:
        raise ValueError(f"at most {len(AREA_CODES) * 10_000:,} customers")
    return [
        {**row, "phone": f"+1{AREA_CODES[index // 10_000]}555{index % 10_000:04d}"}
        for index, row in enumerate(demo_customers(count))
    ]


def load_customers(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Customer], float]:
    """Validated and written as `forewarn run` seeds its demo customers; (customers, seconds)."""
    from chalicelib.customers import MAX_BATCH, validate_batch
    from chalicelib.runtime import services

    started = time.perf_counter()
    customers: list[Customer] = []
    for start in range(0, len(rows), MAX_BATCH):
        valid, rejected = validate_batch(rows[start : start + MAX_BATCH])
        if rejected:
            raise fanout.BenchError(f"invalid customer rows: {rejected[0].to_dict()}")
        services().store.load_new_customers(valid)
        customers.extend(valid)
    return customers, time.perf_counter() - started


@dataclass(frozen=True)
class FaultRun:
    recipients: int
    seconds: float
    seed_seconds: float
    figures: Figures
    injected: Injected | None
    expected: dict[str, int]
    server_cpu: dict[str, dict[str, float]]
    client_cpu_seconds: float
    handler_stats: dict[str, dict[str, int]]

    @property
    def rate(self) -> float:
        return self.recipients / self.seconds

    @property
    def messages_retried(self) -> int:
        return int(self.handler_stats.get("deliver_notices", {}).get("messages_failed", 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "recipients_per_second": round(self.rate, 2),
            "seed_seconds": round(self.seed_seconds, 1),
            **self.figures.to_dict(),
            "delivery_messages_retried": self.messages_retried,
            "injected": self.injected.to_dict() if self.injected else None,
            "expected": self.expected,
            "client_cpu_seconds": round(self.client_cpu_seconds, 1),
            "server_cpu_seconds": round(sum(a["cpu_s"] for a in self.server_cpu.values()), 1),
            "server_cpu_by_action": {
                name: {"calls": int(a["calls"]), "cpu_s": round(a["cpu_s"], 2)}
                for name, a in sorted(self.server_cpu.items(), key=lambda kv: -kv[1]["cpu_s"])
            },
            "handler_stats": self.handler_stats,
        }


def run_broadcast(
    moto: MotoProcess,
    rows: Sequence[Mapping[str, Any]],
    faults: Faults | None,
    *,
    concurrency: int = CONCURRENCY,
) -> FaultRun:
    """One broadcast to `rows` on a freshly set-up stack, with `faults` or none. Timed from
    approve + send until the broadcast is `sent`; then, untimed, the queues are drained (so
    a late second send would be on the record) and the figures checked."""
    from chalicelib import broadcasts
    from chalicelib.domain import BroadcastStatus
    from chalicelib.runtime import services

    stack = fanout._stack(moto, concurrency)
    installed: Installed | None = None
    try:
        # As `forewarn run` does, so that emails carry their unsubscribe link rather than
        # logging, once per email, that they cannot.
        stack.set_webhook_secrets()
        customers, seed_seconds = load_customers(rows)
        broadcast, _ = fanout.draft_broadcast(services())
        broadcast_id = broadcast.broadcast_id
        expected = {
            "first_choice_rejected": 0,
            "all_channels_rejected": 0,
        }
        if faults is not None:
            installed = install(faults, customers, broadcast.channels)
            expected = {
                "first_choice_rejected": len(
                    faults.first_choice_rejected(customers, broadcast.channels)
                ),
                "all_channels_rejected": len(faults.all_rejected(customers, broadcast.channels)),
            }
        svc = services()
        stack.start_events()
        moto.cpu_by_action(clear=True)
        cpu, started = fanout._process_cpu(), time.perf_counter()
        # Not the author: above SECOND_APPROVAL_THRESHOLD the author may not approve.
        broadcasts.approve(svc, broadcast_id, actor="bench-approver")
        broadcasts.send(svc, broadcast_id)
        fanout.wait_for_broadcast(
            broadcast_id,
            stack.runner,
            len(rows),
            lambda b: bool(b.status is BroadcastStatus.SENT),
            stall_seconds=STALL_SECONDS,
        )
        seconds = time.perf_counter() - started
        client_cpu, server_cpu = fanout._process_cpu() - cpu, moto.cpu_by_action()
        if not stack.runner.drain(DRAIN_SECONDS):
            raise fanout.BenchError(f"the queues did not drain in {DRAIN_SECONDS:.0f} s")
        stats = {name: dict(counts) for name, counts in stack.runner.stats.items()}
        figures = check(
            services(), broadcast_id, customers, server_record(moto.data()), faults=faults
        )
    finally:
        if installed is not None:
            installed.uninstall()
        stack.stop()
    return FaultRun(
        recipients=len(rows),
        seconds=seconds,
        seed_seconds=seed_seconds,
        figures=figures,
        injected=installed.counts if installed else None,
        expected=expected,
        server_cpu=server_cpu,
        client_cpu_seconds=client_cpu,
        handler_stats=stats,
    )


def run(
    recipients: int = 10_000, *, concurrency: int = CONCURRENCY, faults: Faults | None = None
) -> BenchResult:
    faults = faults or Faults()
    rows = customer_rows(recipients)
    with MotoProcess() as moto:
        clean = run_broadcast(moto, rows, None, concurrency=concurrency)
        moto.reset()
        faulted = run_broadcast(moto, rows, faults, concurrency=concurrency)
    details: dict[str, Any] = {
        "recipients": recipients,
        "concurrency": concurrency,
        "faults": asdict(faults),
        "fault_free": clean.to_dict(),
        "faulted": faulted.to_dict(),
        "time_ratio": round(faulted.seconds / clean.seconds, 3),
    }
    details["method_markdown"] = METHOD
    details["details_markdown"] = details_markdown(details)
    result = BenchResult(
        name=NAME,
        title=f"Fan-out to {recipients:,} customers under injected faults",
        unit="recipients/s",
        measured=faulted.rate,
        baseline=clean.rate,
        goal=GOAL,
        details=details,
    )
    problems = [
        f"{side}: {problem}"
        for side, side_run in (("fault-free", clean), ("faulted", faulted))
        for problem in side_run.figures.problems()
    ]
    injected = faulted.injected or Injected()
    for count, what in (
        (injected.throttles, "throttle"),
        (injected.rejections, "permanent failure"),
        (injected.kills, "kill"),
        (injected.duplicated_messages, "duplicated message"),
    ):
        if not count:
            problems.append(f"no {what} was injected")
    if problems:
        # Fails loudly, as the fan-out does: a broadcast that lost or duplicated a notice
        # measured nothing worth a ratio.
        raise fanout.BenchError("; ".join(problems))
    return result


METHOD = """\
**Scenario** (`bench/faults.py`, which `tests/test_fault_injection.py` runs at 200
customers). The fan-out's broadcast to the demo customers, each given a phone number of
their own so that every SMS the AWS server recorded names one customer, run twice on the
same moto server process, reset in between: once without faults (the baseline) and once
with these, put into the real boto3 clients and code paths of the process:

- **throttling**: a `before-call` hook on SNS `Publish` and SES `SendRawEmail` answers 20%
  of calls `Throttling`, decided by a hash of the seed, the address and the attempt's
  number; no address is throttled more than 3 times;
- **permanent failures**: 1% of addresses, by a hash of the seed and the address, are
  answered `InvalidParameter` (SNS) or `MessageRejected` (SES) on every attempt;
- **killed workers**: for 3 customers chosen by the seed among those whose first channel
  accepts, the settle after the provider accepted the notice (`Store.record_outcome`)
  raises, as if the worker had died there; the claim's lease (10 s here, 60 s on the
  stages) runs out and the retry must record the notice as sent in doubt, not send again;
- **duplicate SQS delivery**: 1% of delivery-queue messages (and always the first) are
  sent twice.

Both runs are timed from `approve` + `send` until the broadcast is `sent`, with 4 workers
per queue, as the fan-out is; then the queues are drained, untimed, so that a late second
send would be on the record. **Checked**, per customer, from the server's record of SMS
and emails: duplicates (customers sent more than one notice over all channels), lost
(customers sent nothing whose ledger does not say their last channel failed or was
suppressed; with channel fallback a customer whose first channel is refused may be carried
by the next), sends to no customer, customers whose ledger disagrees with the server,
failures on addresses the provider accepts, messages in the dead-letter queue, and
`broadcasts.reconcile`: no gaps, and its sent count equal to the server's. The run fails
if any of them is not zero, or if a kind of fault was never injected."""


def details_markdown(d: Mapping[str, Any]) -> str:
    clean, faulted = d["fault_free"], d["faulted"]
    injected, expected = faulted["injected"], faulted["expected"]

    def row(label: str, value: Callable[[Mapping[str, Any]], str]) -> str:
        return f"| {label} | {value(clean)} | {value(faulted)} |"

    def ledger(r: Mapping[str, Any]) -> str:
        counts = r["ledger"]
        return " / ".join(
            f"{counts.get(s, 0):,}" for s in ("sent", "failed", "suppressed", "fell_back")
        )

    def per_notice(r: Mapping[str, Any]) -> str:
        rows = sum(r["ledger"].values())
        return f"{r['claims'] / rows:.2f}" if rows else "—"

    def cpu(r: Mapping[str, Any]) -> float:
        return float(r["server_cpu_seconds"] + r["client_cpu_seconds"])

    lines = [
        f"{d['recipients']:,} recipients, {d['concurrency']} workers. The faulted run took "
        f"{d['time_ratio']:.2f} times as long as the fault-free one, and "
        f"{cpu(faulted) / cpu(clean):.2f} times the CPU of the AWS server and the benchmark "
        "process together, a figure that other load on the machine hardly moves.",
        "",
        "| | Fault-free | With faults |",
        "|---|---:|---:|",
        row("wall time", lambda r: f"{r['seconds']:,.1f} s"),
        row("recipients/s", lambda r: f"{r['recipients_per_second']:,.1f}"),
        row(
            "SMS + emails the server recorded",
            lambda r: f"{r['sms_recorded_by_server']:,} + {r['emails_recorded_by_server']:,}",
        ),
        row("duplicates / lost", lambda r: f"{r['duplicates']} / {r['lost']}"),
        row(
            "reconciled (gaps)",
            lambda r: (
                "yes (none)"
                if not r["reconcile"]["gaps"]
                else f"**no** ({len(r['reconcile']['gaps'])})"
            ),
        ),
        row("ledger: sent / failed / suppressed / fell back", ledger),
        row("sent in doubt (after a kill)", lambda r: f"{r['in_doubt']}"),
        row("ledger claims per row", per_notice),
        row("delivery messages retried", lambda r: f"{r['delivery_messages_retried']:,}"),
        row("AWS server CPU", lambda r: f"{r['server_cpu_seconds']:,.1f} s"),
        row("benchmark process CPU", lambda r: f"{r['client_cpu_seconds']:,.1f} s"),
        "",
        f"Injected: {injected['throttles']:,} throttles in {injected['provider_calls']:,} "
        f"provider calls; {injected['permanent_rejections']:,} permanent refusals of "
        f"{injected['rejected_addresses']:,} addresses ({expected['first_choice_rejected']} "
        f"customers' first channel, {expected['all_channels_rejected']} of them with no "
        f"channel that accepts); {injected['kills']} workers killed after sending; "
        f"{injected['duplicated_messages']} delivery messages sent twice. "
        f"Reconcile of the faulted run: {faulted['reconcile']['sent']:,} sent, "
        f"{faulted['reconcile']['failed']:,} failed, "
        f"{faulted['reconcile']['suppressed']:,} suppressed, "
        f"{faulted['reconcile']['waiting']:,} waiting, of {faulted['reconcile']['audience']:,}.",
    ]
    if d.get("note"):
        lines += ["", str(d["note"])]
    return "\n".join(lines)
