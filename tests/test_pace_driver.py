"""The real PACE driver against the PACE simulator through a real pseudo-terminal, a real
TCP socket, and the real ``bmslogger`` command.

Every test opens the line with `bmslogger.transport.open_transport` (pyserial underneath),
so requests, deadlines, retries and the parser meet real byte timing at 9600 baud. Values
are compared with exactly what the simulator holds (`sim.state`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bmslogger.config import parse_config
from bmslogger.errors import ConfigError, WriteRefusedError
from bmslogger.manager import build_registry
from bmslogger.model import DeviceConfig, FieldSpec, Point, PollResult
from bmslogger.options import resolve_options
from bmslogger.plugins.pace import DEVICE
from bmslogger.plugins.pace import protocol as p
from bmslogger.plugins.pace.driver import PaceDriver
from bmslogger.plugins.pace.fields import FIELDS
from bmslogger.plugins.pace.simulator import VARIANTS, PaceSimulator
from bmslogger.simline import serve_pty, serve_tcp
from bmslogger.stats import Counters
from bmslogger.transport import open_transport

SETTINGS = DEVICE.port_defaults


def make_sim(**options: Any) -> PaceSimulator:
    options.setdefault("drift", False)
    return PaceSimulator(resolve_options(PaceSimulator.all_options(), options))


def device(retries: int = 2, timeout_s: float | None = None, **options: Any) -> DeviceConfig:
    options.setdefault("request_gap", 0.0)
    return DeviceConfig(
        name="rack", plugin="pace", port="line", interval_s=30.0, port_settings=SETTINGS,
        options=resolve_options(DEVICE.options, options), timeout_s=timeout_s, retries=retries,
    )


@contextlib.contextmanager
def bench(sim: PaceSimulator, tcp: bool = False, counters: Counters | None = None,
          **driver_options: Any) -> Iterator[PaceDriver]:
    retries = driver_options.pop("retries", 2)
    server = serve_tcp(sim) if tcp else serve_pty(sim)
    with server:
        transport = open_transport(server.url if tcp else server.path, SETTINGS)
        try:
            yield PaceDriver(device(retries=retries, **driver_options), transport, counters)
        finally:
            transport.close()


# --- what the simulator holds, as the driver should report it -------------------------------


def expected(sim: PaceSimulator, n: int) -> dict[str, dict[str, Any]]:
    """Every field of pack n by measurement (cells and sensors keyed "cell:N"/"sensor:N")."""
    pk = sim.state.packs[n - 1]
    tail = sim.tail_bytes
    volts = [mv / 1000 for mv in pk.cells_mv]
    current = round(pk.current_raw / 100, 2)
    voltage = pk.voltage_mv / 1000
    temps = [round((t - 2730) / 10, 1) for t in pk.temps_raw]
    battery = {
        "voltage_v": voltage, "current_a": current, "charging": current > 0,
        "power_w": round(voltage * current, 2), "remaining_ah": pk.remaining / 100,
        "full_ah": pk.full / 100, "cycles": pk.cycles,
        "cell_min_v": min(volts), "cell_max_v": max(volts),
        "cell_avg_v": round(sum(volts) / len(volts), 4),
        "cell_delta_v": round(max(volts) - min(volts), 3),
        "temp_min_c": min(temps[:4]), "temp_max_c": max(temps[:4]),
        "balancing_cells": bin(pk.balance_bits & ((1 << len(volts)) - 1)).count("1"),
    }
    pack: dict[str, Any] = {
        "layout": sim.variant, "tail_bytes": tail, "p_value": sim.p_value,
        "mosfet_temperature_c": temps[4], "environment_temperature_c": temps[5],
    }
    if tail in (7, 20, 28):
        battery["soc_pct"], pack["soc_source"] = float(pk.soc_pct), "bms"
    else:
        battery["soc_pct"] = round(100 * pk.remaining / pk.full, 1)
        pack["soc_source"] = "computed"
    if tail >= 20:
        battery["soh_pct"], pack["soh_source"] = float(pk.soh_pct), "bms"
        pack.update(cumulative_charge_raw=pk.design, cumulative_discharge_raw=pk.design,
                    independent_voltage_v=pk.independent_voltage_mv / 1000,
                    independent_current_a=current)
    elif tail >= 6:
        battery["soh_pct"] = min(100.0, round(100 * pk.full / pk.design, 1))
        pack["soh_source"] = "computed"
    if tail >= 6:
        pack["design_ah"] = pk.design / 100
    if tail == 28:
        pack.update(summary_remaining_ah=pk.remaining / 100, summary_full_ah=pk.full / 100)
    status_rec = p.decode_status(bytes((0, 1)) + sim.status_record(pk))
    [st] = status_rec.packs
    alarm: dict[str, Any] = dict(st.alarms)
    alarm["active_count"] = sum(st.alarms.values())
    status: dict[str, Any] = dict(st.status)
    status.update(protect1=pk.protect1, protect2=pk.protect2, indicator=pk.indicator,
                  control=pk.control, fault=pk.fault, warn1=pk.warn1, warn2=pk.warn2,
                  balance_bits=pk.balance_bits,
                  cell_warning_count=sum(1 for w in pk.cell_warnings if w),
                  temp_warning_count=sum(1 for w in pk.temp_warnings if w),
                  extra_bytes=sim.status_extra,
                  **{f"extra_{i}": b for i, b in enumerate(st.extra, 1)})
    out = {"battery": battery, "pace_pack": pack, "alarm": alarm, "pace_status": status}
    for c, v in enumerate(volts, 1):
        out[f"cell:{c}"] = {"voltage_v": v, "balancing": bool(pk.balance_bits >> (c - 1) & 1)}
    for s, t in enumerate(temps, 1):
        out[f"sensor:{s}"] = {"temperature_c": t}
    return out


def key(point: Point) -> str:
    if point.measurement == "cell":
        return f"cell:{int(point.tags['cell'])}"
    if point.measurement == "temperature":
        return f"sensor:{point.tags['sensor']}"
    return point.measurement


def assert_matches(result: PollResult, sim: PaceSimulator, skip: tuple[str, ...] = ()) -> int:
    """Every emitted pack value equals the simulator's; returns how many were compared."""
    compared = 0
    wants = {}
    for point in result.points:
        assert point.tags["device"] == "rack" and point.tags["plugin"] == "pace"
        if point.measurement == "pace_info":
            continue
        n = int(point.tags["pack"])
        want = wants.setdefault(n, expected(sim, n))[key(point)]
        for name, value in point.fields.items():
            if name in skip:
                continue
            assert value == want[name], (n, key(point), name, value, want[name])
            assert type(value) is type(want[name]), (name, value)
            compared += 1
    return compared


