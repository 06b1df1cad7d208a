"""The real EMUS driver against the EMUS simulator through a real pseudo-terminal.

Every test opens the pty with `bmslogger.transport.open_transport` (pyserial underneath),
so requests, deadlines, retries and the parser meet real byte timing at 57600 baud.
Values are compared with exactly what the simulator holds (`sim.state`); the CLI tests
run `bmslogger simulate emus` and `bmslogger read emus` as real processes.
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

from bmslogger.errors import ConfigError, WriteRefusedError
from bmslogger.model import DeviceConfig, FieldSpec, PollResult
from bmslogger.options import resolve_options
from bmslogger.plugins.emus import DEVICE
from bmslogger.plugins.emus import protocol as p
from bmslogger.plugins.emus.driver import EmusDriver
from bmslogger.plugins.emus.fields import FIELDS
from bmslogger.plugins.emus.simulator import EmusSimulator
from bmslogger.simline import serve_pty
from bmslogger.transport import open_transport

SETTINGS = DEVICE.port_defaults
ALL = ",".join(p.READS)


class DataCorruptingSim(EmusSimulator):
    """The checksum fault, but damaging a value digit: a driver that used a bad line would
    report a wrong value, which the comparison with `state` would catch."""

    def corrupt_checksum(self, data: bytes) -> bytes:
        at = data.find(b",") + 1
        if at <= 0 or at >= len(data) - 6:
            return super().corrupt_checksum(data)
        digit = data[at:at + 1]
        return data[:at] + (b"1" if digit != b"1" else b"2") + data[at + 1:]


class NoBalancingDetailSim(EmusSimulator):
    """A unit that never answers BB2."""

    def answer(self, name: str, arg: str = "?") -> bytes | None:
        return None if name == "BB2" else super().answer(name, arg)


def make_sim(cls: type[EmusSimulator] = EmusSimulator, **options: Any) -> EmusSimulator:
    options.setdefault("drift", False)
    return cls(resolve_options(cls.all_options(), options))


def device(retries: int = 2, timeout_s: float | None = None, audit_log: str = "",
           **options: Any) -> DeviceConfig:
    return DeviceConfig(
        name="g1", plugin="emus", port="pty", interval_s=10.0, port_settings=SETTINGS,
        options=resolve_options(DEVICE.options, options), timeout_s=timeout_s,
        retries=retries, audit_log=audit_log,
    )


@contextlib.contextmanager
def bench(sim: EmusSimulator, **driver_options: Any) -> Iterator[EmusDriver]:
    with serve_pty(sim) as server:
        transport = open_transport(server.path, SETTINGS)
        try:
            yield EmusDriver(device(**driver_options), transport)
        finally:
            transport.close()


# --- what the simulator holds, as the driver should report it ------------------------------


def expected(s: Any, status_flags: int) -> dict[str, dict[str, Any]]:
    """Every field by point key (see `key`), from the simulator's raw state."""
    cv, i_da = s.total_cv, s.reported_current_da
    volts = [p.cell_voltage(r) for r in s.cells_raw]
    lo, hi = min(s.cells_raw), max(s.cells_raw)
    avg = round(sum(s.cells_raw) / len(s.cells_raw))
    tlo, thi = min(s.module_temps_raw), max(s.module_temps_raw)
    out: dict[str, dict[str, Any]] = {
        "battery": {
            "voltage_v": cv / 100, "current_a": i_da / 10, "charging": i_da > 0,
            "power_w": round((cv / 100) * (i_da / 10), 2), "soc_pct": s.soc_raw / 100,
            "remaining_ah": round(s.charge_c / 3600, 3),
            "full_ah": round(s.capacity_c / 3600, 3),
            "cell_min_v": min(volts), "cell_max_v": max(volts),
            "cell_avg_v": p.cell_voltage(avg),
            "cell_delta_v": round(p.cell_voltage(hi) - p.cell_voltage(lo), 2),
            "temp_min_c": tlo - 100.0, "temp_max_c": thi - 100.0,
            "balancing_cells": sum(1 for r in s.balancing_raw if r),
        },
        "alarm": {
            **{n: bool(s.protection_flags >> i & 1) for i, n in enumerate(p.PROTECTION_BITS)},
            **{n: bool(s.reduction_flags >> i & 1) for i, n in enumerate(p.REDUCTION_BITS)
               if n},
            "active_count": bin(s.protection_flags).count("1") + bin(s.reduction_flags).count(
                "1"),
            "unknown_count": bin(s.reduction_flags >> 6).count("1"),
        },
        "emus_pack": {
            "cells": s.cells, "module_temp_avg_c": round(
                sum(s.module_temps_raw) / s.cells) - 100.0,
            "balancing_min_pct": p.balancing_rate(min(s.balancing_raw)),
            "balancing_max_pct": p.balancing_rate(max(s.balancing_raw)),
            "balancing_avg_pct": p.balancing_rate(round(sum(s.balancing_raw) / s.cells)),
            "balancing_threshold_v": p.cell_voltage(s.balancing_threshold_raw),
            "cell_sensors": s.sensors, "charge_c": s.charge_c, "capacity_c": s.capacity_c,
        },
        "emus_charging": {
            "stage": p.STAGES[s.stage], "stage_code": s.stage,
            "error": p.CHARGING_ERRORS[s.error], "error_code": s.error,
            "error_param": s.error_param, "stage_duration_s": s.stage_duration_s,
            "chargers": s.chargers, "charger_status": s.charger_status,
            "set_voltage_v": s.set_voltage_dv / 10, "set_current_a": s.set_current_da / 10,
            "actual_voltage_v": s.actual_voltage_dv / 10,
            "actual_current_a": s.actual_current_da / 10,
        },
        "emus_flags": {
            "status_flags": status_flags, "protection_flags": s.protection_flags,
            "reduction_flags": s.reduction_flags,
            **{n: bool(status_flags >> i & 1) for i, n in enumerate(p.STATUS_BITS)},
        },
        "emus_pins": {
            "pin_flags": s.pin_flags,
            **{n: bool(s.pin_flags >> i & 1) for i, n in enumerate(p.PIN_FUNCTIONS)},
            **{f"outputs_{i}": v for i, v in enumerate(s.outputs, 1)},
            "inputs_1": s.inputs,
        },
        "emus_distance": dict(zip(
            [k for k, _, _ in p.LAYOUTS["DT1"]],
            [v / d for v, d in zip(s.dt1, (10, 100, 10, 100, 1, 1, 10, 100, 1, 1, 10, 100))])),
        "emus_info": {
            "hardware": s.hardware, "serial": s.serial, "firmware": s.firmware,
            "clock": s.clock.strftime("%Y-%m-%dT%H:%M:%S"), "uptime_s": s.uptime_s,
        },
        "emus_can": {
            "current_sensor": p.CAN_STATUS[s.current_sensor], "field_2": s.cg1_field2,
            **{k: v for n, (cells, status) in enumerate(s.can_groups, 1) for k, v in (
                (f"group{n}_cells", cells), (f"group{n}_status", p.CAN_STATUS[status]))},
        },
        "emus_resets": {k: v for n, (t, fl) in enumerate(s.resets, 1) for k, v in (
            (f"reset{n}_time", p.timestamp(t)), (f"reset{n}_flags", fl))},
    }
    if s.sensors:
        out["emus_pack"].update(
            cell_temp_min_c=min(s.sensor_temps_raw) - 100.0,
            cell_temp_max_c=max(s.sensor_temps_raw) - 100.0,
            cell_temp_avg_c=round(sum(s.sensor_temps_raw) / s.sensors) - 100.0)
    for n, raw in enumerate(s.cells_raw, 1):
        out[f"cell:{n}"] = {"voltage_v": p.cell_voltage(raw),
                            "balancing": s.balancing_raw[n - 1] > 0,
                            "temperature_c": s.module_temps_raw[n - 1] - 100.0}
        out[f"emus_cell:{n}"] = {"balancing_pct": p.balancing_rate(s.balancing_raw[n - 1])}
    for n, raw in enumerate(s.sensor_temps_raw, 1):
        out[f"temperature:{n}"] = {"temperature_c": raw - 100.0}
    for sid, (value, info, t) in s.statistics.items():
        name, scale = p.STATISTICS[sid]
        out[f"emus_statistic:{name}"] = {"raw": value, "value": float(scale(value)),
                                         "info": info, "time": p.timestamp(t)}
    for seq, code, data, _t in s.events:
        out[f"emus_event:{seq}"] = {"sequence": seq, "code": code,
                                    "event": p.EVENT_NAMES[code], "data": data}
    return out


