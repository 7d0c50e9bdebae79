"""A worker that beats for no role of a region whose data queues it takes says so."""

from __future__ import annotations

import json
import logging
import pathlib
import re
from types import SimpleNamespace

import pytest

from workers.heartbeat import RegionHeartbeat, regions_unbeaten
from workers.profiles import region_queues


def test_a_worker_taking_part_of_a_regions_data_queues_is_named_unbeaten() -> None:
    # A data worker, a standard-share worker and a premium lane each fill a role
    for role in ("data", "standard", "premium"):
        assert regions_unbeaten(region_queues("eu-west", role)) == []
    # Maintenance is not data
    assert regions_unbeaten(region_queues("eu-west", "maintenance")) == []
    # Part of the data queues fills neither role; a full region beside it changes nothing
    part = ["eu-west.standard", "eu-west.screen"]
    assert regions_unbeaten(part) == ["eu-west"]
    assert regions_unbeaten([*region_queues("us-east", "data"), *part]) == ["eu-west"]


def test_a_worker_starting_with_part_of_a_regions_data_queues_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a worker launched on eu-west's standard queue alone
    queues = SimpleNamespace(consume_from={"eu-west.standard": object()})
    parent = SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=queues)))
    step = RegionHeartbeat(parent)
    # When its heartbeat step starts
    with caplog.at_level(logging.WARNING, logger="workers.heartbeat"):
        step.start(parent)
    # Then it beats for nothing, and says so naming the region
    assert step.heartbeater is None
    assert any("eu-west" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_the_dashboard_shows_each_roles_heartbeat_age_apart() -> None:
    # Given the dashboard shipped in deploy/grafana
    path = pathlib.Path(__file__).parents[2] / "deploy" / "grafana" / "iotsched.json"
    panels = json.loads(path.read_text())["panels"]
    targets = [
        t for p in panels for t in p.get("targets", [])
        if "iotsched_heartbeat_age_seconds" in t["expr"]
    ]  # fmt: skip
    # Then every heartbeat age series keeps its role, so a live premium lane never hides
    # a dead data worker of its region (or the other way round)
    assert targets
    for target in targets:
        grouping = re.search(r"by \(([^)]*)\)", target["expr"])
        assert grouping is not None and "role" in grouping.group(1).replace(" ", "").split(",")
        assert "{{role}}" in target["legendFormat"]
