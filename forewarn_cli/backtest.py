"""`forewarn backtest`: replay recorded posts or a count series through the live detectors."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import click

from chalicelib.backtest import Backtest, in_time_order, is_opening, opened_summary
from chalicelib.detector import Assessment
from chalicelib.emerging import COMPLAINT, BucketCounts, Policy
from chalicelib.posts import Post
from forewarn_cli.series_command import series

PROGRESS_MIN_ROWS = 1000


@click.group()
def backtest() -> None:
    """Replay recorded data through the same code as the scheduled scan."""


backtest.add_command(series)


@dataclass
class Trace:
    """Per topic and bucket, what the plot shows: volume, complaint baseline, negative share."""

    rows: dict[str, list[tuple[datetime, int, int, float, float]]] = field(default_factory=dict)
    opened: dict[str, list[datetime]] = field(default_factory=dict)

    def record(
        self, topic: str, start: datetime, counts: BucketCounts, seen: dict[str, Assessment]
    ) -> None:
        complaint = seen[COMPLAINT]
        self.rows.setdefault(topic, []).append(
            (start, counts.posts, counts.complaint, complaint.expected, counts.negative_share)
        )


def _check_columns(path: Path, columns: dict[str, str | None]) -> None:
    if path.suffix.lower() != ".csv":
        return
    with path.open(encoding="utf-8", newline="") as stream:
        header = next(csv.reader(stream), [])
    missing = [f"--{flag} {name}" for flag, name in columns.items() if name and name not in header]
    if missing:
        raise click.UsageError(
            f"no such column for {', '.join(missing)}; the file has: {', '.join(header)}"
        )


@backtest.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--time-col", required=True, help="Column of the post time (with UTC offset).")
@click.option("--text-col", required=True, help="Column of the post text.")
@click.option("--topic-col", help="Column naming the topic (brand); one topic when absent.")
@click.option("--id-col", help="Column of the post id; row numbers when absent.")
@click.option("--bucket-seconds", default=300, show_default=True, type=click.IntRange(60, 3600))
@click.option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG chart here."
)
def posts(
    file: Path,
    time_col: str,
    text_col: str,
    topic_col: str | None,
    id_col: str | None,
    bucket_seconds: int,
    plot: Path | None,
) -> None:
    """Print one JSON object per line for each emerging issue the posts in FILE open."""
    columns = {"time-col": time_col, "text-col": text_col, "topic-col": topic_col, "id-col": id_col}
    _check_columns(file, columns)
    from chalicelib.replay import read_posts

    try:
        recorded = in_time_order(
            read_posts(
                file, time_col=time_col, text_col=text_col, topic_col=topic_col, id_col=id_col
            )
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    trace = Trace() if plot else None
    run = Backtest(Policy(bucket_seconds=bucket_seconds))
    if trace is not None:
        run.store.on_bucket = trace.record
    for event in run.run(_progress(recorded)):
        if is_opening(event):
            summary = opened_summary(event)
            if trace is not None:
                trace.opened.setdefault(event.issue.topic, []).append(
                    datetime.fromisoformat(summary["opened_at"])
                )
            click.echo(json.dumps(summary, ensure_ascii=False))
    if trace is not None and plot is not None:
        draw(trace, plot)
        click.echo(f"plot written to {plot}", err=True)


def _progress(items: list[Post]) -> Iterator[Post]:
    if len(items) < PROGRESS_MIN_ROWS or not sys.stderr.isatty():
        yield from items
        return
    with click.progressbar(items, label="replaying", file=sys.stderr) as bar:
        yield from bar


def draw(trace: Trace, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    topics = sorted(trace.rows)
    figure, axes = plt.subplots(
        len(topics), 1, figsize=(12, 2.8 * max(1, len(topics))), squeeze=False, sharex=True
    )
    for axis, topic in zip(axes[:, 0], topics, strict=True):
        rows = trace.rows[topic]
        times = [r[0] for r in rows]
        axis.plot(times, [r[1] for r in rows], color="#9aa5b1", lw=0.8, label="all posts")
        axis.plot(times, [r[2] for r in rows], color="#c0392b", lw=1.0, label="complaints")
        axis.plot(times, [r[3] for r in rows], color="#2c3e50", lw=1.0, ls="--", label="baseline")
        share = axis.twinx()
        share.plot(times, [r[4] for r in rows], color="#e67e22", lw=0.5, alpha=0.6)
        share.set_ylim(0, 1)
        share.set_ylabel("negative share", color="#e67e22")
        for moment in trace.opened.get(topic, []):
            axis.axvline(moment, color="#8e44ad", lw=1.2)
        axis.set_title(f"{topic}: {len(trace.opened.get(topic, []))} issues opened", loc="left")
        axis.set_ylabel("posts per bucket")
    axes[0, 0].legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
