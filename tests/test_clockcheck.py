"""Clock sanity: a wall-clock jump is logged once and marked on the points of each device's
first poll after it; points taken while the clock is unsynchronised are tagged (when on)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from bmslogger.clockcheck import ClockCheck, clock_synchronized
from bmslogger.config import parse_config
from bmslogger.manager import build_registry
from bmslogger.runtime import LoggerService

CONFIG = (
    '[logger]\nstate_dir = "state"\nspool_dir = "spool"\nlock_dir = "locks"\n'
    '[[devices.daly]]\nname = "a"\nport = "sim://daly?cells=4&sensors=1"\n'
    '[[devices.daly]]\nname = "b"\nport = "sim://daly?cells=5&sensors=1"\n'
    '[sinks.stdout]\n'
)


class Wall:
    """A wall clock that can be set, like `date -s` or NTP stepping the time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_kernel_clock_state_is_a_bool_or_unknown() -> None:
    assert clock_synchronized() in (True, False, None)


def test_jump_is_logged_once_and_marked_per_device(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = build_registry()
    config = parse_config(CONFIG, str(tmp_path / "logger.toml"), registry)
    service = LoggerService(config, registry)
    wall = Wall()
    service.clock_check = ClockCheck(tag_unsynced=False, synced=lambda: True, wall=wall)
    a, b = service.pollers
    try:
        first = service.poll_and_submit(a)
        assert all("clock" not in p.tags for p in first.points)
        wall.offset = 3600.0  # NTP steps the clock an hour forward
        with caplog.at_level(logging.WARNING, logger="bmslogger"):
            after_a = service.poll_and_submit(a)
            after_b = service.poll_and_submit(b)
            later_a = service.poll_and_submit(a)
        jumps = [r for r in caplog.records if "jumped" in r.getMessage()]
        assert len(jumps) == 1 and "+3600.0 s" in jumps[0].getMessage()
        assert after_a.points and all(p.tags["clock"] == "jumped" for p in after_a.points)
        assert all(p.tags["clock"] == "jumped" for p in after_b.points)
        assert all("clock" not in p.tags for p in later_a.points)
        # the other tags are kept
        battery = next(p for p in after_a.points if p.measurement == "battery")
        assert battery.tags["device"] == "a" and battery.tags["pack"] == "1"
    finally:
        service.pipeline.close(5)


def test_unsynced_points_are_tagged_until_the_clock_syncs(
        caplog: pytest.LogCaptureFixture) -> None:
    from bmslogger.model import Point

    state = {"synced": False}
    with caplog.at_level(logging.INFO, logger="bmslogger"):
        check = ClockCheck(tag_unsynced=True, synced=lambda: state["synced"])
        pts = [Point("battery", {"device": "x"}, {"voltage_v": 1.0}, 1)]
        assert check.mark("x", pts)[0].tags == {"device": "x", "clock": "unsynced"}
        state["synced"] = True
        assert check.mark("x", pts)[0].tags == {"device": "x"}
    messages = [r.getMessage() for r in caplog.records]
    assert any("not synchronised" in m for m in messages)
    assert any("synchronised now" in m for m in messages)
    off = ClockCheck(tag_unsynced=False, synced=lambda: False)
    assert off.mark("x", pts)[0].tags == {"device": "x"}