def packs_of(result: PollResult) -> set[str]:
    return {pt.tags["pack"] for pt in result.points if "pack" in pt.tags}


# --- clean polls -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_three_packs_every_variant_give_every_packs_values(variant):
    sim = make_sim(packs=3, variant=variant, protect1=0x10, warn2=0x80)
    sim.state.packs[1].balance_bits = 0b1000_0000_0100_0001
    sim.state.packs[2].cell_warnings[4] = 2
    with bench(sim) as driver:
        result = driver.poll()
    assert result.errors == [] and result.complete
    assert result.requests == result.answered == 3
    assert list(sim.request_log) == [(0x90, None), (0x42, 0xFF), (0x44, 0xFF)]
    assert packs_of(result) == {"1", "2", "3"}
    assert assert_matches(result, sim) > 3 * 100
    cells = [pt for pt in result.points if pt.measurement == "cell"]
    assert len(cells) == 48
    alarm3 = next(pt for pt in result.points
                  if pt.measurement == "alarm" and pt.tags["pack"] == "3")
    assert alarm3.fields["cell_voltage_above_limit"] is True
    assert alarm3.fields["charge_overcurrent_protect"] and alarm3.fields["low_soc_warn"]
    assert driver.counters.snapshot() == {}


def test_pack_offline_costs_only_its_own_data():
    sim = make_sim(packs=3, offline=[2])
    with bench(sim) as driver:
        result = driver.poll()
    assert packs_of(result) == {"1", "3"}
    assert len(result.errors) == 1 and "pack 2" in result.errors[0]
    assert "offline" in result.errors[0]
    assert not result.complete and not result.silent
    assert_matches(result, sim)


