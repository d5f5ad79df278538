"""NAB (Numenta Anomaly Benchmark) score of the online detector on the realTweets series.

The scorer follows NAB 1.1's ``nab/sweeper.py`` and ``nab/runner.py`` (standard profile):

* the first ``min(floor(0.15 n), 0.15 x 5000)`` rows of a series are probationary and not
  scored (NAB caps the period at 750 rows; the README's "first 15%" is the uncapped rule,
  reported alongside);
* a window is worth the scaled sigmoid of its *earliest* detection's position,
  ``2 / (1 + exp(5 x)) - 1`` with ``x = -(right - i + 1) / width`` (-1 at the left edge,
  about 0 at the right edge), divided by its value at -1 so an immediate hit earns
  ``A_TP = 1``; a window without a detection costs ``A_FN = 1``;
* a detection outside every window costs ``A_FP = 0.11`` times the sigmoid of its
  distance from the end of the preceding window, in window widths (``|right - i| /
  (width - 1)``), and the full 0.11 when no window precedes it;
* normalised score = 100 x (S - S_null) / (S_perfect - S_null) over the whole corpus, where
  S_null is the detector that never fires (every scorable window missed) and S_perfect
  counts A_TP for every labelled window.

Ours is ``forewarn backtest series``: the same functions of ``forewarn_cli.series_command``
read each file, infer the bucket and score it online; its ``alert`` column is the detection.
One configuration (the defaults of ``chalicelib.detector``) for all series, chosen without
the labels. The baseline is a plain EWMA z-score whose threshold is optimised on the labels
over the corpus, as NAB does for every detector it publishes, which flatters the baseline.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.result import BenchResult, Goal
from chalicelib.detector import AlertPolicy, DetectorConfig
from forewarn_cli.series_command import (
    SeriesRow,
    infer_bucket_seconds,
    read_series,
    score_series,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"
CORPUS = "realTweets"
PROBATION_PERCENT = 0.15
EWMA_HALF_LIFE_BUCKETS = 144  # 12 h at 5 minutes, the same horizon as our recent level
PUBLISHED = {"ARTime": 81.8, "CAD OSE": 74.5, "Numenta HTM": 68.0, "Twitter ADVec": 59.6}
GOAL = 82.0


@dataclass(frozen=True)
class CostMatrix:
    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0


STANDARD = CostMatrix()


def scaled_sigmoid(position: float) -> float:
    """NAB's scaledSigmoid: 2 / (1 + exp(5 x)) - 1, and -1 from three widths past a window."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_length(rows: int, percent: float = PROBATION_PERCENT, cap: bool = True) -> int:
    length = math.floor(percent * rows)
    return int(min(length, percent * 5000)) if cap else length


@dataclass(frozen=True)
class Point:
    """One row as NAB's sweeper sees it: what a detection here would add, and where."""

    weight: float
    window: int | None  # index of the labelled window holding the row, None outside
    scorable: bool  # False in the probationary period


def sweep_points(
    timestamps: Sequence[datetime],
    windows: Sequence[tuple[datetime, datetime]],
    cost: CostMatrix = STANDARD,
    probation: int | None = None,
) -> list[Point]:
    """NAB's ``Sweeper.calcSweepScore``: the weight of a detection at each row."""
    n = len(timestamps)
    probation = probation_length(n) if probation is None else probation
    spans = []
    for left_time, right_time in windows:
        inside = [i for i, t in enumerate(timestamps) if left_time <= t <= right_time]
        if inside:
            spans.append((inside[0], inside[-1]))
    max_tp = scaled_sigmoid(-1.0)
    points: list[Point] = []
    current = 0  # next window to enter
    prev_right: int | None = None
    prev_width = 0.0
    for i in range(n):
        window: int | None = None
        if current < len(spans) and spans[current][0] <= i <= spans[current][1]:
            window = current
        if window is not None:
            left, right = spans[window]
            width = float(right - left + 1)
            weight = scaled_sigmoid(-(right - i + 1) / width) * cost.tp / max_tp
        elif prev_right is None:
            weight = -cost.fp
        else:
            weight = scaled_sigmoid(abs(prev_right - i) / max(prev_width - 1.0, 1.0)) * cost.fp
        points.append(Point(weight, window, i >= probation))
        if window is not None and i == spans[window][1]:
            prev_right, prev_width = i, float(spans[window][1] - spans[window][0] + 1)
            current += 1
    return points


