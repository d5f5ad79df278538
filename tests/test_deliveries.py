"""The delivery worker under faults, on the local stack: each fault is injected into the
real boto3 client through botocore's own event hooks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib import aws, broadcasts, queues, runtime
from chalicelib.deliveries import DeliveryJob, backoff_seconds, handle_batch
from chalicelib.domain import BroadcastStatus, Channel, Customer
from chalicelib.errors import NotFound
from chalicelib.runtime import services
from chalicelib.store import Store


def provider_error(code: str, status: int = 400) -> tuple[Any, dict[str, Any]]:
    from botocore.awsrequest import AWSResponse

    return (
        AWSResponse("http://fault", status, {}, None),
        {"Error": {"Code": code, "Message": f"injected {code}"}, "ResponseMetadata": {}},
    )


@pytest.fixture
def faults(stack: Stack) -> Iterator[Callable[[str, Callable[[dict[str, Any]], Any]], None]]:
    registered: list[tuple[Any, str, Any]] = []

    def inject(event: str, decide: Callable[[dict[str, Any]], Any]) -> None:
        service = event.split(".")[1]
        client = aws.client(service)

        def handler(params: dict[str, Any], **kwargs: Any) -> Any:
            # `params` is the serialised request; its body holds the operation's parameters.
            return decide(params["body"])

        client.meta.events.register(event, handler)
        registered.append((client, event, handler))

    yield inject
    for client, event, handler in registered:
        client.meta.events.unregister(event, handler)


def sms_broadcast(count: int) -> str:
    return send_broadcast([customer(index, channels=("sms",)) for index in range(count)], ["sms"])


def send_broadcast(customers: list[Customer], channels: list[str]) -> str:
    store = services().store
    for one in customers:
        store.upsert_customer(one)
    incident = {"title": "Outage", "services": ["mobile"], "regions": ["north"]}
    from chalicelib import incidents

    incident_id = incidents.create_incident(store, incident).incident_id
    broadcast = broadcasts.create_broadcast(
        services(), {"incident_id": incident_id, "channels": channels}, actor="olivia"
    )
    broadcasts.approve(services(), broadcast.broadcast_id, actor="olivia")
    broadcasts.send(services(), broadcast.broadcast_id)
    return broadcast.broadcast_id


def ledger(broadcast_id: str) -> dict[str, str]:
    return {d["recipient_key"]: d["status"] for d in services().store.deliveries(broadcast_id)}


def counts(broadcast_id: str) -> tuple[BroadcastStatus, dict[str, int]]:
    final = broadcasts.get_broadcast(services().store, broadcast_id)
    sms = final.counts[Channel.SMS]
    return final.status, {"planned": sms.planned, "sent": sms.sent, "failed": sms.failed}


def test_throttled_sends_are_retried_and_delivered_once(
    stack: Stack, faults: Any, run_queues: Callable[..., Any]
) -> None:
    seen: dict[str, int] = {}

    def throttle_first_two(params: dict[str, Any]) -> Any:
        seen[params["PhoneNumber"]] = seen.get(params["PhoneNumber"], 0) + 1
        return provider_error("Throttling") if seen[params["PhoneNumber"]] <= 2 else None

    faults("before-call.sns.Publish", throttle_first_two)
    broadcast_id = sms_broadcast(3)
    runner = run_queues(timeout=90)
    assert counts(broadcast_id) == (BroadcastStatus.SENT, {"planned": 3, "sent": 3, "failed": 0}), (
        list(services().store.deliveries(broadcast_id)),
        runner.stats,
        seen,
    )
    assert sorted(m["phone_number"] for m in stack.delivered()["sms"]) == sorted(seen)


def test_an_invalid_number_fails_that_notice_once_and_the_broadcast_completes(
    stack: Stack, faults: Any, run_queues: Callable[..., Any]
) -> None:
    attempts: list[str] = []

    def reject_one(params: dict[str, Any]) -> Any:
        attempts.append(params["PhoneNumber"])
        return (
            provider_error("InvalidParameter") if params["PhoneNumber"].endswith("0001") else None
        )

    faults("before-call.sns.Publish", reject_one)
    broadcast_id = sms_broadcast(3)
    run_queues()
    assert counts(broadcast_id) == (BroadcastStatus.SENT, {"planned": 3, "sent": 2, "failed": 1})
    assert attempts.count("+14155550001") == 1
    reasons = [
        d["reason"] for d in services().store.deliveries(broadcast_id) if d["status"] == "failed"
    ]
    assert reasons
    assert reasons[0].startswith("InvalidParameter")


def test_a_worker_stopped_after_sending_does_not_cause_a_second_send(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, run_queues: Callable[..., Any]
) -> None:
    monkeypatch.setenv("DELIVERY_LEASE_SECONDS", "1")
    runtime.reset()
    crashed: list[str] = []
    real_record = Store.record_outcome

    def crash_once(self: Store, *args: Any, **kwargs: Any) -> bool:
        if not crashed:
            crashed.append(args[1])
            raise RuntimeError("worker killed before recording")
        return real_record(self, *args, **kwargs)

    monkeypatch.setattr(Store, "record_outcome", crash_once)
    broadcast_id = sms_broadcast(2)
    run_queues(timeout=90)
    assert crashed
    assert counts(broadcast_id) == (BroadcastStatus.SENT, {"planned": 2, "sent": 2, "failed": 0})
    assert len(stack.delivered()["sms"]) == 2
    in_doubt = [d for d in services().store.deliveries(broadcast_id) if d["reason"]]
    assert [d["customer_id"] for d in in_doubt] == crashed


def test_a_duplicate_queue_message_sends_nothing_more(
    stack: Stack, run_queues: Callable[..., Any]
) -> None:
    broadcast_id = sms_broadcast(2)
    run_queues()
    one = customer(0, channels=("sms",))
    jobs = broadcasts.delivery_jobs(broadcast_id, [(one, Channel.SMS), (one, Channel.SMS)])
    queues.send_json(services().settings.names.delivery_queue, jobs + jobs)
    run_queues()
    assert len(stack.delivered()["sms"]) == 2
    assert counts(broadcast_id)[1]["sent"] == 2


def test_a_malformed_job_is_reported_failed_so_it_reaches_the_dead_letter_queue(
    stack: Stack,
) -> None:
    from chalicelib.queues import QueueMessage

    url = queues.queue_url(services().settings.names.delivery_queue)
    aws.client("sqs").send_message(QueueUrl=url, MessageBody="{not json")
    message = aws.client("sqs").receive_message(QueueUrl=url)["Messages"][0]
    failed = handle_batch(
        services(),
        [QueueMessage(message["MessageId"], message["Body"], message["ReceiptHandle"], 1)],
    )
    assert failed == [message["MessageId"]]


def test_backoff_grows_with_each_receive_and_is_capped() -> None:
    assert 1 <= backoff_seconds(1) <= 2
    assert 64 <= backoff_seconds(7) <= 128
    assert backoff_seconds(50) <= 900


def test_delivery_jobs_carry_ten_recipients_each_and_round_trip_through_json() -> None:
    recipients = [(customer(i), Channel.EMAIL) for i in range(23)]
    messages = broadcasts.delivery_jobs("b1", recipients)
    assert [len(m["recipients"]) for m in messages] == [10, 10, 3]
    parsed = [job for m in messages for job in DeliveryJob.from_message(json.dumps(m))]
    assert [(job.customer, job.channel) for job in parsed] == recipients
    assert {job.broadcast_id for job in parsed} == {"b1"}


def test_reconcile_accounts_for_every_customer_and_names_a_gap(
    stack: Stack, faults: Any, run_queues: Callable[..., Any]
) -> None:
    from chalicelib.suppressions import Suppressions

    faults(
        "before-call.sns.Publish",
        lambda p: provider_error("InvalidParameter") if p["PhoneNumber"].endswith("0001") else None,
    )
    Suppressions(services().settings.names).suppress(
        Channel.SMS, "+14155550002", reason="texted STOP"
    )
    broadcast_id = sms_broadcast(4)
    run_queues()
    report = broadcasts.reconcile(services(), broadcast_id)
    assert {k: report[k] for k in ("audience", "sent", "suppressed", "failed", "waiting")} == {
        "audience": 4,
        "sent": 2,
        "suppressed": 1,
        "failed": 1,
        "waiting": 0,
    }
    assert report["reasons"]["suppressed: texted STOP"] == 1
    assert any(r.startswith("InvalidParameter") for r in report["reasons"])
    assert report["gaps"] == []

    # A settle lost between the ledger and the counter shows up, named.
    aws.client("dynamodb").update_item(
        TableName=services().settings.names.deliveries,
        Key={"broadcast_id": {"S": broadcast_id}, "recipient_key": {"S": "c0000#sms"}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "sending"}},
    )
    gaps = broadcasts.reconcile(services(), broadcast_id)["gaps"]
    assert gaps == [
        "sent: the broadcast counts 2, the ledger holds 1",
        "1 planned notice(s) not settled, yet the broadcast is sent",
    ]


def test_redrive_moves_dead_letters_back_and_they_are_delivered_once(
    stack: Stack, run_queues: Callable[..., Any]
) -> None:
    from chalicelib import queues as sqs_queues

    broadcast_id = sms_broadcast(2)
    run_queues()
    sent = len(stack.delivered()["sms"])
    # A job that failed earlier and ended in the dead-letter queue, for a customer already
    # told and one not yet: the redriven job tells only the second.
    services().store.upsert_customer(customer(7, channels=("sms",)))
    recipients = [
        {"customer": customer(index, channels=("sms",)).to_dict(), "channel": "sms"}
        for index in (0, 7)
    ]
    body = {"broadcast_id": broadcast_id, "recipients": recipients}
    sqs_queues.send_json("forewarn-test-deliveries-dlq", [body])
    result = sqs_queues.redrive("test", "deliveries")
    assert result == {"queue": "deliveries", "moved": 1, "left_in_dead_letter_queue": 0}
    run_queues()
    assert len(stack.delivered()["sms"]) == sent + 1
    assert stack.delivered()["sms"][-1]["phone_number"] == "+14155550007"
    with pytest.raises(NotFound):
        sqs_queues.redrive("test", "everything")


def reject_numbers_ending(suffix: str) -> Callable[[dict[str, Any]], Any]:
    return lambda p: (
        provider_error("InvalidParameter") if p["PhoneNumber"].endswith(suffix) else None
    )


def test_an_invalid_number_hands_the_notice_to_the_customers_next_channel_once(
    stack: Stack, faults: Any, run_queues: Callable[..., Any]
) -> None:
    faults("before-call.sns.Publish", reject_numbers_ending("0001"))
    people = [customer(index, channels=("sms", "email")) for index in range(3)]
    broadcast_id = send_broadcast(people, ["sms", "email"])
    run_queues()
    final = broadcasts.get_broadcast(services().store, broadcast_id)
    assert final.status is BroadcastStatus.SENT
    assert final.to_dict()["counts"] == {
        "sms": {
            "planned": 3,
            "sent": 2,
            "failed": 0,
            "suppressed": 0,
            "fell_back": 1,
            "digested": 0,
        },
        "email": {
            "planned": 1,
            "sent": 1,
            "failed": 0,
            "suppressed": 0,
            "fell_back": 0,
            "digested": 0,
        },
    }
    assert ledger(broadcast_id) == {
        "c0000#sms": "sent",
        "c0001#sms": "fell_back",
        "c0001#email": "sent",
        "c0002#sms": "sent",
    }
    emails = stack.delivered()["email"]
    assert [set(m["destinations"]) for m in emails] == [{"kim1@example.com"}]
    report = broadcasts.reconcile(services(), broadcast_id)
    assert (report["audience"], report["sent"], report["fell_back"], report["gaps"]) == (
        3,
        3,
        1,
        [],
    )
    assert any("InvalidParameter" in r and "(handed to email)" in r for r in report["reasons"])


def test_a_suppressed_number_is_carried_by_email_and_counted_as_fallen_back(
    stack: Stack, run_queues: Callable[..., Any]
) -> None:
    from chalicelib.suppressions import Suppressions

    Suppressions(services().settings.names).suppress(
        Channel.SMS, "+14155550000", reason="texted STOP"
    )
    broadcast_id = send_broadcast([customer(0, channels=("sms", "email"))], ["sms", "email"])
    run_queues()
    assert ledger(broadcast_id) == {"c0000#sms": "fell_back", "c0000#email": "sent"}
    assert stack.delivered()["sms"] == []
    assert len(stack.delivered()["email"]) == 1


def test_a_notice_whose_every_channel_fails_is_failed_on_the_last_one(
    stack: Stack, faults: Any, run_queues: Callable[..., Any]
) -> None:
    faults("before-call.sns.Publish", reject_numbers_ending("0000"))
    faults("before-call.ses.SendRawEmail", lambda p: provider_error("MessageRejected", status=400))
    broadcast_id = send_broadcast([customer(0, channels=("sms", "email"))], ["sms", "email"])
    run_queues()
    assert ledger(broadcast_id) == {"c0000#sms": "fell_back", "c0000#email": "failed"}
    report = broadcasts.reconcile(services(), broadcast_id)
    assert (report["audience"], report["failed"], report["waiting"], report["gaps"]) == (
        1,
        1,
        0,
        [],
    )


def test_a_worker_stopped_after_falling_back_resumes_on_the_next_channel_without_resending(
    stack: Stack, faults: Any, monkeypatch: pytest.MonkeyPatch, run_queues: Callable[..., Any]
) -> None:
    attempts: list[str] = []

    def reject(params: dict[str, Any]) -> Any:
        attempts.append(params["PhoneNumber"])
        return provider_error("InvalidParameter")

    faults("before-call.sns.Publish", reject)
    real_claim = Store.claim_delivery
    stopped: list[Channel] = []

    def stop_before_email(self: Store, *args: Any, **kwargs: Any) -> Any:
        if args[2] is Channel.EMAIL and not stopped:
            stopped.append(args[2])
            raise RuntimeError("worker killed between the handover and the next send")
        return real_claim(self, *args, **kwargs)

    monkeypatch.setattr(Store, "claim_delivery", stop_before_email)
    broadcast_id = send_broadcast([customer(0, channels=("sms", "email"))], ["sms", "email"])
    run_queues(timeout=90)
    assert stopped == [Channel.EMAIL]
    assert attempts == ["+14155550000"]
    assert ledger(broadcast_id) == {"c0000#sms": "fell_back", "c0000#email": "sent"}
    assert len(stack.delivered()["email"]) == 1
    assert broadcasts.reconcile(services(), broadcast_id)["gaps"] == []


def test_a_failure_before_the_send_gives_the_claim_back_and_the_notice_still_goes_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, run_queues: Callable[..., Any]
) -> None:
    from chalicelib.send_rates import Pacer

    real_acquire = Pacer.acquire
    failures: list[Channel] = []

    def throttled_table_once(self: Pacer, channel: Channel, cost: int = 1) -> bool:
        if not failures:
            failures.append(channel)
            raise RuntimeError("send-rates table throttled")
        return real_acquire(self, channel, cost)

    monkeypatch.setattr(Pacer, "acquire", throttled_table_once)
    broadcast_id = sms_broadcast(1)
    run_queues()
    assert failures == [Channel.SMS]
    assert len(stack.delivered()["sms"]) == 1
    (row,) = services().store.deliveries(broadcast_id)
    # Sent for sure, not taken for a send that may have happened.
    assert (row["status"], row["reason"], row["attempts"]) == ("sent", "", 2)
