from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from conftest import Stack
from factories import customer

from chalicelib import aws, broadcasts, incidents
from chalicelib.domain import Channel, Incident, IncidentStatus
from chalicelib.errors import Conflict
from chalicelib.runtime import services
from chalicelib.store import COUNTER_SHARDS, ClaimState, counter_shard, from_dynamo


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


# -- incidents -------------------------------------------------------------------------------

OPENED = datetime(2026, 11, 23, 13, tzinfo=UTC)


def open_incident() -> Incident:
    return incidents.create_incident(
        services().store,
        {
            "title": "Mobile data down",
            "services": ["mobile"],
            "regions": ["north"],
            "next_update_due": "2026-11-23T14:00:00Z",
        },
        OPENED,
    )


def raw_incident(incident_id: str) -> dict[str, object]:
    response = aws.client("dynamodb").get_item(
        TableName=services().settings.names.incidents,
        Key={"incident_id": {"S": incident_id}},
        ConsistentRead=True,
    )
    return from_dynamo(response["Item"])


def test_an_incident_saved_from_a_read_before_the_freeze_keeps_its_audience_frozen(
    stack: Stack,
) -> None:
    store = services().store
    opened = open_incident()
    # An ops PATCH (or a status source) reads the incident...
    stale = store.get_incident(opened.incident_id)
    assert stale is not None
    assert not stale.audience_frozen
    # ...the planner finishes the initial broadcast's audience and freezes it...
    store.freeze_audience(opened.incident_id)
    # ...and the writer saves what it read, changed: the freeze must survive.
    later = replace(
        stale,
        status=IncidentStatus.IDENTIFIED,
        updated_at="2026-11-23T13:30:00Z",
        next_update_due="2026-11-23T15:00:00Z",
    )
    store.save_incident(later, expected_updated_at=stale.updated_at)
    saved = store.get_incident(opened.incident_id)
    assert saved is not None
    assert saved.audience_frozen
    assert replace(saved, audience_frozen=False) == later


def test_an_incident_update_through_the_api_path_keeps_the_freeze_and_clears_the_due_time(
    stack: Stack,
) -> None:
    store = services().store
    opened = open_incident()
    store.freeze_audience(opened.incident_id)
    updated = incidents.update_incident(
        store,
        opened.incident_id,
        {"status": "monitoring", "next_update_due": None},
        datetime(2026, 11, 23, 13, 45, tzinfo=UTC),
    )
    assert updated.next_update_due is None
    raw = raw_incident(opened.incident_id)
    assert raw["audience_frozen"] is True
    assert raw["status"] == "monitoring"
    # Absent, as for an incident opened without one, rather than stored as null.
    assert "next_update_due" not in raw
    assert (raw["title"], raw["services"], raw["regions"]) == (
        "Mobile data down",
        ["mobile"],
        ["north"],
    )


def test_saving_from_a_stale_read_is_still_a_conflict(stack: Stack) -> None:
    store = services().store
    opened = open_incident()
    first = replace(opened, status=IncidentStatus.IDENTIFIED, updated_at="2026-11-23T13:10:00Z")
    store.save_incident(first, expected_updated_at=opened.updated_at)
    second = replace(opened, status=IncidentStatus.MONITORING, updated_at="2026-11-23T13:20:00Z")
    with pytest.raises(Conflict):
        store.save_incident(second, expected_updated_at=opened.updated_at)
    saved = store.get_incident(opened.incident_id)
    assert saved is not None
    assert saved.status is IncidentStatus.IDENTIFIED


def test_saving_an_incident_that_does_not_exist_creates_nothing(stack: Stack) -> None:
    store = services().store
    ghost = replace(open_incident(), incident_id="inc_ghost")
    with pytest.raises(Conflict):
        store.save_incident(ghost, expected_updated_at=ghost.updated_at)
    assert store.get_incident("inc_ghost") is None


def test_a_settle_that_meets_another_transaction_on_its_counter_is_tried_again(
    stack: Stack,
) -> None:
    from botocore.awsrequest import AWSResponse

    store = services().store
    claim = store.claim_delivery("b1", "c1", Channel.SMS, lease_seconds=60)
    conflicts: list[int] = []

    def conflict_twice(**kwargs: object) -> object:
        if len(conflicts) == 2:
            return None
        conflicts.append(1)
        reasons = [{"Code": "None"}, {"Code": "TransactionConflict"}]
        return (
            AWSResponse("http://fault", 400, {}, None),
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                "CancellationReasons": reasons,
                "ResponseMetadata": {},
            },
        )

    events = aws.client("dynamodb").meta.events
    events.register("before-call.dynamodb.TransactWriteItems", conflict_twice)
    try:
        settled = store.record_outcome(
            "b1", "c1", Channel.SMS, attempt_id=claim.attempt_id, status="sent", counter="sent"
        )
    finally:
        events.unregister("before-call.dynamodb.TransactWriteItems", conflict_twice)
    assert settled
    assert len(conflicts) == 2
    assert [row["status"] for row in store.deliveries("b1")] == ["sent"]


def test_settles_spread_over_counter_shards_and_readers_add_them_up(stack: Stack) -> None:
    store = services().store
    incident = incidents.create_incident(
        store, {"title": "Outage", "services": ["mobile"], "regions": ["north"]}
    )
    draft = broadcasts.create_broadcast(
        services(), {"incident_id": incident.incident_id, "channels": ["sms"]}, actor="o"
    )
    people = [f"c{index:04d}" for index in range(40)]
    for person in people:
        claim = store.claim_delivery(draft.broadcast_id, person, Channel.SMS, lease_seconds=60)
        assert store.record_outcome(
            draft.broadcast_id,
            person,
            Channel.SMS,
            attempt_id=claim.attempt_id,
            status="sent",
            counter="sent",
        )
    shards = {counter_shard(draft.broadcast_id, person) for person in people}
    assert len(shards) > COUNTER_SHARDS // 2  # spread, not one hot item
    raw = aws.client("dynamodb").get_item(
        TableName=services().settings.names.broadcasts,
        Key={"broadcast_id": {"S": draft.broadcast_id}},
    )["Item"]
    assert raw["n_sms_sent"] == {"N": "0"}  # the broadcast's own item is not written per settle
    for read in (
        store.get_broadcast(draft.broadcast_id, consistent=True),
        store.get_broadcasts([draft.broadcast_id])[draft.broadcast_id],
        *store.broadcasts_for_incident(incident.incident_id),
    ):
        assert read is not None
        assert read.counts[Channel.SMS].sent == 40
