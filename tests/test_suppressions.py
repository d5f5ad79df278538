"""Opt-outs, help and bounces, end to end on the local stack: an inbound text or an SES
notification published to its SNS topic, carried by SNS to the feedback queue, applied by the
queue's handler; then a broadcast that counts the suppressed recipients instead of texting
or emailing them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib import aws, broadcasts, incidents
from chalicelib.domain import BroadcastStatus, Channel
from chalicelib.runtime import services

RunQueues = Callable[..., Any]
BRAND_NUMBER = "+14155559999"


def topic_arn(name: str) -> str:
    topics = aws.client("sns").list_topics()["Topics"]
    [arn] = [t["TopicArn"] for t in topics if t["TopicArn"].endswith(f":forewarn-test-{name}")]
    return str(arn)


def text_in(number: str, body: str) -> None:
    """An inbound SMS as AWS's two-way SMS publishes it to the topic."""
    message = {
        "originationNumber": number,
        "destinationNumber": BRAND_NUMBER,
        "messageKeyword": body.split()[0].upper() if body.split() else "",
        "messageBody": body,
        "inboundMessageId": "in-1",
    }
    aws.client("sns").publish(TopicArn=topic_arn("inbound-sms"), Message=json.dumps(message))


def ses_feedback(
    kind: str, address: str, bounce_type: str = "Permanent", *, key: str = "eventType"
) -> None:
    """SES feedback as a configuration set's event destination words it (`eventType`), or as
    an identity's feedback topic does (`notificationType`)."""
    detail: dict[str, Any]
    if kind == "Bounce":
        detail = {
            "bounce": {"bounceType": bounce_type, "bouncedRecipients": [{"emailAddress": address}]}
        }
    else:
        detail = {"complaint": {"complainedRecipients": [{"emailAddress": address}]}}
    message = {key: kind, "mail": {"destination": [address]}, **detail}
    aws.client("sns").publish(TopicArn=topic_arn("email-feedback"), Message=json.dumps(message))


def texts_to(stack: Stack, number: str) -> list[str]:
    return [m["message"] for m in stack.delivered()["sms"] if m["phone_number"] == number]


def broadcast_to_all() -> str:
    """A new outage's initial notice, sent to every customer (all have mobile in north)."""
    incident = incidents.create_incident(
        services().store, {"title": "Outage", "services": ["mobile"], "regions": ["north"]}
    )
    draft = broadcasts.create_broadcast(
        services(), {"incident_id": incident.incident_id}, actor="o"
    )
    broadcasts.approve(services(), draft.broadcast_id, actor="p")
    broadcasts.send(services(), draft.broadcast_id)
    return draft.broadcast_id


@pytest.fixture
def customers(stack: Stack) -> list[str]:
    for index in range(3):
        services().store.upsert_customer(customer(index, channels=("sms",)))
    return [f"+1415555{i:04d}" for i in range(3)]


def test_stop_confirms_once_and_later_broadcasts_count_the_number_as_suppressed(
    stack: Stack, run_queues: RunQueues, customers: list[str]
) -> None:
    stopped = customers[0]
    text_in(stopped, "STOP")
    run_queues()
    text_in(stopped, "stop please")
    run_queues()
    [confirmation] = texts_to(stack, stopped)
    assert "no more texts" in confirmation
    broadcast_id = broadcast_to_all()
    run_queues()
    final = broadcasts.get_broadcast(services().store, broadcast_id)
    sms = final.counts[Channel.SMS]
    assert (final.status, sms.planned, sms.sent, sms.suppressed) == (BroadcastStatus.SENT, 3, 2, 1)
    assert texts_to(stack, stopped) == [confirmation]  # nothing after the confirmation
    reasons = {d["customer_id"]: d.get("reason") for d in services().store.deliveries(broadcast_id)}
    assert reasons["c0000"] == "suppressed: texted STOP"


