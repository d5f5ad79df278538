"""Fan-out: one broadcast to N customers on the local stack, against a bare boto3 loop.

Both sides run against the same moto server, in a process of its own so that it does not
share a GIL with the code being measured, and each starts from a freshly reset server
holding the same seeded customers.

Forewarn: from ``approve`` + ``send`` until the broadcast is ``sent`` with planned == sent
on every channel. That covers the planner (audience queries, snapshot writes, SQS fan-out)
and the delivery workers that LocalStack's EventRunner drives, ``concurrency`` per queue,
as Lambda's event source mappings would.

Baseline: the AWS calls a delivery cannot do without, written plainly. One thread reads
the audience with the same Query pages as the planner and hands each recipient to a pool of
``concurrency`` threads, which claim the ledger row (update_item), send (sns.publish or
ses.send_raw_email, with notices rendered by Forewarn's templates beforehand so messages
are the same size) and settle (transact_write_items with the same two updates). No queues,
no per-recipient rendering, no audience snapshot.
"""

from __future__ import annotations

import resource
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.motoserver import MotoProcess
from bench.result import BenchResult, Goal
from forewarn_cli.local.seed import SERVICES, demo_customers
from forewarn_cli.local.stack import LocalStack, free_port

NAME = "fanout"
GOAL = Goal("at_least", 0.7)
CONCURRENCY = 4
POLL_SECONDS = 0.05
# A run that makes no progress for this long is stuck, not slow.
STALL_SECONDS = 120.0
AUDIENCE = {"services": list(SERVICES)}


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class BenchError(RuntimeError):
    """The benchmark did not measure what it claims to: wrong counts, lost or extra sends."""


@dataclass(frozen=True)
class Run:
    recipients: int
    seconds: float
    by_channel: dict[str, int]
    sms_recorded: int
    emails_recorded: int
    seed_seconds: float
    server_rss_mb: float
    # Where the time went: CPU seconds of the AWS server per action, and of this process.
    server_cpu: dict[str, dict[str, float]]
    client_cpu_seconds: float
    extra: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.recipients / self.seconds

    @property
    def recorded(self) -> int:
        return self.sms_recorded + self.emails_recorded

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "recipients_per_second": round(self.rate, 2),
            "by_channel": self.by_channel,
            "sms_recorded_by_server": self.sms_recorded,
            "emails_recorded_by_server": self.emails_recorded,
            "duplicates": max(0, self.recorded - self.recipients),
            "lost": max(0, self.recipients - self.recorded),
            "seed_seconds": round(self.seed_seconds, 1),
            "server_rss_mb_after": round(self.server_rss_mb),
            "client_cpu_seconds": round(self.client_cpu_seconds, 1),
            "server_cpu_seconds": round(sum(a["cpu_s"] for a in self.server_cpu.values()), 1),
            "server_cpu_by_action": {
                name: {"calls": int(a["calls"]), "cpu_s": round(a["cpu_s"], 2)}
                for name, a in sorted(self.server_cpu.items(), key=lambda kv: -kv[1]["cpu_s"])
            },
            **self.extra,
        }


def run(recipients: int = 10_000, *, concurrency: int = CONCURRENCY) -> BenchResult:
    with MotoProcess() as moto:
        forewarn = run_forewarn(moto, recipients, concurrency=concurrency)
        moto.reset()
        baseline = run_baseline(moto, recipients, concurrency=concurrency)
    return BenchResult(
        name=NAME,
        title=f"Fan-out to {recipients:,} customers",
        unit="recipients/s",
        measured=forewarn.rate,
        baseline=baseline.rate,
        goal=GOAL,
        details={
            "recipients": recipients,
            "concurrency": concurrency,
            "forewarn": forewarn.to_dict(),
            "baseline": baseline.to_dict(),
        },
    )


# --------------------------------------------------------------------------- setup


def _stack(moto: MotoProcess, concurrency: int) -> LocalStack:
    """A LocalStack on the external server; start_aws() (re)creates infra/ resources."""
    stack = LocalStack(
        api_port=free_port(),
        customers=0,
        schedules=False,
        concurrency=concurrency,
        external_aws_url=moto.url,
    )
    stack.start_aws()
    # As `forewarn run` does: without the webhook keys, emails go out with no unsubscribe
    # link (and every batch logs so), which is not the path customers get.
    stack.set_webhook_secrets()
    return stack


