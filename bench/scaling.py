"""Scaling model: one broadcast to 1,000,000 recipients on AWS, against AWS's quotas.

Two halves, each checking the other:

1. **The real code on a virtual clock** (`measure`). The planner (`broadcasts.plan_message`)
   and the delivery worker (`deliveries.handle_batch`) run unchanged against moto's
   in-process DynamoDB (the tables of `infra/`) and small models of SQS, SNS and SES, in
   threads that take turns on a virtual clock: one runs at a time, and every AWS call, every
   sleep, and the Python time the handler spends between calls (thread CPU time, scaled to
   the Lambda's share of a vCPU) move that thread's clock on. The models enforce the quotas
   in virtual time: SMS message parts and SES emails per second (fixed one-second windows,
   as both services meter them), DynamoDB's 1,000 write units per second per item (and per
   partition key when `split_for_heat` is off), and the event source mapping's concurrency
   cap and ramp. Every call is metered: count, bytes, DynamoDB read and write units (item
   sizes from moto, transactions doubled, GSI writes added). moto costs ~10 ms of real CPU
   per DynamoDB call, so this half runs a few thousand recipients, not a million.

2. **A discrete-event model** (`simulate`) of the same flow at any scale: the planner's
   steps, the queue with visibility timeouts, receive counts and the dead-letter queue,
   the pollers, a replica of the Pacer's shared one-second windows, the provider quotas and
   the broadcast's counter items. Its per-recipient costs (calls, units, bytes, CPU) are the
   ones the first half measured. It is run at the first half's scale with the same settings
   and must agree with it (`validation` in the results), then at 1,000,000.

`python -m bench --only scaling` writes bench/results/scaling.json; docs/SCALING.md is
written from it. Latencies and prices are assumptions, listed with their sources in
`ASSUMPTIONS` and in the result.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import json
import math
import os
import random
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bench.result import RESULTS_DIR, BenchResult, Goal
from chalicelib.config import DEFAULT_PLAN_CONCURRENCY
from chalicelib.send_rates import MAX_CHUNK
from chalicelib.store import COUNTER_SHARDS

NAME = "scaling"
TARGET_RECIPIENTS = 1_000_000
TARGET_SECONDS = 600.0
# Simulated minutes for 1,000,000 recipients against the 10-minute goal, at most 1.
GOAL = Goal("at_most", 1.0)
STAGE = "scale"
# The virtual clock starts here (2030-01-01T00:00:00Z), an ordinary moment of the day.
EPOCH = 1_893_456_000.0
# A vCPU's worth of Lambda memory: below it a function gets that share of one vCPU.
FULL_VCPU_MB = 1769
# The event source mapping: 5 concurrent batches at first, then up to 300 more a minute.
ESM_START = 5
ESM_RAMP_PER_SECOND = 300 / 60
# The delivery queue's redrive policy (infra/forewarn.json): the 9th receive goes to the DLQ.
MAX_RECEIVES = 8
DELIVERY_VISIBILITY = 60
PLANNER_VISIBILITY = 120
SQS_CHUNK = 64 * 1024

# --------------------------------------------------------------------------- assumptions


@dataclass(frozen=True)
class Latency:
    """Virtual seconds per AWS call from a Lambda in the same region: typical figures, not
    measured here (moto's own time is never counted). `sdk` is the client's own CPU per
    call (botocore's serialising and parsing) at one full vCPU."""

    get_item: float = 0.004
    update_item: float = 0.006
    put_item: float = 0.006
    delete_item: float = 0.006
    transact_write_items: float = 0.012
    batch_write_item: float = 0.012
    batch_get_item: float = 0.008
    query: float = 0.010
    query_per_item: float = 0.00002
    send_message_batch: float = 0.010
    change_message_visibility: float = 0.006
    get_queue_url: float = 0.006
    publish: float = 0.040
    send_raw_email: float = 0.050
    get_secret_value: float = 0.020
    other: float = 0.010
    sdk: float = 0.0008
    # The event source mapping: handing a received batch to the function, and picking up a
    # message that has just arrived on a queue it is polling.
    invoke: float = 0.010
    pickup: float = 0.020

    def of(self, operation: str, items: int = 0) -> float:
        base = float(getattr(self, operation, self.other))
        return base + (self.query_per_item * items if operation == "query" else 0.0)


@dataclass(frozen=True)
class Prices:
    """US East (N. Virginia), in USD. Sources in ASSUMPTIONS."""

    sms_part: float = 0.00581
    sms_carrier_fee: float = 0.0040
    email: float = 0.10 / 1000
    lambda_request: float = 0.20 / 1e6
    lambda_gb_second: float = 0.0000166667
    sqs_request: float = 0.40 / 1e6
    dynamodb_wru: float = 0.625 / 1e6
    dynamodb_rru: float = 0.125 / 1e6


ASSUMPTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "SMS throughput",
        "metered in message parts per second (MPS) per origination identity: 100 MPS for a "
        "US short code, 3 MPS for a US toll-free number by default; raised on request",
        "https://docs.aws.amazon.com/sms-voice/latest/userguide/sms-limitations-mps.html",
    ),
    (
        "SES sending rate",
        "an account-wide maximum send rate (emails per second) and a 24-hour quota, set per "
        "account out of the sandbox; over it, SES refuses the send (Throttling)",
        "https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html",
    ),
    (
        "Lambda with SQS",
        "5 concurrent batches at first, up to 300 more per minute, at most 1,250 concurrent "
        "invocations per standard queue; MaximumConcurrency (2..1000) caps one mapping",
        "https://repost.aws/knowledge-center/lambda-sqs-scaling; "
        "https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html",
    ),
    (
        "Lambda CPU",
        "CPU in proportion to memory, one full vCPU at 1,769 MB; Chalice's default is 128 MB",
        "https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html",
    ),
    (
        "DynamoDB partitions",
        "each partition serves at most 3,000 read and 1,000 write units per second, on "
        "demand too; one item never spans partitions (split for heat can spread an item "
        "collection by sort key, never one item); a new on-demand table takes 4,000 write "
        "units per second at once, a table 40,000 by default",
        "https://repost.aws/knowledge-center/on-demand-table-throttling-dynamodb; "
        "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/"
        "throttling-key-range-limit-exceeded-mitigation.html; https://repost.aws/questions/"
        "QUGa1yY0HnQVOp-LDcRQjXQQ (an item isolated on its own partition keeps its limits)",
    ),
    (
        "DynamoDB units",
        "a write unit per 1 KB written (the larger of the item before and after), a read "
        "unit per 4 KB (half for an eventually consistent read); transactions cost double",
        "https://aws.amazon.com/dynamodb/pricing/provisioned/",
    ),
    (
        "SMS price",
        "USD 0.00581 per US message part (AWS's base price) plus about USD 0.0040 of carrier "
        "pass-through fees per part (AT&T 0.0035, Verizon and T-Mobile 0.0045 in 2026)",
        "https://github.com/somleng/somleng-project/pull/65 (AWS Pinpoint/End User "
        "Messaging US price); https://help.textvolt.com/articles/"
        "7310656083-carrier-fee-snapshot-by-carrier-2026",
    ),
    (
        "Other prices",
        "SES USD 0.10 per 1,000 emails; Lambda USD 0.20 per million requests and "
        "USD 0.0000166667 per GB-second (x86); SQS USD 0.40 per million requests of up to "
        "64 KB; DynamoDB on demand USD 0.625 per million write and USD 0.125 per million "
        "read request units",
        "https://aws.amazon.com/ses/pricing/; https://aws.amazon.com/lambda/pricing/; "
        "https://aws.amazon.com/sqs/pricing/; "
        "https://airbyte.com/data-engineering-resources/dynamodb-pricing",
    ),
    (
        "Latencies",
        "DynamoDB 4-12 ms a call, SQS 6-10 ms, SNS publish 40 ms, SES send 50 ms, 0.8 ms of "
        "SDK CPU a call: typical in-region figures, assumed (see `Latency`); the real code's "
        "own CPU time is measured",
        "assumption",
    ),
    (
        "Audience",
        "the demo data set (forewarn_cli/local/seed.py): 60% of customers prefer SMS, 40% "
        "email; notices rendered by the real templates in each customer's locale",
        "forewarn_cli/local/seed.py",
    ),
)


@dataclass(frozen=True)
class Scenario:
    """What bounds one broadcast: quotas (AWS's), settings (ours) and design switches."""

    recipients: int
    # Account and origination quotas.
    sms_mps: float
    ses_rate: float
    # MaximumConcurrency of the delivery queue's event source mapping.
    concurrency: int
    # Our settings: SEND_RATE_SMS and SEND_RATE_EMAIL (messages/s; 0: unlimited),
    # PLAN_PAGE_SIZE, the functions' memory.
    send_rate_sms: int = 0
    send_rate_email: int = 0
    plan_page_size: int = 500
    memory_mb: int = 128
    # DynamoDB: write units per second one item (and, unsplit, one partition key) takes.
    item_wcu: float = 1000.0
    split_for_heat: bool = True
    # The code's own design, switchable to see what it buys: the broadcast's counters spread
    # over this many items (store.COUNTER_SHARDS), and a planner step's writes and sends in
    # flight at once (PLAN_CONCURRENCY).
    counter_shards: int = COUNTER_SHARDS
    plan_concurrency: int = DEFAULT_PLAN_CONCURRENCY

    @property
    def cpu_share(self) -> float:
        return min(1.0, self.memory_mb / FULL_VCPU_MB)

    def label(self) -> str:
        return (
            f"SMS {self.sms_mps:g} MPS, SES {self.ses_rate:g}/s, concurrency "
            f"{self.concurrency}, page {self.plan_page_size}, {self.memory_mb} MB"
        )


# --------------------------------------------------------------------------- virtual time


class SimulationError(RuntimeError):
    """The simulated run did not do what the real flow must: lost, duplicated or stuck."""


