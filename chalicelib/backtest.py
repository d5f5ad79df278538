"""Backtests: replay recorded posts through the scheduled scan's own `Listener` on a
simulated clock, with the counters and detector state in memory.

The clock moves with the posts, in time order. Whenever it passes the end of a bucket, every
topic's closed buckets are judged, exactly as a scan at that moment would judge them, so
each decision sees only posts published before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chalicelib.emerging import (
    BucketCounts,
    BucketHook,
    Change,
    IssueEvent,
    Policy,
    ScoredPost,
    TopicWatch,
    bucket_start,
)
from chalicelib.listening import Listener, ListenReport
from chalicelib.posts import Post, Topic


@dataclass
class MemorySignals:
    """The SignalStore of a backtest. Posts are kept only until their bucket is judged, so
    memory stays flat however long the replay."""

    seen: set[tuple[str, str]] = field(default_factory=set)
    counts: dict[tuple[str, datetime], BucketCounts] = field(default_factory=dict)
    posts: dict[tuple[str, datetime], list[ScoredPost]] = field(default_factory=dict)
    watches: dict[str, TopicWatch] = field(default_factory=dict)
    events: list[IssueEvent] = field(default_factory=list)
    flagged: int = 0
    on_bucket: BucketHook | None = None

    def add_post(self, scored: ScoredPost, bucket: datetime) -> bool:
        key = (scored.post.topic, scored.post.id)
        if key in self.seen:
            return False
        self.seen.add(key)
        slot = (scored.post.topic, bucket)
        counts = self.counts.get(slot)
        if counts is None:
            counts = self.counts[slot] = BucketCounts()
        counts.add(scored.sentiment)
        self.posts.setdefault(slot, []).append(scored)
        return True

    def bucket_counts(
        self, topic: str, first: datetime, last: datetime
    ) -> dict[datetime, BucketCounts]:
        found = {}
        for (name, start), counts in list(self.counts.items()):
            if name == topic and first <= start <= last:
                found[start] = counts
                # Judged from here on: a backtest never goes back to a bucket.
                del self.counts[(name, start)]
        return found

    def posts_between(self, topic: str, start: datetime, end: datetime) -> list[ScoredPost]:
        return list(self.posts.get((topic, start), ()))

    def load_watch(self, topic: str, policy: Policy) -> tuple[TopicWatch | None, int]:
        if topic not in self.watches:
            self.watches[topic] = TopicWatch(topic, policy=policy, on_bucket=self.on_bucket)
        return self.watches[topic], 0

    def save_watch(self, topic: str, watch: TopicWatch, version: int) -> None:
        self.watches[topic] = watch
        if watch.cursor is not None:
            for slot in [s for s in self.posts if s[0] == topic and s[1] <= watch.cursor]:
                del self.posts[slot]

    def record_issue(self, event: IssueEvent) -> bool:
        self.events.append(event)
        return False

    def mark_notified(self, issue_id: str) -> None:
        pass

    def flag(self, scored: ScoredPost, reason: str, issue_id: str | None) -> bool:
        self.flagged += 1
        return True


@dataclass
class Backtest:
    policy: Policy
    high_reach_followers: int = 10_000
    store: MemorySignals = field(default_factory=MemorySignals)
    report: ListenReport = field(default_factory=ListenReport)
    topics: dict[str, Topic] = field(default_factory=dict)
    # When each topic was first seen: its detector starts from that bucket.
    first_seen: dict[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.listener = Listener(
            self.store, self.policy, high_reach_followers=self.high_reach_followers
        )

    def run(self, posts: Iterable[Post]) -> Iterator[IssueEvent]:
        """Yield every issue event in the order a live service would have seen them.
        `posts` must come in time order (see `in_time_order`)."""
        width = timedelta(seconds=self.policy.bucket_seconds)
        boundary: datetime | None = None
        for post in posts:
            if post.topic not in self.first_seen:
                self.topics.setdefault(post.topic, Topic(post.topic, query=""))
                self.first_seen[post.topic] = post.created_at
            if boundary is None:
                boundary = bucket_start(post.created_at, width.seconds) + width
            if post.created_at >= boundary:
                yield from self._judge_all(post.created_at)
                boundary = bucket_start(post.created_at, width.seconds) + width
            self.listener.ingest((post,), self.report)
        if boundary is not None:
            yield from self._judge_all(boundary)

    def _judge_all(self, now: datetime) -> Iterator[IssueEvent]:
        for topic in [t for t in self.topics.values() if t.id in self.first_seen]:
            before = len(self.store.events)
            self.listener.judge(topic, now, self.report, first=self.first_seen[topic.id])
            yield from self.store.events[before:]
        self.store.events.clear()


def in_time_order(posts: Iterable[Post]) -> list[Post]:
    """Recorded files are often newest first; a replay needs oldest first."""
    return sorted(posts, key=lambda p: (p.created_at, p.id))


def opened_summary(event: IssueEvent) -> dict[str, Any]:
    """What `forewarn backtest posts` prints for an issue it opened."""
    issue = event.issue
    return {
        "topic": issue.topic,
        "opened_at": issue.opened_at.replace("Z", "+00:00"),
        "cluster": issue.cluster,
        "terms": [term for term, _ in issue.terms],
        "posts": issue.posts,
        "negative_share": round(issue.negative_share, 3),
        "baseline": round(issue.baseline, 3),
        "sample_post_ids": [sample["id"] for sample in issue.samples],
        "locations": [place for place, _ in issue.locations[:3]],
    }


def is_opening(event: IssueEvent) -> bool:
    return event.change is Change.OPENED