def key(measurement: str, tags: dict[str, str], fields: dict[str, Any]) -> str:
    if measurement in ("cell", "emus_cell"):
        return f"{measurement}:{tags['cell']}"
    if measurement == "temperature":
        return f"temperature:{tags['sensor']}"
    if measurement == "emus_statistic":
        return f"emus_statistic:{tags['statistic']}"
    if measurement == "emus_event":
        return f"emus_event:{fields['sequence']}"
    return measurement


def assert_matches(points: list[dict[str, Any]], want: dict[str, dict[str, Any]],
                   skip: tuple[str, ...] = ()) -> set[str]:
    """Every emitted value equals the simulator's; returns the point keys compared."""
    seen = set()
    for point in points:
        assert point["tags"]["device"] and point["tags"]["plugin"] == "emus"
        k = key(point["measurement"], point["tags"], point["fields"])
        seen.add(k)
        for name, value in point["fields"].items():
            if name in skip:
                continue
            assert value == want[k][name], (k, name, value, want[k][name])
            assert type(value) is type(want[k][name]), (k, name, value)
    return seen


def check(result: PollResult, sim: EmusSimulator, skip: tuple[str, ...] = ()) -> set[str]:
    return assert_matches([pt.to_json() for pt in result.points],
                          expected(sim.state, sim.status_flags), skip)


