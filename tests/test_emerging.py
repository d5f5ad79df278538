"""Emerging-issue detection, replayed in memory through the scan's own Listener."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from listening_factories import TOPIC, PostMaker

from chalicelib.backtest import Backtest, in_time_order, opened_summary
from chalicelib.emerging import Change, IssueEvent, Policy, TopicWatch
from chalicelib.posts import Post

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = Policy(bucket_seconds=60, close_after_seconds=600)


def replay(posts: list[Post], policy: Policy = POLICY) -> tuple[Backtest, list[IssueEvent]]:
    run = Backtest(policy, topics={TOPIC.id: TOPIC})
    events = list(run.run(in_time_order(posts)))
    return run, events


def opened(events: list[IssueEvent]) -> list[IssueEvent]:
    return [e for e in events if e.change is Change.OPENED]


def test_an_outage_after_quiet_chatter_opens_an_issue_with_its_evidence() -> None:
    maker = PostMaker()
    posts = maker.chatter(START, 120) + maker.outage(START + timedelta(minutes=120), 5)
    _, events = replay(posts)
    first = opened(events)
    assert first, "the outage opened no issue"
    issue = first[0].issue
    assert issue.topic == "acme"
    assert issue.opened_at <= (START + timedelta(minutes=123)).isoformat().replace("+00:00", "Z")
    assert issue.posts >= POLICY.min_posts
    assert issue.baseline < 1
    assert issue.negative_share >= 0.5
    assert issue.region == "south"
    assert dict(issue.locations).get("Dallas, TX", 0) > 0
    assert issue.samples
    assert all("no " in s["text"] or "outage" in s["text"] for s in issue.samples)
    assert first[0].flagged, "posts of a new issue go to the social team"


def test_one_issue_per_cluster_grows_while_the_outage_lasts() -> None:
    maker = PostMaker()
    posts = maker.chatter(START, 120) + maker.outage(START + timedelta(minutes=120), 8)
    _, events = replay(posts)
    clusters = [e.issue.cluster for e in opened(events)]
    assert len(clusters) == len(set(clusters)), f"a cluster opened twice: {clusters}"
    grown = [e for e in events if e.change is Change.UPDATED]
    assert grown
    assert max(e.issue.total_posts for e in grown) > opened(events)[0].issue.posts


def test_a_viral_burst_of_praise_opens_no_issue() -> None:
    maker = PostMaker()
    posts = maker.chatter(START, 120) + maker.viral(START + timedelta(minutes=120), 6)
    _, events = replay(posts)
    assert opened(events) == []


def test_quiet_chatter_opens_no_issue() -> None:
    _, events = replay(PostMaker().chatter(START, 240))
    assert opened(events) == []


def test_an_issue_closes_once_complaints_are_back_at_baseline() -> None:
    maker = PostMaker()
    posts = (
        maker.chatter(START, 120)
        + maker.outage(START + timedelta(minutes=120), 4)
        + maker.chatter(START + timedelta(minutes=124), 40)
    )
    _, events = replay(posts)
    closed = [e for e in events if e.change is Change.CLOSED]
    assert closed, "the issue never closed"
    assert closed[0].issue.closed_at is not None
    assert closed[0].issue.issue_id == opened(events)[0].issue.issue_id


def test_a_watch_restored_from_its_stored_form_decides_exactly_alike() -> None:
    maker = PostMaker()
    history = maker.chatter(START, 120)
    spike = maker.outage(START + timedelta(minutes=120), 5)
    run, _ = replay(history)
    watch = run.store.watches["acme"]
    restored = TopicWatch.from_dict(json.loads(json.dumps(watch.to_dict())), POLICY)
    assert restored.to_dict() == watch.to_dict()
    run.store.watches["acme"] = restored
    events_restored = opened(list(run.run(in_time_order(spike))))
    again, _ = replay(history)
    events_original = opened(list(again.run(in_time_order(spike))))
    assert [e.issue.to_dict() for e in events_restored] == [
        e.issue.to_dict() for e in events_original
    ]


def test_the_backtest_summary_has_the_documented_fields() -> None:
    maker = PostMaker()
    posts = maker.chatter(START, 120) + maker.outage(START + timedelta(minutes=120), 5)
    _, events = replay(posts)
    summary = opened_summary(opened(events)[0])
    assert {"topic", "opened_at", "terms", "posts", "negative_share", "baseline"} <= set(summary)
    assert summary["opened_at"].endswith("+00:00")
    assert datetime.fromisoformat(summary["opened_at"]).tzinfo is not None
    assert summary["sample_post_ids"]
    assert all(isinstance(i, str) for i in summary["sample_post_ids"])
    assert summary["terms"]
