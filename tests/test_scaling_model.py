"""The scaling model's arithmetic on tiny cases (bench/scaling.py), so that it can fail.

No AWS stand-in here: a made-up profile (what the real code costs per recipient) feeds the
discrete-event model, whose answers must follow from the quotas it is given.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bench.scaling import (
    MAX_RECEIVES,
    Latency,
    Profile,
    Scenario,
    TokenBucket,
    TokenWindows,
    bounds,
    costs,
    measure,
    simulate,
    steady_rate,
    validation_scenarios,
)
from chalicelib.store import COUNTER_SHARDS


def profile(
    *, sms_share: float = 1.0, segments: float = 1.0, planner_cpu: float = 0.0001
) -> Profile:
    """Every recipient on SMS of one part, unless told; a claim and a frequency-cap write on
    the worker's path; the counter item takes 2 write units a settle."""
    return Profile(
        recipients=1000,
        sms_share=sms_share,
        sms_segments=segments,
        email_bytes=4000.0,
        worker_calls={
            "dynamodb.update_item[deliveries]": 1.0,
            "dynamodb.update_item[digests]": 1.0,
        },
        worker_cpu=0.001,
        planner_calls={"dynamodb.batch_write_item[audiences]": 0.04, "sqs.SendMessageBatch": 0.01},
        planner_cpu=planner_cpu,
        planner_step_calls={"dynamodb.get_item[broadcasts]": 1.0},
        wru={"deliveries": 3.0, "broadcasts": 2.0},
        rru={"broadcasts": 0.02},
        sqs_sends=0.01,
        counter_units=2.0,
        audience_units=1.0,
    )


