"""mqtt-bench's CPU split: a worker's CPU includes its pool processes', and the parts are
counted from a point in the run, not from each process's start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.mqtt import _cpu_split, _tree_cpu_s

#: A pool process: spends this much CPU, says so, then idles until killed.
BURN_S = 0.3
CHILD = f"""
import sys, time
while time.process_time() < {BURN_S}:
    pass
print("burnt", flush=True)
time.sleep(60)
"""
#: A worker's main process: starts the pool process and waits on it, spending nothing.
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
child.wait()
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_workers_cpu_includes_its_pool_processes_and_counts_from_the_first_look() -> None:
    # Given a main process idle beside a pool process that burns CPU once started
    main = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True
    )
    try:
        assert main.stdout is not None
        before = _cpu_split([], [main.pid])
        # When the pool process has spent its CPU
        assert main.stdout.readline().strip() == "burnt"
        after = _cpu_split([], [main.pid], publishers_s=1.5)
        # Then the worker's part holds it, though the main process spent almost nothing
        spent = after - before
        assert _tree_cpu_s(main.pid) >= BURN_S - 0.05  # /proc counts in ticks
        assert spent[1] >= BURN_S * 0.5
        # And the publishers' part is what they reported; the machine spent at least as much
        assert spent[2] == 1.5
        assert spent[3] >= spent[1] * 0.5
    finally:
        for pid in Path(f"/proc/{main.pid}/task/{main.pid}/children").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        main.wait()
        assert main.stdout is not None
        main.stdout.close()
