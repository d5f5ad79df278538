"""DynamoDB tables of the listening flow: topics and their checkpoints, posts, bucket
counters, detector state, emerging issues and flagged posts.

A post is stored and counted in one transaction, conditional on the post being new, so no
retry or overlapping scan can count it twice. Documents with floats (issue evidence, flag
snapshots) are stored as JSON text: DynamoDB numbers would need Decimal everywhere.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain import iso, utcnow
from chalicelib.emerging import (
    BucketCounts,
    Change,
    Issue,
    IssueEvent,
    Policy,
    ScoredPost,
    TopicWatch,
)
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.listening import Checkpoint
from chalicelib.posts import Post, Topic
from chalicelib.sentiment import Sentiment
from chalicelib.store import Item, Tables, from_dynamo, to_dynamo

WATCH_KEY = "~watch"  # sorts after every ISO bucket key, so bucket range queries skip it
# Keys of the flags table that are not posts start with "~" (X post ids are digits). Such an
# item has no `state`, so the `by-state` index, and every list of flags, leaves it out.
REPLIES_KEY = "~replies#"  # + author: the author's reply slots (see `take_reply_slot`)
LANES_KEY = "~lanes"  # the partition listing carrier lanes with recent events
POST_DAYS = 30
BUCKET_DAYS = 35
FLAG_DAYS = 90


def _expires(days: int) -> int:
    return int(time.time()) + days * 86400


def post_key(post: Post) -> str:
    return f"{iso(post.created_at)}#{post.id}"


def bucket_add(table: str, topic: str, bucket: datetime, counts: BucketCounts) -> dict[str, Any]:
    """The UpdateItem request (or TransactWriteItems `Update`) adding `counts` to a bucket."""
    adds = {"posts": counts.posts, "negative": counts.negative, "complaint": counts.complaint}
    adds.update({f"c_{cluster}": n for cluster, n in counts.clusters.items()})
    names = {f"#a{i}": name for i, name in enumerate(adds)}
    values: dict[str, Any] = {f":a{i}": n for i, n in enumerate(adds.values())}
    return {
        "TableName": table,
        "Key": to_dynamo({"topic_id": topic, "bucket": iso(bucket)}),
        "UpdateExpression": "ADD "
        + ", ".join(f"#a{i} :a{i}" for i in range(len(adds)))
        + " SET expires_at = :e",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_dynamo({**values, ":e": _expires(BUCKET_DAYS)}),
    }


def lane_seen(table: str, lane: str, now: datetime) -> dict[str, Any]:
    """The update that keeps `lane` in the index of lanes to judge while it has events."""
    return {
        "TableName": table,
        "Key": to_dynamo({"topic_id": LANES_KEY, "bucket": lane}),
        "UpdateExpression": "SET first_seen = if_not_exists(first_seen, :n), last_seen = :n,"
        " expires_at = :e",
        "ExpressionAttributeValues": to_dynamo({":n": iso(now), ":e": _expires(BUCKET_DAYS)}),
    }


@dataclass(frozen=True)
class ReplySlot:
    """One of an author's reply slots, taken by one reply attempt (`token`)."""

    author: str
    index: int
    token: str


@dataclass(frozen=True)
class FlagFilter:
    state: str = "open"
    topic: str | None = None
    issue_id: str | None = None
    label: str | None = None
    min_followers: int = 0
    limit: int = 50
    cursor: str | None = None


