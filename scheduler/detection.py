"""Detector: a per-device streaming anomaly screen over columnar batches.

Each (device, metric) carries a fixed-width state vector (``STATE_FIELDS``, stored in
``STATE_BYTES`` = 256 bytes: float64 where precision matters, float32 elsewhere) that
lives in Redis between batches; ``pack_states``/
``unpack_states`` turn a whole batch's states into bytes in one go so an adapter needs
one MGET and one MSET. Every reading costs O(1) work and the batch is vectorised.

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
  ``find_dropouts`` sweep or, if the sweep has not reported it, on the reading ending it.

A reading's ``score`` is the largest of those ratios to their thresholds, so ``score >= 1``
is anomalous. One alert per episode of abnormal values: ``alert`` is True only on an
episode's first reading, and an episode ends after ``episode_end_readings`` quiet
readings in a row. A silence is reported once on its own and opens no episode, so a
spike just after a gap is still alerted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler import seasonal
from scheduler.errors import InvalidBatch

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
IDX = npt.NDArray[np.intp]
BOOL = npt.NDArray[np.bool_]

#: The layout of one (device, metric) state vector; a device's blob is these x metrics.
#: Stored as float64 (times, and values compared with or accumulated at the signal's own
#: precision: a repeat must equal the last value exactly, a level of 1e6 must resolve noise
#: of 0.01); the fields after them (rates, counts, evidence, seasonal offsets) as float32.
_WIDE_FIELDS: tuple[str, ...] = (
    "count",  # readings seen
    "level",  # clipped EWMA of the deseasonalised value
    "trend",  # its damped per-reading slope (Holt), so a smooth cycle is not lagged
    "slow_mean",  # slow EWMA of the deseasonalised value: what the season is measured from
    "fast_level",  # unclipped fast EWMA, where the level re-anchors after a shift
    "last_value",
    "last_ts",
    "episode_start_ts",
    "dropout_mark_ts",  # last_ts of the silence already reported by find_dropouts
)
STATE_FIELDS: tuple[str, ...] = (
    *_WIDE_FIELDS,
    "scale",  # EWMA of the clipped absolute residual
    "spread",  # slow EWMA of |value - slow_mean|: the signal's own scale
    "resolution",  # smallest non-zero step between consecutive values seen
    "tail_z",  # tracked 99th percentile of |normalised residual|
    "far_tail_z",  # tracked 99.9th percentile of it: how far this device's bursts reach
    "cusum_pos",
    "cusum_neg",
    "run_pos",  # readings since cusum_pos last rose past evidence_floor
    "run_neg",
    "flat_run",  # consecutive readings equal to the one before
    "flat_max",  # longest run of repeats seen
    "gap_log_s",  # tracked 99th percentile of log(seconds between readings)
    "in_episode",
    "episode_kind",  # the kind that opened the current episode
    "normal_run",  # consecutive normal readings inside an episode
    *seasonal.PROFILE_FIELDS,
)
K = len(STATE_FIELDS)
(
    _COUNT,
    _LEVEL,
    _TREND,
    _SLOW,
    _FAST,
    _LASTV,
    _LASTTS,
    _EPSTART,
    _DROPMARK,
    _SCALE,
    _SPREAD,
    _RES,
    _TAIL,
    _FARTAIL,
    _CPOS,
    _CNEG,
    _RPOS,
    _RNEG,
    _FLAT,
    _FLATMAX,
    _GAP,
    _INEP,
    _EPKIND,
    _NORMRUN,
) = range(K - len(seasonal.PROFILE_FIELDS))
_SEASON0 = K - len(seasonal.PROFILE_FIELDS)

#: Kind codes in ``ScreenResult.kind``; ``KIND_NAMES[code]`` is the name.
NORMAL, SPIKE, DIP, LEVEL_SHIFT, DRIFT, STUCK, DROPOUT, SEASONAL = range(8)
KIND_NAMES: tuple[str, ...] = (
    "normal",
    "spike",
    "dip",
    "level_shift",
    "drift",
    "stuck",
    "dropout",
    "seasonal",
)
KIND_CODES: dict[str, int] = {name: code for code, name in enumerate(KIND_NAMES)}

#: |z| of a standard Gaussian exceeded 1 % of the time: the tail a normal device shows.
_GAUSS_TAIL_Z = 2.576
_TAIL_P = 0.99
#: The same at 99.9 %.
_GAUSS_FAR_Z = 3.291
_FAR_P = 0.999
_GAP_P = 0.99
#: abs(residual) averages this fraction of a Gaussian's standard deviation.
_MAD_TO_STD = 1.2533


@dataclass(frozen=True)
class DetectorConfig:
    """Detector tuning; thresholds are in robust standard deviations unless a unit says so."""

    #: Readings before a device is judged; its baseline is still learned meanwhile.
    warmup_readings: int = 20
    level_alpha: float = 0.1
    #: Share of the level's correction that also corrects the slope, and its damping per reading.
    trend_beta: float = 0.1
    trend_damping: float = 0.9
    scale_alpha: float = 0.01
    fast_alpha: float = 0.5
    #: Residuals beyond this are clipped before they update level and scale (robustness).
    clip_z: float = 3.0
    #: One reading this far out (times the tail ratio) is a spike on a Gaussian device...
    spike_z: float = 5.0
    #: ...and it must also pass this multiple of the device's tracked 99.9th percentile of
    #: |residual|: recorded series (tweet counts, road traffic) burst past 6 every day and
    #: their band widens to their own reach. Learning rate (log units) of that tracker.
    far_tail_factor: float = 1.5
    far_tail_rate: float = 0.1
    cusum_k: float = 0.6
    cusum_h: float = 8.5
    #: One reading adds at most this (less ``cusum_k``) to the CUSUM, so a lone spike cannot
    #: look like a shift, and with ``cusum_h`` two readings at the clip (2 x 3.4 = 6.8) are not
    #: one either: a shift takes the evidence of at least three readings, so the two-reading
    #: bursts of a bursty count (tweets, traffic) are judged as spikes, against its spike band.
    cusum_clip_z: float = 4.0
    #: A CUSUM alarm within this many readings of its evidence passing ``evidence_floor``,
    #: or one whose evidence is fading, is a level shift; a later, still-growing one is drift.
    shift_max_run: int = 6
    evidence_floor: float = 1.0
    stuck_readings: int = 10
    #: A repeat run is stuck only past this multiple of the longest run the device has shown.
    stuck_factor: float = 2.0
    #: Values closer than this (in value units) count as a repeat.
    flat_tolerance: float = 0.0
    #: Floor of the scale: a share of the signal's long-run spread, and of its resolution.
    rel_min_std: float = 0.4
    resolution_min_std: float = 0.5
    #: Memory of the slow mean and spread, the daily profile and the weekly offsets.
    slow_tau_s: float = 7 * 86_400.0
    season_tau_s: float = 3 * 86_400.0
    week_tau_s: float = 7 * 86_400.0
    #: Learning rate (log units) of the tracked tails of residuals and of gaps.
    tail_rate: float = 0.05
    tail_warmup_readings: int = 60
    gap_rate: float = 0.05
    dropout_factor: float = 5.0
    #: Silence shorter than this (seconds) is never a dropout, however fast the device.
    dropout_min_s: float = 1.0
    #: Readings before the interval estimate is trusted for dropouts.
    dropout_warmup_readings: int = 5
    #: An episode ends after this many consecutive quiet readings (score below clear_score);
    #: the gap between clear_score and 1 keeps a drift hovering at its threshold in one episode.
    episode_end_readings: int = 5
    #: Quiet readings an episode opened by a level shift waits on top of episode_end_readings.
    shift_watch_readings: int = 20
    clear_score: float = 0.5
    #: A spike within this many spreads of the slow mean is ordinary for another time of day.
    seasonal_spread: float = 2.0


@dataclass(frozen=True)
class ScreenResult:
    """Per-reading verdicts (shape of ``value``) and the updated states (shape of the input).

    ``expected`` is the predicted value and ``band`` the half-width around it past which a
    single reading is a spike or dip (NaN for missing readings).
    """

    states: F64
    score: F64
    kind: I8
    alert: BOOL
    expected: F64
    band: F64


_WIDE = slice(0, len(_WIDE_FIELDS))
_NARROW = slice(len(_WIDE_FIELDS), K)
_CELL = np.dtype(
    [("wide", "<f8", (len(_WIDE_FIELDS),)), ("narrow", "<f4", (K - len(_WIDE_FIELDS),))]
)
#: Bytes of one (device, metric) state as stored.
STATE_BYTES = _CELL.itemsize


def storable(states: F64) -> F64:
    """``states`` with the float32 fields rounded as storage keeps them (a copy)."""
    cells = states.reshape(-1, K).copy()
    cells[:, _NARROW] = cells[:, _NARROW].astype(np.float32)
    return cells.reshape(states.shape)


def fresh_states(n_devices: int, metrics: int = 1) -> F64:
    """States for devices never seen before."""
    states = np.zeros((n_devices, metrics, K), dtype=np.float64)
    states[:, :, _LASTTS] = np.nan
    states[:, :, _DROPMARK] = np.nan
    states[:, :, _RES] = np.inf
    states[:, :, _TAIL] = _GAUSS_TAIL_Z
    states[:, :, _FARTAIL] = _GAUSS_FAR_Z
    return states.reshape(n_devices, metrics * K)


def pack_states(states: F64) -> list[bytes]:
    """One bytes blob per device row (``STATE_BYTES`` per metric), for one MSET."""
    cells = states.reshape(states.shape[0], states.shape[1] // K, K)
    packed = np.empty(cells.shape[:2], dtype=_CELL)
    packed["wide"] = cells[:, :, _WIDE]
    packed["narrow"] = cells[:, :, _NARROW]
    return [row.tobytes() for row in packed]


def unpack_states(blobs: list[bytes | None], metrics: int = 1) -> F64:
    """Rows for ``blobs`` as MGET returns them; None or a blob of another layout is a fresh device.

    A layout change (another ``K`` or metric count) therefore re-warms devices rather than
    misreading old bytes.
    """
    width_bytes = metrics * STATE_BYTES
    states = fresh_states(len(blobs), metrics)
    good = [i for i, blob in enumerate(blobs) if blob is not None and len(blob) == width_bytes]
    if good:
        joined = b"".join(blobs[i] or b"" for i in good)
        packed = np.frombuffer(joined, dtype=_CELL).reshape(len(good), metrics)
        cells = np.empty((len(good), metrics, K))
        cells[:, :, _WIDE] = packed["wide"]
        cells[:, :, _NARROW] = packed["narrow"]
        states[good] = cells.reshape(len(good), metrics * K)
    return states


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


def screen(
    states: F64, device_index: IDX, ts: F64, value: F64, config: DetectorConfig
) -> ScreenResult:
    """Screen a batch: ``states`` rows are devices, ``device_index`` maps readings to rows.

    ``value`` is ``(r,)`` for one metric or ``(r, m)`` for m metrics, with ``states`` of
    width ``m * K``; a NaN value is a missing reading and leaves its state untouched.
    Readings of one device are taken in time order whatever the batch order. The input
    ``states`` is not modified.
    """
    values = value.reshape(-1, 1) if value.ndim == 1 else value
    n_readings, metrics = values.shape
    if states.ndim != 2 or states.shape[1] != metrics * K:
        raise InvalidBatch(f"states width {states.shape} does not fit {metrics} metric(s) of {K}")
    if device_index.shape != (n_readings,) or ts.shape != (n_readings,):
        raise InvalidBatch("device_index, ts and value lengths differ")
    if n_readings and (device_index.min() < 0 or device_index.max() >= states.shape[0]):
        raise InvalidBatch("device_index points outside states")

    cells = states.reshape(-1, K).copy()
    outs = [np.zeros(values.shape, dtype=np.float64) for _ in range(3)]
    score, expected, band = outs
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
        flat_outs: list[npt.NDArray[np.generic]] = [
            a.reshape(-1) for a in (score, kind, alert, expected, band)
        ]
        for take in _rounds(cell_row, cell_ts):
            rows = cell_row[take]
            cell_state = cells[rows]
            verdicts = _step(cell_state, cell_ts[take], cell_value[take], config)
            # Round as storage will after every reading, so a state is the same whether
            # a stream went through Redis between its batches or not, wherever they split.
            cell_state[:, _NARROW] = cell_state[:, _NARROW].astype(np.float32)
            cells[rows] = cell_state
            where = present[take]
            for out, got in zip(flat_outs, verdicts, strict=True):
                out[where] = np.asarray(got)

    shape = value.shape
    return ScreenResult(
        states=cells.reshape(states.shape),
        score=score.reshape(shape),
        kind=kind.reshape(shape),
        alert=alert.reshape(shape),
        expected=expected.reshape(shape),
        band=band.reshape(shape),
    )


def _step(st: F64, t: F64, x: F64, c: DetectorConfig) -> tuple[F64, I8, BOOL, F64, F64]:
    """Advance distinct cells by one reading each, in place; score, kind, alert, expected, band."""
    count = st[:, _COUNT]
    seen = count > 0
    warm = count >= c.warmup_readings
    trend = c.trend_damping * st[:, _TREND]
    level = st[:, _LEVEL] + trend
    last_ts = st[:, _LASTTS]
    dt = np.where(seen, t - last_ts, 0.0)
    dt_pos = np.maximum(dt, 0.0)

    season = seasonal.Position(t)
    season_now = season.value(st, _SEASON0)
    expected = np.where(seen, level + season_now, x)
    floor = np.maximum(
        c.rel_min_std * st[:, _SPREAD],
        c.resolution_min_std * np.where(np.isfinite(st[:, _RES]), st[:, _RES], 0.0),
    )
    std = np.maximum(_MAD_TO_STD * st[:, _SCALE], floor)
    std = np.where(std > 0, std, np.inf)
    resid = np.where(seen, x - expected, 0.0)
    z_raw = np.where(np.isfinite(std), resid / std, 0.0)
    # A device with heavier tails than a Gaussian is judged against its own tail.
    tail_ratio = np.maximum(1.0, st[:, _TAIL] / _GAUSS_TAIL_Z)
    z = z_raw / tail_ratio
    # One reading must clear both the Gaussian-scaled band and the reach of the device's
    # own rarest bursts, so a calm device is judged tighter than one that bursts daily
    # (the 99th percentile alone says too little about how far a heavy tail reaches).
    spike_z = np.maximum(c.spike_z * tail_ratio, c.far_tail_factor * st[:, _FARTAIL])
    band = spike_z * std

    step_size = np.abs(x - st[:, _LASTV])
    is_flat = seen & (step_size <= c.flat_tolerance)
    prior_flat_run = st[:, _FLAT].copy()
    flat_run = np.where(is_flat, prior_flat_run + 1.0, 0.0)
    varies = st[:, _SCALE] > 0

    zc = np.clip(z, -c.cusum_clip_z, c.cusum_clip_z)
    # While flat, a stuck value must not also build shift evidence against a frozen level.
    zc = np.where(warm & ~is_flat, zc, 0.0)
    cpos = np.maximum(0.0, st[:, _CPOS] + zc - c.cusum_k)
    cneg = np.maximum(0.0, st[:, _CNEG] - zc - c.cusum_k)
    rpos = np.where(cpos >= c.evidence_floor, st[:, _RPOS] + 1.0, 0.0)
    rneg = np.where(cneg >= c.evidence_floor, st[:, _RNEG] + 1.0, 0.0)

    gap_log = st[:, _GAP]
    gap_known = count >= c.dropout_warmup_readings
    silence_limit = np.maximum(c.dropout_factor * np.exp(gap_log), c.dropout_min_s)
    unreported = ~(st[:, _DROPMARK] == last_ts)
    r_drop = np.where(gap_known & unreported & (dt > 0), dt / silence_limit, 0.0)

    stuck_limit = np.maximum(c.stuck_readings, c.stuck_factor * st[:, _FLATMAX])
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
    ordinary_value = np.abs(x - st[:, _SLOW] - season.week(st, _SEASON0)) <= (
        c.seasonal_spread * st[:, _SPREAD]
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
    new_scale = np.where(seen, st[:, _SCALE] + a_scale * (np.abs(innov) - st[:, _SCALE]), 0.0)
    new_fast = np.where(seen, st[:, _FAST] + c.fast_alpha * (deseason - st[:, _FAST]), deseason)
    st[:, _LEVEL] = np.where(learn, new_level, level)
    new_trend = np.where(seen, trend + a_level * c.trend_beta * innov, 0.0)
    st[:, _TREND] = np.where(learn, new_trend, trend)
    st[:, _SCALE] = np.where(learn, new_scale, st[:, _SCALE])
    st[:, _FAST] = new_fast
    # The tail tracker moves up by p and down by 1 - p, so it settles where |z| is
    # exceeded 1 - p of the time; its step is relative, so it works at any scale.
    # It waits until the scale has settled: the first residuals are judged on few readings.
    tail_warm = count >= c.tail_warmup_readings
    beyond = np.abs(z_raw) > st[:, _TAIL]
    tail_step = np.where(beyond, _TAIL_P, _TAIL_P - 1.0) * c.tail_rate
    st[:, _TAIL] = np.where(
        tail_warm & learn, np.maximum(st[:, _TAIL] * np.exp(tail_step), _GAUSS_TAIL_Z), st[:, _TAIL]
    )
    far_step = np.where(np.abs(z_raw) > st[:, _FARTAIL], _FAR_P, _FAR_P - 1.0) * c.far_tail_rate
    st[:, _FARTAIL] = np.where(
        tail_warm & learn,
        np.maximum(st[:, _FARTAIL] * np.exp(far_step), _GAUSS_FAR_Z),
        st[:, _FARTAIL],
    )

    # Slow statistics and the season learn from ordinary readings only.
    typical = learn & ~(warm & (np.abs(z) > c.clip_z))
    a_slow = np.where(seen, np.maximum(1.0 / (count + 1.0), dt_pos / c.slow_tau_s), 1.0)
    a_slow = np.minimum(a_slow, 1.0)
    slow = st[:, _SLOW]
    new_slow = slow + a_slow * (deseason - slow)
    spread_obs = np.abs(x - season.week(st, _SEASON0) - slow)
    new_spread = st[:, _SPREAD] + a_slow * (spread_obs - st[:, _SPREAD])
    if_typical = typical | ~seen
    st[:, _SLOW] = np.where(if_typical, new_slow, slow)
    st[:, _SPREAD] = np.where(if_typical & seen, new_spread, st[:, _SPREAD])
    season.learn(
        st,
        _SEASON0,
        x - slow,
        np.where(typical & seen, dt_pos, 0.0),
        c.season_tau_s,
        c.week_tau_s,
    )
    st[:, _RES] = np.where(seen & (step_size > 0), np.minimum(st[:, _RES], step_size), st[:, _RES])

    # After a shift the level jumps to where the values now are, so the episode can end;
    # a drift keeps going, so its evidence is only capped and the episode lasts while it does.
    first_crossing = np.maximum(st[:, _CPOS], st[:, _CNEG]) < c.cusum_h
    in_drift = (st[:, _INEP] > 0) & (st[:, _EPKIND] == DRIFT)
    re_anchor = (kind == LEVEL_SHIFT) & first_crossing & ~in_drift
    moved = new_fast - st[:, _LEVEL]
    st[:, _LEVEL] = np.where(re_anchor, new_fast, st[:, _LEVEL])
    st[:, _TREND] = np.where(re_anchor, 0.0, st[:, _TREND])
    st[:, _SLOW] = np.where(re_anchor, st[:, _SLOW] + moved, st[:, _SLOW])
    st[:, _CPOS] = np.where(re_anchor, 0.0, np.minimum(cpos, c.cusum_h))
    st[:, _CNEG] = np.where(re_anchor, 0.0, np.minimum(cneg, c.cusum_h))
    st[:, _RPOS] = np.where(re_anchor, 0.0, rpos)
    st[:, _RNEG] = np.where(re_anchor, 0.0, rneg)

    # Gaps are tracked in log seconds so one tracker fits a 1 s sensor and a daily meter.
    forward = seen & (dt > 0)
    log_dt = np.log(np.where(forward, dt, 1.0))
    gap_step = np.where(log_dt > gap_log, _GAP_P, _GAP_P - 1.0) * c.gap_rate
    first_gap = forward & (count == 1.0)
    st[:, _GAP] = np.where(first_gap, log_dt, np.where(forward, gap_log + gap_step, gap_log))
    st[:, _LASTTS] = np.fmax(last_ts, t)
    st[:, _LASTV] = x
    st[:, _FLAT] = flat_run
    st[:, _COUNT] = count + 1.0

    in_episode = st[:, _INEP] > 0
    opens = value_anomalous & ~in_episode
    alert = opens | dropout
    # Every run of repeats that ended teaches the usual run length: a sensor that resumes
    # varying was not stuck for good, and counts sit at 0 for as long as nights last.
    run_ended = ~is_flat
    st[:, _FLATMAX] = np.where(
        run_ended, np.maximum(st[:, _FLATMAX], prior_flat_run), st[:, _FLATMAX]
    )
    quiet = value_score < c.clear_score
    normal_run = np.where(quiet, st[:, _NORMRUN] + in_episode, np.minimum(st[:, _NORMRUN], 0.0))
    # A shift is watched a while after it re-anchors: evidence building again the same way
    # is a drift the shift was the start of, not a new episode.
    normal_run = np.where(re_anchor, -float(c.shift_watch_readings), normal_run)
    st[:, _EPSTART] = np.where(opens, t, st[:, _EPSTART])
    st[:, _EPKIND] = np.where(opens, kind, st[:, _EPKIND])
    ended = in_episode & (normal_run >= c.episode_end_readings)
    st[:, _INEP] = np.where(value_anomalous | (in_episode & ~ended), 1.0, 0.0)
    st[:, _NORMRUN] = np.where(ended, 0.0, normal_run)
    return score, kind, alert, expected, band


@dataclass(frozen=True)
class Dropouts:
    """Devices (state rows) silent past their limit, newly reported, with their silence."""

    index: IDX
    silence_s: F64


def find_dropouts(states: F64, now_ts: float | F64, config: DetectorConfig) -> Dropouts:
    """Sweep device rows for silence past ``dropout_factor`` x their usual long interval.

    ``now_ts`` is when silence is measured up to: one instant, or one per row.

    A device is silent when its newest reading over all metrics is that old; its interval
    is its fastest metric's. Reported rows are marked in ``states`` (in place) so the same
    silence is reported once, here or by ``screen`` when the device returns, never twice.
    """
    n_devices = states.shape[0]
    cells = states.reshape(n_devices, -1, K)
    last_ts = np.nanmax(np.where(cells[:, :, _COUNT] > 0, cells[:, :, _LASTTS], -np.inf), axis=1)
    usable = cells[:, :, _COUNT] >= config.dropout_warmup_readings
    gap_s = np.min(np.where(usable, np.exp(cells[:, :, _GAP]), np.inf), axis=1)
    limit = np.maximum(config.dropout_factor * gap_s, config.dropout_min_s)
    silence = now_ts - last_ts
    already = np.any(cells[:, :, _DROPMARK] == cells[:, :, _LASTTS], axis=1)
    hit = np.flatnonzero(np.isfinite(gap_s) & (silence > limit) & ~already)
    cells[hit, :, _DROPMARK] = cells[hit, :, _LASTTS]
    return Dropouts(index=hit, silence_s=silence[hit])


def episode_start_ts(states: F64, metric: int = 0) -> F64:
    """When each device's current episode began (NaN when it is not in one)."""
    cells = states.reshape(states.shape[0], -1, K)[:, metric]
    return np.where(cells[:, _INEP] > 0, cells[:, _EPSTART], np.nan)
