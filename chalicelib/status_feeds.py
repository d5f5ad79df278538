"""Upstream status sources as one model, and what to do when they change. Pure: no AWS, no HTTP.

Four wire formats become `StatusIncident`s:

* Statuspage's public API v2 (`/api/v2/summary.json`, `/api/v2/incidents.json`,
  `/api/v2/scheduled-maintenances.json`): incidents with `incident_updates[]` (each with
  `display_at` and `affected_components[]`), components, scheduled maintenances;
* Statuspage's subscriber webhook body: `{"incident": {...}}` or `{"component_update": {...}}`
  (with `meta` and `page`; no type field, so the key present says which);
* RSS 2.0 and Atom feeds (feedparser, imported only when a feed is parsed). An entry is an
  incident; its current text is its one update, whose status is read from the words
  (`[RESOLVED]`, `Resolved -`, `operating normally`, `Monitoring`, `Identified`). Feeds that
  post every update as a new entry (AWS Health: `#sns-us-east-1_1642200240`) group entries
  with `group_pattern`, a regular expression whose first group names the event;
* Forewarn's own signed webhook body:

      {"incident": {"id": "db-1", "name": "Database failover", "status": "identified",
                    "impact": "major", "components": ["db-eu"], "url": "https://...",
                    "updates": [{"id": "u1", "status": "investigating", "body": "...",
                                 "display_at": "2024-03-01T10:00:00Z", "components": []}],
                    "scheduled_for": null, "scheduled_until": null}}

Change detection (`detect`) compares one incident with what was already done for it
(`IncidentState`) and returns the actions still owed, in order. Nothing here has side effects,
so the same function drives the scheduled poller, the webhooks and the replay benchmark.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from chalicelib.errors import BadRequest

IMPACTS = ("none", "minor", "major", "critical")
LIVE_STATUSES = ("investigating", "identified", "monitoring")
INCIDENT_STATUSES = (*LIVE_STATUSES, "resolved", "postmortem")
MAINTENANCE_STATUSES = ("scheduled", "in_progress", "verifying", "completed")
COMPONENT_STATUSES = (
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
)
MAINTENANCE_IMPACT = "maintenance"
MAX_TEXT = 5000


class StatusFormatError(BadRequest):
    """A payload that does not follow the format it claims; the message names the field."""

    code = "bad_status_payload"


# -- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentChange:
    component_id: str
    name: str
    old_status: str | None = None
    new_status: str | None = None


@dataclass(frozen=True)
class Component:
    component_id: str
    name: str
    status: str | None = None


@dataclass(frozen=True)
class StatusUpdate:
    update_id: str
    status: str
    body: str
    display_at: datetime
    components: tuple[ComponentChange, ...] = ()


@dataclass(frozen=True)
class StatusIncident:
    source_incident_id: str
    name: str
    status: str
    impact: str
    updates: tuple[StatusUpdate, ...]
    components: tuple[Component, ...] = ()
    scheduled_for: datetime | None = None
    scheduled_until: datetime | None = None
    shortlink: str | None = None
    # Statuspage marks incidents written up after the fact; nobody can be warned of those.
    backfilled: bool = False

    @property
    def is_maintenance(self) -> bool:
        return self.scheduled_for is not None or self.impact == MAINTENANCE_IMPACT

    def component_keys(self) -> set[str]:
        """Ids and names (lower-cased) of every component the incident or an update names."""
        keys: set[str] = set()
        for component in self.components:
            keys.update(_keys(component.component_id, component.name))
        for update in self.updates:
            for change in update.components:
                keys.update(_keys(change.component_id, change.name))
        return keys

    def fingerprint(self) -> str:
        """Changes whenever anything detection looks at changes."""
        data = json.dumps(to_jsonable(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()[:20]


def _keys(*values: str) -> set[str]:
    return {v.strip().lower() for v in values if v and v.strip()}


@dataclass(frozen=True)
class ParsedFeed:
    """What one fetch or delivery held. `problems` name the items skipped as malformed, so one
    bad incident is reported without hiding the others."""

    incidents: tuple[StatusIncident, ...] = ()
    components: tuple[Component, ...] = ()
    problems: tuple[str, ...] = ()


# -- JSON helpers ----------------------------------------------------------------------------


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise StatusFormatError(f"{where}: expected a JSON object, got {_kind(value)}")
    return value


def _list(value: object, where: str, *, optional: bool = True) -> list[Any]:
    if value is None and optional:
        return []
    if not isinstance(value, list):
        raise StatusFormatError(f"{where}: expected a list, got {_kind(value)}")
    return value


def _str(data: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> str:
    value = data.get(key)
    if value is None and optional:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (not optional and not value.strip()):
        raise StatusFormatError(f"{where}.{key}: expected a non-empty string, got {_kind(value)}")
    return value.strip()[:MAX_TEXT]


def _choice(data: Mapping[str, Any], key: str, where: str, allowed: Sequence[str]) -> str:
    value = _str(data, key, where).lower()
    if value not in allowed:
        raise StatusFormatError(f"{where}.{key}: {value[:40]!r} is not one of {', '.join(allowed)}")
    return value


def parse_time(value: object, where: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise StatusFormatError(f"{where}: expected an ISO 8601 time, got {_kind(value)}")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise StatusFormatError(
            f"{where}: {value[:40]!r} is not an ISO 8601 time such as 2024-03-01T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise StatusFormatError(f"{where}: {value[:40]!r} has no time zone offset")
    return moment.astimezone(UTC)


def _optional_time(data: Mapping[str, Any], key: str, where: str) -> datetime | None:
    value = data.get(key)
    return None if value in (None, "") else parse_time(value, f"{where}.{key}")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"{value[:40]!r}" if value else "an empty string"
    return type(value).__name__


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _http_url(value: object) -> str | None:
    if isinstance(value, str) and value.startswith(("https://", "http://")) and len(value) <= 500:
        return value
    return None


# -- Statuspage ------------------------------------------------------------------------------


def _statuspage_change(data: object, where: str) -> ComponentChange:
    item = _obj(data, where)
    component_id = _str(item, "code", where, optional=True) or _str(
        item, "id", where, optional=True
    )
    name = _str(item, "name", where, optional=True)
    if not component_id and not name:
        raise StatusFormatError(f"{where}: a component needs a code, id or name")
    return ComponentChange(
        component_id=component_id or name,
        name=name or component_id,
        old_status=_str(item, "old_status", where, optional=True) or None,
        new_status=_str(item, "new_status", where, optional=True) or None,
    )


def _statuspage_component(data: object, where: str) -> Component:
    item = _obj(data, where)
    component_id = _str(item, "id", where)
    status = _str(item, "status", where, optional=True).lower() or None
    if status is not None and status not in COMPONENT_STATUSES:
        raise StatusFormatError(
            f"{where}.status: {status[:40]!r} is not one of {', '.join(COMPONENT_STATUSES)}"
        )
    return Component(component_id, _str(item, "name", where, optional=True), status)


def parse_statuspage_incident(data: object, where: str = "incident") -> StatusIncident:
    """One incident or scheduled maintenance, as Statuspage's API and webhooks write it."""
    item = _obj(data, where)
    incident_id = _str(item, "id", where)
    scheduled_for = _optional_time(item, "scheduled_for", where)
    maintenance = scheduled_for is not None or item.get("impact") == MAINTENANCE_IMPACT
    statuses = MAINTENANCE_STATUSES if maintenance else INCIDENT_STATUSES
    impacts = (*IMPACTS, MAINTENANCE_IMPACT)
    updates: list[StatusUpdate] = []
    for index, raw in enumerate(_list(item.get("incident_updates"), f"{where}.incident_updates")):
        at = f"{where}.incident_updates[{index}]"
        update = _obj(raw, at)
        changes = _list(update.get("affected_components"), f"{at}.affected_components")
        updates.append(
            StatusUpdate(
                update_id=_str(update, "id", at),
                status=_choice(update, "status", at, statuses),
                body=_str(update, "body", at, optional=True),
                display_at=parse_time(
                    update.get("display_at") or update.get("created_at"), f"{at}.display_at"
                ),
                components=tuple(
                    _statuspage_change(c, f"{at}.affected_components[{i}]")
                    for i, c in enumerate(changes)
                ),
            )
        )
    components = _list(item.get("components"), f"{where}.components")
    return StatusIncident(
        source_incident_id=incident_id,
        name=_str(item, "name", where),
        status=_choice(item, "status", where, statuses),
        impact=_choice(item, "impact", where, impacts) if item.get("impact") else "none",
        updates=_ordered(updates),
        components=tuple(
            _statuspage_component(c, f"{where}.components[{i}]") for i, c in enumerate(components)
        ),
        scheduled_for=scheduled_for,
        scheduled_until=_optional_time(item, "scheduled_until", where),
        shortlink=_http_url(item.get("shortlink")),
        backfilled=bool(item.get("backfilled", False)),
    )