def seed(stack: LocalStack, count: int) -> float:
    """The demo customers, as `forewarn run` seeds them; returns the seconds it took."""
    started = time.perf_counter()
    if stack.seed(count) != count:
        raise BenchError(f"seeding did not write {count} customers")
    return time.perf_counter() - started


def check_delivered(
    moto: MotoProcess, recipients: int, by_channel: dict[str, int]
) -> tuple[int, int]:
    """Exactly one SMS or email per recipient, as the AWS server itself recorded them."""
    sms, emails = moto.sent_messages()
    if sms + emails != recipients or sms != by_channel.get("sms", 0):
        raise BenchError(
            f"{recipients} recipients ({by_channel}) but the server recorded "
            f"{sms} SMS and {emails} emails"
        )
    return sms, emails


# --------------------------------------------------------------------------- Forewarn


def draft_broadcast(svc: Any) -> tuple[Any, Any]:
    """(broadcast, incident): a draft initial broadcast to every customer of SERVICES."""
    from chalicelib import broadcasts, incidents

    incident = incidents.create_incident(
        svc.store, {"title": "Benchmark outage", "services": list(SERVICES)}
    )
    broadcast = broadcasts.create_broadcast(
        svc, {"incident_id": incident.incident_id, "audience": AUDIENCE}, actor="bench"
    )
    return broadcast, incident


def run_forewarn(moto: MotoProcess, recipients: int, *, concurrency: int) -> Run:
    from chalicelib import broadcasts
    from chalicelib.runtime import services

    stack = _stack(moto, concurrency)
    try:
        seed_seconds = seed(stack, recipients)
        svc = services()
        broadcast, _ = draft_broadcast(svc)
        stack.start_events()
        moto.cpu_by_action(clear=True)
        cpu, started = _process_cpu(), time.perf_counter()
        # A second person: above SECOND_APPROVAL_THRESHOLD the author may not approve.
        broadcasts.approve(svc, broadcast.broadcast_id, actor="bench-approver")
        broadcasts.send(svc, broadcast.broadcast_id)
        final = _wait_until_sent(broadcast.broadcast_id, stack.runner, recipients)
        seconds = time.perf_counter() - started
        client_cpu, server_cpu = _process_cpu() - cpu, moto.cpu_by_action()
        stats = dict(stack.runner.stats) if stack.runner is not None else {}
    finally:
        stack.stop()
    # Every seeded customer takes a service, so the selector must have reached them all.
    planned = sum(c.planned for c in final.counts.values())
    if planned != recipients or final.unreachable:
        raise BenchError(
            f"the selector reached {planned} customers ({final.unreachable} unreachable), "
            f"not all {recipients}"
        )
    by_channel = {c.value: n.sent for c, n in final.counts.items()}
    sms, emails = check_delivered(moto, recipients, by_channel)
    return Run(
        recipients=recipients,
        seconds=seconds,
        by_channel=by_channel,
        sms_recorded=sms,
        emails_recorded=emails,
        seed_seconds=seed_seconds,
        server_rss_mb=moto.rss_mb(),
        server_cpu=server_cpu,
        client_cpu_seconds=client_cpu,
        extra={"handler_stats": stats},
    )


def _wait_until_sent(broadcast_id: str, runner: Any, recipients: int) -> Any:
    """The broadcast once it is sent with planned == sent on every channel."""
    from chalicelib.domain import BroadcastStatus

    def sent_to_all(broadcast: Any) -> bool:
        counts = broadcast.counts.values()
        if any(c.failed or c.suppressed for c in counts):
            raise BenchError(f"deliveries failed: {broadcast.to_dict()['counts']}")
        return bool(
            broadcast.status is BroadcastStatus.SENT
            and broadcast.planning_done
            and all(c.planned == c.sent for c in counts)
        )

    return wait_for_broadcast(broadcast_id, runner, recipients, sent_to_all)


