"""Load patterns: arrival rate per second per (region, tier), seeded and reproducible bit for bit.

A pattern is a pure function of time: ``rate_rps(t_s)`` takes float64[k] seconds
since the start of the run and returns float64[k, regions, tiers]. Randomness
(noise, event bursts) is drawn once, at construction, from the seed, so the
same seed gives the same bytes however the time axis is sliced. The
simulator, ``iotsched bench`` and the demo pace their producers from these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from scheduler.geography import DEFAULT_SITES, RegionSite

F64 = npt.NDArray[np.float64]

DAY_S = 86_400.0
#: Default fleet-wide offered load: 1,000,000 devices reporting once a second.
DEFAULT_BASE_RPS = 1_000_000.0
#: Default split of devices between tiers (premium, standard).
DEFAULT_TIER_SHARE = (0.2, 0.8)


def even_shares(n_regions: int, tier_share: Sequence[float] = DEFAULT_TIER_SHARE) -> F64:
    """Share matrix [region, tier] summing to 1: regions equal, tiers as given."""
    tiers = np.asarray(tier_share, dtype=np.float64)
    return np.outer(np.full(n_regions, 1.0 / n_regions), tiers / tiers.sum())


class LoadPattern:
    """Arrival rate in readings/s per (region, tier) as a function of time."""

    def rate_rps(self, t_s: F64) -> F64:
        raise NotImplementedError

    def total_rps(self, t_s: F64) -> F64:
        """Fleet-wide rate, summed over regions and tiers."""
        return np.asarray(self.rate_rps(t_s).sum(axis=(1, 2)), dtype=np.float64)

    def __add__(self, other: LoadPattern) -> LoadPattern:
        return Sum((self, other))

    def __mul__(self, factor: float) -> LoadPattern:
        return Scaled(self, factor)


@dataclass(frozen=True)
class Steady(LoadPattern):
    """A constant rate: ``base_rps`` split by ``shares`` [region, tier]."""

    base_rps: float
    shares: F64

    def rate_rps(self, t_s: F64) -> F64:
        t = np.asarray(t_s, dtype=np.float64)
        return np.broadcast_to(self.base_rps * self.shares, (t.shape[0], *self.shares.shape)).copy()


@dataclass(frozen=True)
class Sum(LoadPattern):
    parts: tuple[LoadPattern, ...]

    def rate_rps(self, t_s: F64) -> F64:
        out = self.parts[0].rate_rps(t_s)
        for p in self.parts[1:]:
            out = out + p.rate_rps(t_s)
        return out


@dataclass(frozen=True)
class Scaled(LoadPattern):
    inner: LoadPattern
    factor: float

    def rate_rps(self, t_s: F64) -> F64:
        return self.inner.rate_rps(t_s) * self.factor


@dataclass(frozen=True)
class Modulated(LoadPattern):
    """An inner pattern times a per-region factor over time (shape float64[k, regions])."""

    inner: LoadPattern
    envelope: Envelope

    def rate_rps(self, t_s: F64) -> F64:
        return self.inner.rate_rps(t_s) * self.envelope.factor(t_s)[:, :, None]


class Envelope:
    """A multiplicative factor per region over time: float64[k, regions]."""

    def factor(self, t_s: F64) -> F64:
        raise NotImplementedError


@dataclass(frozen=True)
class FollowTheSun(Envelope):
    """Daily cycle peaking at ``peak_hour`` local solar time, local time taken from longitude.

    ``start_utc_hour`` is the UTC hour at t = 0, so a run can start at any time of day.
    The mean over a day is 1.
    """

    lon_deg: tuple[float, ...]
    amplitude: float = 0.5
    peak_hour: float = 14.0
    start_utc_hour: float = 0.0

    def factor(self, t_s: F64) -> F64:
        t = np.asarray(t_s, dtype=np.float64)[:, None]
        local_h = self.start_utc_hour + t / 3600.0 + np.asarray(self.lon_deg)[None, :] / 15.0
        return 1.0 + self.amplitude * np.cos(2 * np.pi * (local_h - self.peak_hour) / 24.0)


@dataclass(frozen=True)
class Ramp(Envelope):
    """Linear change of the factor from ``from_factor`` to ``to_factor`` over [start_s, end_s]."""

    start_s: float
    end_s: float
    from_factor: float
    to_factor: float
    regions_mask: tuple[bool, ...]

    def factor(self, t_s: F64) -> F64:
        t = np.asarray(t_s, dtype=np.float64)
        frac = np.clip((t - self.start_s) / max(self.end_s - self.start_s, 1e-9), 0.0, 1.0)
        f = self.from_factor + (self.to_factor - self.from_factor) * frac
        mask = np.asarray(self.regions_mask, dtype=bool)
        return np.where(mask[None, :], f[:, None], 1.0)


@dataclass(frozen=True)
class StepSpike(Envelope):
    """The factor jumps to ``factor`` at ``start_s`` and back at ``start_s + duration_s``."""

    start_s: float
    duration_s: float
    factor_during: float
    regions_mask: tuple[bool, ...]

    def factor(self, t_s: F64) -> F64:
        t = np.asarray(t_s, dtype=np.float64)
        on = (t >= self.start_s) & (t < self.start_s + self.duration_s)
        mask = np.asarray(self.regions_mask, dtype=bool)
        return np.where(on[:, None] & mask[None, :], self.factor_during, 1.0)


@dataclass(frozen=True)
class Product(Envelope):
    parts: tuple[Envelope, ...]

    def factor(self, t_s: F64) -> F64:
        out = self.parts[0].factor(t_s)
        for p in self.parts[1:]:
            out = out * p.factor(t_s)
        return out


@dataclass(frozen=True)
class Noise(Envelope):
    """Multiplicative noise, one draw per region per ``resolution_s``, fixed by the seed.

    The table covers ``horizon_s`` and repeats after it, so any slicing of time
    reads the same values.
    """

    seed: int
    n_regions: int
    sigma: float = 0.05
    resolution_s: float = 1.0
    horizon_s: float = DAY_S
    table: F64 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0x4E01])
        n = max(int(np.ceil(self.horizon_s / self.resolution_s)), 1)
        draws = np.clip(1.0 + self.sigma * rng.standard_normal((n, self.n_regions)), 0.0, None)
        object.__setattr__(self, "table", draws)

    def factor(self, t_s: F64) -> F64:
        idx = np.floor(np.asarray(t_s, dtype=np.float64) / self.resolution_s).astype(np.int64)
        return np.asarray(self.table[idx % self.table.shape[0]], dtype=np.float64)


@dataclass(frozen=True)
class EventBursts(Envelope):
    """Bursts set off by external events (a storm, a firmware push): seeded times and regions.

    Events arrive as a Poisson process of ``rate_per_h``; each multiplies one
    region's load by up to ``peak_factor``, rising over ``rise_s`` and decaying
    with time constant ``decay_s``.
    """

    seed: int
    n_regions: int
    horizon_s: float
    rate_per_h: float = 2.0
    peak_factor: float = 3.0
    rise_s: float = 5.0
    decay_s: float = 120.0
    event_start_s: F64 = field(init=False, compare=False)
    event_region: npt.NDArray[np.int64] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0xB0257])
        n = int(rng.poisson(self.rate_per_h * self.horizon_s / 3600.0))
        starts = np.sort(rng.uniform(0.0, self.horizon_s, n))
        object.__setattr__(self, "event_start_s", starts)
        object.__setattr__(self, "event_region", rng.integers(0, self.n_regions, n))

    def factor(self, t_s: F64) -> F64:
        t = np.asarray(t_s, dtype=np.float64)
        out = np.ones((t.shape[0], self.n_regions))
        for start, region in zip(self.event_start_s, self.event_region, strict=True):
            age = t - start
            live = age >= 0
            shape = np.minimum(age / self.rise_s, 1.0) * np.exp(
                -np.maximum(age - self.rise_s, 0.0) / self.decay_s
            )
            out[:, region] += np.where(live, (self.peak_factor - 1.0) * shape, 0.0)
        return out


def all_regions(n_regions: int) -> tuple[bool, ...]:
    return (True,) * n_regions


def one_region(n_regions: int, region: int) -> tuple[bool, ...]:
    return tuple(i == region for i in range(n_regions))


def daily(
    base_rps: float,
    shares: F64,
    sites: Sequence[RegionSite] = DEFAULT_SITES,
    seed: int = 0,
    amplitude: float = 0.5,
    noise_sigma: float = 0.01,
    start_utc_hour: float = 0.0,
) -> LoadPattern:
    """Follow-the-sun daily cycle per region plus seeded noise.

    Noise is per region and second: 1 % by default. A region's ~300,000
    readings/s would show 0.2 % Poisson noise; gateways flushing buffers make
    real traffic burstier than that.
    """
    sun = FollowTheSun(tuple(s.lon_deg for s in sites), amplitude, start_utc_hour=start_utc_hour)
    noise = Noise(seed, len(sites), sigma=noise_sigma)
    return Modulated(Steady(base_rps, shares), Product((sun, noise)))


PATTERN_NAMES = ("steady", "daily", "ramp", "spike", "fleet_spike", "bursts", "beyond_capacity")


def pattern_by_name(
    name: str,
    seed: int = 0,
    base_rps: float = DEFAULT_BASE_RPS,
    n_regions: int = len(DEFAULT_SITES),
    tier_share: Sequence[float] = DEFAULT_TIER_SHARE,
    horizon_s: float = 600.0,
    sites: Sequence[RegionSite] = DEFAULT_SITES,
) -> LoadPattern:
    """A ready-made pattern for producers (bench, demo): ``name`` is one of PATTERN_NAMES.

    Spikes and ramps are placed at a third of ``horizon_s``; "beyond_capacity"
    is a 10× step on every region, past any sane region budget.
    """
    shares = even_shares(n_regions, tier_share)
    base = Steady(base_rps, shares)
    everywhere = all_regions(n_regions)
    third = horizon_s / 3.0
    if name == "steady":
        return base
    if name == "daily":
        return daily(base_rps, shares, sites[:n_regions], seed)
    if name == "ramp":
        return Modulated(base, Ramp(third, 2 * third, 1.0, 3.0, everywhere))
    if name == "spike":
        return Modulated(base, StepSpike(third, third, 5.0, one_region(n_regions, 0)))
    if name == "fleet_spike":
        return Modulated(base, StepSpike(third, third, 5.0, everywhere))
    if name == "bursts":
        return Modulated(base, EventBursts(seed, n_regions, horizon_s, rate_per_h=3600.0 / third))
    if name == "beyond_capacity":
        return Modulated(base, StepSpike(third, third, 10.0, everywhere))
    raise ValueError(f"unknown load pattern {name!r}; known: {', '.join(PATTERN_NAMES)}")
