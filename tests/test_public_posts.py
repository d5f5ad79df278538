"""Public posts on the brand's X account: once per broadcast, follow-ups in a thread, and
customers' notices never held up by X. Posts reach the local X server through tweepy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib import broadcasts, incidents
from chalicelib.domain import BroadcastStatus, Phase
from chalicelib.errors import BadRequest
from chalicelib.runtime import services
from forewarn_cli.local.xserver import XServer


def outage(count: int = 2) -> str:
    store = services().store
    for index in range(count):
        store.upsert_customer(customer(index, channels=("sms",)))
    payload = {"title": "Mobile data down", "services": ["mobile"], "regions": ["north"]}
    return incidents.create_incident(store, payload).incident_id


def send(incident_id: str, phase: Phase = Phase.INITIAL, **payload: Any) -> str:
    broadcast = broadcasts.create_broadcast(
        services(),
        {"incident_id": incident_id, "phase": phase.value, "public_post": True, **payload},
        actor="olivia",
    )
    broadcasts.approve(services(), broadcast.broadcast_id, actor="olivia")
    broadcasts.send(services(), broadcast.broadcast_id)
    return broadcast.broadcast_id


def test_a_public_initial_is_posted_once_and_its_follow_ups_reply_in_a_thread(
    brand_x: XServer, run_queues: Callable[..., Any], stack: Stack
) -> None:
    incident_id = outage()
    initial = send(incident_id)
    run_queues()
    update = send(incident_id, Phase.UPDATE, variables={"workaround": "Use Wi-Fi calling"})
    run_queues()
    resolved = send(incident_id, Phase.RESOLVED)
    run_queues()
    first, second, third = brand_x.created
    assert first.in_reply_to_tweet_id is None
    assert "mobile" in first.text
    assert second.in_reply_to_tweet_id == first.id
    assert "Use Wi-Fi calling" in second.text
    assert third.in_reply_to_tweet_id == second.id
    stored = [broadcasts.get_broadcast(services().store, b) for b in (initial, update, resolved)]
    assert [b.public_post_id for b in stored] == [first.id, second.id, third.id]
    assert all(b.status is BroadcastStatus.SENT for b in stored)
    # The customers heard of each phase as well: 2 customers, 3 notices each.
    assert len(stack.delivered()["sms"]) == 6


def test_a_repeated_planner_step_posts_nothing_twice(
    brand_x: XServer, run_queues: Callable[..., Any]
) -> None:
    initial = send(outage())
    broadcasts.plan_step(services(), initial)
    broadcasts.plan_step(services(), initial)
    run_queues()
    assert len(brand_x.created) == 1


def test_when_x_fails_customers_are_still_told_and_the_failure_shows(
    brand_x: XServer, run_queues: Callable[..., Any], stack: Stack
) -> None:
    brand_x.respond_next("POST", "/2/tweets", status=503, body={"title": "Service Unavailable"})
    initial = send(outage())
    run_queues()
    final = broadcasts.get_broadcast(services().store, initial)
    assert final.status is BroadcastStatus.SENT
    assert len(stack.delivered()["sms"]) == 2
    assert final.public_post_id is None
    assert (final.public_post_error or "").startswith("not posted")
    # Never retried on its own: a post that failed may still have gone out.
    broadcasts.plan_step(services(), initial)
    assert brand_x.created == []


def test_a_public_post_too_long_for_x_cannot_be_approved(stack: Stack) -> None:
    incident_id = outage()
    draft = broadcasts.create_broadcast(
        services(),
        {"incident_id": incident_id, "public_post": True, "variables": {"workaround": "w" * 300}},
        actor="olivia",
    )
    with pytest.raises(BadRequest, match="X allows 280"):
        broadcasts.approve(services(), draft.broadcast_id, actor="olivia")
    with pytest.raises(BadRequest, match="public_post must be true or false"):
        broadcasts.create_broadcast(
            services(), {"incident_id": outage(0), "public_post": "yes"}, actor="olivia"
        )