class SignalTables(Tables):
    # -- topics and checkpoints ------------------------------------------------------------

    def put_topic(self, topic: Topic) -> None:
        self.db.update_item(
            TableName=self.names.topics,
            Key=to_dynamo({"topic_id": topic.id}),
            UpdateExpression="SET #q = :q, services = :s, places = :p",
            ExpressionAttributeNames={"#q": "query"},
            ExpressionAttributeValues=to_dynamo(
                {":q": topic.query, ":s": list(topic.services), ":p": dict(topic.places)}
            ),
        )

    def topics(self) -> list[Topic]:
        found: list[Topic] = []
        for page in self.db.get_paginator("scan").paginate(TableName=self.names.topics):
            found.extend(_topic(from_dynamo(i)) for i in page.get("Items", []))
        return sorted(found, key=lambda t: t.id)

    def topic_state(self, topic_id: str) -> Item:
        item = self._get(self.names.topics, {"topic_id": topic_id})
        if item is None:
            raise NotFound(f"no topic {topic_id}")
        return item

    def checkpoint(self, topic_id: str) -> Checkpoint:
        item = self._get(self.names.topics, {"topic_id": topic_id}, consistent=True) or {}
        return Checkpoint(**dict(item.get("checkpoint") or {}))

    def save_checkpoint(self, topic_id: str, checkpoint: Checkpoint) -> None:
        self.db.update_item(
            TableName=self.names.topics,
            Key=to_dynamo({"topic_id": topic_id}),
            UpdateExpression="SET #c = :c",
            ExpressionAttributeNames={"#c": "checkpoint"},
            ExpressionAttributeValues=to_dynamo(
                {":c": {k: v for k, v in checkpoint.to_dict().items() if v is not None}}
            ),
        )

    # -- posts and counters ----------------------------------------------------------------

    def add_post(self, scored: ScoredPost, bucket: datetime) -> bool:
        post, feeling = scored.post, scored.sentiment
        counts = BucketCounts()
        counts.add(feeling)
        item = {
            "topic_id": post.topic,
            "at_id": post_key(post),
            "post": json.dumps(scored.to_dict(), separators=(",", ":")),
            "expires_at": _expires(POST_DAYS),
        }
        return self._write_if(
            "transact_write_items",
            TransactItems=[
                {
                    "Put": {
                        "TableName": self.names.posts,
                        "Item": to_dynamo(item),
                        "ConditionExpression": "attribute_not_exists(at_id)",
                    }
                },
                {"Update": bucket_add(self.names.signals, post.topic, bucket, counts)},
            ],
        )

    def bucket_counts(
        self, topic: str, first: datetime, last: datetime
    ) -> dict[datetime, BucketCounts]:
        from chalicelib.posts import parse_time

        found: dict[datetime, BucketCounts] = {}
        for item in self._query_all(
            TableName=self.names.signals,
            KeyConditionExpression="topic_id = :t AND bucket BETWEEN :a AND :b",
            ExpressionAttributeValues=to_dynamo({":t": topic, ":a": iso(first), ":b": iso(last)}),
            ConsistentRead=True,
        ):
            found[parse_time(item["bucket"])] = BucketCounts(
                posts=int(item.get("posts", 0)),
                negative=int(item.get("negative", 0)),
                complaint=int(item.get("complaint", 0)),
                clusters={
                    k.removeprefix("c_"): int(v) for k, v in item.items() if k.startswith("c_")
                },
            )
        return found

    def posts_between(self, topic: str, start: datetime, end: datetime) -> list[ScoredPost]:
        return [
            _scored(json.loads(item["post"]))
            for item in self._query_all(
                TableName=self.names.posts,
                KeyConditionExpression="topic_id = :t AND at_id BETWEEN :a AND :b",
                ExpressionAttributeValues=to_dynamo(
                    # Keys are "<iso>#<id>": everything from `start` up to just before `end`.
                    {":t": topic, ":a": iso(start), ":b": iso(end)}
                ),
            )
            if item["at_id"] < iso(end)
        ]

    def lanes(self) -> dict[str, datetime]:
        """Carrier lanes with events in the last BUCKET_DAYS, and when each was first seen."""
        from chalicelib.posts import parse_time

        return {
            str(item["bucket"]): parse_time(str(item["first_seen"]))
            for item in self._query_all(
                TableName=self.names.signals,
                KeyConditionExpression="topic_id = :t",
                ExpressionAttributeValues=to_dynamo({":t": LANES_KEY}),
            )
        }

    # -- detector state --------------------------------------------------------------------

    def load_watch(self, topic: str, policy: Policy) -> tuple[TopicWatch | None, int]:
        item = self._get(
            self.names.signals, {"topic_id": topic, "bucket": WATCH_KEY}, consistent=True
        )
        if item is None:
            return None, 0
        state = json.loads(zlib.decompress(base64.b64decode(item["state"])))
        return TopicWatch.from_dict(state, policy), int(item["version"])

    def save_watch(self, topic: str, watch: TopicWatch, version: int) -> None:
        data = json.dumps(watch.to_dict(), separators=(",", ":"))
        packed = base64.b64encode(zlib.compress(data.encode()))
        condition = "attribute_not_exists(version)" if version == 0 else "version = :v"
        values: dict[str, Any] = {":v": version} if version else {}
        if not self._write_if(
            "put_item",
            TableName=self.names.signals,
            Item=to_dynamo(
                {
                    "topic_id": topic,
                    "bucket": WATCH_KEY,
                    "state": packed.decode(),
                    "version": version + 1,
                }
            ),
            ConditionExpression=condition,
            **({"ExpressionAttributeValues": to_dynamo(values)} if values else {}),
        ):
            raise Conflict(f"the detector of topic {topic} moved on concurrently")

    # -- emerging issues -------------------------------------------------------------------

    def record_issue(self, event: IssueEvent) -> bool:
        issue = event.issue
        doc = json.dumps(issue.to_dict(), separators=(",", ":"))
        if event.change is Change.OPENED:
            created = self._write_if(
                "put_item",
                TableName=self.names.emerging,
                Item=to_dynamo(
                    {
                        "issue_id": issue.issue_id,
                        "topic": issue.topic,
                        "cluster": issue.cluster,
                        "status": issue.status.value,
                        "opened_at": issue.opened_at,
                        "updated_at": issue.updated_at,
                        "doc": doc,
                        "notified": False,
                    }
                ),
                ConditionExpression="attribute_not_exists(issue_id)",
            )
            if created:
                return True
            stored = self._get(self.names.emerging, {"issue_id": issue.issue_id}, consistent=True)
            return not (stored or {}).get("notified", False)
        self.db.update_item(
            TableName=self.names.emerging,
            Key=to_dynamo({"issue_id": issue.issue_id}),
            UpdateExpression="SET #s = :s, updated_at = :u, doc = :d",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=to_dynamo(
                {":s": issue.status.value, ":u": issue.updated_at, ":d": doc}
            ),
        )
        return False

    def mark_notified(self, issue_id: str) -> None:
        self.db.update_item(
            TableName=self.names.emerging,
            Key=to_dynamo({"issue_id": issue_id}),
            UpdateExpression="SET notified = :t",
            ExpressionAttributeValues=to_dynamo({":t": True}),
        )

    def get_issue(self, issue_id: str) -> Issue:
        item = self._get(self.names.emerging, {"issue_id": issue_id}, consistent=True)
        if item is None:
            raise NotFound(f"no emerging issue {issue_id}")
        return _issue(item)

    def issues(self, status: str, limit: int = 100) -> list[Issue]:
        found: list[Issue] = []
        for item in self._query_all(
            TableName=self.names.emerging,
            IndexName="by-status",
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=to_dynamo({":s": status}),
            ScanIndexForward=False,
        ):
            found.append(_issue(item))
            if len(found) >= limit:
                break
        return found

    def link_issue(self, issue_id: str, incident_id: str) -> bool:
        """Link the issue to an incident once; False if it already has one."""
        return self._write_if(
            "update_item",
            TableName=self.names.emerging,
            Key=to_dynamo({"issue_id": issue_id}),
            UpdateExpression="SET incident_id = :i",
            ConditionExpression="attribute_exists(issue_id) AND attribute_not_exists(incident_id)",
            ExpressionAttributeValues=to_dynamo({":i": incident_id}),
        )

    # -- flagged posts ---------------------------------------------------------------------

    def flag(self, scored: ScoredPost, reason: str, issue_id: str | None) -> bool:
        post = scored.post
        values: dict[str, Any] = {
            ":st": "open",
            ":at": iso(utcnow()),
            ":doc": json.dumps(scored.to_dict(), separators=(",", ":")),
            ":topic": post.topic,
            ":label": scored.sentiment.label,
            ":f": post.author_followers or 0,
            ":r": {reason},
            ":e": _expires(FLAG_DAYS),
        }
        expression = (
            "SET #st = if_not_exists(#st, :st), flagged_at = if_not_exists(flagged_at, :at), "
            "doc = :doc, topic = :topic, label = :label, followers = :f, expires_at = :e"
        )
        if issue_id:
            values[":i"] = issue_id
            expression += ", issue_id = if_not_exists(issue_id, :i)"
        response = self.db.update_item(
            TableName=self.names.flags,
            Key=to_dynamo({"post_id": post.id}),
            UpdateExpression=expression + " ADD reasons :r",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues=to_dynamo(values),
            ReturnValues="UPDATED_OLD",
        )
        return "flagged_at" not in response.get("Attributes", {})

    def get_flag(self, post_id: str) -> Item:
        item = self._get(self.names.flags, {"post_id": post_id}, consistent=True)
        if item is None:
            raise NotFound(f"no flagged post {post_id}")
        return _flag(item)

    def set_flag_state(
        self, post_id: str, state: str, *, actor: str, incident_id: str | None = None
    ) -> Item:
        values: dict[str, Any] = {":s": state, ":by": actor, ":at": iso(utcnow())}
        expression = "SET #st = :s, decided_by = :by, decided_at = :at"
        if incident_id:
            values[":i"] = incident_id
            expression += ", incident_id = :i"
        if not self._write_if(
            "update_item",
            TableName=self.names.flags,
            Key=to_dynamo({"post_id": post_id}),
            UpdateExpression=expression,
            ConditionExpression="attribute_exists(post_id)",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues=to_dynamo(values),
        ):
            raise NotFound(f"no flagged post {post_id}")
        return self.get_flag(post_id)

    # -- replies to flagged posts ----------------------------------------------------------

    def claim_reply(self, post_id: str, token: str, *, actor: str, now: datetime) -> bool:
        """Mark a reply to the post as under way, once: False when the post has a reply
        already or another attempt holds the claim (`get_flag` tells which)."""
        if self._write_if(
            "update_item",
            TableName=self.names.flags,
            Key=to_dynamo({"post_id": post_id}),
            UpdateExpression="SET reply_claim = :t, reply_claimed_by = :by, reply_claimed_at = :at",
            ConditionExpression="attribute_exists(post_id) AND attribute_not_exists(reply_id)"
            " AND attribute_not_exists(reply_claim)",
            ExpressionAttributeValues=to_dynamo({":t": token, ":by": actor, ":at": iso(now)}),
        ):
            return True
        self.get_flag(post_id)  # NotFound when there is no such flag
        return False

    def release_reply(self, post_id: str, token: str) -> bool:
        """Give up this attempt's claim (nothing was posted); False if it held none."""
        return self._write_if(
            "update_item",
            TableName=self.names.flags,
            Key=to_dynamo({"post_id": post_id}),
            UpdateExpression="REMOVE reply_claim, reply_claimed_by, reply_claimed_at",
            ConditionExpression="reply_claim = :t",
            ExpressionAttributeValues=to_dynamo({":t": token}),
        )

    def record_reply(
        self, post_id: str, token: str, *, reply_id: str, text: str, actor: str, now: datetime
    ) -> Item:
        """Store the reply this attempt posted and mark the flag handled, in one write
        conditional on the attempt's claim."""
        at = iso(now)
        if not self._write_if(
            "update_item",
            TableName=self.names.flags,
            Key=to_dynamo({"post_id": post_id}),
            UpdateExpression="SET reply_id = :r, reply_text = :x, replied_by = :by,"
            " replied_at = :at, #st = :s, decided_by = :by, decided_at = :at"
            " REMOVE reply_claim, reply_claimed_by, reply_claimed_at",
            ConditionExpression="reply_claim = :t",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues=to_dynamo(
                {":r": reply_id, ":x": text, ":by": actor, ":at": at, ":s": "handled", ":t": token}
            ),
        ):
            raise Conflict(f"the reply claim on flagged post {post_id} was lost")
        return self.get_flag(post_id)

    def take_reply_slot(
        self, author: str, *, limit: int, window: timedelta, now: datetime, token: str
    ) -> ReplySlot | None:
        """Take one of the author's `limit` reply slots, or None when all were taken within
        `window` before `now`.

        A sliding window: the author's item (`~replies#<author>`) has attributes
        `slot_<i>` (epoch seconds the slot was taken) and `claim_<i>` (the attempt holding
        it). A slot is free when absent or taken at least `window` ago, and each is taken by
        a conditional write, so two writers never get the same one; as a slot is reused only
        a whole window after its last use, no span of `window` holds more than `limit`
        replies. `expires_at` lets DynamoDB's TTL drop the item once every slot is free.
        """
        moment = int(now.timestamp())
        cutoff = moment - int(window.total_seconds())
        key = to_dynamo({"post_id": REPLIES_KEY + author})
        for index in range(limit):
            if self._write_if(
                "update_item",
                TableName=self.names.flags,
                Key=key,
                UpdateExpression=f"SET slot_{index} = :n, claim_{index} = :t, expires_at = :e",
                ConditionExpression=f"attribute_not_exists(slot_{index}) OR slot_{index} <= :c",
                ExpressionAttributeValues=to_dynamo(
                    {
                        ":n": moment,
                        ":t": token,
                        ":c": cutoff,
                        # A day past the window: TTL deletes late, and never matters early.
                        ":e": moment + int(window.total_seconds()) + 86400,
                    }
                ),
            ):
                return ReplySlot(author, index, token)
        return None

    def give_back_reply_slot(self, slot: ReplySlot) -> bool:
        """Free a slot whose reply was not posted; False if this attempt no longer holds it."""
        return self._write_if(
            "update_item",
            TableName=self.names.flags,
            Key=to_dynamo({"post_id": REPLIES_KEY + slot.author}),
            UpdateExpression=f"REMOVE slot_{slot.index}, claim_{slot.index}",
            ConditionExpression=f"claim_{slot.index} = :t",
            ExpressionAttributeValues=to_dynamo({":t": slot.token}),
        )

    def flags(self, query: FlagFilter) -> tuple[list[Item], str | None]:
        """Newest first, filtered; the cursor continues where this page ended."""
        request: dict[str, Any] = {
            "TableName": self.names.flags,
            "IndexName": "by-state",
            "KeyConditionExpression": "#st = :s",
            "ExpressionAttributeNames": {"#st": "state"},
            "ExpressionAttributeValues": to_dynamo({":s": query.state}),
            "ScanIndexForward": False,
        }
        if query.cursor:
            request["ExclusiveStartKey"] = _decode_cursor(query.cursor)
        found: list[Item] = []
        while True:
            response = self.db.query(**request)
            for raw in response.get("Items", []):
                item = from_dynamo(raw)
                if _matches(item, query):
                    found.append(_flag(item))
                if len(found) >= query.limit:
                    key = {k: raw[k] for k in ("post_id", "state", "flagged_at")}
                    return found, _encode_cursor(key)
            last = response.get("LastEvaluatedKey")
            if not last:
                return found, None
            request["ExclusiveStartKey"] = last