# --- clean polls ---------------------------------------------------------------------------


@pytest.mark.parametrize("cells", [8, 16, 24])
def test_request_mode_reports_exactly_what_the_simulator_holds(cells):
    sim = make_sim(cells=cells, cell_sensors=cells // 4, protection_flags=0x0802,
                   reduction_flags=0x41)
    sim.state.current_da = 87  # charging: balancing and a charging stage
    sim._shape(0.0)
    with bench(sim, sentences=list(p.READS)) as driver:
        result = driver.poll()
    assert result.errors == [] and result.complete
    assert result.requests == result.answered == len(p.READS)
    seen = check(result, sim)
    assert len([k for k in seen if k.startswith("cell:")]) == cells
    assert len([k for k in seen if k.startswith("temperature:")]) == cells // 4
    assert {"battery", "alarm", "emus_pack", "emus_charging", "emus_flags", "emus_pins",
            "emus_distance", "emus_info", "emus_can", "emus_resets"} <= seen
    assert len([k for k in seen if k.startswith("emus_statistic:")]) == len(p.STATISTICS)
    battery = next(pt for pt in result.points if pt.measurement == "battery")
    assert battery.fields["current_a"] == 8.7 and battery.fields["balancing_cells"] > 0
    alarm = next(pt for pt in result.points if pt.measurement == "alarm")
    assert alarm.fields["charge_overcurrent"] is False and alarm.fields["cell_overheat"]
    assert alarm.fields["active_count"] == 4 and alarm.fields["unknown_count"] == 1
    # group lines: exactly ceil(cells/8) per sentence came back and were asked once
    assert sim.requests_received["BV2"] == 1 and driver.counters.snapshot() == {}
    assert sim.writes_received == []


