"""Send rates shared by every delivery worker through DynamoDB, on the local stack: a window
never grants more than its limit, however many workers ask at once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Stack

from chalicelib import aws
from chalicelib.config import SendRateLimits, settings
from chalicelib.domain import Channel
from chalicelib.runtime import reset
from chalicelib.send_rates import Pacer, SendRates, seconds_to_next_window, window_key
from forewarn_cli.local.infra import load_template

NOW = 1_800_000_000.25


def rates(sms: int = 0, email: int = 0) -> SendRates:
    return SendRates(settings().names, limits=SendRateLimits(sms=sms, email=email))


def windows() -> dict[str, int]:
    """Every window in the table and how much of it was taken."""
    items = aws.client("dynamodb").scan(TableName=settings().names.send_rates)["Items"]
    return {i["window_key"]["S"]: int(i["taken"]["N"]) for i in items}


def test_a_window_grants_no_more_than_the_limit_across_concurrent_workers(stack: Stack) -> None:
    limit, workers = 20, 8
    start = threading.Barrier(workers)
    grants: list[int] = []
    lock = threading.Lock()

    def worker(wanted: int) -> None:
        table = rates(sms=limit)
        start.wait()
        # Until the window refuses it: a refusal while tokens remain means another worker
        # took some in between and asks again, so the window ends up exactly full.
        for _ in range(limit):
            granted = table.take(Channel.SMS, wanted, now=NOW)
            assert 0 <= granted <= wanted
            with lock:
                grants.append(granted)
            if granted == 0:
                return

    threads = [threading.Thread(target=worker, args=(1 + i % 4,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert sum(grants) == limit
    assert windows() == {window_key(Channel.SMS, int(NOW)): limit}


def test_a_partial_grant_is_given_when_fewer_tokens_remain(stack: Stack) -> None:
    table = rates(email=14)
    assert table.take(Channel.EMAIL, 10, now=NOW) == 10
    assert table.take(Channel.EMAIL, 10, now=NOW + 0.5) == 4  # the 4 left, not nothing
    assert table.take(Channel.EMAIL, 1, now=NOW + 0.7) == 0
    # More than the whole limit at once gets the limit, in a window of its own.
    assert table.take(Channel.EMAIL, 100, now=NOW + 1) == 14


def test_the_next_second_starts_a_fresh_window(stack: Stack) -> None:
    table = rates(sms=3, email=2)
    assert table.take(Channel.SMS, 3, now=NOW) == 3
    assert table.take(Channel.SMS, 1, now=NOW + 0.74) == 0
    assert seconds_to_next_window(NOW + 0.74) == pytest.approx(0.01)
    assert table.take(Channel.SMS, 3, now=NOW + 0.75) == 3  # 1_800_000_001.0: the next second
    assert table.take(Channel.EMAIL, 2, now=NOW) == 2  # each channel has windows of its own
    second = int(NOW)
    assert windows() == {
        f"sms#{second}": 3,
        f"sms#{second + 1}": 3,
        f"email#{second}": 2,
    }
    # Old windows expire: the table's TTL (declared in infra/; moto's CloudFormation does not
    # apply it) reads the attribute each window carries.
    table_spec = load_template()["Resources"]["SendRatesTable"]["Properties"]
    attribute = table_spec["TimeToLiveSpecification"]["AttributeName"]
    item = aws.client("dynamodb").get_item(
        TableName=settings().names.send_rates, Key={"window_key": {"S": f"sms#{second}"}}
    )["Item"]
    assert int(item[attribute]["N"]) > second


def test_an_unset_limit_grants_everything_without_touching_the_table(stack: Stack) -> None:
    table = rates(email=1)
    assert table.take(Channel.SMS, 500, now=NOW) == 500
    assert table.take(Channel.SOCIAL, 7, now=NOW) == 7  # no limit is ever set for X
    assert table.take(Channel.SMS, 0, now=NOW) == 0
    assert windows() == {}
    assert table.take(Channel.EMAIL, 5, now=NOW) == 1  # the limited channel does write
    assert windows() == {f"email#{int(NOW)}": 1}


def test_seconds_to_next_window_is_never_zero() -> None:
    assert seconds_to_next_window(10.0) == 1.0
    assert seconds_to_next_window(10.5) == 0.5
    assert 0 < seconds_to_next_window(NOW) <= 1


def test_limits_are_read_per_channel_from_the_stage_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stages = json.loads((Path(__file__).parents[1] / ".chalice" / "config.json").read_text())
    prod = SendRateLimits.from_env(stages["stages"]["prod"]["environment_variables"])
    assert (prod.of(Channel.SMS), prod.of(Channel.EMAIL), prod.of(Channel.SOCIAL)) == (20, 14, 0)
    # Locally unset: unlimited, so demos send at once.
    assert SendRateLimits.from_env(stages["stages"]["dev"]["environment_variables"]) == (
        SendRateLimits(sms=0, email=0)
    )
    assert SendRateLimits.from_env({"SEND_RATE_SMS": " 5 ", "SEND_RATE_EMAIL": ""}) == (
        SendRateLimits(sms=5, email=0)
    )
    for variable, bad in (("SEND_RATE_SMS", "twenty"), ("SEND_RATE_EMAIL", "-1")):
        with pytest.raises(ValueError, match=f"{variable} must be a whole number"):
            SendRateLimits.from_env({variable: bad})
    monkeypatch.setenv("SEND_RATE_SMS", "7")
    monkeypatch.setenv("SEND_RATE_EMAIL", "3")
    reset()
    try:
        assert settings().send_rates == SendRateLimits(sms=7, email=3)
        assert SendRates(settings().names).limits.of(Channel.EMAIL) == 3
    finally:
        monkeypatch.undo()
        reset()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_pacer_waits_for_the_next_window_when_this_one_is_spent(stack: Stack) -> None:
    clock = FakeClock(NOW)
    pacer = Pacer(rates(sms=8), {Channel.SMS: 20}, clock=clock, sleep=clock.sleep)
    seconds = [int(clock.now) for _ in range(20) if pacer.acquire(Channel.SMS)]
    assert len(seconds) == 20
    # Never more than the limit in one second, and the windows agree.
    assert max(seconds.count(s) for s in set(seconds)) == 8
    assert all(taken <= 8 for taken in windows().values())
    assert clock.slept


def test_a_token_is_not_carried_into_the_next_second(stack: Stack) -> None:
    clock = FakeClock(NOW)
    pacer = Pacer(rates(sms=8), {Channel.SMS: 8}, clock=clock, sleep=clock.sleep)
    assert pacer.acquire(Channel.SMS)  # takes a chunk of two (a quarter of the limit)
    clock.now += 1
    assert pacer.acquire(Channel.SMS)
    assert windows() == {
        window_key(Channel.SMS, int(NOW)): 2,
        window_key(Channel.SMS, int(NOW) + 1): 2,
    }


def test_a_pacer_closes_a_channel_it_cannot_get_a_token_for_in_time(stack: Stack) -> None:
    clock = FakeClock(NOW)
    rates(sms=1).take(Channel.SMS, 1, now=NOW)
    pacer = Pacer(rates(sms=1), {Channel.SMS: 3}, max_wait=0.5, clock=clock, sleep=clock.sleep)
    assert not pacer.acquire(Channel.SMS)
    clock.now += 5
    # Closed for the rest of the batch, even though a window has room again.
    assert not pacer.acquire(Channel.SMS)
    assert pacer.acquire(Channel.EMAIL)  # unlimited


def test_a_broadcast_under_a_send_rate_never_exceeds_it_and_sends_everyone_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, run_queues: Callable[..., Any]
) -> None:
    from test_deliveries import sms_broadcast

    from chalicelib import broadcasts
    from chalicelib.runtime import services

    monkeypatch.setenv("SEND_RATE_SMS", "2")
    reset()
    broadcast_id = sms_broadcast(7)
    run_queues(timeout=120)
    final = broadcasts.get_broadcast(services().store, broadcast_id)
    assert (final.status.value, final.counts[Channel.SMS].sent) == ("sent", 7)
    assert len(stack.delivered()["sms"]) == 7
    taken = windows()
    # Seven sends at two a second need four windows at least, none over its limit.
    assert len(taken) >= 4
    assert max(taken.values()) <= 2


def test_a_long_text_takes_as_many_tokens_as_it_has_parts(stack: Stack) -> None:
    clock = FakeClock(NOW)
    pacer = Pacer(rates(sms=4), {Channel.SMS: 2}, clock=clock, sleep=clock.sleep)
    assert pacer.acquire(Channel.SMS, cost=3)
    assert int(clock.now) == int(NOW)
    assert pacer.acquire(Channel.SMS, cost=3)
    # Three parts and three more do not fit in one second of four.
    assert int(clock.now) == int(NOW) + 1
    assert not pacer.acquire(Channel.SMS, cost=5)  # more than a whole second allows


def test_jobs_the_send_rate_turns_away_come_back_as_new_messages_not_dead_letters(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, run_queues: Callable[..., Any]
) -> None:
    from test_deliveries import sms_broadcast

    from chalicelib import broadcasts, deliveries, queues
    from chalicelib.runtime import services

    monkeypatch.setenv("SEND_RATE_SMS", "1")
    reset()
    real_pacer, real_send_json = deliveries.pacer, queues.send_json
    requeued: list[int] = []

    def impatient(services: Any, planned: Any) -> Pacer:
        pacer = real_pacer(services, planned)
        pacer.max_wait = 0.0  # no waiting for the next second: every refusal is requeued
        return pacer

    def counting(queue: str, bodies: Any, *, delay_seconds: int = 0) -> None:
        if delay_seconds:
            requeued.append(len(bodies))
        real_send_json(queue, bodies, delay_seconds=delay_seconds)

    monkeypatch.setattr(deliveries, "pacer", impatient)
    monkeypatch.setattr(queues, "send_json", counting)
    broadcast_id = sms_broadcast(4)
    run_queues(timeout=120)
    assert requeued
    assert len(stack.delivered()["sms"]) == 4
    report = broadcasts.reconcile(services(), broadcast_id)
    assert (report["sent"], report["gaps"]) == (4, [])
    dlq = queues.queue_url("forewarn-test-deliveries-dlq")
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
