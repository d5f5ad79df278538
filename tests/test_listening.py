"""The scheduled scan against the local AWS server: checkpoints, exactly-once counting,
rate limits, crash recovery, issues, flags and the hand-off to ops."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from listening_factories import TOPIC, PostMaker

from chalicelib import aws
from chalicelib.emerging import Issue, Policy
from chalicelib.listening import Listener, ListenReport, scan
from chalicelib.posts import Post, Topic
from chalicelib.replay import ReplaySource
from chalicelib.runtime import signals
from chalicelib.signals_store import FlagFilter
from chalicelib.social_sources import Page, RateLimited

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = Policy(bucket_seconds=60, close_after_seconds=600)
BACKFILL = 3 * 3600

pytestmark = pytest.mark.usefixtures("stack")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class RecordingNotifier:
    def __init__(self) -> None:
        self.opened: list[Issue] = []

    def issue_opened(self, issue: Issue) -> None:
        self.opened.append(issue)


def listener(notifier: RecordingNotifier | None = None) -> Listener:
    return Listener(signals(), POLICY, high_reach_followers=10_000, notifier=notifier)


def run_scan(source: Any, clock: Clock, notifier: RecordingNotifier | None = None) -> ListenReport:
    return scan(listener(notifier), signals(), source, backfill_seconds=BACKFILL, now=clock)


def counted(topic: str = TOPIC.id) -> int:
    counts = signals().bucket_counts(topic, START - timedelta(days=1), START + timedelta(days=1))
    return sum(c.posts for c in counts.values())


@pytest.fixture
def topic() -> Topic:
    signals().put_topic(TOPIC)
    return TOPIC


def test_a_scan_counts_every_post_once_and_a_second_scan_adds_nothing(topic: Topic) -> None:
    posts = PostMaker().chatter(START, 30)
    clock = Clock(START + timedelta(minutes=31))
    source = ReplaySource(posts, clock)
    first = run_scan(source, clock)
    assert first.new_posts == len(posts)
    assert first.pages >= 1
    second = run_scan(source, clock)
    assert second.new_posts == 0
    assert counted() == len(posts)
    assert signals().checkpoint(topic.id).since_id == max(posts, key=lambda p: int(p.id)).id


class Limited:
    """A source that answers its first `pages` searches, then is rate limited once."""

    def __init__(self, inner: ReplaySource, pages: int, resume_at: datetime) -> None:
        self.inner, self.pages, self.resume_at = inner, pages, resume_at
        self.calls = 0
        self.limited = False

    def search(self, topic: Topic, **kwargs: Any) -> Page:
        self.calls += 1
        if self.calls > self.pages and not self.limited:
            self.limited = True
            raise RateLimited(self.resume_at)
        return self.inner.search(topic, max_results=10, **kwargs)


def test_a_rate_limit_mid_sweep_resumes_after_the_reset_with_no_gap(topic: Topic) -> None:
    posts = PostMaker().chatter(START, 30)
    clock = Clock(START + timedelta(minutes=31))
    resume = clock.now + timedelta(minutes=15)
    source = Limited(ReplaySource(posts, clock), pages=2, resume_at=resume)
    report = run_scan(source, clock)
    assert report.rate_limited == [topic.id]
    assert report.new_posts == 20
    checkpoint = signals().checkpoint(topic.id)
    assert checkpoint.next_token
    assert checkpoint.resume_at
    assert checkpoint.since_id is None

    calls = source.calls
    early = run_scan(source, clock)  # before the reset: X is not called at all
    assert source.calls == calls
    assert early.rate_limited == [topic.id]

    clock.now = resume + timedelta(seconds=1)
    run_scan(source, clock)
    assert counted() == len(posts)
    assert signals().checkpoint(topic.id).next_token is None


def test_a_scan_that_dies_before_its_checkpoint_counts_nothing_twice(
    topic: Topic, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts = PostMaker().chatter(START, 20)
    clock = Clock(START + timedelta(minutes=21))
    source = ReplaySource(posts, clock)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Lambda timed out")

    monkeypatch.setattr(type(signals()), "save_checkpoint", crash)
    with pytest.raises(RuntimeError):
        run_scan(source, clock)
    monkeypatch.undo()
    run_scan(source, clock)
    assert counted() == len(posts)


def outage_posts() -> list[Post]:
    maker = PostMaker()
    return maker.chatter(START, 120) + maker.outage(START + timedelta(minutes=120), 4)


def scan_through(posts: list[Post], minutes: range, notifier: RecordingNotifier) -> None:
    clock = Clock(START)
    source = ReplaySource(posts, clock)
    for minute in minutes:
        clock.now = START + timedelta(minutes=minute)
        run_scan(source, clock, notifier)


def test_an_outage_opens_one_issue_tells_ops_once_and_flags_its_posts(topic: Topic) -> None:
    notifier = RecordingNotifier()
    scan_through(outage_posts(), range(118, 128), notifier)
    issues = signals().issues("open")
    assert len(issues) >= 1
    assert [i.issue_id for i in notifier.opened] == [i.issue_id for i in issues]
    issue = issues[0]
    assert issue.region == "south"
    assert issue.locations
    flags, _ = signals().flags(FlagFilter(issue_id=issue.issue_id))
    assert flags
    assert all(f["issue_id"] == issue.issue_id for f in flags)


def test_judging_the_same_buckets_again_after_a_crash_opens_the_issue_once(
    topic: Topic, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts = outage_posts()
    clock = Clock(START + timedelta(minutes=125))
    source = ReplaySource(posts, clock)
    notifier = RecordingNotifier()
    real_save = type(signals()).save_watch

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Lambda timed out")

    monkeypatch.setattr(type(signals()), "save_watch", crash)
    with pytest.raises(RuntimeError):
        run_scan(source, clock, notifier)
    monkeypatch.setattr(type(signals()), "save_watch", real_save)
    run_scan(source, clock, notifier)
    ids = [i.issue_id for i in signals().issues("open")]
    assert ids
    assert len(ids) == len(set(ids))
    assert sorted(i.issue_id for i in notifier.opened) == sorted(ids)


def test_a_strongly_negative_post_from_a_high_reach_author_is_flagged(topic: Topic) -> None:
    maker = PostMaker()
    loud = maker.post(
        START + timedelta(minutes=1),
        "@AcmeTel worst service ever, no signal for two days and nobody helps. awful",
        followers=250_000,
        author="bigvoice",
    )
    quiet = maker.post(START + timedelta(minutes=1, seconds=5), "@AcmeTel awful, no signal")
    clock = Clock(START + timedelta(minutes=2))
    run_scan(ReplaySource([loud, quiet], clock), clock)
    flags, _ = signals().flags(FlagFilter())
    assert [f["post"]["id"] for f in flags] == [loud.id]
    assert flags[0]["reasons"] == ["high_reach"]


def test_the_ops_notifier_publishes_to_the_ops_topic_and_emails_ops(
    topic: Topic, monkeypatch: pytest.MonkeyPatch, stack: Any
) -> None:
    from chalicelib.config import settings
    from chalicelib.handoff import OpsNotifier

    sqs, sns = aws.client("sqs"), aws.client("sns")
    topic_arn = sns.create_topic(Name="forewarn-test-ops")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="ops-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("OPS_TOPIC_ARN", topic_arn)
    monkeypatch.setenv("OPS_EMAIL", "ops@forewarn.example")
    settings.cache_clear()
    notifier = OpsNotifier(settings())
    events = _first_opened_issue()
    notifier.issue_opened(events)
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(messages[0]["Body"])
    assert body["Subject"].startswith("Emerging issue:")
    assert events.issue_id in body["Message"]
    sent = _ses_messages(stack.url)
    assert any("ops@forewarn.example" in json.dumps(m) for m in sent)
    settings.cache_clear()


def _first_opened_issue() -> Issue:
    from chalicelib.backtest import Backtest, in_time_order

    run = Backtest(POLICY, topics={TOPIC.id: TOPIC})
    for event in run.run(in_time_order(outage_posts())):
        return event.issue
    raise AssertionError("no issue opened")


def _ses_messages(url: str) -> list[Any]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/moto-api/data.json") as response:
        data = json.loads(response.read())
    ses = data["ses"]
    return [m for key in ("Message", "RawMessage", "Messages") for m in ses.get(key, [])]
