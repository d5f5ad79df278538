"""The nouns of Forewarn: customers, incidents and broadcasts, as plain data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chalicelib.errors import BadRequest, Conflict


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    SOCIAL = "social"


class IncidentStatus(StrEnum):
    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MONITORING = "monitoring"
    RESOLVED = "resolved"


class Phase(StrEnum):
    INITIAL = "initial"
    UPDATE = "update"
    RESOLVED = "resolved"


class BroadcastStatus(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    SENDING = "sending"
    SENT = "sent"
    # Stopped by a person (the kill switch): nothing more goes out, and it never resumes.
    HALTED = "halted"


# The channels a worker can deliver to one customer today; social posts to the public
# brand account are a broadcast-level action, not a per-customer delivery.
DELIVERABLE_CHANNELS = (Channel.SMS, Channel.EMAIL)

INCIDENT_ORDER = list(IncidentStatus)


def utcnow() -> datetime:
    return datetime.now(UTC)


def zone(time_zone: str) -> tzinfo:
    """The customer's zone; UTC for one this runtime does not know, so that a customer
    record with an odd zone still gets its notice (in UTC) rather than none."""
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


E = TypeVar("E", bound=StrEnum)


def parse_enum(kind: type[E], value: object, field_name: str) -> E:
    try:
        return kind(str(value))
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise BadRequest(f"{field_name} must be one of: {allowed}") from None


@dataclass(frozen=True)
class Subscription:
    """One service a customer takes, at one place."""

    service: str
    region: str
    postal_code: str


@dataclass(frozen=True)
class Customer:
    customer_id: str
    name: str
    phone: str | None
    email: str | None
    x_handle: str | None
    channels: tuple[Channel, ...]
    locale: str
    time_zone: str
    services: tuple[Subscription, ...]
    segments: tuple[str, ...] = ()

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.strip() else self.name

    def contact(self, channel: Channel) -> str | None:
        return {
            Channel.SMS: self.phone,
            Channel.EMAIL: self.email,
            Channel.SOCIAL: self.x_handle,
        }[channel]

    def route(self, offered: Iterable[Channel]) -> tuple[Channel, ...]:
        """The channels that may carry a notice to this customer, most preferred first: those
        the notice offers that can reach them. Each one after the first is a fallback."""
        usable = set(offered) & set(DELIVERABLE_CHANNELS)
        return tuple(c for c in self.channels if c in usable and self.contact(c))

    def primary_channel(self, offered: Iterable[Channel]) -> Channel | None:
        route = self.route(offered)
        return route[0] if route else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "name": self.name,
            "phone": self.phone,
            "email": self.email,
            "x_handle": self.x_handle,
            "channels": [c.value for c in self.channels],
            "locale": self.locale,
            "time_zone": self.time_zone,
            "services": [
                {"service": s.service, "region": s.region, "postal_code": s.postal_code}
                for s in self.services
            ],
            "segments": list(self.segments),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Customer:
        """Rebuild a customer that was validated before it was stored."""
        return cls(
            customer_id=str(data["customer_id"]),
            name=str(data["name"]),
            phone=data.get("phone") or None,
            email=data.get("email") or None,
            x_handle=data.get("x_handle") or None,
            channels=tuple(Channel(c) for c in data.get("channels", ())),
            locale=str(data.get("locale") or "en"),
            time_zone=str(data.get("time_zone") or "UTC"),
            services=tuple(
                Subscription(str(s["service"]), str(s["region"]), str(s["postal_code"]))
                for s in data.get("services", ())
            ),
            segments=tuple(str(s) for s in data.get("segments", ())),
        )


@dataclass(frozen=True)
class AudienceSelector:
    """Who a broadcast is for: every customer of one of `services` that matches the rest, or,
    with `lanes`, every customer with an outbound parcel on its way on that carrier lane."""

    services: tuple[str, ...]
    regions: tuple[str, ...] = ()
    postal_prefixes: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    lanes: tuple[str, ...] = ()

    def matches(self, subscription: Subscription, segments: Iterable[str]) -> bool:
        return (
            subscription.service in self.services
            and (not self.regions or subscription.region in self.regions)
            and (
                not self.postal_prefixes
                or subscription.postal_code.startswith(self.postal_prefixes)
            )
            and (not self.segments or bool(set(self.segments) & set(segments)))
        )

    def to_dict(self) -> dict[str, list[str]]:
        found = {
            "services": list(self.services),
            "regions": list(self.regions),
            "postal_prefixes": list(self.postal_prefixes),
            "segments": list(self.segments),
        }
        if self.lanes:
            found["lanes"] = list(self.lanes)
        return found

    @classmethod
    def from_dict(cls, data: object) -> AudienceSelector:
        if not isinstance(data, Mapping):
            raise BadRequest("audience must be an object with a non-empty 'services' list")

        def strings(key: str) -> tuple[str, ...]:
            value = data.get(key) or []
            if not isinstance(value, list) or not all(
                isinstance(v, str) and v.strip() for v in value
            ):
                raise BadRequest(f"audience.{key} must be a list of non-empty strings")
            if len(value) > 100:
                raise BadRequest(f"audience.{key} may list at most 100 values")
            return tuple(dict.fromkeys(v.strip() for v in value))

        lanes = strings("lanes")
        if lanes:
            # A customer with parcels on two lanes would need a lookup per page to be
            # counted once; one lane per broadcast keeps every page self-contained.
            others = ("services", "regions", "postal_prefixes", "segments")
            if len(lanes) > 1 or any(data.get(k) for k in others):
                raise BadRequest("audience.lanes names one lane and nothing else")
            return cls((), lanes=lanes)
        services = strings("services")
        if not services:
            raise BadRequest("audience.services must name at least one service")
        return cls(services, strings("regions"), strings("postal_prefixes"), strings("segments"))


@dataclass(frozen=True)
class Incident:
    incident_id: str
    title: str
    status: IncidentStatus
    services: tuple[str, ...]
    regions: tuple[str, ...]
    created_at: str
    updated_at: str
    next_update_due: str | None = None
    audience_frozen: bool = False
    # When the first sign of it came (an emerging issue's first post, a status source's
    # first update); None: the incident itself was the first sign.
    first_signal_at: str | None = None

    @property
    def signalled_at(self) -> str:
        return self.first_signal_at or self.created_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "title": self.title,
            "status": self.status.value,
            "services": list(self.services),
            "regions": list(self.regions),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "next_update_due": self.next_update_due,
            "audience_frozen": self.audience_frozen,
            "first_signal_at": self.first_signal_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Incident:
        return cls(
            incident_id=str(data["incident_id"]),
            title=str(data["title"]),
            status=IncidentStatus(data["status"]),
            services=tuple(data.get("services", ())),
            regions=tuple(data.get("regions", ())),
            created_at=str(data["created_at"]),
            updated_at=str(data["updated_at"]),
            next_update_due=data.get("next_update_due"),
            audience_frozen=bool(data.get("audience_frozen", False)),
            first_signal_at=data.get("first_signal_at"),
        )

    def advance(self, status: IncidentStatus, now: datetime) -> Incident:
        """Incidents move forward only: investigating → identified → monitoring → resolved."""
        if INCIDENT_ORDER.index(status) < INCIDENT_ORDER.index(self.status):
            raise Conflict(f"incident is {self.status.value}; it cannot go back to {status.value}")
        if self.status is IncidentStatus.RESOLVED and status is IncidentStatus.RESOLVED:
            raise Conflict("incident is already resolved")
        return replace(self, status=status, updated_at=iso(now))


@dataclass
class ChannelCounts:
    planned: int = 0
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    # Failed permanently (or suppressed) here and handed to the customer's next channel,
    # whose `planned` grew by one in the same write.
    fell_back: int = 0
    # Held back by the frequency cap: the customer's next digest carries it.
    digested: int = 0

    @property
    def settled(self) -> int:
        return self.sent + self.failed + self.suppressed + self.fell_back + self.digested


COUNT_FIELDS = ("planned", "sent", "failed", "suppressed", "fell_back", "digested")


@dataclass
class Broadcast:
    broadcast_id: str
    incident_id: str
    phase: Phase
    template: str
    channels: tuple[Channel, ...]
    audience: AudienceSelector | None
    variables: dict[str, str]
    status: BroadcastStatus
    created_by: str
    created_at: str
    approved_by: str | None = None
    approved_at: str | None = None
    sent_at: str | None = None
    # When its first notice went out (initial broadcasts; the lead time ends there).
    first_sent_at: str | None = None
    halted_by: str | None = None
    halted_at: str | None = None
    # Also post the social text on the brand's X account (see public_posts).
    public_post: bool = False
    public_post_id: str | None = None
    public_post_error: str | None = None
    source_update: dict[str, str] | None = None
    planning_done: bool = False
    plan_cursor: str = ""
    plan_touched: int = 0
    unreachable: int = 0
    # Hold each recipient's notice while quiet hours last where they are.
    hold_quiet_hours: bool = False
    # Notices the planner held for quiet hours.
    deferred: int = 0
    counts: dict[Channel, ChannelCounts] = field(default_factory=dict)

    def total(self) -> ChannelCounts:
        """Every channel's counts added up."""
        return ChannelCounts(
            **{name: sum(getattr(c, name) for c in self.counts.values()) for name in COUNT_FIELDS}
        )

    def is_complete(self) -> bool:
        return self.planning_done and all(c.settled >= c.planned for c in self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "broadcast_id": self.broadcast_id,
            "incident_id": self.incident_id,
            "phase": self.phase.value,
            "template": self.template,
            "channels": [c.value for c in self.channels],
            "audience": self.audience.to_dict() if self.audience else None,
            "variables": dict(self.variables),
            "status": self.status.value,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "approved_by": self.approved_by,
            "approved_at": self.approved_at,
            "sent_at": self.sent_at,
            "first_sent_at": self.first_sent_at,
            "halted_by": self.halted_by,
            "halted_at": self.halted_at,
            "public_post": self.public_post,
            "public_post_id": self.public_post_id,
            "public_post_error": self.public_post_error,
            "source_update": dict(self.source_update) if self.source_update else None,
            "planning_done": self.planning_done,
            "unreachable": self.unreachable,
            "hold_quiet_hours": self.hold_quiet_hours,
            "deferred": self.deferred,
            "counts": {
                channel.value: {name: getattr(counts, name) for name in COUNT_FIELDS}
                for channel, counts in self.counts.items()
            },
        }