@dataclass(frozen=True)
class SeriesScore:
    score: float
    null: float
    perfect: float
    windows: int
    detected: int  # windows with at least one detection
    missed: int
    false_positives: int  # scorable detections outside every window
    detections: int  # scorable detections in all

    @property
    def normalised(self) -> float:
        return 100.0 * (self.score - self.null) / (self.perfect - self.null)


def score_detections(
    points: Sequence[Point], detections: Sequence[bool], windows: int, cost: CostMatrix = STANDARD
) -> SeriesScore:
    """NAB's ``calcScoreByThreshold`` at one threshold: windows by earliest detection."""
    parts = {p.window: -cost.fn for p in points if p.scorable and p.window is not None}
    fp_total = 0.0
    false_positives = detections_count = 0
    for point, detected in zip(points, detections, strict=True):
        if not (detected and point.scorable):
            continue
        detections_count += 1
        if point.window is None:
            fp_total += point.weight
            false_positives += 1
        else:
            parts[point.window] = max(parts[point.window], point.weight)
    detected_windows = sum(1 for value in parts.values() if value > -cost.fn)
    return SeriesScore(
        score=sum(parts.values()) + fp_total,
        null=-cost.fn * len(parts),
        perfect=cost.tp * windows,
        windows=windows,
        detected=detected_windows,
        missed=len(parts) - detected_windows,
        false_positives=false_positives,
        detections=detections_count,
    )


def corpus_normalised(scores: Sequence[SeriesScore]) -> float:
    total = sum(s.score for s in scores)
    null = sum(s.null for s in scores)
    perfect = sum(s.perfect for s in scores)
    return 100.0 * (total - null) / (perfect - null)


def optimise_threshold(
    series: Sequence[tuple[Sequence[Point], Sequence[float]]], cost: CostMatrix = STANDARD
) -> tuple[float, float]:
    """NAB's optimiser: the one threshold over all series that maximises the summed raw
    score (``calcScoreByThreshold`` swept over every distinct anomaly score).

    Returns (threshold, raw score); detections are ``score >= threshold``.
    """
    entries: list[tuple[float, float, tuple[int, int] | None]] = []
    parts: dict[tuple[int, int], float] = {}
    for k, (points, values) in enumerate(series):
        for point, value in zip(points, values, strict=True):
            if not point.scorable:
                continue
            key = None if point.window is None else (k, point.window)
            if key is not None:
                parts[key] = -cost.fn
            entries.append((value, point.weight, key))
    entries.sort(key=lambda e: -e[0])
    total = sum(parts.values())
    best_score, best_threshold = total, math.inf
    index = 0
    while index < len(entries):
        threshold = entries[index][0]
        while index < len(entries) and entries[index][0] == threshold:
            _, weight, key = entries[index]
            if key is None:
                total += weight
            elif weight > parts[key]:
                total += weight - parts[key]
                parts[key] = weight
            index += 1
        if total > best_score:
            best_score, best_threshold = total, threshold
    return best_threshold, best_score


def ewma_zscores(values: Sequence[int], half_life_buckets: float) -> list[float]:
    """A plain EWMA z-score: (x - mean) / sd of the exponentially weighted past, upward only."""
    a = 1.0 - 2.0 ** (-1.0 / half_life_buckets)
    mean = float(values[0]) if values else 0.0
    var = 0.0
    out = []
    for x in values:
        sd = math.sqrt(var)
        out.append(max(0.0, (x - mean) / sd) if sd > 0 else 0.0)
        delta = x - mean
        mean += a * delta
        var = (1.0 - a) * (var + a * delta * delta)
    return out


# -- the corpus -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    name: str
    rows: list[SeriesRow]
    bucket_seconds: int
    windows: list[tuple[datetime, datetime]]