class VirtualClock:
    """Threads that take turns on one virtual clock.

    Exactly one thread runs at a time. A thread that waits (`advance`) is queued at the
    virtual moment it wakes and hands the turn to the earliest queued thread, so the real
    code's calls happen in virtual-time order, as they would on a clock they all share.
    """

    def __init__(self, start: float = EPOCH) -> None:
        self.now = start
        self._queue: list[tuple[float, int, threading.Event]] = []
        self._order = itertools.count()
        self._finished = threading.Event()
        self._error: BaseException | None = None
        self._local = threading.local()

    def time(self) -> float:
        return self.now

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    # -- per-thread CPU accounting ------------------------------------------------------

    @property
    def actor(self) -> Actor | None:
        found: Actor | None = getattr(self._local, "actor", None)
        return found

    def advance(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass for the calling thread (plus the CPU it used
        since it last waited); outside a simulated thread, nothing happens."""
        actor = self.actor
        if actor is None:
            return
        seconds += actor.take_cpu()
        wake = threading.Event()
        heapq.heappush(self._queue, (self.now + max(0.0, seconds), next(self._order), wake))
        self._hand_over()
        wake.wait()
        actor.mark()

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def drop_cpu(self) -> None:
        """Forget the CPU used since the last mark: the stand-ins' own work (moto, metering)
        is not the function's."""
        actor = self.actor
        if actor is not None:
            actor.mark()

    def role(self) -> str:
        actor = self.actor
        return actor.role if actor is not None else "setup"

    # -- threads --------------------------------------------------------------------------

    def spawn(self, actor: Actor, body: Callable[[], None], *, at: float | None = None) -> None:
        start = threading.Event()

        def run() -> None:
            start.wait()
            self._local.actor = actor
            actor.mark()
            try:
                body()
            except BaseException as exc:
                if self._error is None:
                    self._error = exc
            finally:
                actor.take_cpu()
                self._hand_over()

        heapq.heappush(self._queue, (self.now if at is None else at, next(self._order), start))
        threading.Thread(target=run, name=actor.name, daemon=True).start()

    def run_all(self, calls: Sequence[Callable[[], object]], *, workers: int) -> None:
        """`concurrency.run_all` on the virtual clock: up to `workers` calls at once, each
        a thread of its own that takes turns with the rest; the caller waits until the last
        one ends, and then raises the first error, as the real one does."""
        parent = self.actor
        if parent is None or workers <= 1 or len(calls) <= 1:
            for call in calls:
                call()
            return
        pending = deque(calls)
        errors: list[BaseException] = []
        running = [0]
        resume = threading.Event()
        # The caller's CPU so far is its own; the calls start when it has been spent.
        start = self.now + parent.take_cpu()

        def lane() -> None:
            while pending:
                call = pending.popleft()
                try:
                    call()
                except Exception as exc:
                    errors.append(exc)
            running[0] -= 1
            if not running[0]:
                heapq.heappush(self._queue, (self.now, next(self._order), resume))

        lanes = [
            Actor(f"{parent.name}-{index}", parent.cpu_share, parent.role)
            for index in range(min(workers, len(calls)))
        ]
        for actor in lanes:
            running[0] += 1
            self.spawn(actor, lane, at=start)
        self._hand_over()
        resume.wait()
        # The calls' CPU is the function's (each lane ran at the function's share: their
        # CPU is small next to their waits, so contention for the one vCPU is left out).
        parent.cpu_seconds += sum(actor.cpu_seconds for actor in lanes)
        parent.mark()
        if errors:
            raise errors[0]

    def run(self) -> None:
        """Run every spawned thread to its end; re-raises the first error."""
        self._finished.clear()
        self._hand_over()
        self._finished.wait()
        if self._error is not None:
            raise self._error

    def _hand_over(self) -> None:
        if self._error is not None or not self._queue:
            self._finished.set()
            if self._error is not None:
                # Wake everyone so that their threads end; their turns no longer matter.
                for _, _, event in self._queue:
                    event.set()
                self._queue.clear()
            return
        at, _, event = heapq.heappop(self._queue)
        self.now = max(self.now, at)
        event.set()


@dataclass
class Actor:
    """A simulated thread of execution (a Lambda instance): its CPU, turned into virtual time
    at the Lambda's share of a vCPU."""

    name: str
    cpu_share: float
    role: str = "worker"
    cpu_seconds: float = 0.0
    _mark: float = 0.0

    def mark(self) -> None:
        self._mark = time.thread_time()

    def take_cpu(self) -> float:
        used = max(0.0, time.thread_time() - self._mark)
        self.cpu_seconds += used
        self._mark = time.thread_time()
        return used / self.cpu_share


# --------------------------------------------------------------------------- metering


@dataclass
class Meter:
    """What the run asked of AWS, by role (planner, worker) and call: counts, bytes,
    DynamoDB units by table, write units by partition key and by item."""

    role: Callable[[], str] = lambda: "setup"
    calls: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    wru: Counter[str] = field(default_factory=Counter)
    rru: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    key_wru: Counter[str] = field(default_factory=Counter)
    item_wru: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    sqs_requests: int = 0
    sms_parts: int = 0
    sms_messages: int = 0
    emails: int = 0
    on: bool = False

    def count(self, name: str, size: int = 0) -> None:
        if self.on:
            self.calls[f"{self.role()}:{name}"] += 1
            self.bytes[name] += size

    def total(self, name: str) -> int:
        return sum(n for key, n in self.calls.items() if key.split(":", 1)[1] == name)


class TokenWindows:
    """Per-second windows of a rate (fixed windows, the way SNS and SES meter a second)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.used: dict[int, float] = {}

    def take(self, now: float, amount: float) -> bool:
        if self.rate <= 0:
            return True
        second = math.floor(now)
        used = self.used.get(second, 0.0)
        if used + amount > self.rate + 1e-9:
            return False
        self.used[second] = used + amount
        if len(self.used) > 64:
            for old in [s for s in self.used if s < second - 8]:
                del self.used[old]
        return True


class TokenBucket:
    """Capacity units: `rate` a second, at most one second's worth saved up."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.level = rate
        self.at = -math.inf

    def _fill(self, now: float) -> float:
        return min(self.rate, self.level + (now - self.at) * self.rate)

    def wait_for(self, now: float, amount: float) -> float:
        """Seconds until `amount` can be taken (0: now)."""
        return max(0.0, (min(amount, self.rate) - self._fill(now)) / self.rate)

    def take(self, now: float, amount: float) -> bool:
        level = self._fill(now)
        if level + 1e-9 < min(amount, self.rate):
            return False
        self.level, self.at = level - amount, now
        return True


def _client_error(code: str, message: str, operation: str) -> Exception:
    from botocore.exceptions import ClientError

    error: Exception = ClientError({"Error": {"Code": code, "Message": message}}, operation)
    return error


# --------------------------------------------------------------------------- AWS stand-ins


class MeteredDynamoDB:
    """moto's DynamoDB client on the virtual clock: metered, and throttled per item (and,
    without split for heat, per partition key) at `item_wcu` write units a second."""

    RETRIES = 3  # botocore's standard mode: four attempts in all (chalicelib/aws.py)

    def __init__(
        self, client: Any, clock: VirtualClock, meter: Meter, latency: Latency, scenario: Scenario
    ) -> None:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        self._client = client
        self._clock = clock
        self._meter = meter
        self._latency = latency
        self._scenario = scenario
        self._buckets: dict[str, TokenBucket] = {}
        self._random = random.Random(11)
        self._backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][client.meta.region_name]
        self._gsis = _gsi_names()

    def __getattr__(self, operation: str) -> Any:
        target = getattr(self._client, operation)
        if operation in ("get_paginator", "meta", "exceptions") or not callable(target):
            return target

        def call(**request: Any) -> Any:
            return self._call(operation, target, request)

        return call

    def _call(self, operation: str, target: Callable[..., Any], request: dict[str, Any]) -> Any:
        clock, meter = self._clock, self._meter
        simulated = clock.actor is not None
        clock.advance(self._latency.sdk)
        writes = self._writes(operation, request)
        before = {(table, key): self._size(table, key) for table, key, _ in writes}
        for attempt in range(self.RETRIES + 1):
            if not simulated or self._take_capacity(writes, before):
                break
            meter.throttled[f"dynamodb.{operation}"] += 1
            if attempt == self.RETRIES:
                clock.advance(self._latency.of(operation))
                raise _client_error(
                    "ProvisionedThroughputExceededException",
                    "the request rate for a key is too high",
                    operation,
                )
            # botocore's standard retry mode: a random wait of up to 2**attempt seconds.
            clock.advance(self._random.uniform(0, 2**attempt))
        error: Exception | None = None
        result: Any = None
        try:
            result = target(**request)
        except Exception as exc:
            error = exc
        self._account(operation, request, result, writes, before)
        clock.drop_cpu()
        items = len(result.get("Items", [])) if isinstance(result, dict) else 0
        clock.advance(self._latency.of(operation, items))
        if error is not None:
            raise error
        return result

    def _take_capacity(
        self,
        writes: list[tuple[str, tuple[str, ...], int]],
        before: Mapping[tuple[str, tuple[str, ...]], int],
    ) -> bool:
        now = self._clock.now
        needs: dict[str, float] = defaultdict(float)
        for table, key, double in writes:
            units = math.ceil(max(1, before[(table, key)]) / 1024) * double
            needs[f"{table}|{'/'.join(key)}"] += units
            if not self._scenario.split_for_heat and len(key) > 1:
                needs[f"{table}|{key[0]}"] += units
        buckets = [
            (self._buckets.setdefault(name, TokenBucket(self._scenario.item_wcu)), units)
            for name, units in needs.items()
        ]
        if any(bucket.wait_for(now, need) > 0 for bucket, need in buckets):
            return False
        for bucket, need in buckets:
            bucket.take(now, need)
        return True

    def _key_of(self, table_name: str, key: Mapping[str, Any]) -> tuple[str, ...]:
        table = self._backend.get_table(table_name)
        parts = [json.dumps(key[table.hash_key_attr], sort_keys=True)]
        if table.range_key_attr:
            parts.append(json.dumps(key[table.range_key_attr], sort_keys=True))
        return tuple(parts)

    def item_size(self, table_name: str, key: Mapping[str, Any]) -> int:
        return self._size(table_name, self._key_of(table_name, key))

    def _size(self, table_name: str, key: tuple[str, ...]) -> int:
        from moto.dynamodb.models.dynamo_type import DynamoType

        table = self._backend.get_table(table_name)
        hash_key = DynamoType(json.loads(key[0]))
        range_key = DynamoType(json.loads(key[1])) if len(key) > 1 else None
        item = table.get_item(hash_key, range_key)
        return int(item.size()) if item is not None else 0

    def _writes(
        self, operation: str, request: Mapping[str, Any]
    ) -> list[tuple[str, tuple[str, ...], int]]:
        """(table, key, 2 for a transaction else 1) of every item a write names."""
        found: list[tuple[str, tuple[str, ...], int]] = []
        if operation in ("update_item", "put_item", "delete_item"):
            table = str(request["TableName"])
            found.append((table, self._key_of(table, request.get("Key") or request["Item"]), 1))
        elif operation == "transact_write_items":
            for action in request["TransactItems"]:
                for body in action.values():
                    table = str(body["TableName"])
                    found.append((table, self._key_of(table, body.get("Key") or body["Item"]), 2))
        elif operation == "batch_write_item":
            for table, entries in request["RequestItems"].items():
                for entry in entries:
                    put = entry.get("PutRequest", {}).get("Item")
                    key = put if put is not None else entry["DeleteRequest"]["Key"]
                    found.append((str(table), self._key_of(str(table), key), 1))
        return found

    def _account(
        self,
        operation: str,
        request: Mapping[str, Any],
        result: Any,
        writes: list[tuple[str, tuple[str, ...], int]],
        before: Mapping[tuple[str, tuple[str, ...]], int],
    ) -> None:
        meter = self._meter
        if not meter.on:
            return
        for table, key, double in writes:
            size = max(before[(table, key)], self._size(table, key), 1)
            units = math.ceil(size / 1024) * double
            meter.wru[_short(table)] += units
            meter.key_wru[f"{_short(table)} {key[0]}"] += units
            meter.item_wru[f"{_short(table)} {'/'.join(key)}"] += units
            gsis = len(self._gsis.get(table, ()))
            if gsis:
                meter.wru[f"{_short(table)} (GSIs)"] += math.ceil(size / 1024) * gsis
        if isinstance(result, dict):
            for table, read in self._reads(operation, request, result).items():
                meter.rru[_short(table)] += read
        tables = {_short(t) for t, _, _ in writes} or {
            _short(str(t)) for t in request.get("RequestItems", {})
        }
        if "TableName" in request:
            tables.add(_short(str(request["TableName"])))
        name = f"dynamodb.{operation}"
        if len(tables) == 1:
            name += f"[{tables.pop()}]"
        meter.count(name, len(json.dumps(request, default=str)))

    def _reads(
        self, operation: str, request: Mapping[str, Any], result: Mapping[str, Any]
    ) -> dict[str, float]:
        from moto.dynamodb.models.dynamo_type import DynamoType

        def units(items: Sequence[Mapping[str, Any]], consistent: bool) -> float:
            size = sum(
                sum(len(k) + DynamoType(v).size() for k, v in item.items()) for item in items
            )
            return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)

        if operation == "get_item":
            found = [result["Item"]] if result.get("Item") else []
            return {request["TableName"]: units(found, bool(request.get("ConsistentRead")))}
        if operation == "query":
            return {request["TableName"]: units(result.get("Items", []), False)}
        if operation == "batch_get_item":
            return {
                table: units(items, bool(request["RequestItems"][table].get("ConsistentRead")))
                for table, items in result.get("Responses", {}).items()
            }
        return {}


def _short(table: str) -> str:
    return table.removeprefix(f"forewarn-{STAGE}-")


def _gsi_names() -> dict[str, tuple[str, ...]]:
    """Table name (of stage `scale`) → its global secondary indexes, from infra/."""
    from forewarn_cli.local import infra

    found: dict[str, tuple[str, ...]] = {}
    for resource in infra.load_template()["Resources"].values():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        name = str(props["TableName"]["Fn::Sub"]).replace("${Stage}", STAGE)
        found[name] = tuple(g["IndexName"] for g in props.get("GlobalSecondaryIndexes", []))
    return found


@dataclass
class QueuedMessage:
    message_id: str
    body: str
    visible_at: float
    receipt: str = ""
    receives: int = 0


