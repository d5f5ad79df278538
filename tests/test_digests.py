"""The frequency cap on the local stack: one notice at once, then one digest of the rest of
the window, exactly once, however many notices arrive together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib import broadcasts, customer_notices, deliveries, digests, incidents
from chalicelib.deliveries import BatchContext, DeliveryJob, Outcome, batch_gates
from chalicelib.digests import DigestJob, Digests
from chalicelib.domain import BroadcastStatus, Channel
from chalicelib.runtime import reset, services
from chalicelib.send_rates import Pacer, SendRates

WINDOW = 4


@pytest.fixture
def capped(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_WINDOW_SECONDS", str(WINDOW))
    reset()


def outage(title: str, *, send: bool = True) -> str:
    """An incident and its approved initial broadcast; sent (to the planner) when `send`."""
    incident = incidents.create_incident(
        services().store, {"title": title, "services": ["mobile"], "regions": ["north"]}
    )
    draft = broadcasts.create_broadcast(
        services(), {"incident_id": incident.incident_id, "channels": ["sms"]}, actor="olivia"
    )
    broadcasts.approve(services(), draft.broadcast_id, actor="olivia")
    if send:
        broadcasts.send(services(), draft.broadcast_id)
    else:
        # Sending, without the planner: the test hands the jobs to workers itself.
        services().store.transition(
            draft.broadcast_id, BroadcastStatus.APPROVED, BroadcastStatus.SENDING
        )
    return draft.broadcast_id


def texts_to(stack: Stack, phone: str | None) -> list[str]:
    return [m["message"] for m in stack.delivered()["sms"] if m["phone_number"] == phone]


def test_notices_inside_the_window_reach_the_customer_as_one_digest_after_the_first(
    capped: None, stack: Stack, run_queues: Callable[..., Any]
) -> None:
    kim = customer(0, channels=("sms",))
    services().store.upsert_customer(kim)
    titles = {outage(title): title for title in ("Mobile data", "Voicemail", "Billing portal")}
    run_queues(timeout=90)
    texts = texts_to(stack, kim.phone)
    assert len(texts) == 2
    digest = texts[1]
    assert digest.startswith(f"{services().settings.brand}: 2 updates since our last message.")
    # The first went on its own; the digest names the other two.
    named: dict[tuple[int, int], bool] = {}
    for broadcast_id, title in titles.items():
        report = broadcasts.reconcile(services(), broadcast_id)
        assert (report["gaps"], report["status"]) == ([], "sent")
        named[(report["sent"], report["digested"])] = named.get(
            (report["sent"], report["digested"]), True
        ) and (title in digest) == bool(report["digested"])
    assert named == {(1, 0): True, (0, 1): True}
    ledger = services().store.deliveries_for_customer(kim.customer_id, start_key=None, limit=50)
    rows = [r for r in ledger.items if str(r["broadcast_id"]).startswith("dg_")]
    assert [r["status"] for r in rows] == ["sent"]


def test_concurrent_notices_for_one_customer_make_one_send_and_one_digest(
    capped: None, stack: Stack
) -> None:
    kim = customer(0, channels=("sms",))
    services().store.upsert_customer(kim)
    ids = [outage(f"Outage {n}", send=False) for n in range(8)]
    start = threading.Barrier(len(ids))
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def deliver(broadcast_id: str) -> None:
        job = DeliveryJob(broadcast_id, kim, Channel.SMS)
        context = BatchContext(services(), batch_gates(services(), [job]))
        start.wait()
        outcome = deliveries.deliver(job, context)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=deliver, args=(b,)) for b in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == sorted([Outcome.SENT] + [Outcome.DIGESTED] * 7)
    assert len(texts_to(stack, kim.phone)) == 1

    # Two workers pick up the window's digest job at once, after the window: one sends.
    table = Digests(services().settings.names, window_seconds=WINDOW)
    windows = {table.window_of(kim.customer_id, b) for b in ids[1:]} | {
        table.window_of(kim.customer_id, ids[0])
    }
    joined = sorted(w for w in windows if w is not None)
    assert len(joined) == 1
    job = DigestJob(kim.customer_id, joined[0])
    later = datetime.fromtimestamp(job.due + 1, UTC)
    rates = SendRates(services().settings.names, limits=services().settings.send_rates)
    results: list[Outcome] = []
    both = threading.Barrier(2)

    def send_digest() -> None:
        both.wait()
        result = customer_notices.deliver_digest(services(), job, now=later, pacer=Pacer(rates, {}))
        with lock:
            results.append(result.outcome)

    pair = [threading.Thread(target=send_digest) for _ in range(2)]
    for thread in pair:
        thread.start()
    for thread in pair:
        thread.join(60)
    # The other found the digest sent, or still being sent (and would retry).
    assert results.count(Outcome.SENT) == 1
    assert set(results) - {Outcome.SENT} <= {Outcome.DUPLICATE, Outcome.RETRY}
    again = customer_notices.deliver_digest(services(), job, now=later, pacer=Pacer(rates, {}))
    assert again.outcome is Outcome.DUPLICATE
    texts = texts_to(stack, kim.phone)
    assert len(texts) == 2
    assert texts[1].startswith(f"{services().settings.brand}: 7 updates since our last message.")
    assert table.pending(job) == {}


def test_a_digest_job_lost_after_joining_is_queued_again_by_the_retry(
    capped: None, stack: Stack, monkeypatch: pytest.MonkeyPatch, run_queues: Callable[..., Any]
) -> None:
    real_enqueue = digests.enqueue
    lost: list[DigestJob] = []

    def lose_first(names: Any, job: DigestJob, now: float) -> None:
        if not lost:
            lost.append(job)
            raise RuntimeError("worker killed after joining the digest")
        real_enqueue(names, job, now)

    monkeypatch.setattr(digests, "enqueue", lose_first)
    kim = customer(0, channels=("sms",))
    services().store.upsert_customer(kim)
    outage("Mobile data down")
    outage("Voicemail down")
    run_queues(timeout=90)
    assert lost
    texts = texts_to(stack, kim.phone)
    assert len(texts) == 2
    assert texts[1].startswith(f"{services().settings.brand}: 1 update since our last message.")


def test_without_a_window_every_notice_goes_on_its_own(
    stack: Stack, run_queues: Callable[..., Any]
) -> None:
    kim = customer(0, channels=("sms",))
    services().store.upsert_customer(kim)
    outage("Mobile data down")
    outage("Voicemail down")
    run_queues()
    assert len(texts_to(stack, kim.phone)) == 2


def test_a_digest_renders_for_every_channel_and_escapes_titles_in_html() -> None:
    entries = [
        {
            "title": "Fibre <b>down</b>",
            "services": "fibre",
            "regions": "harbour",
            "status": "identified",
            "phase": "initial",
            "status_link": "https://status.example/1",
        },
        {
            "title": "Voicemail",
            "services": "mobile",
            "regions": "",
            "status": "resolved",
            "phase": "resolved",
            "status_link": "",
        },
    ]
    sms = digests.render(
        Channel.SMS, "en", entries, first_name="Kim", brand="Acme", unsubscribe_url=None
    )
    assert sms.text.startswith("Acme: 2 updates since our last message. 1) Fibre <b>down</b>:")
    assert "https://status.example/1" in sms.text
    assert sms.text.endswith("Reply STOP to opt out.")
    email = digests.render(
        Channel.EMAIL,
        "en",
        entries,
        first_name="Kim",
        brand="Acme",
        unsubscribe_url="https://acme.example/unsubscribe?t=1",
    )
    assert email.subject == "2 service updates from Acme"
    assert "2. Voicemail (mobile): back to normal." in email.text
    assert "https://acme.example/unsubscribe?t=1" in email.text
    assert email.html is not None
    assert "Fibre &lt;b&gt;down&lt;/b&gt;" in email.html
    assert "<b>down</b>" not in email.html