def wait_for_broadcast(
    broadcast_id: str,
    runner: Any,
    recipients: int,
    done: Callable[[Any], bool],
    *,
    stall_seconds: float = STALL_SECONDS,
) -> Any:
    """The broadcast once `done(broadcast)` holds.

    Reading the broadcast is a DynamoDB call that the baseline does not make, so it is
    read only once the runner has deleted as many delivery messages as the recipients
    need (an in-process count, free; a message carries up to RECIPIENTS_PER_JOB of them);
    until then progress is watched there.
    """
    from chalicelib.broadcasts import RECIPIENTS_PER_JOB, get_broadcast
    from chalicelib.runtime import services

    store = services().store
    progress, moved = -1, time.monotonic()
    while True:
        deleted = int(runner.stats.get("deliver_notices", {}).get("messages_deleted", 0))
        if deleted >= -(-recipients // RECIPIENTS_PER_JOB):
            broadcast = get_broadcast(store, broadcast_id)
            if done(broadcast):
                return broadcast
        if deleted != progress:
            progress, moved = deleted, time.monotonic()
        elif time.monotonic() - moved > stall_seconds:
            broadcast = get_broadcast(store, broadcast_id)
            raise BenchError(f"no progress for {stall_seconds:.0f} s: {broadcast.to_dict()}")
        time.sleep(POLL_SECONDS)


# --------------------------------------------------------------------------- baseline


@dataclass(frozen=True)
class _Message:
    channel: str
    sms_text: str = ""
    email: bytes = b""
    email_to: bytes = b""


def _clients() -> dict[str, Any]:
    """Clients configured as chalicelib.aws configures its own, made before timing."""
    import boto3
    from botocore.config import Config

    from chalicelib.runtime import services

    config = Config(
        retries={"mode": "standard", "max_attempts": 4},
        max_pool_connections=32,
        connect_timeout=5,
        read_timeout=20,
    )
    session = boto3.session.Session()
    region = services().settings.region
    return {
        name: session.client(name, region_name=region, config=config)
        for name in ("dynamodb", "sns", "ses")
    }


def _messages() -> tuple[str, dict[tuple[str, str], _Message]]:
    """A broadcast to count on, and one notice per (locale, channel) Forewarn rendered for it.

    Rendered before timing: the baseline stands for the AWS calls alone.
    """
    from chalicelib import broadcasts, channels
    from chalicelib.domain import Channel, Customer
    from chalicelib.runtime import services

    svc = services()
    broadcast, incident = draft_broadcast(svc)
    samples: dict[str, Customer] = {}
    for row in demo_customers(200):
        samples.setdefault(str(row["locale"]), Customer.from_dict(row))
    messages: dict[tuple[str, str], _Message] = {}
    for locale, customer in samples.items():
        sms = broadcasts.render_for(svc.settings, broadcast, incident, customer, Channel.SMS)
        messages[(locale, "sms")] = _Message("sms", sms_text=sms.text)
        email = broadcasts.render_for(svc.settings, broadcast, incident, customer, Channel.EMAIL)
        to = str(customer.email)
        raw = channels.build_email(
            sender=svc.settings.sender_email,
            brand=svc.settings.brand,
            to=to,
            notice=email,
            unsubscribe_url=None,
        )
        messages[(locale, "email")] = _Message("email", email=raw, email_to=to.encode())
    return broadcast.broadcast_id, messages


def _audience(dynamodb: Any, table: str, page_size: int) -> Iterator[dict[str, Any]]:
    """Every audience member once, read with the planner's Query pages.

    The selector names every service and nothing else, so the planner reads each service's
    partition whole, without a sort-key condition; a customer with several services is
    sent to once, from the first service it appears under.
    """
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    seen: set[str] = set()
    for service in SERVICES:
        request: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "service = :s",
            "ExpressionAttributeValues": {":s": {"S": service}},
            "Limit": page_size,
        }
        while True:
            page = dynamodb.query(**request)
            for item in page.get("Items", []):
                customer: dict[str, Any] = deserializer.deserialize(item["customer"])
                if customer["customer_id"] not in seen:
                    seen.add(customer["customer_id"])
                    yield customer
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def run_baseline(moto: MotoProcess, recipients: int, *, concurrency: int) -> Run:
    from chalicelib.runtime import services

    stack = _stack(moto, concurrency)
    try:
        seed_seconds = seed(stack, recipients)
        settings = services().settings
        names = settings.names
        clients = _clients()
        broadcast_id, messages = _messages()
        deliver = _Deliverer(clients, names.deliveries, names.broadcasts, broadcast_id, settings)
        moto.cpu_by_action(clear=True)
        cpu, started = _process_cpu(), time.perf_counter()
        futures: list[Future[str]] = []
        with ThreadPoolExecutor(concurrency) as pool:
            for customer in _audience(
                clients["dynamodb"], names.subscriptions, settings.plan_page_size
            ):
                channel = _primary_channel(customer)
                message = messages[(str(customer["locale"]), channel)]
                futures.append(pool.submit(deliver, customer, message))
        by_channel = dict(Counter(f.result() for f in futures))  # re-raises any failure
        seconds = time.perf_counter() - started
        client_cpu, server_cpu = _process_cpu() - cpu, moto.cpu_by_action()
    finally:
        stack.stop()
    if len(futures) != recipients:
        raise BenchError(f"baseline read {len(futures)} recipients, expected {recipients}")
    sms, emails = check_delivered(moto, recipients, by_channel)
    return Run(
        recipients=recipients,
        seconds=seconds,
        by_channel=by_channel,
        sms_recorded=sms,
        emails_recorded=emails,
        seed_seconds=seed_seconds,
        server_rss_mb=moto.rss_mb(),
        server_cpu=server_cpu,
        client_cpu_seconds=client_cpu,
        extra={},
    )


