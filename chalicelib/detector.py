"""An online model of one series of counts per fixed time bucket, and when to alert on it.

The model (``SeriesModel``) predicts the count of the next bucket as

    expected = level x daily(hour of day) x weekly(hour of week)

where ``level`` is a recent level (an exponentially weighted ratio of counts to seasonal
factors, half-life ``level_half_life_s``) and the two profiles are per-slot ratios, shrunk
towards 1 until a slot has a day (hour of day) or two weeks (hour of week) of data. From a
cold start the level alone predicts, and a prior dispersion keeps the first buckets from
looking extreme. Slots are taken in **UTC**: a brand whose audience lives in one time
zone still gets a correct profile, only shifted; what UTC cannot follow is a
daylight-saving jump, which the profiles relearn within days.

How surprising a count is comes from count distributions, not z-scores: the bucket is
negative binomial with mean ``expected`` and variance ``μ + alpha·μ²``, the overdispersion
``alpha`` estimated online (method of moments; 0 for a Poisson-like series). That is sound at
0-5 posts per bucket, where a Gaussian tail is badly wrong, and at hundreds per bucket,
where mention counts are far more variable than Poisson. The same test runs on the sums
of the last 30 minutes and 2 hours, with their own dispersion (which absorbs the
autocorrelation of the model's errors), so a rise that no single bucket shows, typical of
a quiet brand, is still seen; the smallest tail is multiplied by the number of windows
tried (Bonferroni).

Real mention counts burst far more often than any negative binomial allows, so that tail
is then calibrated against the series' own history, as in extreme-value "peaks over
threshold" (SPOT, Siffer et al., KDD 2017): surprises beyond 1e-2 are grouped into
episodes, and the rate of episodes and the excess of their peaks (a generalised Pareto in
decades of tail) are learned online. The reported tail is the larger of the model's and
the calibrated one: never more confident than either.

Learning is robust: what the model learns from a bucket is winsorised at ``clip_sigmas``
standard deviations, so one spike cannot inflate the baseline, and a stretch that the 2 h
window finds anomalous teaches the level but not the seasonal profiles. A lasting change
keeps pushing at the clip and raises the dispersion, which widens the clip, and is
absorbed within about a day (see tests/test_detector.py).

``SeriesAlerter`` turns assessments into alerts: a tail threshold that follows from a
tolerated false-alarm rate per day, no alerts during warm-up, and a cooldown after an
alert, since one incident should page once.

Pure Python (``math`` only): this runs in Lambda on every bucket close, at about 50 µs a
bucket.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
MIN_BUCKET_SECONDS = 60
MAX_BUCKET_SECONDS = HOUR
SCHEMA_VERSION = 1

# Season factors are clamped so that one bucket at an almost-empty hour cannot move the
# level by a huge ratio.
_SEASON_MIN, _SEASON_MAX = 0.05, 20.0
_TINY = sys.float_info.min
_LOG10_E = 1.0 / math.log(10.0)  # mean excess, in decades, of an exactly calibrated tail
_CAL_LOGS = 4  # where the log-sums start in the calibration state
_EPS = 1e-13
_MAX_ITERATIONS = 20_000


@dataclass(frozen=True)
class DetectorConfig:
    """Model settings; every duration is in seconds so it means the same at any bucket size."""

    # Recent level: long enough that an incident lasting hours is not learned as normal.
    level_half_life_s: float = 12 * HOUR
    # Hour-of-day profile (one observation per slot per day) and hour-of-week residual
    # profile (one per slot per week).
    daily_profile_half_life_s: float = 7 * DAY
    weekly_profile_half_life_s: float = 28 * DAY
    # A slot's profile gets weight n / (n + this many periods of observations): the
    # hour-of-week residual has one hour of data a week, and one week cannot tell a weekly
    # habit from a one-off, so it earns trust more slowly.
    daily_trust_periods: float = 1.0
    weekly_trust_periods: float = 2.0
    # Overdispersion is estimated over a few days, so that it reflects normal variability.
    dispersion_half_life_s: float = 3 * DAY
    # The expected count is never below this rate, so a brand that is usually silent does
    # not alert on its first post.
    min_rate_per_hour: float = 1.0
    # Cold start: dispersion alpha = 1 (standard deviation about the mean) is worth this much
    # data, so the first buckets cannot look extreme.
    prior_dispersion: float = 1.0
    prior_weight_s: float = HOUR
    # Alerting (see SeriesAlerter) waits until the model has seen one daily cycle.
    warmup_s: float = DAY
    # Winsorise what is learned at expected ± clip_sigmas standard deviations.
    clip_sigmas: float = 3.0
    # Sums over these spans are tested as well as the single bucket.
    window_s: tuple[int, ...] = (30 * 60, 2 * HOUR)
    # Calibration of the tail against the series' own history (peaks over threshold):
    # surprises beyond calibration_decades (tail 1e-2) form episodes (closer than
    # episode_gap_s: one episode, as one burst is one alert); the episodes are counted and
    # the excess of each one's peak fitted with a generalised Pareto, over this half-life;
    # until then the model's own tails, worth calibration_prior_s of data, stand in.
    calibration_decades: float = 2.0
    episode_gap_s: float = 2 * HOUR
    calibration_half_life_s: float = 7 * DAY
    calibration_prior_s: float = DAY
    # A single excess is capped at this many times the current mean excess, so that one
    # enormous spike cannot make every later spike look ordinary.
    calibration_excess_cap: float = 5.0
    # A gap longer than this is learned as this many zero buckets (older state is kept).
    max_gap_s: float = 3 * DAY
    # score = s / (s + score_midpoint) with s = -log10(tail): score 0.5 at tail 1e-4.
    score_midpoint: float = 4.0

    def __post_init__(self) -> None:
        positive = {
            "level_half_life_s": self.level_half_life_s,
            "daily_profile_half_life_s": self.daily_profile_half_life_s,
            "weekly_profile_half_life_s": self.weekly_profile_half_life_s,
            "dispersion_half_life_s": self.dispersion_half_life_s,
            "min_rate_per_hour": self.min_rate_per_hour,
            "clip_sigmas": self.clip_sigmas,
            "score_midpoint": self.score_midpoint,
            "max_gap_s": self.max_gap_s,
            "calibration_decades": self.calibration_decades,
            "calibration_half_life_s": self.calibration_half_life_s,
            "calibration_excess_cap": self.calibration_excess_cap,
            "episode_gap_s": self.episode_gap_s,
        }
        for name, value in positive.items():
            if not value > 0 or math.isinf(value):
                raise ValueError(f"DetectorConfig.{name} must be positive and finite")
        non_negative = {
            "daily_trust_periods": self.daily_trust_periods,
            "weekly_trust_periods": self.weekly_trust_periods,
            "prior_dispersion": self.prior_dispersion,
            "prior_weight_s": self.prior_weight_s,
            "warmup_s": self.warmup_s,
            "calibration_prior_s": self.calibration_prior_s,
        }
        for name, value in non_negative.items():
            if not value >= 0 or math.isinf(value):
                raise ValueError(f"DetectorConfig.{name} must be non-negative and finite")
        if any(w <= 0 for w in self.window_s):
            raise ValueError("DetectorConfig.window_s must hold positive durations")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window_s"] = list(self.window_s)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if "window_s" in values:
            values["window_s"] = tuple(int(w) for w in values["window_s"])
        return cls(**values)


@dataclass(frozen=True)
class Assessment:
    """How surprising one bucket's count is, given everything learned before it.

    ``tail`` is P(X >= count) under the baseline distribution of the bucket; when the sum
    of a longer window ending at this bucket (30 min, 2 h) is more surprising than the
    bucket alone, it is that sum's tail instead. Either way the smallest tail is multiplied
    by the number of windows tried and capped at 1, so it is a conservative p-value.
    With no history at all it is 1.
    """

    count: int
    expected: float  # the baseline for this bucket
    tail: float  # in (0, 1]
    score: float  # in [0, 1), higher = more anomalous, monotone in tail


@dataclass(frozen=True)
class _Prediction:
    """Everything assess and learn need about the next bucket, computed once."""

    mu: float
    season: float
    daily: float
    weekly: float
    hour: int
    week_hour: int
    alphas: tuple[float, ...]  # dispersion per scale, prior and level uncertainty included
    past_x: tuple[float, ...]  # sums of the learned counts of the previous m - 1 buckets
    past_mu: tuple[float, ...]  # and of what was expected for them


def _decay(step: float, half_life: float) -> float:
    """EWMA weight of a new observation for a half-life counted in the same unit as step."""
    return 1.0 - math.pow(2.0, -step / half_life)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("bucket_start must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


class SeriesModel:
    """Online seasonal baseline and count-distribution tail for one series of counts."""

    def __init__(self, bucket_seconds: int, config: DetectorConfig | None = None) -> None:
        if not MIN_BUCKET_SECONDS <= bucket_seconds <= MAX_BUCKET_SECONDS:
            raise ValueError(
                f"bucket_seconds must be between {MIN_BUCKET_SECONDS} and "
                f"{MAX_BUCKET_SECONDS}, got {bucket_seconds}"
            )
        self.bucket_seconds = int(bucket_seconds)
        self.config = config or DetectorConfig()
        self.last_bucket: datetime | None = None
        self._n = 0
        self._level_num = 0.0
        self._level_den = 0.0
        self._daily_num = [0.0] * 24
        self._daily_den = [0.0] * 24
        self._daily_n = [0] * 24
        self._weekly_num = [0.0] * 168
        self._weekly_den = [0.0] * 168
        self._weekly_n = [0] * 168
        cfg, b = self.config, self.bucket_seconds
        self._scales = tuple(sorted({1, *(max(1, round(w / b)) for w in cfg.window_s)}))
        self._sq = [0.0] * len(self._scales)
        self._mu = [0.0] * len(self._scales)
        self._mu2 = [0.0] * len(self._scales)
        self._recent_x: list[float] = []
        self._recent_mu: list[float] = []
        # Decayed sums for the tail calibration: buckets, episodes begun, episodes ended,
        # their capped peak excess, and per scale c of _GPD_SCALES the sum of
        # log(1 + peak excess / c).
        self._cal = [0.0] * (_CAL_LOGS + len(_GPD_SCALES))
        # The episode under way: its peak excess (0 when none) and quiet buckets since.
        self._episode_peak = 0.0
        self._episode_quiet = 0
        self._tail_fit: tuple[float, float, float] | None = None
        # Derived once; not part of the stored state.
        per_slot_day = HOUR / b  # observations a slot gets per period (day or week)
        self._a_level = _decay(b, cfg.level_half_life_s)
        self._a_daily = _decay(1.0, cfg.daily_profile_half_life_s / DAY * per_slot_day)
        self._a_weekly = _decay(1.0, cfg.weekly_profile_half_life_s / WEEK * per_slot_day)
        self._a_disp = _decay(b, cfg.dispersion_half_life_s)
        self._daily_prior = cfg.daily_trust_periods * per_slot_day
        self._weekly_prior = cfg.weekly_trust_periods * per_slot_day
        self._prior_n = cfg.prior_weight_s / b
        self._level_eff_n = (2.0 - self._a_level) / self._a_level
        self._floor = cfg.min_rate_per_hour * b / HOUR
        self._ring = self._scales[-1] - 1
        self._max_gap = max(1, int(cfg.max_gap_s // b))
        self._warmup = math.ceil(cfg.warmup_s / b)
        self._a_cal = _decay(b, cfg.calibration_half_life_s)
        self._episode_gap = max(1, round(cfg.episode_gap_s / b))
        self._cal_prior_n = cfg.calibration_prior_s / b
        self._cal_q0 = 10.0**-cfg.calibration_decades

    # -- public API ------------------------------------------------------------------------

    @property
    def buckets_seen(self) -> int:
        return self._n

    @property
    def warmed_up(self) -> bool:
        """Whether the model has seen ``warmup_s`` of data (alerting waits for this)."""
        return self._n >= self._warmup

    def assess(self, bucket_start: datetime, count: int) -> Assessment:
        """How surprising ``count`` is for this bucket; learns nothing.

        Buckets missing since ``last_bucket`` are taken as zeros, exactly as ``learn`` would
        fold them in, so ``observe`` is ``assess`` followed by ``learn``. A bucket at or
        before ``last_bucket`` is assessed as if it were the next one.
        """
        when = _utc(bucket_start)
        model = self
        if self._steps_to(when) > 1:
            model = SeriesModel.from_dict(self.to_dict())
            model._fill_gap(when)
        prediction = model._predict(when)
        value = _count(count)
        return model._assess(prediction, value, model._raw_tail(prediction, value))

    def learn(self, bucket_start: datetime, count: int) -> None:
        """Fold a closed bucket in. Idempotent: a bucket at or before ``last_bucket`` is
        ignored, and missing buckets in between are learned as zeros (capped, cheaply)."""
        when = _utc(bucket_start)
        if self.last_bucket is not None and self._steps_to(when) <= 0:
            return
        self._fill_gap(when)
        prediction = self._predict(when)
        value = _count(count)
        self._learn(when, prediction, value, self._raw_tail(prediction, value))

    def observe(self, bucket_start: datetime, count: int) -> Assessment:
        """Assess a closed bucket, then learn it."""
        when = _utc(bucket_start)
        value = _count(count)
        if self.last_bucket is not None and self._steps_to(when) <= 0:
            prediction = self._predict(when)
            return self._assess(prediction, value, self._raw_tail(prediction, value))
        self._fill_gap(when)
        prediction = self._predict(when)
        raw = self._raw_tail(prediction, value)
        self._learn(when, prediction, value, raw)
        return self._assess(prediction, value, raw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state; exact floats, so a round trip gives identical assessments."""
        return {
            "version": SCHEMA_VERSION,
            "bucket_seconds": self.bucket_seconds,
            "config": self.config.to_dict(),
            "n": self._n,
            "last_bucket": self.last_bucket.isoformat() if self.last_bucket else None,
            "level": [self._level_num, self._level_den],
            "daily": [list(self._daily_num), list(self._daily_den), list(self._daily_n)],
            "weekly": [list(self._weekly_num), list(self._weekly_den), list(self._weekly_n)],
            "dispersion": [list(self._sq), list(self._mu), list(self._mu2)],
            "recent": [list(self._recent_x), list(self._recent_mu)],
            "calibration": list(self._cal),
            "episode": [self._episode_peak, self._episode_quiet],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeriesModel:
        if data.get("version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported SeriesModel state version {data.get('version')!r}")
        model = cls(int(data["bucket_seconds"]), DetectorConfig.from_dict(data["config"]))
        model._n = int(data["n"])
        last = data.get("last_bucket")
        model.last_bucket = datetime.fromisoformat(last) if last else None
        model._level_num, model._level_den = (float(v) for v in data["level"])
        num, den, n = data["daily"]
        model._daily_num, model._daily_den = _floats(num, 24), _floats(den, 24)
        model._daily_n = [int(v) for v in n]
        num, den, n = data["weekly"]
        model._weekly_num, model._weekly_den = _floats(num, 168), _floats(den, 168)
        model._weekly_n = [int(v) for v in n]
        scales = len(model._scales)
        sq, mu, mu2 = data["dispersion"]
        model._sq, model._mu, model._mu2 = (_floats(v, scales) for v in (sq, mu, mu2))
        recent_x, recent_mu = data["recent"]
        model._recent_x = [float(v) for v in recent_x]
        model._recent_mu = [float(v) for v in recent_mu]
        model._cal = _floats(data["calibration"], _CAL_LOGS + len(_GPD_SCALES))
        model._episode_peak = float(data["episode"][0])
        model._episode_quiet = int(data["episode"][1])
        if len(model._daily_n) != 24 or len(model._weekly_n) != 168:
            raise ValueError("corrupt SeriesModel state: profile sizes")
        return model

    # -- internals ---------------------------------------------------------------------------

    def _steps_to(self, when: datetime) -> int:
        if self.last_bucket is None:
            return 1
        return round((when - self.last_bucket).total_seconds() / self.bucket_seconds)

    def _fill_gap(self, when: datetime) -> None:
        """Learn the buckets between last_bucket and ``when`` as zeros."""
        if self.last_bucket is None:
            return
        missing = self._steps_to(when) - 1
        if missing <= 0:
            return
        step = timedelta(seconds=self.bucket_seconds)
        skipped = max(0, missing - self._max_gap)
        # Past max_gap_s the replay would only confirm what the zeros already taught; skip
        # the oldest part so a month offline costs no more than a few days.
        self._n += skipped
        start = self.last_bucket + step * (skipped + 1)
        for i in range(missing - skipped):
            moment = start + step * i
            prediction = self._predict(moment)
            self._learn(moment, prediction, 0, self._raw_tail(prediction, 0))

    def _season_parts(self, hour: int, week_hour: int) -> tuple[float, float]:
        daily = 1.0
        n = self._daily_n[hour]
        if n:
            # Normalised by the mean over known slots: the level carries the scale, so
            # level and profile cannot drift against each other.
            ratios = [
                self._daily_num[h] / self._daily_den[h] for h in range(24) if self._daily_n[h]
            ]
            mean = sum(ratios) / len(ratios)
            if mean > 0:
                factor = self._daily_num[hour] / self._daily_den[hour] / mean
                daily = 1.0 + (factor - 1.0) * n / (n + self._daily_prior)
        weekly = 1.0
        n = self._weekly_n[week_hour]
        if n:
            hour_of_day = week_hour % 24
            ratios = [
                self._weekly_num[s] / self._weekly_den[s]
                for s in range(hour_of_day, 168, 24)
                if self._weekly_n[s]
            ]
            mean = sum(ratios) / len(ratios)
            if mean > 0:
                factor = self._weekly_num[week_hour] / self._weekly_den[week_hour] / mean
                weekly = 1.0 + (factor - 1.0) * n / (n + self._weekly_prior)
        return daily, weekly

    def _predict(self, when: datetime) -> _Prediction:
        hour = when.hour
        week_hour = when.weekday() * 24 + hour
        daily, weekly = self._season_parts(hour, week_hour)
        season = min(max(daily * weekly, _SEASON_MIN), _SEASON_MAX)
        level = self._level_num / self._level_den if self._level_den > 0 else 0.0
        mu = max(level * season, self._floor)
        cfg = self.config
        # Uncertainty of the level itself, as a Poisson level estimated from n_eff buckets.
        n_eff = min(float(self._n), self._level_eff_n)
        level_alpha = 1.0 / (n_eff * max(level, self._floor)) if n_eff > 0 else 0.0
        updates = max(0, self._n - 1)
        alphas = []
        past_x = []
        past_mu = []
        for j, m in enumerate(self._scales):
            estimate = cfg.prior_dispersion
            if updates and self._mu2[j] > 0:
                estimate = max(0.0, (self._sq[j] - self._mu[j]) / self._mu2[j])
            blended = (self._prior_n * cfg.prior_dispersion + updates * estimate) / (
                self._prior_n + updates
            )
            alphas.append(blended + level_alpha)
            k = m - 1
            past_x.append(sum(self._recent_x[-k:]) if k else 0.0)
            past_mu.append(sum(self._recent_mu[-k:]) if k else 0.0)
        return _Prediction(
            mu=mu,
            season=season,
            daily=daily,
            weekly=weekly,
            hour=hour,
            week_hour=week_hour,
            alphas=tuple(alphas),
            past_x=tuple(past_x),
            past_mu=tuple(past_mu),
        )

    def _raw_tail(self, p: _Prediction, count: int) -> float:
        """The model's own tail: the most surprising window, Bonferroni-adjusted."""
        if self._n == 0:
            return 1.0
        best = nb_upper_tail(count, p.mu, p.alphas[0])
        for j in range(1, len(self._scales)):
            total = count + p.past_x[j]
            mean = p.mu + p.past_mu[j]
            # A window at or below its expectation is no evidence of a rise.
            if total > mean:
                best = min(best, nb_upper_tail(total, mean, p.alphas[j]))
        return min(1.0, max(best * len(self._scales), _TINY))

    def _tail_model(self) -> tuple[float, float, float]:
        """(rate per bucket of episodes beyond the threshold, GPD scale c, shape ξ) of their
        peak excess in decades; c = inf means exponential with mean ξ.

        For a fixed c the maximum-likelihood ξ of a generalised Pareto is the mean of
        log(1 + x / c), so the profile likelihood over a grid of c needs only those means,
        which one enormous excess cannot dominate the way it would a variance.
        """
        if self._tail_fit is not None:
            return self._tail_fit
        buckets, begun, ended, excess = self._cal[:_CAL_LOGS]
        prior_n = self._cal_prior_n
        prior_q = prior_n * self._cal_q0
        total = buckets + prior_n
        rate = (begun + prior_q) / total if total > 0 else self._cal_q0
        weight = ended + prior_q
        if weight <= 0:
            self._tail_fit = (rate, math.inf, _LOG10_E)
            return self._tail_fit
        mean = max((excess + prior_q * _LOG10_E) / weight, 1e-9)
        best = (math.inf, mean)
        best_ll = -math.log(mean)
        for g, scale in enumerate(_GPD_SCALES):
            shape = (self._cal[_CAL_LOGS + g] + prior_q * _PRIOR_LOGS[g]) / weight
            if shape > 1e-9:
                ll = -math.log(shape * scale) - shape
                if ll > best_ll:
                    best, best_ll = (scale, shape), ll
        self._tail_fit = (rate, *best)
        return self._tail_fit

    def _calibrated(self, raw: float) -> float:
        """Never more confident than the model, nor than how often this series has produced
        such surprises (a generalised Pareto tail of the surprise, fitted beyond 1e-2)."""
        if raw >= 1.0:
            return 1.0
        rate, scale, shape = self._tail_model()
        excess = -math.log10(raw) - self.config.calibration_decades
        if excess <= 0:
            return max(raw, min(1.0, rate))
        if math.isinf(scale):
            fitted = rate * math.exp(-excess / shape)
        else:
            fitted = rate * math.exp(-math.log1p(excess / scale) / shape)
        return max(raw, min(1.0, fitted))

    def _assess(self, p: _Prediction, count: int, raw: float) -> Assessment:
        tail = self._calibrated(raw)
        return Assessment(
            count=count,
            expected=p.mu,
            tail=tail,
            score=tail_score(tail, self.config.score_midpoint),
        )

    def _learn_calibration(self, raw: float) -> None:
        # Runs declustering: the buckets of one burst are not independent surprises, and
        # alerts are budgeted per episode, so the tail is fitted to episode peaks.
        keep = 1.0 - self._a_cal
        cal = self._cal
        for i in range(len(cal)):
            cal[i] *= keep
        cal[0] += 1.0
        excess = -math.log10(raw) - self.config.calibration_decades
        if excess > 0:
            if self._episode_peak <= 0:
                cal[1] += 1.0
            self._episode_peak = max(self._episode_peak, excess)
            self._episode_quiet = 0
        elif self._episode_peak > 0:
            self._episode_quiet += 1
            if self._episode_quiet >= self._episode_gap:
                self._end_episode()
        self._tail_fit = None

    def _end_episode(self) -> None:
        cal, peak = self._cal, self._episode_peak
        # The exponential's mean is capped (robustness); the log-means need no cap.
        mean = cal[3] / cal[2] if cal[2] > 0 else _LOG10_E
        cal[2] += 1.0
        cal[3] += min(peak, self.config.calibration_excess_cap * max(mean, _LOG10_E))
        for g, scale in enumerate(_GPD_SCALES):
            cal[_CAL_LOGS + g] += math.log1p(peak / scale)
        self._episode_peak = 0.0
        self._episode_quiet = 0

    def _learn(self, when: datetime, p: _Prediction, count: int, raw: float) -> None:
        self._learn_calibration(raw)
        if self._n == 0:
            self._level_num, self._level_den = float(count), p.season
            # Nothing was predicted for the first bucket: record it as expected.
            self._push_recent(float(count), max(float(count), self._floor))
        else:
            sd = math.sqrt(p.mu + p.alphas[0] * p.mu * p.mu)
            margin = self.config.clip_sigmas * sd
            x = min(max(float(count), p.mu - margin), p.mu + margin)
            level = self._level_num / self._level_den if self._level_den > 0 else 0.0
            a = max(1.0 / (self._n + 1), self._a_level)
            # Ratio of sums (the Poisson MLE of the level given the season), so an hour with
            # a tiny seasonal factor cannot swing the level.
            self._level_num += a * (x - self._level_num)
            self._level_den += a * (p.season - self._level_den)
            # A stretch the longest window calls anomalous (an incident, or a level shift the
            # level has not caught up with yet) teaches the level, not the seasonal profile:
            # otherwise a shift on a Thursday becomes a "Thursday effect" for weeks.
            j = len(self._scales) - 1
            window_x, window_mu = x + p.past_x[j], p.mu + p.past_mu[j]
            window_sd = math.sqrt(window_mu + p.alphas[j] * window_mu * window_mu)
            settled = abs(window_x - window_mu) <= self.config.clip_sigmas * window_sd
            if level > 0 and settled:
                self._learn_slot(
                    self._daily_num, self._daily_den, self._daily_n, p.hour,
                    x, level * p.weekly, self._a_daily,
                )  # fmt: skip
                self._learn_slot(
                    self._weekly_num, self._weekly_den, self._weekly_n, p.week_hour,
                    x, level * p.daily, self._a_weekly,
                )  # fmt: skip
            a = max(1.0 / self._n, self._a_disp)
            for j in range(len(self._scales)):
                total = x + p.past_x[j]
                mean = p.mu + p.past_mu[j]
                self._sq[j] += a * ((total - mean) ** 2 - self._sq[j])
                self._mu[j] += a * (mean - self._mu[j])
                self._mu2[j] += a * (mean * mean - self._mu2[j])
            self._push_recent(x, p.mu)
        self._n += 1
        self.last_bucket = when

    @staticmethod
    def _learn_slot(
        num: list[float],
        den: list[float],
        seen: list[int],
        slot: int,
        x: float,
        base: float,
        rate: float,
    ) -> None:
        a = max(1.0 / (seen[slot] + 1), rate)
        num[slot] += a * (x - num[slot])
        den[slot] += a * (base - den[slot])
        seen[slot] += 1

    def _push_recent(self, x: float, mu: float) -> None:
        if self._ring <= 0:
            return
        self._recent_x.append(x)
        self._recent_mu.append(mu)
        if len(self._recent_x) > self._ring:
            del self._recent_x[0]
            del self._recent_mu[0]


# -- alerting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertPolicy:
    """When an assessment becomes an alert.

    The tail threshold follows from the false alarms one is willing to get per day if the
    tails were exact: ``false_alarms_per_day x bucket / day``. The default, one a week per
    series, is about what a team watching a brand accepts before it stops reading alerts;
    at 5-minute buckets it is a tail of 5e-4. After an alert the series stays quiet for
    ``cooldown_s``: an incident lasts hours and should page once.
    """

    false_alarms_per_day: float = 1.0 / 7.0
    cooldown_s: float = 6 * HOUR

    def __post_init__(self) -> None:
        if not self.false_alarms_per_day > 0 or self.cooldown_s < 0:
            raise ValueError("AlertPolicy needs false_alarms_per_day > 0 and cooldown_s >= 0")

    def tail_threshold(self, bucket_seconds: int) -> float:
        return min(1.0, self.false_alarms_per_day * bucket_seconds / DAY)


class SeriesAlerter:
    """A SeriesModel plus the alert decision (threshold, warm-up, cooldown)."""

    def __init__(self, model: SeriesModel, policy: AlertPolicy | None = None) -> None:
        self.model = model
        self.policy = policy or AlertPolicy()
        self.last_alert: datetime | None = None
        self._threshold = self.policy.tail_threshold(model.bucket_seconds)

    def observe(self, bucket_start: datetime, count: int) -> tuple[Assessment, bool]:
        """Assess and learn a closed bucket; say whether it should alert."""
        when = _utc(bucket_start)
        warmed_up = self.model.warmed_up
        assessment = self.model.observe(when, count)
        alert = (
            warmed_up
            and assessment.tail <= self._threshold
            and (
                self.last_alert is None
                or (when - self.last_alert).total_seconds() >= self.policy.cooldown_s
            )
        )
        if alert:
            self.last_alert = when
        return assessment, alert

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "policy": asdict(self.policy),
            "last_alert": self.last_alert.isoformat() if self.last_alert else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeriesAlerter:
        alerter = cls(SeriesModel.from_dict(data["model"]), AlertPolicy(**data["policy"]))
        last = data.get("last_alert")
        alerter.last_alert = datetime.fromisoformat(last) if last else None
        return alerter


# -- distributions ----------------------------------------------------------------------------

# Scales (in decades of tail) over which the generalised Pareto fit profiles its likelihood.
_GPD_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def _exponential_log_means(mean: float, points: int = 512) -> tuple[float, ...]:
    """E[log(1 + X / c)] for X exponential with this mean, for each c of _GPD_SCALES:
    what an exactly calibrated model would contribute to the fit (the prior)."""
    quantiles = [-mean * math.log1p(-(k + 0.5) / points) for k in range(points)]
    return tuple(sum(math.log1p(x / c) for x in quantiles) / points for c in _GPD_SCALES)


_PRIOR_LOGS = _exponential_log_means(_LOG10_E)


def tail_score(tail: float, midpoint: float = 4.0) -> float:
    """Map a tail probability to 0..1: s / (s + midpoint) with s = -log10(tail)."""
    surprise = -math.log10(max(tail, _TINY))
    return surprise / (surprise + midpoint) if surprise > 0 else 0.0


def nb_upper_tail(x: float, mean: float, alpha: float) -> float:
    """P(X >= x) for a negative binomial with this mean and variance mean + alpha·mean².

    ``x`` may be fractional (sums of winsorised counts); the regularised incomplete
    beta is its continuous extension. alpha → 0 gives the Poisson tail.
    """
    if x <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if alpha * max(mean, x) < 1e-9:
        return poisson_upper_tail(x, mean)
    size = 1.0 / alpha
    return _betainc(x, size, mean / (mean + size))


def poisson_upper_tail(x: float, mean: float) -> float:
    """P(X >= x) for a Poisson mean: the regularised lower incomplete gamma P(x, mean)."""
    if x <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    log_prefix = -mean + x * math.log(mean) - math.lgamma(x)
    if mean < x + 1.0:
        term = total = 1.0 / x
        a = x
        for _ in range(_MAX_ITERATIONS):
            a += 1.0
            term *= mean / a
            total += term
            if term < total * _EPS:
                break
        return min(1.0, total * math.exp(log_prefix))
    # Continued fraction for the upper part (modified Lentz), then the complement.
    b = mean + 1.0 - x
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - x)
        b += 2.0
        d = an * d + b
        d = d if abs(d) > _TINY else _TINY
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return max(0.0, 1.0 - math.exp(log_prefix) * h)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (Numerical Recipes, continued fraction)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return min(1.0, math.exp(log_front) * _betacf(a, b, x) / a)
    return max(0.0, 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b)


def _betacf(a: float, b: float, x: float) -> float:
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def _count(value: int) -> int:
    count = int(value)
    if count < 0:
        raise ValueError(f"count must be non-negative, got {value}")
    return count


def _floats(values: list[Any], size: int) -> list[float]:
    if len(values) != size:
        raise ValueError("corrupt SeriesModel state: list sizes")
    return [float(v) for v in values]
