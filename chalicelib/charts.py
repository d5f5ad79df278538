"""Small SVG charts for the server-rendered ops console, as text.

`issue_chart` draws an emerging issue's buckets (`Issue.counts` rows: `at`, `posts`,
`negative`, `cluster`, `expected`): the cluster volume as bars, the baseline as a dashed step
line, and the negative share as a second line on a right-hand 0-100% axis. `sparkline` draws
a compact line for dashboard rows.

Every chart is a complete `<svg>` element that renders with no stylesheet (inline
presentation attributes) yet carries CSS classes so the console can restyle it; it is
accessible (`role="img"`, `<title>`, `<desc>`, `aria-labelledby`) and scales to its container
(`viewBox`, `width="100%"`).

Titles, labels and row fields are untrusted (topics and terms come from social posts): every
attribute value and every text node goes through one escaping helper, text is stripped of
characters XML cannot hold, and numbers are forced finite, so nothing in a row can end an
attribute or open an element. Nothing here raises on bad rows: a field that is missing or not
a finite number counts as 0, an unreadable time is shown as a dash.

Output size is bounded: at most `MAX_BUCKETS` bars or points are drawn. Longer series are
downsampled by splitting them into consecutive groups of equal size and keeping, per group,
the bucket with the highest volume (for a sparkline, the highest value), so a spike is never
averaged away and the peak always survives.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import SupportsFloat, TypeVar

MAX_BUCKETS = 500
MAX_TEXT = 200  # characters of a title or label kept; a chart is no place for an essay
MAX_VALUE = 1e12  # bigger counts are bad data, and would only make the text longer

# Okabe-Ito colours: blue against orange stays distinct for every common colour-vision
# deficiency, and the series also differ by shape (bars, dashes, a dotted line), not colour alone.
VOLUME_COLOUR = "#0072B2"
BASELINE_COLOUR = "#333333"
SHARE_COLOUR = "#D55E00"
TEXT_COLOUR = "#333333"
AXIS_COLOUR = "#999999"
FONT = "system-ui, sans-serif"

# Beyond this many buckets a marker per point only adds clutter and bytes.
MARKERS_UP_TO = 60

_MARGIN_LEFT = 44
_MARGIN_RIGHT = 40
_MARGIN_TOP = 26
_MARGIN_BOTTOM = 20

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SAFE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

T = TypeVar("T")


@dataclass(frozen=True)
class _Bucket:
    at: datetime | None
    posts: float
    negative: float
    volume: float
    expected: float

    @property
    def share(self) -> float | None:
        """Negative share in [0, 1]; None for a bucket with no posts, which has no share."""
        if self.posts <= 0:
            return None
        return min(1.0, self.negative / self.posts)


def issue_chart(
    rows: Iterable[Mapping[str, object]] | None,
    *,
    title: str,
    width: int = 640,
    height: int = 200,
    chart_id: str | None = None,
) -> str:
    """The issue's volume against its baseline, with its negative share, as an `<svg>`.

    `chart_id` names the `<title>`/`<desc>` ids (`aria-labelledby` needs ids unique on the
    page); anything but a short identifier is replaced by one derived from the content.
    """
    all_buckets = [_bucket(row) for row in (rows or ())]
    buckets = _downsample(all_buckets, MAX_BUCKETS, key=lambda b: b.volume)
    width = _clamp(width, 240, 4000, 640)
    height = _clamp(height, 100, 2000, 200)
    name = _text(title) or "Chart"
    summary = _describe(all_buckets, len(buckets))
    ident = _ident(chart_id, "fw-chart", name, summary)

    x0, x1 = float(_MARGIN_LEFT), float(width - _MARGIN_RIGHT)
    y0, y1 = float(_MARGIN_TOP), float(height - _MARGIN_BOTTOM)
    parts = [
        _el("title", {"id": f"{ident}-title"}, name),
        _el("desc", {"id": f"{ident}-desc"}, summary),
    ]
    if not buckets:
        parts.append(_axis_line(x0, y1, x1, y1))
        parts.append(
            _el(
                "text",
                {
                    "class": "fw-chart-empty",
                    "x": (x0 + x1) / 2,
                    "y": (y0 + y1) / 2,
                    "text-anchor": "middle",
                    "dominant-baseline": "middle",
                    "fill": TEXT_COLOUR,
                    "font-size": 13,
                },
                "no data yet",
            )
        )
        return _svg(ident, width, height, "fw-chart fw-chart-issue", parts)

    top = max(1.0, max(b.volume for b in buckets), max(b.expected for b in buckets))
    slot = (x1 - x0) / len(buckets)
    plot_height = y1 - y0

    def volume_y(value: float) -> float:
        return y1 - value / top * plot_height

    def share_y(share: float) -> float:
        return y1 - share * plot_height

    parts.append(_axis_line(x0, y0, x1, y0, dashed=True))  # the top of the scale, faintly
    bars = []
    for index, bucket in enumerate(buckets):
        bar_height = bucket.volume / top * plot_height
        bars.append(
            _el(
                "rect",
                {
                    "class": "fw-chart-bar",
                    "x": x0 + index * slot + slot * 0.1,
                    "y": y1 - bar_height,
                    "width": max(0.5, slot * 0.8),
                    "height": bar_height,
                },
            )
        )
    # Fill on the group, which the bars inherit: up to MAX_BUCKETS bars, bytes add up.
    parts.append(
        _el(
            "g",
            {"class": "fw-chart-bars", "fill": VOLUME_COLOUR, "fill-opacity": 0.75},
            raw="".join(bars),
        )
    )

    # A step line, one level per bucket: the baseline is per bucket, and a single bucket
    # still gets a visible segment.
    baseline: list[tuple[float, float]] = []
    for index, bucket in enumerate(buckets):
        y = volume_y(bucket.expected)
        if not baseline or baseline[-1] != (x0 + index * slot, y):
            baseline.append((x0 + index * slot, y))
        baseline.append((x0 + (index + 1) * slot, y))
    parts.append(
        _el(
            "polyline",
            {
                "class": "fw-chart-baseline",
                "points": _points(baseline),
                "fill": "none",
                "stroke": BASELINE_COLOUR,
                "stroke-width": 1.5,
                "stroke-dasharray": "5 3",
            },
        )
    )

    parts.append(_share_series(buckets, x0, slot, share_y))
    parts.append(_axis_line(x0, y1, x1, y1))
    parts.append(_axis_line(x1, y0, x1, y1))
    # Times come from the rows themselves: a downsampled group is drawn at its peak, which
    # need not be the first or last row.
    ends = [bucket.at for bucket in all_buckets[:1] + all_buckets[1:][-1:]]
    parts += _labels(ends, top, x0, x1, y0, y1)
    parts.append(_legend(x0, y0))
    return _svg(ident, width, height, "fw-chart fw-chart-issue", parts)


def sparkline(
    values: Sequence[float] | None,
    *,
    label: str,
    width: int = 120,
    height: int = 24,
    chart_id: str | None = None,
) -> str:
    """A compact line of `values` for a dashboard row, as an `<svg>` of a fixed size."""
    finite = [_finite(v, floor=-MAX_VALUE) for v in (values or ())]
    points = _downsample(finite, MAX_BUCKETS, key=lambda v: v)
    width = _clamp(width, 20, 2000, 120)
    height = _clamp(height, 8, 500, 24)
    name = _text(label) or "Trend"
    if points:
        summary = (
            f"{name}: latest {_count(points[-1])}, low {_count(min(points))}, "
            f"high {_count(max(points))} over {len(points)} points"
        )
    else:
        summary = f"{name}: no data yet"
    ident = _ident(chart_id, "fw-spark", name, summary)
    parts = [_el("title", {"id": f"{ident}-title"}, summary)]
    pad = 2.0
    inner_width, inner_height = width - 2 * pad, height - 2 * pad
    if not points:
        parts.append(_axis_line(pad, height / 2, width - pad, height / 2, dashed=True))
    else:
        low, high = min(points), max(points)
        spread = high - low

        def y_of(value: float) -> float:
            if spread == 0:
                return height / 2
            return pad + (high - value) / spread * inner_height

        if len(points) == 1:
            line = [(pad, y_of(points[0])), (width - pad, y_of(points[0]))]
        else:
            step = inner_width / (len(points) - 1)
            line = [(pad + i * step, y_of(v)) for i, v in enumerate(points)]
        parts.append(
            _el(
                "polyline",
                {
                    "class": "fw-spark-line",
                    "points": _points(line),
                    "fill": "none",
                    "stroke": VOLUME_COLOUR,
                    "stroke-width": 1.5,
                    "stroke-linejoin": "round",
                },
            )
        )
        last_x, last_y = line[-1]
        parts.append(
            _el(
                "circle",
                {
                    "class": "fw-spark-last",
                    "cx": last_x,
                    "cy": last_y,
                    "r": 2,
                    "fill": VOLUME_COLOUR,
                },
            )
        )
    return _el(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "class": "fw-spark",
            "role": "img",
            "aria-labelledby": f"{ident}-title",
            "viewBox": f"0 0 {width} {height}",
            "width": width,
            "height": height,
            "preserveAspectRatio": "none",
            "focusable": "false",
        },
        raw="".join(parts),
    )


# --- rows -----------------------------------------------------------------------------------


def _bucket(row: object) -> _Bucket:
    if not isinstance(row, Mapping):
        row = {}
    return _Bucket(
        at=_time(row.get("at")),
        posts=_finite(row.get("posts")),
        negative=_finite(row.get("negative")),
        volume=_finite(row.get("cluster")),
        expected=_finite(row.get("expected")),
    )


def _finite(value: object, *, floor: float = 0.0) -> float:
    """A finite number within [floor, MAX_VALUE]; anything else is 0. Rows from DynamoDB hold
    Decimals and hand-made rows may hold strings, so whatever `float` accepts is a number."""
    if isinstance(value, bool) or value is None:
        return 0.0
    if not isinstance(value, str | SupportsFloat):
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if not math.isfinite(number):
        return 0.0
    return min(MAX_VALUE, max(floor, number))


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the store writes UTC; a bare time is taken as UTC
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _downsample(items: list[T], limit: int, key: Callable[[T], float]) -> list[T]:
    """At most `limit` items: consecutive groups of equal size, each kept as its largest item
    (the first of equals), so spikes and the overall peak survive."""
    if len(items) <= limit:
        return items
    size = math.ceil(len(items) / limit)
    return [max(items[start : start + size], key=key) for start in range(0, len(items), size)]


# --- words ----------------------------------------------------------------------------------


def _describe(buckets: list[_Bucket], shown: int) -> str:
    if not buckets:
        return "No data yet."
    peak = max(buckets, key=lambda b: b.volume)  # max keeps the first of equal peaks
    sentence = f"Peak {_count(peak.volume)} {_plural(peak.volume, 'post')}"
    if peak.at is not None:
        sentence += f" at {_hhmm(peak.at)} UTC"
    sentence += f" against a baseline of {peak.expected:.1f}"
    if peak.share is not None:
        sentence += f"; {_percent(peak.share)} negative"
    sentence += "."
    count = len(buckets)
    span = f"{count} {_plural(count, 'bucket')}"
    first, last = buckets[0].at, buckets[-1].at
    if first is not None and last is not None and count > 1:
        span += f" from {_hhmm(first)} to {_hhmm(last)} UTC"
    elif first is not None:
        span += f" at {_hhmm(first)} UTC"
    sentence += f" {span}."
    if shown < count:
        sentence += f" Showing {shown} bars, each the busiest bucket of its group."
    return sentence


def _count(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.1f}"


def _plural(value: float, word: str) -> str:
    return word if value == 1 else f"{word}s"


def _percent(share: float) -> str:
    return f"{round(share * 100)}%"


def _hhmm(moment: datetime | None) -> str:
    return moment.strftime("%H:%M") if moment is not None else "\u2013"


def _text(value: object) -> str:
    """Untrusted text made fit for a chart: bounded length, no characters XML cannot hold.
    Escaping happens later, in `_el`, the one place text reaches the output."""
    text = _clean(value).strip()
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1].rstrip() + "\u2026"
    return text


def _clean(value: object) -> str:
    # Control characters are invalid in XML even when escaped, so they are dropped.
    return _XML_INVALID.sub("", value) if isinstance(value, str) else ""


def _ident(requested: str | None, prefix: str, *content: str) -> str:
    if requested is not None and _SAFE_ID.fullmatch(requested):
        return requested
    # The same chart drawn twice gets the same id, which keeps the output deterministic; a
    # page showing two identical charts should pass its own `chart_id`.
    digest = hashlib.sha256("\x00".join(content).encode("utf-8", "replace")).hexdigest()
    return f"{prefix}-{digest[:12]}"


def _clamp(value: object, low: int, high: int, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    if not math.isfinite(value):
        return default
    return int(min(high, max(low, value)))


# --- drawing --------------------------------------------------------------------------------


def _share_series(
    buckets: list[_Bucket], x0: float, slot: float, share_y: Callable[[float], float]
) -> str:
    """Negative share as lines through bucket centres, broken where a bucket has no posts
    (a share of nothing is not 0%), with markers so a lone point still shows."""
    runs: list[list[tuple[float, float]]] = [[]]
    for index, bucket in enumerate(buckets):
        share = bucket.share
        if share is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((x0 + (index + 0.5) * slot, share_y(share)))
    stroke: dict[str, str | float] = {"fill": "none", "stroke": SHARE_COLOUR, "stroke-width": 2}
    dense = len(buckets) > MARKERS_UP_TO
    pieces = []
    for run in runs:
        if len(run) > 1:
            pieces.append(
                _el(
                    "polyline",
                    {"class": "fw-chart-share", "points": _points(run), **stroke},
                )
            )
        if not dense or len(run) == 1:
            for x, y in run:
                pieces.append(
                    _el(
                        "circle",
                        {
                            "class": "fw-chart-share-point",
                            "cx": x,
                            "cy": y,
                            "r": 2.5,
                            "fill": SHARE_COLOUR,
                        },
                    )
                )
    return _el("g", {"class": "fw-chart-shares"}, raw="".join(pieces))


def _labels(
    ends: list[datetime | None],
    top: float,
    x0: float,
    x1: float,
    y0: float,
    y1: float,
) -> list[str]:
    """Axis labels; `ends` holds the first time and, when there is more than one row, the
    last."""
    text: dict[str, str | float] = {"fill": TEXT_COLOUR, "font-size": 10}
    below = y1 + 13
    labels = [
        _el(
            "text",
            {
                "class": "fw-chart-label fw-chart-max",
                "x": x0 - 4,
                "y": y0 + 4,
                "text-anchor": "end",
                **text,
            },
            _count(top),
        ),
        _el(
            "text",
            {"class": "fw-chart-label", "x": x0 - 4, "y": y1, "text-anchor": "end", **text},
            "0",
        ),
        _el(
            "text",
            {"class": "fw-chart-label", "x": x1 + 4, "y": y0 + 4, "text-anchor": "start", **text},
            "100%",
        ),
        _el(
            "text",
            {"class": "fw-chart-label", "x": x1 + 4, "y": y1, "text-anchor": "start", **text},
            "0%",
        ),
        _el(
            "text",
            {
                "class": "fw-chart-label fw-chart-time",
                "x": x0,
                "y": below,
                "text-anchor": "start",
                **text,
            },
            f"{_hhmm(ends[0])} UTC",
        ),
    ]
    if len(ends) > 1:
        labels.append(
            _el(
                "text",
                {
                    "class": "fw-chart-label fw-chart-time",
                    "x": x1,
                    "y": below,
                    "text-anchor": "end",
                    **text,
                },
                f"{_hhmm(ends[-1])} UTC",
            )
        )
    return labels


def _legend(x0: float, y0: float) -> str:
    y = y0 - 12
    text: dict[str, str | float] = {"fill": TEXT_COLOUR, "font-size": 10}
    items = [
        _el(
            "rect",
            {
                "x": x0,
                "y": y - 4,
                "width": 10,
                "height": 8,
                "fill": VOLUME_COLOUR,
                "fill-opacity": 0.75,
            },
        ),
        _el("text", {"x": x0 + 14, "y": y + 3.5, **text}, "Volume"),
        _el(
            "line",
            {
                "x1": x0 + 64,
                "y1": y,
                "x2": x0 + 82,
                "y2": y,
                "stroke": BASELINE_COLOUR,
                "stroke-width": 1.5,
                "stroke-dasharray": "5 3",
            },
        ),
        _el("text", {"x": x0 + 86, "y": y + 3.5, **text}, "Baseline"),
        _el(
            "line",
            {
                "x1": x0 + 140,
                "y1": y,
                "x2": x0 + 158,
                "y2": y,
                "stroke": SHARE_COLOUR,
                "stroke-width": 2,
            },
        ),
        _el("circle", {"cx": x0 + 149, "cy": y, "r": 2.5, "fill": SHARE_COLOUR}),
        _el("text", {"x": x0 + 162, "y": y + 3.5, **text}, "Negative % (right axis)"),
    ]
    return _el("g", {"class": "fw-chart-legend", "aria-hidden": "true"}, raw="".join(items))


def _axis_line(x1: float, y1: float, x2: float, y2: float, *, dashed: bool = False) -> str:
    attrs: dict[str, str | float] = {
        "class": "fw-chart-axis",
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "stroke": AXIS_COLOUR,
        "stroke-width": 1,
    }
    if dashed:
        attrs["stroke-dasharray"] = "2 3"
    return _el("line", attrs)


def _svg(ident: str, width: int, height: int, classes: str, parts: list[str]) -> str:
    return _el(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "class": classes,
            "role": "img",
            "aria-labelledby": f"{ident}-title {ident}-desc",
            "viewBox": f"0 0 {width} {height}",
            "width": "100%",
            "preserveAspectRatio": "xMidYMid meet",
            "focusable": "false",
            "font-family": FONT,  # inherited by every text, so it is said once
        },
        raw="".join(parts),
    )


def _points(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{_num(x)},{_num(y)}" for x, y in points)


def _num(value: float) -> str:
    if not math.isfinite(value):
        value = 0.0
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _el(
    tag: str,
    attrs: Mapping[str, str | float],
    text: str | None = None,
    *,
    raw: str | None = None,
) -> str:
    """One element. Every attribute value and `text` is escaped here; `raw` is only ever
    markup this module built with `_el`."""
    rendered = "".join(f' {name}="{_attr(value)}"' for name, value in attrs.items())
    if text is not None:
        body = html.escape(_clean(text), quote=True)
    elif raw is not None:
        body = raw
    else:
        return f"<{tag}{rendered}/>"
    return f"<{tag}{rendered}>{body}</{tag}>"


def _attr(value: str | float) -> str:
    text = _num(value) if isinstance(value, int | float) else _clean(value)
    return html.escape(text, quote=True)
