"""DynamoDB tables behind the few operations the core needs.

Every write that must not happen twice is conditional; every read of an audience is a
Query on a key, never a Scan.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Generic, TypeVar

from chalicelib import aws
from chalicelib.config import Names
from chalicelib.domain import (
    COUNT_FIELDS,
    AudienceSelector,
    Broadcast,
    BroadcastStatus,
    Channel,
    ChannelCounts,
    Customer,
    Incident,
    IncidentStatus,
    Phase,
)
from chalicelib.errors import Conflict

Item = dict[str, Any]

# The attribute that GSI `by-email` of the customers table is keyed on: the stored (already
# normalised) address case folded, so a lookup finds it however it is typed. GSI `by-phone`
# is keyed on `phone` itself, stored in E.164 form. Both are sparse: no contact, no entry.
EMAIL_KEY = "email_key"

# Present on an incident item while it is unresolved: the key of the sparse `open-incidents`
# index, so listing open incidents reads only those.
OPEN_MARK = "lifecycle"

_serializer: Any = None
_deserializer: Any = None


def _codec() -> tuple[Any, Any]:
    global _serializer, _deserializer
    if _serializer is None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        _serializer, _deserializer = TypeSerializer(), TypeDeserializer()
    return _serializer, _deserializer


def to_dynamo(item: Mapping[str, Any]) -> dict[str, Any]:
    serializer, _ = _codec()
    return {k: serializer.serialize(v) for k, v in item.items() if v is not None}


def from_dynamo(item: Mapping[str, Any]) -> Item:
    _, deserializer = _codec()
    return {k: _plain(deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    """DynamoDB numbers arrive as Decimal and sets as set; the core wants ints and lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_plain(v) for v in value]
    return value


# The ledger's TTL. A row must outlive every copy of its job (4 days on a queue, 14 in a
# dead-letter queue, then a redrive), or a late copy would find no claim and send again; it
# also bounds how far back a customer's notice history reaches in the lookup.
LEDGER_RETENTION_SECONDS = 400 * 86_400


# A broadcast's delivery counters are spread over this many items (`<id>#<shard>`), each
# customer's always the same one: one item takes about 1,000 writes a second, and every settle
# writes a counter (docs/SCALING.md). Readers add the shards to the broadcast's own item.
COUNTER_SHARDS = 8


def counter_shard(broadcast_id: str, customer_id: str) -> str:
    digest = hashlib.blake2b(customer_id.encode(), digest_size=4).digest()
    return f"{broadcast_id}#{int.from_bytes(digest, 'big') % COUNTER_SHARDS}"


def counter_name(channel: Channel, field: str) -> str:
    return f"n_{channel.value}_{field}"


class ClaimState(StrEnum):
    CLAIMED = "claimed"
    SETTLED = "settled"
    IN_FLIGHT = "in_flight"
    IN_DOUBT = "in_doubt"


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    attempt_id: str
    attempts: int = 0
    status: str | None = None


@dataclass(frozen=True)
class SubscriptionRow:
    sort_key: str
    customer: Customer


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_key: dict[str, Any] | None


TRANSACTION_ATTEMPTS = 6
# DynamoDB's limit of items in one BatchWriteItem.
BATCH_WRITE_ITEMS = 25


def _is_transaction_conflict(exc: BaseException) -> bool:
    if aws.error_code(exc) != "TransactionCanceledException":
        return False
    reasons = getattr(exc, "response", {}).get("CancellationReasons", [])
    return any(r.get("Code") == "TransactionConflict" for r in reasons)


def _is_conditional_failure(exc: BaseException) -> bool:
    code = aws.error_code(exc)
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = getattr(exc, "response", {}).get("CancellationReasons", [])
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
    return False


def subscription_keys(customer: Customer) -> list[dict[str, str]]:
    return [
        {"service": s.service, "sub_key": f"{s.region}#{s.postal_code}#{customer.customer_id}"}
        for s in customer.services
    ]


def email_key(email: str | None) -> str | None:
    """What GSI `by-email` finds an address by: a validated address, case folded."""
    return email.casefold() if email else None


