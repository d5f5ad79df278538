"""DynamoDB behind shipments: the registry, the webhook event log, and status updates.

Crash safety. A carrier event is handled in this order, each step safe to repeat:

1. the shipment item is updated with a version check, and the notice jobs the event calls
   for are written into the same item (`pending`), so the decision and its consequences
   land together or not at all;
2. the pending jobs are sent to the notice queue, then removed from `pending`;
3. the event is recorded in the event log (`<provider>#<event_id>`, TTL 30 days).

A crash before 3 makes the provider retry: the event is then stale (1 already happened) and
step 2 sends whatever is still pending. Nothing is lost, and a job sent twice is harmless
because notice ids are deterministic and the delivery ledger sends each id once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from chalicelib.errors import Conflict
from chalicelib.shipments import Shipment, Status, awaited, iso_time, lane_of
from chalicelib.store import Item, Tables, to_dynamo

EVENT_TTL_SECONDS = 30 * 24 * 3600
_BATCH_GET = 100


@dataclass(frozen=True)
class ShipmentRecord:
    """A stored shipment with what only the store needs: its version and unsent jobs."""

    shipment: Shipment
    version: int
    pending: dict[str, dict[str, Any]]
    return_published_at: str | None = None
    return_webhook_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.shipment.to_dict(),
            "pending_jobs": sorted(self.pending),
            "return_published_at": self.return_published_at,
            "return_webhook_at": self.return_webhook_at,
        }


def _lane_attributes(
    shipment: Shipment, sets: list[str], removes: list[str], values: dict[str, Any]
) -> None:
    """Keep GSI `by-lane` to the parcels a lane broadcast should reach (sparse: an item
    without `lane_key` is not in it)."""
    lane = lane_of(shipment)
    if lane and awaited(shipment):
        sets += ["lane_key = :lane_key", "lane_sort = :lane_sort"]
        values[":lane_key"] = lane
        values[":lane_sort"] = f"{shipment.customer_id}#{shipment.tracking_code}"
    else:
        removes += ["lane_key", "lane_sort"]


def _record(item: Item) -> ShipmentRecord:
    return ShipmentRecord(
        shipment=Shipment.from_dict(item),
        version=int(item.get("version") or 0),
        pending={str(k): dict(v) for k, v in (item.get("pending") or {}).items()},
        return_published_at=item.get("return_published_at"),
        return_webhook_at=item.get("return_webhook_at"),
    )


class ShipmentStore(Tables):
    # -- registry -------------------------------------------------------------------------

    def get(self, tracking_code: str, *, consistent: bool = True) -> ShipmentRecord | None:
        item = self._get(
            self.names.shipments, {"tracking_code": tracking_code}, consistent=consistent
        )
        return _record(item) if item else None

    def upsert(self, shipment: Shipment, *, now: datetime) -> str:
        """Write the registry fields of a shipment; "created", "updated" or "unchanged".

        Carrier-driven fields (status, estimates, notices) are left as they are. The version
        moves, so an event being applied at the same moment recomputes with the new row.
        """
        old = self.get(shipment.tracking_code)
        wanted = shipment.registry_fields()
        if old is not None and old.shipment.registry_fields() == wanted:
            return "unchanged"
        stamp = iso_time(now)
        values: dict[str, Any] = {
            ":carrier": shipment.carrier,
            ":customer": shipment.customer_id,
            ":order": shipment.order_id,
            ":direction": shipment.direction.value,
            ":now": stamp,
            ":unknown": Status.UNKNOWN.value,
            ":zero": 0,
            ":empty": {},
            ":one": 1,
        }
        sets = [
            "carrier = :carrier",
            "customer_id = :customer",
            "order_id = :order",
            "direction = :direction",
            "updated_at = :now",
            "created_at = if_not_exists(created_at, :now)",
            "#s = if_not_exists(#s, :unknown)",
            "#r = if_not_exists(#r, :zero)",
            "pending = if_not_exists(pending, :empty)",
            "notice_counts = if_not_exists(notice_counts, :empty)",
        ]
        removes: list[str] = []
        names = {"#s": "status", "#r": "rank"}
        for attribute in ("promised_date", "region", "postal_code"):
            # `region` is a DynamoDB reserved word, so these names all go through `#`.
            names[f"#{attribute}"] = attribute
            if wanted[attribute] is None:
                removes.append(f"#{attribute}")
            else:
                sets.append(f"#{attribute} = :{attribute}")
                values[f":{attribute}"] = wanted[attribute]
        status = old.shipment.status if old else Status.UNKNOWN
        _lane_attributes(replace(shipment, status=status), sets, removes, values)
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        expression += " ADD version :one"
        if old is None:
            condition = "attribute_not_exists(tracking_code)"
        else:
            condition = "version = :v"
            values[":v"] = old.version
        if not self._write_if(
            "update_item",
            TableName=self.names.shipments,
            Key=to_dynamo({"tracking_code": shipment.tracking_code}),
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=to_dynamo(values),
        ):
            raise Conflict(f"shipment {shipment.tracking_code} was changed concurrently; retry")
        return "created" if old is None else "updated"

    def for_customer(self, customer_id: str) -> list[Shipment]:
        """The customer's shipments, most recently changed first (GSI `by-customer`)."""
        return [
            Shipment.from_dict(item)
            for item in self._query_all(
                TableName=self.names.shipments,
                IndexName="by-customer",
                KeyConditionExpression="customer_id = :c",
                ExpressionAttributeValues=to_dynamo({":c": customer_id}),
                ScanIndexForward=False,
            )
        ]

    def existing_customers(self, customer_ids: Iterable[str]) -> set[str]:
        """Which of `customer_ids` are in the customers table."""
        keys = [{"customer_id": c} for c in sorted(set(customer_ids))]
        items = self._get_many(self.names.customers, keys, projection="customer_id")
        return {str(item["customer_id"]) for item in items}

    # -- carrier events -------------------------------------------------------------------

    def save_applied(
        self,
        record: ShipmentRecord,
        shipment: Shipment,
        jobs: Mapping[str, Mapping[str, Any]],
        *,
        event_key: str,
        also: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        """Store an applied event and the jobs it calls for, only if nobody moved the
        shipment since `record` was read; False means re-read and decide again. `also`
        (TransactWriteItems entries, e.g. the lane's counters) commit with it or not at all."""
        data = shipment.to_dict()
        values: dict[str, Any] = {
            ":expected": record.version,
            ":one": 1,
            ":key": event_key,
        }
        names: dict[str, str] = {"#s": "status", "#r": "rank"}
        sets = ["#s = :status", "#r = :rank", "last_event_key = :key"]
        values[":status"] = data["status"]
        values[":rank"] = data["rank"]
        removes: list[str] = []
        for attribute in (
            "status_detail",
            "est_delivery",
            "last_event_at",
            "last_sent_at",
            "delivered_at",
            "carrier",
            "updated_at",
        ):
            if data[attribute] is None:
                removes.append(attribute)
            else:
                sets.append(f"{attribute} = :{attribute}")
                values[f":{attribute}"] = data[attribute]
        sets.append("notice_counts = :counts")
        values[":counts"] = data["notice_counts"]
        _lane_attributes(shipment, sets, removes, values)
        for index, (job_id, job) in enumerate(jobs.items()):
            names[f"#p{index}"] = job_id
            values[f":p{index}"] = dict(job)
            sets.append(f"pending.#p{index} = :p{index}")
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        expression += " ADD version :one"
        update = {
            "TableName": self.names.shipments,
            "Key": to_dynamo({"tracking_code": shipment.tracking_code}),
            "UpdateExpression": expression,
            "ConditionExpression": "version = :expected",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_dynamo(values),
        }
        if not also:
            return self._write_if("update_item", **update)
        return self._write_if("transact_write_items", TransactItems=[{"Update": update}, *also])

    def clear_pending(self, tracking_code: str, job_ids: Sequence[str]) -> None:
        """Forget jobs that reached the queue."""
        if not job_ids:
            return
        names = {f"#p{i}": job_id for i, job_id in enumerate(job_ids)}
        self._write_if(
            "update_item",
            TableName=self.names.shipments,
            Key=to_dynamo({"tracking_code": tracking_code}),
            UpdateExpression="REMOVE " + ", ".join(f"pending.{name}" for name in names),
            # Never create a stub item for a shipment that is gone.
            ConditionExpression="attribute_exists(tracking_code)",
            ExpressionAttributeNames=names,
        )

    def event_seen(self, event_key: str) -> bool:
        return (
            self._get(self.names.webhook_events, {"event_key": event_key}, consistent=True)
            is not None
        )

    def record_event(
        self,
        event_key: str,
        *,
        outcome: str,
        tracking_code: str,
        summary: Mapping[str, Any],
        now: datetime,
    ) -> bool:
        """Remember an event for 30 days; False when it was already recorded."""
        return self._write_if(
            "put_item",
            TableName=self.names.webhook_events,
            Item=to_dynamo(
                {
                    "event_key": event_key,
                    "outcome": outcome,
                    "tracking_code": tracking_code,
                    "summary": dict(summary),
                    "received_at": iso_time(now),
                    "expires_at": int(now.timestamp()) + EVENT_TTL_SECONDS,
                }
            ),
            ConditionExpression="attribute_not_exists(event_key)",
        )

    def get_event(self, event_key: str) -> Item | None:
        return self._get(self.names.webhook_events, {"event_key": event_key}, consistent=True)

    # -- return.received ------------------------------------------------------------------

    def mark_return_published(self, tracking_code: str, *, now: datetime) -> bool:
        """Flag the SNS publish as done; False when it already was."""
        return self._mark_once(tracking_code, "return_published_at", now)

    def mark_return_webhook(self, tracking_code: str, *, now: datetime) -> bool:
        """Flag the partner POST as done; False when it already was."""
        return self._mark_once(tracking_code, "return_webhook_at", now)

    def _mark_once(self, tracking_code: str, attribute: str, now: datetime) -> bool:
        return self._write_if(
            "update_item",
            TableName=self.names.shipments,
            Key=to_dynamo({"tracking_code": tracking_code}),
            UpdateExpression=f"SET {attribute} = :now",
            ConditionExpression=(
                f"attribute_exists(tracking_code) AND attribute_not_exists({attribute})"
            ),
            ExpressionAttributeValues=to_dynamo({":now": iso_time(now)}),
        )