def _ordered(updates: Iterable[StatusUpdate]) -> tuple[StatusUpdate, ...]:
    # Statuspage lists updates newest first; detection wants them oldest first. The id breaks
    # ties so that two updates at the same instant always come out in the same order.
    unique = {u.update_id: u for u in updates}
    return tuple(sorted(unique.values(), key=lambda u: (u.display_at, u.update_id)))


def parse_statuspage(data: object) -> ParsedFeed:
    """`summary.json`, `incidents.json`, `scheduled-maintenances.json` or one `incident`.

    A malformed incident is skipped and named in `problems`; a body of the wrong shape
    altogether raises StatusFormatError.
    """
    body = _obj(data, "body")
    lists = [k for k in ("incidents", "scheduled_maintenances") if k in body]
    if not lists and "incident" not in body and "components" not in body:
        raise StatusFormatError(
            "body: expected Statuspage JSON with incidents, scheduled_maintenances, "
            "incident or components"
        )
    raw: list[tuple[str, object]] = []
    for key in lists:
        raw += [(f"{key}[{i}]", v) for i, v in enumerate(_list(body.get(key), key))]
    if "incident" in body:
        raw.append(("incident", body["incident"]))
    incidents: list[StatusIncident] = []
    problems: list[str] = []
    for where, value in raw:
        try:
            incidents.append(parse_statuspage_incident(value, where))
        except StatusFormatError as exc:
            problems.append(exc.message)
    components: list[Component] = []
    for index, value in enumerate(_list(body.get("components"), "components")):
        try:
            components.append(_statuspage_component(value, f"components[{index}]"))
        except StatusFormatError as exc:
            problems.append(exc.message)
    return ParsedFeed(tuple(incidents), tuple(components), tuple(problems))


