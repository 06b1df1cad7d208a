"""``bmslogger watch``: the daemon's status file carries each device's latest values, and
the view shows them (pack voltage, current, SOC, cells, temperatures, alarms, sinks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bmslogger.config import parse_config
from bmslogger.manager import build_registry
from bmslogger.model import Point
from bmslogger.runtime import LoggerService
from bmslogger.status import assess, read_status, status_path
from bmslogger.watch import render, summarize

CONFIG = (
    '[logger]\nstate_dir = "state"\nspool_dir = "spool"\nlock_dir = "locks"\n'
    '[[devices.daly]]\nname = "bank"\nport = "sim://daly?cells=4&sensors=1"\n'
    '[[devices.tristar]]\nname = "mppt"\nport = "sim://tristar"\n'
    '[sinks.stdout]\n'
)


def test_summarize_keeps_the_glance_values() -> None:
    tags = {"device": "d", "plugin": "x", "pack": "2"}
    points = [
        Point("battery", tags, {"voltage_v": 53.1, "soc_pct": 80.0, "cycles": 3}, 1),
        Point("alarm", tags, {"cell_overvoltage": True, "charge_overcurrent": False,
                              "active_count": 1}, 1),
        Point("cell", {**tags, "cell": "1"}, {"voltage_v": 3.3}, 1),
    ]
    assert summarize(points) == {"packs": {"2": {"voltage_v": 53.1, "soc_pct": 80.0}},
                                 "alarms": {"2": ["cell_overvoltage"]}}


def test_status_file_carries_values_and_watch_shows_them(tmp_path: Path) -> None:
    (tmp_path / "logger.toml").write_text(CONFIG)
    registry = build_registry()
    config = parse_config(CONFIG, str(tmp_path / "logger.toml"), registry)
    service = LoggerService(config, registry)
    results, _ = service.once()
    assert all(r.complete for r in results), [r.errors for r in results]
    service.write_status()
    status = read_status(status_path(config.settings.state_dir))
    bank = status["devices"]["bank"]["values"]
    battery = next(p for p in results[0].points if p.measurement == "battery")
    assert bank["packs"]["1"]["voltage_v"] == battery.fields["voltage_v"]
    assert bank["packs"]["1"]["cell_delta_v"] == battery.fields["cell_delta_v"]
    mppt = status["devices"]["mppt"]["values"]["charger"]
    assert isinstance(mppt["battery_voltage_v"], float)

    screen = render(assess(status))
    row = next(line for line in screen.splitlines() if line.startswith("bank"))
    assert f"{battery.fields['voltage_v']:.2f}" in row
    assert f"{battery.fields['soc_pct']:.0f}%" in row
    assert next(line for line in screen.splitlines() if line.startswith("mppt"))
    assert "stdout" in screen.split("sinks:")[1]

    out = subprocess.run([sys.executable, "-m", "bmslogger", "watch", "-c",
                          str(tmp_path / "logger.toml"), "--count", "1"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"{battery.fields['voltage_v']:.2f}" in out.stdout
    assert "\x1b[2J" not in out.stdout  # no screen clearing into a pipe