@pytest.mark.parametrize("cells", [8, 16, 24])
def test_broadcast_mode_listens_and_sends_nothing(cells):
    sim = make_sim(cells=cells, mode="broadcast", broadcast_period="0.3s")
    with bench(sim, mode="broadcast", broadcast_period="0.3s") as driver:
        start = time.monotonic()
        result = driver.poll()
        took = time.monotonic() - start
    assert result.errors == [] and result.complete and result.requests == 8
    seen = check(result, sim)
    assert {"battery", "alarm", "emus_pack", "emus_charging", "emus_distance",
            "emus_pins"} <= seen
    pack = next(pt for pt in result.points if pt.measurement == "emus_pack")
    assert pack.fields["cells"] == cells and "cell_sensors" in pack.fields  # BT3 kept
    assert sim.request_log == type(sim.request_log)() and sim.writes_received == []
    assert not sim.ignored
    assert took < 0.3 + 0.7  # one period at most, loosely


def test_broadcast_mode_hearing_nothing_is_a_silent_poll_after_one_period():
    sim = make_sim()  # request mode: never broadcasts
    with bench(sim, mode="broadcast", broadcast_period="0.2s") as driver:
        start = time.monotonic()
        result = driver.poll()
        took = time.monotonic() - start
    assert result.silent and result.points == [] and "nothing heard" in result.errors[0]
    assert 0.2 <= took < 0.8
    assert sim.request_log == type(sim.request_log)()


def test_255_cells_deadline_scales_with_the_expected_bytes():
    sim = make_sim(cells=255, cell_sensors=0)
    with bench(sim, sentences=["BV1", "BT1", "BB1", "BV2", "BT2", "BB2"]) as driver:
        start = time.monotonic()
        result = driver.poll()
        took = time.monotonic() - start
    assert result.complete, result.errors
    seen = check(result, sim)
    assert len([k for k in seen if k.startswith("cell:")]) == 255
    assert driver.counters.get("timeout") == 0
    wire = SETTINGS.wire_time(3 * 32 * 36)
    assert took < wire + 1.5


@pytest.mark.parametrize("pipeline", [True, False])
def test_cell_count_comes_from_bv1_and_the_cells_option_overrides(pipeline):
    sim = make_sim(cells=20)
    with bench(sim, sentences=["BV2"], pipeline=pipeline) as driver:
        result = driver.poll()
    assert result.complete and list(sim.request_log) == ["BV1", "BV2"]
    assert len([pt for pt in result.points if pt.measurement == "cell"]) == 20
    check(result, sim)
    sim2 = make_sim(cells=20)
    with bench(sim2, sentences=["BV2"], cells=20, pipeline=pipeline) as driver:
        result = driver.poll()
    assert result.complete and list(sim2.request_log) == ["BV2"]


def test_no_cell_sensors_skips_bt4_without_error():
    sim = make_sim(cell_sensors=0)
    with bench(sim, sentences=["BT3", "BT4"]) as driver:
        result = driver.poll()
    assert result.complete and "BT4" not in sim.request_log
    assert not [pt for pt in result.points if pt.measurement == "temperature"]


def test_empty_fields_give_no_values_and_group_sentences_are_skipped():
    sim = make_sim(no_cell_comm=True)
    with bench(sim, sentences=["BV1", "BC1", "BV2"]) as driver:
        result = driver.poll()
    assert "BV2: skipped, cell count unknown" in result.errors[0]
    battery = next(pt for pt in result.points if pt.measurement == "battery")
    assert set(battery.fields) == {"soc_pct", "remaining_ah", "full_ah"}


def test_extra_fields_of_newer_firmware_are_tolerated():
    sim = make_sim(extra_fields=3)
    with bench(sim) as driver:
        result = driver.poll()
    assert result.complete
    check(result, sim)