@dataclass(frozen=True)
class StatuspageWebhook:
    """A subscriber webhook: an incident (with its whole update history) or a component
    status change."""

    incident: StatusIncident | None = None
    component_update: ComponentChange | None = None


def parse_statuspage_webhook(data: object) -> StatuspageWebhook:
    body = _obj(data, "body")
    if "incident" in body:
        return StatuspageWebhook(incident=parse_statuspage_incident(body["incident"], "incident"))
    if "component_update" in body:
        update = _obj(body["component_update"], "component_update")
        component = _obj(body.get("component") or {}, "component")
        component_id = _str(update, "component_id", "component_update", optional=True) or _str(
            component, "id", "component"
        )
        return StatuspageWebhook(
            component_update=ComponentChange(
                component_id=component_id,
                name=_str(component, "name", "component", optional=True) or component_id,
                old_status=_str(update, "old_status", "component_update", optional=True) or None,
                new_status=_str(update, "new_status", "component_update", optional=True) or None,
            )
        )
    raise StatusFormatError(
        "body: a Statuspage webhook carries an 'incident' or a 'component_update' object"
    )


# -- Forewarn's signed webhook ---------------------------------------------------------------


def parse_signed_webhook(data: object) -> StatusIncident:
    """The generic webhook body (see the module docstring)."""
    body = _obj(data, "body")
    where = "incident"
    item = _obj(body.get("incident"), where)
    scheduled_for = _optional_time(item, "scheduled_for", where)
    statuses = MAINTENANCE_STATUSES if scheduled_for else INCIDENT_STATUSES
    updates = []
    for index, raw in enumerate(_list(item.get("updates"), f"{where}.updates", optional=False)):
        at = f"{where}.updates[{index}]"
        update = _obj(raw, at)
        updates.append(
            StatusUpdate(
                update_id=_str(update, "id", at),
                status=_choice(update, "status", at, statuses),
                body=_str(update, "body", at, optional=True),
                display_at=parse_time(update.get("display_at"), f"{at}.display_at"),
                components=_named_components(update.get("components"), f"{at}.components"),
            )
        )
    if not updates:
        raise StatusFormatError(f"{where}.updates: give at least one update")
    ordered = _ordered(updates)
    impact = "none" if item.get("impact") is None else _choice(item, "impact", where, IMPACTS)
    return StatusIncident(
        source_incident_id=_str(item, "id", where),
        name=_str(item, "name", where),
        status=(
            _choice(item, "status", where, statuses) if "status" in item else ordered[-1].status
        ),
        impact=MAINTENANCE_IMPACT if scheduled_for else impact,
        updates=ordered,
        components=tuple(
            Component(c.component_id, c.name)
            for c in _named_components(item.get("components"), f"{where}.components")
        ),
        scheduled_for=scheduled_for,
        scheduled_until=_optional_time(item, "scheduled_until", where),
        shortlink=_http_url(item.get("url")),
    )


