"""Quiet hours: a nightly window, in each recipient's own time zone, when notices that can
wait do wait. `QUIET_HOURS=21:00-08:00` sets it per stage; unset, there is none.

Parcel notices wait for the window's end; outage broadcasts do not (a customer would rather
know at night that their line is down than find out in the morning).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from chalicelib.domain import zone

_WINDOW = re.compile(r"^\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-3]):([0-5]\d)\s*$")


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str | None) -> QuietHours | None:
        if not text or not text.strip():
            return None
        match = _WINDOW.match(text)
        if match is None:
            raise ValueError(f"QUIET_HOURS must look like 21:00-08:00, not {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if (h1, m1) == (h2, m2):
            raise ValueError("QUIET_HOURS must not start and end at the same time")
        return cls(time(h1, m1), time(h2, m2))

    def ends_after(self, now: datetime, time_zone: str) -> datetime | None:
        """When the window `now` falls in ends (UTC), or None when `now` is not quiet there.
        An unknown zone counts as UTC rather than holding the notice forever."""
        where = zone(time_zone)
        local = now.astimezone(where)
        clock = local.time().replace(tzinfo=None)
        if self.start < self.end:
            quiet, day = self.start <= clock < self.end, local.date()
        else:  # across midnight: 21:00-08:00
            quiet = clock >= self.start or clock < self.end
            day = local.date() + timedelta(days=1) if clock >= self.start else local.date()
        if not quiet:
            return None
        return datetime.combine(day, self.end, tzinfo=where).astimezone(UTC)