def test_unknown_sentence_option_is_a_config_error():
    sim = make_sim()
    with pytest.raises(ConfigError, match="SC1"), bench(sim, sentences=["BV1", "SC1"]):
        pass


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault,kinds",
    [
        ("checksum", ("checksum",)),
        ("truncate", ("framing",)),
        ("noise", ("framing", "checksum")),
        ("wrong", ("timeout",)),
    ],
)
def test_faults_are_rejected_counted_and_retried(fault, kinds):
    sim = make_sim(DataCorruptingSim, cells=16, fault=[fault], fault_rate=0.3, seed=11)
    with bench(sim, retries=3, sentences=list(DEVICE_DEFAULT)) as driver:
        results = [driver.poll() for _ in range(2)]
    counts = driver.counters.snapshot()
    assert sum(counts.get(k, 0) for k in kinds) > 0, counts
    assert sum(sim.faults_injected.values()) > 0
    for result in results:
        assert result.answered >= result.requests - 1, result.errors
        check(result, sim)
    if fault != "noise":
        assert counts.get("retry", 0) > 0


DEVICE_DEFAULT = ("BV1", "BB1", "BT1", "BC1", "CV1", "ST1", "BV2", "BB2", "BT2")


def test_slow_answers_fit_the_deadline():
    sim = make_sim(fault=["slow"], fault_rate=1.0)
    with bench(sim, sentences=list(DEVICE_DEFAULT)) as driver:
        result = driver.poll()
    assert result.complete, result.errors
    assert driver.counters.get("timeout") == 0
    check(result, sim)


def test_silent_unit_gives_a_silent_result_quickly():
    sim = make_sim(fault=["silence"], fault_rate=1.0)
    with bench(sim) as driver:
        start = time.monotonic()
        result = driver.poll()
        took = time.monotonic() - start
    assert result.silent and result.points == []
    assert "silent" in result.errors[-1]
    assert driver.counters.get("timeout") == 3 and driver.counters.get("retry") == 2
    assert took < 1.5


def test_late_answers_are_never_used_and_the_driver_recovers():
    sim = make_sim()
    sim.faults, sim.fault_rate = ("late",), 1.0
    with bench(sim, retries=1, sentences=list(DEVICE_DEFAULT)) as driver:
        first = driver.poll()
        sim.faults = ()
        results = []
        for _ in range(6):
            results.append(driver.poll())
            if results[-1].complete:
                break
    assert first.silent
    assert results[-1].complete
    for result in results:
        check(result, sim)


def test_partial_poll_keeps_what_was_read():
    sim = make_sim(NoBalancingDetailSim)
    with bench(sim, retries=1, sentences=list(DEVICE_DEFAULT)) as driver:
        result = driver.poll()
    assert result.requests == 9 and result.answered == 8
    assert len(result.errors) == 1 and result.errors[0].startswith("BB2")
    assert not result.complete and not result.silent
    cells = [pt for pt in result.points if pt.measurement == "cell"]
    assert len(cells) == 16 and all("balancing" not in pt.fields for pt in cells)
    check(result, sim)


def test_stale_bytes_before_a_poll_are_dropped():
    sim = make_sim()
    with bench(sim, sentences=["BV1", "BC1"]) as driver:
        driver.transport.write(p.request("ST1"))  # an answer nobody reads
        time.sleep(0.05)  # let it arrive before the poll (not a driver wait)
        result = driver.poll()
    assert result.complete and driver.counters.get("stale_bytes") > 0
    check(result, sim)


def test_tasks_read_statistics_and_events():
    sim = make_sim()
    with bench(sim) as driver:
        stats = driver.run_task("statistics")
        events = driver.run_task("events")
        with pytest.raises(KeyError):
            driver.run_task("nope")
    assert stats.complete and events.complete
    assert len(stats.points) == len(p.STATISTICS)
    check(stats, sim)
    check(events, sim)
    first = events.points[0]
    assert first.time_ns == (946_684_800 + sim.state.events[0][3]) * 10**9 + 1


# --- writes ----------------------------------------------------------------------------------