def customer_items(customer: Customer, version: int) -> tuple[Item, list[Item]]:
    """The customer row (with its lookup keys) and its audience index rows, which carry the
    whole customer."""
    data = customer.to_dict()
    rows = [
        {
            **key,
            "postal_key": f"{sub.postal_code}#{sub.region}#{customer.customer_id}",
            "customer": data,
        }
        for key, sub in zip(subscription_keys(customer), customer.services, strict=True)
    ]
    return {**data, EMAIL_KEY: email_key(customer.email), "version": version}, rows


class Tables:
    """The DynamoDB client (created on first use) and the few write patterns every store
    shares."""

    def __init__(self, names: Names, dynamodb: Any | None = None) -> None:
        self.names = names
        self._dynamodb = dynamodb

    @property
    def db(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = aws.client("dynamodb")
        return self._dynamodb

    def _write_if(self, operation: str, **request: Any) -> bool:
        """Run a conditional write; False when its condition did not hold. A transaction
        that met another on the same item (every settle moves its broadcast's counter) is
        tried again: botocore does not, and the conflict says nothing about the condition."""
        attempt = 0
        while True:
            try:
                getattr(self.db, operation)(**request)
                return True
            except Exception as exc:
                if _is_conditional_failure(exc):
                    return False
                attempt += 1
                if not _is_transaction_conflict(exc) or attempt == TRANSACTION_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.025 * 2**attempt))

    def _get(self, table: str, key: Mapping[str, Any], *, consistent: bool = False) -> Item | None:
        response = self.db.get_item(TableName=table, Key=to_dynamo(key), ConsistentRead=consistent)
        item = response.get("Item")
        return from_dynamo(item) if item else None

    def _batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        pending = {table: requests}
        for attempt in range(8):
            response = self.db.batch_write_item(RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return
            time.sleep(min(2.0, 0.05 * 2**attempt))
        raise RuntimeError(f"DynamoDB left {len(pending[table])} writes to {table} unprocessed")

    def _get_many(
        self,
        table: str,
        keys: Sequence[Mapping[str, Any]],
        *,
        consistent: bool = False,
        projection: str | None = None,
    ) -> list[Item]:
        """BatchGetItem, 100 keys a call, retrying what DynamoDB leaves unprocessed; the
        items found, in no particular order."""
        found: list[Item] = []
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {
                "Keys": [to_dynamo(k) for k in keys[start : start + 100]],
                "ConsistentRead": consistent,
            }
            if projection:
                request["ProjectionExpression"] = projection
            pending: dict[str, Any] = {table: request}
            for attempt in range(8):
                response = self.db.batch_get_item(RequestItems=pending)
                found += [from_dynamo(i) for i in response.get("Responses", {}).get(table, [])]
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
                time.sleep(min(2.0, 0.05 * 2**attempt))
            else:
                raise RuntimeError(f"DynamoDB left reads of {table} unprocessed")
        return found

    def _query_page(
        self, request: dict[str, Any], start_key: dict[str, Any] | None
    ) -> tuple[list[Item], dict[str, Any] | None]:
        """One page of a Query, resumed after `start_key`; the items and where to resume."""
        if start_key:
            request = {**request, "ExclusiveStartKey": start_key}
        response = self.db.query(**request)
        return [from_dynamo(i) for i in response.get("Items", [])], response.get("LastEvaluatedKey")

    def _query_all(self, **request: Any) -> Iterable[Item]:
        for page in self.db.get_paginator("query").paginate(**request):
            for item in page.get("Items", []):
                yield from_dynamo(item)


class Store(Tables):
    # -- customers ------------------------------------------------------------------------

    def get_customer(self, customer_id: str) -> Customer | None:
        item = self._get(self.names.customers, {"customer_id": customer_id})
        return Customer.from_dict(item) if item else None

    def get_customers(self, customer_ids: Iterable[str]) -> dict[str, Customer]:
        keys = [{"customer_id": c} for c in dict.fromkeys(customer_ids)]
        return {
            str(item["customer_id"]): Customer.from_dict(item)
            for item in self._get_many(self.names.customers, keys)
        }

    def upsert_customer(self, customer: Customer) -> str:
        """Write the customer and its audience index rows in one transaction.

        Returns "created", "updated" or "unchanged"; a concurrent writer of the same
        customer makes this raise Conflict rather than leave stale index rows.
        """
        old_item = self._get(self.names.customers, {"customer_id": customer.customer_id})
        if old_item is not None:
            old_version = int(old_item.pop("version", 0))
            # A row written before the lookup keys existed is rewritten once to gain them.
            if Customer.from_dict(old_item) == customer and old_item.get(EMAIL_KEY) == email_key(
                customer.email
            ):
                return "unchanged"
        customer_item, rows = customer_items(customer, (old_version + 1) if old_item else 1)
        put_customer: dict[str, Any] = {
            "TableName": self.names.customers,
            "Item": to_dynamo(customer_item),
        }
        if old_item is None:
            put_customer["ConditionExpression"] = "attribute_not_exists(customer_id)"
        else:
            put_customer["ConditionExpression"] = "version = :v"
            put_customer["ExpressionAttributeValues"] = to_dynamo({":v": old_version})
        actions: list[dict[str, Any]] = [{"Put": put_customer}]
        actions.extend(
            {"Put": {"TableName": self.names.subscriptions, "Item": to_dynamo(row)}} for row in rows
        )
        new_keys = subscription_keys(customer)
        if old_item is not None:
            for key in subscription_keys(Customer.from_dict(old_item)):
                if key not in new_keys:
                    actions.append(
                        {"Delete": {"TableName": self.names.subscriptions, "Key": to_dynamo(key)}}
                    )
        if not self._write_if("transact_write_items", TransactItems=actions):
            raise Conflict(f"customer {customer.customer_id} was changed concurrently; retry")
        return "updated" if old_item else "created"

    def load_new_customers(self, customers: Sequence[Customer]) -> None:
        """Bulk-write customers known to be new (seeding empty tables): 25 items a call,
        no transaction and no clean-up of old index rows, unlike `upsert_customer`."""
        customer_requests: list[dict[str, Any]] = []
        row_requests: list[dict[str, Any]] = []
        for customer in customers:
            customer_item, rows = customer_items(customer, 1)
            customer_requests.append({"PutRequest": {"Item": to_dynamo(customer_item)}})
            row_requests.extend({"PutRequest": {"Item": to_dynamo(row)}} for row in rows)
        for table, requests in (
            (self.names.customers, customer_requests),
            (self.names.subscriptions, row_requests),
        ):
            for start in range(0, len(requests), 25):
                self._batch_write(table, requests[start : start + 25])

    def customer_ids_by_phone(self, phone: str, *, limit: int) -> list[str]:
        """Ids of customers whose E.164 `phone` it is (GSI `by-phone`, eventually consistent)."""
        return self._customer_ids_on("by-phone", "phone", phone, limit)

    def customer_ids_by_email(self, email: str, *, limit: int) -> list[str]:
        """Ids of customers with this (normalised) address, in any case (GSI `by-email`)."""
        return self._customer_ids_on("by-email", EMAIL_KEY, email_key(email) or "", limit)

    def _customer_ids_on(self, index: str, attribute: str, value: str, limit: int) -> list[str]:
        items, _ = self._query_page(
            {
                "TableName": self.names.customers,
                "IndexName": index,
                "KeyConditionExpression": "#k = :v",
                "ExpressionAttributeNames": {"#k": attribute},
                "ExpressionAttributeValues": to_dynamo({":v": value}),
                "Limit": limit,
            },
            None,
        )
        return [str(item["customer_id"]) for item in items]

    def query_subscriptions(
        self,
        service: str,
        *,
        by_postal: bool,
        key_prefix: str,
        start_key: dict[str, Any] | None,
        limit: int,
    ) -> Page[SubscriptionRow]:
        sort_attr = "postal_key" if by_postal else "sub_key"
        request: dict[str, Any] = {
            "TableName": self.names.subscriptions,
            "KeyConditionExpression": "service = :s",
            "ExpressionAttributeValues": to_dynamo({":s": service}),
            "Limit": limit,
        }
        if key_prefix:
            # DynamoDB refuses an empty string in a key condition: no prefix, no condition.
            request["KeyConditionExpression"] += " AND begins_with(#k, :p)"
            request["ExpressionAttributeNames"] = {"#k": sort_attr}
            request["ExpressionAttributeValues"] = to_dynamo({":s": service, ":p": key_prefix})
        if by_postal:
            request["IndexName"] = "by-postal"
        if start_key:
            request["ExclusiveStartKey"] = start_key
        response = self.db.query(**request)
        rows = [from_dynamo(item) for item in response.get("Items", [])]
        return Page(
            [SubscriptionRow(row[sort_attr], Customer.from_dict(row["customer"])) for row in rows],
            response.get("LastEvaluatedKey"),
        )

    # -- incidents ------------------------------------------------------------------------

    def create_incident(self, incident: Incident) -> None:
        item = incident.to_dict()
        if incident.status is not IncidentStatus.RESOLVED:
            item[OPEN_MARK] = "open"
        self.db.put_item(
            TableName=self.names.incidents,
            Item=to_dynamo(item),
            ConditionExpression="attribute_not_exists(incident_id)",
        )

    def open_incidents(self, limit: int = 100) -> list[Incident]:
        """Unresolved incidents, newest first (a sparse index: resolving drops the mark)."""
        items, _ = self._query_page(
            {
                "TableName": self.names.incidents,
                "IndexName": "open-incidents",
                "KeyConditionExpression": f"{OPEN_MARK} = :o",
                "ExpressionAttributeValues": to_dynamo({":o": "open"}),
                "ScanIndexForward": False,
                "Limit": limit,
            },
            None,
        )
        return [Incident.from_dict(item) for item in items]

    def get_incident(self, incident_id: str) -> Incident | None:
        item = self._get(self.names.incidents, {"incident_id": incident_id})
        return Incident.from_dict(item) if item else None

    def get_incidents(self, incident_ids: Iterable[str]) -> dict[str, Incident]:
        keys = [{"incident_id": i} for i in dict.fromkeys(incident_ids)]
        return {
            str(item["incident_id"]): Incident.from_dict(item)
            for item in self._get_many(self.names.incidents, keys)
        }

    def save_incident(self, incident: Incident, *, expected_updated_at: str) -> None:
        """Write what an incident update may change: status, next update due, updated_at.

        Only those fields, never the whole item: `audience_frozen` is set apart by the
        planner (`freeze_audience`), and a writer that read the incident before the freeze
        must not clear it. Title, services and regions are fixed when the incident opens.
        The condition on `updated_at` still refuses a write based on a stale read, and an
        incident that does not exist (no `updated_at`) is never created here.
        """
        values: dict[str, Any] = {
            ":u": expected_updated_at,
            ":status": incident.status.value,
            ":updated_at": incident.updated_at,
        }
        sets = ["#status = :status", "updated_at = :updated_at"]
        removes = []
        if incident.next_update_due is None:
            # Absent rather than null, as create_incident leaves it.
            removes.append("next_update_due")
        else:
            sets.append("next_update_due = :next_update_due")
            values[":next_update_due"] = incident.next_update_due
        if incident.status is IncidentStatus.RESOLVED:
            removes.append(OPEN_MARK)
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        if not self._write_if(
            "update_item",
            TableName=self.names.incidents,
            Key=to_dynamo({"incident_id": incident.incident_id}),
            UpdateExpression=expression,
            ConditionExpression="updated_at = :u",
            # `status` is a DynamoDB reserved word.
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=to_dynamo(values),
        ):
            raise Conflict("incident was changed concurrently; reload and retry")

    def freeze_audience(self, incident_id: str) -> None:
        self.db.update_item(
            TableName=self.names.incidents,
            Key=to_dynamo({"incident_id": incident_id}),
            UpdateExpression="SET audience_frozen = :t",
            ExpressionAttributeValues=to_dynamo({":t": True}),
        )

    # -- broadcasts -----------------------------------------------------------------------

    def create_broadcast(self, broadcast: Broadcast) -> None:
        item = {k: v for k, v in broadcast.to_dict().items() if k not in ("counts", "deferred")}
        item["plan_cursor"] = broadcast.plan_cursor
        for channel in broadcast.channels:
            for field in COUNT_FIELDS:
                item[counter_name(channel, field)] = 0
        self.db.put_item(
            TableName=self.names.broadcasts,
            Item=to_dynamo(item),
            ConditionExpression="attribute_not_exists(broadcast_id)",
        )

    def get_broadcast(self, broadcast_id: str, *, consistent: bool = False) -> Broadcast | None:
        item = self._get(
            self.names.broadcasts, {"broadcast_id": broadcast_id}, consistent=consistent
        )
        if item is None:
            return None
        return self._counted([_broadcast_from(item)], consistent=consistent)[0]

    def get_broadcasts(self, broadcast_ids: Iterable[str]) -> dict[str, Broadcast]:
        keys = [{"broadcast_id": b} for b in dict.fromkeys(broadcast_ids)]
        found = self._counted(
            [_broadcast_from(item) for item in self._get_many(self.names.broadcasts, keys)]
        )
        return {broadcast.broadcast_id: broadcast for broadcast in found}

    def _counted(self, broadcasts: list[Broadcast], *, consistent: bool = False) -> list[Broadcast]:
        """Add what the counter shards hold (see `counter_shard`) to each broadcast's counts."""
        by_id = {b.broadcast_id: b for b in broadcasts}
        keys = [{"broadcast_id": f"{b}#{shard}"} for b in by_id for shard in range(COUNTER_SHARDS)]
        for item in self._get_many(self.names.broadcasts, keys, consistent=consistent):
            broadcast = by_id[str(item["broadcast_id"]).rsplit("#", 1)[0]]
            for channel, counts in broadcast.counts.items():
                for name in COUNT_FIELDS:
                    added = int(item.get(counter_name(channel, name), 0))
                    setattr(counts, name, getattr(counts, name) + added)
        return broadcasts

    def broadcasts_for_incident(self, incident_id: str) -> list[Broadcast]:
        paginator = self.db.get_paginator("query")
        found: list[Broadcast] = []
        for page in paginator.paginate(
            TableName=self.names.broadcasts,
            IndexName="by-incident",
            KeyConditionExpression="incident_id = :i",
            ExpressionAttributeValues=to_dynamo({":i": incident_id}),
        ):
            found.extend(_broadcast_from(from_dynamo(i)) for i in page.get("Items", []))
        return self._counted(found)

    def broadcasts_in_status(self, status: BroadcastStatus) -> list[Broadcast]:
        paginator = self.db.get_paginator("query")
        found: list[Broadcast] = []
        for page in paginator.paginate(
            TableName=self.names.broadcasts,
            IndexName="by-status",
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=to_dynamo({":s": status.value}),
        ):
            found.extend(_broadcast_from(from_dynamo(i)) for i in page.get("Items", []))
        return self._counted(found)

    def transition(
        self,
        broadcast_id: str,
        from_status: BroadcastStatus,
        to_status: BroadcastStatus,
        **attributes: Any,
    ) -> bool:
        """Move a broadcast between statuses; False when it was not in `from_status`."""
        values: dict[str, Any] = {":from": from_status.value, ":to": to_status.value}
        sets = ["#s = :to"]
        for i, (name, value) in enumerate(attributes.items()):
            sets.append(f"{name} = :a{i}")
            values[f":a{i}"] = value
        return self._write_if(
            "update_item",
            TableName=self.names.broadcasts,
            Key=to_dynamo({"broadcast_id": broadcast_id}),
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="#s = :from",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=to_dynamo(values),
        )

    def mark_first_sent(self, broadcast_id: str, at: str) -> bool:
        """Record when the broadcast's first notice went out; True for the one caller that
        did (every worker that sends before it sees the mark tries)."""
        return self._write_if(
            "update_item",
            TableName=self.names.broadcasts,
            Key=to_dynamo({"broadcast_id": broadcast_id}),
            UpdateExpression="SET first_sent_at = :at",
            ConditionExpression=(
                "attribute_exists(broadcast_id) AND attribute_not_exists(first_sent_at)"
            ),
            ExpressionAttributeValues=to_dynamo({":at": at}),
        )

    def commit_plan_page(
        self,
        broadcast_id: str,
        *,
        expected_cursor: str,
        next_cursor: str,
        planned: Mapping[Channel, int],
        unreachable: int,
        done: bool,
        deferred: int = 0,
    ) -> bool:
        """Count one planned page exactly once: the cursor moves only from where it was."""
        values: dict[str, Any] = {
            ":expected": expected_cursor,
            ":next": next_cursor,
            ":done": done,
            ":unreachable": unreachable,
            ":deferred": deferred,
            ":now": int(time.time()),
        }
        # `deferred` is a reserved word in DynamoDB expressions.
        adds = ["unreachable :unreachable", "n_deferred :deferred"]
        for i, (channel, count) in enumerate(planned.items()):
            adds.append(f"{counter_name(channel, 'planned')} :p{i}")
            values[f":p{i}"] = count
        return self._write_if(
            "update_item",
            TableName=self.names.broadcasts,
            Key=to_dynamo({"broadcast_id": broadcast_id}),
            UpdateExpression=(
                "SET plan_cursor = :next, planning_done = :done, plan_touched = :now "
                "ADD " + ", ".join(adds)
            ),
            ConditionExpression="plan_cursor = :expected",
            ExpressionAttributeValues=to_dynamo(values),
        )

    # -- audience snapshots ---------------------------------------------------------------

    def put_audience(self, incident_id: str, customers: Sequence[Customer]) -> None:
        """Idempotent: writing the same member again leaves one row."""
        requests = [
            {
                "PutRequest": {
                    "Item": to_dynamo(
                        {"incident_id": incident_id, "customer_id": c.customer_id, **c.to_dict()}
                    )
                }
            }
            for c in customers
        ]
        for start in range(0, len(requests), BATCH_WRITE_ITEMS):
            self._batch_write(self.names.audiences, requests[start : start + BATCH_WRITE_ITEMS])

    def query_audience(
        self, incident_id: str, *, start_key: dict[str, Any] | None, limit: int
    ) -> Page[Customer]:
        items, next_key = self._query_page(
            {
                "TableName": self.names.audiences,
                "KeyConditionExpression": "incident_id = :i",
                "ExpressionAttributeValues": to_dynamo({":i": incident_id}),
                "Limit": limit,
            },
            start_key,
        )
        return Page([Customer.from_dict(i) for i in items], next_key)

    def audience_memberships(self, customer_id: str, incident_ids: Iterable[str]) -> set[str]:
        """Which of `incident_ids` have `customer_id` in their audience snapshot."""
        keys = [{"incident_id": i, "customer_id": customer_id} for i in dict.fromkeys(incident_ids)]
        items = self._get_many(self.names.audiences, keys, projection="incident_id")
        return {str(item["incident_id"]) for item in items}

    def recent_shipments(self, customer_id: str, *, limit: int) -> Page[Item]:
        """The customer's most recently changed shipment rows (GSI `by-customer` of the
        shipments table), newest first."""
        items, next_key = self._query_page(
            {
                "TableName": self.names.shipments,
                "IndexName": "by-customer",
                "KeyConditionExpression": "customer_id = :c",
                "ExpressionAttributeValues": to_dynamo({":c": customer_id}),
                "ScanIndexForward": False,
                "Limit": limit,
            },
            None,
        )
        return Page(items, next_key)

    def query_lane(self, lane: str, *, start_key: dict[str, Any] | None, limit: int) -> Page[str]:
        """`<customer>#<tracking code>` of the outbound parcels on their way on `lane`, in
        order (GSI `by-lane` of the shipments table holds only those)."""
        items, next_key = self._query_page(
            {
                "TableName": self.names.shipments,
                "IndexName": "by-lane",
                "KeyConditionExpression": "lane_key = :l",
                "ExpressionAttributeValues": to_dynamo({":l": lane}),
                "Limit": limit,
            },
            start_key,
        )
        return Page([str(i["lane_sort"]) for i in items], next_key)

    # -- delivery ledger ------------------------------------------------------------------

    def claim_delivery(
        self,
        broadcast_id: str,
        customer_id: str,
        channel: Channel,
        *,
        lease_seconds: int,
        held: bool = False,
    ) -> Claim:
        """Record the intent to send before sending; only one worker can hold it. `held`
        marks a notice that waited for quiet hours, for reconcile to tell apart."""
        attempt_id = uuid.uuid4().hex
        now = int(time.time())
        key = {"broadcast_id": broadcast_id, "recipient_key": f"{customer_id}#{channel.value}"}
        try:
            response = self.db.update_item(
                TableName=self.names.deliveries,
                Key=to_dynamo(key),
                UpdateExpression=(
                    "SET #s = :sending, attempt_id = :a, lease_until = :lease, "
                    "customer_id = :c, channel = :ch, updated_at = :now, held = :held, "
                    "expires_at = :exp ADD attempts :one"
                ),
                ConditionExpression="attribute_not_exists(broadcast_id) OR #s = :retry",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=to_dynamo(
                    {
                        ":sending": "sending",
                        ":retry": "retry",
                        ":a": attempt_id,
                        ":lease": now + lease_seconds,
                        ":c": customer_id,
                        ":ch": channel.value,
                        ":now": now,
                        ":one": 1,
                        ":held": held,
                        ":exp": now + LEDGER_RETENTION_SECONDS,
                    }
                ),
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if not _is_conditional_failure(exc):
                raise
            existing = self._get(self.names.deliveries, key, consistent=True) or {}
            status = str(existing.get("status", ""))
            if status != "sending":
                return Claim(ClaimState.SETTLED, "", status=status)
            if int(existing.get("lease_until", 0)) > now:
                return Claim(ClaimState.IN_FLIGHT, str(existing.get("attempt_id", "")))
            return Claim(ClaimState.IN_DOUBT, str(existing.get("attempt_id", "")))
        attempts = int(from_dynamo(response["Attributes"]).get("attempts", 1))
        return Claim(ClaimState.CLAIMED, attempt_id, attempts=attempts)

    def record_outcome(
        self,
        broadcast_id: str,
        customer_id: str,
        channel: Channel,
        *,
        attempt_id: str,
        status: str,
        counter: str,
        provider_id: str | None = None,
        reason: str | None = None,
        count: bool = True,
        moves_to: Channel | None = None,
        also: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        """Settle a claimed delivery and count it, together, once.

        `count=False` settles the ledger row alone: per-customer notices (shipments) use the
        same ledger under their notice id but have no broadcast whose counter to move.
        `moves_to` hands the notice to a fallback channel: that channel's `planned` grows in
        the same write, so the broadcast is never complete with the handover half done.
        `also` adds transaction items that must succeed with the settle (a digest entry).
        """
        key = {"broadcast_id": broadcast_id, "recipient_key": f"{customer_id}#{channel.value}"}
        values = {
            ":status": status,
            ":sending": "sending",
            ":a": attempt_id,
            ":now": int(time.time()),
            ":pid": provider_id or "",
            ":reason": reason or "",
        }
        settle: dict[str, Any] = {
            "TableName": self.names.deliveries,
            "Key": to_dynamo(key),
            "UpdateExpression": (
                "SET #s = :status, updated_at = :now, provider_id = :pid, "
                "reason = :reason REMOVE lease_until"
            ),
            "ConditionExpression": "#s = :sending AND attempt_id = :a",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": to_dynamo(values),
        }
        if not count:
            return self._write_if("update_item", **settle)
        counters = [counter_name(channel, counter)]
        if moves_to is not None:
            counters.append(counter_name(moves_to, "planned"))
        return self._write_if(
            "transact_write_items",
            TransactItems=[
                {"Update": settle},
                {
                    "Update": {
                        "TableName": self.names.broadcasts,
                        "Key": to_dynamo(
                            {"broadcast_id": counter_shard(broadcast_id, customer_id)}
                        ),
                        "UpdateExpression": "ADD " + ", ".join(f"{c} :one" for c in counters),
                        "ExpressionAttributeValues": to_dynamo({":one": 1}),
                    }
                },
                *also,
            ],
        )

    def release_delivery(
        self, broadcast_id: str, customer_id: str, channel: Channel, *, attempt_id: str, reason: str
    ) -> None:
        """Give a claim back after a transient failure, so a retry can claim it again."""
        key = {"broadcast_id": broadcast_id, "recipient_key": f"{customer_id}#{channel.value}"}
        # A claim that is no longer ours was settled by someone else: nothing to give back.
        self._write_if(
            "update_item",
            TableName=self.names.deliveries,
            Key=to_dynamo(key),
            UpdateExpression="SET #s = :retry, reason = :reason REMOVE lease_until",
            ConditionExpression="#s = :sending AND attempt_id = :a",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=to_dynamo(
                {":retry": "retry", ":reason": reason, ":sending": "sending", ":a": attempt_id}
            ),
        )

    def deliveries_for_customer(
        self, customer_id: str, *, start_key: dict[str, Any] | None, limit: int
    ) -> Page[Item]:
        """A page of the customer's ledger rows, broadcasts and shipment notices alike, in
        id order (GSI `by-customer`)."""
        items, next_key = self._query_page(
            {
                "TableName": self.names.deliveries,
                "IndexName": "by-customer",
                "KeyConditionExpression": "customer_id = :c",
                "ExpressionAttributeValues": to_dynamo({":c": customer_id}),
                "Limit": limit,
            },
            start_key,
        )
        return Page(items, next_key)

    def deliveries(self, broadcast_id: str) -> Iterable[Item]:
        paginator = self.db.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.names.deliveries,
            KeyConditionExpression="broadcast_id = :b",
            ExpressionAttributeValues=to_dynamo({":b": broadcast_id}),
        ):
            for item in page.get("Items", []):
                yield from_dynamo(item)


def _broadcast_from(item: Item) -> Broadcast:
    channels = tuple(Channel(c) for c in item.get("channels", ()))
    return Broadcast(
        broadcast_id=item["broadcast_id"],
        incident_id=item["incident_id"],
        phase=Phase(item["phase"]),
        template=item["template"],
        channels=channels,
        audience=AudienceSelector.from_dict(item["audience"]) if item.get("audience") else None,
        variables={str(k): str(v) for k, v in (item.get("variables") or {}).items()},
        status=BroadcastStatus(item["status"]),
        created_by=item["created_by"],
        created_at=item["created_at"],
        approved_by=item.get("approved_by"),
        approved_at=item.get("approved_at"),
        sent_at=item.get("sent_at"),
        first_sent_at=item.get("first_sent_at"),
        halted_by=item.get("halted_by"),
        halted_at=item.get("halted_at"),
        public_post=bool(item.get("public_post", False)),
        public_post_id=item.get("public_post_id"),
        public_post_error=item.get("public_post_error"),
        source_update=(
            {str(k): str(v) for k, v in item["source_update"].items()}
            if item.get("source_update")
            else None
        ),
        planning_done=bool(item.get("planning_done", False)),
        plan_cursor=str(item.get("plan_cursor", "")),
        plan_touched=int(item.get("plan_touched", 0)),
        unreachable=int(item.get("unreachable", 0)),
        hold_quiet_hours=bool(item.get("hold_quiet_hours", False)),
        deferred=int(item.get("n_deferred", 0)),
        counts={
            channel: ChannelCounts(
                **{field: int(item.get(counter_name(channel, field), 0)) for field in COUNT_FIELDS}
            )
            for channel in channels
        },
    )


def encode_cursor(stream: int, key: dict[str, Any] | None) -> str:
    return json.dumps({"stream": stream, "key": key}, sort_keys=True, separators=(",", ":"))


def decode_cursor(cursor: str) -> tuple[int, dict[str, Any] | None]:
    if not cursor:
        return 0, None
    data = json.loads(cursor)
    return int(data["stream"]), data.get("key")
