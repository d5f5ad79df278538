"""Structured logs and EMF metrics (chalicelib/observability.py): JSON records with the
correlation ids of the work under way, no phone number or email address in any of them, and
the delivery worker's outcomes counted per channel, as a Lambda function would write them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from chalice.app import Chalice, SQSEvent
from chalice.test import Client
from conftest import Stack
from factories import customer

from chalicelib import aws, broadcasts, incidents, observability, queues
from chalicelib.domain import BroadcastStatus
from chalicelib.runtime import services

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("chalicelib.probe")


@pytest.fixture
def in_lambda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What the Lambda runtime sets; the loggers are put back as they were afterwards."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "forewarn-test-probe")
    yield
    observability.reset()


def lines(text: str) -> list[dict[str, Any]]:
    """Every line of stdout, each of which must be one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def records(text: str) -> dict[str, dict[str, Any]]:
    """The log records among them, by message."""
    return {line["message"]: line for line in lines(text) if "message" in line}


def emf(text: str) -> list[dict[str, Any]]:
    return [line for line in lines(text) if "_aws" in line]


def probe_app() -> Chalice:
    """A Chalice app wired as app.py is: the one middleware around every handler."""
    probe = Chalice(app_name="probe")
    probe.register_middleware(observability.middleware, "all")

    @probe.route("/incidents/{incident_id}/broadcasts/{broadcast_id}")
    def show(incident_id: str, broadcast_id: str) -> dict[str, str]:
        log.info("showing a broadcast")
        return {"ok": "yes"}

    @probe.on_sqs_message(queue="jobs")
    def work(event: SQSEvent) -> None:
        for record in event:
            with observability.correlated(notice_id=record.body):
                log.warning("working on a notice")
            log.info("between notices")

    return probe