def _matches(item: Mapping[str, Any], query: FlagFilter) -> bool:
    return (
        (query.topic is None or item.get("topic") == query.topic)
        and (query.issue_id is None or item.get("issue_id") == query.issue_id)
        and (query.label is None or item.get("label") == query.label)
        and int(item.get("followers", 0)) >= query.min_followers
    )


def _encode_cursor(key: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise BadRequest("cursor is not one this API returned") from None
    if not isinstance(key, dict) or set(key) != {"post_id", "state", "flagged_at"}:
        raise BadRequest("cursor is not one this API returned")
    return key


def _topic(item: Mapping[str, Any]) -> Topic:
    return Topic(
        id=str(item["topic_id"]),
        query=str(item.get("query", "")),
        services=tuple(item.get("services", [])),
        places={str(k): str(v) for k, v in dict(item.get("places") or {}).items()},
    )


def _scored(data: Mapping[str, Any]) -> ScoredPost:
    feeling = Sentiment(
        label=str(data["label"]), compound=float(data["compound"]), terms=tuple(data["terms"])
    )
    return ScoredPost(Post.from_dict(dict(data)), feeling)


def _issue(item: Mapping[str, Any]) -> Issue:
    data = json.loads(item["doc"])
    data["incident_id"] = item.get("incident_id")
    return Issue.from_dict(data)


_REPLY_FIELDS = ("reply_id", "reply_text", "replied_by", "replied_at")


def _flag(item: Mapping[str, Any]) -> Item:
    """A flag as the API shows it: the post (untrusted text), why and what became of it."""
    return {
        "post": json.loads(item["doc"]),
        "state": item.get("state"),
        "reasons": sorted(item.get("reasons", [])),
        "issue_id": item.get("issue_id"),
        "incident_id": item.get("incident_id"),
        "flagged_at": item.get("flagged_at"),
        "decided_by": item.get("decided_by"),
        "decided_at": item.get("decided_at"),
        # Only once replied to, so flags without a reply read as they always did.
        **{key: item[key] for key in _REPLY_FIELDS if key in item},
    }
