"""Detector tuning: thresholds and learning rates of the screen and of the dropout sweep.

``scheduler.detector_step`` says what each one governs in the per-reading model.
"""

from __future__ import annotations

from dataclasses import dataclass


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
