"""One poll under its lock (`DevicePoller`): what it counts, logs and remembers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bmslogger.locking import PortLock
from bmslogger.manager import build_registry
from bmslogger.model import DeviceConfig
from bmslogger.options import resolve_options
from bmslogger.runtime import DevicePoller
from bmslogger.simline import forget_sim_ports
from bmslogger.transport import port_identity

REGISTRY = build_registry()
DALY = REGISTRY.devices["daly"]


def poller(tmp_path: Path, port: str, **options: object) -> DevicePoller:
    device = DeviceConfig(
        name="bank", plugin="daly", port=port, interval_s=1.0,
        port_settings=DALY.port_defaults, options=resolve_options(DALY.options, options),
        lock_timeout_s=0.2, retries=0,
    )
    return DevicePoller(device, DALY, str(tmp_path / "locks"))


@pytest.fixture(autouse=True)
def fresh_simulators() -> None:
    forget_sim_ports()


def test_driver_memory_outlives_the_driver_between_polls(tmp_path: Path) -> None:
    """Drivers are rebuilt for every poll; slow groups must still be read only when due."""
    p = poller(tmp_path, "sim://daly?cells=4&seed=1", read_info=True, info_interval=3600.0)
    first = p.run()
    second = p.run()
    assert first.complete and second.complete
    assert first.requests == second.requests + 7  # identity and thresholds, once
    assert any(pt.measurement == "daly_info" for pt in first.points)
    assert not any(pt.measurement == "daly_info" for pt in second.points)


def test_self_metrics_point_counts_errors_by_kind(tmp_path: Path) -> None:
    p = poller(tmp_path, "sim://daly?fault=checksum&fault_rate=0.3&seed=4")
    result = p.run()
    metrics = [pt for pt in result.points if pt.measurement == "bmslogger"]
    assert len(metrics) == 1
    fields = metrics[0].fields
    assert metrics[0].tags == {"device": "bank", "plugin": "daly"}
    assert fields["errors_checksum"] == p.counters.get("checksum") > 0
    assert fields["poll_ok"] is result.complete
    assert fields["poll_duration_s"] > 0


def test_busy_port_is_skipped_and_counted(tmp_path: Path) -> None:
    port = "sim://daly?cells=4"
    p = poller(tmp_path, port)
    with PortLock(port_identity(port), str(tmp_path / "locks"), 1.0):
        result = p.run()
    assert result.silent and not result.complete
    assert p.counters.get("port_busy") == 1
    assert "busy" in result.errors[0] or "held" in result.errors[0]


def test_unavailability_is_logged_once_and_recovery_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "ttyUSB9"
    p = poller(tmp_path, str(missing))
    caplog.set_level(logging.INFO, logger="bmslogger.runtime")
    for _ in range(3):
        assert p.run().silent
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "[bank] unavailable" in warnings[0].getMessage()
    assert str(missing) in warnings[0].getMessage()
    assert p.counters.get("port_unavailable") == 3
    # the adapter comes back (here: the port now names a simulator)
    p.device = DeviceConfig(**{**p.device.__dict__, "port": "sim://daly?cells=4"})
    assert p.run().complete
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos.count("[bank] available again") == 1
