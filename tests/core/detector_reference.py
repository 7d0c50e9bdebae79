"""The detector as it was written in numpy, one round of readings at a time: the reference
the compiled kernel (``scheduler.detector_kernel``) is checked against.

Copied from ``scheduler.detector_step``, ``scheduler.seasonal`` and ``scheduler.detection``
as they were before the compiled kernel replaced them; the model is documented there.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from scheduler.anomaly_kind import DIP, DRIFT, DROPOUT, LEVEL_SHIFT, NORMAL, SEASONAL, SPIKE, STUCK
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import (
    CNEG,
    COUNT,
    CPOS,
    DROPMARK,
    EPKIND,
    EPSTART,
    FARTAIL,
    FAST,
    FLAT,
    FLATMAX,
    GAP,
    GAUSS_FAR_Z,
    GAUSS_TAIL_Z,
    INEP,
    LASTTS,
    LASTV,
    LEVEL,
    NARROW,
    NORMRUN,
    RES,
    RNEG,
    RPOS,
    SCALE,
    SEASON0,
    SLOW,
    SPREAD,
    TAIL,
    TREND,
    K,
)

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
BOOL = npt.NDArray[np.bool_]
IDX = npt.NDArray[np.intp]
_DAY_S = 86_400.0
_HOUR_S = 3_600.0
_EPOCH_WEEKDAY = 3
_MAX_RATE = 0.5
HOURS = 24
DAYS = 7


class Position:
    """Where readings at ``ts`` fall in the profile: two hour bins with weights, one day."""

    def __init__(self, ts: F64) -> None:
        hours = np.mod(ts, _DAY_S) / _HOUR_S - 0.5
        below = np.floor(hours)
        self.weight_next = hours - below
        self.hour_a: IDX = np.mod(below, HOURS).astype(np.intp)
        self.hour_b: IDX = np.mod(self.hour_a + 1, HOURS)
        self.day: IDX = np.mod(np.floor(ts / _DAY_S) + _EPOCH_WEEKDAY, DAYS).astype(np.intp)
        self.rows: IDX = np.arange(ts.size)

    def daily(self, st: F64, base: int) -> F64:
        a = st[self.rows, base + self.hour_a]
        b = st[self.rows, base + self.hour_b]
        return a + self.weight_next * (b - a)

    def week(self, st: F64, base: int) -> F64:
        return st[self.rows, base + HOURS + self.day]

    def value(self, st: F64, base: int) -> F64:
        return self.daily(st, base) + self.week(st, base)

    def learn(
        self, st: F64, base: int, offset: F64, dt_s: F64, day_tau_s: float, week_tau_s: float
    ) -> None:
        """Move the profile towards ``offset`` (value minus slow mean), in place.

        ``dt_s`` is the time each reading stands for; 0 leaves a row's profile alone.
        """
        daily = self.daily(st, base)
        weekly = self.week(st, base)
        rate_h = np.minimum(_MAX_RATE, HOURS * dt_s / day_tau_s)
        rate_d = np.minimum(_MAX_RATE, DAYS * dt_s / week_tau_s)
        err_h = rate_h * (offset - weekly - daily)
        st[self.rows, base + self.hour_a] += (1.0 - self.weight_next) * err_h
        st[self.rows, base + self.hour_b] += self.weight_next * err_h
        st[self.rows, base + HOURS + self.day] = weekly + rate_d * (offset - daily - weekly)


#: Quantiles the tail trackers settle at (``GAUSS_TAIL_Z`` and ``GAUSS_FAR_Z`` are a
#: Gaussian's), and the gap tracker's.
_TAIL_P = 0.99
_FAR_P = 0.999
_GAP_P = 0.99
#: abs(residual) averages this fraction of a Gaussian's standard deviation.
_MAD_TO_STD = 1.2533


def step(st: F64, t: F64, x: F64, c: DetectorConfig) -> tuple[F64, I8, BOOL, F64, F64]:
    """Advance distinct cells by one reading each, in place; score, kind, alert, expected, band."""
    count = st[:, COUNT]
    seen = count > 0
    warm = count >= c.warmup_readings
    trend = c.trend_damping * st[:, TREND]
    level = st[:, LEVEL] + trend
    last_ts = st[:, LASTTS]
    dt = np.where(seen, t - last_ts, 0.0)
    dt_pos = np.maximum(dt, 0.0)
    # A reading older than the newest one seen arrived late (a gateway's backlog, a
    # redelivery, two screenings of one device taken out of order): it is judged and
    # its value learned, but it says nothing of the device's cadence or of a repeat run.
    late = dt < 0

    season = Position(t)
    season_now = season.value(st, SEASON0)
    expected = np.where(seen, level + season_now, x)
    floor = np.maximum(
        c.rel_min_std * st[:, SPREAD],
        c.resolution_min_std * np.where(np.isfinite(st[:, RES]), st[:, RES], 0.0),
    )
    std = np.maximum(_MAD_TO_STD * st[:, SCALE], floor)
    std = np.where(std > 0, std, np.inf)
    resid = np.where(seen, x - expected, 0.0)
    z_raw = np.where(np.isfinite(std), resid / std, 0.0)
    # A device with heavier tails than a Gaussian is judged against its own tail.
    tail_ratio = np.maximum(1.0, st[:, TAIL] / GAUSS_TAIL_Z)
    z = z_raw / tail_ratio
    # One reading must clear both the Gaussian-scaled band and the reach of the device's
    # own rarest bursts, so a calm device is judged tighter than one that bursts daily
    # (the 99th percentile alone says too little about how far a heavy tail reaches).
    spike_z = np.maximum(c.spike_z * tail_ratio, c.far_tail_factor * st[:, FARTAIL])
    band = spike_z * std

    step_size = np.abs(x - st[:, LASTV])
    is_flat = seen & ~late & (step_size <= c.flat_tolerance)
    prior_flat_run = st[:, FLAT].copy()
    flat_run = np.where(is_flat, prior_flat_run + 1.0, np.where(late, prior_flat_run, 0.0))
    varies = st[:, SCALE] > 0

    zc = np.clip(z, -c.cusum_clip_z, c.cusum_clip_z)
    # While flat, a stuck value must not also build shift evidence against a frozen level.
    zc = np.where(warm & ~is_flat, zc, 0.0)
    cpos = np.maximum(0.0, st[:, CPOS] + zc - c.cusum_k)
    cneg = np.maximum(0.0, st[:, CNEG] - zc - c.cusum_k)
    rpos = np.where(cpos >= c.evidence_floor, st[:, RPOS] + 1.0, 0.0)
    rneg = np.where(cneg >= c.evidence_floor, st[:, RNEG] + 1.0, 0.0)

    gap_log = st[:, GAP]
    # NaN until the device's first forward gap: a late second reading must not leave
    # the tracker at log(1 s), which would take every later interval for a silence.
    gap_known = (count >= c.dropout_warmup_readings) & np.isfinite(gap_log)
    silence_limit = np.maximum(c.dropout_factor * np.exp(gap_log), c.dropout_min_s)
    unreported = ~(st[:, DROPMARK] == last_ts)
    r_drop = np.where(gap_known & unreported & (dt > 0), dt / silence_limit, 0.0)

    stuck_limit = np.maximum(c.stuck_readings, c.stuck_factor * st[:, FLATMAX])
    r_spike = np.where(warm, np.abs(z_raw) / spike_z, 0.0)
    r_cusum = np.where(warm, np.maximum(cpos, cneg) / c.cusum_h, 0.0)
    r_stuck = np.where(warm & varies, flat_run / stuck_limit, 0.0)
    ratios = np.stack([r_spike, r_cusum, r_stuck])
    value_score = ratios.max(axis=0)
    # A silence is reported once by its own mark, not through the value episode: a gap
    # must not open an episode that would swallow a spike arriving just after it.
    value_anomalous = value_score >= 1.0
    dropout = (r_drop >= 1.0) & ~value_anomalous
    score = np.maximum(value_score, r_drop)

    up = cpos >= cneg
    run = np.where(up, rpos, rneg)
    mean_excess = np.where(up, cpos, cneg) / np.maximum(run, 1.0)
    growing = np.abs(zc) - c.cusum_k > mean_excess
    cusum_kind = np.where((run > c.shift_max_run) & growing, DRIFT, LEVEL_SHIFT)
    by_ratio = np.array([SPIKE, LEVEL_SHIFT, STUCK])[ratios.argmax(axis=0)]
    ordinary_value = np.abs(x - st[:, SLOW] - season.week(st, SEASON0)) <= (
        c.seasonal_spread * st[:, SPREAD]
    )
    spike_kind = np.where(ordinary_value, SEASONAL, np.where(z < 0, DIP, SPIKE))
    kind = np.where(by_ratio == SPIKE, spike_kind, by_ratio)
    kind = np.where(by_ratio == LEVEL_SHIFT, cusum_kind, kind)
    kind = np.where(value_anomalous, kind, np.where(dropout, DROPOUT, NORMAL)).astype(np.int8)

    # Baseline learning: repeats never train it, outliers are clipped once warm.
    learn = ~is_flat
    bound = c.clip_z * std * tail_ratio
    innov = np.where(warm, np.clip(resid, -bound, bound), resid)
    innov = np.where(np.isfinite(innov), innov, 0.0)
    a_level = np.maximum(c.level_alpha, 1.0 / (count + 1.0))
    a_scale = np.maximum(c.scale_alpha, 1.0 / np.maximum(count, 1.0))
    deseason = x - season_now
    new_level = np.where(seen, level + a_level * innov, deseason)
    new_scale = np.where(seen, st[:, SCALE] + a_scale * (np.abs(innov) - st[:, SCALE]), 0.0)
    new_fast = np.where(seen, st[:, FAST] + c.fast_alpha * (deseason - st[:, FAST]), deseason)
    st[:, LEVEL] = np.where(learn, new_level, level)
    new_trend = np.where(seen, trend + a_level * c.trend_beta * innov, 0.0)
    st[:, TREND] = np.where(learn, new_trend, trend)
    st[:, SCALE] = np.where(learn, new_scale, st[:, SCALE])
    st[:, FAST] = new_fast
    # The tail tracker moves up by p and down by 1 - p, so it settles where |z| is
    # exceeded 1 - p of the time; its step is relative, so it works at any scale.
    # It waits until the scale has settled: the first residuals are judged on few readings.
    tail_warm = count >= c.tail_warmup_readings
    beyond = np.abs(z_raw) > st[:, TAIL]
    tail_step = np.where(beyond, _TAIL_P, _TAIL_P - 1.0) * c.tail_rate
    st[:, TAIL] = np.where(
        tail_warm & learn, np.maximum(st[:, TAIL] * np.exp(tail_step), GAUSS_TAIL_Z), st[:, TAIL]
    )
    far_step = np.where(np.abs(z_raw) > st[:, FARTAIL], _FAR_P, _FAR_P - 1.0) * c.far_tail_rate
    st[:, FARTAIL] = np.where(
        tail_warm & learn,
        np.maximum(st[:, FARTAIL] * np.exp(far_step), GAUSS_FAR_Z),
        st[:, FARTAIL],
    )

    # Slow statistics and the season learn from ordinary readings only.
    typical = learn & ~(warm & (np.abs(z) > c.clip_z))
    a_slow = np.where(seen, np.maximum(1.0 / (count + 1.0), dt_pos / c.slow_tau_s), 1.0)
    a_slow = np.minimum(a_slow, 1.0)
    slow = st[:, SLOW]
    new_slow = slow + a_slow * (deseason - slow)
    spread_obs = np.abs(x - season.week(st, SEASON0) - slow)
    new_spread = st[:, SPREAD] + a_slow * (spread_obs - st[:, SPREAD])
    if_typical = typical | ~seen
    st[:, SLOW] = np.where(if_typical, new_slow, slow)
    st[:, SPREAD] = np.where(if_typical & seen, new_spread, st[:, SPREAD])
    season.learn(
        st,
        SEASON0,
        x - slow,
        np.where(typical & seen, dt_pos, 0.0),
        c.season_tau_s,
        c.week_tau_s,
    )
    st[:, RES] = np.where(seen & (step_size > 0), np.minimum(st[:, RES], step_size), st[:, RES])

    # After a shift the level jumps to where the values now are, so the episode can end;
    # a drift keeps going, so its evidence is only capped and the episode lasts while it does.
    first_crossing = np.maximum(st[:, CPOS], st[:, CNEG]) < c.cusum_h
    in_drift = (st[:, INEP] > 0) & (st[:, EPKIND] == DRIFT)
    re_anchor = (kind == LEVEL_SHIFT) & first_crossing & ~in_drift
    moved = new_fast - st[:, LEVEL]
    st[:, LEVEL] = np.where(re_anchor, new_fast, st[:, LEVEL])
    st[:, TREND] = np.where(re_anchor, 0.0, st[:, TREND])
    st[:, SLOW] = np.where(re_anchor, st[:, SLOW] + moved, st[:, SLOW])
    st[:, CPOS] = np.where(re_anchor, 0.0, np.minimum(cpos, c.cusum_h))
    st[:, CNEG] = np.where(re_anchor, 0.0, np.minimum(cneg, c.cusum_h))
    st[:, RPOS] = np.where(re_anchor, 0.0, rpos)
    st[:, RNEG] = np.where(re_anchor, 0.0, rneg)

    # Gaps are tracked in log seconds so one tracker fits a 1 s sensor and a daily meter.
    forward = seen & (dt > 0)
    log_dt = np.log(np.where(forward, dt, 1.0))
    gap_step = np.where(log_dt > gap_log, _GAP_P, _GAP_P - 1.0) * c.gap_rate
    first_gap = forward & ((count == 1.0) | ~np.isfinite(gap_log))
    st[:, GAP] = np.where(first_gap, log_dt, np.where(forward, gap_log + gap_step, gap_log))
    st[:, LASTTS] = np.fmax(last_ts, t)
    st[:, LASTV] = np.where(late, st[:, LASTV], x)
    st[:, FLAT] = flat_run
    st[:, COUNT] = count + 1.0

    in_episode = st[:, INEP] > 0
    opens = value_anomalous & ~in_episode
    alert = opens | dropout
    # Every run of repeats that ended teaches the usual run length: a sensor that resumes
    # varying was not stuck for good, and counts sit at 0 for as long as nights last.
    run_ended = ~is_flat & ~late
    st[:, FLATMAX] = np.where(run_ended, np.maximum(st[:, FLATMAX], prior_flat_run), st[:, FLATMAX])
    quiet = value_score < c.clear_score
    normal_run = np.where(quiet, st[:, NORMRUN] + in_episode, np.minimum(st[:, NORMRUN], 0.0))
    # A shift is watched a while after it re-anchors: evidence building again the same way
    # is a drift the shift was the start of, not a new episode.
    normal_run = np.where(re_anchor, -float(c.shift_watch_readings), normal_run)
    st[:, EPSTART] = np.where(opens, t, st[:, EPSTART])
    st[:, EPKIND] = np.where(opens, kind, st[:, EPKIND])
    ended = in_episode & (normal_run >= c.episode_end_readings)
    st[:, INEP] = np.where(value_anomalous | (in_episode & ~ended), 1.0, 0.0)
    st[:, NORMRUN] = np.where(ended, 0.0, normal_run)
    return score, kind, alert, expected, band


def _rounds(row: IDX, ts: F64) -> list[IDX]:
    """Reading positions grouped so round r holds the r-th reading (in time) of each row."""
    order = np.lexsort((ts, row))
    sorted_rows = row[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, sorted_rows.size]))
    rank = np.arange(sorted_rows.size) - group_start
    by_rank = order[np.argsort(rank, kind="stable")]
    bounds = np.searchsorted(np.sort(rank), np.arange(int(rank.max()) + 2))
    return [by_rank[bounds[r] : bounds[r + 1]] for r in range(bounds.size - 1)]


def reference_screen(
    states: F64, device_index: IDX, ts: F64, value: F64, config: DetectorConfig
) -> tuple[F64, F64, I8, BOOL, F64, F64]:
    """states, score, kind, alert, expected, band of ``value`` screened the numpy way."""
    values = value.reshape(-1, 1) if value.ndim == 1 else value
    metrics = values.shape[1]
    cells = states.reshape(-1, K).copy()
    score, expected, band = (np.zeros(values.shape) for _ in range(3))
    expected[:] = np.nan
    band[:] = np.nan
    kind = np.zeros(values.shape, dtype=np.int8)
    alert = np.zeros(values.shape, dtype=np.bool_)
    flat_values = values.reshape(-1)
    present = np.flatnonzero(~np.isnan(flat_values))
    if present.size:
        cell_row = (device_index.astype(np.intp)[:, None] * metrics + np.arange(metrics)).reshape(
            -1
        )[present]
        cell_ts = np.repeat(ts, metrics)[present]
        cell_value = flat_values[present]
        flat_outs = [a.reshape(-1) for a in (score, kind, alert, expected, band)]
        for take in _rounds(cell_row, cell_ts):
            rows = cell_row[take]
            cell_state = cells[rows]
            verdicts = step(cell_state, cell_ts[take], cell_value[take], config)
            cell_state[:, NARROW] = cell_state[:, NARROW].astype(np.float32)
            cells[rows] = cell_state
            where = present[take]
            for out, got in zip(flat_outs, verdicts, strict=True):
                out[where] = np.asarray(got)
    shape = value.shape
    return (
        cells.reshape(states.shape),
        score.reshape(shape),
        kind.reshape(shape),
        alert.reshape(shape),
        expected.reshape(shape),
        band.reshape(shape),
    )
