"""Detector step: one reading's update of its (device, metric) state, and its verdict.

Per reading the detector predicts ``expected = level + season`` and judges the residual
in units of a robust scale:

- season: an hour-of-day profile (24 bins, linearly interpolated) plus day-of-week
  offsets, learned online against a slow mean (``scheduler.seasonal``), so a daily or
  weekly cycle stops looking anomalous after it has been seen;
- level: an EWMA of the deseasonalised value with a damped slope (Holt), whose updates
  are clipped, so a spike barely moves it and a smooth cycle is not lagged before its
  profile is learned; scale: a slow EWMA of the clipped absolute residual (heavy tails
  do not inflate it as a variance would);
- scale floor: relative to the signal's own long-run spread and to its resolution (the
  smallest step it has shown, 1 for counts), never an absolute epsilon, so a noise-free
  cycle or a count hovering at 0 does not divide by almost nothing;
- heavy tails: the residuals' own 99th percentile is tracked, and a device whose tail
  is wider than a Gaussian's has its residuals shrunk by that ratio before judging;
- spikes/dips: the one-step normalised residual past the device's own spike band: the
  larger of ``spike_z`` (times the tail ratio) and ``far_tail_factor`` x the tracked 99.9th
  percentile of its residuals, so a calm, Gaussian device is judged at about 5 robust
  standard deviations while one whose bursts reach 6-10 every day (tweet counts, road
  traffic) is judged past its own reach; a spike whose value would be ordinary at another
  time of day is a ``seasonal`` deviation;
- level shifts and drift: a two-sided CUSUM of the clipped residuals; an alarm whose
  evidence arrived in a few readings, or is fading, is a shift, one still growing is
  drift. A shift re-anchors the level (and the slow mean) where the values now are, so
  one regime change makes one alert and then is the new normal; its episode is watched
  ``shift_watch_readings`` longer, so a drift that began as a step stays one episode;
- stuck sensors: a run of repeats longer than ``stuck_readings`` and than
  ``stuck_factor`` x the longest run the device has shown (counts sitting at 0 through
  a night are not stuck once a night has been seen); repeats never train the baseline;
- dropouts: silence past ``dropout_factor`` x the device's usual long interval (a
  tracked 99th percentile of its gaps, so irregular sampling is learned), either by the
  sweep (``scheduler.dropout_sweep``) or, if the sweep has not reported it, on the
  reading ending it.

A reading's ``score`` is the largest of those ratios to their thresholds, so ``score >= 1``
is anomalous. One alert per episode of abnormal values: ``alert`` is True only on an
episode's first reading, and an episode ends after ``episode_end_readings`` quiet
readings in a row. A silence is reported once on its own and opens no episode, so a
spike just after a gap is still alerted.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from scheduler import seasonal
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
)

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
BOOL = npt.NDArray[np.bool_]

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

    season = seasonal.Position(t)
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
