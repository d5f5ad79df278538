"""Local stand-in for Lambda's SQS event source mappings and EventBridge schedules.

Drives a Chalice app's ``@app.on_sqs_message`` and ``@app.schedule`` handlers against a
real SQS API (moto's server mode when run locally).  Visibility timeouts, receive counts
and redrive to dead-letter queues are left to the queue service, so they behave the way
the queues are configured rather than the way this module imagines.

Message bodies hold personal data: nothing here logs them, only ids, counts, function
names and exception types.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from chalice.app import Chalice, ScheduledEventConfig, SQSEventConfig
from chalice.local import LambdaContext
from croniter import croniter

log = logging.getLogger(__name__)

# moto's default account; EventBridge events and rule ARNs carry it locally.
ACCOUNT_ID = "123456789012"
STAT_KEYS = ("invocations", "errors", "messages_deleted", "messages_failed")

NextFire = Callable[[datetime], datetime]

# SQS refuses more than 10 messages per ReceiveMessage or DeleteMessageBatch call.
_SQS_MAX_BATCH = 10
# Chalice's defaults for lambda_memory_size and lambda_timeout.
_LAMBDA_MEMORY_MB = 128
_LAMBDA_TIMEOUT_MS = 60_000
# With short polling (poll_wait_seconds=0) an empty queue would otherwise be hammered.
_IDLE_PAUSE_SECONDS = 0.1
_ERROR_BACKOFF_SECONDS = 1.0
_DRAIN_POLL_SECONDS = 0.05


# --------------------------------------------------------------------------- schedules

_RATE_RE = re.compile(r"rate\(\s*(\d+)\s+([a-z]+)\s*\)")
_CRON_RE = re.compile(r"cron\((.*)\)")
_RATE_UNITS = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
# Index is croniter's day-of-week number (0 = SUN); AWS numbers are one higher.
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


def parse_schedule(expression: str) -> NextFire:
    """Parse an EventBridge ``rate(...)`` or ``cron(...)`` expression.

    Returns a function giving the next fire time (UTC, timezone-aware) strictly after a
    moment; naive moments are taken to be UTC, as EventBridge schedules are.
    """
    text = expression.strip()
    if match := _RATE_RE.fullmatch(text):
        return _rate_schedule(int(match[1]), match[2], expression)
    if match := _CRON_RE.fullmatch(text):
        return _cron_schedule(match[1], expression)
    raise ValueError(
        f"unsupported schedule expression {expression!r}: expected "
        "'rate(<n> minute[s]|hour[s]|day[s])' or 'cron(<6 fields>)'"
    )


def _rate_schedule(value: int, unit: str, expression: str) -> NextFire:
    singular = unit.removesuffix("s")
    if value < 1 or singular not in _RATE_UNITS:
        raise ValueError(
            f"invalid rate expression {expression!r}: need a positive whole number of "
            "minutes, hours or days"
        )
    # EventBridge rejects 'rate(1 minutes)' and 'rate(5 minute)': fail here, not at deploy.
    expected = singular if value == 1 else f"{singular}s"
    if unit != expected:
        raise ValueError(f"invalid rate expression {expression!r}: write '{value} {expected}'")
    interval = value * _RATE_UNITS[singular]

    def next_fire(after: datetime) -> datetime:
        return _as_utc(after) + interval

    return next_fire


def _cron_schedule(fields: str, expression: str) -> NextFire:
    try:
        crontab = aws_cron_to_croniter(fields)
        croniter(crontab)  # validates the fields now rather than at the first fire
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from exc

    def next_fire(after: datetime) -> datetime:
        return croniter(crontab, _as_utc(after)).get_next(datetime)

    return next_fire


def aws_cron_to_croniter(fields: str) -> str:
    """Turn the six AWS cron fields into a five-field croniter expression."""
    parts = fields.split()
    if len(parts) != 6:
        raise ValueError(
            "AWS cron needs 6 fields (minutes hours day-of-month month day-of-week year), "
            f"got {len(parts)}"
        )
    minutes, hours, day_of_month, month, day_of_week, year = parts
    if year != "*":
        raise ValueError("only '*' is supported in the year field locally")
    if (day_of_month == "?") == (day_of_week == "?"):
        raise ValueError("exactly one of day-of-month and day-of-week must be '?'")
    if "?" in minutes + hours + month:
        raise ValueError("'?' is only allowed in day-of-month or day-of-week")
    day_of_month = "*" if day_of_month == "?" else day_of_month
    day_of_week = "*" if day_of_week == "?" else _convert_day_of_week(day_of_week)
    return " ".join((minutes, hours, day_of_month, month, day_of_week))


def _convert_day_of_week(field: str) -> str:
    return ",".join(_convert_day_of_week_item(item) for item in field.split(","))


def _convert_day_of_week_item(item: str) -> str:
    base, slash, step = item.partition("/")
    if "#" in base:
        day, _, nth = base.partition("#")
        return f"{_croniter_day(day)}#{nth}{slash}{step}"
    if base.upper() == "L":
        # Quartz semantics: a bare L in day-of-week is the last day of the week.
        return "6"
    if len(base) > 1 and base.upper().endswith("L"):
        # AWS writes "last Friday" as 6L (or FRIL), croniter as L5.
        return f"L{_croniter_day_number(base[:-1])}"
    start, dash, end = base.partition("-")
    converted = _croniter_day(start) + (f"-{_croniter_day(end)}" if dash else "")
    return f"{converted}{slash}{step}"


def _croniter_day(token: str) -> str:
    # '*' and names such as MON mean the same to croniter; only numbers are shifted.
    return str(_aws_day_number(token) - 1) if token.isdigit() else token


def _croniter_day_number(token: str) -> int:
    if token.isdigit():
        return _aws_day_number(token) - 1
    try:
        return _DAY_NAMES.index(token.upper())
    except ValueError:
        raise ValueError(f"unknown day of week {token!r}") from None


def _aws_day_number(token: str) -> int:
    number = int(token)
    if not 1 <= number <= 7:
        raise ValueError(f"day-of-week {number} is out of range: AWS uses 1-7 (SUN-SAT)")
    return number


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def scheduled_event(name: str, region: str, moment: datetime) -> dict[str, Any]:
    """The event EventBridge hands to a scheduled Lambda function."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": _as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT_ID}:rule/{name}"],
        "detail": {},
    }


