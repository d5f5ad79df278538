"""Small builders for test data; every record goes through the real validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib.customers import validate_customer
from chalicelib.domain import Customer


def customer_record(
    index: int,
    *,
    services: Sequence[tuple[str, str, str]] = (("mobile", "north", "10115"),),
    channels: Sequence[str] = ("sms", "email"),
    segments: Sequence[str] = (),
    locale: str = "en",
    name: str | None = None,
) -> dict[str, Any]:
    return {
        "customer_id": f"c{index:04d}",
        "name": name or f"Kim Tester{index}",
        "phone": f"+1415555{index:04d}",
        "email": f"kim{index}@example.com",
        "channels": list(channels),
        "locale": locale,
        "time_zone": "Europe/Berlin",
        "services": [{"service": s, "region": r, "postal_code": p} for s, r, p in services],
        "segments": list(segments),
    }


def customer(index: int, **options: Any) -> Customer:
    return validate_customer(customer_record(index, **options))
