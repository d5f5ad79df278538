from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib import broadcasts, incidents
from chalicelib.domain import Broadcast, BroadcastStatus, Channel, Phase
from chalicelib.errors import BadRequest, Conflict, Forbidden, NotFound
from chalicelib.runtime import services


def seed(count: int, **options: Any) -> None:
    for index in range(count):
        channels = ("sms", "email") if index % 2 == 0 else ("email", "sms")
        services().store.upsert_customer(customer(index, channels=channels, **options))


def open_incident(**overrides: Any) -> str:
    payload = {"title": "Mobile data down", "services": ["mobile"], "regions": ["north"]}
    payload.update(overrides)
    return incidents.create_incident(services().store, payload).incident_id


def draft(incident_id: str, **payload: Any) -> Broadcast:
    return broadcasts.create_broadcast(
        services(), {"incident_id": incident_id, **payload}, actor="olivia"
    )


def approve_and_send(broadcast: Broadcast) -> None:
    broadcasts.approve(services(), broadcast.broadcast_id, actor="olivia")
    broadcasts.send(services(), broadcast.broadcast_id)


def test_preview_counts_recipients_per_preferred_channel_and_renders_every_channel(
    stack: Stack,
) -> None:
    seed(6)
    broadcast = draft(open_incident(), variables={"workaround": "Use Wi-Fi calling"})
    preview = broadcasts.preview(services(), broadcast.broadcast_id)
    assert preview["recipients"] == {
        "total": 6,
        "unreachable": 0,
        "by_channel": {"sms": 3, "email": 3},
    }
    rendered = preview["rendered"]
    assert "Use Wi-Fi calling" in rendered["sms"]["text"]
    assert rendered["sms"]["segments"]["encoding"] == "GSM-7"
    assert rendered["email"]["subject"]
    assert "<html" in rendered["email"]["html"].lower()
    assert rendered["social"]["fits"] is True


def test_preview_for_a_named_customer_uses_their_locale(stack: Stack) -> None:
    services().store.upsert_customer(customer(1, locale="fr-CA"))
    broadcast = draft(open_incident())
    preview = broadcasts.preview(services(), broadcast.broadcast_id, customer_id="c0001")
    assert preview["locale"] == "fr-CA"
    assert preview["sample_customer_id"] == "c0001"
    assert "travaillons" in preview["rendered"]["sms"]["text"]
    with pytest.raises(NotFound):
        broadcasts.preview(services(), broadcast.broadcast_id, customer_id="nobody")


def test_ucs2_text_is_counted_in_ucs2_segments(stack: Stack) -> None:
    seed(1)
    broadcast = draft(open_incident(), variables={"workaround": "Utilisez le Wi-Fi ✓ 📶"})
    segments = broadcasts.preview(services(), broadcast.broadcast_id)["rendered"]["sms"]["segments"]
    assert segments["encoding"] == "UCS-2"
    assert segments["segments"] >= 2


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"channels": []}, BadRequest),
        ({"channels": ["pigeon"]}, BadRequest),
        ({"channels": ["social"]}, BadRequest),
        ({"audience": {"services": []}}, BadRequest),
        ({"audience": {"services": ["mobile"], "regions": "north"}}, BadRequest),
        ({"variables": {"colour": "red"}}, BadRequest),
        ({"variables": {"status_link": "javascript:alert(1)"}}, BadRequest),
        ({"variables": {"workaround": "x" * 501}}, BadRequest),
        ({"template": "not_a_template"}, BadRequest),
        ({"phase": "final"}, BadRequest),
        ({"surprise": True}, BadRequest),
        ({"phase": "update"}, Conflict),
    ],
)
def test_bad_broadcast_requests_are_refused_with_a_reason(
    stack: Stack, payload: dict[str, Any], error: type[Exception]
) -> None:
    incident_id = open_incident()
    with pytest.raises(error) as raised:
        draft(incident_id, **payload)
    assert str(raised.value)


def test_an_incident_has_one_initial_broadcast_and_updates_take_no_audience(stack: Stack) -> None:
    incident_id = open_incident()
    draft(incident_id)
    with pytest.raises(Conflict):
        draft(incident_id)
    with pytest.raises(BadRequest, match="frozen audience"):
        draft(incident_id, phase="update", audience={"services": ["mobile"]})


def test_only_a_draft_is_approved_and_only_an_approved_broadcast_is_sent(stack: Stack) -> None:
    broadcast = draft(open_incident())
    with pytest.raises(Conflict):
        broadcasts.send(services(), broadcast.broadcast_id)
    broadcasts.approve(services(), broadcast.broadcast_id, actor="olivia")
    with pytest.raises(Conflict):
        broadcasts.approve(services(), broadcast.broadcast_id, actor="olivia")


def test_an_update_cannot_be_sent_before_the_initial_audience_is_frozen(stack: Stack) -> None:
    incident_id = open_incident()
    draft(incident_id)
    update = draft(incident_id, phase="update")
    broadcasts.approve(services(), update.broadcast_id, actor="olivia")
    with pytest.raises(Conflict, match="audience"):
        broadcasts.send(services(), update.broadcast_id)


