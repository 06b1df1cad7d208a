"""The real Daly driver against the Daly simulator through a real pseudo-terminal.

Every test opens the pty with `bmslogger.transport.open_transport` (pyserial underneath),
so requests, deadlines, retries and the parser meet real byte timing at 9600 baud.
Values are compared with exactly what the simulator holds (`sim.state`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bmslogger.errors import WriteRefusedError
from bmslogger.model import DeviceConfig, FieldSpec, Point, PollResult
from bmslogger.options import resolve_options
from bmslogger.plugins.daly import DEVICE
from bmslogger.plugins.daly import protocol as p
from bmslogger.plugins.daly.driver import DalyDriver
from bmslogger.plugins.daly.fields import FIELDS
from bmslogger.plugins.daly.simulator import DalySimulator
from bmslogger.simline import serve_pty
from bmslogger.transport import open_transport

SETTINGS = DEVICE.port_defaults
README = DEVICE.readme


class DataCorruptingSim(DalySimulator):
    """The checksum fault, but damaging a value byte: a driver that used a bad frame
    would report a wrong value, which the comparison with `state` would catch."""

    def corrupt_checksum(self, data: bytes) -> bytes:
        frames = len(data) // p.FRAME_LEN
        if not frames:
            return super().corrupt_checksum(data)
        at = self.fault_random.randrange(frames) * p.FRAME_LEN + 5
        return data[:at] + bytes((data[at] ^ 0x04,)) + data[at + 1 :]


class NoBalancingSim(DalySimulator):
    """A unit that never answers 0x97."""

    def answer(self, data_id: int) -> bytes | None:
        return None if data_id == p.BALANCING else super().answer(data_id)


def make_sim(cls: type[DalySimulator] = DalySimulator, **options: Any) -> DalySimulator:
    options.setdefault("drift", False)
    return cls(resolve_options(cls.all_options(), options))


def device(retries: int = 2, timeout_s: float | None = None, **options: Any) -> DeviceConfig:
    return DeviceConfig(
        name="bank",
        plugin="daly",
        port="pty",
        interval_s=30.0,
        port_settings=SETTINGS,
        options=resolve_options(DEVICE.options, options),
        timeout_s=timeout_s,
        retries=retries,
    )


@contextlib.contextmanager
def bench(sim: DalySimulator, **driver_options: Any) -> Iterator[DalyDriver]:
    retries = driver_options.pop("retries", 2)
    with serve_pty(sim) as server:
        transport = open_transport(server.path, SETTINGS)
        try:
            yield DalyDriver(device(retries=retries, **driver_options), transport)
        finally:
            transport.close()


# --- what the simulator holds, as the driver should report it ------------------------------


def expected(sim: DalySimulator, invert: bool = False) -> dict[str, dict[str, Any]]:
    """Every field by measurement (cell/temperature fields keyed "cell:N"/"sensor:N")."""
    s = sim.state
    mv = s.cells_mv
    volts = [v / 1000 for v in mv]
    current = s.current_da / 10
    if invert:  # the unit's wire sign is the opposite of what the driver assumes
        current = -current
    voltage = s.voltage_dv / 10
    fail = p.Failures(s.alarm_bits, s.fault_code)
    hi, hi_n, lo, lo_n = s.cell_extremes()
    thi, thi_n, tlo, tlo_n = s.temp_extremes()
    out: dict[str, dict[str, Any]] = {
        "battery": {
            "voltage_v": voltage,
            "current_a": current,
            "power_w": round(voltage * current, 2),
            "soc_pct": s.soc_permille / 10,
            "remaining_ah": s.remaining_mah / 1000,
            "charging": s.state == 1,
            "cycles": s.cycles,
            "cell_min_v": min(volts),
            "cell_max_v": max(volts),
            "cell_avg_v": round(sum(volts) / len(volts), 4),
            "cell_delta_v": round(max(volts) - min(volts), 3),
            "temp_min_c": float(min(s.temps_c)),
            "temp_max_c": float(max(s.temps_c)),
            "balancing_cells": bin(s.balancing_bits & ((1 << s.cells) - 1)).count("1"),
        },
        "alarm": {
            **fail.flags,
            "active_count": len(fail.active) + len(fail.unknown),
            "unknown_count": len(fail.unknown),
            "fault_code": s.fault_code,
        },
        "daly_status": {
            "current_raw": s.current_raw,
            "acquired_voltage_v": s.acquired_dv / 10,
            "state": p.STATE_NAMES.get(s.state, "unknown"),
            "charge_mosfet": s.charge_mosfet,
            "discharge_mosfet": s.discharge_mosfet,
            "heartbeat": s.heartbeat,
            "cells": s.cells,
            "sensors": s.sensors,
            "charger_connected": s.charger_connected,
            "load_connected": s.load_connected,
            **{f"di{i}": bool(s.dio >> (i - 1) & 1) for i in range(1, 5)},
            **{f"do{i}": bool(s.dio >> (i + 3) & 1) for i in range(1, 5)},
            "cell_max_num": hi_n,
            "cell_min_num": lo_n,
            "temp_max_sensor": thi_n,
            "temp_min_sensor": tlo_n,
            "alarm_bits": s.alarm_bits,
        },
        "daly_info": {
            "rated_capacity_ah": s.capacity_mah / 1000,
            "nominal_cell_voltage_v": s.nominal_cell_mv / 1000,
            "production_date": "{:04d}-{:02d}-{:02d}".format(*s.production),
            "battery_code": s.battery_code,
            "software_version": s.software_version,
            "hardware_version": s.hardware_version,
        },
        "daly_settings": {
            **{
                f"cell_{k}_v": v / 1000
                for k, v in zip(("high_l1", "high_l2", "low_l1", "low_l2"), s.cell_thresholds_mv)
            },
            **{
                f"pack_{k}_v": v / 10
                for k, v in zip(("high_l1", "high_l2", "low_l1", "low_l2"), s.pack_thresholds_dv)
            },
        },
    }
    assert (hi, lo) == (max(mv), min(mv)) and (thi, tlo) == (max(s.temps_c), min(s.temps_c))
    for n, v in enumerate(mv, 1):
        out[f"cell:{n}"] = {
            "voltage_v": v / 1000,
            "balancing": bool(s.balancing_bits >> (n - 1) & 1),
        }
    for n, t in enumerate(s.temps_c, 1):
        out[f"temperature:{n}"] = {"temperature_c": float(t)}
    return out


def key(point: Point) -> str:
    if point.measurement == "cell":
        return f"cell:{point.tags['cell']}"
    if point.measurement == "temperature":
        return f"temperature:{point.tags['sensor']}"
    return point.measurement


def assert_matches(
    result: PollResult, sim: DalySimulator, skip: tuple[str, ...] = (), invert: bool = False
) -> int:
    """Every emitted value equals the simulator's; returns how many were compared."""
    want = expected(sim, invert)
    compared = 0
    for point in result.points:
        assert point.tags["device"] == "bank" and point.tags["plugin"] == "daly"
        assert point.tags["pack"] == str(sim.state.board)
        for name, value in point.fields.items():
            if name in skip:
                continue
            assert value == want[key(point)][name], (key(point), name, value)
            compared += 1
    return compared


