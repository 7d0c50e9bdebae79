"""CI, system Python (Debian docker-compose brings PyYAML and jsonschema): compose.yaml is valid
and keeps its security defaults. Writes the resolved services as JSON for check_deploy.py.

usage: python3 .ci/check_compose.py OUT.json
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import jsonschema
import yaml

SCHEMA = pathlib.Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")


def main(out_path: str) -> int:
    resolved_text = subprocess.run(
        ["docker-compose", "--env-file", ".env.example", "-f", "compose.yaml", "config"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    schema = json.loads(SCHEMA.read_text())
    # The file as written (anchors expanded by YAML) and as docker-compose resolved it.
    raw = yaml.safe_load(pathlib.Path("compose.yaml").read_text())
    resolved = yaml.safe_load(resolved_text)
    for doc in (raw, resolved):
        jsonschema.validate(doc, schema)
    services = resolved["services"]
    problems = [
        f"{name} publishes ports {svc['ports']}"
        for name, svc in services.items()
        if svc.get("ports")
    ]
    if "--requirepass" not in " ".join(services["redis"]["command"]):
        problems.append("redis runs without --requirepass")
    if "FLOWER_BASIC_AUTH" not in services["flower"].get("environment", {}):
        problems.append("flower runs without basic auth")
    if not services["producer"].get("depends_on", {}).get("redis"):
        problems.append("producer does not wait for redis")
    # Premium's guarantee holds by construction only with a lane per region beside its workers.
    for name in (n for n in services if n.startswith("worker-")):
        lane = services.get("premium-" + name.removeprefix("worker-"), {})
        if "premium" not in lane.get("command", []):
            problems.append(f"{name} has no premium lane (iotsched worker --role premium)")
    if problems:
        print("compose.yaml: " + "; ".join(problems), file=sys.stderr)
        return 1
    # Commands as written (compose turns "$$" into "$"), with the resolved environment.
    out = {
        name: {
            "command": [a.replace("$$", "$") for a in raw["services"][name]["command"]],
            "environment": svc.get("environment", {}),
            "healthcheck": [
                a.replace("$$", "$") for a in svc.get("healthcheck", {}).get("test", [])
            ],
        }
        for name, svc in services.items()
    }
    pathlib.Path(out_path).write_text(json.dumps(out, indent=2))
    print(
        f"compose.yaml: valid against {SCHEMA.name}; {len(services)} services; no published ports"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