def test_pack_offline_silent_when_asked_alone():
    sim = make_sim(packs=3, offline=[2], offline_reply="silent")
    with bench(sim, per_pack="always", packs=[1, 2, 3], retries=0) as driver:
        start = time.monotonic()
        result = driver.poll()
        took = time.monotonic() - start
    assert packs_of(result) == {"1", "3"}
    assert [e for e in result.errors if "pack 2" in e]
    assert result.requests == 5 and result.answered == 4  # no 0x44 for a silent pack
    assert_matches(result, sim)
    assert took < 3.0


def test_firmware_that_answers_ff_with_the_first_pack_only():
    sim = make_sim(packs=3, ff_first_only=True, variant="soc")
    with bench(sim) as driver:
        result = driver.poll()
    assert result.complete and packs_of(result) == {"1", "2", "3"}
    assert list(sim.request_log) == [(0x90, None), (0x42, 0xFF), (0x42, 2), (0x42, 3),
                               (0x44, 0xFF), (0x44, 2), (0x44, 3)]
    assert_matches(result, sim)
    sim.request_log.clear()
    with bench(sim, per_pack="never") as driver:
        never = driver.poll()
    assert packs_of(never) == {"1"}
    assert sum("pack 2" in e or "pack 3" in e for e in never.errors) == 2


def test_pack_list_and_zero_padded_tags():
    sim = make_sim(packs=3)
    with bench(sim, packs=[1, 3], pack_tag_width=2, cell_tag_width=2) as driver:
        result = driver.poll()
    assert result.complete and packs_of(result) == {"01", "03"}
    cells = sorted({pt.tags["cell"] for pt in result.points if pt.measurement == "cell"})
    assert cells[:3] == ["01", "02", "03"] and cells[-1] == "16"
    assert_matches(result, sim)


def test_per_pack_always_with_a_pack_list_skips_the_count():
    sim = make_sim(packs=2, variant="extended")
    with bench(sim, per_pack="always", packs=[1, 2]) as driver:
        result = driver.poll()
    assert result.complete
    assert list(sim.request_log) == [(0x42, 1), (0x42, 2), (0x44, 1), (0x44, 2)]
    assert_matches(result, sim)


def test_invert_current_and_temperature_offset():
    sim = make_sim(packs=1)
    sim.state.packs[0].current_raw = 1234
    with bench(sim, invert_current=True, temp_offset=2731) as driver:
        result = driver.poll()
    battery = next(pt for pt in result.points if pt.measurement == "battery")
    assert battery.fields["current_a"] == -12.34 and battery.fields["charging"] is False
    temps = [pt.fields["temperature_c"] for pt in result.points if pt.measurement == "temperature"]
    assert temps == [round((t - 2731) / 10, 1) for t in sim.state.packs[0].temps_raw]


def test_forced_extra_bytes_override_and_a_wrong_one_fails_clearly():
    sim = make_sim(packs=2, variant="enersol")
    with bench(sim, analog_extra_bytes=10) as driver:
        assert driver.poll().complete
    with bench(sim, analog_extra_bytes=8, retries=0) as driver:
        result = driver.poll()
    assert not any(pt.measurement == "battery" for pt in result.points)
    assert driver.counters.get("framing") >= 1 and result.errors


def test_fields_types_and_readme_agree():
    sim = make_sim(packs=2, variant="extended_summary")
    with bench(sim, read_info=True) as driver:
        result = driver.poll()
    assert result.complete, result.errors
    declared = {(f.measurement, f.field): f for f in FIELDS}
    types = {"float": float, "int": int, "bool": bool, "str": str}
    emitted = set()
    for point in result.points:
        for name, value in point.fields.items():
            spec: FieldSpec = declared[(point.measurement, name)]
            assert type(value) is types[spec.type], (point.measurement, name, value)
            emitted.add((point.measurement, name))
    assert emitted == set(declared)
    info = next(pt for pt in result.points if pt.measurement == "pace_info")
    assert info.fields == {
        "pack_count": 2, "software_version": sim.state.software_version,
        "bluetooth_name": sim.state.bluetooth_name, "bms_info": sim.state.bms_info,
        "pack_info": sim.state.pack_info, "bms_time": "2024-08-21 05:29:31",
    }
    assert "pack" not in info.tags
    assert_matches(result, sim)
    with open(DEVICE.readme, encoding="utf-8") as f:
        readme = f.read()
    for spec in FIELDS:
        assert f"| `{spec.measurement}` | `{spec.field}` | {spec.type} |" in readme, spec
    for option in DEVICE.options:
        assert f"`{option.name}`" in readme