# --- clean polls ---------------------------------------------------------------------------


def test_poll_reports_exactly_what_the_simulator_holds():
    sim = make_sim(cells=16, sensors=3, alarm_bits=(1 << 2) | (1 << 52), fault_code=4)
    sim.state.current_da = 87  # charging 8.7 A: balancing bits appear
    sim._shape(0.0)
    with bench(sim) as driver:
        result = driver.poll()
    assert result.errors == [] and result.complete
    assert result.requests == result.answered == 9
    assert list(sim.request_log) == [0x94, 0x90, 0x91, 0x92, 0x93, 0x95, 0x96, 0x97, 0x98]
    assert assert_matches(result, sim) > 100
    measurements = [pt.measurement for pt in result.points]
    assert measurements.count("cell") == 16 and measurements.count("temperature") == 3
    battery = next(pt for pt in result.points if pt.measurement == "battery")
    assert battery.fields["current_a"] == 8.7 and battery.fields["charging"] is True
    assert battery.fields["balancing_cells"] > 0
    alarm = next(pt for pt in result.points if pt.measurement == "alarm")
    assert alarm.fields["cell_volt_low_l1"] is True and alarm.fields["unknown_count"] == 1
    assert driver.counters.snapshot() == {}
    assert sim.writes_received == []


def test_output_uses_only_declared_fields_and_types_and_readme_lists_them():
    sim = make_sim(cells=5, sensors=9, extra_cell_slots=True)
    with bench(sim, read_info=True) as driver:
        result = driver.poll()
    assert result.complete and result.requests == 16
    declared = {(f.measurement, f.field): f for f in FIELDS}
    types = {"float": float, "int": int, "bool": bool, "str": str}
    emitted = set()
    for point in result.points:
        for name, value in point.fields.items():
            spec: FieldSpec = declared[(point.measurement, name)]
            assert type(value) is types[spec.type], (point.measurement, name, value)
            emitted.add((point.measurement, name))
    assert emitted == set(declared)  # a full poll with read_info emits every field
    assert_matches(result, sim)
    assert len([pt for pt in result.points if pt.measurement == "cell"]) == 5
    with open(README, encoding="utf-8") as f:
        readme = f.read()
    for spec in FIELDS:
        assert f"| `{spec.measurement}` | `{spec.field}` | {spec.type} |" in readme, spec
    for option in DEVICE.options:
        assert f"`{option.name}`" in readme