def _window_time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def load_corpus(data_dir: Path = DATA_DIR) -> list[Series]:
    folder = data_dir / CORPUS
    windows_file = data_dir / "combined_windows.json"
    if not folder.is_dir() or not windows_file.is_file():
        raise RuntimeError(
            f"NAB data not found: expected {folder}/*.csv and {windows_file} "
            "(the shared data folder next to the repository; see its README.md)"
        )
    labels = json.loads(windows_file.read_text())
    corpus = []
    for path in sorted(folder.glob("*.csv")):
        key = f"{CORPUS}/{path.name}"
        if key not in labels:
            raise RuntimeError(f"{windows_file} has no windows for {key}")
        with path.open(encoding="utf-8") as handle:
            rows = read_series(handle)
        corpus.append(
            Series(
                name=path.stem,
                rows=rows,
                bucket_seconds=infer_bucket_seconds(rows),
                windows=[(_window_time(a), _window_time(b)) for a, b in labels[key]],
            )
        )
    if not corpus:
        raise RuntimeError(f"no CSV files in {folder}")
    return corpus


def detect(
    series: Series, config: DetectorConfig | None = None, policy: AlertPolicy | None = None
) -> tuple[list[bool], list[float]]:
    """`forewarn backtest series` on one file: (alert column, anomaly_score column)."""
    scored = list(score_series(series.rows, series.bucket_seconds, config, policy))
    return [s.alert for s in scored], [s.score for s in scored]


def score_alerts(
    corpus: Sequence[Series], alerts: Sequence[Sequence[bool]], probation_cap: bool = True
) -> tuple[float, list[SeriesScore]]:
    scores = []
    for s, detections in zip(corpus, alerts, strict=True):
        points = sweep_points(
            [r.timestamp for r in s.rows],
            s.windows,
            probation=probation_length(len(s.rows), cap=probation_cap),
        )
        scores.append(score_detections(points, detections, len(s.windows)))
    return corpus_normalised(scores), scores


def evaluate(
    corpus: Sequence[Series],
    config: DetectorConfig | None = None,
    policy: AlertPolicy | None = None,
) -> tuple[float, list[SeriesScore]]:
    """The normalised NAB score of the alert column, and each series' score."""
    return score_alerts(corpus, [detect(s, config, policy)[0] for s in corpus])


def _sensitivity(corpus: Sequence[Series]) -> list[dict[str, Any]]:
    """Each main parameter moved by -50% and +50% alone; not used to choose anything."""
    config, policy = DetectorConfig(), AlertPolicy()
    variants: list[tuple[str, float, Callable[[float], tuple[DetectorConfig, AlertPolicy]]]] = [
        (
            "false_alarms_per_day",
            policy.false_alarms_per_day,
            lambda v: (config, replace(policy, false_alarms_per_day=v)),
        ),
        ("cooldown_s", policy.cooldown_s, lambda v: (config, replace(policy, cooldown_s=v))),
        (
            "level_half_life_s",
            config.level_half_life_s,
            lambda v: (replace(config, level_half_life_s=v), policy),
        ),
        ("clip_sigmas", config.clip_sigmas, lambda v: (replace(config, clip_sigmas=v), policy)),
        (
            "calibration_half_life_s",
            config.calibration_half_life_s,
            lambda v: (replace(config, calibration_half_life_s=v), policy),
        ),
        (
            "calibration_decades",
            config.calibration_decades,
            lambda v: (replace(config, calibration_decades=v), policy),
        ),
        (
            "window_s",
            1.0,
            lambda v: (
                replace(config, window_s=tuple(round(w * v) for w in config.window_s)),
                policy,
            ),
        ),
    ]
    out = []
    for name, base, build in variants:
        for factor in (0.5, 1.5):
            cfg, pol = build(base * factor)
            score, _ = evaluate(corpus, cfg, pol)
            out.append({"parameter": name, "factor": factor, "score": round(score, 2)})
    return out


