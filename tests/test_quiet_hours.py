"""Quiet hours in the recipient's own zone: when a window holds a notice, and until when."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from chalicelib.quiet_hours import QuietHours

NIGHT = QuietHours(time(21, 0), time(8, 0))


def utc(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


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