def test_identity_is_read_once_per_interval():
    sim = make_sim(packs=1)
    counters = Counters()  # what the runtime keeps per device between polls
    with bench(sim, read_info=True, counters=counters) as driver:
        first = driver.poll()
    with bench(sim, read_info=True, counters=counters) as driver:
        second = driver.poll()
    assert any(pt.measurement == "pace_info" for pt in first.points)
    assert not any(pt.measurement == "pace_info" for pt in second.points)
    assert sum(1 for c, _ in sim.request_log if c == p.VERSION) == 1


# --- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault,kinds,retried", [
    ("checksum", ("checksum",), True),
    ("truncate", ("framing",), True),
    ("noise", ("framing", "checksum"), False),
    ("wrong", ("unexpected", "framing"), True),
])
def test_faults_are_rejected_counted_and_retried(fault, kinds, retried):
    sim = make_sim(packs=2, fault=[fault], fault_rate=0.4, seed=11)
    with bench(sim, retries=4) as driver:
        results = [driver.poll() for _ in range(2)]
    counts = driver.counters.snapshot()
    assert sum(counts.get(k, 0) for k in kinds) > 0, counts
    assert (counts.get("retry", 0) > 0) is retried
    for result in results:
        assert result.complete, result.errors
        assert_matches(result, sim)


def test_per_pack_wrong_answers_for_another_pack_are_rejected():
    sim = make_sim(packs=2, fault=["wrong"], fault_rate=0.5, seed=3)
    with bench(sim, per_pack="always", packs=[1, 2], retries=5) as driver:
        result = driver.poll()
    assert result.complete and driver.counters.get("unexpected") > 0
    assert_matches(result, sim)


def test_damaged_request_rtn_02_is_asked_again():
    sim = make_sim(packs=1)
    with bench(sim) as driver:
        real = driver.conversation.transport.write
        sent = []

        def damage_first(data: bytes) -> None:
            if not sent:
                data = data[:-2] + (b"0" if data[-2:-1] != b"0" else b"1") + data[-1:]
            sent.append(data)
            real(data)

        driver.conversation.transport.write = damage_first  # the line garbles one request
        result = driver.poll()
    assert result.complete and driver.counters.get("device_error") == 1
    assert_matches(result, sim)


def test_slow_answers_fit_the_deadline():
    sim = make_sim(packs=3, fault=["slow"], fault_rate=1.0)
    with bench(sim) as driver:
        result = driver.poll()
    assert result.complete, result.errors
    assert driver.counters.get("timeout") == 0
    assert_matches(result, sim)


def test_silent_battery_gives_a_silent_result_quickly():
    sim = make_sim(packs=3, fault=["silence"], fault_rate=1.0)
    with bench(sim) as driver:
        start = time.monotonic()
        result = driver.poll()
        took = time.monotonic() - start
    assert result.silent and result.points == [] and result.requests == 1
    assert "silent" in result.errors[-1]
    assert driver.counters.get("timeout") == 3
    assert took < 1.5


def test_late_answers_are_never_used_and_the_driver_recovers():
    sim = make_sim(packs=2)
    sim.faults, sim.fault_rate = ("late",), 1.0
    with bench(sim, retries=1) as driver:
        first = driver.poll()
        sim.faults = ()
        results = []
        for _ in range(12):  # answers queue behind the late ones for about two seconds
            results.append(driver.poll())
            if results[-1].complete:
                break
    assert first.silent
    assert results[-1].complete
    for result in results:
        assert_matches(result, sim)