@pytest.mark.parametrize("mode", ["needed", "all", "auto"])
def test_all_sixteen_frames_units_are_read_without_waiting_for_the_extras(mode):
    sim = make_sim(cells=16, sensors=2, frames="all", reserved="stale")
    with bench(sim, frames=mode) as driver:
        first = driver.poll()
        second = driver.poll()
    for result in (first, second):
        assert result.complete
        assert_matches(result, sim, skip=("heartbeat",))
    # the extra frames were dropped by a discard or ignored by data ID, never used
    counts = driver.counters.snapshot()
    assert counts.get("stale_bytes", 0) + counts.get("unexpected", 0) > 0
    assert counts.get("timeout", 0) == 0
    assert driver.sends_all_frames is (mode != "needed")


def test_inverted_sign_unit_with_invert_current():
    sim = make_sim(sign="inverted")
    sim.state.current_da = -42
    with bench(sim, invert_current=True) as driver:
        result = driver.poll()
    battery = next(pt for pt in result.points if pt.measurement == "battery")
    assert battery.fields["current_a"] == -4.2
    assert_matches(result, sim)


def test_board_numbers_and_filler():
    sim = make_sim(board=5)
    with bench(sim, board=5, filler="0xAA") as driver:
        result = driver.poll()
    assert result.complete
    assert {pt.tags["pack"] for pt in result.points} == {"5"}
    assert_matches(result, sim)
    with bench(make_sim(board=5), board=1, retries=0) as driver:
        silent = driver.poll()
    assert silent.silent and silent.requests == 1 and silent.points == []


def test_auto_host_address_probes_0x40_then_0x80_and_remembers():
    sim = make_sim(hosts=[0x80])
    with bench(sim, host_address="auto", retries=0) as driver:
        first = driver.poll()
        assert driver.host == 0x80
        second = driver.poll()
    assert first.points and first.requests == 10 and first.answered == 9
    assert second.complete and second.requests == 9
    assert_matches(second, sim, skip=("heartbeat",))


def test_stale_answer_of_an_earlier_request_is_ignored():
    sim = make_sim()
    with bench(sim) as driver:
        driver.transport.write(p.read_request(p.CELL_EXTREMES))  # never read by anyone
        result = driver.poll()
    assert result.complete
    assert driver.counters.get("unexpected") >= 1
    assert_matches(result, sim)


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault,kinds,retried",
    [
        ("checksum", ("checksum",), True),
        ("truncate", ("framing",), True),
        # stray bytes before an answer cost nothing: the parser skips them, the answer stands
        ("noise", ("framing", "checksum"), False),
        ("wrong", ("unexpected",), True),
    ],
)
def test_faults_are_rejected_counted_and_retried(fault, kinds, retried):
    sim = make_sim(DataCorruptingSim, cells=16, sensors=2, fault=[fault], fault_rate=0.35, seed=7)
    with bench(sim, retries=3) as driver:
        results = [driver.poll() for _ in range(2)]
    counts = driver.counters.snapshot()
    assert sum(counts.get(k, 0) for k in kinds) > 0, counts
    assert (counts.get("retry", 0) > 0) is retried
    assert sum(sim.faults_injected.values()) > 0
    for result in results:
        assert result.answered >= 7  # retries recover nearly everything
        assert_matches(result, sim, skip=("heartbeat",))


