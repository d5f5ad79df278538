"""Social listening on real data: backtest throughput against bare VADER, and which known
airline events the backtest catches.

Reads ``../shared/data/airline/tweets_dev.csv`` (see that folder's README); never copies it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.result import BenchResult, Goal

PROJECT_DIR = Path(__file__).resolve().parents[1]
DATA = PROJECT_DIR.parent / "shared" / "data" / "airline" / "tweets_dev.csv"
COLUMNS = {"time_col": "tweet_created", "text_col": "text", "topic_col": "airline"}
PACIFIC = timezone(timedelta(hours=-8))
REPETITIONS = 3

THROUGHPUT_GOAL = Goal("at_least", 0.8)


def _require_data() -> Path:
    if not DATA.exists():
        raise RuntimeError(f"{DATA} is missing: the listening benchmarks need ../shared/data")
    return DATA


# -- throughput -------------------------------------------------------------------------------

_PROBE = """
import json, resource, sys, time
sys.path.insert(0, {project!r})
from bench.listening import {function}
seconds, posts = {function}({path!r})
print(json.dumps({{"seconds": seconds, "posts": posts,
    "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def time_backtest(path: str) -> tuple[float, int]:
    """`forewarn backtest posts` without the printing: read, order, replay, open issues."""
    import time

    from chalicelib import sentiment
    from chalicelib.backtest import Backtest, in_time_order
    from chalicelib.emerging import Policy
    from chalicelib.replay import read_posts

    sentiment.score("warm up")  # builds the analyzer, as the baseline does before timing
    started = time.perf_counter()
    posts = in_time_order(read_posts(path, id_col="tweet_id", **COLUMNS))
    run = Backtest(Policy())
    for _ in run.run(posts):
        pass
    return time.perf_counter() - started, len(posts)


def time_vader(path: str) -> tuple[float, int]:
    """The baseline: read the same file, score each text with bare VADER."""
    import csv
    import time

    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    started = time.perf_counter()
    count = 0
    with open(path, encoding="utf-8", newline="") as stream:
        for row in csv.DictReader(stream):
            analyzer.polarity_scores(row[COLUMNS["text_col"]])
            count += 1
    return time.perf_counter() - started, count


def _sample(function: str, path: Path) -> dict[str, Any]:
    code = _PROBE.format(project=str(PROJECT_DIR), function=function, path=str(path))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_DIR
    )
    sample: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return sample


def run_throughput(repetitions: int = REPETITIONS) -> BenchResult:
    path = _require_data()
    ours: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    for index in range(repetitions):
        # Alternate which side goes first, so drift on the machine hits both alike.
        order = [("time_backtest", ours), ("time_vader", base)]
        for function, samples in order if index % 2 == 0 else reversed(order):
            samples.append(_sample(function, path))
    posts = ours[0]["posts"]
    ours_rate = statistics.median(posts / s["seconds"] for s in ours)
    base_rate = statistics.median(s["posts"] / s["seconds"] for s in base)
    details = {
        "posts": posts,
        "repetitions": repetitions,
        "forewarn": {
            "seconds": [round(s["seconds"], 3) for s in ours],
            "peak_rss_mib": round(max(s["max_rss_kib"] for s in ours) / 1024, 1),
        },
        "baseline": {
            "seconds": [round(s["seconds"], 3) for s in base],
            "peak_rss_mib": round(max(s["max_rss_kib"] for s in base) / 1024, 1),
        },
    }
    details["method_markdown"] = (
        "**Forewarn** — what `forewarn backtest posts tweets_dev.csv --time-col tweet_created "
        "--text-col text --topic-col airline --id-col tweet_id` does, minus printing: read the "
        "CSV (`chalicelib.replay`), order it by time, and replay it through the scheduled "
        "scan's own `Listener` (complaint-tuned sentiment, five-minute bucket counters, the "
        "seasonal detector, emerging issues) with the state in memory. **Baseline** — read the "
        "same file with `csv.DictReader` and call bare VADER `polarity_scores` on each text. "
        f"Each side runs {repetitions} times in a fresh process, alternating which goes first; "
        "the VADER analyzer is built before timing on both sides; medians are compared. Peak "
        "memory is the process's maximum resident set (interpreter and imports included)."
    )
    details["details_markdown"] = "\n".join(
        [
            "| | Forewarn backtest | bare VADER |",
            "|---|---:|---:|",
            f"| posts | {posts:,} | {base[0]['posts']:,} |",
            f"| seconds per run | {_list(details['forewarn']['seconds'])} "
            f"| {_list(details['baseline']['seconds'])} |",
            f"| posts/s (median) | {ours_rate:,.0f} | {base_rate:,.0f} |",
            f"| peak memory | {details['forewarn']['peak_rss_mib']} MiB "
            f"| {details['baseline']['peak_rss_mib']} MiB |",
        ]
    )
    return BenchResult(
        name="backtest_throughput",
        title="Backtest throughput on airline tweets, against bare VADER",
        unit="posts/s",
        measured=ours_rate,
        baseline=base_rate,
        goal=THROUGHPUT_GOAL,
        details=details,
    )


def _list(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


# -- known events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownEvent:
    name: str
    topic: str
    start: datetime  # Pacific time in the data's own offset
    end: datetime
    expect_issue: bool


def _pt(day: int, hour: int = 0) -> datetime:
    return datetime(2015, 2, day, hour, tzinfo=PACIFIC)


EVENTS = (
    KnownEvent("Southwest ice storm", "Southwest", _pt(17), _pt(18), True),
    KnownEvent("Southwest winter storm", "Southwest", _pt(21), _pt(22), True),
    KnownEvent("American Dallas ice storm", "American", _pt(22), _pt(24), True),
    KnownEvent("Viral marketing post (labelled Delta)", "Delta", _pt(23, 9), _pt(23, 15), False),
)


def _alerts_forewarn(path: Path) -> list[tuple[str, datetime, str]]:
    from chalicelib.backtest import Backtest, in_time_order, is_opening
    from chalicelib.emerging import Policy
    from chalicelib.replay import read_posts

    posts = in_time_order(read_posts(path, id_col="tweet_id", **COLUMNS))
    return [
        (
            e.issue.topic,
            datetime.fromisoformat(e.issue.opened_at.replace("Z", "+00:00")),
            e.issue.cluster,
        )
        for e in Backtest(Policy()).run(posts)
        if is_opening(e)
    ]


def _alerts_volume_only(path: Path) -> list[tuple[str, datetime, str]]:
    """The same seasonal detector on total post volume alone, as a volume-spike alarm would
    be: no sentiment, no complaint terms. Same tail and minimum-count thresholds."""
    from chalicelib.backtest import in_time_order
    from chalicelib.detector import SeriesModel
    from chalicelib.emerging import Policy, bucket_start
    from chalicelib.replay import read_posts

    policy = Policy()
    counts: dict[str, dict[datetime, int]] = {}
    for post in in_time_order(read_posts(path, id_col="tweet_id", **COLUMNS)):
        start = bucket_start(post.created_at, policy.bucket_seconds)
        per_topic = counts.setdefault(post.topic, {})
        per_topic[start] = per_topic.get(start, 0) + 1
    alerts = []
    for topic, series in counts.items():
        model = SeriesModel(policy.bucket_seconds)
        for start in sorted(series):
            seen = model.observe(start, series[start])
            if seen.count >= policy.min_posts and seen.tail <= policy.max_tail:
                alerts.append((topic, start + timedelta(seconds=policy.bucket_seconds), "volume"))
    return alerts


def _score(alerts: list[tuple[str, datetime, str]]) -> tuple[int, list[dict[str, Any]], int]:
    rows: list[dict[str, Any]] = []
    right = 0
    explained = 0
    for event in EVENTS:
        hits = sorted(
            t for topic, t, _ in alerts if topic == event.topic and event.start <= t < event.end
        )
        ok = bool(hits) == event.expect_issue
        right += ok
        explained += len(hits)
        rows.append(
            {
                "event": event.name,
                "expected": "an issue" if event.expect_issue else "no issue",
                "alerts": len(hits),
                "first_alert_pt": hits[0].astimezone(PACIFIC).strftime("%m-%d %H:%M")
                if hits
                else None,
                "right": ok,
            }
        )
    return right, rows, len(alerts) - explained


def run_events() -> BenchResult:
    path = _require_data()
    ours = _alerts_forewarn(path)
    volume = _alerts_volume_only(path)
    right, rows, other = _score(ours)
    base_right, base_rows, base_other = _score(volume)
    table = [
        "| Event | Expected | Forewarn: first alert (PT) | Forewarn alerts "
        "| Volume-only: first alert (PT) | Volume-only alerts |",
        "|---|---|---|---:|---|---:|",
    ]
    for mine, theirs in zip(rows, base_rows, strict=True):
        table.append(
            f"| {mine['event']} | {mine['expected']} | {mine['first_alert_pt'] or '—'}"
            f"{'' if mine['right'] else ' **(wrong)**'} | {mine['alerts']} "
            f"| {theirs['first_alert_pt'] or '—'}{'' if theirs['right'] else ' **(wrong)**'} "
            f"| {theirs['alerts']} |"
        )
    table.append("")
    table.append(
        f"Alerts outside these windows (unlabelled: real trouble or false alarms): Forewarn "
        f"{other}, volume-only {base_other}. Issues opened by Forewarn: "
        + (
            ", ".join(f"{t} {m.astimezone(PACIFIC):%m-%d %H:%M} PT ({c})" for t, m, c in ours)
            or "none"
        )
        + "."
    )
    details = {
        "events": rows,
        "volume_only": base_rows,
        "other_alerts": other,
        "volume_only_other_alerts": base_other,
        "method_markdown": (
            "The airline tweets replayed through `forewarn backtest posts` (five-minute "
            "buckets, default policy; one configuration for all airlines, not tuned to these "
            "events). Each known event is a time window on one airline (Pacific time); an "
            "event is right when the backtest opens an issue in its window, and the viral "
            "marketing post is right when it opens none. **Baseline**: the same seasonal "
            "detector and thresholds on total post volume alone. Measured and baseline are "
            f"the number of the {len(EVENTS)} events judged right. The data is a sample of "
            "the real traffic (a few posts per five minutes per airline), and its first day "
            "is also the detector's first day, which it spends learning a baseline."
        ),
        "details_markdown": "\n".join(table),
    }
    return BenchResult(
        name="airline_events",
        title="Known airline events caught by the backtest",
        unit="events",
        measured=right,
        baseline=base_right,
        goal=Goal("at_least", len(EVENTS), on="measured"),
        details=details,
    )
