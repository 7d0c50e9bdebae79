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

The step is scalar code compiled by numba (``scheduler.jit``): ``scheduler.detector_kernel``
runs it over a batch, one reading after another.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from scheduler import jit, seasonal
from scheduler.anomaly_kind import DIP, DRIFT, DROPOUT, LEVEL_SHIFT, NORMAL, SEASONAL, SPIKE, STUCK
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
from scheduler.jit import maximum, minimum

F64 = npt.NDArray[np.float64]

#: Quantiles the tail trackers settle at (``GAUSS_TAIL_Z`` and ``GAUSS_FAR_Z`` are a
#: Gaussian's), and the gap tracker's.
_TAIL_P = 0.99
_FAR_P = 0.999
_GAP_P = 0.99
#: abs(residual) averages this fraction of a Gaussian's standard deviation.
_MAD_TO_STD = 1.2533


@jit.compiled
def _clip(v: float, bound: float) -> float:
    return minimum(maximum(v, -bound), bound)


#: The tail trackers' factors, up and down (``tail_factors``).
TailFactors = tuple[float, float, float, float]


@jit.compiled
def tail_factors(c: Any) -> TailFactors:
    """What the tail trackers multiply by when ``|z|`` is beyond them and when it is not.

    The tracker moves up by p and down by 1 - p (in log units), so it settles where
    ``|z|`` is exceeded 1 - p of the time; its step is relative, so it works at any scale.
    """
    return (
        math.exp(_TAIL_P * c.tail_rate),
        math.exp((_TAIL_P - 1.0) * c.tail_rate),
        math.exp(_FAR_P * c.far_tail_rate),
        math.exp((_FAR_P - 1.0) * c.far_tail_rate),
    )