def test_records_are_json_with_the_correlation_ids_of_the_request_and_none_after(
    in_lambda: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    client = Client(probe_app(), project_dir=str(tmp_path))

    response = client.http.get("/incidents/inc_1/broadcasts/bc_1")
    log.warning("after the request")

    assert response.status_code == 200
    found = records(capsys.readouterr().out)
    inside = found["showing a broadcast"]
    assert inside["incident_id"] == "inc_1"
    assert inside["broadcast_id"] == "bc_1"
    assert (inside["service"], inside["stage"], inside["level"]) == ("forewarn", "test", "INFO")
    assert inside["function_name"] == "api_handler"
    assert inside["cold_start"] in (True, False)
    after = found["after the request"]
    assert after["service"] == "forewarn"
    assert not {"incident_id", "broadcast_id", "function_name", "cold_start"} & set(after)


def test_a_jobs_ids_hold_inside_it_and_the_invocations_after(
    in_lambda: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    client = Client(probe_app(), project_dir=str(tmp_path))
    event = client.events.generate_sqs_event(["ntc_1"], queue_name="jobs")

    client.lambda_.invoke("work", event)

    found = records(capsys.readouterr().out)
    assert found["working on a notice"]["notice_id"] == "ntc_1"
    assert found["working on a notice"]["function_name"] == "work"
    between = found["between notices"]
    assert "notice_id" not in between
    assert between["function_name"] == "work"


def test_nested_ids_restore_the_outer_ones() -> None:
    with observability.correlated(broadcast_id="bc_1"):
        with observability.correlated(broadcast_id="bc_2", notice_id="n_1"):
            inner = dict(observability._keys.get())
        outer = dict(observability._keys.get())
    assert inner == {"broadcast_id": "bc_2", "notice_id": "n_1"}
    assert outer == {"broadcast_id": "bc_1"}
    assert dict(observability._keys.get()) == {}


def test_phone_numbers_and_email_addresses_are_redacted_from_every_part_of_a_record(
    in_lambda: None, capsys: pytest.CaptureFixture[str]
) -> None:
    observability.configure_logging()

    log.warning(
        "sent to %s and %s at 2026-12-05T19:00:00+00:00",
        "+14155552671",
        "ana.silva@example.com",
        extra={"contact": "+1 (415) 555-2671", "emails": ["kim+1@example.co.uk"]},
    )
    try:
        raise ValueError("address ana.silva@example.com or +447700900123 rejected")
    except ValueError:
        log.exception("provider refused")

    out = capsys.readouterr().out
    for personal in ("4155552671", "555-2671", "ana.silva", "example.co", "7700900123"):
        assert personal not in out
    found = records(out)
    sent = found["sent to [phone] and [email] at 2026-12-05T19:00:00+00:00"]
    assert sent["contact"] == "[phone]"
    assert sent["emails"] == ["[email]"]
    assert "address [email] or [phone] rejected" in found["provider refused"]["exception"]


def test_redaction_leaves_ids_times_and_numbers_alone() -> None:
    text = "bc_0a1b c0001 at 2026-12-05T19:00:00+01:00, 12 of 3000, tracking 9400111899223197428490"
    assert observability.redact(text) == text
    assert observability.redact({"n": 3, "ok": True, "none": None}) == {
        "n": 3,
        "ok": True,
        "none": None,
    }


def test_nothing_is_configured_or_emitted_outside_lambda(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    with observability.invocation(None, broadcast_id="bc_1"):
        observability.count("NoticesSent", channel="sms")
    assert capsys.readouterr().out == ""
    assert observability._configured is None


# --- metrics from the real app ---------------------------------------------------------------


def planned_delivery_batch(
    people: int, emails: int, first_signal_at: str | None = None
) -> tuple[str, dict[str, Any]]:
    """An approved initial broadcast to `people` SMS and `emails` email customers, planned,
    and its delivery queue's messages as the SQS event Lambda would hand the worker."""
    store = services().store
    for index in range(people + emails):
        channels = ("sms",) if index < people else ("email",)
        store.upsert_customer(customer(index, channels=channels))
    incident = incidents.create_incident(
        store,
        {"title": "Outage", "services": ["mobile"], "regions": ["north"]},
        first_signal_at=first_signal_at,
    )
    created = broadcasts.create_broadcast(
        services(), {"incident_id": incident.incident_id, "channels": ["sms", "email"]}, actor="o"
    )
    broadcast_id = created.broadcast_id
    broadcasts.approve(services(), broadcast_id, actor="o")
    broadcasts.send(services(), broadcast_id)
    broadcasts.plan_step(services(), broadcast_id)
    from forewarn_cli.local.events import sqs_record

    url = queues.queue_url(services().settings.names.delivery_queue)
    received = aws.client("sqs").receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]
    )["Messages"]
    arn = f"arn:aws:sqs:us-east-1:123456789012:{services().settings.names.delivery_queue}"
    return broadcast_id, {"Records": [sqs_record(m, arn, "us-east-1") for m in received]}


def test_a_delivery_batch_emits_notices_sent_per_channel_and_the_lead_time(
    stack: Stack, in_lambda: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from chalice.local import LambdaContext

    import app

    broadcast_id, event = planned_delivery_batch(people=3, emails=2)
    capsys.readouterr()

    result = app.app.handler_map["deliver_notices"](
        event, LambdaContext("deliver_notices", memory_size=256)
    )

    assert result == {"batchItemFailures": []}
    assert broadcasts.get_broadcast(services().store, broadcast_id).status is BroadcastStatus.SENT
    out = capsys.readouterr().out
    sent: dict[str, float] = {}
    lead_times: list[float] = []
    all_told: list[float] = []
    for blob in emf(out):
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Forewarn"
        assert blob["stage"] == "test"
        names = {metric["Name"] for metric in directive["Metrics"]}
        if "NoticesSent" in names:
            assert directive["Dimensions"] == [["stage", "channel"]]
            sent[blob["channel"]] = sent.get(blob["channel"], 0) + sum(blob["NoticesSent"])
        if "LeadTimeSeconds" in names:
            assert directive["Dimensions"] == [["stage"]]
            lead_times += blob["LeadTimeSeconds"]
        if "AllToldSeconds" in names:
            all_told += blob["AllToldSeconds"]
        assert not names & {"NoticesFailed", "NoticesSuppressed", "NoticesFellBack"}
    assert sent == {"sms": 3, "email": 2}
    assert len(lead_times) == len(all_told) == 1
    assert 0 <= lead_times[0] <= all_told[0] < 120
    # The worker's own records are JSON too, and name no recipient.
    for line in lines(out):
        assert "@example.com" not in json.dumps(line)
        assert "+1415555" not in json.dumps(line)


def test_the_lead_time_runs_from_the_first_signal_to_the_first_notice_once(
    stack: Stack, in_lambda: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from chalice.local import LambdaContext

    import app
    from chalicelib.domain import iso, utcnow

    signal = iso(utcnow() - timedelta(minutes=10))
    broadcast_id, event = planned_delivery_batch(people=12, emails=0, first_signal_at=signal)
    # Two batches of the same broadcast (12 recipients: two queue messages), one at a time.
    first, second = ({"Records": [record]} for record in event["Records"])
    capsys.readouterr()
    handler = app.app.handler_map["deliver_notices"]
    for batch in (first, second):
        assert handler(batch, LambdaContext("deliver_notices", memory_size=256)) == {
            "batchItemFailures": []
        }
    lead_times = [
        value for blob in emf(capsys.readouterr().out) for value in blob.get("LeadTimeSeconds", [])
    ]
    assert len(lead_times) == 1
    assert 600 <= lead_times[0] < 600 + 120
    marked = broadcasts.get_broadcast(services().store, broadcast_id)
    assert marked.first_sent_at is not None
    assert marked.first_sent_at >= signal


# --- cold start --------------------------------------------------------------------------------


def test_importing_app_loads_neither_powertools_nor_the_other_heavy_libraries() -> None:
    # As in Lambda: the variable that makes the first invocation configure Powertools.
    script = (
        "import os, sys\n"
        "os.environ['AWS_LAMBDA_FUNCTION_NAME'] = 'forewarn-dev'\n"
        "import app\n"
        "heavy = ('aws_lambda_powertools', 'boto3', 'jinja2', 'jwt', 'tweepy', 'phonenumbers')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