def test_writes_refused_without_allow_writes_and_nothing_sent(tmp_path):
    sim = make_sim()
    audit = tmp_path / "audit.log"
    with bench(sim, audit_log=str(audit)) as driver:
        for name, value in (("set_soc", "50"), ("reset_current_sensor", ""),
                            ("clear_events", ""), ("factory_defaults", ""), ("reset", "")):
            with pytest.raises(WriteRefusedError, match="allow_writes = true"):
                driver.write(name, value, confirmed=True)
        with pytest.raises(WriteRefusedError, match="no command"):
            driver.write("SC1", "50")
    assert sim.writes_received == [] and not audit.exists()


def test_writes_with_allow_writes_are_sent_acknowledged_and_audited(tmp_path):
    sim = make_sim(capacity=100.0, password="pw")
    audit = tmp_path / "audit.log"
    with bench(sim, allow_writes=True, password="pw", audit_log=str(audit)) as driver:
        answer = driver.write("set_soc", "80")
        assert answer["acknowledged"] is True
        assert (answer["old_soc_pct"], answer["new_soc_pct"]) == (60.0, 80.0)
        assert sim.state.soc_raw == 8000
        for bad in ("150", "-1", "full"):
            with pytest.raises(WriteRefusedError, match="0-100"):
                driver.write("set_soc", bad)
        with pytest.raises(WriteRefusedError, match="--confirm"):
            driver.write("factory_defaults", "")
        with pytest.raises(WriteRefusedError, match="--confirm"):
            driver.write("reset", "")
        assert driver.write("login", "")["logged_in"] is True
        with pytest.raises(WriteRefusedError, match="password option"):
            driver.write("login", "pw")
        driver.write("clear_statistics", "")
        driver.write("reset", "", confirmed=True)
        assert driver.write("factory_defaults", "", confirmed=True)["acknowledged"]
        with pytest.raises(WriteRefusedError, match="takes no value"):
            driver.write("clear_events", "now")
    assert [w[0] for w in sim.writes_received] == ["SC1", "PW1", "SS1", "RS1", "FD1"]
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    sent = [r["command"] for r in records if "error" not in r["answer"]]
    assert sent == ["set_soc", "login", "clear_statistics", "reset", "factory_defaults"]
    refused = [(r["command"], r["value"]) for r in records if "error" in r["answer"]]
    assert refused == [("set_soc", "150"), ("set_soc", "-1"), ("set_soc", "full"),
                       ("login", "***"), ("clear_events", "now")]
    assert records[0]["answer"]["new_soc_pct"] == 80.0
    assert '"pw"' not in audit.read_text() and "PW1,pw" not in audit.read_text()


def test_dry_run_shows_the_sentence_and_sends_nothing():
    sim = make_sim()
    with bench(sim, password="secret") as driver:
        plan = driver.write("set_soc", "79", dry_run=True)
        login = driver.write("login", "", dry_run=True)
    assert plan["dry_run"] and plan["sentence"] == f"SC1,1EDC,{p.crc8(b'SC1,1EDC,'):02X}"
    assert "secret" not in json.dumps(login) and login["sentence"] == "PW1,***,**"
    assert sim.writes_received == []


# --- schema ----------------------------------------------------------------------------------


def test_output_uses_only_declared_fields_and_types_and_readme_lists_them():
    sim = make_sim(cells=9, cell_sensors=3)
    sim.state.current_da = 50
    sim._shape(0.0)
    with bench(sim, sentences=list(p.READS)) as driver:
        result = driver.poll()
    assert result.complete
    declared = {(f.measurement, f.field): f for f in FIELDS}
    types = {"float": float, "int": int, "bool": bool, "str": str}
    emitted = set()
    for point in result.points:
        for name, value in point.fields.items():
            spec: FieldSpec = declared[(point.measurement, name)]
            assert type(value) is types[spec.type], (point.measurement, name, value)
            emitted.add((point.measurement, name))
    assert emitted == set(declared)  # a full poll emits every declared field
    with open(DEVICE.readme, encoding="utf-8") as f:
        readme = f.read()
    for spec in FIELDS:
        assert f"| `{spec.measurement}` | `{spec.field}` | {spec.type} |" in readme, spec
    for option in DEVICE.options:
        assert f"`{option.name}`" in readme
    for write in DEVICE.writes:
        assert f"`{write.name}`" in readme
    assert [w.name for w in DEVICE.writes if w.needs_confirmation] == ["reset",
                                                                       "factory_defaults"]