class QueueModel:
    """One SQS standard queue: visibility timeouts, receive counts, and its dead-letter
    queue, which a message reaches when it would be received more than `max_receives` times."""

    def __init__(self, name: str, visibility: int, max_receives: int) -> None:
        self.name = name
        self.visibility = visibility
        self.max_receives = max_receives
        self.messages: dict[str, QueuedMessage] = {}
        self.by_receipt: dict[str, str] = {}
        self.dead: list[QueuedMessage] = []
        self._ids = itertools.count()

    def send(self, body: str, now: float, delay: int = 0) -> None:
        message_id = f"{self.name}-{next(self._ids)}"
        self.messages[message_id] = QueuedMessage(message_id, body, now + delay)

    def receive(self, now: float, limit: int) -> list[QueuedMessage]:
        got: list[QueuedMessage] = []
        for message in sorted(self.messages.values(), key=lambda m: m.visible_at):
            if message.visible_at > now or len(got) >= limit:
                break
            if message.receives >= self.max_receives:
                del self.messages[message.message_id]
                self.dead.append(message)
                continue
            message.receives += 1
            message.receipt = f"{message.message_id}#{message.receives}"
            message.visible_at = now + self.visibility
            self.by_receipt[message.receipt] = message.message_id
            got.append(message)
        return got

    def delete(self, receipt: str) -> None:
        message_id = self.by_receipt.pop(receipt, None)
        if message_id is not None:
            self.messages.pop(message_id, None)

    def change_visibility(self, receipt: str, seconds: int, now: float) -> None:
        message_id = self.by_receipt.get(receipt)
        if message_id is not None and message_id in self.messages:
            self.messages[message_id].visible_at = now + seconds

    def next_visible(self) -> float:
        return min((m.visible_at for m in self.messages.values()), default=math.inf)


class SqsModel:
    """The calls chalicelib.queues makes, against `QueueModel`s; each call is billed as one
    request per 64 KB of payload."""

    def __init__(self, clock: VirtualClock, meter: Meter, latency: Latency) -> None:
        self.clock, self.meter, self.latency = clock, meter, latency
        self.queues: dict[str, QueueModel] = {}

    def add(self, queue: QueueModel) -> None:
        self.queues[queue.name] = queue

    def pay(self, name: str, size: int) -> None:
        self.meter.count(f"sqs.{name}", size)
        if self.meter.on:
            self.meter.sqs_requests += max(1, math.ceil(size / SQS_CHUNK))

    def get_queue_url(self, *, QueueName: str) -> dict[str, str]:
        self.clock.advance(self.latency.sdk)
        self.pay("GetQueueUrl", 0)
        self.clock.advance(self.latency.get_queue_url)
        return {"QueueUrl": QueueName}

    def send_message_batch(
        self,
        *,
        QueueUrl: str,
        Entries: list[dict[str, Any]],
    ) -> dict[str, Any]:
        self.clock.advance(self.latency.sdk)
        size = 0
        for entry in Entries:
            size += len(entry["MessageBody"].encode())
            delay = int(entry.get("DelaySeconds", 0))
            self.queues[QueueUrl].send(entry["MessageBody"], self.clock.now, delay)
        self.pay("SendMessageBatch", size)
        self.clock.drop_cpu()
        self.clock.advance(self.latency.send_message_batch)
        return {"Failed": []}

    def change_message_visibility(
        self,
        *,
        QueueUrl: str,
        ReceiptHandle: str,
        VisibilityTimeout: int,
    ) -> dict[str, Any]:
        self.clock.advance(self.latency.sdk)
        self.queues[QueueUrl].change_visibility(ReceiptHandle, VisibilityTimeout, self.clock.now)
        self.pay("ChangeMessageVisibility", 0)
        self.clock.advance(self.latency.change_message_visibility)
        return {}


class _SenderModel:
    """A sending API held to `rate` units in any one second (fixed one-second windows, as SNS
    and SES meter them); a refused call raises the service's throttling error."""

    def __init__(self, clock: VirtualClock, meter: Meter, latency: Latency, rate: float) -> None:
        self.clock, self.meter, self.latency = clock, meter, latency
        self.windows = TokenWindows(rate)
        self.sent: list[float] = []

    def _send(self, operation: str, units: float, size: int, seconds: float, refusal: str) -> int:
        """One call of `size` bytes taking `units` of the second's quota and `seconds` of
        latency; how many calls have gone through."""
        self.clock.advance(self.latency.sdk)
        allowed = self.windows.take(self.clock.now, units)
        if allowed:
            self.meter.count(operation, size)
            self.sent.append(self.clock.now)
        else:
            self.meter.throttled[operation] += 1
        self.clock.drop_cpu()
        self.clock.advance(seconds)
        if not allowed:
            raise _client_error("Throttling", refusal, operation.split(".", 1)[1])
        return len(self.sent)


class SnsModel(_SenderModel):
    """`publish` to a phone number: at most `rate` message parts in any one second."""

    def publish(self, *, Message: str, **_: Any) -> dict[str, str]:
        from chalicelib.notices import sms_segments

        parts = sms_segments(Message).segments
        sent = self._send(
            "sns.Publish", parts, len(Message.encode()), self.latency.publish, "Rate exceeded"
        )
        if self.meter.on:
            self.meter.sms_parts += parts
            self.meter.sms_messages += 1
        return {"MessageId": f"sms-{sent}"}


class SesModel(_SenderModel):
    """`send_raw_email`: at most `rate` emails in any one second."""

    def send_raw_email(
        self,
        *,
        Destinations: list[str],
        RawMessage: dict[str, bytes],
        **_: Any,
    ) -> dict[str, str]:
        sent = self._send(
            "ses.SendRawEmail",
            len(Destinations),
            len(RawMessage["Data"]),
            self.latency.send_raw_email,
            "Maximum sending rate exceeded.",
        )
        if self.meter.on:
            self.meter.emails += 1
        return {"MessageId": f"email-{sent}"}


