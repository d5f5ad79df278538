"""One incident per cause.

A status page admitting an outage and a spike of complaints on X about the same outage are
two signals of one cause; customers should hear of it once: one incident, one frozen
audience, one initial notice, one all-clear. This module keeps the registry of open
incidents that a new signal can join, and decides which one it belongs to.

The registry lives in the `sources` table under the partition `~open`, where status sources
first kept it (so items written before this module stay valid), one item per open Forewarn
incident:

| attribute | holds |
| --- | --- |
| `services`, `regions` | the incident's scope (no regions: everywhere) |
| `created_at` | when the incident was created |
| `links` | string set of `<source>/<upstream incident>`: the status-source incidents in it |
| `issues` | string set of `social/<issue id>`: the emerging issues in it |

Only `links` decide when the incident is over: when the last status-source incident in it
resolves, the item is deleted (on condition that no link is left) and that resolution sends
the all-clear, once. An emerging issue has no resolution of its own (complaints die down
before, or long after, the outage ends), so its mark never holds the all-clear back; ops
resolve an incident that only issues opened, and the registry forgets it when it next looks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import aws
from chalicelib.domain import Incident, IncidentStatus
from chalicelib.status_feeds import Scope
from chalicelib.store import Item, Store, Tables, from_dynamo, to_dynamo

OPEN = "~open"
SOCIAL = "social"

# Signals of one cause arrive within hours of each other: complaints spike minutes after an
# outage starts, and a status page (a supplier's especially) can take an hour or more to admit
# it. Twelve hours covers that with room to spare, while the same service failing again the
# next day is news that gets its own notice, not an update to yesterday's frozen audience.
JOIN_WINDOW = timedelta(hours=12)


def issue_mark(issue_id: str) -> str:
    return f"{SOCIAL}/{issue_id}"


@dataclass(frozen=True)
class OpenIncident:
    """One registry item."""

    incident_id: str
    scope: Scope
    created_at: str
    links: frozenset[str] = frozenset()
    issues: frozenset[str] = frozenset()

    @property
    def closing(self) -> bool:
        """Its last status link resolved and the item is about to go: nothing may join."""
        return not self.links and not self.issues


class OpenIncidents(Tables):
    """The `~open` items of the `sources` table."""

    @property
    def table(self) -> str:
        return self.names.sources

    def all(self) -> list[OpenIncident]:
        items = self._query_all(
            TableName=self.table,
            KeyConditionExpression="source_id = :p",
            ExpressionAttributeValues=to_dynamo({":p": OPEN}),
            ConsistentRead=True,
        )
        return [_open_incident(item) for item in items]

    def link(self, incident: Incident, link: str, *, must_exist: bool) -> bool:
        """Add a status-source incident (`<source>/<upstream id>`); with `must_exist`, only to
        an incident still registered (False when it closed meanwhile)."""
        return self._add(incident, "links", link, must_exist=must_exist)

    def mark_issue(self, incident: Incident, issue_id: str, *, must_exist: bool) -> bool:
        """Add an emerging issue, which never counts as a link."""
        return self._add(incident, "issues", issue_mark(issue_id), must_exist=must_exist)

    def unlink(self, incident_id: str, link: str) -> list[str]:
        """Drop one status-source incident from the Forewarn incident; the links left."""
        try:
            response = self.db.update_item(
                TableName=self.table,
                Key=_key(incident_id),
                UpdateExpression="DELETE links :l",
                ConditionExpression="attribute_exists(item_key)",
                ExpressionAttributeValues={":l": {"SS": [link]}},
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                return []
            raise
        return list(from_dynamo(response.get("Attributes", {})).get("links") or [])

    def forget(self, incident_id: str) -> None:
        self.db.delete_item(TableName=self.table, Key=_key(incident_id))

    def close(self, incident_id: str) -> bool:
        """Forget an open incident, unless a status-source incident joined it meanwhile (an
        issue's mark does not keep it)."""
        return self._write_if(
            "delete_item",
            TableName=self.table,
            Key=_key(incident_id),
            ConditionExpression="attribute_not_exists(links)",
        )

    def _add(self, incident: Incident, attribute: str, value: str, *, must_exist: bool) -> bool:
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": _key(incident.incident_id),
            "UpdateExpression": (
                "SET services = :s, regions = :r, created_at = if_not_exists(created_at, :c) "
                f"ADD {attribute} :v"
            ),
            "ExpressionAttributeValues": {
                **to_dynamo(
                    {
                        ":s": list(incident.services),
                        ":r": list(incident.regions),
                        ":c": incident.created_at,
                    }
                ),
                ":v": {"SS": [value]},
            },
        }
        if must_exist:
            request["ConditionExpression"] = "attribute_exists(item_key)"
        return self._write_if("update_item", **request)


def find_open_incident(
    registry: OpenIncidents, store: Store, scope: Scope, at: datetime
) -> Incident | None:
    """The open incident that a new cause (its scope, and when it began) belongs to: the
    oldest registered one that shares a service and a region (no regions: everywhere), is
    not resolved, and was created within `JOIN_WINDOW` of the cause. None: it is news."""
    for entry in _oldest_first(registry.all()):
        if entry.closing or not entry.scope.overlaps(scope):
            continue
        incident = store.get_incident(entry.incident_id)
        if incident is None or incident.status is IncidentStatus.RESOLVED:
            # Resolved by hand (or gone): nothing will unlink it, so forget it here.
            registry.forget(entry.incident_id)
            continue
        if within_window(incident.created_at, at):
            return incident
    return None


def within_window(created_at: str, at: datetime) -> bool:
    return abs(parse_moment(created_at) - at) <= JOIN_WINDOW


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time as stored (`...Z`); one without an offset is UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _oldest_first(entries: Iterable[OpenIncident]) -> list[OpenIncident]:
    return sorted(entries, key=lambda e: (e.created_at, e.incident_id))


def _key(incident_id: str) -> dict[str, Any]:
    return to_dynamo({"source_id": OPEN, "item_key": incident_id})


def _open_incident(item: Item) -> OpenIncident:
    return OpenIncident(
        incident_id=str(item["item_key"]),
        scope=Scope(tuple(item.get("services") or ()), tuple(item.get("regions") or ())),
        created_at=str(item.get("created_at", "")),
        links=frozenset(item.get("links") or ()),
        issues=frozenset(item.get("issues") or ()),
    )
