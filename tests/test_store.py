from __future__ import annotations

from conftest import Stack
from factories import customer

from chalicelib.domain import Channel
from chalicelib.runtime import services
from chalicelib.store import ClaimState


def subscription_rows(service: str) -> list[str]:
    page = services().store.query_subscriptions(
        service, by_postal=False, key_prefix="", start_key=None, limit=1000
    )
    return [row.sort_key for row in page.items]


def test_upsert_reports_created_then_unchanged_then_updated(stack: Stack) -> None:
    store = services().store
    assert store.upsert_customer(customer(1)) == "created"
    assert store.upsert_customer(customer(1)) == "unchanged"
    assert store.upsert_customer(customer(1, name="Kim Renamed")) == "updated"
    stored = store.get_customer("c0001")
    assert stored is not None
    assert stored.name == "Kim Renamed"


def test_moving_a_customer_removes_the_old_audience_index_row(stack: Stack) -> None:
    store = services().store
    store.upsert_customer(customer(1, services=[("mobile", "north", "10115")]))
    store.upsert_customer(customer(1, services=[("mobile", "south", "80331")]))
    assert subscription_rows("mobile") == ["south#80331#c0001"]


def test_a_second_claim_on_a_settled_delivery_is_refused(stack: Stack) -> None:
    store = services().store
    first = store.claim_delivery("b1", "c1", Channel.SMS, lease_seconds=60)
    assert first.state is ClaimState.CLAIMED
    assert store.record_outcome(
        "b1", "c1", Channel.SMS, attempt_id=first.attempt_id, status="sent", counter="sent"
    )
    again = store.claim_delivery("b1", "c1", Channel.SMS, lease_seconds=60)
    assert again.state is ClaimState.SETTLED
    assert again.status == "sent"


def test_a_live_claim_is_in_flight_and_an_expired_one_is_in_doubt(stack: Stack) -> None:
    store = services().store
    store.claim_delivery("b1", "c1", Channel.SMS, lease_seconds=60)
    assert store.claim_delivery("b1", "c1", Channel.SMS, lease_seconds=60).state is (
        ClaimState.IN_FLIGHT
    )
    store.claim_delivery("b1", "c2", Channel.EMAIL, lease_seconds=-1)
    assert store.claim_delivery("b1", "c2", Channel.EMAIL, lease_seconds=60).state is (
        ClaimState.IN_DOUBT
    )


def test_a_released_claim_can_be_claimed_again_and_counts_attempts(stack: Stack) -> None:
    store = services().store
    first = store.claim_delivery("b1", "c1", Channel.SMS, lease_seconds=60)
    store.release_delivery(
        "b1", "c1", Channel.SMS, attempt_id=first.attempt_id, reason="Throttling"
    )
    second = store.claim_delivery("b1", "c1", Channel.SMS, lease_seconds=60)
    assert second.state is ClaimState.CLAIMED
    assert second.attempts == 2


def test_an_outcome_is_recorded_only_by_the_attempt_that_holds_the_claim(stack: Stack) -> None:
    store = services().store
    claim = store.claim_delivery("b1", "c1", Channel.SMS, lease_seconds=60)
    assert not store.record_outcome(
        "b1", "c1", Channel.SMS, attempt_id="someone-else", status="sent", counter="sent"
    )
    assert store.record_outcome(
        "b1", "c1", Channel.SMS, attempt_id=claim.attempt_id, status="sent", counter="sent"
    )
    assert not store.record_outcome(
        "b1", "c1", Channel.SMS, attempt_id=claim.attempt_id, status="sent", counter="sent"
    )


def test_bulk_loaded_customers_are_the_same_as_upserted_ones(stack: Stack) -> None:
    store = services().store
    store.load_new_customers([customer(i) for i in range(30)])
    assert len(subscription_rows("mobile")) == 30
    assert store.upsert_customer(customer(7)) == "unchanged"
    assert store.upsert_customer(customer(7, name="Kim Moved")) == "updated"
