"""Frequency cap and digest: one customer, at most one notice per window plus one digest.

The first broadcast notice to reach a customer goes out at once and opens a window of
`DIGEST_WINDOW_SECONDS` (per stage; 0 turns the cap off). Any other notice for the same
customer inside that window is not sent on its own: its ledger row settles as `digested` in
the same transaction that adds it to the customer's pending digest (the `digests` table), and
a digest job waits on the notice queue until the window has closed. The digest job then
sends one combined message of everything pending for that window, exactly once (its own
ledger row, `dg_<customer>_<window>`), and clears those entries.

Why this holds under concurrency: opening the window is a conditional write only one notice
wins (`opened_by`); a notice joins only while the window is open (the transaction's
condition), and the digest is sent only after the window has closed and a grace period
passed, so nothing can join a digest already sent. A worker that stops after joining finds
its row `digested` on the retry and enqueues the digest job again; a second job for the same
window finds the digest's ledger row settled and sends nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib import notices, queues
from chalicelib.config import Names
from chalicelib.domain import DELIVERABLE_CHANNELS, Broadcast, Channel, Incident
from chalicelib.errors import BadRequest
from chalicelib.store import Tables, to_dynamo

log = logging.getLogger(__name__)

DIGEST_JOB = "digest"
TEMPLATE = "_digest"
# Clocks of concurrent Lambdas differ by milliseconds; the digest waits well past that, so a
# notice that joined by its own clock at the last moment is still in it.
GRACE_SECONDS = 5
# SQS delays a message by 15 minutes at most; the worker holds a digest that comes early.
MAX_DELAY_SECONDS = 900


@dataclass(frozen=True)
class DigestJob:
    customer_id: str
    window: int  # epoch second the window closes

    @property
    def ledger_id(self) -> str:
        return f"dg_{self.customer_id}_{self.window}"

    @property
    def due(self) -> int:
        return self.window + GRACE_SECONDS

    def to_dict(self) -> dict[str, Any]:
        return {"type": DIGEST_JOB, "customer_id": self.customer_id, "window": self.window}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DigestJob:
        return cls(str(data["customer_id"]), int(data["window"]))


def entry(broadcast: Broadcast, incident: Incident) -> dict[str, str]:
    """What a digest says about one notice: the incident and where it stands."""
    return {
        "title": incident.title,
        "services": ", ".join(incident.services),
        "regions": ", ".join(incident.regions),
        "status": incident.status.value,
        "phase": broadcast.phase.value,
        "status_link": broadcast.variables.get("status_link", ""),
    }


class Digests(Tables):
    """The `digests` table: one item per customer holding their open window and what is
    pending for it."""

    def __init__(self, names: Names, dynamodb: Any | None = None, *, window_seconds: int) -> None:
        super().__init__(names, dynamodb)
        self.window_seconds = window_seconds

    def admit(self, customer_id: str, notice_id: str, now: float) -> int | None:
        """None when the notice may go out now (it opened the window, or had opened it
        before and is being retried); else the close of the open window it must join."""
        until = math.floor(now) + self.window_seconds
        if self._write_if(
            "update_item",
            TableName=self.names.digests,
            Key=to_dynamo({"customer_id": customer_id}),
            # `pending` must exist before a notice can join it under its own key.
            UpdateExpression=(
                "SET window_until = :until, opened_by = :me, expires_at = :exp, "
                "pending = if_not_exists(pending, :empty)"
            ),
            ConditionExpression="attribute_not_exists(window_until) OR window_until <= :now",
            ExpressionAttributeValues=to_dynamo(
                {
                    ":until": until,
                    ":me": notice_id,
                    ":now": math.floor(now),
                    ":exp": until + 86400,
                    ":empty": {},
                }
            ),
        ):
            return None
        item = self._get(self.names.digests, {"customer_id": customer_id}, consistent=True)
        if item is None or item.get("opened_by") == notice_id:
            # Its own window, on a retry: it goes out, and the window keeps its end.
            return None
        return int(item["window_until"])

    def join(
        self, customer_id: str, notice_id: str, window: int, now: float, entry: Mapping[str, str]
    ) -> dict[str, Any]:
        """The transaction item that adds a notice to the open `window`; it fails when the
        window has closed meanwhile (the notice then opens the next one)."""
        return {
            "Update": {
                "TableName": self.names.digests,
                "Key": to_dynamo({"customer_id": customer_id}),
                "UpdateExpression": "SET pending.#n = :entry",
                "ConditionExpression": "window_until = :w AND window_until > :now",
                "ExpressionAttributeNames": {"#n": notice_id},
                "ExpressionAttributeValues": to_dynamo(
                    {":entry": {**entry, "window": window}, ":w": window, ":now": math.floor(now)}
                ),
            }
        }

    def window_of(self, customer_id: str, notice_id: str) -> int | None:
        """The window a notice joined, while its entry is pending."""
        item = self._get(self.names.digests, {"customer_id": customer_id}, consistent=True) or {}
        joined = (item.get("pending") or {}).get(notice_id)
        return int(joined["window"]) if joined else None

    def pending(self, job: DigestJob) -> dict[str, dict[str, Any]]:
        """The entries of the job's window, by notice id, oldest window first."""
        item = self._get(self.names.digests, {"customer_id": job.customer_id}, consistent=True)
        entries = (item or {}).get("pending") or {}
        return {k: v for k, v in sorted(entries.items()) if int(v.get("window", 0)) == job.window}

    def clear(self, customer_id: str, notice_ids: list[str]) -> None:
        if not notice_ids:
            return
        names = {f"#n{i}": notice_id for i, notice_id in enumerate(notice_ids)}
        self.db.update_item(
            TableName=self.names.digests,
            Key=to_dynamo({"customer_id": customer_id}),
            UpdateExpression="REMOVE " + ", ".join(f"pending.{name}" for name in names),
            ExpressionAttributeNames=names,
        )


def enqueue(names: Names, job: DigestJob, now: float) -> None:
    delay = max(0, min(MAX_DELAY_SECONDS, math.ceil(job.due - now)))
    queues.send_json(names.notice_queue, [job.to_dict()], delay_seconds=delay)


def render(
    channel: Channel,
    locale: str,
    entries: list[dict[str, Any]],
    *,
    first_name: str,
    brand: str,
    unsubscribe_url: str | None,
) -> notices.RenderedNotice:
    if channel not in DELIVERABLE_CHANNELS:
        raise BadRequest(f"digests are not sent on {channel.value}")
    context: dict[str, object] = {
        "first_name": first_name,
        "brand": brand,
        "entries": entries,
        "opt_out_sms": notices.OPT_OUT_SMS,
        "unsubscribe_url": unsubscribe_url,
        # The layout's one "follow progress" button; each entry carries its own link.
        "status_link": "",
    }
    return notices.render_under(TEMPLATE, channel, locale, context)
