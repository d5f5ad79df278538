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
bucket. A series learned only where it is non-zero (``chalicelib.emerging``) has its silent
buckets folded in by ``learn`` in aggregate, to the state learning each zero would give up
to float rounding: only the level and the hour's profile slots, which feed back into each
other, are stepped per bucket (about 1 µs while the expected count is at the floor).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # a Thursday
_MICROSECOND = timedelta(microseconds=1)
_HOUR_US = HOUR * 1_000_000
_DAY_US = DAY * 1_000_000
# A tail the pmf bound proves to be this factor (in log) above the calibration threshold is
# certainly above it as nb_upper_tail computes it: that is accurate to far better than 1e-3
# wherever the bound is tried (see _nb_tail_at_least).
_BOUND_MARGIN = 1e-3


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


class _Prediction(NamedTuple):
    """Everything assess and learn need about the next bucket, computed once (a tuple, as
    one is built per bucket and a frozen dataclass costs several times more to build)."""

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


def _steady_from(rate: float, offset: int) -> int:
    """The smallest count c >= 1 - offset with 1 / (c + offset) <= rate, as the updates'
    max(1 / (c + offset), rate) compares them: from c on the rate is at its floor."""
    if not rate > 0:
        return sys.maxsize
    c = max(1 - offset, int(1.0 / rate) - offset - 2)
    while 1.0 / (c + offset) > rate:
        c += 1
    return c


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
        # Derived from the recent windows, never stored (see _index_recent).
        self._since_count = max(self._scales[-1] - 1, 0)
        self._at_floor = 0
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
        # For learning without assessing: a window's tail above this (log) cannot make the
        # model's tail, times the number of windows, reach the calibration threshold.
        self._log_tail_bound = math.log(self._cal_q0 / len(self._scales)) + _BOUND_MARGIN
        # For runs of zeros (_learn_zeros): the lengths of the windows' pasts, what they sum
        # to when every bucket in them was expected at the floor (summed as _predict sums
        # them, so bit for bit the same), and up to which expected count a zero is learned
        # as a zero (x = 0 whenever mu <= clip², as sd >= sqrt(mu)).
        # From which count each rate max(1 / (count + offset), a) is at its floor a: the
        # level's (n), the daily and weekly slots' (their own counts), the dispersion's (n).
        self._steady = (
            _steady_from(self._a_level, 1),
            _steady_from(self._a_daily, 1),
            _steady_from(self._a_weekly, 1),
            _steady_from(self._a_disp, 0),
        )
        self._pasts = tuple(m - 1 for m in self._scales)
        self._floor_pasts = tuple(float(sum([self._floor] * k)) for k in self._pasts)
        self._zero_mu_max = 0.999 * cfg.clip_sigmas**2
        # Per-slot ratios num / den (0 while a slot is unknown) and how many slots are known,
        # kept in step with the profiles so a prediction need not recompute them; rebuilt by
        # from_dict, never stored.
        self._daily_ratio = [0.0] * 24
        self._daily_known = 0
        self._weekly_ratio = [0.0] * 168
        self._weekly_known = [0] * 24  # per hour of day

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
            model = self._copy()
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
        self._learn(when, prediction, value, self._calibration_tail(prediction, value))

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
        model._index_profiles()
        model._index_recent()
        return model

    # -- internals ---------------------------------------------------------------------------

    def _steps_to(self, when: datetime) -> int:
        if self.last_bucket is None:
            return 1
        return round((when - self.last_bucket).total_seconds() / self.bucket_seconds)

    def _copy(self) -> SeriesModel:
        copy = type(self).__new__(type(self))
        # Every list of the state is flat (floats or ints), so copying each one is deep.
        copy.__dict__ = {
            name: list(value) if isinstance(value, list) else value
            for name, value in self.__dict__.items()
        }
        return copy

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
        total = missing - skipped
        done = 0
        while done < total:
            done += self._learn_zeros(start + step * done, total - done)
            if done < total:
                # A bucket _learn_zeros leaves to the general step, then back to the fast one.
                moment = start + step * done
                prediction = self._predict(moment)
                self._learn(moment, prediction, 0, self._calibration_tail(prediction, 0))
                done += 1

    def _learn_zeros(self, first: datetime, count: int) -> int:
        """Learn up to ``count`` zero buckets from ``first`` on, to the state ``_learn`` of
        each in turn gives; return how many were learned. It stops before a bucket it
        leaves to the general step: the model's second bucket (whose dispersion update has
        rate 1) or an expected count above 0.999 clip_sigmas², where a zero may be
        winsorised up to a positive count (below it, mu - clip·sd <= 0 as sd >= sqrt(mu)).

        The level and the hour's two profile slots are stepped bucket by bucket, in locals:
        the slots' factors feed back into the level's denominator and the level into the
        slots' bases, a non-linear recursion with no closed form (about a microsecond a
        bucket). Everything else is aggregated:

        * dispersion: every scale is an EWMA with the same rates, and its input (the
          window's learned and expected sums) is constant between the buckets where the
          expected count or a window's content changes; so each scale is held as ``target
          + (value - target) x G / G0``, G the running product of (1 - rate), and brought up
          to date only when its input changes or its dispersion is needed;
        * calibration: a zero's tail is 1 unless a window still holds an earlier rise, so
          such buckets only decay the sums and add a bucket, which k of them do at once
          (decay**k and a geometric sum); an open episode counts them and ends at its
          exact bucket;
        * quiet runs: while the expected count is the floor and every window is constant
          (no earlier count leaving it, every bucket in it expected at the floor), a bucket
          is settled, has no tail and changes no window sum, so only the coupled core is
          stepped and the recent windows are extended once; with a level of exactly 0 (no
          count yet) nothing feeds back and the hour's buckets are one closed form;
        * elsewhere a window holding an earlier rise above its expectation gets its tail
          bounded from below (_nb_tail_at_least) and computed only if that may reach the
          calibration threshold; window sums are summed as _predict sums them.

        The result equals the one-by-one replay up to float rounding (the order of a few
        sums, and the closed forms): about 1e-13 relative in tests/test_detector.py. Only a
        decision that rounding itself makes can differ: with no windows (``window_s`` empty)
        the longest window is the bucket, so a winsorised count sits exactly on _learn's
        settled boundary and the last bit of mu decides it, in the replay as here.
        """
        n = self._n
        if n < 2 or count <= 0:
            return 0
        cfg = self.config
        floor = self._floor
        mu_max = self._zero_mu_max
        clip = cfg.clip_sigmas
        a_level, a_daily, a_weekly, a_disp = (
            self._a_level, self._a_daily, self._a_weekly, self._a_disp,
        )  # fmt: skip
        level_steady, daily_steady, weekly_steady, disp_steady = self._steady
        keep_disp = 1.0 - a_disp
        daily_prior, weekly_prior = self._daily_prior, self._weekly_prior
        scales = len(self._scales)
        last = scales - 1
        pasts, floor_pasts = self._pasts, self._floor_pasts
        longest = max(self._ring, 0)
        gap = self._episode_gap
        xs, ms = self._recent_x, self._recent_mu
        since_x, at_floor = self._since_count, self._at_floor
        level_num, level_den = self._level_num, self._level_den
        # Per scale: the dispersion input (window learned sum, expected sum; -1 = none yet)
        # and G when the scale was last brought up to date.
        in_x = [0.0] * scales
        in_mean = [-1.0] * scales
        since = [1.0] * scales
        g = 1.0
        pending = 0  # calibration buckets without a surprise, not yet applied
        unpushed = 0  # quiet buckets not yet appended to the recent windows
        peak, quiet = self._episode_peak, self._episode_quiet
        quiet_until = retry_at = 0  # the quiet run, and when to try one again
        checks: list[tuple[float, ...]] = []  # its windows whose tail must be bounded
        pull = self._pull
        sq, sq_mu, sq_mu2 = self._sq, self._mu, self._mu2
        tail_bound = self._log_tail_bound
        prior, prior_n, eff_n = cfg.prior_dispersion, self._prior_n, self._level_eff_n
        prior_mass = prior_n * prior
        step_us = self.bucket_seconds * 1_000_000
        t = (first - _EPOCH) // _MICROSECOND
        done = 0
        stopped = False
        settled: bool
        while done < count and not stopped:
            hour_index = t // _HOUR_US
            hour = hour_index % 24
            week_hour = ((t // _DAY_US + 3) % 7) * 24 + hour
            seg_end = min(count, done - (((hour_index + 1) * _HOUR_US - t) // -step_us))
            # The hour's two slots are stepped in locals; the other slots' ratios are fixed.
            d_num, d_den, d_n = (
                self._daily_num[hour], self._daily_den[hour], self._daily_n[hour],
            )  # fmt: skip
            w_num, w_den, w_n = (
                self._weekly_num[week_hour],
                self._weekly_den[week_hour],
                self._weekly_n[week_hour],
            )
            # (Sum minus the slot: the rounding this leaves is that of the whole sum, and the
            # slot's ratio is added back before use.)
            d_others = sum(self._daily_ratio) - self._daily_ratio[hour]
            d_known = self._daily_known - (1 if d_n else 0) + 1
            w_others = sum(self._weekly_ratio[hour::24]) - self._weekly_ratio[week_hour]
            w_known = self._weekly_known[hour] - (1 if w_n else 0) + 1
            start = done
            while done < seg_end:
                # -- _predict
                daily = 1.0
                if d_n:
                    ratio = d_num / d_den
                    mean = (d_others + ratio) / d_known
                    if mean > 0:
                        daily = 1.0 + (ratio / mean - 1.0) * d_n / (d_n + daily_prior)
                weekly = 1.0
                if w_n:
                    ratio = w_num / w_den
                    mean = (w_others + ratio) / w_known
                    if mean > 0:
                        weekly = 1.0 + (ratio / mean - 1.0) * w_n / (w_n + weekly_prior)
                season = daily * weekly
                if season < _SEASON_MIN:
                    season = _SEASON_MIN
                elif season > _SEASON_MAX:
                    season = _SEASON_MAX
                level = level_num / level_den if level_den > 0 else 0.0
                mu = level * season
                if mu <= floor:
                    mu = floor
                    if done >= quiet_until and done >= retry_at and at_floor >= longest:
                        # Try to open a quiet run: constant windows, settled.
                        if unpushed:
                            self._extend_recent(unpushed)
                            unpushed = 0
                        run = count  # buckets until a window's learned sum changes
                        fits = True
                        sums = []
                        for j in range(scales):
                            k = pasts[j]
                            past_x = 0.0
                            if k and since_x < k:
                                window = xs[-k:]
                                past_x = sum(window)
                                # The oldest count in the window leaves it first.
                                for index, value in enumerate(window):
                                    if value != 0.0:
                                        run = min(run, k - (len(window) - 1 - index))
                                        break
                            window_mean = floor + floor_pasts[j]
                            # Settled whatever the dispersion (sd >= sqrt(mean)), or no run.
                            if j == last and abs(past_x - window_mean) > clip * math.sqrt(
                                window_mean
                            ):
                                fits = False
                            sums.append(past_x)
                        if fits:
                            checks = []
                            for j in range(scales):
                                past_x, window_mean = sums[j], floor + floor_pasts[j]
                                if past_x != in_x[j] or window_mean != in_mean[j]:
                                    pull(j, in_x[j], in_mean[j], g / since[j])
                                    in_x[j], in_mean[j], since[j] = past_x, window_mean, g
                                if past_x > window_mean:
                                    # A window still holding a rise: its tail is bounded
                                    # bucket by bucket (it moves with the dispersion).
                                    target = (past_x - window_mean) ** 2
                                    checks.append(
                                        (
                                            past_x,
                                            window_mean,
                                            since[j],
                                            target,
                                            sq[j] - target,
                                            window_mean,
                                            sq_mu[j] - window_mean,
                                            window_mean * window_mean,
                                            sq_mu2[j] - window_mean * window_mean,
                                        )
                                    )
                            quiet_until = done + run
                        else:
                            retry_at = done + run
                    is_quiet = done < quiet_until
                else:
                    if mu > mu_max:
                        stopped = True
                        break
                    is_quiet = False
                    quiet_until = 0
                if is_quiet:
                    # -- quiet buckets, from this one to the end of the run or the hour
                    limit = min(seg_end, quiet_until)
                    if peak > 0:
                        limit = min(limit, done + gap - quiet)
                    begun = done
                    if level_num == 0.0 and not checks:
                        # No slot learns (level 0) and the season is the hour's.
                        level_den = self._level_den_after(level_den, season, n, limit - done)
                        g *= self._disp_keep(n, limit - done)
                        n += limit - done
                        done = limit
                    else:
                        while True:
                            if checks and not self._quiet_tails(checks, g, n, level):
                                # The tail may reach the threshold: the general step.
                                quiet_until = done
                                retry_at = done + 1
                                break
                            a = a_level if n >= level_steady else 1.0 / (n + 1)
                            level_num += a * (0.0 - level_num)
                            level_den += a * (season - level_den)
                            if level > 0:
                                a = a_daily if d_n >= daily_steady else 1.0 / (d_n + 1)
                                d_num += a * (0.0 - d_num)
                                d_den += a * (level * weekly - d_den)
                                d_n += 1
                                a = a_weekly if w_n >= weekly_steady else 1.0 / (w_n + 1)
                                w_num += a * (0.0 - w_num)
                                w_den += a * (level * daily - w_den)
                                w_n += 1
                            g *= keep_disp if n >= disp_steady else 1.0 - 1.0 / n
                            n += 1
                            done += 1
                            if done >= limit:
                                break
                            daily = 1.0
                            if d_n:
                                ratio = d_num / d_den
                                mean = (d_others + ratio) / d_known
                                if mean > 0:
                                    daily = 1.0 + (ratio / mean - 1.0) * d_n / (d_n + daily_prior)
                            weekly = 1.0
                            if w_n:
                                ratio = w_num / w_den
                                mean = (w_others + ratio) / w_known
                                if mean > 0:
                                    weekly = 1.0 + (ratio / mean - 1.0) * w_n / (w_n + weekly_prior)
                            season = daily * weekly
                            if season < _SEASON_MIN:
                                season = _SEASON_MIN
                            elif season > _SEASON_MAX:
                                season = _SEASON_MAX
                            level = level_num / level_den if level_den > 0 else 0.0
                            if level * season > floor:
                                break
                    steps = done - begun
                    pending += steps
                    unpushed += steps
                    since_x += steps
                    at_floor += steps
                    if peak > 0:
                        quiet += steps
                        if quiet >= gap:
                            self._decay_calibration(pending)
                            pending = 0
                            self._episode_peak = peak
                            self._end_episode()
                            peak, quiet = 0.0, 0
                    if steps:
                        continue
                # -- any other bucket: windows as _predict sums them
                if unpushed:
                    self._extend_recent(unpushed)
                    unpushed = 0
                best = 1.0
                level_alpha = -1.0  # computed when first needed
                window_x, window_mean = 0.0, mu
                for j in range(scales):
                    k = pasts[j]
                    if k:
                        past_x = sum(xs[-k:]) if since_x < k else 0.0
                        mean = mu + (floor_pasts[j] if at_floor >= k else sum(ms[-k:]))
                        if j == last:
                            window_x, window_mean = past_x, mean
                    else:
                        past_x, mean = 0.0, mu
                    changed = past_x != in_x[j] or mean != in_mean[j]
                    if changed or past_x > mean:
                        # Bring the scale up to date (_pull, inlined: this is hot).
                        keep = g / since[j]
                        target_x, target_mean = in_x[j], in_mean[j]
                        if keep != 1.0 and target_mean >= 0:
                            target = (target_x - target_mean) ** 2
                            sq[j] = target + (sq[j] - target) * keep
                            sq_mu[j] = target_mean + (sq_mu[j] - target_mean) * keep
                            target = target_mean * target_mean
                            sq_mu2[j] = target + (sq_mu2[j] - target) * keep
                        since[j] = g
                        if changed:
                            in_x[j], in_mean[j] = past_x, mean
                        if past_x > mean:
                            # _zero_alpha, inlined for the same reason.
                            if level_alpha < 0:
                                n_eff = min(float(n), eff_n)
                                level_alpha = 1.0 / (n_eff * max(level, floor))
                            estimate = prior
                            if sq_mu2[j] > 0:
                                estimate = max(0.0, (sq[j] - sq_mu[j]) / sq_mu2[j])
                            alpha = (prior_mass + (n - 1) * estimate) / (
                                prior_n + (n - 1)
                            ) + level_alpha
                            if not _nb_tail_at_least(past_x, mean, alpha, tail_bound):
                                best = min(best, nb_upper_tail(past_x, mean, alpha))
                spread = abs(window_x - window_mean)
                # sd >= sqrt(mean) whatever the dispersion, so this is often enough.
                settled = spread <= clip * math.sqrt(window_mean)
                if not settled:
                    pull(last, in_x[last], in_mean[last], g / since[last])
                    since[last] = g
                    alpha = self._zero_alpha(last, n, level)
                    settled = spread <= clip * math.sqrt(
                        window_mean + alpha * window_mean * window_mean
                    )
                # -- _learn_calibration
                if best < 1.0:
                    self._decay_calibration(pending)
                    pending = 0
                    self._episode_peak, self._episode_quiet = peak, quiet
                    self._learn_calibration(min(1.0, max(best * scales, _TINY)))
                    peak, quiet = self._episode_peak, self._episode_quiet
                else:
                    pending += 1
                    if peak > 0:
                        quiet += 1
                        if quiet >= gap:
                            self._decay_calibration(pending)
                            pending = 0
                            self._episode_peak = peak
                            self._end_episode()
                            peak, quiet = 0.0, 0
                if longest:
                    xs.append(0.0)
                    ms.append(mu)
                since_x += 1
                at_floor = at_floor + 1 if mu == floor else 0
                # -- _learn, x = 0
                a = a_level if n >= level_steady else 1.0 / (n + 1)
                level_num += a * (0.0 - level_num)
                level_den += a * (season - level_den)
                if level > 0 and settled:
                    a = a_daily if d_n >= daily_steady else 1.0 / (d_n + 1)
                    d_num += a * (0.0 - d_num)
                    d_den += a * (level * weekly - d_den)
                    d_n += 1
                    a = a_weekly if w_n >= weekly_steady else 1.0 / (w_n + 1)
                    w_num += a * (0.0 - w_num)
                    w_den += a * (level * daily - w_den)
                    w_n += 1
                g *= 1.0 - (a_disp if n >= disp_steady else 1.0 / n)
                n += 1
                done += 1
            # Write the hour's slots back, with their ratios and known counts.
            if d_n and not self._daily_n[hour]:
                self._daily_known += 1
            self._daily_num[hour], self._daily_den[hour], self._daily_n[hour] = d_num, d_den, d_n
            self._daily_ratio[hour] = d_num / d_den if d_n else 0.0
            if w_n and not self._weekly_n[week_hour]:
                self._weekly_known[hour] += 1
            self._weekly_num[week_hour] = w_num
            self._weekly_den[week_hour] = w_den
            self._weekly_n[week_hour] = w_n
            self._weekly_ratio[week_hour] = w_num / w_den if w_n else 0.0
            t += (done - start) * step_us
        if unpushed:
            self._extend_recent(unpushed)
        if longest and len(xs) > longest:
            del xs[:-longest]
            del ms[:-longest]
        for j in range(scales):
            if since[j] != g:
                pull(j, in_x[j], in_mean[j], g / since[j])
        self._decay_calibration(pending)
        self._episode_peak, self._episode_quiet = peak, quiet
        self._level_num, self._level_den = level_num, level_den
        self._since_count, self._at_floor = min(since_x, longest), min(at_floor, len(ms))
        self._n = n
        if done:
            self._tail_fit = None
            self.last_bucket = first + timedelta(seconds=self.bucket_seconds) * (done - 1)
        return done

    def _quiet_tails(self, checks: list[tuple[float, ...]], g: float, n: int, level: float) -> bool:
        """Whether every window of a quiet run holding a rise surely has a tail above the
        calibration threshold at this bucket. Each is (window learned sum, expected sum, G
        when its dispersion was last brought up to date, then target and offset of sq, mu
        and mu² as _pull holds them), so its dispersion is computed without storing it."""
        cfg = self.config
        prior, prior_n = cfg.prior_dispersion, self._prior_n
        updates = n - 1
        n_eff = min(float(n), self._level_eff_n)
        level_alpha = 1.0 / (n_eff * max(level, self._floor)) if n_eff > 0 else 0.0
        for past_x, mean, since, sq_t, sq_d, mu_t, mu_d, mu2_t, mu2_d in checks:
            keep = g / since
            mu2 = mu2_t + mu2_d * keep
            estimate = prior
            if updates and mu2 > 0:
                estimate = max(0.0, (sq_t + sq_d * keep - (mu_t + mu_d * keep)) / mu2)
            alpha = (prior_n * prior + updates * estimate) / (prior_n + updates) + level_alpha
            if not _nb_tail_at_least(past_x, mean, alpha, self._log_tail_bound):
                return False
        return True

    def _level_den_after(self, den: float, season: float, n: int, steps: int) -> float:
        """The level's denominator after ``steps`` buckets at one season, from n buckets:
        at rate 1 / (n + 1) it is a running mean, then an EWMA."""
        first = min(steps, max(0, self._steady[0] - n))
        if first:
            den = (n * den + first * season) / (n + first)
        if steps > first:
            den = season + (den - season) * (1.0 - self._a_level) ** (steps - first)
        return den

    def _disp_keep(self, n: int, steps: int) -> float:
        """The product of (1 - dispersion rate) over ``steps`` buckets from n (>= 2): the
        rates 1 / n give (n - 1) / (n - 1 + k), then (1 - a)**k."""
        first = min(steps, max(0, self._steady[3] - n))
        keep = (n - 1) / (n - 1 + first) if first else 1.0
        if steps > first:
            keep *= (1.0 - self._a_disp) ** (steps - first)
        return keep

    def _extend_recent(self, buckets: int) -> None:
        """Append ``buckets`` zeros expected at the floor to the recent windows (only the
        last ring of them can matter)."""
        if self._ring > 0:
            keep = min(buckets, self._ring)
            self._recent_x.extend([0.0] * keep)
            self._recent_mu.extend([self._floor] * keep)

    def _pull(self, j: int, x: float, mean: float, keep: float) -> None:
        """Bring scale j's dispersion up to date: EWMA steps whose (1 - rate) multiply to
        ``keep``, all with the input of a window summing to ``x`` against ``mean``."""
        if mean < 0 or keep == 1.0:
            return
        target = (x - mean) ** 2
        self._sq[j] = target + (self._sq[j] - target) * keep
        self._mu[j] = mean + (self._mu[j] - mean) * keep
        target = mean * mean
        self._mu2[j] = target + (self._mu2[j] - target) * keep

    def _zero_alpha(self, j: int, n: int, level: float) -> float:
        """Scale j's dispersion as _predict computes it, for a model at n buckets."""
        cfg = self.config
        updates = n - 1
        estimate = cfg.prior_dispersion
        if updates and self._mu2[j] > 0:
            estimate = max(0.0, (self._sq[j] - self._mu[j]) / self._mu2[j])
        blended = (self._prior_n * cfg.prior_dispersion + updates * estimate) / (
            self._prior_n + updates
        )
        n_eff = min(float(n), self._level_eff_n)
        level_alpha = 1.0 / (n_eff * max(level, self._floor)) if n_eff > 0 else 0.0
        return blended + level_alpha

    def _decay_calibration(self, buckets: int) -> None:
        """``buckets`` calibration steps without a surprise: decay**k, plus the geometric
        sum of the buckets added."""
        if buckets <= 0:
            return
        keep = 1.0 - self._a_cal
        factor = keep**buckets
        cal = self._cal
        cal[:] = [value * factor for value in cal]
        cal[0] += (1.0 - factor) / (1.0 - keep) if keep < 1.0 else float(buckets)

    def _season_parts(self, hour: int, week_hour: int) -> tuple[float, float]:
        # Unknown slots hold a ratio of 0.0, which adds nothing to a float sum: the sums are
        # bit for bit those over the known slots alone, in slot order.
        daily = 1.0
        n = self._daily_n[hour]
        if n:
            # Normalised by the mean over known slots: the level carries the scale, so
            # level and profile cannot drift against each other.
            mean = sum(self._daily_ratio) / self._daily_known
            if mean > 0:
                factor = self._daily_ratio[hour] / mean
                daily = 1.0 + (factor - 1.0) * n / (n + self._daily_prior)
        weekly = 1.0
        n = self._weekly_n[week_hour]
        if n:
            hour_of_day = week_hour % 24
            mean = sum(self._weekly_ratio[hour_of_day::24]) / self._weekly_known[hour_of_day]
            if mean > 0:
                factor = self._weekly_ratio[week_hour] / mean
                weekly = 1.0 + (factor - 1.0) * n / (n + self._weekly_prior)
        return daily, weekly

    def _index_profiles(self) -> None:
        """Rebuild the per-slot ratios and known counts from the profiles."""
        self._daily_ratio = [
            num / den if n else 0.0
            for num, den, n in zip(self._daily_num, self._daily_den, self._daily_n, strict=True)
        ]
        self._daily_known = sum(1 for n in self._daily_n if n)
        self._weekly_ratio = [
            num / den if n else 0.0
            for num, den, n in zip(self._weekly_num, self._weekly_den, self._weekly_n, strict=True)
        ]
        self._weekly_known = [
            sum(1 for s in range(h, 168, 24) if self._weekly_n[s]) for h in range(24)
        ]

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
        for j, k in enumerate(self._pasts):
            estimate = cfg.prior_dispersion
            if updates and self._mu2[j] > 0:
                estimate = max(0.0, (self._sq[j] - self._mu[j]) / self._mu2[j])
            blended = (self._prior_n * cfg.prior_dispersion + updates * estimate) / (
                self._prior_n + updates
            )
            alphas.append(blended + level_alpha)
            # Windows of zeros, or of buckets all expected at the floor, sum to what the
            # counters say, bit for bit.
            if not k or self._since_count >= k:
                past_x.append(0.0)
            else:
                past_x.append(sum(self._recent_x[-k:]))
            if not k:
                past_mu.append(0.0)
            elif self._at_floor >= k:
                past_mu.append(self._floor_pasts[j])
            else:
                past_mu.append(sum(self._recent_mu[-k:]))
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

    def _calibration_tail(self, p: _Prediction, count: int) -> float:
        """``_raw_tail`` as far as learning needs it, which is only whether it is below the
        calibration threshold (it is then an episode's peak) and if so its value. Windows
        whose tail a cheap bound shows to be well above the threshold are not computed, so
        what is returned is either the exact raw tail or a value >= the threshold, which the
        calibration treats as the exact one (see _learn_calibration)."""
        if self._n == 0:
            return 1.0
        bound = self._log_tail_bound
        best = 1.0
        for j in range(len(self._scales)):
            total = count + p.past_x[j]
            mean = p.mu + p.past_mu[j]
            # A window at or below its expectation is no evidence of a rise (and the single
            # bucket's tail is at least as large then).
            if (j == 0 or total > mean) and not _nb_tail_at_least(total, mean, p.alphas[j], bound):
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
        cal[:] = [value * keep for value in cal]
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
                self._learn_daily(p.hour, x, level * p.weekly)
                self._learn_weekly(p.week_hour, x, level * p.daily)
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

    def _learn_daily(self, slot: int, x: float, base: float) -> None:
        seen = self._daily_n[slot]
        a = max(1.0 / (seen + 1), self._a_daily)
        self._daily_num[slot] += a * (x - self._daily_num[slot])
        self._daily_den[slot] += a * (base - self._daily_den[slot])
        self._daily_n[slot] = seen + 1
        self._daily_ratio[slot] = self._daily_num[slot] / self._daily_den[slot]
        if not seen:
            self._daily_known += 1

    def _learn_weekly(self, slot: int, x: float, base: float) -> None:
        seen = self._weekly_n[slot]
        a = max(1.0 / (seen + 1), self._a_weekly)
        self._weekly_num[slot] += a * (x - self._weekly_num[slot])
        self._weekly_den[slot] += a * (base - self._weekly_den[slot])
        self._weekly_n[slot] = seen + 1
        self._weekly_ratio[slot] = self._weekly_num[slot] / self._weekly_den[slot]
        if not seen:
            self._weekly_known[slot % 24] += 1

    def _push_recent(self, x: float, mu: float) -> None:
        if self._ring <= 0:
            return
        self._recent_x.append(x)
        self._recent_mu.append(mu)
        if len(self._recent_x) > self._ring:
            del self._recent_x[0]
            del self._recent_mu[0]
        self._since_count = min(self._since_count + 1, self._ring) if x == 0.0 else 0
        self._at_floor = min(self._at_floor + 1, len(self._recent_mu)) if mu == self._floor else 0

    def _index_recent(self) -> None:
        """Rebuild the counters derived from the recent windows: the age of the newest
        non-zero learned count (the ring length if none), and how many trailing buckets were
        expected at exactly the floor. A function of the stored windows alone, so a model
        and its from_dict copy take the same paths."""
        ring = max(self._ring, 0)
        self._since_count = ring
        for age, value in enumerate(reversed(self._recent_x)):
            if value != 0.0:
                self._since_count = age
                break
        self._at_floor = 0
        for value in reversed(self._recent_mu):
            if value != self._floor:
                break
            self._at_floor += 1


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


def _nb_tail_at_least(x: float, mean: float, alpha: float, log_bound: float) -> bool:
    """Whether ``nb_upper_tail(x, mean, alpha)`` is surely >= exp(log_bound), from the
    probability of ceil(x) alone: the tail falls with x (the incomplete beta and gamma
    fall with their first argument), so it is at least P(X = ceil(x)). False when this
    cannot tell. Huge sizes are left undecided: there the lgamma terms of the exact tail
    lose more precision than the margin in log_bound allows for."""
    if x <= 0:
        return True
    if mean <= 0:
        return False
    n = math.ceil(x)
    if n > 30:
        return False
    if alpha * max(mean, x) < 1e-9:
        log_p = n * math.log(mean) - mean
    else:
        size = 1.0 / alpha
        if size > 1e7:
            return False
        p = mean / (mean + size)
        # lgamma(n + size) - lgamma(size) as a sum of logs: no cancellation.
        log_p = n * math.log(p) + size * math.log1p(-p) + math.log(size)
        for t in range(1, n):
            log_p += math.log(size + t)
    if n > 1:
        log_p -= math.lgamma(n + 1)
    return log_p >= log_bound


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