def test_sample_config_validates_when_uncommented():
    from bmslogger.config import parse_config
    from bmslogger.manager import build_registry

    with open(DEVICE.sample_config, encoding="utf-8") as f:
        sample = f.read()
    lines = []
    for line in sample.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("# ") and not stripped.startswith("##"):
            line = line[:len(line) - len(stripped)] + stripped[2:]
        lines.append(line)
    text = "\n".join(lines).replace("${EMUS_PASSWORD}", "x") + "\n[sinks.stdout]\n"
    cfg = parse_config(text, "<sample>", build_registry())
    first, second = cfg.devices
    assert first.port == "usb:0403:6001" and first.options["mode"] == "request"
    assert second.port.startswith("sim://emus?cells=24&mode=broadcast")
    assert dict(first.tasks) == {"statistics": "0 3 * * *", "events": "*/30 * * * *"}


# --- the command line ------------------------------------------------------------------------


def _bmslogger(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, BMSLOGGER_CONFIG=os.devnull)
    return subprocess.run([sys.executable, "-m", "bmslogger", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_read_through_a_sim_url():
    out = _bmslogger("read", "emus", "--port", "sim://emus?cells=16&drift=false",
                     "--format", "json")
    assert out.returncode == 0, out.stderr
    points = json.loads(out.stdout)
    sim = make_sim(cells=16)
    seen = assert_matches(points, expected(sim.state, sim.status_flags))
    assert len([k for k in seen if k.startswith("cell:")]) == 16


@contextlib.contextmanager
def simulate(*options: str) -> Iterator[str]:
    args = [sys.executable, "-m", "bmslogger", "simulate", "emus"]
    for option in options:
        args += ["--option", option]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/"), proc.stderr.read()
        yield path
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("mode", ["request", "broadcast"])
@pytest.mark.parametrize("cells", [8, 16, 24])
def test_cli_read_against_bmslogger_simulate(mode, cells):
    options = [f"cells={cells}", "drift=false", f"mode={mode}", "broadcast_period=0.3s",
               "cell_sensors=2"]
    read_options = ["--option", f"mode={mode}", "--option", "broadcast_period=0.3s"]
    if mode == "request":
        read_options += ["--option", f"sentences={ALL}"]
    with simulate(*options) as path:
        out = _bmslogger("read", "emus", "--port", path, "--format", "json", *read_options)
    assert out.returncode == 0, out.stderr
    points = json.loads(out.stdout)
    raw = dict(o.split("=", 1) for o in options)
    sim = EmusSimulator(resolve_options(EmusSimulator.all_options(), raw, from_text=True))
    seen = assert_matches(points, expected(sim.state, sim.status_flags))
    if mode == "request":
        assert len([k for k in seen if k.startswith("cell:")]) == cells
        assert {"emus_info", "emus_can", "emus_resets"} <= seen
        assert len([k for k in seen if k.startswith("emus_event:")]) == len(sim.state.events)
    else:
        assert {"battery", "emus_pack", "emus_distance", "emus_charging"} <= seen
    battery = next(pt for pt in points if pt["measurement"] == "battery")
    assert battery["fields"]["voltage_v"] == sim.state.total_cv / 100


def test_cli_set_refused_without_allow_writes():
    out = _bmslogger("set", "emus", "set_soc", "50", "--port", "sim://emus?drift=false")
    assert out.returncode != 0
    assert "allow_writes = true" in out.stderr and "Traceback" not in out.stderr