def _named_components(value: object, where: str) -> tuple[ComponentChange, ...]:
    names = _list(value, where)
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise StatusFormatError(f"{where}: expected a list of component ids or names")
    return tuple(ComponentChange(n.strip(), n.strip()) for n in names)


# -- RSS / Atom ------------------------------------------------------------------------------

_STATUS_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("postmortem", re.compile(r"\bpost-?mortem\b", re.IGNORECASE)),
    (
        "resolved",
        re.compile(r"\bresolved\b|operating normally|\bhas recovered\b", re.IGNORECASE),
    ),
    ("monitoring", re.compile(r"\bmonitoring\b", re.IGNORECASE)),
    ("identified", re.compile(r"\bidentified\b", re.IGNORECASE)),
    ("investigating", re.compile(r"\binvestigating\b", re.IGNORECASE)),
)
_TAG = re.compile(r"<[^>]+>")
_TITLE_PREFIX = re.compile(
    r"^\s*(?:service is operating normally|informational message|"
    r"service disruption|performance issues)\s*:\s*",
    re.IGNORECASE,
)
_BRACKETED = re.compile(r"\[(?:resolved|monitoring|identified|investigating)\]\s*", re.IGNORECASE)


def infer_status(title: str, text: str) -> str:
    """The status a feed entry reports. The title wins (AWS: `[RESOLVED] ...`); in the text,
    the earliest word wins because status pages list the newest update first."""
    for status, pattern in _STATUS_WORDS:
        if pattern.search(title):
            return status
    found = [(m.start(), status) for status, p in _STATUS_WORDS if (m := p.search(text))]
    return min(found)[1] if found else "investigating"


def _clean_title(title: str) -> str:
    return _BRACKETED.sub("", _TITLE_PREFIX.sub("", title)).strip() or title.strip()