def test_request_echo_from_a_bridge_is_ignored():
    sim = make_sim(packs=2, echo=True)
    with bench(sim) as driver:
        result = driver.poll()
    assert result.complete and driver.counters.get("unexpected") == 3
    assert_matches(result, sim)


def test_no_writes_exist_and_none_are_sent():
    sim = make_sim(packs=1)
    with bench(sim, retries=0) as driver:
        driver.poll()
        for name in ("discharge_fet", "set_soc", "buzzer"):
            with pytest.raises(WriteRefusedError):
                driver.write(name, "off", confirmed=True)
    assert sim.writes_received == []
    assert {c for c, _ in sim.request_log} <= {0x90, 0x42, 0x44}


# --- TCP bridge, config check, command line ---------------------------------------------------


def test_socket_url_through_a_real_tcp_socket():
    sim = make_sim(packs=3, variant="extended")
    with bench(sim, tcp=True) as driver:
        assert driver.transport.url.startswith("socket://127.0.0.1:")
        result = driver.poll()
    assert result.complete and packs_of(result) == {"1", "2", "3"}
    assert_matches(result, sim)


def _config(a: int, b: int) -> str:
    return f"""
[[devices.pace]]
name = "rack-a"
port = "/dev/ttyUSB0"
address = {a}

[[devices.pace]]
name = "rack-b"
port = "/dev/ttyUSB0"
address = {b}

[sinks.stdout]
"""


def test_two_pace_devices_on_one_bus_need_distinct_addresses(tmp_path):
    registry = build_registry()
    cfg = parse_config(_config(1, 2), str(tmp_path / "logger.toml"), registry)
    assert [d.options["address"] for d in cfg.devices] == [1, 2]
    with pytest.raises(ConfigError, match="address"):
        parse_config(_config(3, 3), str(tmp_path / "logger.toml"), registry)


def test_sample_config_validates(tmp_path):
    with open(DEVICE.sample_config, encoding="utf-8") as f:
        sample = f.read()
    text = "\n".join(line.replace("# ", "", 1) if line.startswith("  # ") else line
                     for line in sample.splitlines())
    parse_config(text + "\n[sinks.stdout]\n", str(tmp_path / "logger.toml"), build_registry())


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, BMSLOGGER_CONFIG="")
    return subprocess.run([sys.executable, "-m", "bmslogger", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=os.getcwd())


def _packs_in(stdout: str) -> set[str]:
    return {pt["tags"]["pack"] for pt in json.loads(stdout) if "pack" in pt["tags"]}


def test_cli_read_sim_offline_pack_exits_1_silent_exits_3(tmp_path):
    variant = "extended"
    ok = _cli("read", "pace", "--port", f"sim://pace?packs=3&variant={variant}",
              "--format", "json", "--lock-dir", str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert _packs_in(ok.stdout) == {"1", "2", "3"}
    partial = _cli("read", "pace", "--port", f"sim://pace?packs=3&variant={variant}&offline=2",
                   "--format", "json", "--lock-dir", str(tmp_path))
    assert partial.returncode == 1 and "pack 2" in partial.stderr
    assert _packs_in(partial.stdout) == {"1", "3"}
    silent = _cli("read", "pace", "--port", "sim://pace?packs=3&fault=silence",
                  "--format", "json", "--lock-dir", str(tmp_path))
    assert silent.returncode == 3 and json.loads(silent.stdout) == []


@pytest.mark.parametrize("how", ["tcp", "pty"])
def test_cli_read_through_bmslogger_simulate(how, tmp_path):
    args = [sys.executable, "-m", "bmslogger", "simulate", "pace", "--option", "packs=3",
            "--option", "variant=extended"]
    if how == "tcp":
        args += ["--tcp", "0"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        where = proc.stdout.readline().strip()
        assert where.startswith("socket://127.0.0.1:" if how == "tcp" else "/dev/"), where
        read = _cli("read", "pace", "--port", where, "--format", "json",
                    "--lock-dir", str(tmp_path))
        assert read.returncode == 0, read.stderr
        assert _packs_in(read.stdout) == {"1", "2", "3"}
        cells = [pt for pt in json.loads(read.stdout) if pt["measurement"] == "cell"]
        assert len(cells) == 48
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
