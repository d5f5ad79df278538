"""Who did what: one row for every change a signed-in person made, through the API or the
console.

Rows are partitioned by UTC day (`day`) and sorted by time within it (`entry` is the moment
plus a random suffix, so two actions in the same millisecond both stay). The newest actions
are one query on today's partition, then yesterday's, and so on. What a row names is the
route and its path parameters (ids), never a request body: bodies hold customer data.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from chalicelib.auth import Principal
from chalicelib.domain import iso, utcnow
from chalicelib.store import Item, Tables, to_dynamo

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_TEXT = 300
# How far back a listing looks for rows before it gives up on filling a page.
LOOKBACK_DAYS = 31


@dataclass(frozen=True)
class AuditEntry:
    at: str
    actor: str
    role: str
    action: str
    target: str
    outcome: str

    def to_dict(self) -> dict[str, str]:
        return {
            "at": self.at,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
        }


class AuditLog(Tables):
    def record(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        target: str = "",
        outcome: str = "ok",
        now: datetime | None = None,
    ) -> AuditEntry:
        when = now or utcnow()
        moment = iso(when)
        entry = AuditEntry(
            at=moment,
            actor=actor[:MAX_TEXT],
            role=role,
            action=action[:MAX_TEXT],
            target=target[:MAX_TEXT],
            outcome=outcome[:MAX_TEXT],
        )
        self.db.put_item(
            TableName=self.names.audit,
            Item=to_dynamo(
                {
                    "day": moment[:10],
                    # Microseconds, so that actions within one second keep their order.
                    "entry": f"{when.strftime('%Y-%m-%dT%H:%M:%S.%f')}#{uuid.uuid4().hex[:8]}",
                    **entry.to_dict(),
                }
            ),
        )
        return entry

    def recent(self, limit: int = 100, now: datetime | None = None) -> list[AuditEntry]:
        """The newest entries first, from today back at most `LOOKBACK_DAYS` days."""
        today = now or utcnow()
        found: list[AuditEntry] = []
        for back in range(LOOKBACK_DAYS):
            day = (today - timedelta(days=back)).strftime("%Y-%m-%d")
            items, _ = self._query_page(
                {
                    "TableName": self.names.audit,
                    "KeyConditionExpression": "#d = :d",
                    "ExpressionAttributeNames": {"#d": "day"},
                    "ExpressionAttributeValues": to_dynamo({":d": day}),
                    "ScanIndexForward": False,
                    "Limit": limit - len(found),
                },
                None,
            )
            found.extend(_entry(item) for item in items)
            if len(found) >= limit:
                break
        return found


def _entry(data: Item) -> AuditEntry:
    return AuditEntry(
        at=str(data["at"]),
        actor=str(data["actor"]),
        role=str(data["role"]),
        action=str(data["action"]),
        target=str(data.get("target", "")),
        outcome=str(data.get("outcome", "")),
    )


def record_action(
    audit: Callable[[], AuditLog],
    principal: Principal,
    action: str,
    params: Mapping[str, str],
    *,
    outcome: str,
) -> None:
    """Audit one action; a failure to write the row is logged, never raised: the action has
    happened, and telling the user it failed would be wrong."""
    target = ", ".join(f"{key}={value}" for key, value in sorted(params.items()))
    try:
        audit().record(
            actor=principal.subject,
            role=principal.role,
            action=action,
            target=target,
            outcome=outcome,
        )
    except Exception as exc:
        log.error("audit row for %s not written: %s", action, type(exc).__name__)


def audited(
    audit: Callable[[], AuditLog],
    principal: Principal,
    action: str,
    params: Mapping[str, str],
    perform: Callable[[], T],
) -> T:
    """Perform a change and audit it, refused (a ForewarnError, re-raised) or done."""
    from chalicelib.errors import ForewarnError

    try:
        result = perform()
    except ForewarnError as exc:
        record_action(audit, principal, action, params, outcome=f"refused: {exc.code}")
        raise
    record_action(audit, principal, action, params, outcome="ok")
    return result