class _VirtualTimeModule:
    """Stands in for the `time` module inside the chalicelib modules that read the clock."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock

    def time(self) -> float:
        return self._clock.now

    def sleep(self, seconds: float) -> None:
        self._clock.advance(seconds)


# --------------------------------------------------------------------------- the real code


@dataclass(frozen=True)
class Invocation:
    function: str
    started: float
    seconds: float
    recipients: int


@dataclass
class Measured:
    """What the real code did on the virtual clock."""

    scenario: Scenario
    seconds: float
    planned: int
    sent: dict[str, int]
    dead_letters: int
    meter: Meter
    invocations: list[Invocation]
    sms_times: list[float]
    email_times: list[float]
    broadcast_item_bytes: int
    cpu_seconds: dict[str, float]
    retried_messages: int

    @property
    def sms_segments(self) -> float:
        return self.meter.sms_parts / max(1, self.meter.sms_messages)


@contextlib.contextmanager
def _virtual_time(clock: VirtualClock) -> Iterator[None]:
    """The chalicelib modules that read the clock read the virtual one instead, and the
    Pacer gets the virtual clock and sleep. chalicelib is not changed: a cleaner seam would
    be a clock (time, sleep, utcnow) carried in `Services`, which the store, the planner, the
    worker and `deliveries.pacer` read."""
    from chalicelib import broadcasts, concurrency, deliveries, queues, send_rates, store

    shim = _VirtualTimeModule(clock)
    saved: list[tuple[Any, str, Any]] = []

    def put(module: Any, name: str, value: Any) -> None:
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    def pacer(services: Any, planned: Mapping[Any, int]) -> Any:
        settings = services.settings
        rates = send_rates.SendRates(settings.names, services.store.db, limits=settings.send_rates)
        return send_rates.Pacer(rates, planned, clock=clock.time, sleep=clock.sleep)

    for module in (store, deliveries, broadcasts, queues):
        put(module, "time", shim)
    put(concurrency, "run_all", clock.run_all)
    put(deliveries, "utcnow", clock.utcnow)
    put(broadcasts, "utcnow", clock.utcnow)
    put(deliveries, "pacer", pacer)
    try:
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def _environment(scenario: Scenario) -> dict[str, str]:
    return {
        "FOREWARN_STAGE": STAGE,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "PLAN_PAGE_SIZE": str(scenario.plan_page_size),
        "PLAN_CONCURRENCY": str(scenario.plan_concurrency),
        "SEND_RATE_SMS": str(scenario.send_rate_sms),
        "SEND_RATE_EMAIL": str(scenario.send_rate_email),
        # The prod stage's policies (.chalice/config.json): outage notices go out at night,
        # and the frequency cap is on (one conditional write per recipient).
        "QUIET_HOURS": "21:00-08:00",
        "DIGEST_WINDOW_SECONDS": "900",
        "DELIVERY_LEASE_SECONDS": "60",
        "SENDER_EMAIL": "alerts@forewarn.example",
    }


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def measure(scenario: Scenario, latency: Latency | None = None) -> Measured:
    """One broadcast to `scenario.recipients` demo customers through the real planner and
    delivery worker on the virtual clock; checks that each got exactly one notice."""
    from chalicelib import runtime

    with _environ(_environment(scenario)):
        from moto import mock_aws

        from forewarn_cli.local.awsserver import patch_moto

        patch_moto()
        try:
            with mock_aws():
                return _measure(scenario, latency or Latency())
        finally:
            runtime.reset()


def _seed(scenario: Scenario, latency: Latency) -> tuple[Any, ...]:
    import secrets as token_secrets

    from chalicelib import aws, broadcasts, incidents, queues, runtime
    from chalicelib.config import settings
    from chalicelib.customers import MAX_BATCH, validate_batch
    from forewarn_cli.local import infra
    from forewarn_cli.local.seed import SERVICES, demo_customers
    from forewarn_cli.local.stack import WEBHOOK_KEYS

    runtime.reset()
    infra.deploy(aws.client, stage=STAGE, sender_email="alerts@forewarn.example")
    aws.client("secretsmanager").put_secret_value(
        SecretId=settings().webhook_secret_id,
        SecretString=json.dumps({k: token_secrets.token_urlsafe(24) for k in WEBHOOK_KEYS}),
    )
    clock = VirtualClock()
    meter = Meter(role=clock.role)
    names = settings().names
    sqs = SqsModel(clock, meter, latency)
    for queue in (
        QueueModel(names.delivery_queue, DELIVERY_VISIBILITY, MAX_RECEIVES),
        QueueModel(names.planner_queue, PLANNER_VISIBILITY, 5),
        QueueModel(names.notice_queue, DELIVERY_VISIBILITY, MAX_RECEIVES),
    ):
        sqs.add(queue)
    sns = SnsModel(clock, meter, latency, scenario.sms_mps)
    ses = SesModel(clock, meter, latency, scenario.ses_rate)
    dynamodb = MeteredDynamoDB(aws.client("dynamodb"), clock, meter, latency, scenario)
    queues.forget_queue_urls()
    aws._clients.update({"dynamodb": dynamodb, "sqs": sqs, "sns": sns, "ses": ses})
    svc = runtime.services()
    rows = list(demo_customers(scenario.recipients))
    for start in range(0, len(rows), MAX_BATCH):
        customers, rejected = validate_batch(rows[start : start + MAX_BATCH])
        if rejected:
            raise SimulationError(f"demo data has invalid rows: {rejected[0].to_dict()}")
        svc.store.load_new_customers(customers)
    incident = incidents.create_incident(
        svc.store, {"title": "Mobile data outage", "services": list(SERVICES)}
    )
    broadcast = broadcasts.create_broadcast(
        svc,
        {
            "incident_id": incident.incident_id,
            "audience": {"services": list(SERVICES)},
            "variables": {
                "workaround": "Wi-Fi calling still works",
                "status_link": "https://status.example.com",
            },
        },
        actor="bench",
    )
    broadcasts.approve(svc, broadcast.broadcast_id, actor="bench", automated=True)
    return clock, meter, sqs, sns, ses, dynamodb, svc, broadcast.broadcast_id


def _measure(scenario: Scenario, latency: Latency) -> Measured:
    from chalicelib import broadcasts, deliveries, queues
    from chalicelib.config import settings
    from chalicelib.domain import BroadcastStatus

    clock, meter, sqs, sns, ses, dynamodb, svc, broadcast_id = _seed(scenario, latency)
    names = settings().names
    delivery_queue = sqs.queues[names.delivery_queue]
    planner_queue = sqs.queues[names.planner_queue]
    invocations: list[Invocation] = []
    planning = threading.Event()
    planning.set()
    retried = 0

    def finished() -> bool:
        return not planning.is_set() and not delivery_queue.messages

    def planner() -> None:
        while planner_queue.messages:
            got = planner_queue.receive(clock.now, 1)
            if not got:
                clock.advance(max(latency.pickup, planner_queue.next_visible() - clock.now))
                continue
            clock.advance(latency.pickup + latency.invoke)
            started = clock.now
            try:
                broadcasts.plan_message(svc, got[0].body)
            except Exception:  # noqa: S112 (as Lambda: the message comes back later)
                continue
            finally:
                invocations.append(Invocation("plan_broadcast", started, clock.now - started, 0))
            planner_queue.delete(got[0].receipt)
            sqs.pay("DeleteMessageBatch", 0)
        planning.clear()

    def worker() -> None:
        nonlocal retried
        while not finished():
            got = delivery_queue.receive(clock.now, 10)
            if not got:
                wake = min(delivery_queue.next_visible(), clock.now + 0.25)
                clock.advance(max(latency.pickup, wake - clock.now))
                continue
            sqs.pay("ReceiveMessage", sum(len(m.body) for m in got))
            recipients = sum(m.body.count('"channel"') for m in got)
            clock.drop_cpu()
            clock.advance(latency.invoke)
            started = clock.now
            messages = [
                queues.QueueMessage(m.message_id, m.body, m.receipt, m.receives) for m in got
            ]
            failed = set(deliveries.handle_batch(svc, messages))
            retried += len(failed)
            for message in got:
                if message.message_id not in failed:
                    delivery_queue.delete(message.receipt)
            sqs.pay("DeleteMessageBatch", 0)
            invocations.append(
                Invocation("deliver_notices", started, clock.now - started, recipients)
            )
            clock.drop_cpu()

    actors = [Actor("planner", scenario.cpu_share, role="planner")]
    # moto's tables live in this process: a garbage collection that a handler happens to
    # set off walks them too and was counted as that handler's CPU (the planner's measured
    # CPU varied 2.5-fold between runs). A Lambda's heap holds none of them, so the
    # collector is off while the handlers run (reference counting still frees memory).
    gc.collect()
    gc.disable()
    with _virtual_time(clock):
        meter.on = True
        broadcasts.send(svc, broadcast_id)
        clock.spawn(actors[0], planner)
        for index in range(scenario.concurrency):
            actor = Actor(f"worker-{index}", scenario.cpu_share)
            actors.append(actor)
            clock.spawn(actor, worker, at=EPOCH + _ramp(index))
        try:
            clock.run()
        finally:
            gc.enable()
        meter.on = False
    final = broadcasts.get_broadcast(svc.store, broadcast_id)
    planned = sum(c.planned for c in final.counts.values())
    sent = {c.value: n.sent for c, n in final.counts.items()}
    if planned != scenario.recipients or final.status is not BroadcastStatus.SENT:
        raise SimulationError(f"broadcast ended {final.status.value}: {final.to_dict()['counts']}")
    if len(sns.sent) + len(ses.sent) != planned or sent.get("sms", 0) != len(sns.sent):
        raise SimulationError(f"{planned} planned, {len(sns.sent)} SMS, {len(ses.sent)} emails")
    return Measured(
        scenario=scenario,
        seconds=max(i.started + i.seconds for i in invocations) - EPOCH,
        planned=planned,
        sent=sent,
        dead_letters=len(delivery_queue.dead),
        meter=meter,
        invocations=invocations,
        sms_times=[t - EPOCH for t in sns.sent],
        email_times=[t - EPOCH for t in ses.sent],
        broadcast_item_bytes=dynamodb.item_size(
            names.broadcasts, {"broadcast_id": {"S": broadcast_id}}
        ),
        cpu_seconds={
            role: sum(a.cpu_seconds for a in actors if a.role == role)
            for role in ("planner", "worker")
        },
        retried_messages=retried,
    )


def _ramp(index: int) -> float:
    """When the event source mapping starts its `index`-th concurrent poller."""
    return max(0.0, (index - ESM_START + 1) / ESM_RAMP_PER_SECOND)


# --------------------------------------------------------------------------- the profile

# What the model simulates itself rather than take from the profile.
_MODELLED = (
    "sns.Publish",
    "ses.SendRawEmail",
    "dynamodb.transact_write_items",
    "[send-rates]",
    "sqs.ReceiveMessage",
    "sqs.DeleteMessageBatch",
    "sqs.ChangeMessageVisibility",
)


@dataclass(frozen=True)
class Profile:
    """Per-recipient costs of the real code, measured without quotas (no waits, no retries)."""

    recipients: int
    sms_share: float
    sms_segments: float
    email_bytes: float
    # Calls on a worker's path per recipient, apart from what the model simulates itself
    # (the send, the settle, the Pacer's windows, SQS around the handler); its CPU seconds per
    # recipient at one full vCPU.
    worker_calls: dict[str, float]
    worker_cpu: float
    # The planner's calls and CPU per planned recipient, and its calls per step.
    planner_calls: dict[str, float]
    planner_cpu: float
    planner_step_calls: dict[str, float]
    # DynamoDB units per recipient, by table (the Pacer's windows excepted).
    wru: dict[str, float]
    rru: dict[str, float]
    # SQS requests per recipient the planner makes (sending the delivery jobs).
    sqs_sends: float
    # Write units one settle takes on the broadcast's counter item (a transaction: doubled).
    counter_units: float
    # Write units per recipient on the incident's audience-snapshot partition.
    audience_units: float

    @classmethod
    def of(cls, run: Measured) -> Profile:
        n = run.planned
        meter = run.meter
        steps = sum(1 for i in run.invocations if i.function == "plan_broadcast")

        def per(role: str, divisor: float) -> dict[str, float]:
            return {
                key.split(":", 1)[1]: count / divisor
                for key, count in sorted(meter.calls.items())
                if key.startswith(f"{role}:")
            }

        worker = {
            name: value
            for name, value in per("worker", n).items()
            if not any(part in name for part in _MODELLED)
        }
        planner = per("planner", n)
        # Once a step: reading the broadcast (its item and counter shards), committing it.
        fixed = (
            "dynamodb.get_item[broadcasts]",
            "dynamodb.batch_get_item[broadcasts]",
            "dynamodb.update_item[broadcasts]",
        )
        return cls(
            recipients=n,
            sms_share=run.sent.get("sms", 0) / n,
            sms_segments=run.sms_segments,
            email_bytes=meter.bytes["ses.SendRawEmail"] / max(1, meter.emails),
            worker_calls=worker,
            worker_cpu=run.cpu_seconds["worker"] / n,
            planner_calls={k: v for k, v in planner.items() if k not in fixed},
            planner_cpu=run.cpu_seconds["planner"] / n,
            planner_step_calls={k: planner[k] * n / max(1, steps) for k in fixed if k in planner},
            wru={t: u / n for t, u in sorted(meter.wru.items()) if t != "send-rates"},
            rru={t: u / n for t, u in sorted(meter.rru.items()) if t != "send-rates"},
            sqs_sends=meter.total("sqs.SendMessageBatch") / n,
            counter_units=2 * math.ceil(max(1, run.broadcast_item_bytes) / 1024),
            audience_units=meter.wru["audiences"] / n,
        )

    def worker_seconds(self, latency: Latency, share: float) -> float:
        """A recipient's time on a worker, send and settle and the Pacer apart."""
        calls = sum(
            count * (latency.of(_operation(name)) + latency.sdk / share)
            for name, count in self.worker_calls.items()
        )
        return calls + self.worker_cpu / share

    def planner_step_seconds(
        self, latency: Latency, share: float, page: int, concurrency: int
    ) -> float:
        """A step's time: its calls one after another, except the snapshot writes and job
        sends, whose waits overlap `concurrency` at a time (their CPU does not)."""
        cpu = page * (
            sum(count * latency.sdk / share for count in self.planner_calls.values())
            + self.planner_cpu / share
        )
        serial = page * sum(
            count * latency.of(_operation(name), 1)
            for name, count in self.planner_calls.items()
            if name not in PARALLEL_PLANNER_CALLS
        )
        overlapped = [
            (page * count, latency.of(_operation(name), 1))
            for name, count in self.planner_calls.items()
            if name in PARALLEL_PLANNER_CALLS
        ]
        calls = sum(count for count, _ in overlapped)
        waits = sum(count * seconds for count, seconds in overlapped)
        fixed = sum(
            count * (latency.of(_operation(name)) + latency.sdk / share)
            for name, count in self.planner_step_calls.items()
        )
        parallel = waits / max(1.0, min(float(concurrency), calls))
        return fixed + cpu + serial + parallel + latency.invoke + latency.pickup

    def to_dict(self) -> dict[str, Any]:
        return {k: _rounded(v) for k, v in self.__dict__.items()}


# The calls a planner step makes through `concurrency.run_all`.
PARALLEL_PLANNER_CALLS = ("dynamodb.batch_write_item[audiences]", "sqs.SendMessageBatch")


def _operation(name: str) -> str:
    """'dynamodb.update_item[deliveries]' → 'update_item'; 'sqs.SendMessageBatch' →
    'send_message_batch'."""
    bare = name.split(".", 1)[1].split("[", 1)[0]
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in bare).lstrip("_")


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- the model

_PARK = None  # what a simulated worker yields to wait for a message
Step = Generator[float | None, None, Any]