class _ScaledClock:
    """Wall-clock time running ``scale`` times faster from the moment it was created."""

    def __init__(self, scale: float) -> None:
        self._scale = scale
        self._wall_start = datetime.now(UTC)
        self._monotonic_start = time.monotonic()

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._monotonic_start) * self._scale
        return self._wall_start + timedelta(seconds=elapsed)

    def real_seconds_until(self, moment: datetime) -> float:
        return max(0.0, (moment - self.now()).total_seconds() / self._scale)


# --------------------------------------------------------------------------- SQS


class InvalidBatchResponse(ValueError):
    """A batchItemFailures response that makes Lambda fail the whole batch.

    The message never quotes the offending value: handlers have been known to put
    message content where an id belongs.
    """


def failed_message_ids(result: object, message_ids: Sequence[str]) -> set[str]:
    """Message ids of a batch to leave on the queue, by ReportBatchItemFailures rules.

    Anything but a dict with a ``batchItemFailures`` key is a complete success, as is
    an empty or null list.  Raises InvalidBatchResponse when Lambda would fail the
    whole batch: a malformed list, or an identifier that is empty, null or not a
    message of this batch.
    """
    if not isinstance(result, dict) or "batchItemFailures" not in result:
        return set()
    failures = result["batchItemFailures"]
    if failures is None:
        return set()
    if not isinstance(failures, list):
        raise InvalidBatchResponse("batchItemFailures is not a list")
    known = set(message_ids)
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or not isinstance(identifier, str):
            raise InvalidBatchResponse("batchItemFailures entry without an itemIdentifier")
        if identifier not in known:
            raise InvalidBatchResponse("itemIdentifier is not a messageId of the batch")
        failed.add(identifier)
    return failed


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One record of the event Lambda builds from a ReceiveMessage result."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    # boto3 has already decoded binary values; Lambda's JSON event carries them base64.
    converted: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [_b64(item) for item in value.get("BinaryListValues", [])],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = _b64(value["BinaryValue"])
    return converted


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class _SqsSource:
    config: SQSEventConfig
    queue_name: str
    queue_url: str
    queue_arn: str
    workers: int


# --------------------------------------------------------------------------- runner