def scenario(recipients: int = 1000, **changes: object) -> Scenario:
    base = Scenario(
        recipients, sms_mps=100, ses_rate=0, concurrency=50, memory_mb=1769, plan_page_size=500
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_1000_sms_at_100_mps_take_at_least_10_seconds() -> None:
    outcome = simulate(scenario(concurrency=10), profile())
    assert outcome.finished
    assert outcome.delivered == outcome.sms == 1000
    assert outcome.seconds >= 10.0
    assert max(outcome.sends_per_second["sms"]) <= 100
    # Ten workers could send ~140 a second, so SNS refuses some sends (no send rate is set)
    # and they come back after a back-off: a tail, but the quota sets the pace.
    assert outcome.throttled["SNS"] > 0
    assert outcome.seconds < 15.0


def test_doubling_the_sms_quota_halves_the_send_phase_when_sms_bound() -> None:
    slow = simulate(scenario(4000, sms_mps=100, concurrency=20), profile())
    fast = simulate(scenario(4000, sms_mps=200, concurrency=20), profile())
    assert slow.bottleneck() == fast.bottleneck() == "SMS throughput"
    # The send phase: the middle 80% of the sends, at the quota.
    slow_rate = steady_rate(slow.sends_per_second["sms"])
    fast_rate = steady_rate(fast.sends_per_second["sms"])
    assert slow_rate == pytest.approx(100, rel=0.05)
    assert fast_rate == pytest.approx(2 * slow_rate, rel=0.05)
    # In all, a little less than half: refused sends come back after a back-off either way.
    assert 0.35 < fast.seconds / slow.seconds < 0.6


def test_message_parts_not_messages_count_against_the_quota() -> None:
    one_part = simulate(scenario(2000, concurrency=10), profile(segments=1.0))
    two_parts = simulate(scenario(2000, concurrency=10), profile(segments=2.0))
    assert steady_rate(one_part.sends_per_second["sms"]) == pytest.approx(100, rel=0.1)
    assert steady_rate(two_parts.sends_per_second["sms"]) == pytest.approx(50, rel=0.1)
    assert two_parts.seconds > 1.8 * one_part.seconds
    assert bounds(scenario(2000), profile(segments=2.0), Latency())["SMS throughput"] == 40.0


def test_the_counter_item_holds_settles_to_500_a_second_until_sharded() -> None:
    # Enough recipients for the pollers to ramp up (5 more a second) past 500 settles a second.
    unlimited = scenario(20_000, sms_mps=0, concurrency=100, counter_shards=1)
    one_item = simulate(unlimited, profile())
    assert one_item.delivered == 20_000
    assert one_item.seconds >= 20_000 * 2 / 1000  # 2 units a settle, 1,000 units a second
    assert one_item.throttled["DynamoDB settle"] > 0
    assert one_item.bottleneck() == "broadcast counter item"
    assert steady_rate(one_item.sends_per_second["sms"]) <= 500 * 1.05
    sharded = simulate(replace(unlimited, counter_shards=COUNTER_SHARDS), profile())
    assert sharded.throttled["DynamoDB settle"] == 0
    assert steady_rate(sharded.sends_per_second["sms"]) >= 1.5 * 500
    assert sharded.seconds < one_item.seconds * 0.75


def test_jobs_the_provider_keeps_refusing_reach_the_dead_letter_queue_and_are_counted() -> None:
    # SNS takes one SMS part a second for 200 recipients: most jobs burn their receives first.
    starved = scenario(200, sms_mps=1, concurrency=20)
    outcome = simulate(starved, profile(), horizon=3600)
    assert outcome.dead_recipients > 0
    assert outcome.delivered + outcome.dead_recipients == 200
    assert not outcome.finished
    assert outcome.retried_messages >= outcome.dead_recipients / 10 * (MAX_RECEIVES - 1)


def test_jobs_the_send_rate_turns_away_come_back_as_new_messages_and_all_go() -> None:
    # Ten SMS parts a second shared by 20 workers: the Pacer, not SNS, holds them back, and
    # most workers find no token within 3 s, many times over (more than 8 receives' worth).
    paced = scenario(2000, sms_mps=0, send_rate_sms=10, concurrency=20)
    outcome = simulate(paced, profile(segments=1.0), horizon=3600)
    assert (outcome.delivered, outcome.dead_recipients) == (2000, 0)
    assert outcome.requeued_messages > 2000 / 10
    assert outcome.retried_messages == 0
    assert max(outcome.sends_per_second["sms"]) <= 10
    assert outcome.seconds >= 2000 / 10


def test_a_planner_step_overlaps_its_writes_and_sends_but_not_its_cpu() -> None:
    one_at_a_time = bounds(scenario(100_000, plan_concurrency=1), profile(), Latency())
    overlapped = bounds(scenario(100_000, plan_concurrency=8), profile(), Latency())
    assert overlapped["planner"] < one_at_a_time["planner"] * 0.9
    cpu_bound = bounds(
        scenario(100_000, plan_concurrency=1000), profile(planner_cpu=0.001), Latency()
    )
    # A millisecond of CPU a recipient is 100 s for 100,000, however many calls overlap.
    assert cpu_bound["planner"] >= 100


def test_a_slower_worker_needs_more_of_them() -> None:
    unlimited = scenario(3000, sms_mps=0, concurrency=10)
    small = simulate(replace(unlimited, memory_mb=128), profile())
    large = simulate(unlimited, profile())
    assert small.seconds > large.seconds
    assert large.bottleneck() == "Lambda concurrency"


def test_cost_is_parts_times_price_for_sms() -> None:
    outcome = simulate(scenario(1000, sms_mps=0), profile(segments=2.0))
    spend = costs(outcome, profile(segments=2.0))
    assert spend["SMS (SNS)"] == pytest.approx(1000 * 2 * (0.00581 + 0.0040))
    assert spend["email (SES)"] == 0
    assert spend["DynamoDB"] == pytest.approx(
        5.0 * 1000 * 0.625e-6 + 0.02 * 1000 * 0.125e-6, rel=0.01
    )


def test_windows_and_buckets() -> None:
    windows = TokenWindows(10)
    assert windows.take(5.0, 6)
    assert windows.take(5.9, 4)
    assert not windows.take(5.99, 1)
    assert windows.take(6.0, 10)
    bucket = TokenBucket(1000)
    assert bucket.take(0.0, 1000)
    assert not bucket.take(0.1, 200)
    assert bucket.wait_for(0.1, 200) == pytest.approx(0.1)
    assert bucket.take(0.2, 200)


def test_steady_rate_ignores_the_ramp_and_the_tail() -> None:
    per_second = [1, 2, *([50] * 20), 3, 1]
    assert steady_rate(per_second) == pytest.approx(50, rel=0.15)
    assert math.isclose(steady_rate([1, 2]), 0.0)


def test_the_real_planner_overlaps_its_calls_on_the_virtual_clock() -> None:
    base = replace(validation_scenarios(200)[0], plan_page_size=200)
    steps = {}
    for plan_concurrency in (1, 8):
        run = measure(replace(base, plan_concurrency=plan_concurrency))
        assert run.planned == sum(run.sent.values()) == 200
        # 200 snapshot rows in 8 BatchWriteItem calls, 20 jobs in 2 SendMessageBatch calls.
        assert run.meter.calls["planner:dynamodb.batch_write_item[audiences]"] == 8
        (step,) = [i for i in run.invocations if i.function == "plan_broadcast"]
        steps[plan_concurrency] = step.seconds
    latency = Latency()
    waits = 8 * latency.batch_write_item + 2 * latency.send_message_batch
    # One at a time the step waits for every call; eight at a time, for about one of each.
    assert steps[1] >= waits
    assert steps[8] <= steps[1] - 0.7 * waits