class _Engine:
    """Generators on one clock: each yields the seconds it waits, or None to wait for work."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Step]] = []
        self._order = itertools.count()
        self.parked: deque[Step] = deque()
        self.events = 0

    def start(self, process: Step, delay: float = 0.0) -> None:
        heapq.heappush(self._heap, (self.now + delay, next(self._order), process))

    def wake(self, count: int, delay: float) -> None:
        for _ in range(min(count, len(self.parked))):
            self.start(self.parked.popleft(), delay)

    def run(self, until: float, done: Callable[[], bool]) -> None:
        while self._heap and not done():
            at, _, process = heapq.heappop(self._heap)
            if at > until:
                self.now = until
                return
            self.now = at
            self.events += 1
            try:
                wait = next(process)
            except StopIteration:
                continue
            if wait is None:
                self.parked.append(process)
            else:
                heapq.heappush(self._heap, (at + wait, next(self._order), process))


PENDING, DONE, IN_DOUBT = 0, 1, 2
# What became of one recipient of a message (deliveries.Outcome, as far as the queue cares).
SETTLED, RETRY, RATE_LIMITED = 0, 1, 2
# Seconds of random spread in a simulated worker's timing (see `simulate`).
JITTER = 0.002


@dataclass(eq=False)
class _Message:
    sms: list[bool]
    state: list[int]
    lease: list[float]
    receives: int = 0


@dataclass
class Outcome:
    """What the model says of one broadcast."""

    scenario: Scenario
    seconds: float
    finished: bool
    delivered: int
    sms: int
    emails: int
    dead_recipients: int
    planning_seconds: float
    invocations: int
    lambda_seconds: float
    planner_seconds: float
    sqs_requests: int
    pacer_writes: int
    pacer_reads: int
    throttled: Counter[str]
    retried_messages: int
    requeued_messages: int
    peak_concurrency: int
    events: int
    bounds: dict[str, float]
    sends_per_second: dict[str, list[int]]

    @property
    def minutes(self) -> float:
        return self.seconds / 60

    def bottleneck(self) -> str:
        return max(self.bounds, key=lambda name: self.bounds[name])


def bounds(scenario: Scenario, profile: Profile, latency: Latency) -> dict[str, float]:
    """The least time each constraint alone allows for the broadcast, in seconds."""
    n, share = scenario.recipients, scenario.cpu_share
    sms = n * profile.sms_share
    per_recipient = (
        profile.worker_seconds(latency, share)
        + profile.sms_share * latency.publish
        + (1 - profile.sms_share) * latency.send_raw_email
        + latency.transact_write_items
        + 3 * latency.sdk / share
    )
    page = scenario.plan_page_size
    step = profile.planner_step_seconds(latency, share, page, scenario.plan_concurrency)
    found = {
        "planner": n / page * step,
        "Lambda concurrency": n * per_recipient / scenario.concurrency,
        "broadcast counter item": n
        * profile.counter_units
        / (scenario.item_wcu * scenario.counter_shards),
    }
    if scenario.sms_mps > 0:
        found["SMS throughput"] = sms * profile.sms_segments / scenario.sms_mps
    if scenario.send_rate_sms > 0:
        found["SEND_RATE_SMS"] = sms / scenario.send_rate_sms
    if scenario.ses_rate > 0:
        found["SES sending rate"] = (n - sms) / scenario.ses_rate
    if scenario.send_rate_email > 0:
        found["SEND_RATE_EMAIL"] = (n - sms) / scenario.send_rate_email
    if not scenario.split_for_heat:
        found["ledger partition"] = n * 3 / scenario.item_wcu
        found["audience partition"] = n * profile.audience_units / scenario.item_wcu
    return {name: round(seconds, 1) for name, seconds in found.items()}


def simulate(
    scenario: Scenario,
    profile: Profile,
    latency: Latency | None = None,
    *,
    horizon: float = 4 * 3600,
    seed: int = 5,
) -> Outcome:
    """The broadcast at `scenario.recipients`, on the model's clock (see the module doc)."""
    latency = latency or Latency()
    engine, rng = _Engine(), random.Random(seed)
    n, share = scenario.recipients, scenario.cpu_share
    sdk = latency.sdk / share
    pre = profile.worker_seconds(latency, share)
    publish = {True: latency.publish + sdk, False: latency.send_raw_email + sdk}
    settle = latency.transact_write_items + sdk
    release = latency.update_item + sdk
    duplicate = latency.update_item + latency.get_item + 2 * sdk
    limits = {True: scenario.send_rate_sms, False: scenario.send_rate_email}
    provider = {True: TokenWindows(scenario.sms_mps), False: TokenWindows(scenario.ses_rate)}
    windows: dict[tuple[bool, int], int] = {}
    counters = [TokenBucket(scenario.item_wcu) for _ in range(scenario.counter_shards)]
    ledger = None if scenario.split_for_heat else TokenBucket(scenario.item_wcu)
    ready: deque[_Message] = deque()
    delayed: list[tuple[float, int, _Message]] = []
    order = itertools.count()
    stats: Counter[str] = Counter()
    throttled: Counter[str] = Counter()
    busy = [0, 0]  # workers busy now, most ever
    planned = [0]
    sent_at: dict[bool, Counter[int]] = {True: Counter(), False: Counter()}
    channel_of = _channels(profile.sms_share)

    def finished() -> bool:
        return stats["delivered"] + stats["dead"] >= n

    def take(sms: bool, wanted: int, now: float) -> tuple[int, float]:
        """SendRates.take: what the shared window grants, and the calls' time."""
        limit, key = limits[sms], (sms, math.floor(now))
        asked = min(wanted, limit)
        taken = windows.get(key, 0)
        stats["pacer_writes"] += 1
        if taken + asked <= limit:
            windows[key] = taken + asked
            return asked, latency.update_item + sdk
        left = min(asked, limit - taken)
        stats["pacer_reads"] += 1
        if left > 0:
            stats["pacer_writes"] += 1
            windows[key] = taken + left
            return left, latency.update_item * 2 + latency.get_item + 3 * sdk
        return 0, latency.update_item + latency.get_item + 2 * sdk

    def parts(sms: bool) -> int:
        """One message's tokens: an SMS's billable parts (whole; their mean is measured)."""
        if not sms:
            return 1
        whole = math.floor(profile.sms_segments)
        return whole + (rng.random() < profile.sms_segments - whole)

    def acquire(pacer: dict[str, Any], sms: bool, cost: int) -> Generator[float | None, None, bool]:
        """Pacer.acquire, step by step (chalicelib/send_rates.py)."""
        limit = limits[sms]
        if limit <= 0:
            return True
        if sms in pacer["closed"] or cost > limit:
            return False
        deadline = engine.now + 3.0
        while True:
            now = engine.now
            second, left = pacer["held"].get(sms, (-1, 0))
            if second != math.floor(now):
                second, left = math.floor(now), 0
            if left >= cost:
                break
            chunk = max(cost - left, min(pacer["wanted"][sms], limit // 4, MAX_CHUNK))
            granted, seconds = take(sms, chunk, now)
            yield seconds
            pacer["held"][sms] = (second, left + granted)
            if granted:
                continue
            wait = math.floor(now) + 1 - now
            if now + wait > deadline:
                pacer["closed"].add(sms)
                return False
            # Workers woken by the same second do not all ask in the same order every time:
            # on Lambda their clocks and CPUs differ by a millisecond or two.
            yield wait + rng.uniform(0, JITTER)
        pacer["held"][sms] = (second, left - cost)
        pacer["wanted"][sms] -= 1
        return True

    def settle_counter(at: float) -> bool:
        """The settle's transaction: the counter item, and unsplit, the ledger's partition
        key (the claim's unit and the settle's two)."""
        bucket = counters[stats["settles"] % len(counters)]
        stats["settles"] += 1
        if ledger is not None and ledger.wait_for(at, 3) > 0:
            return False
        if not bucket.take(at, profile.counter_units):
            return False
        if ledger is not None:
            ledger.take(at, 3)
        return True

    def deliver(message: _Message, index: int, pacer: dict[str, Any]) -> Step:
        """One recipient of a message: SETTLED, RETRY (the message comes back) or
        RATE_LIMITED (the recipient goes out again in a new message)."""
        sms = message.sms[index]
        state = message.state[index]
        if state == DONE:
            yield duplicate
            return SETTLED
        if state == IN_DOUBT:
            if engine.now < message.lease[index]:
                yield duplicate
                return RETRY
            # The claim expired after a failed settle: recorded as sent, not sent again.
            yield duplicate
            return SETTLED if (yield from _settled(message, index)) else RETRY
        cost = parts(sms)
        if not (yield from acquire(pacer, sms, cost)):
            yield pre + release
            return RATE_LIMITED
        if not provider[sms].take(engine.now + pre, cost):
            throttled["SNS" if sms else "SES"] += 1
            yield pre + publish[sms] + release
            return RETRY
        stats["sms" if sms else "emails"] += 1
        sent_at[sms][math.floor(engine.now + pre)] += 1
        yield pre + publish[sms] + rng.uniform(0, JITTER)
        return SETTLED if (yield from _settled(message, index)) else RETRY

    def _settled(message: _Message, index: int) -> Generator[float | None, None, bool]:
        for attempt in range(4):
            if settle_counter(engine.now):
                yield settle
                message.state[index] = DONE
                stats["delivered"] += 1
                stats["last"] = max(stats["last"], int(engine.now * 1000))
                return True
            throttled["DynamoDB settle"] += 1
            if attempt < 3:
                yield rng.uniform(0, 2**attempt)
        yield settle
        message.state[index] = IN_DOUBT
        message.lease[index] = engine.now + 60
        return False

    def receive(limit: int) -> list[_Message]:
        while delayed and delayed[0][0] <= engine.now:
            ready.append(heapq.heappop(delayed)[2])
        got: list[_Message] = []
        while ready and len(got) < limit:
            message = ready.popleft()
            if message.receives >= MAX_RECEIVES:
                stats["dead"] += sum(1 for s in message.state if s != DONE)
                continue
            message.receives += 1
            got.append(message)
        return got

    def worker(index: int) -> Step:
        yield _ramp(index)
        while not finished():
            batch = receive(10)
            if not batch:
                yield _PARK
                continue
            stats["receives"] += 1
            busy[0] += 1
            busy[1] = max(busy)
            started = engine.now
            yield latency.invoke
            pacer: dict[str, Any] = {
                "held": {},
                "closed": set(),
                "wanted": Counter(
                    m.sms[i] for m in batch for i in range(len(m.sms)) if m.state[i] != DONE
                ),
            }
            for message in batch:
                outcomes = []
                for index_ in range(len(message.sms)):
                    outcomes.append((yield from deliver(message, index_, pacer)))
                if RETRY in outcomes:
                    stats["retried"] += 1
                    stats["visibility"] += 1
                    yield latency.change_message_visibility + sdk
                    later(message, backoff(rng, message.receives))
                elif RATE_LIMITED in outcomes:
                    # deliveries.handle_batch: the waiting recipients in a new message,
                    # delayed 1 to 5 s, so that waiting uses up no receives.
                    waiting = [i for i, o in enumerate(outcomes) if o == RATE_LIMITED]
                    stats["requeued"] += 1
                    yield latency.send_message_batch + sdk
                    again = _Message(
                        [message.sms[i] for i in waiting],
                        [PENDING] * len(waiting),
                        [0.0] * len(waiting),
                    )
                    later(again, rng.randint(1, 5))
            stats["invocations"] += 1
            stats["lambda_ms"] += int((engine.now - started) * 1000)
            busy[0] -= 1

    def later(message: _Message, seconds: float) -> None:
        heapq.heappush(delayed, (engine.now + seconds, next(order), message))
        engine.start(_waker(), seconds)

    def _waker() -> Step:
        engine.wake(1, latency.pickup)
        return
        yield  # a generator

    def planner() -> Step:
        page = scenario.plan_page_size
        step = profile.planner_step_seconds(latency, share, page, scenario.plan_concurrency)
        while planned[0] < n:
            size = min(page, n - planned[0])
            planned[0] += size
            first = planned[0] - size
            seconds = step * size / page if size < page else step
            if not scenario.split_for_heat:
                # The snapshot's rows share the incident's partition key.
                seconds = max(seconds, size * profile.audience_units / scenario.item_wcu)
            yield seconds
            stats["planner_ms"] += int(seconds * 1000)
            stats["planner_steps"] += 1
            for start in range(first, first + size, 10):
                count = min(10, first + size - start)
                ready.append(
                    _Message(
                        [channel_of(i) for i in range(start, start + count)],
                        [PENDING] * count,
                        [0.0] * count,
                    )
                )
            engine.wake(math.ceil(size / 100), latency.pickup)
        stats["planned_ms"] = max(stats["planned_ms"], int(engine.now * 1000))

    engine.start(planner())
    for index in range(scenario.concurrency):
        engine.start(worker(index))
    engine.run(horizon, finished)
    return Outcome(
        scenario=scenario,
        seconds=stats["last"] / 1000 if finished() else engine.now,
        finished=finished() and stats["dead"] == 0,
        delivered=stats["delivered"],
        sms=stats["sms"],
        emails=stats["emails"],
        dead_recipients=stats["dead"],
        planning_seconds=stats["planned_ms"] / 1000,
        invocations=stats["invocations"] + stats["planner_steps"],
        lambda_seconds=(stats["lambda_ms"] + stats["planner_ms"]) / 1000,
        planner_seconds=stats["planner_ms"] / 1000,
        # The planner's sends, one receive and one delete a batch, and each message's
        # visibility change when it comes back.
        sqs_requests=math.ceil(profile.sqs_sends * n)
        + 2 * stats["receives"]
        + stats["visibility"]
        + stats["requeued"]
        + 2 * stats["planner_steps"],
        pacer_writes=stats["pacer_writes"],
        pacer_reads=stats["pacer_reads"],
        throttled=throttled,
        retried_messages=stats["retried"],
        requeued_messages=stats["requeued"],
        peak_concurrency=busy[1],
        events=engine.events,
        bounds=bounds(scenario, profile, latency),
        sends_per_second={
            channel: [sent_at[sms].get(second, 0) for second in range(int(engine.now) + 1)]
            for channel, sms in (("sms", True), ("email", False))
        },
    )


def backoff(rng: random.Random, receive_count: int) -> int:
    """`deliveries.backoff_seconds`, drawn from the model's own seeded generator."""
    from chalicelib.deliveries import MAX_BACKOFF_SECONDS

    ceiling = min(MAX_BACKOFF_SECONDS, 2.0 * 2 ** max(0, receive_count - 1))
    return max(1, int(rng.uniform(ceiling / 2, ceiling)))


def _channels(sms_share: float, seed: int = 3) -> Callable[[int], bool]:
    """Recipient i's channel (True: SMS), drawn at the measured share: the audience's order
    (service, region, postal code) has nothing to do with a customer's channel."""
    draw = random.Random(seed)
    cache: dict[int, bool] = {}

    def sms(index: int) -> bool:
        if index not in cache:
            cache[index] = draw.random() < sms_share
        return cache.pop(index)

    return sms


# --------------------------------------------------------------------------- costs


def costs(outcome: Outcome, profile: Profile, prices: Prices | None = None) -> dict[str, float]:
    """USD for one broadcast, by service."""
    prices = prices or Prices()
    n = outcome.scenario.recipients
    gb = outcome.scenario.memory_mb / 1024
    wru = sum(profile.wru.values()) * n + outcome.pacer_writes
    rru = sum(profile.rru.values()) * n + outcome.pacer_reads
    return {
        "SMS (SNS)": outcome.sms
        * profile.sms_segments
        * (prices.sms_part + prices.sms_carrier_fee),
        "email (SES)": outcome.emails * prices.email,
        "Lambda": outcome.invocations * prices.lambda_request
        + outcome.lambda_seconds * gb * prices.lambda_gb_second,
        "SQS": outcome.sqs_requests * prices.sqs_request,
        "DynamoDB": wru * prices.dynamodb_wru + rru * prices.dynamodb_rru,
    }


def requests(outcome: Outcome, profile: Profile) -> dict[str, float]:
    """AWS requests and units for the broadcast."""
    n = outcome.scenario.recipients
    return {
        "DynamoDB write units": round(sum(profile.wru.values()) * n + outcome.pacer_writes),
        "DynamoDB read units": round(sum(profile.rru.values()) * n + outcome.pacer_reads),
        "Lambda invocations": outcome.invocations,
        "Lambda GB-seconds": round(outcome.lambda_seconds * outcome.scenario.memory_mb / 1024),
        "SQS requests": outcome.sqs_requests,
        "SMS message parts": round(outcome.sms * profile.sms_segments),
        "emails": outcome.emails,
    }


# --------------------------------------------------------------------------- the benchmark

# The real code's half runs this many recipients (moto costs ~25 ms of CPU per recipient).
MEASURED_RECIPIENTS = 2000


def validation_scenarios(recipients: int) -> list[Scenario]:
    """Small runs that exercise what bounds the big one: SMS- and SES-bound pacing with
    few workers, and many workers sharing high send-rate windows."""
    return [
        Scenario(recipients, sms_mps=0, ses_rate=0, concurrency=8, memory_mb=FULL_VCPU_MB),
        Scenario(
            recipients,
            sms_mps=40,
            ses_rate=20,
            concurrency=8,
            send_rate_sms=20,
            send_rate_email=20,
            memory_mb=1024,
        ),
        Scenario(
            recipients,
            sms_mps=400,
            ses_rate=200,
            concurrency=24,
            send_rate_sms=200,
            send_rate_email=200,
            memory_mb=1024,
        ),
        Scenario(
            recipients,
            sms_mps=1200,
            ses_rate=600,
            concurrency=100,
            send_rate_sms=600,
            send_rate_email=600,
            memory_mb=FULL_VCPU_MB,
        ),
    ]


def steady_rate(per_second: Sequence[int]) -> float:
    """Sends a second between the 10th and the 90th percentile send."""
    total = sum(per_second)
    if total < 20:
        return 0.0
    cumulative = list(itertools.accumulate(per_second))
    low = next(i for i, c in enumerate(cumulative) if c >= total * 0.1)
    high = next(i for i, c in enumerate(cumulative) if c >= total * 0.9)
    return total * 0.8 / max(1, high - low + 1)


def _per_second(times: Sequence[float]) -> list[int]:
    counts = Counter(math.floor(t) for t in times)
    return [counts.get(s, 0) for s in range(math.floor(max(times, default=0)) + 1)]


def compare(real: Measured, model: Outcome) -> dict[str, Any]:
    both_real = _per_second([*real.sms_times, *real.email_times])
    both_model = [a + b for a, b in zip(*model.sends_per_second.values(), strict=True)]
    return {
        "scenario": real.scenario.label()
        + (
            f", SEND_RATE_SMS {real.scenario.send_rate_sms}, "
            f"SEND_RATE_EMAIL {real.scenario.send_rate_email}"
            if real.scenario.send_rate_sms
            else ", no send rates"
        ),
        "recipients": real.planned,
        "seconds": {"real code": round(real.seconds, 1), "model": round(model.seconds, 1)},
        "recipients_per_second": {
            "real code": round(steady_rate(both_real), 1),
            "model": round(steady_rate(both_model), 1),
        },
        "sms_per_second": {
            "real code": round(steady_rate(_per_second(real.sms_times)), 1),
            "model": round(steady_rate(model.sends_per_second["sms"]), 1),
        },
        "emails_per_second": {
            "real code": round(steady_rate(_per_second(real.email_times)), 1),
            "model": round(steady_rate(model.sends_per_second["email"]), 1),
        },
        "lambda_seconds": {
            "real code": round(sum(i.seconds for i in real.invocations), 1),
            "model": round(model.lambda_seconds, 1),
        },
        "messages_retried": {"real code": real.retried_messages, "model": model.retried_messages},
        "send_rate_calls": {
            "real code": real.meter.total("dynamodb.update_item[send-rates]")
            + real.meter.total("dynamodb.get_item[send-rates]"),
            "model": model.pacer_writes + model.pacer_reads,
        },
    }


def _summary(outcome: Outcome, profile: Profile) -> dict[str, Any]:
    spend = costs(outcome, profile)
    return {
        "scenario": asdict(outcome.scenario),
        "label": outcome.scenario.label(),
        "minutes": round(outcome.minutes, 1),
        "finished": outcome.finished,
        "delivered": outcome.delivered,
        "dead_lettered": outcome.dead_recipients,
        "planning_minutes": round(outcome.planning_seconds / 60, 1),
        "bottleneck": outcome.bottleneck(),
        "bounds_minutes": {k: round(v / 60, 1) for k, v in outcome.bounds.items()},
        "sms_per_second": round(steady_rate(outcome.sends_per_second["sms"]), 1),
        "emails_per_second": round(steady_rate(outcome.sends_per_second["email"]), 1),
        "peak_concurrency": outcome.peak_concurrency,
        "throttled": dict(outcome.throttled),
        "retried_messages": outcome.retried_messages,
        "requeued_messages": outcome.requeued_messages,
        "requests": requests(outcome, profile),
        "cost_usd": {k: round(v, 2) for k, v in spend.items()},
        "cost_usd_total": round(sum(spend.values()), 2),
    }


def target_scenarios() -> dict[str, Scenario]:
    """The 1,000,000-recipient runs the doc discusses, in the order it discusses them."""
    n = TARGET_RECIPIENTS
    configured = Scenario(
        n,
        sms_mps=20,
        ses_rate=14,
        concurrency=1000,
        send_rate_sms=20,
        send_rate_email=14,
        memory_mb=128,
    )
    raised = Scenario(
        n,
        sms_mps=3000,
        ses_rate=1000,
        concurrency=1000,
        send_rate_sms=1500,
        send_rate_email=1000,
        plan_page_size=1000,
        memory_mb=FULL_VCPU_MB,
    )
    # The send rates off: the pool's size keeps the sends under the quotas instead.
    unpaced = replace(raised, send_rate_sms=0, send_rate_email=0, concurrency=150)
    return {
        CONFIGURED: configured,
        RAISED: raised,
        UNPACED: unpaced,
        BEFORE: replace(unpaced, counter_shards=1, plan_concurrency=1),
        UNSPLIT: replace(unpaced, split_for_heat=False),
    }


CONFIGURED = "prod settings, default quotas"
RAISED = "code as is, quotas raised"
UNPACED = "code as is, quotas raised, send rates off, concurrency 150"
BEFORE = "the same, as the code was: one counter item, planner calls one at a time"
UNSPLIT = "the same, no split for heat"


# Sends SNS or SES may refuse (and the worker retry later) in a run that counts as reaching
# the goal: with the send rates off, the pool's size alone keeps the sends under the quotas.
REFUSED_AT_MOST = 0.01


def reaches_goal(outcome: Outcome) -> bool:
    refused = outcome.throttled["SNS"] + outcome.throttled["SES"]
    return (
        outcome.finished
        and outcome.seconds <= TARGET_SECONDS
        and refused <= REFUSED_AT_MOST * outcome.scenario.recipients
    )


def find_settings(
    profile: Profile, latency: Latency
) -> tuple[Scenario, Outcome, list[dict[str, Any]]]:
    """The smallest quotas (SMS first, then SES), then the smallest concurrency, that deliver
    1,000,000 in 10 minutes with nothing dead-lettered and almost no send refused."""
    tried: list[dict[str, Any]] = []
    base = target_scenarios()[UNPACED]
    for mps, ses, concurrency in itertools.product(
        (1500, 2000, 2500, 3000), (500, 750, 1000), (125, 150, 200, 250)
    ):
        scenario = replace(base, sms_mps=mps, ses_rate=ses, concurrency=concurrency)
        if max(bounds(scenario, profile, latency).values()) > TARGET_SECONDS * 0.95:
            continue
        outcome = simulate(scenario, profile, latency, horizon=2 * TARGET_SECONDS)
        ok = reaches_goal(outcome)
        tried.append(
            {
                "label": scenario.label(),
                "minutes": round(outcome.minutes, 1),
                "refused": outcome.throttled["SNS"] + outcome.throttled["SES"],
                "ok": ok,
            }
        )
        if ok:
            return scenario, outcome, tried
    raise SimulationError(f"no setting in the search reaches 10 minutes: {tried}")


def concurrency_for(
    scenario: Scenario, profile: Profile, latency: Latency
) -> tuple[int, Outcome] | None:
    """The smallest MaximumConcurrency that still reaches the goal at these latencies."""
    for concurrency in (150, 200, 250, 300, 400, 500):
        outcome = simulate(
            replace(scenario, concurrency=concurrency),
            profile,
            latency,
            horizon=2 * TARGET_SECONDS,
        )
        if reaches_goal(outcome):
            return concurrency, outcome
    return None


def run(recipients: int = MEASURED_RECIPIENTS) -> BenchResult:
    latency = Latency()
    print(f"scaling: the real code, {recipients:,} recipients, no quotas", flush=True)
    scenarios = validation_scenarios(recipients)
    profile_run = measure(scenarios[0], latency)
    profile = Profile.of(profile_run)
    validation = [compare(profile_run, simulate(scenarios[0], profile, latency))]
    for scenario in scenarios[1:]:
        print(f"scaling: the real code, {scenario.label()}", flush=True)
        validation.append(compare(measure(scenario, latency), simulate(scenario, profile, latency)))
    results: dict[str, dict[str, Any]] = {}
    for name, scenario in target_scenarios().items():
        print(f"scaling: the model, 1,000,000 recipients, {name}", flush=True)
        # The prod settings need many hours; an hour shows where they go.
        horizon = 3600.0 if scenario.sms_mps < 100 else 4 * 3600.0
        results[name] = _summary(simulate(scenario, profile, latency, horizon=horizon), profile)
    print("scaling: searching for settings that reach 10 minutes", flush=True)
    chosen, outcome, tried = find_settings(profile, latency)
    doubled = replace(latency, **_doubled(latency))
    slower = simulate(chosen, profile, doubled)
    restored = concurrency_for(chosen, profile, doubled)
    # The Pacer's cost, on the run the real code made with many workers sharing windows.
    paced = scenarios[2]
    unpaced = simulate(replace(paced, send_rate_sms=0, send_rate_email=0), profile, latency)
    best = results[UNPACED]
    details = {
        "measured_recipients": recipients,
        "target_recipients": TARGET_RECIPIENTS,
        "target_minutes": TARGET_SECONDS / 60,
        "profile": profile.to_dict(),
        "hot_keys": _hot_keys(profile_run),
        "per_recipient_ms": {
            str(memory): round(1000 * _recipient_seconds(profile, latency, memory))
            for memory in (128, 1024, FULL_VCPU_MB)
        },
        "validation": validation,
        "scenarios": results,
        "settings_for_10_minutes": {
            **_summary(outcome, profile),
            "search": tried,
            "minutes_with_latencies_doubled": round(slower.minutes, 1),
            "concurrency_with_latencies_doubled": restored[0] if restored else None,
            "minutes_with_latencies_doubled_and_that_concurrency": (
                round(restored[1].minutes, 1) if restored else None
            ),
        },
        "pacer_check": {
            "scenario": paced.label(),
            "send_rate_sms": paced.send_rate_sms,
            "validation": validation[2],
            "send_rates_off": {
                "seconds": round(unpaced.seconds, 1),
                "sms_per_second": round(steady_rate(unpaced.sends_per_second["sms"]), 1),
                "refused": unpaced.throttled["SNS"] + unpaced.throttled["SES"],
            },
        },
        "latency": asdict(latency),
        "prices": asdict(Prices()),
        "assumptions": [{"what": w, "value": v, "source": s} for w, v, s in ASSUMPTIONS],
    }
    details["method_markdown"] = METHOD
    details["details_markdown"] = _performance_markdown(details)
    return BenchResult(
        name=NAME,
        title="Scaling model: 1,000,000 recipients on AWS (minutes, code as is, quotas raised)",
        unit="min",
        measured=best["minutes"],
        baseline=TARGET_SECONDS / 60,
        goal=GOAL,
        details=details,
    )


def _recipient_seconds(profile: Profile, latency: Latency, memory_mb: int) -> float:
    """A recipient's time on a worker, with nothing waited for."""
    share = min(1.0, memory_mb / FULL_VCPU_MB)
    return (
        profile.worker_seconds(latency, share)
        + profile.sms_share * latency.publish
        + (1 - profile.sms_share) * latency.send_raw_email
        + latency.transact_write_items
        + 3 * latency.sdk / share
    )


def _doubled(latency: Latency) -> dict[str, float]:
    return {
        name: value * 2
        for name, value in asdict(latency).items()
        if name not in ("sdk", "query_per_item")
    }


def _hot_keys(run: Measured) -> list[dict[str, Any]]:
    """The partition keys and items that take the most write units per recipient."""
    n = run.planned
    found = [
        ("partition key", key, units / n) for key, units in run.meter.key_wru.most_common(5)
    ] + [("item", key, units / n) for key, units in run.meter.item_wru.most_common(3)]
    return [
        {"what": what, "key": key, "wru_per_recipient": round(per, 3)}
        for what, key, per in found
        if per >= 0.1
    ]


METHOD = """\
**Method.** Not a measurement of AWS: a model of it, checked against the real code. The
real planner and delivery worker (`broadcasts.plan_message`, `deliveries.handle_batch`)
run unchanged in threads on a virtual clock, against moto's in-process DynamoDB and small
SQS, SNS and SES stand-ins that enforce the quotas in virtual time; a discrete-event model
of the same flow, fed with the per-recipient calls, units and CPU the real code measured,
is checked against those runs and then run at 1,000,000 recipients. The ratio is the
model's minutes for 1,000,000 recipients, with the code as it is and the quotas raised,
over the 10-minute goal. docs/SCALING.md explains the model and its assumptions.
"""


def _performance_markdown(details: Mapping[str, Any]) -> str:
    lines = [
        "| 1,000,000 recipients | minutes | bottleneck | cost (USD) |",
        "|---|---:|---|---:|",
    ]
    for name, summary in details["scenarios"].items():
        minutes = f"{summary['minutes']:,}" + ("" if summary["finished"] else "+ (unfinished)")
        lines.append(
            f"| {name} | {minutes} | {summary['bottleneck']} | {summary['cost_usd_total']:,.0f} |"
        )
    chosen = details["settings_for_10_minutes"]
    lines.append(
        f"| settings for 10 minutes: {chosen['label']} | {chosen['minutes']} | "
        f"{chosen['bottleneck']} | {chosen['cost_usd_total']:,.0f} |"
    )
    return "\n".join(lines) + "\n\nSee docs/SCALING.md for the settings and the breakdown."


# --------------------------------------------------------------------------- docs/SCALING.md

DOC_PATH = RESULTS_DIR.parent.parent / "docs" / "SCALING.md"


def _money(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def _scenario_settings(s: Mapping[str, Any]) -> str:
    rates = (
        f"SEND_RATE_SMS {s['send_rate_sms']}, SEND_RATE_EMAIL {s['send_rate_email']}"
        if s["send_rate_sms"] or s["send_rate_email"]
        else "send rates off"
    )
    design = []
    if s["counter_shards"] != COUNTER_SHARDS:
        design.append(f"counter in {s['counter_shards']} item(s)")
    if s["plan_concurrency"] != DEFAULT_PLAN_CONCURRENCY:
        design.append(f"PLAN_CONCURRENCY {s['plan_concurrency']}")
    if not s["split_for_heat"]:
        design.append("no split for heat")
    return (
        f"{s['sms_mps']:g} MPS, SES {s['ses_rate']:g}/s, concurrency {s['concurrency']}, "
        f"{rates}, page {s['plan_page_size']}, {s['memory_mb']} MB"
        + (f"; {', '.join(design)}" if design else "")
    )


def render_doc(result: Mapping[str, Any]) -> str:
    """docs/SCALING.md from the result of `run` (bench/results/scaling.json): every number in
    it comes from there."""
    d = result["details"]
    profile, scenarios = d["profile"], d["scenarios"]
    chosen = d["settings_for_10_minutes"]
    s = chosen["scenario"]
    configured, raised, unpaced = scenarios[CONFIGURED], scenarios[RAISED], scenarios[UNPACED]
    before, unsplit = scenarios[BEFORE], scenarios[UNSPLIT]
    check = d["pacer_check"]
    paced = check["validation"]
    n = d["target_recipients"]
    sms_share, segments = profile["sms_share"], profile["sms_segments"]
    prices = d["prices"]
    sms_price = prices["sms_part"] + prices["sms_carrier_fee"]
    cost = chosen["cost_usd"]
    total = chosen["cost_usd_total"]
    counter_rate = 1000 / profile["counter_units"]
    counter_minutes = before["bounds_minutes"]["broadcast counter item"]
    plan_concurrency = unpaced["scenario"]["plan_concurrency"]
    runner_up = sorted(
        (
            name
            for name in unpaced["bounds_minutes"]
            if name not in {unpaced["bottleneck"], "planner"}
        ),
        key=lambda name: -unpaced["bounds_minutes"][name],
    )[0]
    deliveries_wru = profile["wru"].get("deliveries", 0) + profile["wru"].get(
        "deliveries (GSIs)", 0
    )
    out: list[str] = []
    add = out.append
    add("# Scaling: one broadcast to 1,000,000 recipients on AWS\n")
    add(
        "Generated by `python -m bench.scaling` from `bench/results/scaling.json`, which "
        "`python -m bench --only scaling` writes (about ten minutes); edit `bench/scaling.py`, "
        f"not this file. Recorded {result['recorded_at']}.\n"
    )
    add("## The answer\n")
    add(
        f"- **With the code as it is, a million recipients take {unpaced['minutes']} minutes** "
        f"once the quotas are raised ({_scenario_settings(unpaced['scenario'])}). The "
        f"bottleneck is {unpaced['bottleneck']}: "
        f"{unpaced['bounds_minutes'][unpaced['bottleneck']]} minutes for a million. Behind "
        f"it, the {runner_up} ({unpaced['bounds_minutes'][runner_up]}) and the planner "
        f"({unpaced['bounds_minutes']['planner']}): a planner step's snapshot writes and job "
        f"sends overlap, {plan_concurrency} at a time (`PLAN_CONCURRENCY`), but its own CPU "
        f"does not: {profile['planner_cpu'] * 1000:.2f} ms a recipient at one vCPU (reading "
        "the page, building the snapshot rows and the jobs)."
    )
    add(
        f"- **As the code was before, the same settings took {before['minutes']} minutes.** "
        "Every settle is a DynamoDB transaction that adds 1 to a counter "
        f"({profile['counter_units']:g} write units), and one item takes at most 1,000 write "
        f"units a second: on the broadcast's one item, {counter_rate:,.0f} settles a second, "
        f"{counter_minutes} minutes for a million. The counters are now spread over "
        f"{unpaced['scenario']['counter_shards']} items (`store.counter_shard`, by customer; "
        "readers add them up). And the planner made its calls one after another: "
        f"{before['bounds_minutes']['planner']} minutes of planning, now "
        f"{unpaced['bounds_minutes']['planner']}."
    )
    add(
        f"- **With the prod stage's settings and the default quotas** "
        f"({_scenario_settings(configured['scenario'])}), an hour in, "
        f"{configured['delivered']:,} notices are out and {configured['dead_lettered']:,} "
        "recipients' jobs are in the dead-letter queue: jobs a full send-rate second turns "
        f"away come back as new messages and use up no receives. They come back often: "
        f"{configured['requeued_messages']:,} times in that hour, "
        f"{configured['requeued_messages'] / (configured['minutes'] * 60):,.0f} SQS sends a "
        f"second, because {configured['scenario']['concurrency']:,} workers wait on "
        f"{configured['scenario']['send_rate_sms']} tokens a second (a MaximumConcurrency near "
        "the send rates would spare them). SMS alone needs "
        f"{configured['bounds_minutes']['SMS throughput'] / 60:,.1f} hours at 20 MPS."
    )
    add(
        f"- **{chosen['minutes']} minutes with the smallest quotas the search found**: "
        f"{_scenario_settings(s)}. The table below lists them."
    )
    add(
        f"- **Cost: about USD {_money(total)} a broadcast, {cost['SMS (SNS)'] / total:.1%} of it "
        f"SMS**: {n * sms_share:,.0f} texts (the demo data's {sms_share:.0%} SMS / "
        f"{1 - sms_share:.0%} email mix) of {segments:.2f} message parts on average (the real "
        f"templates, four locales) at USD {sms_price:.5f} a part. Email, Lambda, SQS and "
        f"DynamoDB together: USD {total - cost['SMS (SNS)']:,.0f}.\n"
    )
    add("## How the numbers are made\n")
    add(
        "`bench/scaling.py` has two halves, and each checks the other.\n\n"
        f"1. **The real code on a virtual clock.** {d['measured_recipients']:,} demo customers, "
        "one initial broadcast to all of them: the planner (`broadcasts.plan_message`) and the "
        "delivery worker (`deliveries.handle_batch`) run unchanged, each Lambda instance a "
        "thread, against moto's in-process DynamoDB (the tables of `infra/`) and small models "
        "of SQS (visibility timeouts, receive counts, the dead-letter queue after "
        f"{MAX_RECEIVES} receives), SNS and SES. The threads take turns on one virtual clock: "
        "every AWS call moves the caller's clock by an assumed latency, and the Python time "
        "the handler spends between calls (its thread's CPU time, divided by the Lambda's "
        "share of a vCPU) moves it too; moto's own time never counts. The models enforce the "
        "quotas in virtual time: SMS parts and emails per second, 1,000 write units a second "
        "per item (and per partition key without split for heat, with botocore's retries), "
        "and the event source mapping's concurrency and ramp. Every call is metered: count, "
        "bytes, read and write units (item sizes from moto, transactions doubled, GSI writes "
        "added). The code reads the clock through `time` and `utcnow` in `store`, "
        "`deliveries`, `broadcasts` and `queues`, and the Pacer through its `clock` and "
        "`sleep`; the simulation swaps those for the virtual clock (a clock carried in "
        "`Services` would be the cleaner seam), and runs a planner step's overlapping calls "
        "(`concurrency.run_all`) as threads of their own on the same clock.\n"
        "2. **A discrete-event model** of the same flow (`simulate`): planner steps, the "
        "queue, the pollers, a step-by-step replica of the Pacer's shared one-second windows, "
        "the provider quotas, the counter items and botocore's retries, with the per-recipient "
        "calls and CPU the first half measured. moto costs ~25 ms of CPU per recipient, too "
        "much for a million; the model runs a million in seconds.\n"
    )
    add(
        "The model is run with the settings of each real-code run and must agree with it. "
        "Small runs end in a tail of a few large batches, so steady throughput (the middle "
        "80% of sends) is the sharper test:\n"
    )
    add("| run | time, real code / model | recipients/s | SMS/s | emails/s | retried messages |")
    add("|---|---:|---:|---:|---:|---:|")
    for v in d["validation"]:
        add(
            f"| {v['scenario']} | {v['seconds']['real code']} s / {v['seconds']['model']} s "
            f"| {v['recipients_per_second']['real code']} / {v['recipients_per_second']['model']}"
            f" | {v['sms_per_second']['real code']} / {v['sms_per_second']['model']} "
            f"| {v['emails_per_second']['real code']} / {v['emails_per_second']['model']} "
            f"| {v['messages_retried']['real code']} / {v['messages_retried']['model']} |"
        )
    add("")
    add("## What bounds a broadcast\n")
    add(
        "Each constraint alone allows no less than this many minutes for a million "
        "(per-recipient figures from the measured profile):\n"
    )
    names = list(dict.fromkeys([*raised["bounds_minutes"], *unsplit["bounds_minutes"]]))
    columns = [(RAISED, raised), (UNPACED, unpaced), (BEFORE, before), (UNSPLIT, unsplit)]
    add("| constraint | " + " | ".join(name for name, _ in columns) + " |")
    add("|---|" + "---:|" * len(columns))
    for name in names:
        cells = [str(c["bounds_minutes"].get(name, "—")) for _, c in columns]
        add(f"| {name} | " + " | ".join(cells) + " |")
    add("")
    add(
        f"- **SMS**: {n * sms_share:,.0f} texts x {segments:.2f} parts = "
        f"{n * sms_share * segments:,.0f} message parts. SNS meters SMS in parts per second per "
        "origination identity: 100 MPS for a US short code, 3 for a toll-free number unless "
        "raised, so thousands of MPS mean several short codes in a pool or a raise from AWS.\n"
        "- **SES**: the account's maximum send rate, per second, set by AWS on request.\n"
        "- **Lambda**: a recipient takes a worker about "
        f"{d['per_recipient_ms'][str(FULL_VCPU_MB)]} ms at {FULL_VCPU_MB} MB (claim, frequency "
        "cap, render, send, settle); "
        "MaximumConcurrency caps the pool, the event source mapping adds 300 a minute at most.\n"
        "- **DynamoDB**: each counter item and, without split for heat, the ledger "
        "(`deliveries`, every row of a broadcast under one partition key: 3 write units a "
        "recipient) and the audience snapshot (the incident's partition) are each held to "
        "1,000 write units a second.\n"
        "- **The planner**: one step at a time, each reading a page, writing it to the "
        "snapshot (25 rows a BatchWriteItem) and sending its jobs (ten messages a "
        f"SendMessageBatch), those calls {plan_concurrency} at a time; its CPU does not "
        "overlap (one vCPU at 1769 MB, and Python's lock besides).\n"
    )
    add("## A million recipients, scenario by scenario\n")
    add("| scenario | settings | minutes | delivered | dead-lettered | bottleneck |")
    add("|---|---|---:|---:|---:|---|")
    for name, c in scenarios.items():
        minutes = f"{c['minutes']}" + ("" if c["finished"] else " (stopped)")
        add(
            f"| {name} | {_scenario_settings(c['scenario'])} | {minutes} | "
            f"{c['delivered']:,} | {c['dead_lettered']:,} | {c['bottleneck']} |"
        )
    add(
        f"| **settings for ≤ 10 minutes** | {_scenario_settings(s)} | **{chosen['minutes']}** | "
        f"{chosen['delivered']:,} | {chosen['dead_lettered']:,} | {chosen['bottleneck']} |"
    )
    add("")
    add(
        f"A stopped run ran out of its horizon ({configured['minutes']} minutes for the first) "
        "or lost recipients to the dead-letter queue; its minutes are when it stopped or "
        "its last notice went.\n"
    )
    add("## The settings that reach ten minutes\n")
    add("| what | value | where |")
    add("|---|---|---|")
    add(
        f"| SMS throughput | ≥ {s['sms_mps']:g} message parts/s | an AWS quota: origination "
        "identities and their MPS |"
    )
    add(f"| SES sending rate | ≥ {s['ses_rate']:g} emails/s | an AWS quota (SES console) |")
    add(
        f"| delivery MaximumConcurrency | {s['concurrency']} | the delivery queue's event "
        "source mapping |"
    )
    add(
        f"| function memory | {s['memory_mb']} MB (one vCPU) | `lambda_memory_size` in "
        ".chalice/config.json (default 128 MB) |"
    )
    add(f"| PLAN_PAGE_SIZE | {s['plan_page_size']} | .chalice/config.json |")
    add(f"| PLAN_CONCURRENCY | {s['plan_concurrency']} (the default) | .chalice/config.json |")
    add(
        "| SEND_RATE_SMS, SEND_RATE_EMAIL | 0 (off) | .chalice/config.json: the pool's size "
        "keeps the sends under the quotas (see the findings) |"
    )
    add(
        f"| ledger and snapshot partitions | split for heat | DynamoDB's own; without it "
        f"{unsplit['minutes']} minutes |"
    )
    add("")
    refused = chosen["throttled"].get("SNS", 0) + chosen["throttled"].get("SES", 0)
    restored = chosen["concurrency_with_latencies_doubled"]
    add(
        f"With these, {chosen['sms_per_second']:,} SMS and {chosen['emails_per_second']:,} "
        f"emails a second go out, the bottleneck is {chosen['bottleneck']}, and the last "
        f"notice goes at {chosen['minutes']} minutes; "
        + (
            f"SNS and SES refuse {refused:,} sends (the worker retries them after a back-off). "
            if refused
            else "SNS and SES refuse none. "
        )
        + "The margin is thin: with every latency "
        f"doubled the same settings take {chosen['minutes_with_latencies_doubled']} minutes"
        + (
            f", and MaximumConcurrency {restored} brings that back to "
            f"{chosen['minutes_with_latencies_doubled_and_that_concurrency']}."
            if restored
            else "."
        )
        + " Measure the latencies on AWS (the functions' Duration metric) before relying on it.\n"
    )
    add(
        "Searched in this order (smallest SMS quota first, then SES, then concurrency; a "
        "setting whose bounds already exceed the goal is not simulated; a run counts when "
        f"it ends within ten minutes, nothing dead-lettered and at most {REFUSED_AT_MOST:.0%} "
        "of sends refused):\n"
    )
    for t in chosen["search"]:
        verdict = "" if t["ok"] else " (no)"
        add(f"- {t['label']}: {t['minutes']} minutes, {t['refused']:,} refused{verdict}")
    add("")
    add("## Cost per broadcast\n")
    add(f"For the {chosen['minutes']}-minute run, US East prices:\n")
    add("| service | USD | what |")
    add("|---|---:|---|")
    req = chosen["requests"]
    what = {
        "SMS (SNS)": f"{req['SMS message parts']:,} parts x USD {sms_price:.5f} "
        f"({prices['sms_part']} AWS + {prices['sms_carrier_fee']} carrier fees)",
        "email (SES)": f"{req['emails']:,} emails x USD 0.10 per 1,000",
        "Lambda": f"{req['Lambda invocations']:,} invocations, {req['Lambda GB-seconds']:,} "
        "GB-seconds",
        "SQS": f"{req['SQS requests']:,} requests (ten recipients a message, ten messages a call)",
        "DynamoDB": f"{req['DynamoDB write units']:,} write and {req['DynamoDB read units']:,} "
        "read units, on demand",
    }
    for service, usd in cost.items():
        add(f"| {service} | {_money(usd)} | {what[service]} |")
    add(f"| **total** | **{_money(total)}** | |")
    add("")
    add(
        "Storage (the ledger and snapshot rows until their TTL), CloudWatch logs and data "
        "transfer are left out. SMS prices differ by country and carrier; the figure is "
        "for US numbers.\n"
    )
    add("## What the real code costs per recipient\n")
    add(
        f"Measured on the {d['measured_recipients']:,}-recipient run without quotas: calls "
        "a delivery worker makes per recipient, besides the send (SNS `Publish` or SES "
        "`SendRawEmail`), the settle (`TransactWriteItems`: the ledger row and the counter "
        "item) and the Pacer's windows:\n"
    )
    add("| call | per recipient |")
    add("|---|---:|")
    for name, count in profile["worker_calls"].items():
        add(f"| `{name}` | {count:.3f} |")
    add("")
    add(
        f"Worker CPU {profile['worker_cpu'] * 1000:.2f} ms and planner CPU "
        f"{profile['planner_cpu'] * 1000:.3f} ms per recipient at one vCPU (this machine's). "
        "DynamoDB units per recipient, by table (the writes to a table's GSIs on a row "
        "of their own):\n"
    )
    add("| table | write units | read units |")
    add("|---|---:|---:|")
    for table in dict.fromkeys([*profile["wru"], *profile["rru"]]):
        add(
            f"| {table} | {profile['wru'].get(table, 0):.3f} | {profile['rru'].get(table, 0):.3f} |"
        )
    add("")
    add("The keys that take the most write units per recipient:\n")
    for hot in d["hot_keys"]:
        add(f"- {hot['what']} `{hot['key']}`: {hot['wru_per_recipient']}")
    add("")
    add("## Findings beyond the ten minutes\n")
    add(
        "- **SEND_RATE_SMS counts message parts**, as SNS meters them (a notice averages "
        f"{segments:.2f}), so SEND_RATE_SMS 20 against a 20 MPS quota keeps SNS's refusals "
        f"to {configured['throttled'].get('SNS', 0):,} in the prod-settings hour.\n"
        "- **The send rates cost throughput when many workers share them.** A batch takes "
        "tokens a few at a time (at most 5), good only within their second, and a job a "
        "full second turns away comes back as a new message 1 to 5 s later. With "
        f"{raised['scenario']['concurrency']} workers, SEND_RATE_SMS "
        f"{raised['scenario']['send_rate_sms']} and SEND_RATE_EMAIL "
        f"{raised['scenario']['send_rate_email']}, a million take {raised['minutes']} minutes "
        f"({raised['sms_per_second']} SMS a second, {raised['requeued_messages']:,} jobs "
        f"requeued, {raised['dead_lettered']:,} dead-lettered). The real code shows the cost "
        f"at small scale too: with {check['scenario']} and SEND_RATE_SMS "
        f"{check['send_rate_sms']}, it sent {paced['sms_per_second']['real code']} SMS a "
        f"second and took {paced['seconds']['real code']} s (the model: "
        f"{paced['sms_per_second']['model']}, {paced['seconds']['model']} s); with the send "
        f"rates off the same pool takes {check['send_rates_off']['seconds']} s at "
        f"{check['send_rates_off']['sms_per_second']} SMS a second, "
        f"{check['send_rates_off']['refused']} sends refused. For a ten-minute broadcast, "
        "leave the send rates off and size MaximumConcurrency to the quotas.\n"
        f"- **The dead-letter queue is still a failure mode for refusals.** A send SNS or "
        f"SES refuses is retried with its message, whose {MAX_RECEIVES} receives a long "
        "throttle can use up (back-off 2 s doubling); `forewarn deliveries redrive` sends "
        "them again, and the ledger keeps that exactly-once.\n"
        f"- **New tables start cold.** A new on-demand table takes 4,000 write units a second "
        f"at once and doubles from its peak; the ten-minute run writes "
        f"{deliveries_wru * n / (chosen['minutes'] * 60):,.0f} units a second to `deliveries` "
        "and its GSI, so warm the tables first (warm throughput, or a provisioned start).\n"
        f"- **Memory.** At Chalice's default 128 MB a function has 7% of a vCPU, and the "
        "rendering and the SDK's work take ~14 times as long: a recipient takes a worker "
        f"{d['per_recipient_ms']['128']} ms instead of "
        f"{d['per_recipient_ms'][str(FULL_VCPU_MB)]} ms at {FULL_VCPU_MB} MB "
        f"({d['per_recipient_ms']['1024']} ms at 1,024 MB). The GB-seconds cost more but "
        "the pool needed is smaller.\n"
        f"- **Split for heat is assumed.** Without it (`{UNSPLIT}`), the ledger's one "
        f"partition key holds the broadcast to 333 recipients a second: {unsplit['minutes']} "
        "minutes. Keying the ledger by `broadcast_id#shard` would remove the dependence.\n"
    )
    add("## Assumptions and their sources\n")
    add("| what | value | source |")
    add("|---|---|---|")
    for a in d["assumptions"]:
        add(f"| {a['what']} | {a['value']} | {a['source']} |")
    add("")
    add(
        "Latencies (seconds): "
        + ", ".join(f"{k} {v:g}" for k, v in d["latency"].items())
        + ". Unmodelled: cold starts (~0.4 s per new instance, `bench/results/coldstart.json`), "
        "Lambda's own throttles below MaximumConcurrency (the account's 1,000 by default), "
        "SQS's and DynamoDB's latency tails, read throttling (every key read here stays far "
        "under 3,000 units a second), and carriers' own filtering of bulk SMS.\n"
    )
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.scaling`: write docs/SCALING.md from bench/results/scaling.json."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=main.__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / f"{NAME}.json")
    parser.add_argument("--doc", type=Path, default=DOC_PATH)
    args = parser.parse_args(argv)
    args.doc.write_text(render_doc(json.loads(args.results.read_text())))
    print(f"bench.scaling: wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