def test_broadcast_reaches_each_customer_once_on_their_preferred_channel(
    stack: Stack, run_queues: Callable[..., Any]
) -> None:
    seed(12)
    broadcast = draft(open_incident())
    approve_and_send(broadcast)
    run_queues()
    final = broadcasts.get_broadcast(services().store, broadcast.broadcast_id)
    assert final.status is BroadcastStatus.SENT
    assert final.counts[Channel.SMS].planned == final.counts[Channel.SMS].sent == 6
    assert final.counts[Channel.EMAIL].planned == final.counts[Channel.EMAIL].sent == 6
    delivered = stack.delivered()
    phones = sorted(m["phone_number"] for m in delivered["sms"])
    assert phones == sorted(f"+1415555{i:04d}" for i in range(0, 12, 2))
    assert len(delivered["email"]) == 6


def test_updates_and_the_all_clear_reach_the_frozen_audience_only(
    stack: Stack, run_queues: Callable[..., Any]
) -> None:
    seed(4)
    incident_id = open_incident()
    approve_and_send(draft(incident_id))
    run_queues()
    # Joins after the initial notice: not part of this incident's audience.
    services().store.upsert_customer(customer(50))
    for phase in (Phase.UPDATE, Phase.RESOLVED):
        approve_and_send(draft(incident_id, phase=phase.value))
        run_queues()
    sms = [m["phone_number"] for m in stack.delivered()["sms"]]
    assert sorted(set(sms)) == sorted(f"+1415555{i:04d}" for i in (0, 2))
    assert len(sms) == 2 * 3
    assert all(
        b.status is BroadcastStatus.SENT
        for b in services().store.broadcasts_for_incident(incident_id)
    )


def test_a_repeated_planner_step_plans_nothing_twice(stack: Stack) -> None:
    seed(9)
    broadcast = draft(open_incident())
    broadcasts.approve(services(), broadcast.broadcast_id, actor="olivia")
    broadcasts.send(services(), broadcast.broadcast_id)
    store = services().store
    cursor_before = store.get_broadcast(broadcast.broadcast_id, consistent=True)
    assert cursor_before is not None
    broadcasts.plan_step(services(), broadcast.broadcast_id)
    # A crashed step that committed is retried: the cursor has moved, nothing is recounted.
    assert not store.commit_plan_page(
        broadcast.broadcast_id,
        expected_cursor=cursor_before.plan_cursor,
        next_cursor="END",
        planned={Channel.SMS: 5},
        unreachable=0,
        done=True,
    )
    after = store.get_broadcast(broadcast.broadcast_id, consistent=True)
    assert after is not None
    assert after.counts[Channel.SMS].planned + after.counts[Channel.EMAIL].planned == 9