@jit.compiled
def step(
    st: F64, t: float, x: float, at: seasonal.Position, c: Any, tails: TailFactors
) -> tuple[float, int, bool, float, float]:
    """Advance one state vector by one reading at ``t`` (``at`` in the seasonal profile), in
    place; score, kind, alert, expected, band."""
    count = st[COUNT]
    seen = count > 0
    warm = count >= c.warmup_readings
    trend = c.trend_damping * st[TREND]
    level = st[LEVEL] + trend
    last_ts = st[LASTTS]
    dt = t - last_ts if seen else 0.0
    dt_pos = maximum(dt, 0.0)
    # A reading older than the newest one seen arrived late (a gateway's backlog, a
    # redelivery, two screenings of one device taken out of order): it is judged and
    # its value learned, but it says nothing of the device's cadence or of a repeat run.
    late = dt < 0

    week_now = seasonal.week(st, SEASON0, at)
    season_now = seasonal.daily(st, SEASON0, at) + week_now
    expected = level + season_now if seen else x
    resolution = st[RES] if math.isfinite(st[RES]) else 0.0
    floor = maximum(c.rel_min_std * st[SPREAD], c.resolution_min_std * resolution)
    std = maximum(_MAD_TO_STD * st[SCALE], floor)
    std = std if std > 0 else math.inf
    resid = x - expected if seen else 0.0
    z_raw = resid / std if math.isfinite(std) else 0.0
    # A device with heavier tails than a Gaussian is judged against its own tail.
    tail_ratio = maximum(1.0, st[TAIL] / GAUSS_TAIL_Z)
    z = z_raw / tail_ratio
    # One reading must clear both the Gaussian-scaled band and the reach of the device's
    # own rarest bursts, so a calm device is judged tighter than one that bursts daily
    # (the 99th percentile alone says too little about how far a heavy tail reaches).
    spike_z = maximum(c.spike_z * tail_ratio, c.far_tail_factor * st[FARTAIL])
    band = spike_z * std

    step_size = abs(x - st[LASTV])
    is_flat = seen and not late and step_size <= c.flat_tolerance
    prior_flat_run = st[FLAT]
    flat_run = prior_flat_run + 1.0 if is_flat else (prior_flat_run if late else 0.0)
    varies = st[SCALE] > 0

    # While flat, a stuck value must not also build shift evidence against a frozen level.
    zc = _clip(z, c.cusum_clip_z) if warm and not is_flat else 0.0
    cpos = maximum(0.0, st[CPOS] + zc - c.cusum_k)
    cneg = maximum(0.0, st[CNEG] - zc - c.cusum_k)
    rpos = st[RPOS] + 1.0 if cpos >= c.evidence_floor else 0.0
    rneg = st[RNEG] + 1.0 if cneg >= c.evidence_floor else 0.0

    gap_log = st[GAP]
    # NaN until the device's first forward gap: a late second reading must not leave
    # the tracker at log(1 s), which would take every later interval for a silence.
    gap_known = count >= c.dropout_warmup_readings and math.isfinite(gap_log)
    r_drop = 0.0
    if gap_known and st[DROPMARK] != last_ts and dt > 0:
        r_drop = dt / maximum(c.dropout_factor * math.exp(gap_log), c.dropout_min_s)

    stuck_limit = maximum(c.stuck_readings, c.stuck_factor * st[FLATMAX])
    r_spike = abs(z_raw) / spike_z if warm else 0.0
    r_cusum = maximum(cpos, cneg) / c.cusum_h if warm else 0.0
    r_stuck = flat_run / stuck_limit if warm and varies else 0.0
    # The largest ratio names the kind; the first of equals (a NaN, as numpy's argmax).
    value_score, by_ratio = r_spike, SPIKE
    if r_spike == r_spike:
        if not r_cusum <= value_score:
            value_score, by_ratio = r_cusum, LEVEL_SHIFT
        if value_score == value_score and not r_stuck <= value_score:
            value_score, by_ratio = r_stuck, STUCK
    # A silence is reported once by its own mark, not through the value episode: a gap
    # must not open an episode that would swallow a spike arriving just after it.
    value_anomalous = value_score >= 1.0
    dropout = r_drop >= 1.0 and not value_anomalous
    score = maximum(value_score, r_drop)

    kind = NORMAL
    if value_anomalous:
        if by_ratio == SPIKE:
            ordinary_value = abs(x - st[SLOW] - week_now) <= c.seasonal_spread * st[SPREAD]
            kind = SEASONAL if ordinary_value else (DIP if z < 0 else SPIKE)
        elif by_ratio == LEVEL_SHIFT:
            up = cpos >= cneg
            run = rpos if up else rneg
            mean_excess = (cpos if up else cneg) / maximum(run, 1.0)
            growing = abs(zc) - c.cusum_k > mean_excess
            kind = DRIFT if run > c.shift_max_run and growing else LEVEL_SHIFT
        else:
            kind = STUCK
    elif dropout:
        kind = DROPOUT

    # Baseline learning: repeats never train it, outliers are clipped once warm.
    learn = not is_flat
    innov = _clip(resid, c.clip_z * std * tail_ratio) if warm else resid
    innov = innov if math.isfinite(innov) else 0.0
    a_level = maximum(c.level_alpha, 1.0 / (count + 1.0))
    a_scale = maximum(c.scale_alpha, 1.0 / maximum(count, 1.0))
    deseason = x - season_now
    fast = st[FAST] + c.fast_alpha * (deseason - st[FAST]) if seen else deseason
    if learn:
        st[LEVEL] = level + a_level * innov if seen else deseason
        st[TREND] = trend + a_level * c.trend_beta * innov if seen else 0.0
        st[SCALE] = st[SCALE] + a_scale * (abs(innov) - st[SCALE]) if seen else 0.0
    else:
        st[LEVEL] = level
        st[TREND] = trend
    st[FAST] = fast
    # The tail trackers wait until the scale has settled: the first residuals are judged
    # on few readings.
    if count >= c.tail_warmup_readings and learn:
        tail_up, tail_down, far_up, far_down = tails
        beyond = abs(z_raw) > st[TAIL]
        st[TAIL] = maximum(st[TAIL] * (tail_up if beyond else tail_down), GAUSS_TAIL_Z)
        beyond = abs(z_raw) > st[FARTAIL]
        st[FARTAIL] = maximum(st[FARTAIL] * (far_up if beyond else far_down), GAUSS_FAR_Z)

    # Slow statistics and the season learn from ordinary readings only.
    typical = learn and not (warm and abs(z) > c.clip_z)
    a_slow = minimum(maximum(1.0 / (count + 1.0), dt_pos / c.slow_tau_s), 1.0) if seen else 1.0
    slow = st[SLOW]
    if typical or not seen:
        st[SLOW] = slow + a_slow * (deseason - slow)
    if typical and seen:
        spread_obs = abs(x - week_now - slow)
        st[SPREAD] = st[SPREAD] + a_slow * (spread_obs - st[SPREAD])
    # The profile learns the offset from the slow mean as just updated.
    season_dt_s = dt_pos if typical and seen else 0.0
    seasonal.learn(st, SEASON0, at, x - st[SLOW], season_dt_s, c.season_tau_s, c.week_tau_s)
    if seen and step_size > 0:
        st[RES] = minimum(st[RES], step_size)

    # After a shift the level jumps to where the values now are, so the episode can end;
    # a drift keeps going, so its evidence is only capped and the episode lasts while it does.
    first_crossing = maximum(st[CPOS], st[CNEG]) < c.cusum_h
    in_drift = st[INEP] > 0 and st[EPKIND] == DRIFT
    re_anchor = kind == LEVEL_SHIFT and first_crossing and not in_drift
    if re_anchor:
        st[SLOW] = st[SLOW] + (fast - st[LEVEL])
        st[LEVEL] = fast
        st[TREND] = 0.0
        st[CPOS] = st[CNEG] = st[RPOS] = st[RNEG] = 0.0
    else:
        st[CPOS] = minimum(cpos, c.cusum_h)
        st[CNEG] = minimum(cneg, c.cusum_h)
        st[RPOS] = rpos
        st[RNEG] = rneg

    # Gaps are tracked in log seconds so one tracker fits a 1 s sensor and a daily meter.
    if seen and dt > 0:
        log_dt = math.log(dt)
        if count == 1.0 or not math.isfinite(gap_log):
            st[GAP] = log_dt
        else:
            st[GAP] = gap_log + (_GAP_P if log_dt > gap_log else _GAP_P - 1.0) * c.gap_rate
    st[LASTTS] = last_ts if last_ts >= t else t
    if not late:
        st[LASTV] = x
    st[FLAT] = flat_run
    st[COUNT] = count + 1.0

    in_episode = st[INEP] > 0
    opens = value_anomalous and not in_episode
    # Every run of repeats that ended teaches the usual run length: a sensor that resumes
    # varying was not stuck for good, and counts sit at 0 for as long as nights last.
    if not is_flat and not late:
        st[FLATMAX] = maximum(st[FLATMAX], prior_flat_run)
    if value_score < c.clear_score:
        normal_run = st[NORMRUN] + (1.0 if in_episode else 0.0)
    else:
        normal_run = minimum(st[NORMRUN], 0.0)
    # A shift is watched a while after it re-anchors: evidence building again the same way
    # is a drift the shift was the start of, not a new episode.
    if re_anchor:
        normal_run = -c.shift_watch_readings
    if opens:
        st[EPSTART] = t
        st[EPKIND] = kind
    ended = in_episode and normal_run >= c.episode_end_readings
    st[INEP] = 1.0 if value_anomalous or (in_episode and not ended) else 0.0
    st[NORMRUN] = 0.0 if ended else normal_run
    return score, kind, opens or dropout, expected, band