def run(data_dir: Path = DATA_DIR, sensitivity: bool = True) -> BenchResult:
    started = time.perf_counter()
    corpus = load_corpus(data_dir)

    outputs = [detect(s) for s in corpus]
    ours_timing = time.perf_counter() - started
    ours_score, ours = score_alerts(corpus, [alerts for alerts, _ in outputs])
    uncapped_score, _ = score_alerts(corpus, [alerts for alerts, _ in outputs], probation_cap=False)

    points = [sweep_points([r.timestamp for r in s.rows], s.windows) for s in corpus]
    z = [ewma_zscores([r.count for r in s.rows], EWMA_HALF_LIFE_BUCKETS) for s in corpus]
    threshold, _ = optimise_threshold(list(zip(points, z, strict=True)))
    baseline = [
        score_detections(p, [v >= threshold for v in values], len(s.windows))
        for p, values, s in zip(points, z, corpus, strict=True)
    ]
    baseline_score = corpus_normalised(baseline)
    fixed = [
        score_detections(p, [v >= 3.0 for v in values], len(s.windows))
        for p, values, s in zip(points, z, corpus, strict=True)
    ]

    # What label-tuning would buy us: NAB's optimiser on our anomaly_score column.
    our_scores = [scores for _, scores in outputs]
    tuned_threshold, _ = optimise_threshold(list(zip(points, our_scores, strict=True)))
    tuned = [
        score_detections(p, [v >= tuned_threshold for v in values], len(s.windows))
        for p, values, s in zip(points, our_scores, corpus, strict=True)
    ]

    robustness = _sensitivity(corpus) if sensitivity else []
    per_series = {
        s.name: {
            "rows": len(s.rows),
            "bucket_seconds": s.bucket_seconds,
            "probationary_rows": probation_length(len(s.rows)),
            "ours": _series_details(o),
            "baseline": _series_details(b),
        }
        for s, o, b in zip(corpus, ours, baseline, strict=True)
    }
    details: dict[str, Any] = {
        "corpus": f"{CORPUS} ({len(corpus)} series here)",
        "profile": asdict(STANDARD),
        "series": per_series,
        "ours": _totals(ours, ours_score),
        "ours_uncapped_probation": round(uncapped_score, 2),
        "ours_label_tuned_threshold": {
            "score": round(corpus_normalised(tuned), 2),
            "threshold": _finite(tuned_threshold),
        },
        "baseline": {
            **_totals(baseline, baseline_score),
            "half_life_buckets": EWMA_HALF_LIFE_BUCKETS,
            "threshold_z": _finite(threshold),
            "score_at_fixed_z3": round(corpus_normalised(fixed), 2),
        },
        "published_reference": PUBLISHED,
        "detector_config": DetectorConfig().to_dict(),
        "alert_policy": asdict(AlertPolicy()),
        "sensitivity": robustness,
        "seconds_ours": round(ours_timing, 2),
        "seconds_total": round(time.perf_counter() - started, 2),
    }
    details["method_markdown"] = METHOD
    details["details_markdown"] = _details_markdown(details)
    return BenchResult(
        name="nab",
        title="Anomaly detection: NAB score on realTweets (standard profile)",
        unit="score",
        measured=ours_score,
        baseline=baseline_score,
        goal=Goal("at_least", GOAL, on="measured"),
        details=details,
    )


def _finite(value: float) -> float | None:
    """JSON has no infinity: a threshold above every score (never fire) becomes None."""
    return round(value, 4) if math.isfinite(value) else None


def _series_details(s: SeriesScore) -> dict[str, Any]:
    return {
        "raw_score": round(s.score, 4),
        "normalised": round(s.normalised, 2),
        "windows": s.windows,
        "tp_windows": s.detected,
        "fn_windows": s.missed,
        "fp_detections": s.false_positives,
        "detections": s.detections,
    }


def _totals(scores: Sequence[SeriesScore], normalised: float) -> dict[str, Any]:
    return {
        "normalised": round(normalised, 2),
        "raw_score": round(sum(s.score for s in scores), 4),
        "null_score": sum(s.null for s in scores),
        "perfect_score": sum(s.perfect for s in scores),
        "tp_windows": sum(s.detected for s in scores),
        "fn_windows": sum(s.missed for s in scores),
        "fp_detections": sum(s.false_positives for s in scores),
    }