class EventRunner:
    """Runs a Chalice app's SQS and schedule handlers the way Lambda would.

    ``concurrency`` pollers per queue (fewer if the handler's maximum_concurrency says
    so) long-poll for ``poll_wait_seconds``, which also bounds how long stop() waits;
    0 short-polls with a brief pause when the queue is empty.  ``time_scale`` makes
    schedules run that many times faster, their events carrying the scaled time.

    ``stats[function_name]`` counts invocations, errors (raised exceptions and invalid
    batchItemFailures responses), messages_deleted and messages_failed (messages left
    on the queue for redelivery).
    """

    def __init__(
        self,
        app: Chalice,
        sqs: Any,
        *,
        region: str = "us-east-1",
        concurrency: int = 2,
        poll_wait_seconds: int = 1,
        schedules: bool = True,
        time_scale: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 <= poll_wait_seconds <= 20:
            raise ValueError("poll_wait_seconds must be between 0 and 20 (an SQS limit)")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self._app = app
        self._sqs = sqs
        self._region = region
        self._concurrency = concurrency
        self._poll_wait_seconds = poll_wait_seconds
        self._schedules_enabled = schedules
        self._time_scale = time_scale
        self._sqs_configs = [s for s in app.event_sources if isinstance(s, SQSEventConfig)]
        # Parsed up front so a bad expression fails at construction, not hours later.
        self._schedules = {
            s.name: (s, parse_schedule(_expression_text(s)))
            for s in app.event_sources
            if isinstance(s, ScheduledEventConfig)
        }
        self.stats: dict[str, dict[str, int]] = {
            name: dict.fromkeys(STAT_KEYS, 0)
            for name in [c.name for c in self._sqs_configs] + list(self._schedules)
        }
        self._lock = threading.Lock()
        self._running = 0
        self._invocations_started = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sources: list[_SqsSource] | None = None
        self._started = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Resolve the queues and start the poller and scheduler daemon threads."""
        if self._started:
            raise RuntimeError("EventRunner.start() may only be called once")
        self._started = True
        for source in self._resolved_sources():
            for index in range(source.workers):
                self._spawn(f"sqs-{source.config.name}-{index}", self._consume, source)
            log.info(
                "polling queue %s for %s with %d worker(s)",
                source.queue_name,
                source.config.name,
                source.workers,
            )
        if self._schedules_enabled:
            clock = _ScaledClock(self._time_scale)
            for name, (_config, next_fire) in self._schedules.items():
                self._spawn(f"schedule-{name}", self._run_schedule, name, next_fire, clock)

    def stop(self, timeout: float = 10) -> None:
        """Stop polling and scheduling; handler calls already under way are finished."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("still running %.1fs after stop: %s", timeout, ", ".join(alive))

    def __enter__(self) -> EventRunner:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def drain(self, timeout: float) -> bool:
        """Wait until every consumed queue is empty and no handler is running.

        Meant for tests.  Returns False if that has not happened within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._is_drained():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_DRAIN_POLL_SECONDS)

    def fire_schedule(self, name: str) -> None:
        """Run one scheduled function now, in the calling thread.

        Handler exceptions are logged and counted, not raised, as for timed fires.
        """
        if name not in self._schedules:
            raise KeyError(f"no scheduled function named {name!r}")
        self._fire(name, datetime.now(UTC))

    # ----------------------------------------------------------------- threads

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(
            target=target, args=args, name=f"forewarn-events-{name}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _consume(self, source: _SqsSource) -> None:
        while not self._stopping.is_set():
            try:
                messages = self._receive_batch(source)
            except Exception as exc:
                # A poller has to outlive a restarting endpoint, as Lambda's does.
                log.warning("receiving from %s failed: %s", source.queue_name, type(exc).__name__)
                self._stopping.wait(_ERROR_BACKOFF_SECONDS)
                continue
            if messages:
                self._process_batch(source, messages)
            elif self._poll_wait_seconds == 0:
                self._stopping.wait(_IDLE_PAUSE_SECONDS)

    def _run_schedule(self, name: str, next_fire: NextFire, clock: _ScaledClock) -> None:
        due = next_fire(clock.now())
        while not self._stopping.wait(clock.real_seconds_until(due)):
            self._fire(name, due)
            now = clock.now()
            due = next_fire(due)
            if due <= now:
                # The handler outlasted its interval: skip the missed fires rather than
                # running them back to back.
                log.debug("%s skipped fires while running", name)
                due = next_fire(now)

    # ----------------------------------------------------------------- SQS

    def _resolved_sources(self) -> list[_SqsSource]:
        if self._sources is None:
            self._sources = [self._resolve(config) for config in self._sqs_configs]
        return self._sources

    def _resolve(self, config: SQSEventConfig) -> _SqsSource:
        queue_name = config.queue_arn.rsplit(":", 1)[-1] if config.queue_arn else config.queue
        if not queue_name:
            raise ValueError(f"{config.name} has neither a queue nor a queue_arn")
        try:
            url: str = self._sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        except self._sqs.exceptions.QueueDoesNotExist:
            raise RuntimeError(
                f"queue {queue_name!r} for {config.name} does not exist: create it first"
            ) from None
        # The queue's own ARN rather than config.queue_arn: locally the account differs.
        attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        workers = self._concurrency
        if config.maximum_concurrency is not None:
            workers = max(1, min(workers, config.maximum_concurrency))
        return _SqsSource(config, queue_name, url, attributes["Attributes"]["QueueArn"], workers)

    def _receive_batch(self, source: _SqsSource) -> list[dict[str, Any]]:
        """Gather up to batch_size messages, as an event source mapping does."""
        config = source.config
        window = config.maximum_batching_window_in_seconds
        deadline = time.monotonic() + window
        wait = self._poll_wait_seconds
        batch: list[dict[str, Any]] = []
        while len(batch) < config.batch_size:
            response = self._sqs.receive_message(
                QueueUrl=source.queue_url,
                MaxNumberOfMessages=min(_SQS_MAX_BATCH, config.batch_size - len(batch)),
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = response.get("Messages", [])
            if not received:
                break
            batch.extend(received)
            remaining = deadline - time.monotonic()
            if self._stopping.is_set() or (window and remaining <= 0):
                break
            # Top the batch up without blocking past the window; with no window, take
            # only what is already waiting.
            wait = min(self._poll_wait_seconds, int(remaining)) if window else 0
        return batch

    def _process_batch(self, source: _SqsSource, messages: list[dict[str, Any]]) -> None:
        name = source.config.name
        event = {"Records": [sqs_record(m, source.queue_arn, self._region) for m in messages]}
        message_ids = [m["MessageId"] for m in messages]
        with self._handler_running():
            failed = self._failed_after_invoking(name, event, message_ids)
            deleted = self._delete(source, [m for m in messages if m["MessageId"] not in failed])
            # Counted before leaving the block so that drain() never sees stale stats.
            self._count(name, messages_deleted=deleted, messages_failed=len(messages) - deleted)
        log.debug("%s: batch of %d, %d deleted", name, len(messages), deleted)

    def _failed_after_invoking(
        self, name: str, event: dict[str, Any], message_ids: list[str]
    ) -> set[str]:
        try:
            result = self._invoke(name, event)
        except Exception as exc:
            # Everything stays on the queue: it returns after the visibility timeout, and
            # the queue's redrive policy, if any, moves it to the DLQ eventually.
            log.warning(
                "%s raised %s; %d message(s) left for redelivery",
                name,
                type(exc).__name__,
                len(message_ids),
            )
            return set(message_ids)
        try:
            return failed_message_ids(result, message_ids)
        except InvalidBatchResponse as exc:
            self._count(name, errors=1)
            log.warning("%s: %s; all %d message(s) left", name, exc, len(message_ids))
            return set(message_ids)

    def _delete(self, source: _SqsSource, messages: Sequence[dict[str, Any]]) -> int:
        deleted = 0
        for chunk in _chunks(messages, _SQS_MAX_BATCH):
            entries = [
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                for index, message in enumerate(chunk)
            ]
            try:
                response = self._sqs.delete_message_batch(
                    QueueUrl=source.queue_url, Entries=entries
                )
            except Exception as exc:
                # The messages come back after their visibility timeout, like any failure.
                log.warning("deleting from %s failed: %s", source.queue_name, type(exc).__name__)
                continue
            deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                log.warning(
                    "could not delete message %s from %s: %s",
                    chunk[int(failure["Id"])]["MessageId"],
                    source.queue_name,
                    failure.get("Code"),
                )
        return deleted

    # ----------------------------------------------------------------- invocation

    def _fire(self, name: str, moment: datetime) -> None:
        with self._handler_running():
            try:
                self._invoke(name, scheduled_event(name, self._region, moment))
            except Exception as exc:
                # A failing job must not stop its schedule, as with EventBridge.
                log.warning("scheduled %s raised %s", name, type(exc).__name__)

    def _invoke(self, name: str, event: dict[str, Any]) -> Any:
        context = LambdaContext(
            function_name=name,
            memory_size=_LAMBDA_MEMORY_MB,
            max_runtime_ms=_LAMBDA_TIMEOUT_MS,
        )
        self._count(name, invocations=1)
        try:
            return self._app.handler_map[name](event, context)
        except Exception:
            self._count(name, errors=1)
            raise

    def _count(self, name: str, **increments: int) -> None:
        with self._lock:
            counters = self.stats.setdefault(name, dict.fromkeys(STAT_KEYS, 0))
            for key, amount in increments.items():
                counters[key] += amount

    @contextmanager
    def _handler_running(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
            self._invocations_started += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1

    # ----------------------------------------------------------------- drain

    def _is_drained(self) -> bool:
        with self._lock:
            running, started = self._running, self._invocations_started
        if running:
            return False
        if not all(self._queue_is_empty(s.queue_url) for s in self._resolved_sources()):
            return False
        # A handler that ran during the scan may have sent to a queue already checked.
        with self._lock:
            return self._running == 0 and self._invocations_started == started

    def _queue_is_empty(self, queue_url: str) -> bool:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(value) for value in attributes.values()) == 0


def _expression_text(config: ScheduledEventConfig) -> str:
    expression = config.schedule_expression
    return expression if isinstance(expression, str) else expression.to_string()
