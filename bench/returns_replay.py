"""Screening's fold of returns replayed in process: what it folds, and what it leaves alerted.

    uv run python -m bench.returns_replay --devices 20000 --readings 3000000 --rate-rps 120000
    uv run python -m bench.returns_replay --devices 100000 --readings 1000000 \\
        --rate-rps 300000 --pause-every-s 1 --pause-s 2

The bench's synthetic stream (injected anomalies included) on a virtual clock at
``--rate-rps``, optionally with fleet-wide pauses (``--pause-s`` every
``--pause-every-s`` of event time, as the unpaced source stalls when its buffer is
full) or a slowdown halfway (``--slowdown``), is batched per (home region, tier) in
5,000-reading batches, screened, and its returns folded (``fold_alerted_returns``)
as the screening task does, without workers or Redis, so the figures do not depend on
the machine's load. Prints one JSON object: dropout alerts kept, returns folded and
silence events, injected dropouts and how many of them were still alerted.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from ingest.synthetic import SyntheticStream
from scheduler.anomaly_kind import DROPOUT
from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import fresh_states
from scheduler.model import Batch
from scheduler.registry import Registry, generate_registry
from scheduler.return_fold import fold_alerted_returns

BATCH_READINGS = 5_000
CHUNK = 20_000
START_TS = 1_700_000_000.0


class _Replay:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.config = DetectorConfig()
        self.states = fresh_states(len(registry))
        self.kept: list[tuple[int, float]] = []
        self.folded = 0
        self.events = 0

    def screen(self, ids: np.ndarray, ts: np.ndarray, values: np.ndarray) -> None:
        at = self.registry.lookup(ids)
        rows, row = np.unique(at, return_inverse=True)
        states = self.states[rows]
        result = screen(states, row, ts, values, self.config)
        self.states[rows] = result.states
        alerts = np.flatnonzero(result.alert)
        kinds = result.kind[alerts]
        batch = Batch("replay", "r", "t", ("value",), ids, ts, values.reshape(-1, 1), ts)
        devices = self.registry.device_id[rows]
        keep, silences = fold_alerted_returns(
            batch, states, row, devices, alerts, kinds, self.config, self.registry
        )
        kept = alerts[keep & (kinds == DROPOUT)]
        self.kept += list(zip(ids[kept].tolist(), ts[kept].tolist(), strict=True))
        self.folded += sum(int(s["devices"]) for s in silences)
        self.events += len(silences)


def replay(args: argparse.Namespace) -> dict[str, Any]:
    registry = generate_registry(args.devices, seed=args.seed)
    stream = SyntheticStream(registry, seed=args.seed, spike_share=1e-4, anomaly_share=1e-4)
    run = _Replay(registry)
    buffers: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    now_ts, rate_rps, next_pause_ts = START_TS, args.rate_rps, START_TS + args.pause_every_s
    for done in range(0, args.readings, CHUNK):
        if done >= args.readings // 2:
            rate_rps = args.rate_rps / args.slowdown
        now_ts += CHUNK / rate_rps
        if args.pause_s and now_ts >= next_pause_ts:
            now_ts += args.pause_s
            next_pause_ts = now_ts + args.pause_every_s
        ids, ts, values = stream.chunk(CHUNK, now_ts)
        at = registry.lookup(ids)
        key = registry.home_region[at].astype(np.int64) * 16 + registry.tier[at]
        for k in np.unique(key).tolist():
            mine = key == k
            buffers.setdefault(k, []).append((ids[mine], ts[mine], values[mine, 0]))
            if sum(part[0].size for part in buffers[k]) >= BATCH_READINGS:
                run.screen(*(np.concatenate(c) for c in zip(*buffers.pop(k), strict=True)))
    for parts in buffers.values():
        run.screen(*(np.concatenate(c) for c in zip(*parts, strict=True)))
    dropouts = [a for a in stream.truth if a.kind == "dropout"]
    kept_by_device: dict[int, list[float]] = {}
    for device, ts_ in run.kept:
        kept_by_device.setdefault(device, []).append(ts_)
    alerted = sum(
        any(a.onset_ts <= t <= a.end_ts + 5.0 for t in kept_by_device.get(a.device_id, []))
        for a in dropouts
    )
    return {
        "dropout_alerts_kept": len(run.kept),
        "folded_returns": run.folded,
        "silence_events": run.events,
        "injected_dropouts": len(dropouts),
        "injected_dropouts_alerted": alerted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--readings", type=int, default=3_000_000)
    parser.add_argument("--rate-rps", type=float, default=120_000.0)
    parser.add_argument("--pause-every-s", type=float, default=1.0)
    parser.add_argument("--pause-s", type=float, default=0.0)
    parser.add_argument("--slowdown", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    print(json.dumps(replay(parser.parse_args())))


if __name__ == "__main__":
    main()