def parse_feed(raw: bytes | str, *, group_pattern: str | None = None) -> ParsedFeed:
    """An RSS 2.0 or Atom document. Entries without an id, title or time are skipped and
    named in `problems`; a document feedparser cannot read at all raises StatusFormatError."""
    import feedparser  # 40 ms of import, paid only by feed sources

    parsed = feedparser.parse(raw)
    entries = list(parsed.get("entries") or [])
    if parsed.get("bozo") and not entries:
        reason = type(parsed.get("bozo_exception")).__name__
        raise StatusFormatError(f"body: not a readable RSS or Atom feed ({reason})")
    grouping = re.compile(group_pattern) if group_pattern else None
    problems: list[str] = []
    items: list[tuple[str, StatusUpdate, str, str | None]] = []
    for index, entry in enumerate(entries):
        where = f"entries[{index}]"
        title = str(entry.get("title") or "").strip()
        entry_id = str(entry.get("id") or entry.get("link") or "").strip()
        # dict.get: feedparser's own get() warns when it maps updated to published.
        moment = dict.get(entry, "updated_parsed") or dict.get(entry, "published_parsed")
        if not title or not entry_id or moment is None:
            missing = [
                n for n, v in (("title", title), ("id", entry_id), ("time", moment)) if not v
            ]
            problems.append(f"{where}: missing {', '.join(missing)}")
            continue
        text = _TAG.sub(" ", str(entry.get("summary") or entry.get("description") or ""))
        text = " ".join(text.split())[:MAX_TEXT]
        display_at = datetime.fromtimestamp(calendar.timegm(moment), UTC)
        status = infer_status(title, text)
        digest = hashlib.sha256(f"{entry_id}\n{title}\n{text}".encode()).hexdigest()[:16]
        update = StatusUpdate(update_id=digest, status=status, body=text, display_at=display_at)
        match = grouping.search(entry_id) if grouping else None
        group = match.group(1) if match and match.groups() else entry_id
        items.append((group, update, _clean_title(title), _http_url(entry.get("link"))))
    incidents: list[StatusIncident] = []
    by_group: dict[str, list[tuple[StatusUpdate, str, str | None]]] = {}
    for group, update, title, link in items:
        by_group.setdefault(group, []).append((update, title, link))
    for group, members in by_group.items():
        members.sort(key=lambda m: (m[0].display_at, m[0].update_id))
        run: list[tuple[StatusUpdate, str, str | None]] = []
        for member in members:
            run.append(member)
            # A grouped event ends with its resolved entry; the next entry starts a new one.
            if grouping is not None and member[0].status in ("resolved", "postmortem"):
                incidents.append(_feed_incident(group, run, grouped=True))
                run = []
        if run:
            incidents.append(_feed_incident(group, run, grouped=grouping is not None))
    return ParsedFeed(tuple(incidents), (), tuple(problems))


def _feed_incident(
    group: str, run: list[tuple[StatusUpdate, str, str | None]], *, grouped: bool
) -> StatusIncident:
    first, last = run[0], run[-1]
    incident_id = f"{group}@{iso(first[0].display_at)}" if grouped else group
    return StatusIncident(
        source_incident_id=incident_id[:500],
        name=first[1],
        status=last[0].status,
        impact="minor",
        updates=_ordered(m[0] for m in run),
        shortlink=last[2],
    )


# -- serialisation ---------------------------------------------------------------------------


def to_jsonable(incident: StatusIncident) -> dict[str, Any]:
    def moment(value: datetime | None) -> str | None:
        return iso(value) if value else None

    return {
        "id": incident.source_incident_id,
        "name": incident.name,
        "status": incident.status,
        "impact": incident.impact,
        "updates": [
            {
                "id": u.update_id,
                "status": u.status,
                "body": u.body,
                "display_at": iso(u.display_at),
                "components": [
                    [c.component_id, c.name, c.old_status, c.new_status] for c in u.components
                ],
            }
            for u in incident.updates
        ],
        "components": [[c.component_id, c.name, c.status] for c in incident.components],
        "scheduled_for": moment(incident.scheduled_for),
        "scheduled_until": moment(incident.scheduled_until),
        "shortlink": incident.shortlink,
        "backfilled": incident.backfilled,
    }


def from_jsonable(data: Mapping[str, Any]) -> StatusIncident:
    def moment(value: object) -> datetime | None:
        return parse_time(value, "stored") if value else None

    return StatusIncident(
        source_incident_id=str(data["id"]),
        name=str(data["name"]),
        status=str(data["status"]),
        impact=str(data["impact"]),
        updates=tuple(
            StatusUpdate(
                update_id=str(u["id"]),
                status=str(u["status"]),
                body=str(u.get("body") or ""),
                display_at=parse_time(u["display_at"], "stored"),
                components=tuple(ComponentChange(*c) for c in u.get("components") or ()),
            )
            for u in data.get("updates") or ()
        ),
        components=tuple(Component(*c) for c in data.get("components") or ()),
        scheduled_for=moment(data.get("scheduled_for")),
        scheduled_until=moment(data.get("scheduled_until")),
        shortlink=data.get("shortlink"),
        backfilled=bool(data.get("backfilled", False)),
    )


# -- configuration: component mapping and policy ---------------------------------------------

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


