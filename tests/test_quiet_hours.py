"""Quiet hours in the recipient's own zone: when a window holds a notice, and until when."""

from __future__ import annotations

import time as time_module
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, time
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib.errors import BadRequest
from chalicelib.quiet_hours import QuietHours
from chalicelib.runtime import reset

NIGHT = QuietHours(time(21, 0), time(8, 0))


def utc(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def test_a_window_parses_and_nonsense_is_refused_with_the_expected_form() -> None:
    assert QuietHours.parse(" 21:00 - 08:00 ") == NIGHT
    assert QuietHours.parse("") is None
    assert QuietHours.parse(None) is None
    for bad in ("21-8", "25:00-08:00", "21:00", "08:00-08:00"):
        with pytest.raises(ValueError, match="QUIET_HOURS"):
            QuietHours.parse(bad)


@pytest.mark.parametrize(
    ("now", "zone", "ends"),
    [
        (utc(23, 22, 30), "Europe/Berlin", utc(24, 7)),  # 23:30 there: until 08:00 next day
        (utc(24, 1, 0), "Europe/Berlin", utc(24, 7)),  # 02:00 there: until 08:00 that day
        (utc(23, 19, 59), "Europe/Berlin", None),  # 20:59 there: not yet quiet
        (utc(24, 7, 0), "Europe/Berlin", None),  # 08:00 there: quiet is over
        (utc(24, 3, 0), "America/Los_Angeles", None),  # 19:00 the evening before there
        (utc(24, 6, 0), "America/Los_Angeles", utc(24, 16)),  # 22:00 there: until 08:00 PST
    ],
)
def test_the_window_is_read_in_the_recipients_zone(
    now: datetime, zone: str, ends: datetime | None
) -> None:
    assert NIGHT.ends_after(now, zone) == ends


def test_a_window_within_one_day_and_an_unknown_zone_read_as_utc() -> None:
    lunch = QuietHours(time(12, 0), time(13, 30))
    assert lunch.ends_after(utc(23, 12, 15), "Nowhere/Atlantis") == utc(23, 13, 30)
    assert lunch.ends_after(utc(23, 13, 30), "UTC") is None


def test_the_end_of_a_window_over_a_clock_change_is_local_eight_oclock() -> None:
    # Berlin leaves summer time on 25 October 2026: 08:00 there is 07:00 UTC, not 06:00.
    assert NIGHT.ends_after(utc(25, 0, 30, month=10), "Europe/Berlin") == utc(25, 7, month=10)


# --- broadcasts ------------------------------------------------------------------------------


def draft(template: str, quiet_hours: str | None = None) -> Any:
    from chalicelib import broadcasts, incidents
    from chalicelib.runtime import services

    incident = incidents.create_incident(
        services().store, {"title": "Outage", "services": ["mobile"], "regions": ["north"]}
    )
    payload: dict[str, Any] = {"incident_id": incident.incident_id, "template": template}
    if quiet_hours is not None:
        payload["quiet_hours"] = quiet_hours
    return broadcasts.create_broadcast(services(), payload, actor="olivia")


def test_outage_notices_go_out_at_night_and_other_kinds_wait_by_default(stack: Stack) -> None:
    assert not draft("outage_initial").hold_quiet_hours
    assert draft("maintenance_headsup").hold_quiet_hours
    assert draft("outage_initial", quiet_hours="hold").hold_quiet_hours


def test_only_the_stages_policy_lets_a_kind_go_out_inside_quiet_hours(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BadRequest, match="maintenance_headsup notices wait for quiet hours"):
        draft("maintenance_headsup", quiet_hours="send")
    with pytest.raises(BadRequest, match='"hold" or "send"'):
        draft("outage_initial", quiet_hours="later")
    monkeypatch.setenv("QUIET_HOURS_OVERRIDE", "outage_initial")
    reset()
    assert draft("outage_resolved").hold_quiet_hours


def test_a_held_notice_waits_until_the_recipients_quiet_hours_end_then_goes_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, run_queues: Callable[..., Any]
) -> None:
    from test_deliveries import send_broadcast

    from chalicelib import broadcasts, deliveries
    from chalicelib.runtime import services

    # A clock the planner and the workers share, 10 s before quiet hours end in UTC.
    offset = utc(24, 5, 59, second=50) - datetime.now(UTC)
    monkeypatch.setattr(broadcasts, "utcnow", lambda: datetime.now(UTC) + offset)
    monkeypatch.setattr(deliveries, "utcnow", lambda: datetime.now(UTC) + offset)
    monkeypatch.setenv("QUIET_HOURS", "00:00-06:00")
    monkeypatch.setenv("QUIET_HOURS_OVERRIDE", "")
    reset()
    asleep = replace(customer(0, channels=("sms",)), time_zone="UTC")
    awake = replace(customer(1, channels=("sms",)), time_zone="Asia/Tokyo")  # 15:00 there
    broadcast_id = send_broadcast([asleep, awake], ["sms"])
    deadline = time_module.monotonic() + 8
    while time_module.monotonic() < deadline:
        report = broadcasts.reconcile(services(), broadcast_id)
        if report["sent"]:
            break
        time_module.sleep(0.2)
    assert (report["sent"], report["deferred"], report["waiting"]) == (1, 1, 0)
    assert [m["phone_number"] for m in stack.delivered()["sms"]] == [awake.phone]

    run_queues(timeout=60)
    report = broadcasts.reconcile(services(), broadcast_id)
    assert (report["sent"], report["deferred"], report["gaps"]) == (2, 0, [])
    sent_to = [m["phone_number"] for m in stack.delivered()["sms"]]
    assert (len(sent_to), set(sent_to)) == (2, {asleep.phone, awake.phone})
    held = [d for d in services().store.deliveries(broadcast_id) if d.get("held")]
    assert [d["customer_id"] for d in held] == [asleep.customer_id]
