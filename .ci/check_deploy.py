"""CI, project venv: every compose service's command runs once, against a private Redis
started from compose's own redis command (password and all), and ``iotsched metrics --once``
on that Redis passes ``promtool check metrics``.

usage: uv run python .ci/check_deploy.py SERVICES.json   (written by .ci/check_compose.py)

- ``iotsched`` commands: parsed by the real command line (a flag or value it rejects fails);
  workers also run with ``--dry-run``; registry, produce and metrics run for real, scaled down.
- ``celery`` commands (beat/control, Flower): started for real; each must still be running after
  a few seconds (Flower must also answer 401 without and 200 with its basic auth).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from iotsched.cli import build_parser

STAY_UP_S = 8.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        raise SystemExit(1)


def run(argv: list[str], env: dict[str, str], what: str, **kw: Any) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, **kw)
    check(
        done.returncode == 0,
        f"{what}: {' '.join(argv)}" + (f"\n{done.stderr}" if done.returncode else ""),
    )
    return done.stdout


def stays_up(argv: list[str], env: dict[str, str], what: str, probe: Any = None) -> None:
    # Run from a scratch directory (beat writes its schedule file there), importing this repo.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**env, "PYTHONPATH": root}
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as scratch:
        proc = subprocess.Popen(argv, env=env, cwd=scratch, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + STAY_UP_S
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            alive = proc.poll() is None
            if not alive:
                log.seek(0)
                print(log.read().decode(errors="replace")[-3000:])
            check(alive, f"{what} still running after {STAY_UP_S:g} s: {' '.join(argv)}")
            if probe is not None:
                probe()
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def http_status(url: str, auth: str | None = None) -> int:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def main(path: str) -> int:
    with open(path) as fh:
        services: dict[str, dict[str, Any]] = json.load(fh)
    workdir = tempfile.mkdtemp(prefix="iotsched-ci-")
    port = free_port()
    redis_env = {**os.environ, **services["redis"]["environment"]}
    # compose's redis command, with a local port and directory appended (later options win).
    redis_cmd = [*services["redis"]["command"]]
    redis_cmd[-1] += f" --port {port} --bind 127.0.0.1 --dir {workdir} --save ''"
    redis = subprocess.Popen(redis_cmd, env=redis_env, stdout=subprocess.DEVNULL)
    try:
        health = services["redis"]["healthcheck"]
        probe = [health[1].replace("redis-cli ", f"redis-cli -p {port} ", 1)]
        for _ in range(50):
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            if subprocess.run(["sh", "-c", *probe], env=redis_env, **quiet).returncode == 0:
                break
            time.sleep(0.1)
        check(
            subprocess.run(["sh", "-c", *probe], env=redis_env).returncode == 0,
            "redis: compose's command starts and its healthcheck passes",
        )
        check(
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG",
            "redis: refuses a client without the password",
        )
        run_services(services, port)
    finally:
        redis.terminate()
        redis.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_services(services: dict[str, dict[str, Any]], port: int) -> None:
    parser = build_parser()
    # The registry first, then load and a scrape of it; the rest in name order.
    order = {name: i for i, name in enumerate(("registry", "producer", "metrics"))}
    for name, svc in sorted(services.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])):
        if name == "redis":
            continue
        argv = list(svc["command"])
        env = {**os.environ, **svc["environment"]}
        env["IOTSCHED_REDIS_URL"] = env["IOTSCHED_REDIS_URL"].replace(
            "@redis:6379", f"@127.0.0.1:{port}"
        )
        if argv[0] == "iotsched":
            try:
                parser.parse_args(argv[1:])
            except SystemExit as exc:
                check(exc.code == 0, f"{name}: iotsched accepts {' '.join(argv[1:])}")
            check(True, f"{name}: iotsched accepts {' '.join(argv[1:])}")
            if argv[1] == "worker":
                run([*argv, "--dry-run"], env, f"{name} dry run")
            elif argv[1] == "registry":
                run(
                    ["iotsched", "registry", "generate", "--devices", "2000"],
                    env,
                    f"{name} (2,000 devices)",
                )
            elif argv[1] == "produce":
                # No worker drains anything here, so admission control (which admits only
                # what the workers are measured to drain) is replaced by a fixed cap.
                run(
                    ["iotsched", "produce", "--rate-rps", "1000", "--seconds", "1"],
                    {**env, "IOTSCHED_BACKLOG_CAP_READINGS": "1000000"},
                    f"{name} (1 s)",
                )
                bad = b'{"device_id": 99999999, "ts": 1, "value": 1}\n\nnot json\n'
                run(
                    ["iotsched", "produce", "--stdin"],
                    env,
                    f"{name} --stdin (dead letters)",
                    input=bad.decode(),
                )
            elif argv[1] == "metrics":
                text = run(["iotsched", "metrics", "--once"], env, f"{name} --once")
                promtool(text)
            continue
        if argv[0] == "celery" and "flower" in argv:
            flower_port = free_port()
            argv = [a if not a.startswith("--port=") else f"--port={flower_port}" for a in argv]
            auth = env["FLOWER_BASIC_AUTH"].split(",")[0]

            def probe(flower_port: int = flower_port, auth: str = auth) -> None:
                url = f"http://127.0.0.1:{flower_port}/"
                check(http_status(url) == 401, "flower: 401 without basic auth")
                check(http_status(url, auth) == 200, "flower: 200 with basic auth")

            stays_up(argv, env, name, probe)
            continue
        check(argv[0] == "celery", f"{name}: a command this check knows how to run ({argv[0]})")
        stays_up(argv, env, name)


def promtool(text: str) -> None:
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    check(
        done.returncode == 0,
        "promtool check metrics" + (f"\n{done.stdout}{done.stderr}" if done.returncode else ""),
    )
    for name in (
        "celery_queue_length",
        "iotsched_processing_latency_seconds_bucket",
        "iotsched_dead_lettered_readings_total",
    ):
        check(name in text, f"metrics expose {name}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