METHOD = """\
**Data.** NAB's realTweets series available here (5 of NAB's 10: AAPL, GOOG, IBM, KO, UPS;
5-minute counts of mentions, about 15,900 rows each) with NAB's labelled windows. The
published scores quoted for reference were measured on all 10 realTweets series with
thresholds optimised by NAB, so they are a yardstick, not a like-for-like comparison.

**Scoring.** A re-implementation of NAB 1.1's sweeper and normalisation, standard profile
(A_TP = 1, A_FP = -0.11, A_FN = -1): the earliest detection in a window earns the scaled
sigmoid of its position, a missed window costs 1, a detection outside the windows costs up
to 0.11 depending on its distance from the preceding window; the first
min(15%, 750) rows of each series are probationary; normalised = 100 x (S - S_null) /
(S_perfect - S_null) over the corpus.

**Forewarn.** Exactly `forewarn backtest series FILE.csv` (the same functions): each row is
assessed from the past only, then learned; its `alert` column is the detection. The model
is a seasonal (UTC hour of day and hour of week) count baseline with negative-binomial
tails over 5 min, 30 min and 2 h windows, calibrated online against the series' own
history of surprises; the policy allows one false alarm per week per series (tail 5e-4
per 5-minute bucket), waits one day before alerting and stays quiet 6 h after an alert.
All settings are the library defaults, the same for every series, chosen from those
operating targets and never fitted to the labels; the table below moves each by ±50%.

**Baseline.** A plain EWMA z-score (mean and variance with a 12 h half-life, upward
deviations only), its threshold optimised on the labels over the corpus as NAB does for the
detectors it publishes — a favour our detector does not get.
"""


HISTORY = """\
History, for honesty: the first run of this benchmark scored 47.3. Two changes followed,
each justified without the labels: the tail calibration now fits the peaks of episodes
rather than every surprising bucket (extreme-value practice: the buckets of one burst are
not independent, and alerts are budgeted per episode), 50.9; and the seasonal profiles
no longer learn from stretches the 2 h window finds anomalous, with the hour-of-week
profile trusted over two weeks rather than one (a synthetic level shift had become a
"Thursday effect" for weeks), 57.9."""


def _details_markdown(d: dict[str, Any]) -> str:
    lines = [
        "| Series | Ours | TP / FN windows | FP | Baseline | TP / FN | FP |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in d["series"].items():
        o, b = s["ours"], s["baseline"]
        lines.append(
            f"| {name} | {o['normalised']:.1f} | {o['tp_windows']} / {o['fn_windows']} "
            f"| {o['fp_detections']} | {b['normalised']:.1f} | {b['tp_windows']} / "
            f"{b['fn_windows']} | {b['fp_detections']} |"
        )
    o, b = d["ours"], d["baseline"]
    lines.append(
        f"| **corpus** | **{o['normalised']:.1f}** | {o['tp_windows']} / {o['fn_windows']} "
        f"| {o['fp_detections']} | **{b['normalised']:.1f}** | {b['tp_windows']} / "
        f"{b['fn_windows']} | {b['fp_detections']} |"
    )
    lines += [
        "",
        "Per-series columns are normalised per series; the corpus figure is normalised over "
        "all windows together. FP counts detections outside windows (each costs at most "
        "0.11).",
        "",
        f"Baseline threshold chosen by NAB's optimiser: z ≥ {d['baseline']['threshold_z']} "
        "(on all 10 series NAB publishes about 47 for such a detector); "
        f"at a fixed z ≥ 3 it scores {d['baseline']['score_at_fixed_z3']:.1f}. For "
        "reference only: NAB's optimiser on our `anomaly_score` column (no cooldown, label-"
        f"tuned) would reach {d['ours_label_tuned_threshold']['score']:.1f}; with the "
        f"uncapped 15% probationary period ours scores {d['ours_uncapped_probation']:.1f}. "
        "Published NAB scores: "
        + ", ".join(f"{k} {v}" for k, v in d["published_reference"].items())
        + ".",
    ]
    if d["sensitivity"]:
        lines += [
            "",
            "Robustness (each setting alone x 0.5 and x 1.5; nothing was chosen from this):",
            "",
            "| Setting | x 0.5 | x 1.5 |",
            "|---|---:|---:|",
        ]
        by_name: dict[str, dict[float, float]] = {}
        for row in d["sensitivity"]:
            by_name.setdefault(row["parameter"], {})[row["factor"]] = row["score"]
        for name, values in by_name.items():
            lines.append(f"| `{name}` | {values.get(0.5, 0):.1f} | {values.get(1.5, 0):.1f} |")
        moved = [row["score"] for row in d["sensitivity"]]
        lines += [
            "",
            f"Across these moves the score ranges from {min(moved):.1f} to {max(moved):.1f}: "
            "it does not collapse, but it is not flat either, and the defaults were kept "
            "even where a move scores higher, since choosing by this table would be fitting "
            "the labels.",
        ]
    lines += [
        "",
        HISTORY,
        "",
        f"Scoring the five series took {d['seconds_ours']:.1f} s.",
    ]
    return "\n".join(lines)
