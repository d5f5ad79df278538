"""Listening: fetch new posts per topic, score them, count them, and judge closed buckets.

One `Listener` serves the scheduled scan (X and DynamoDB) and the backtest (a file and
memory), so a backtest replays what production would have done. Every step is idempotent:
a post is counted only by the write that stores it, a sweep of X's pages is checkpointed
page by page, and the detector state moves forward with a version check, so a scan that
crashes or overlaps another resumes without counting anything twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib import sentiment
from chalicelib.domain import iso, utcnow
from chalicelib.emerging import (
    BucketCounts,
    Change,
    Issue,
    IssueEvent,
    Policy,
    ScoredPost,
    TopicWatch,
    bucket_start,
)
from chalicelib.errors import Conflict
from chalicelib.posts import Post, Topic
from chalicelib.social_sources import PostSource, RateLimited, SourceError

log = logging.getLogger(__name__)

HIGH_REACH = "high_reach"
IN_ISSUE = "issue"
# A week of five-minute buckets: a scan that finds the detector further behind than this
# (the schedule was off for a long time) judges the newest week and lets the rest go.
MAX_CATCH_UP_BUCKETS = 2016


@dataclass(frozen=True)
class Checkpoint:
    """Where the next scan of a topic continues: after `since_id`, or in the middle of a
    sweep of pages (`next_token`, with the sweep's newest id and start time kept so that
    the sweep ends where it would have), or not before `resume_at` after a rate limit."""

    since_id: str | None = None
    next_token: str | None = None
    sweep_newest_id: str | None = None
    sweep_start: str | None = None
    resume_at: str | None = None
    last_scan_at: str | None = None
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class SignalStore(Protocol):
    def add_post(self, scored: ScoredPost, bucket: datetime) -> bool:
        """Store the post and count it in its bucket, atomically; False if already stored."""

    def bucket_counts(
        self, topic: str, first: datetime, last: datetime
    ) -> dict[datetime, BucketCounts]: ...

    def posts_between(self, topic: str, start: datetime, end: datetime) -> list[ScoredPost]: ...

    def load_watch(self, topic: str, policy: Policy) -> tuple[TopicWatch | None, int]: ...

    def save_watch(self, topic: str, watch: TopicWatch, version: int) -> None:
        """Save if the stored version is still `version`; Conflict otherwise."""

    def record_issue(self, event: IssueEvent) -> bool:
        """Store the issue's change; True when ops have not yet been told of this issue."""

    def mark_notified(self, issue_id: str) -> None: ...

    def flag(self, scored: ScoredPost, reason: str, issue_id: str | None) -> bool: ...


class Notifier(Protocol):
    def issue_opened(self, issue: Issue) -> None: ...


@dataclass
class ListenReport:
    topics: int = 0
    fetched: int = 0
    new_posts: int = 0
    pages: int = 0
    buckets: int = 0
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    rate_limited: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Listener:
    store: SignalStore
    policy: Policy
    high_reach_followers: int = 10_000
    notifier: Notifier | None = None
    grace_seconds: int = 0
    score: Callable[[str], sentiment.Sentiment] = sentiment.score

    # -- posts ---------------------------------------------------------------------------

    def ingest(self, posts: Iterable[Post], report: ListenReport) -> None:
        for post in posts:
            report.fetched += 1
            scored = ScoredPost(post, self.score(post.text))
            bucket = bucket_start(post.created_at, self.policy.bucket_seconds)
            if not self.store.add_post(scored, bucket):
                continue
            report.new_posts += 1
            if self._high_reach_complaint(scored):
                self.store.flag(scored, HIGH_REACH, None)

    def _high_reach_complaint(self, scored: ScoredPost) -> bool:
        return (
            scored.sentiment.label == "negative"
            and scored.sentiment.compound <= -0.5
            and (scored.post.author_followers or 0) >= self.high_reach_followers
        )

    # -- detection -----------------------------------------------------------------------

    def judge(
        self, topic: Topic, now: datetime, report: ListenReport, *, first: datetime
    ) -> list[IssueEvent]:
        """Fold every bucket that has closed by `now` into the topic's detector."""
        stored, version = self.store.load_watch(topic.id, self.policy)
        watch = stored or TopicWatch(topic.id, policy=self.policy)
        width = timedelta(seconds=self.policy.bucket_seconds)
        last = bucket_start(now - timedelta(seconds=self.grace_seconds), width.seconds) - width
        start = watch.cursor + width if watch.cursor else bucket_start(first, width.seconds)
        start = max(start, last - width * (MAX_CATCH_UP_BUCKETS - 1))
        if start > last:
            return []
        counts = self.store.bucket_counts(topic.id, start, last)
        events: list[IssueEvent] = []
        moment = start
        while moment <= last:
            events.extend(
                watch.step(
                    moment,
                    counts.get(moment) or BucketCounts(),
                    lambda a, b: self.store.posts_between(topic.id, a, b),
                    topic.region_of,
                )
            )
            report.buckets += 1
            moment += width
        # Issues first, then the detector: a crash in between replays the same buckets from
        # the old state, which yields the same issue ids, and every issue write is idempotent.
        for event in events:
            self.record(event, report)
        self.store.save_watch(topic.id, watch, version)
        return events

    def record(self, event: IssueEvent, report: ListenReport) -> None:
        untold = self.store.record_issue(event)
        for scored in event.flagged:
            self.store.flag(scored, IN_ISSUE, event.issue.issue_id)
        if event.change is Change.OPENED:
            report.opened.append(event.issue.issue_id)
        elif event.change is Change.CLOSED:
            report.closed.append(event.issue.issue_id)
        if untold and self.notifier is not None:
            self.notifier.issue_opened(event.issue)
            self.store.mark_notified(event.issue.issue_id)