def test_a_planner_step_writes_and_sends_on_several_threads(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib import queues, runtime
    from chalicelib.store import Store

    monkeypatch.setenv("PLAN_CONCURRENCY", "4")
    runtime.reset()
    seed(120)
    threads: set[str] = set()
    for owner, name in ((Store, "put_audience"), (queues, "send_json")):
        original = getattr(owner, name)

        def spy(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            threads.add(threading.current_thread().name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)
    broadcast = draft(open_incident())
    broadcasts.approve(services(), broadcast.broadcast_id, actor="oscar")
    broadcasts.send(services(), broadcast.broadcast_id)
    threads.clear()
    broadcasts.plan_step(services(), broadcast.broadcast_id)
    # 120 customers: 5 snapshot writes and 2 batches of 10 jobs, spread over the pool.
    assert len(threads) > 1
    assert threading.current_thread().name not in threads


def test_a_step_whose_send_fails_commits_nothing_and_its_retry_plans_everyone_once(
    stack: Stack, run_queues: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib import queues

    seed(120)
    incident_id = open_incident()
    broadcast = draft(incident_id)
    broadcasts.approve(services(), broadcast.broadcast_id, actor="oscar")
    store = services().store
    store.transition(
        broadcast.broadcast_id, BroadcastStatus.APPROVED, BroadcastStatus.SENDING, plan_touched=0
    )
    original = queues.send_json
    calls = [0]

    def flaky(queue: str, bodies: Any, **options: Any) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("SQS refused 10 messages")
        original(queue, bodies, **options)

    monkeypatch.setattr(queues, "send_json", flaky)
    with pytest.raises(RuntimeError, match="SQS refused"):
        broadcasts.plan_step(services(), broadcast.broadcast_id)
    stalled = store.get_broadcast(broadcast.broadcast_id, consistent=True)
    assert stalled is not None
    assert (stalled.plan_cursor, stalled.planning_done) == ("", False)
    assert sum(c.planned for c in stalled.counts.values()) == 0
    monkeypatch.setattr(queues, "send_json", original)
    broadcasts.plan_step(services(), broadcast.broadcast_id)
    run_queues()
    final = broadcasts.get_broadcast(store, broadcast.broadcast_id)
    assert final.status is BroadcastStatus.SENT
    assert sum(c.sent for c in final.counts.values()) == 120
    delivered = stack.delivered()
    phones = [m["phone_number"] for m in delivered["sms"]]
    assert len(phones) == len(set(phones)) == 60
    assert len(delivered["email"]) == 60
    snapshot = store.query_audience(incident_id, start_key=None, limit=200)
    assert len({c.customer_id for c in snapshot.items}) == 120


def test_sweep_restarts_a_stalled_plan_and_finishes_complete_broadcasts(
    stack: Stack, run_queues: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(3)
    broadcast = draft(open_incident())
    broadcasts.approve(services(), broadcast.broadcast_id, actor="olivia")
    # Mark it sending without a planner message, as if the message had been lost.
    services().store.transition(
        broadcast.broadcast_id, BroadcastStatus.APPROVED, BroadcastStatus.SENDING, plan_touched=0
    )
    assert broadcasts.sweep(services()) == {"finished": 0, "resumed": 1}
    run_queues()
    assert broadcasts.get_broadcast(services().store, broadcast.broadcast_id).status is (
        BroadcastStatus.SENT
    )


# -- second approval, dry run, kill switch ---------------------------------------------------


@pytest.fixture
def threshold_two(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib import runtime

    monkeypatch.setenv("SECOND_APPROVAL_THRESHOLD", "2")
    runtime.reset()


def test_above_the_threshold_the_author_cannot_approve_their_own_broadcast(
    stack: Stack, threshold_two: None
) -> None:
    seed(3)
    broadcast = draft(open_incident())
    with pytest.raises(Forbidden, match=r"reaches 3 customers .* someone other than its author"):
        broadcasts.approve(services(), broadcast.broadcast_id, actor="olivia")
    assert broadcasts.get_broadcast(services().store, broadcast.broadcast_id).status is (
        BroadcastStatus.DRAFT
    )
    approved = broadcasts.approve(services(), broadcast.broadcast_id, actor="oscar")
    assert (approved.status, approved.approved_by) == (BroadcastStatus.APPROVED, "oscar")


def test_up_to_the_threshold_the_author_may_approve(stack: Stack, threshold_two: None) -> None:
    seed(2)
    broadcast = draft(open_incident())
    assert broadcasts.approve(services(), broadcast.broadcast_id, actor="olivia").approved_by == (
        "olivia"
    )


def test_a_status_source_policy_approves_its_own_draft_at_any_size(
    stack: Stack, threshold_two: None
) -> None:
    seed(3)
    broadcast = broadcasts.create_broadcast(
        services(), {"incident_id": open_incident()}, actor="source:github"
    )
    approved = broadcasts.approve(
        services(), broadcast.broadcast_id, actor="source:github", automated=True
    )
    assert approved.status is BroadcastStatus.APPROVED


def test_a_dry_run_renders_every_channel_and_locale_and_sends_nothing(stack: Stack) -> None:
    seed(4)
    services().store.upsert_customer(customer(9, locale="fr-CA", channels=("sms",)))
    broadcast = draft(open_incident(), variables={"workaround": "Use Wi-Fi calling"})
    report = broadcasts.dry_run(services(), broadcast.broadcast_id)
    assert report["recipients"] == {
        "total": 5,
        "unreachable": 0,
        "by_channel": {"sms": 3, "email": 2},
    }
    combos = {(n["channel"], n["locale"]): n for n in report["notices"]}
    assert set(combos) == {("sms", "en"), ("email", "en"), ("sms", "fr-CA")}
    assert combos[("sms", "en")]["recipients"] == 2
    assert "travaillons" in combos[("sms", "fr-CA")]["text"]
    per_text = {k: v["segments"]["segments"] for k, v in combos.items() if k[0] == "sms"}
    assert report["sms_segments"] == 2 * per_text[("sms", "en")] + per_text[("sms", "fr-CA")]
    assert report["errors"] == 0
    assert stack.delivered() == {"sms": [], "email": []}
    assert broadcasts.get_broadcast(services().store, broadcast.broadcast_id).status is (
        BroadcastStatus.DRAFT
    )


def test_the_kill_switch_stops_a_sending_broadcast_whose_jobs_are_queued(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    seed(4)
    broadcast = draft(open_incident())
    approve_and_send(broadcast)
    # Planned: the delivery jobs wait on their queue, as when a worker is mid-way.
    broadcasts.plan_step(services(), broadcast.broadcast_id)
    assert broadcasts.get_broadcast(services().store, broadcast.broadcast_id).planning_done
    halted = broadcasts.halt(services(), broadcast.broadcast_id, actor="oscar")
    assert (halted.status, halted.halted_by) == (BroadcastStatus.HALTED, "oscar")
    # The workers start only now: started with the test, they could send before the halt.
    request.getfixturevalue("run_queues")()
    assert stack.delivered() == {"sms": [], "email": []}
    final = broadcasts.get_broadcast(services().store, broadcast.broadcast_id)
    assert final.status is BroadcastStatus.HALTED
    assert sum(c.sent for c in final.counts.values()) == 0
    with pytest.raises(Conflict, match="only an approved or sending one"):
        broadcasts.halt(services(), broadcast.broadcast_id, actor="oscar")
    with pytest.raises(Conflict):
        broadcasts.send(services(), broadcast.broadcast_id)