@dataclass(frozen=True)
class Scope:
    """Which of our customers an upstream incident concerns."""

    services: tuple[str, ...]
    regions: tuple[str, ...] = ()

    def overlaps(self, other: Scope) -> bool:
        if not set(self.services) & set(other.services):
            return False
        return not self.regions or not other.regions or bool(set(self.regions) & set(other.regions))

    def to_dict(self) -> dict[str, list[str]]:
        return {"services": list(self.services), "regions": list(self.regions)}


def parse_scope(value: object, where: str) -> Scope:
    item = _obj(value, where)
    unknown = sorted(set(item) - {"services", "regions"})
    if unknown:
        raise BadRequest(f"{where}: unknown fields {', '.join(map(str, unknown))}")

    def names(key: str) -> tuple[str, ...]:
        raw = item.get(key) or []
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise BadRequest(f"{where}.{key} must be a list of names")
        cleaned = tuple(dict.fromkeys(v.strip().lower() for v in raw))
        bad = [n for n in cleaned if not _NAME.match(n)]
        if bad:
            raise BadRequest(
                f"{where}.{key}: {', '.join(bad[:3])} must be lower-case letters, digits or "
                "dashes (1 to 40)"
            )
        return cleaned

    services = names("services")
    if not services:
        raise BadRequest(f"{where}.services must name at least one service")
    return Scope(services, names("regions"))


@dataclass(frozen=True)
class ComponentMap:
    """Upstream components (by id or name, case-insensitive) → our services and regions."""

    scopes: Mapping[str, Scope] = field(default_factory=dict)
    default: Scope | None = None

    def scope_for(self, incident: StatusIncident) -> Scope | None:
        matched = [s for key, s in self.scopes.items() if key in incident.component_keys()]
        if not matched:
            return self.default
        services = tuple(sorted({s for scope in matched for s in scope.services}))
        # A component mapped without regions affects every region of its services.
        regions: tuple[str, ...] = ()
        if all(scope.regions for scope in matched):
            regions = tuple(sorted({r for scope in matched for r in scope.regions}))
        return Scope(services, regions)


def parse_component_map(components: object, default: object) -> ComponentMap:
    raw = components if components is not None else {}
    if not isinstance(raw, Mapping):
        raise BadRequest(
            'components must map component ids or names to {"services": [...], "regions": [...]}'
        )
    scopes = {
        str(key).strip().lower(): parse_scope(value, f"components.{key}")
        for key, value in raw.items()
    }
    if any(not key for key in scopes):
        raise BadRequest("components: a component key must not be empty")
    return ComponentMap(scopes, parse_scope(default, "default") if default is not None else None)


Mode = Literal["draft", "auto"]


@dataclass(frozen=True)
class Policy:
    """Draft every notice for approval, or send automatically from an impact upwards."""

    mode: Mode = "draft"
    auto_min_impact: str = "major"
    maintenance_lead: timedelta = timedelta(hours=1)

    def auto_for(self, impact: str) -> bool:
        return self.mode == "auto" and impact_rank(impact) >= impact_rank(self.auto_min_impact)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "auto_min_impact": self.auto_min_impact,
            "maintenance_lead_minutes": int(self.maintenance_lead.total_seconds() // 60),
        }


def impact_rank(impact: str) -> int:
    return IMPACTS.index(impact) if impact in IMPACTS else 0


def parse_policy(value: object) -> Policy:
    item = _obj(value if value is not None else {}, "policy")
    unknown = sorted(set(item) - {"mode", "auto_min_impact", "maintenance_lead_minutes"})
    if unknown:
        raise BadRequest(f"policy: unknown fields {', '.join(map(str, unknown))}")
    mode = item.get("mode", "draft")
    if mode not in ("draft", "auto"):
        raise BadRequest('policy.mode must be "draft" or "auto"')
    minimum = item.get("auto_min_impact", "major")
    if minimum not in ("minor", "major", "critical"):
        raise BadRequest("policy.auto_min_impact must be minor, major or critical")
    lead = item.get("maintenance_lead_minutes", 60)
    if not isinstance(lead, int) or isinstance(lead, bool) or not 0 <= lead <= 7 * 24 * 60:
        raise BadRequest("policy.maintenance_lead_minutes must be a whole number from 0 to 10080")
    return Policy(
        mode="auto" if mode == "auto" else "draft",
        auto_min_impact=str(minimum),
        maintenance_lead=timedelta(minutes=lead),
    )


