"""Emerging issues: spikes of complaint posts about a topic, told apart from mere virality.

Per topic, each closed time bucket holds counts of all posts, negative posts and posts with
service-failure terms, overall and per issue cluster (delay, outage, ...). Every cluster's
count is its own seasonal series (`chalicelib.detector`). An issue opens when a cluster's
count is improbably high against its baseline *and* the bucket is mostly negative: a viral
post brings many posts, few of them complaints, so it opens nothing. There is at most one
open issue per topic and cluster; it grows while the spike lasts and closes once the cluster
has been back at its baseline for a while.

This module is pure: the scheduled scan (DynamoDB) and the backtest (memory) both drive a
`TopicWatch` with the same bucket counts, so a backtest replays exactly what production does.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from chalicelib.detector import Assessment, SeriesModel
from chalicelib.domain import iso
from chalicelib.posts import Post, parse_time
from chalicelib.sentiment import CLUSTERS, Sentiment

TOTAL = "posts"
NEGATIVE = "negative"
COMPLAINT = "complaint"


@dataclass(frozen=True)
class Policy:
    """When a spike is an issue. Defaults come from a false-alarm budget, not from labels:
    with a handful of clusters and 288 five-minute buckets a day, a tail of 1e-4 allows about
    one false issue per topic a week from chance alone."""

    bucket_seconds: int = 300
    max_tail: float = 1e-4
    min_posts: int = 5  # complaint posts in the bucket: fewer is never an issue
    min_negative_share: float = 0.5
    close_after_seconds: int = 1800  # quiet time before an issue closes
    quiet_tail: float = 0.05  # a bucket at least this probable counts as quiet
    samples: int = 5
    evidence_buckets: int = 48

    @property
    def close_after_buckets(self) -> int:
        return max(1, math.ceil(self.close_after_seconds / self.bucket_seconds))


@dataclass
class BucketCounts:
    posts: int = 0
    negative: int = 0
    complaint: int = 0
    clusters: dict[str, int] = field(default_factory=dict)

    def add(self, sentiment: Sentiment) -> None:
        self.posts += 1
        self.negative += sentiment.label == "negative"
        if sentiment.terms:
            self.complaint += 1
            for cluster in sentiment.clusters:
                self.clusters[cluster] = self.clusters.get(cluster, 0) + 1

    @property
    def negative_share(self) -> float:
        return self.negative / self.posts if self.posts else 0.0

    def series(self) -> dict[str, int]:
        """Every series this bucket feeds, by name; the totals are kept as counts only, as
        no decision rests on their own baselines."""
        values = {COMPLAINT: self.complaint}
        values.update({f"cluster:{name}": n for name, n in self.clusters.items()})
        return values

    def to_dict(self) -> dict[str, Any]:
        return {
            TOTAL: self.posts,
            NEGATIVE: self.negative,
            COMPLAINT: self.complaint,
            "clusters": dict(self.clusters),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BucketCounts:
        return cls(
            posts=int(data.get(TOTAL, 0)),
            negative=int(data.get(NEGATIVE, 0)),
            complaint=int(data.get(COMPLAINT, 0)),
            clusters={str(k): int(v) for k, v in dict(data.get("clusters") or {}).items()},
        )


@dataclass(frozen=True)
class ScoredPost:
    post: Post
    sentiment: Sentiment

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.post.to_dict(),
            "label": self.sentiment.label,
            "compound": self.sentiment.compound,
            "terms": list(self.sentiment.terms),
        }


class IssueStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Issue:
    """An emerging issue and the evidence behind it; `text` of samples is untrusted."""

    issue_id: str
    topic: str
    cluster: str
    status: IssueStatus
    opened_at: str
    updated_at: str
    closed_at: str | None
    posts: int  # cluster posts in the opening bucket
    total_posts: int  # cluster posts over the issue so far
    peak: int
    baseline: float  # expected cluster posts per bucket when it opened
    tail: float
    negative_share: float
    terms: list[tuple[str, int]]
    samples: list[dict[str, Any]]
    locations: list[tuple[str, int]]
    region: str | None
    counts: list[dict[str, Any]]  # per bucket: at, posts, negative, cluster, expected
    quiet_buckets: int = 0
    incident_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "issue_id": self.issue_id,
            "topic": self.topic,
            "cluster": self.cluster,
            "status": self.status.value,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "closed_at": self.closed_at,
            "posts": self.posts,
            "total_posts": self.total_posts,
            "peak": self.peak,
            "baseline": round(self.baseline, 4),
            "tail": self.tail,
            "negative_share": round(self.negative_share, 4),
            "terms": [[t, n] for t, n in self.terms],
            "samples": self.samples,
            "locations": [[p, n] for p, n in self.locations],
            "region": self.region,
            "counts": self.counts,
            "quiet_buckets": self.quiet_buckets,
            "incident_id": self.incident_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Issue:
        return cls(
            issue_id=str(data["issue_id"]),
            topic=str(data["topic"]),
            cluster=str(data["cluster"]),
            status=IssueStatus(str(data["status"])),
            opened_at=str(data["opened_at"]),
            updated_at=str(data["updated_at"]),
            closed_at=data.get("closed_at"),
            posts=int(data["posts"]),
            total_posts=int(data["total_posts"]),
            peak=int(data["peak"]),
            baseline=float(data["baseline"]),
            tail=float(data["tail"]),
            negative_share=float(data["negative_share"]),
            terms=[(str(t), int(n)) for t, n in data.get("terms", [])],
            samples=list(data.get("samples", [])),
            locations=[(str(p), int(n)) for p, n in data.get("locations", [])],
            region=data.get("region"),
            counts=list(data.get("counts", [])),
            quiet_buckets=int(data.get("quiet_buckets", 0)),
            incident_id=data.get("incident_id"),
        )


class Change(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"
    CLOSED = "closed"


@dataclass(frozen=True)
class IssueEvent:
    change: Change
    issue: Issue
    flagged: list[ScoredPost] = field(default_factory=list)  # posts to hand to the social team


def issue_id(topic: str, cluster: str, opened: datetime) -> str:
    """Deterministic, so a scan that replays buckets after a crash reopens the same issue."""
    digest = hashlib.sha256(f"{topic}|{cluster}|{iso(opened)}".encode()).hexdigest()
    return f"iss_{digest[:16]}"


PostsOf = Callable[[datetime, datetime], Iterable[ScoredPost]]
RegionOf = Callable[[str | None], str | None]
BucketHook = Callable[[str, datetime, BucketCounts, dict[str, Assessment]], None]


@dataclass
class TopicWatch:
    """The detector state of one topic: a seasonal model per series, the open issues, and
    the newest bucket folded in. Serialised whole into one item between scans."""

    topic: str
    policy: Policy = field(default_factory=Policy)
    models: dict[str, SeriesModel] = field(default_factory=dict)
    open_issues: dict[str, Issue] = field(default_factory=dict)
    cursor: datetime | None = None  # start of the newest bucket processed
    # Backtests watch every bucket go by (to plot it); never stored.
    on_bucket: BucketHook | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every cluster is a series from the first bucket on, even while it is zero, so that
        # its first complaints are judged against a quiet past rather than a cold start.
        for name in (COMPLAINT, *(f"cluster:{c}" for c in CLUSTERS)):
            self._model(name)

    def _model(self, name: str) -> SeriesModel:
        model = self.models.get(name)
        if model is None:
            model = self.models[name] = SeriesModel(self.policy.bucket_seconds)
        return model

    def step(
        self, start: datetime, counts: BucketCounts, posts_of: PostsOf, region_of: RegionOf
    ) -> list[IssueEvent]:
        """Fold in one closed bucket (buckets must come in order, none twice)."""
        if self.cursor is not None and start <= self.cursor:
            return []
        end = start + timedelta(seconds=self.policy.bucket_seconds)
        values = counts.series()
        assessments: dict[str, Assessment] = {}
        for name, model in self.models.items():
            if name == COMPLAINT and self.on_bucket is None:
                continue  # all complaints together decide nothing; only plots show them
            count = values.get(name, 0)
            cluster = name.removeprefix("cluster:")
            # Only a bucket that could open or move an issue needs its tail (the costly
            # part); the rest is learned, and zeros not even that: a model learns the
            # buckets it missed as zeros when it next sees its series.
            if (
                self.on_bucket is not None
                or cluster in self.open_issues
                or (count >= self.policy.min_posts and name != cluster)
            ):
                assessments[name] = model.observe(start, count)
            elif count or model.last_bucket is None:
                # The first bucket anchors the series, so the zeros after it count.
                model.learn(start, count)
        self.cursor = start
        if self.on_bucket is not None:
            self.on_bucket(self.topic, start, counts, assessments)
        events: list[IssueEvent] = []
        bucket_posts: list[ScoredPost] | None = None
        for name, assessment in assessments.items():
            if not name.startswith("cluster:"):
                continue
            cluster = name.removeprefix("cluster:")
            current = self.open_issues.get(cluster)
            spiking = (
                assessment.count >= self.policy.min_posts
                and assessment.tail <= self.policy.max_tail
                and counts.negative_share >= self.policy.min_negative_share
            )
            if current is None and not spiking:
                continue
            if bucket_posts is None:
                bucket_posts = list(posts_of(start, end))
            members = [p for p in bucket_posts if cluster in p.sentiment.clusters]
            row = {
                "at": iso(start),
                "posts": counts.posts,
                "negative": counts.negative,
                "cluster": assessment.count,
                "expected": round(assessment.expected, 4),
            }
            if current is None:
                issue = self._open(start, cluster, assessment, counts, members, region_of, row)
                self.open_issues[cluster] = issue
                events.append(IssueEvent(Change.OPENED, issue, members))
            else:
                event = self._grow(current, end, assessment, members, region_of, row)
                if event.change is Change.CLOSED:
                    del self.open_issues[cluster]
                else:
                    self.open_issues[cluster] = event.issue
                events.append(event)
        return events

    def _open(
        self,
        start: datetime,
        cluster: str,
        assessment: Assessment,
        counts: BucketCounts,
        members: list[ScoredPost],
        region_of: RegionOf,
        row: dict[str, Any],
    ) -> Issue:
        opened = iso(start + timedelta(seconds=self.policy.bucket_seconds))
        terms, locations, region = _evidence(members, region_of)
        return Issue(
            issue_id=issue_id(self.topic, cluster, start),
            topic=self.topic,
            cluster=cluster,
            status=IssueStatus.OPEN,
            opened_at=opened,
            updated_at=opened,
            closed_at=None,
            posts=assessment.count,
            total_posts=assessment.count,
            peak=assessment.count,
            baseline=assessment.expected,
            tail=assessment.tail,
            negative_share=counts.negative_share,
            terms=terms,
            samples=_samples(members, self.policy.samples),
            locations=locations,
            region=region,
            counts=[row],
        )

    def _grow(
        self,
        issue: Issue,
        end: datetime,
        assessment: Assessment,
        members: list[ScoredPost],
        region_of: RegionOf,
        row: dict[str, Any],
    ) -> IssueEvent:
        quiet = assessment.tail >= self.policy.quiet_tail or assessment.count <= 1
        quiet_buckets = issue.quiet_buckets + 1 if quiet else 0
        moment = iso(end)
        merged_terms = Counter(dict(issue.terms))
        merged_places = Counter(dict(issue.locations))
        terms, locations, region = _evidence(members, region_of)
        merged_terms.update(dict(terms))
        merged_places.update(dict(locations))
        samples = issue.samples
        if len(samples) < self.policy.samples and members:
            seen = {s["id"] for s in samples}
            extra = [s for s in _samples(members, self.policy.samples) if s["id"] not in seen]
            samples = samples + extra[: self.policy.samples - len(samples)]
        grown = replace(
            issue,
            updated_at=moment,
            total_posts=issue.total_posts + assessment.count,
            peak=max(issue.peak, assessment.count),
            terms=merged_terms.most_common(10),
            locations=merged_places.most_common(10),
            region=issue.region or region,
            samples=samples,
            counts=[*issue.counts, row][-self.policy.evidence_buckets :],
            quiet_buckets=quiet_buckets,
        )
        if quiet_buckets >= self.policy.close_after_buckets:
            closed = replace(grown, status=IssueStatus.CLOSED, closed_at=moment)
            return IssueEvent(Change.CLOSED, closed)
        return IssueEvent(Change.UPDATED, grown, [] if quiet else members)

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "cursor": iso(self.cursor) if self.cursor else None,
            "models": {name: model.to_dict() for name, model in self.models.items()},
            "open_issues": {c: issue.to_dict() for c, issue in self.open_issues.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], policy: Policy) -> TopicWatch:
        cursor = data.get("cursor")
        return cls(
            topic=str(data["topic"]),
            policy=policy,
            models={n: SeriesModel.from_dict(m) for n, m in dict(data["models"]).items()},
            open_issues={c: Issue.from_dict(i) for c, i in dict(data["open_issues"]).items()},
            cursor=parse_time(cursor) if cursor else None,
        )


def _evidence(
    members: list[ScoredPost], region_of: RegionOf
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], str | None]:
    terms = Counter(t for p in members for t in p.sentiment.terms)
    places = Counter(p.post.place for p in members if p.post.place)
    regions = Counter(r for r in (region_of(p.post.place) for p in members) if r)
    region = regions.most_common(1)[0][0] if regions else None
    return terms.most_common(10), places.most_common(10), region


def _samples(members: list[ScoredPost], limit: int) -> list[dict[str, Any]]:
    """The most negative posts first, then the widest reach: what a human should read."""
    ranked = sorted(members, key=lambda p: (p.sentiment.compound, -(p.post.author_followers or 0)))
    return [
        {
            "id": p.post.id,
            "text": p.post.text,
            "author": p.post.author_handle,
            "followers": p.post.author_followers,
            "created_at": iso(p.post.created_at),
            "place": p.post.place,
            "compound": p.sentiment.compound,
        }
        for p in ranked[:limit]
    ]


def bucket_start(moment: datetime, bucket_seconds: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % bucket_seconds, tz=moment.tzinfo)
