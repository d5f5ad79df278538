"""EventRunner against a real SQS API: moto in server mode, reached over HTTP by boto3."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from chalice.app import Chalice, CloudWatchEvent, Cron, Rate, SQSEvent
from moto.server import ThreadedMotoServer

from forewarn_cli.local.events import (
    EventRunner,
    InvalidBatchResponse,
    aws_cron_to_croniter,
    failed_message_ids,
    parse_schedule,
)

REGION = "us-east-1"
# Generous: each wait ends as soon as the condition holds.
DRAIN_TIMEOUT = 15

StartRunner = Callable[..., EventRunner]
MakeQueue = Callable[..., str]


@pytest.fixture(scope="module")
def sqs() -> Iterator[Any]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield boto3.client(
        "sqs",
        endpoint_url=f"http://{host}:{port}",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    server.stop()


@pytest.fixture
def make_queue(sqs: Any) -> MakeQueue:
    """Creates a uniquely named queue and returns its name."""

    def make(**attributes: str) -> str:
        name = f"q-{uuid.uuid4().hex[:12]}"
        sqs.create_queue(QueueName=name, Attributes=attributes)
        return name

    return make


@pytest.fixture
def start_runner(sqs: Any) -> Iterator[StartRunner]:
    runners: list[EventRunner] = []

    def start(app: Chalice, **kwargs: Any) -> EventRunner:
        # Short polling keeps each test's shutdown quick; test_stop_* covers long polls.
        kwargs.setdefault("poll_wait_seconds", 0)
        runner = EventRunner(app, sqs, region=REGION, **kwargs)
        runner.start()
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.stop()


def url_of(sqs: Any, name: str) -> str:
    url: str = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return url


def arn_of(sqs: Any, name: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url_of(sqs, name), AttributeNames=["QueueArn"])
    arn: str = attributes["Attributes"]["QueueArn"]
    return arn


def send(sqs: Any, name: str, *bodies: str) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=url_of(sqs, name), MessageBody=body)


def records_of(event: SQSEvent) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = event.to_dict()["Records"]
    return records


def wait_for(condition: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


# --------------------------------------------------------------------------- SQS


def test_batch_is_delivered_as_a_lambda_event_and_deleted(
    sqs: Any, make_queue: MakeQueue, start_runner: StartRunner
) -> None:
    queue = make_queue()
    app = Chalice(app_name="delivery")
    received: list[dict[str, Any]] = []

    @app.on_sqs_message(queue=queue, batch_size=5)
    def handle(event: SQSEvent) -> None:
        received.extend(records_of(event))

    bodies = [f"message-{i}" for i in range(5)]
    sqs.send_message(
        QueueUrl=url_of(sqs, queue),
        MessageBody=bodies[0],
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "outage"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    send(sqs, queue, *bodies[1:])

    runner = start_runner(app, poll_wait_seconds=1)
    assert runner.drain(DRAIN_TIMEOUT)

    assert sorted(r["body"] for r in received) == bodies
    first = next(r for r in received if r["body"] == bodies[0])
    assert first["eventSource"] == "aws:sqs"
    assert first["eventSourceARN"] == arn_of(sqs, queue)
    assert first["awsRegion"] == REGION
    assert first["md5OfBody"]
    assert first["messageId"]
    assert first["receiptHandle"]
    assert first["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
        first["attributes"]
    )
    assert first["messageAttributes"] == {
        "kind": {
            "stringValue": "outage",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "blob": {
            "binaryValue": "AAE=",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    assert runner.stats["handle"]["messages_deleted"] == 5
    assert runner.stats["handle"]["messages_failed"] == 0
    assert runner.stats["handle"]["errors"] == 0


def test_partial_batch_failure_deletes_only_the_successes(
    sqs: Any, make_queue: MakeQueue, start_runner: StartRunner
) -> None:
    queue = make_queue(VisibilityTimeout="1")
    app = Chalice(app_name="partial")
    seen: list[tuple[str, str]] = []

    @app.on_sqs_message(queue=queue, batch_size=10)
    def handle(event: SQSEvent) -> dict[str, Any]:
        failures = []
        for record in records_of(event):
            count = record["attributes"]["ApproximateReceiveCount"]
            seen.append((record["body"], count))
            if record["body"] == "bad" and count == "1":
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    send(sqs, queue, "ok-1", "bad", "ok-2")
    runner = start_runner(app, concurrency=1)
    assert runner.drain(DRAIN_TIMEOUT)

    assert sorted(seen) == [("bad", "1"), ("bad", "2"), ("ok-1", "1"), ("ok-2", "1")]
    assert runner.stats["handle"] == {
        "invocations": 2,
        "errors": 0,
        "messages_deleted": 3,
        "messages_failed": 1,
    }


def test_raising_handler_leaves_messages_for_the_redrive_policy(
    sqs: Any,
    make_queue: MakeQueue,
    start_runner: StartRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dlq = make_queue()
    redrive = {"deadLetterTargetArn": arn_of(sqs, dlq), "maxReceiveCount": "2"}
    queue = make_queue(VisibilityTimeout="1", RedrivePolicy=json.dumps(redrive))
    app = Chalice(app_name="dlq")
    body = "personal-data-3f9c"

    @app.on_sqs_message(queue=queue)
    def handle(event: SQSEvent) -> None:
        raise ValueError(f"cannot handle {records_of(event)[0]['body']}")

    caplog.set_level(logging.DEBUG, logger="forewarn_cli.local.events")
    send(sqs, queue, body)
    runner = start_runner(app, concurrency=1)
    assert runner.drain(DRAIN_TIMEOUT)

    dead = sqs.receive_message(QueueUrl=url_of(sqs, dlq), MaxNumberOfMessages=10)
    assert [m["Body"] for m in dead["Messages"]] == [body]
    assert runner.stats["handle"] == {
        "invocations": 2,
        "errors": 2,
        "messages_deleted": 0,
        "messages_failed": 2,
    }
    assert "ValueError" in caplog.text
    assert body not in caplog.text


def test_unknown_item_identifier_fails_the_whole_batch(
    make_queue: MakeQueue, sqs: Any, start_runner: StartRunner
) -> None:
    queue = make_queue(VisibilityTimeout="1")
    app = Chalice(app_name="unknown-id")
    seen: list[tuple[str, str]] = []

    @app.on_sqs_message(queue=queue, batch_size=10)
    def handle(event: SQSEvent) -> dict[str, Any] | None:
        records = records_of(event)
        seen.extend((r["body"], r["attributes"]["ApproximateReceiveCount"]) for r in records)
        if records[0]["attributes"]["ApproximateReceiveCount"] == "1":
            return {"batchItemFailures": [{"itemIdentifier": "not-a-message-id"}]}
        return None

    send(sqs, queue, "a", "b")
    runner = start_runner(app, concurrency=1)
    assert runner.drain(DRAIN_TIMEOUT)

    assert sorted(seen) == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    assert runner.stats["handle"] == {
        "invocations": 2,
        "errors": 1,
        "messages_deleted": 2,
        "messages_failed": 2,
    }


@pytest.mark.parametrize(
    ("result", "failed"),
    [
        (None, set()),
        ("done", set()),
        ({}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, {"m2"}),
    ],
)
def test_failed_message_ids(result: object, failed: set[str]) -> None:
    assert failed_message_ids(result, ["m1", "m2"]) == failed


@pytest.mark.parametrize(
    "failures",
    [
        [{"itemIdentifier": "m3"}],
        [{"itemIdentifier": ""}],
        [{"itemIdentifier": None}],
        [{"id": "m1"}],
        ["m1"],
        {"itemIdentifier": "m1"},
    ],
)
def test_malformed_batch_item_failures_fail_the_whole_batch(failures: object) -> None:
    with pytest.raises(InvalidBatchResponse):
        failed_message_ids({"batchItemFailures": failures}, ["m1", "m2"])


def test_batch_size_over_ten_gathers_several_receives(
    sqs: Any, make_queue: MakeQueue, start_runner: StartRunner
) -> None:
    queue = make_queue()
    app = Chalice(app_name="big-batch")
    sizes: list[int] = []

    @app.on_sqs_message(queue=queue, batch_size=25)
    def handle(event: SQSEvent) -> None:
        sizes.append(len(records_of(event)))

    for start in range(0, 25, 10):
        sqs.send_message_batch(
            QueueUrl=url_of(sqs, queue),
            Entries=[
                {"Id": str(i), "MessageBody": f"m{i}"} for i in range(start, min(start + 10, 25))
            ],
        )
    runner = start_runner(app, concurrency=1)
    assert runner.drain(DRAIN_TIMEOUT)

    assert sizes == [25]
    assert runner.stats["handle"]["messages_deleted"] == 25


def test_missing_queue_fails_at_start(sqs: Any) -> None:
    app = Chalice(app_name="missing")

    @app.on_sqs_message(queue="no-such-queue")
    def handle(event: SQSEvent) -> None:
        pass

    with pytest.raises(RuntimeError, match="no-such-queue"):
        EventRunner(app, sqs).start()


def test_stop_returns_promptly_and_finishes_the_handler_in_flight(
    sqs: Any, make_queue: MakeQueue
) -> None:
    queue = make_queue()
    app = Chalice(app_name="stop")
    started, finished = threading.Event(), threading.Event()

    @app.on_sqs_message(queue=queue, maximum_concurrency=2)
    def handle(event: SQSEvent) -> None:
        started.set()
        time.sleep(0.5)
        finished.set()

    runner = EventRunner(app, sqs, region=REGION, concurrency=3, poll_wait_seconds=1)
    runner.start()
    try:
        workers = [t for t in threading.enumerate() if t.name.startswith("forewarn-events-sqs")]
        assert len(workers) == 2  # maximum_concurrency caps concurrency
        send(sqs, queue, "slow")
        assert started.wait(5)
    finally:
        began = time.monotonic()
        runner.stop()
    assert time.monotonic() - began < 4
    assert finished.is_set()
    assert runner.stats["handle"]["messages_deleted"] == 1
    assert not any(t.is_alive() for t in workers)


# --------------------------------------------------------------------------- schedules

MONDAY = datetime(2024, 6, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "interval"),
    [
        ("rate(1 minute)", timedelta(minutes=1)),
        ("rate(5 minutes)", timedelta(minutes=5)),
        ("rate(1 hour)", timedelta(hours=1)),
        ("rate(2 hours)", timedelta(hours=2)),
        ("rate(1 day)", timedelta(days=1)),
        ("rate(3 days)", timedelta(days=3)),
        (Rate(15, unit=Rate.MINUTES).to_string(), timedelta(minutes=15)),
    ],
)
def test_rate(expression: str, interval: timedelta) -> None:
    assert parse_schedule(expression)(MONDAY) == MONDAY + interval


@pytest.mark.parametrize(
    ("aws", "crontab"),
    [
        ("0 12 ? * 2 *", "0 12 * * 1"),
        ("0 12 ? * 1,7 *", "0 12 * * 0,6"),
        ("0 9 ? * 2-6 *", "0 9 * * 1-5"),
        ("0 18 ? * MON-FRI *", "0 18 * * MON-FRI"),
        ("0 12 ? * 2/2 *", "0 12 * * 1/2"),
        ("0 12 ? * 6#3 *", "0 12 * * 5#3"),
        ("0 12 ? * 6L *", "0 12 * * L5"),
        ("0 8 1 * ? *", "0 8 1 * *"),
        ("0/15 * * * ? *", "0/15 * * * *"),
    ],
)
def test_aws_cron_to_croniter(aws: str, crontab: str) -> None:
    assert aws_cron_to_croniter(aws) == crontab


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # 2024-06-01 is a Saturday.
        ("cron(0 12 ? * 2 *)", datetime(2024, 6, 1), datetime(2024, 6, 3, 12)),
        ("cron(0 9 ? * 1 *)", datetime(2024, 6, 1), datetime(2024, 6, 2, 9)),
        ("cron(0 9 ? * 7 *)", datetime(2024, 6, 1, 10), datetime(2024, 6, 8, 9)),
        ("cron(0 18 ? * MON-FRI *)", datetime(2024, 6, 7, 19), datetime(2024, 6, 10, 18)),
        ("cron(0 12 ? * 6L *)", datetime(2024, 6, 1), datetime(2024, 6, 28, 12)),
        ("cron(0/15 * * * ? *)", datetime(2024, 6, 1, 10, 7), datetime(2024, 6, 1, 10, 15)),
        (
            Cron(0, 8, 1, "*", "?", "*").to_string(),
            datetime(2024, 6, 1, 8),
            datetime(2024, 7, 1, 8),
        ),
    ],
)
def test_cron_next_fire_time(expression: str, after: datetime, expected: datetime) -> None:
    # Naive moments are UTC, and the answer is always timezone-aware UTC.
    assert parse_schedule(expression)(after) == expected.replace(tzinfo=UTC)


def test_cron_converts_other_timezones_to_utc() -> None:
    noon_utc_in_paris = datetime(2024, 6, 3, 14, tzinfo=timezone(timedelta(hours=2)))
    next_fire = parse_schedule("cron(0 12 * * ? *)")(noon_utc_in_paris)
    assert next_fire == datetime(2024, 6, 4, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "expression",
    [
        "every 5 minutes",
        "rate(0 minutes)",
        "rate(1 minutes)",
        "rate(5 minute)",
        "rate(1 week)",
        "cron(0 12 * * ?)",
        "cron(0 12 * * * *)",
        "cron(0 12 ? * ? *)",
        "cron(0 12 ? * 8 *)",
        "cron(0 12 ? * 0 *)",
        "cron(0 12 ? * MON 2030)",
        "cron(61 12 * * ? *)",
    ],
)
def test_invalid_schedules_are_rejected(expression: str) -> None:
    with pytest.raises(ValueError, match=r"(schedule|rate|cron) expression"):
        parse_schedule(expression)


def test_invalid_schedule_fails_at_construction(sqs: Any) -> None:
    app = Chalice(app_name="bad-schedule")

    @app.schedule("rate(1 minutes)")
    def tick(event: CloudWatchEvent) -> None:
        pass

    with pytest.raises(ValueError, match="1 minute"):
        EventRunner(app, sqs)


def test_fire_schedule_passes_an_eventbridge_event(sqs: Any) -> None:
    app = Chalice(app_name="fire")
    events: list[dict[str, Any]] = []

    @app.schedule(Rate(5, unit=Rate.MINUTES))
    def tick(event: CloudWatchEvent) -> None:
        assert event.detail_type == "Scheduled Event"
        events.append(event.to_dict())

    runner = EventRunner(app, sqs, region="eu-west-1", schedules=False)
    runner.fire_schedule("tick")

    [event] = events
    assert event["version"] == "0"
    assert uuid.UUID(event["id"])
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["account"] == "123456789012"
    assert event["region"] == "eu-west-1"
    assert event["resources"] == ["arn:aws:events:eu-west-1:123456789012:rule/tick"]
    assert event["detail"] == {}
    fired_at = datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - fired_at) < timedelta(minutes=1)
    assert runner.stats["tick"]["invocations"] == 1
    with pytest.raises(KeyError):
        runner.fire_schedule("nope")


def test_scheduler_keeps_firing_a_failing_job(sqs: Any, start_runner: StartRunner) -> None:
    app = Chalice(app_name="scheduler")
    times: list[str] = []

    @app.schedule("rate(1 minute)")
    def flaky(event: CloudWatchEvent) -> None:
        times.append(event.time)
        raise RuntimeError("boom")

    # 600 times faster: a fire every 0.1 s.
    runner = start_runner(app, time_scale=600)
    assert wait_for(lambda: len(times) >= 3)
    runner.stop()

    assert runner.stats["flaky"]["errors"] == runner.stats["flaky"]["invocations"] >= 3
    first, second = (datetime.fromisoformat(t) for t in times[:2])
    assert second - first == timedelta(minutes=1)