# -- change detection ------------------------------------------------------------------------

ActionKind = Literal["open", "update", "resolve", "headsup", "close", "record"]


@dataclass
class IncidentState:
    """What was already done for one upstream incident.

    `acted` maps an action key to its outcome: `initial`, `resolved`, `headsup`, `closed`,
    `update:<id>` (a notice, or `folded` into the initial), and records such as `history`,
    `unmapped`, `late:<id>`. `last_display_at` is the newest update acted on, so an update that
    turns up later with an older time is never sent after a newer one.
    """

    source_incident_id: str
    forewarn_incident_id: str | None = None
    acted: dict[str, str] = field(default_factory=dict)
    last_display_at: str | None = None
    max_impact: str = "none"

    @property
    def tracked(self) -> bool:
        return "initial" in self.acted or "headsup" in self.acted

    def watermark(self) -> datetime | None:
        return parse_time(self.last_display_at, "state") if self.last_display_at else None


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    key: str
    incident: StatusIncident
    scope: Scope | None = None
    auto: bool = False
    # The upstream moment this action answers (an update's display_at, or when a heads-up
    # fell due), and the update ids it covers: the replay measures lag from these.
    display_at: datetime | None = None
    covers: tuple[str, ...] = ()
    # The Forewarn incident status the notice should report.
    status: str = "investigating"


def _forewarn_status(update_status: str) -> str:
    return update_status if update_status in LIVE_STATUSES else "resolved"


def detect(
    incident: StatusIncident,
    state: IncidentState | None,
    *,
    components: ComponentMap,
    policy: Policy,
    now: datetime,
    window_start: datetime | None,
) -> list[Action]:
    """The actions owed for `incident`, oldest first.

    `window_start` is when this source was last read successfully: an incident first seen
    already resolved is only worth notices when it began after that (it came and went between
    two polls); otherwise it is history (a first poll, or written up after the fact).
    """
    if incident.is_maintenance:
        return _detect_maintenance(incident, state, components, policy, now)
    state = state or IncidentState(incident.source_incident_id)
    max_impact = max(state.max_impact, incident.impact, key=impact_rank)
    auto = policy.auto_for(max_impact)
    updates = _ordered(incident.updates)
    resolution = next((u for u in updates if u.status in ("resolved", "postmortem")), None)
    is_resolved = resolution is not None or incident.status in ("resolved", "postmortem")
    # Updates after the resolution (a postmortem, a correction) never reach customers.
    live = [
        u
        for u in updates
        if u.status in LIVE_STATUSES
        and (resolution is None or u.display_at <= resolution.display_at)
    ]
    if not state.tracked:
        return _detect_new(
            incident, state, components, auto, live, resolution, is_resolved, window_start
        )
    if "resolved" in state.acted or "closed" in state.acted:
        return []
    actions: list[Action] = []
    watermark = state.watermark()
    for update in live:
        key = f"update:{update.update_id}"
        if key in state.acted or f"late:{update.update_id}" in state.acted:
            continue
        if watermark is not None and update.display_at < watermark:
            actions.append(Action("record", f"late:{update.update_id}", incident))
            continue
        actions.append(
            Action(
                "update",
                key,
                incident,
                auto=auto,
                display_at=update.display_at,
                covers=(update.update_id,),
                status=_forewarn_status(update.status),
            )
        )
        watermark = update.display_at
    if is_resolved:
        actions.append(_resolve_action(incident, resolution, auto))
    return actions


def _resolve_action(
    incident: StatusIncident, resolution: StatusUpdate | None, auto: bool
) -> Action:
    return Action(
        "resolve",
        "resolved",
        incident,
        auto=auto,
        display_at=resolution.display_at if resolution else None,
        covers=(resolution.update_id,) if resolution else (),
        status="resolved",
    )


