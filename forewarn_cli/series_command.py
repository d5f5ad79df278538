"""``forewarn backtest series FILE.csv``: run the online detector over a recorded series.

Input is NAB's format, ``timestamp,value`` with a header (more columns are ignored);
output is ``timestamp,value,anomaly_score,alert``, one row per input row in the same order,
timestamp and value echoed as given. Every row is scored from the rows before it only
(assess, then learn), exactly as the service scores a bucket when it closes, and alerts
follow ``chalicelib.detector.SeriesAlerter`` with its default policy.

``read_series``, ``infer_bucket_seconds`` and ``score_series`` are the command's whole
pipeline; ``bench/nab.py`` calls them too, so the benchmark measures this command.
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import click

from chalicelib.detector import (
    MAX_BUCKET_SECONDS,
    MIN_BUCKET_SECONDS,
    AlertPolicy,
    DetectorConfig,
    SeriesAlerter,
    SeriesModel,
)

PROGRESS_ROWS = 5_000  # below this the run is too quick for a progress bar to help
DEFAULT_BUCKET_SECONDS = 300  # only when there are too few rows to infer it


class SeriesError(ValueError):
    """Input the command cannot score; the message is one line, ready for the user."""


@dataclass(frozen=True)
class SeriesRow:
    raw_timestamp: str
    raw_value: str
    timestamp: datetime  # UTC
    count: int


@dataclass(frozen=True)
class ScoredRow:
    row: SeriesRow
    score: float
    alert: bool


def parse_timestamp(text: str) -> datetime:
    """``2015-02-26 21:42:53`` (naive means UTC) or ISO 8601 with an offset or ``Z``."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_count(text: str) -> int:
    value = float(text.strip())
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    # Values are counts; a fractional value is rounded rather than rejected.
    return math.floor(value + 0.5)


def read_series(lines: Iterable[str]) -> list[SeriesRow]:
    """Parse the CSV; raise SeriesError naming the row (1 = first data row) on bad input."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise SeriesError("the file is empty; expected a header line 'timestamp,value'")
    names = [name.strip().lower() for name in header]
    missing = [name for name in ("timestamp", "value") if name not in names]
    if missing:
        raise SeriesError(
            f"header line lacks column(s) {', '.join(missing)}; expected 'timestamp,value'"
        )
    time_col, value_col = names.index("timestamp"), names.index("value")
    rows: list[SeriesRow] = []
    for number, fields in enumerate(reader, start=1):
        if not fields:
            continue
        if len(fields) <= max(time_col, value_col):
            raise SeriesError(f"row {number}: expected a timestamp and a value, got {fields!r}")
        raw_time, raw_value = fields[time_col], fields[value_col]
        try:
            moment = parse_timestamp(raw_time)
        except ValueError:
            raise SeriesError(f"row {number}: cannot parse timestamp {raw_time!r}") from None
        try:
            count = parse_count(raw_value)
        except ValueError:
            raise SeriesError(
                f"row {number}: value {raw_value!r} is not a non-negative number"
            ) from None
        rows.append(SeriesRow(raw_time, raw_value, moment, count))
    return rows


def infer_bucket_seconds(rows: list[SeriesRow]) -> int:
    """The median spacing of consecutive rows, which must be 60 s .. 1 h."""
    spacings = [
        (b.timestamp - a.timestamp).total_seconds()
        for a, b in itertools.pairwise(rows)
        if b.timestamp > a.timestamp
    ]
    if not spacings:
        return DEFAULT_BUCKET_SECONDS
    bucket = round(statistics.median(spacings))
    if not MIN_BUCKET_SECONDS <= bucket <= MAX_BUCKET_SECONDS:
        raise SeriesError(
            f"rows are {bucket} s apart (median); the detector needs buckets of "
            f"{MIN_BUCKET_SECONDS} s to {MAX_BUCKET_SECONDS} s"
        )
    return bucket


def score_series(
    rows: Iterable[SeriesRow],
    bucket_seconds: int,
    config: DetectorConfig | None = None,
    policy: AlertPolicy | None = None,
) -> Iterator[ScoredRow]:
    """Score each row from the past alone: the model assesses the bucket, then learns it."""
    alerter = SeriesAlerter(SeriesModel(bucket_seconds, config), policy)
    for row in rows:
        assessment, alert = alerter.observe(row.timestamp, row.count)
        yield ScoredRow(row, assessment.score, alert)


def write_scores(scored: Iterable[ScoredRow], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp", "value", "anomaly_score", "alert"])
    for item in scored:
        writer.writerow(
            [item.row.raw_timestamp, item.row.raw_value, f"{item.score:.4f}", int(item.alert)]
        )


def _with_progress(rows: list[SeriesRow], run: Callable[[Iterable[SeriesRow]], None]) -> None:
    if len(rows) < PROGRESS_ROWS:
        run(rows)
        return
    with click.progressbar(rows, label="scoring", file=sys.stderr) as bar:
        run(bar)


@click.command("series")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@click.option(
    "--bucket-seconds",
    type=int,
    default=None,
    help="Bucket size; by default the median spacing of the rows.",
)
def series(file: IO[str], bucket_seconds: int | None) -> None:
    """Score FILE (CSV timestamp,value) with the online detector; CSV on stdout.

    Output columns: timestamp,value,anomaly_score,alert. Naive timestamps are UTC.
    """
    try:
        rows = read_series(file)
        bucket = bucket_seconds if bucket_seconds is not None else infer_bucket_seconds(rows)
        if not MIN_BUCKET_SECONDS <= bucket <= MAX_BUCKET_SECONDS:
            raise SeriesError(
                f"--bucket-seconds must be {MIN_BUCKET_SECONDS} to {MAX_BUCKET_SECONDS}"
            )
    except (SeriesError, UnicodeDecodeError, csv.Error) as exc:
        click.secho(f"error: {file.name}: {exc}", fg="red", err=True)
        sys.exit(2)
    _with_progress(rows, lambda items: write_scores(score_series(items, bucket), sys.stdout))