def test_slow_answers_fit_the_deadline():
    sim = make_sim(fault=["slow"], fault_rate=1.0)
    with bench(sim) as driver:
        result = driver.poll()
    assert result.complete, result.errors
    assert driver.counters.get("timeout") == 0
    assert_matches(result, sim)


def test_silent_device_gives_a_silent_result_quickly():
    sim = make_sim(fault=["silence"], fault_rate=1.0)
    with bench(sim) as driver:
        start = time.monotonic()
        result = driver.poll()
        took = time.monotonic() - start
    assert result.silent and result.points == [] and result.requests == 1
    assert "silent" in result.errors[-1]
    assert driver.counters.get("timeout") == 3
    assert took < 1.5


def test_late_answers_are_never_used_and_the_driver_recovers():
    sim = make_sim()
    sim.faults, sim.fault_rate = ("late",), 1.0
    with bench(sim, retries=1) as driver:
        first = driver.poll()
        sim.faults = ()
        results = []
        for _ in range(8):
            results.append(driver.poll())
            if results[-1].complete:
                break
    assert first.silent
    assert results[-1].complete
    assert_matches(results[-1], sim, skip=("heartbeat",))
    for result in results:
        assert_matches(result, sim, skip=("heartbeat",))


def test_partial_poll_keeps_what_was_read():
    sim = make_sim(NoBalancingSim)
    with bench(sim, retries=1) as driver:
        result = driver.poll()
    assert result.requests == 9 and result.answered == 8
    assert len(result.errors) == 1 and "0x97" in result.errors[0]
    assert not result.complete and not result.silent
    cells = [pt for pt in result.points if pt.measurement == "cell"]
    assert len(cells) == 16 and all("balancing" not in pt.fields for pt in cells)
    battery = next(pt for pt in result.points if pt.measurement == "battery")
    assert "balancing_cells" not in battery.fields and "voltage_v" in battery.fields
    assert_matches(result, sim)


def test_echo_while_asleep_is_rejected_then_the_bms_wakes():
    sim = make_sim(sleep="echo")
    with bench(sim) as driver:
        asleep = driver.poll()
        sim.sleep_mode = "none"
        awake = driver.poll()
    assert asleep.silent and asleep.points == []
    assert driver.counters.get("unexpected") >= 3
    assert awake.complete
    assert_matches(awake, sim)


# --- writes ----------------------------------------------------------------------------------


def test_writes_refused_without_allow_writes_and_nothing_sent():
    sim = make_sim()
    with bench(sim) as driver:
        driver.poll()
        for name, value in (("set_soc", "50"), ("charge_mosfet", "off"), ("reset", "")):
            with pytest.raises(WriteRefusedError):
                driver.write(name, value, confirmed=True)
    assert sim.writes_received == []
    assert p.SET_SOC not in sim.requests_received


def test_writes_with_allow_writes():
    sim = make_sim(capacity=100.0)
    with bench(sim, allow_writes=True) as driver:
        answer = driver.write("set_soc", "80")
        assert answer["acknowledged"] is True and sim.state.soc_permille == 800
        answer = driver.write("charge_mosfet", "off")
        assert answer["acknowledged"] and answer["charge_mosfet"] is False
        assert sim.state.charge_mosfet is False
        with pytest.raises(WriteRefusedError):
            driver.write("discharge_mosfet", "off")  # needs confirmation
        assert driver.write("discharge_mosfet", "off", confirmed=True)["discharge_mosfet"] is False
        for bad in ("150", "-1", "full"):
            with pytest.raises(WriteRefusedError):
                driver.write("set_soc", bad)
        with pytest.raises(WriteRefusedError):
            driver.write("charge_mosfet", "maybe")
        driver.write("reset", "", confirmed=True)
        result = driver.poll()
    assert [w[0] for w in sim.writes_received] == [
        p.SET_SOC,
        p.CHARGE_MOSFET,
        p.DISCHARGE_MOSFET,
        p.RESET,
    ]
    assert sim.writes_received[0][1] == bytes(6) + (800).to_bytes(2, "big")
    status = next(pt for pt in result.points if pt.measurement == "daly_status")
    assert status.fields["charge_mosfet"] is False and status.fields["discharge_mosfet"] is False
