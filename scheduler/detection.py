"""Detector: a per-device streaming anomaly screen over columnar batches.

Each (device, metric) carries a fixed-width float64 state vector (``STATE_FIELDS``)
that lives in Redis between batches; ``pack_states``/``unpack_states`` turn a whole
batch's states into bytes in one go so an adapter needs one MGET and one MSET.

Per reading the detector compares the value with a level (an EWMA whose updates are
clipped at ``clip_z`` standard deviations, so a spike barely moves it) and keeps:

- spikes/dips: the one-step robust z-score ``(value - level) / std`` past ``spike_z``;
- level shifts and drift: a two-sided CUSUM of the clipped z-scores; an alarm whose
  evidence arrived in a few readings, or is fading, is a shift, one still growing is
  drift. The level is re-anchored on an alarm so one shift makes one episode.
  Drift slower than about ``cusum_k * level_alpha`` std per reading is indistinguishable
  from seasonality at this level time constant and is absorbed, not reported;
- stuck sensors: ``stuck_readings`` repeats of one value on a device whose learned
  variation is above the floor (repeats never train the baseline, so a plateau does
  not shrink the variance it is judged against);
- dropouts: silence past ``dropout_factor`` x the device's usual interval, either by the
  ``find_dropouts`` sweep or, if the sweep has not reported it, on the reading that ends it.

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

from scheduler.errors import InvalidBatch

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
IDX = npt.NDArray[np.intp]
BOOL = npt.NDArray[np.bool_]

#: The layout of one (device, metric) state vector; a device's blob is these x metrics.
STATE_FIELDS: tuple[str, ...] = (
    "count",  # readings seen
    "level",  # clipped EWMA of the value: the expected next value
    "var",  # EWMA of the clipped squared one-step residual
    "fast_level",  # unclipped fast EWMA, where the level re-anchors after a shift
    "cusum_pos",
    "cusum_neg",
    "run_pos",  # readings since cusum_pos last rose past evidence_floor
    "run_neg",
    "last_value",
    "flat_run",  # consecutive readings equal to the one before
    "last_ts",
    "interval_s",  # EWMA of the time between readings
    "in_episode",
    "episode_start_ts",
    "episode_kind",  # the kind that opened the current episode
    "normal_run",  # consecutive normal readings inside an episode
    "dropout_mark_ts",  # last_ts of the silence already reported by find_dropouts
)
K = len(STATE_FIELDS)
(
    _COUNT,
    _LEVEL,
    _VAR,
    _FAST,
    _CPOS,
    _CNEG,
    _RPOS,
    _RNEG,
    _LASTV,
    _FLAT,
    _LASTTS,
    _INTERVAL,
    _INEP,
    _EPSTART,
    _EPKIND,
    _NORMRUN,
    _DROPMARK,
) = range(K)

#: Kind codes in ``ScreenResult.kind``; ``KIND_NAMES[code]`` is the name.
NORMAL, SPIKE, DIP, LEVEL_SHIFT, DRIFT, STUCK, DROPOUT = range(7)
KIND_NAMES: tuple[str, ...] = ("normal", "spike", "dip", "level_shift", "drift", "stuck", "dropout")
KIND_CODES: dict[str, int] = {name: code for code, name in enumerate(KIND_NAMES)}


@dataclass(frozen=True)
class DetectorConfig:
    """Detector tuning; thresholds are in standard deviations unless a unit says otherwise."""

    #: Readings before a device is judged; its baseline is still learned meanwhile.
    warmup_readings: int = 20
    level_alpha: float = 0.1
    var_alpha: float = 0.05
    fast_alpha: float = 0.3
    #: Residuals beyond this are clipped before they update level and variance (robustness).
    clip_z: float = 3.0
    spike_z: float = 6.0
    cusum_k: float = 0.5
    cusum_h: float = 8.0
    #: One reading adds at most this to the CUSUM, so a lone spike cannot look like a shift.
    cusum_clip_z: float = 4.0
    #: A CUSUM alarm within this many readings of its evidence passing ``evidence_floor``,
    #: or one whose evidence is fading, is a level shift; a later, still-growing one is drift.
    shift_max_run: int = 6
    evidence_floor: float = 1.0
    stuck_readings: int = 10
    #: Values closer than this (in value units) count as a repeat.
    flat_tolerance: float = 0.0
    #: Floor of the standard deviation, absolute (value units) and relative to |level|.
    min_std: float = 1e-6
    rel_min_std: float = 1e-4
    interval_alpha: float = 0.1
    dropout_factor: float = 5.0
    #: Silence shorter than this (seconds) is never a dropout, however fast the device.
    dropout_min_s: float = 1.0
    #: Readings before the interval estimate is trusted for dropouts.
    dropout_warmup_readings: int = 5
    #: An episode ends after this many consecutive quiet readings (score below clear_score);
    #: the gap between clear_score and 1 keeps a drift hovering at its threshold in one episode.
    episode_end_readings: int = 5
    clear_score: float = 0.5


@dataclass(frozen=True)
class ScreenResult:
    """Per-reading verdicts (shape of ``value``) and the updated states (shape of the input)."""

    states: F64
    score: F64
    kind: I8
    alert: BOOL


def fresh_states(n_devices: int, metrics: int = 1) -> F64:
    """States for devices never seen before."""
    states = np.zeros((n_devices, metrics, K), dtype=np.float64)
    states[:, :, _LASTTS] = np.nan
    states[:, :, _DROPMARK] = np.nan
    return states.reshape(n_devices, metrics * K)


def pack_states(states: F64) -> list[bytes]:
    """One bytes blob per device row (little-endian float64), for one MSET."""
    rows = np.ascontiguousarray(states, dtype="<f8")
    return [row.tobytes() for row in rows]


def unpack_states(blobs: list[bytes | None], metrics: int = 1) -> F64:
    """Rows for ``blobs`` as MGET returns them; None or a blob of another layout is a fresh device.

    A layout change (another ``K`` or metric count) therefore re-warms devices rather than
    misreading old bytes.
    """
    width_bytes = metrics * K * 8
    states = fresh_states(len(blobs), metrics)
    good = [i for i, blob in enumerate(blobs) if blob is not None and len(blob) == width_bytes]
    if good:
        joined = b"".join(blobs[i] or b"" for i in good)
        states[good] = np.frombuffer(joined, dtype="<f8").reshape(len(good), metrics * K)
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
    score = np.zeros(values.shape, dtype=np.float64)
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
        out_score = score.reshape(-1)
        out_kind = kind.reshape(-1)
        out_alert = alert.reshape(-1)
        for take in _rounds(cell_row, cell_ts):
            rows = cell_row[take]
            cell_state = cells[rows]
            s, k, a = _step(cell_state, cell_ts[take], cell_value[take], config)
            cells[rows] = cell_state
            where = present[take]
            out_score[where] = s
            out_kind[where] = k
            out_alert[where] = a

    shape = value.shape
    return ScreenResult(
        states=cells.reshape(states.shape),
        score=score.reshape(shape),
        kind=kind.reshape(shape),
        alert=alert.reshape(shape),
    )


def _step(st: F64, t: F64, x: F64, c: DetectorConfig) -> tuple[F64, I8, BOOL]:
    """Advance distinct cells by one reading each, in place; returns score, kind, alert."""
    count = st[:, _COUNT]
    seen = count > 0
    warm = count >= c.warmup_readings
    level = st[:, _LEVEL]
    floor = np.maximum(c.min_std, c.rel_min_std * np.abs(level))
    std = np.sqrt(np.maximum(st[:, _VAR], floor * floor))
    resid = np.where(seen, x - level, 0.0)
    z = resid / std

    is_flat = seen & (np.abs(x - st[:, _LASTV]) <= c.flat_tolerance)
    flat_run = np.where(is_flat, st[:, _FLAT] + 1.0, 0.0)
    varies = st[:, _VAR] > floor * floor

    zc = np.clip(z, -c.cusum_clip_z, c.cusum_clip_z)
    # While flat, a stuck value must not also build shift evidence against a frozen level.
    zc = np.where(warm & ~is_flat, zc, 0.0)
    cpos = np.maximum(0.0, st[:, _CPOS] + zc - c.cusum_k)
    cneg = np.maximum(0.0, st[:, _CNEG] - zc - c.cusum_k)
    rpos = np.where(cpos >= c.evidence_floor, st[:, _RPOS] + 1.0, 0.0)
    rneg = np.where(cneg >= c.evidence_floor, st[:, _RNEG] + 1.0, 0.0)

    dt = t - st[:, _LASTTS]
    interval = st[:, _INTERVAL]
    silence_limit = np.maximum(c.dropout_factor * interval, c.dropout_min_s)
    unreported = ~(st[:, _DROPMARK] == st[:, _LASTTS])
    dropout_ready = (count >= c.dropout_warmup_readings) & (interval > 0) & unreported
    r_drop = np.where(dropout_ready & (dt > 0), dt / silence_limit, 0.0)

    r_spike = np.where(warm, np.abs(z) / c.spike_z, 0.0)
    r_cusum = np.where(warm, np.maximum(cpos, cneg) / c.cusum_h, 0.0)
    r_stuck = np.where(warm & varies, flat_run / c.stuck_readings, 0.0)
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
    kind = np.where(by_ratio == SPIKE, np.where(z < 0, DIP, SPIKE), by_ratio)
    kind = np.where(by_ratio == LEVEL_SHIFT, cusum_kind, kind)
    kind = np.where(value_anomalous, kind, np.where(dropout, DROPOUT, NORMAL)).astype(np.int8)

    # Baseline learning: repeats never train it, outliers are clipped once warm.
    learn = ~is_flat
    bound = c.clip_z * std
    innov = np.where(warm, np.clip(resid, -bound, bound), resid)
    a_level = np.maximum(c.level_alpha, 1.0 / (count + 1.0))
    a_var = np.maximum(c.var_alpha, 1.0 / np.maximum(count, 1.0))
    new_level = np.where(seen, level + a_level * innov, x)
    new_var = np.where(seen, st[:, _VAR] + a_var * (innov * innov - st[:, _VAR]), 0.0)
    new_fast = np.where(seen, st[:, _FAST] + c.fast_alpha * (x - st[:, _FAST]), x)
    st[:, _LEVEL] = np.where(learn, new_level, level)
    st[:, _VAR] = np.where(learn, new_var, st[:, _VAR])
    st[:, _FAST] = new_fast

    # After a shift the level jumps to where the values now are, so the episode can end;
    # a drift keeps going, so its evidence is only capped and the episode lasts while it does.
    first_crossing = np.maximum(st[:, _CPOS], st[:, _CNEG]) < c.cusum_h
    in_drift = (st[:, _INEP] > 0) & (st[:, _EPKIND] == DRIFT)
    re_anchor = (kind == LEVEL_SHIFT) & first_crossing & ~in_drift
    st[:, _LEVEL] = np.where(re_anchor, new_fast, st[:, _LEVEL])
    st[:, _CPOS] = np.where(re_anchor, 0.0, np.minimum(cpos, c.cusum_h))
    st[:, _CNEG] = np.where(re_anchor, 0.0, np.minimum(cneg, c.cusum_h))
    st[:, _RPOS] = np.where(re_anchor, 0.0, rpos)
    st[:, _RNEG] = np.where(re_anchor, 0.0, rneg)

    # A gap is not a normal interval: cap its weight so one dropout does not retune the device.
    forward = seen & (dt > 0)
    capped_dt = np.where(interval > 0, np.minimum(dt, c.dropout_factor * interval), dt)
    new_interval = np.where(interval > 0, interval + c.interval_alpha * (capped_dt - interval), dt)
    st[:, _INTERVAL] = np.where(forward, new_interval, interval)
    st[:, _LASTTS] = np.fmax(st[:, _LASTTS], t)
    st[:, _LASTV] = x
    st[:, _FLAT] = flat_run
    st[:, _COUNT] = count + 1.0

    in_episode = st[:, _INEP] > 0
    opens = value_anomalous & ~in_episode
    alert = opens | dropout
    quiet = value_score < c.clear_score
    normal_run = np.where(quiet, st[:, _NORMRUN] + in_episode, 0.0)
    st[:, _EPSTART] = np.where(opens, t, st[:, _EPSTART])
    st[:, _EPKIND] = np.where(opens, kind, st[:, _EPKIND])
    ended = in_episode & (normal_run >= c.episode_end_readings)
    st[:, _INEP] = np.where(value_anomalous | (in_episode & ~ended), 1.0, 0.0)
    st[:, _NORMRUN] = np.where(ended, 0.0, normal_run)
    return score, kind, alert


@dataclass(frozen=True)
class Dropouts:
    """Devices (state rows) silent past their limit, newly reported, with their silence."""

    index: IDX
    silence_s: F64


def find_dropouts(states: F64, now_ts: float, config: DetectorConfig) -> Dropouts:
    """Sweep device rows for silence past ``dropout_factor`` x their usual interval.

    A device is silent when its newest reading over all metrics is that old; its interval
    is its fastest metric's. Reported rows are marked in ``states`` (in place) so the same
    silence is reported once, here or by ``screen`` when the device returns, never twice.
    """
    n_devices = states.shape[0]
    cells = states.reshape(n_devices, -1, K)
    last_ts = np.nanmax(np.where(cells[:, :, _COUNT] > 0, cells[:, :, _LASTTS], -np.inf), axis=1)
    usable = (cells[:, :, _INTERVAL] > 0) & (cells[:, :, _COUNT] >= config.dropout_warmup_readings)
    interval = np.min(np.where(usable, cells[:, :, _INTERVAL], np.inf), axis=1)
    limit = np.maximum(config.dropout_factor * interval, config.dropout_min_s)
    silence = now_ts - last_ts
    already = np.any(cells[:, :, _DROPMARK] == cells[:, :, _LASTTS], axis=1)
    hit = np.flatnonzero(np.isfinite(interval) & (silence > limit) & ~already)
    cells[hit, :, _DROPMARK] = cells[hit, :, _LASTTS]
    return Dropouts(index=hit, silence_s=silence[hit])


def episode_start_ts(states: F64, metric: int = 0) -> F64:
    """When each device's current episode began (NaN when it is not in one)."""
    cells = states.reshape(states.shape[0], -1, K)[:, metric]
    return np.where(cells[:, _INEP] > 0, cells[:, _EPSTART], np.nan)
