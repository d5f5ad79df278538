"""A demo data set: customers across services and regions, with contacts and preferences.

Deterministic for a given seed, so a demo and a test see the same people. All phone
numbers are in ranges reserved for drama and fiction; all addresses are @example.com.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

SERVICES = ("mobile", "broadband", "tv")
REGIONS = {
    "north": ("10115", "10117", "10119"),
    "south": ("80331", "80333", "80335"),
    "east": ("01067", "01069"),
    "west": ("50667", "50668", "50670"),
    "central": ("60311", "60313"),
}
FIRST = (
    "Alex",
    "Sam",
    "Maria",
    "Jonas",
    "Amélie",
    "Lucía",
    "Noah",
    "Priya",
    "Chen",
    "Fatima",
    "Oliver",
    "Emma",
    "Mateo",
    "Léa",
    "Ravi",
    "Sofia",
    "Liam",
    "Aisha",
    "Hugo",
    "Mia",
)
LAST = (
    "Schmidt",
    "Garcia",
    "Nguyen",
    "Martin",
    "Okafor",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Silva",
    "Jensen",
    "Yilmaz",
    "Novak",
    "Brown",
    "Moreau",
    "Haddad",
)
LOCALES = (
    ("en", "America/New_York"),
    ("en", "Europe/London"),
    ("fr", "Europe/Paris"),
    ("fr-CA", "America/Toronto"),
    ("es", "Europe/Madrid"),
    ("en", "Europe/Berlin"),
)
CHANNEL_ORDERS = (
    ["sms", "email"],
    ["email", "sms"],
    ["sms"],
    ["email"],
    ["social", "sms", "email"],
)
SEGMENTS = ("business", "vip", "residential")


def _phone(index: int) -> str:
    # +1 (NXX) 555-01XX is the fiction range; spread over area codes to get enough numbers.
    area = (201, 202, 212, 312, 415, 613)[index // 100 % 6]
    return f"+1{area}55501{index % 100:02d}"


def demo_customers(count: int = 300, seed: int = 7) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for index in range(count):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        locale, zone = rng.choice(LOCALES)
        channels = list(rng.choice(CHANNEL_ORDERS))
        services = []
        for service in rng.sample(SERVICES, k=rng.choice((1, 1, 2, 3))):
            region = rng.choice(list(REGIONS))
            services.append(
                {"service": service, "region": region, "postal_code": rng.choice(REGIONS[region])}
            )
        record: dict[str, Any] = {
            "customer_id": f"cust-{index:05d}",
            "name": name,
            # 600 distinct fictional numbers; larger sets (benchmarks) share them.
            "phone": _phone(index % 600),
            "email": f"customer{index:05d}@example.com",
            "channels": channels,
            "locale": locale,
            "time_zone": zone,
            "services": services,
            "segments": [rng.choice(SEGMENTS)],
        }
        if "social" in channels:
            record["x_handle"] = f"fw_demo_{index:05d}"
        yield record