def _primary_channel(customer: dict[str, Any]) -> str:
    contacts = {"sms": customer.get("phone"), "email": customer.get("email")}
    for channel in customer["channels"]:
        if contacts.get(channel):
            return str(channel)
    raise BenchError(f"customer {customer['customer_id']} has no sms or email contact")


class _Deliverer:
    """Claim, send, settle: the same three calls, with the same expressions, as Forewarn."""

    def __init__(
        self,
        clients: dict[str, Any],
        deliveries: str,
        broadcasts: str,
        broadcast_id: str,
        settings: Any,
    ) -> None:
        self.dynamodb, self.sns, self.ses = clients["dynamodb"], clients["sns"], clients["ses"]
        self.deliveries = deliveries
        self.broadcasts = broadcasts
        self.broadcast_id = broadcast_id
        self.sender = str(settings.sender_email)
        self.lease = int(settings.delivery_lease_seconds)

    def __call__(self, customer: dict[str, Any], message: _Message) -> str:
        customer_id, channel = str(customer["customer_id"]), message.channel
        key = {
            "broadcast_id": {"S": self.broadcast_id},
            "recipient_key": {"S": f"{customer_id}#{channel}"},
        }
        attempt_id, now = uuid.uuid4().hex, int(time.time())
        self.dynamodb.update_item(
            TableName=self.deliveries,
            Key=key,
            UpdateExpression=(
                "SET #s = :sending, attempt_id = :a, lease_until = :lease, "
                "customer_id = :c, channel = :ch, updated_at = :now ADD attempts :one"
            ),
            ConditionExpression="attribute_not_exists(broadcast_id) OR #s = :retry",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":sending": {"S": "sending"},
                ":retry": {"S": "retry"},
                ":a": {"S": attempt_id},
                ":lease": {"N": str(now + self.lease)},
                ":c": {"S": customer_id},
                ":ch": {"S": channel},
                ":now": {"N": str(now)},
                ":one": {"N": "1"},
            },
            ReturnValues="ALL_NEW",
        )
        if channel == "sms":
            provider_id = self.sns.publish(
                PhoneNumber=customer["phone"],
                Message=message.sms_text,
                MessageAttributes={
                    "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}
                },
            )["MessageId"]
        else:
            to = str(customer["email"])
            provider_id = self.ses.send_raw_email(
                Source=self.sender,
                Destinations=[to],
                RawMessage={"Data": message.email.replace(message.email_to, to.encode(), 1)},
            )["MessageId"]
        self.dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": self.deliveries,
                        "Key": key,
                        "UpdateExpression": (
                            "SET #s = :status, updated_at = :now, provider_id = :pid, "
                            "reason = :reason REMOVE lease_until"
                        ),
                        "ConditionExpression": "#s = :sending AND attempt_id = :a",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {
                            ":status": {"S": "sent"},
                            ":sending": {"S": "sending"},
                            ":a": {"S": attempt_id},
                            ":now": {"N": str(int(time.time()))},
                            ":pid": {"S": str(provider_id)},
                            ":reason": {"S": ""},
                        },
                    }
                },
                {
                    "Update": {
                        "TableName": self.broadcasts,
                        "Key": {"broadcast_id": {"S": self.broadcast_id}},
                        "UpdateExpression": f"ADD n_{channel}_sent :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )
        return channel