def test_start_opts_back_in_and_help_answers(
    stack: Stack, run_queues: RunQueues, customers: list[str]
) -> None:
    number = customers[1]
    for body in ("UNSUBSCRIBE", "HELP", "start"):
        text_in(number, body)
        run_queues()
    replies = texts_to(stack, number)
    assert len(replies) == 3
    assert "no more texts" in replies[0]
    assert "Reply STOP to end" in replies[1]
    assert "texts are back on" in replies[2]
    broadcast_id = broadcast_to_all()
    run_queues()
    sms = broadcasts.get_broadcast(services().store, broadcast_id).counts[Channel.SMS]
    assert (sms.sent, sms.suppressed) == (3, 0)


def test_ordinary_replies_change_nothing_and_answer_nothing(
    stack: Stack, run_queues: RunQueues, customers: list[str]
) -> None:
    text_in(customers[2], "thanks for the heads up")
    text_in(customers[2], "START")  # not opted out: nothing to resume
    run_queues()
    assert texts_to(stack, customers[2]) == []


def test_hard_bounces_and_complaints_suppress_the_address_and_soft_bounces_do_not(
    stack: Stack, run_queues: RunQueues
) -> None:
    for index in range(4):
        services().store.upsert_customer(customer(index, channels=("email",)))
    ses_feedback("Bounce", "KIM0@example.com")  # addresses compare without case
    ses_feedback("Complaint", "kim1@example.com", key="notificationType")
    ses_feedback("Bounce", "kim2@example.com", bounce_type="Transient")
    run_queues()
    broadcast_id = broadcast_to_all()
    run_queues()
    email = broadcasts.get_broadcast(services().store, broadcast_id).counts[Channel.EMAIL]
    assert (email.planned, email.sent, email.suppressed) == (4, 2, 2)
    sent_to = {address for m in stack.delivered()["email"] for address in m["destinations"]}
    assert sent_to == {"kim2@example.com", "kim3@example.com"}


def test_feedback_that_cannot_be_read_is_left_for_the_dead_letter_queue(stack: Stack) -> None:
    from chalicelib import suppressions
    from chalicelib.queues import QueueMessage

    def message(body: str) -> QueueMessage:
        return QueueMessage(message_id=body[:8], body=body, receipt_handle="r", receive_count=1)

    bodies = ["not json", json.dumps({"Type": "Notification", "Message": "[1, 2]"}), "{}"]
    assert suppressions.handle_batch(services(), [message(b) for b in bodies]) == [
        b[:8] for b in bodies
    ]


def test_every_email_carries_an_unsubscribe_link_that_asks_then_suppresses(
    stack: Stack, run_queues: RunQueues
) -> None:
    import re
    from urllib.parse import urlsplit

    from chalice.test import Client

    import app as forewarn_app
    from chalicelib import runtime
    from chalicelib.config import settings

    aws.client("secretsmanager").put_secret_value(
        SecretId=settings().webhook_secret_id, SecretString=json.dumps({"unsubscribe": "k" * 32})
    )
    runtime.reset()
    for index in range(2):
        services().store.upsert_customer(customer(index, channels=("email",)))
    broadcast_to_all()
    run_queues()
    raw = next(m["raw_data"] for m in stack.delivered()["email"] if "kim0@" in str(m))
    header = re.search(r"^List-Unsubscribe: <([^>]+)>", raw, re.M)
    assert header
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw
    link = urlsplit(header.group(1))
    path = f"{link.path}?{link.query}"

    with Client(forewarn_app.app) as client:
        asked = client.http.get(path)
        assert asked.status_code == 200
        assert "Stop email notices to <strong>kim0@example.com</strong>?" in asked.body.decode()
        forged = client.http.get(path.replace("t=a", "t=b", 1) + "x")
        assert forged.status_code == 400
        one_click = client.http.post(
            path,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=b"List-Unsubscribe=One-Click",
        )
        assert one_click.status_code == 200
        assert "will get no more email notices" in one_click.body.decode()

    second = broadcast_to_all()
    run_queues()
    email = broadcasts.get_broadcast(services().store, second).counts[Channel.EMAIL]
    assert (email.sent, email.suppressed) == (1, 1)
