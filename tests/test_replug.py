"""Re-plug recovery: a port that vanishes makes its device unavailable once (one log line,
one hook call), polling keeps trying, and when the adapter comes back under another tty
name behind the same stable link, polling resumes without a restart."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bmslogger.manager import build_registry
from bmslogger.model import DeviceConfig
from bmslogger.options import resolve_options
from bmslogger.runtime import DevicePoller
from bmslogger.simline import build_simulator, serve_pty


class Hooks:
    """Records availability transitions, as an observer plugin would."""

    def __init__(self) -> None:
        self.changes: list[tuple[bool, str]] = []

    def device_availability_changed(self, device: Any, available: bool, reason: str) -> None:
        self.changes.append((available, reason))


@pytest.mark.parametrize("plugin", ["daly", "tristar"])
def test_replugged_adapter_under_a_new_tty_is_polled_again(
        plugin: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = build_registry()
    dtype = registry.device(plugin)
    link = str(tmp_path / "ttyBMS")
    device = DeviceConfig(
        name="house", plugin=plugin, port=link, interval_s=1.0,
        port_settings=dtype.port_defaults, options=resolve_options(dtype.options, {}),
        lock_timeout_s=2.0, retries=0,
    )
    hooks = Hooks()
    poller = DevicePoller(device, dtype, str(tmp_path / "locks"), hook=hooks)
    first = serve_pty(build_simulator(plugin, {}), link=link)
    try:
        ok = poller.run()
        assert ok.complete, ok.errors
        assert poller.state.available is True
        first_tty = first.path
    finally:
        first.close()  # the adapter is pulled: its tty and the by-id link disappear

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bmslogger"):
        gone = [poller.run() for _ in range(3)]
    assert all(r.silent and r.errors for r in gone)
    assert "cannot open" in gone[0].errors[0] or "No such file" in gone[0].errors[0]
    assert poller.state.available is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    assert poller.counters.snapshot().get("port_unavailable") == 3
    # the self-metrics point is still emitted, so dashboards see the outage
    assert gone[-1].points[-1].measurement == "bmslogger"
    assert gone[-1].points[-1].fields["poll_ok"] is False

    holder = serve_pty(build_simulator(plugin, {}))  # takes the old tty number, if any
    second = serve_pty(build_simulator(plugin, {}), link=link)
    try:
        assert second.path != first_tty
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="bmslogger"):
            back = poller.run()
        assert back.complete, back.errors
        assert poller.state.available is True
        assert any("available again" in r.getMessage() for r in caplog.records)
        assert [p for p in back.points if p.measurement != "bmslogger"]
    finally:
        second.close()
        holder.close()
    assert hooks.changes == [(False, poller.state.last_error), (True, "")]
