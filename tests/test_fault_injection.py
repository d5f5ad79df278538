"""Issue 6, item 7: a broadcast under injected faults reaches every customer once, loses
nobody and reconciles. The scenario is the benchmark's (`bench/faults.py`), at the size of
a test and with the benchmark's fault rates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from bench.faults import Faults, check, install
from chalicelib import broadcasts, incidents
from chalicelib.domain import DELIVERABLE_CHANNELS, Channel, Customer
from chalicelib.runtime import services

RECIPIENTS = 200
# Every kind of customer a fallback can matter to: one channel, or two in either order.
CHANNEL_MIXES = (("sms",), ("email",), ("sms", "email"), ("email", "sms"))
# The benchmark's rates and seed; a shorter lease, so a killed worker's claim runs out
# within a few receives of its message (the stack's server answers in milliseconds).
FAULTS = Faults(lease_seconds=3)


def audience(count: int) -> list[Customer]:
    return [customer(index, channels=CHANNEL_MIXES[index % 4]) for index in range(count)]


def send_broadcast(people: Sequence[Customer]) -> str:
    svc = services()
    svc.store.load_new_customers(people)
    incident = incidents.create_incident(
        svc.store, {"title": "Outage", "services": ["mobile"], "regions": ["north"]}
    )
    broadcast = broadcasts.create_broadcast(
        svc, {"incident_id": incident.incident_id, "channels": ["sms", "email"]}, actor="olivia"
    )
    broadcasts.approve(svc, broadcast.broadcast_id, actor="olivia")
    broadcasts.send(svc, broadcast.broadcast_id)
    return broadcast.broadcast_id


def test_faults_are_decided_by_the_seed_and_throttling_always_lets_an_address_through() -> None:
    again = Faults(lease_seconds=3)
    addresses = [f"+1415555{index:04d}" for index in range(2000)]
    for address in addresses:
        assert FAULTS.rejects("sms", address) == again.rejects("sms", address)
        assert [FAULTS.throttles("sms", address, n) for n in range(1, 6)] == [
            again.throttles("sms", address, n) for n in range(1, 6)
        ]
        assert not FAULTS.throttles("sms", address, FAULTS.max_throttles + 1)
    throttled = sum(FAULTS.throttles("sms", a, 1) for a in addresses) / len(addresses)
    rejected = sum(FAULTS.rejects("sms", a) for a in addresses) / len(addresses)
    assert 0.17 < throttled < 0.23
    assert 0 < rejected < 0.02
    assert Faults(seed=7).victims(audience(50), DELIVERABLE_CHANNELS) != FAULTS.victims(
        audience(50), DELIVERABLE_CHANNELS
    )


def test_a_broadcast_under_injected_faults_reaches_everyone_once_and_reconciles(
    stack: Stack, run_queues: Callable[..., Any]
) -> None:
    people = audience(RECIPIENTS)
    offered = (Channel.SMS, Channel.EMAIL)
    # The seed must give the test a refused address to fail on (and a customer to carry to
    # another channel); a change of seed or of hashing that picks none is caught here.
    assert FAULTS.first_choice_rejected(people, offered)
    with install(FAULTS, people, offered) as injected:
        broadcast_id = send_broadcast(people)
        run_queues(timeout=120)
    figures = check(services(), broadcast_id, people, stack.delivered(), FAULTS)

    assert figures.problems() == [], (figures.to_dict(), injected.counts.to_dict())
    assert figures.status == "sent"
    assert figures.duplicates == 0
    assert figures.lost == 0
    assert figures.reconcile["gaps"] == []
    assert (
        figures.reconcile["sent"]
        == figures.sent
        == len(stack.delivered()["sms"]) + len(stack.delivered()["email"])
    )
    # Failed: those refused on every channel, and (without channel fallback) on their first.
    assert (
        len(FAULTS.all_rejected(people, offered))
        <= figures.reconcile["failed"]
        <= len(FAULTS.first_choice_rejected(people, offered))
    )
    # Each fault was really injected, so that the figures above say something.
    counts = injected.counts
    assert counts.throttles > 0
    assert counts.rejections > 0
    assert counts.kills == FAULTS.kill_after_send
    assert counts.duplicated_messages >= 1
    # A killed worker's notice was recorded sent in doubt, once each, and nothing else was.
    assert figures.in_doubt == counts.kills


def test_the_check_counts_a_second_send_as_a_duplicate_and_a_customer_sent_nothing_as_lost(
    stack: Stack, run_queues: Callable[..., Any]
) -> None:
    people = [customer(index, channels=("sms",)) for index in range(3)]
    broadcast_id = send_broadcast(people)
    run_queues()
    delivered = stack.delivered()
    assert check(services(), broadcast_id, people, delivered).problems() == []

    # The first customer's SMS recorded twice, the second's not at all (its ledger says sent).
    first = delivered["sms"][0]
    doctored = {**delivered, "sms": [first, first, *delivered["sms"][2:]]}
    figures = check(services(), broadcast_id, people, doctored)
    assert (figures.duplicates, figures.lost, figures.ledger_disagrees) == (1, 1, 2)
    assert figures.problems()


def test_the_check_refuses_customers_it_cannot_tell_apart() -> None:
    twins = [customer(1), customer(2)]
    twins[1] = Customer.from_dict({**twins[1].to_dict(), "phone": twins[0].phone})
    with pytest.raises(ValueError, match="share sms"):
        check(services(), "no-broadcast", twins, {"sms": [], "email": []})