def _detect_new(
    incident: StatusIncident,
    state: IncidentState,
    components: ComponentMap,
    auto: bool,
    live: list[StatusUpdate],
    resolution: StatusUpdate | None,
    is_resolved: bool,
    window_start: datetime | None,
) -> list[Action]:
    if "history" in state.acted:
        return []
    scope = components.scope_for(incident)
    if scope is None:
        # Not final: a later update may name a mapped component.
        return [] if "unmapped" in state.acted else [Action("record", "unmapped", incident)]
    if incident.backfilled or not live:
        return [Action("record", "history", incident)]
    if is_resolved and (window_start is None or live[0].display_at <= window_start):
        return [Action("record", "history", incident)]
    if is_resolved and resolution is None:
        # Resolved with no resolution update to time it: nothing trustworthy to send.
        return [Action("record", "history", incident)]
    # The initial notice reports where things stand now, so the updates already out when we
    # first see the incident are folded into it rather than sent one after another.
    actions = [
        Action(
            "open",
            "initial",
            incident,
            scope=scope,
            auto=auto,
            display_at=live[0].display_at,
            covers=tuple(u.update_id for u in live),
            status=_forewarn_status(live[-1].status),
        )
    ]
    if is_resolved:
        actions.append(_resolve_action(incident, resolution, auto))
    return actions


def _detect_maintenance(
    incident: StatusIncident,
    state: IncidentState | None,
    components: ComponentMap,
    policy: Policy,
    now: datetime,
) -> list[Action]:
    state = state or IncidentState(incident.source_incident_id)
    done = incident.status == "completed" or (
        incident.scheduled_until is not None and now >= incident.scheduled_until
    )
    if "headsup" in state.acted:
        return [Action("close", "closed", incident)] if done and "closed" not in state.acted else []
    if "history" in state.acted:
        return []
    if done:
        return [Action("record", "history", incident)]
    scope = components.scope_for(incident)
    if scope is None:
        return [] if "unmapped" in state.acted else [Action("record", "unmapped", incident)]
    starts = incident.scheduled_for or (incident.updates[0].display_at if incident.updates else now)
    due = starts - policy.maintenance_lead
    if now < due:
        return []
    return [
        Action(
            "headsup",
            "headsup",
            incident,
            scope=scope,
            auto=policy.mode == "auto",
            display_at=due,
            covers=tuple(u.update_id for u in incident.updates),
            status="identified",
        )
    ]


def next_maintenance_due(
    incident: StatusIncident, state: IncidentState | None, policy: Policy
) -> datetime | None:
    """When the heads-up for a maintenance falls due, if it is still owed."""
    if not incident.is_maintenance or (state is not None and "headsup" in state.acted):
        return None
    if incident.status == "completed":
        return None
    starts = incident.scheduled_for or (
        incident.updates[0].display_at if incident.updates else None
    )
    return starts - policy.maintenance_lead if starts else None


def apply(state: IncidentState | None, action: Action, outcome: str = "done") -> IncidentState:
    """The state after `action` was carried out (the replay and tests keep state in memory;
    the poller writes the same fields to DynamoDB)."""
    current = state or IncidentState(action.incident.source_incident_id)
    acted = dict(current.acted)
    acted[action.key] = outcome
    for update_id in action.covers:
        acted.setdefault(f"update:{update_id}", "folded" if action.kind == "open" else outcome)
    last = current.last_display_at
    if action.display_at is not None and action.kind in ("open", "update", "resolve"):
        moments = [action.display_at]
        moments += [u.display_at for u in action.incident.updates if u.update_id in action.covers]
        newest = iso(max(moments))
        last = newest if last is None or newest > last else last
    return replace(
        current,
        acted=acted,
        last_display_at=last,
        max_impact=max(current.max_impact, action.incident.impact, key=impact_rank),
    )


def order_actions(actions: Iterable[Action]) -> list[Action]:
    """Across incidents, oldest upstream moment first (a stable sort keeps each incident's own
    order), so the earlier of two overlapping incidents opens and the later one joins it."""
    indexed = list(enumerate(actions))
    far = datetime.max.replace(tzinfo=UTC)
    indexed.sort(key=lambda pair: (pair[1].display_at or far, pair[0]))
    return [action for _, action in indexed]