class CheckpointStore(Protocol):
    def topics(self) -> list[Topic]: ...

    def checkpoint(self, topic_id: str) -> Checkpoint: ...

    def save_checkpoint(self, topic_id: str, checkpoint: Checkpoint) -> None: ...


def scan(
    listener: Listener,
    checkpoints: CheckpointStore,
    source: PostSource,
    *,
    backfill_seconds: int,
    now: Callable[[], datetime] = utcnow,
    deadline: float | None = None,
    topics: Sequence[Topic] | None = None,
) -> ListenReport:
    """One scheduled scan of every topic; stops fetching when `deadline` (a
    `time.monotonic()` value) is near and leaves the rest to the next scan."""
    report = ListenReport()
    for topic in topics if topics is not None else checkpoints.topics():
        report.topics += 1
        if deadline is not None and time.monotonic() > deadline:
            report.unfinished.append(topic.id)
            continue
        started = now()
        checkpoint = checkpoints.checkpoint(topic.id)
        finished = _fetch(
            listener,
            checkpoints,
            source,
            topic,
            checkpoint,
            started,
            backfill_seconds,
            report,
            deadline,
        )
        if not finished:
            report.unfinished.append(topic.id)
        first = started - timedelta(seconds=backfill_seconds)
        try:
            listener.judge(topic, now(), report, first=first)
        except Conflict:
            # Another scan is judging this topic right now; it will get these buckets.
            log.info("topic %s is being judged by another scan", topic.id)
    return report


def _fetch(
    listener: Listener,
    checkpoints: CheckpointStore,
    source: PostSource,
    topic: Topic,
    checkpoint: Checkpoint,
    started: datetime,
    backfill_seconds: int,
    report: ListenReport,
    deadline: float | None,
) -> bool:
    """Page through the topic's new posts; True when the sweep reached its end."""
    if checkpoint.resume_at and iso(started) < checkpoint.resume_at:
        report.rate_limited.append(topic.id)
        return False
    sweep_start = checkpoint.sweep_start
    if checkpoint.since_id is None and sweep_start is None:
        sweep_start = iso(started - timedelta(seconds=backfill_seconds))
    token = checkpoint.next_token
    newest = checkpoint.sweep_newest_id
    state = replace(checkpoint, resume_at=None, last_scan_at=iso(started), last_error=None)
    while True:
        try:
            page = source.search(
                topic,
                since_id=checkpoint.since_id,
                next_token=token,
                start_time=_parse(sweep_start) if checkpoint.since_id is None else None,
            )
        except RateLimited as exc:
            report.rate_limited.append(topic.id)
            checkpoints.save_checkpoint(topic.id, replace(state, resume_at=iso(exc.resume_at)))
            return False
        except SourceError as exc:
            report.errors[topic.id] = str(exc)
            checkpoints.save_checkpoint(topic.id, replace(state, last_error=str(exc)[:500]))
            return False
        report.pages += 1
        newest = newest or page.newest_id
        listener.ingest(page.posts, report)
        token = page.next_token
        if token is None:
            state = replace(
                state,
                since_id=newest or checkpoint.since_id,
                next_token=None,
                sweep_newest_id=None,
                sweep_start=None,
            )
            checkpoints.save_checkpoint(topic.id, state)
            return True
        state = replace(state, next_token=token, sweep_newest_id=newest, sweep_start=sweep_start)
        checkpoints.save_checkpoint(topic.id, state)
        if deadline is not None and time.monotonic() > deadline:
            return False


def _parse(value: str | None) -> datetime | None:
    from chalicelib.posts import parse_time

    return parse_time(value) if value else None
