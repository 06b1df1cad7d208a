"""The real REC driver against the REC simulator through a real pseudo-terminal.

Every test opens the pty with `bmslogger.transport.open_transport` (pyserial underneath),
so requests, deadlines, retries and the parser meet real byte timing at 56000 baud.
Values are compared with exactly what the simulator holds (`sim.state`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bmslogger.errors import DeviceReportedError, WriteRefusedError
from bmslogger.model import DeviceConfig, FieldSpec, Point, PollResult
from bmslogger.options import resolve_options
from bmslogger.plugins.rec import DEVICE
from bmslogger.plugins.rec import protocol as p
from bmslogger.plugins.rec.driver import RecDriver
from bmslogger.plugins.rec.fields import FIELDS, SETTING_FIELDS
from bmslogger.plugins.rec.instructions import ERROR_NAMES, SETTABLE
from bmslogger.plugins.rec.simulator import RecSimulator
from bmslogger.simline import serve_pty
from bmslogger.simulator import SimulatedBus, Simulator
from bmslogger.transport import open_transport

SETTINGS = DEVICE.port_defaults


class DataCorruptingSim(RecSimulator):
    """The checksum fault, but damaging a data byte: a driver that used a bad frame
    would report a wrong value, which the comparison with `state` would catch."""

    def corrupt_checksum(self, data: bytes) -> bytes:
        at = len(data) - 5  # inside the last frame's payload
        return data[:at] + bytes((data[at] ^ 0x04,)) + data[at + 1:]


class NoRintSim(RecSimulator):
    def _answer(self, name: str, text: str) -> bytes | None:
        return None if name == "RINT" else super()._answer(name, text)


def make_sim(cls: type[RecSimulator] = RecSimulator, **options: Any) -> RecSimulator:
    options.setdefault("drift", False)
    return cls(resolve_options(cls.all_options(), options))


def device(retries: int = 2, audit_log: str = "", **options: Any) -> DeviceConfig:
    options.setdefault("rint_interval", 0.0)
    options.setdefault("info_interval", 0.0)
    return DeviceConfig(
        name="bank", plugin="rec", port="pty", interval_s=10.0, port_settings=SETTINGS,
        options=resolve_options(DEVICE.options, options), retries=retries,
        audit_log=audit_log,
    )


@contextlib.contextmanager
def bench(sim: Simulator, retries: int = 2, audit_log: str = "",
          **options: Any) -> Iterator[RecDriver]:
    with serve_pty(sim) as server:
        transport = open_transport(server.path, SETTINGS)
        try:
            yield RecDriver(device(retries, audit_log, **options), transport)
        finally:
            transport.close()


def r7(x: float) -> float:
    return float(f"{x:.7g}")


def expected(sim: RecSimulator) -> dict[str, dict[str, Any]]:
    """Every field by measurement, cell/sensor points keyed "cell:N" etc."""
    s = sim.state
    cells = [r7(v) for v in s.cells_v]
    temps = [r7(v) for v in s.temps_c]
    lcd1 = p.decode_lcd1(p.encode_floats(s.lcd1()))
    voltage, current = r7(lcd1.pack_v), r7(lcd1.current_a)
    lcd3 = p.decode_lcd3(s.lcd3())
    out: dict[str, dict[str, Any]] = {
        "battery": {
            "voltage_v": voltage, "current_a": current,
            "power_w": round(voltage * current, 2),
            "soc_pct": round(r7(lcd1.soc) * 100, 4), "soh_pct": round(r7(lcd1.soh) * 100, 4),
            "cell_min_v": min(cells), "cell_max_v": max(cells),
            "cell_avg_v": round(sum(cells) / len(cells), 5),
            "cell_delta_v": round(max(cells) - min(cells), 5),
            "temp_min_c": min(temps), "temp_max_c": max(temps),
            "full_ah": float(s.settings["CAPA"]), "cycles": int(s.settings["CYCL"]),
        },
        "alarm": {
            **{name: bool(s.error_code) and s.error_code == n for n, name in ERROR_NAMES.items()},
            "active_count": 1 if s.error_code else 0, "error_code": s.error_code,
            "error_unit": s.error_unit, "error_location": s.error_location,
        },
        "rec_status": {
            "bms_temperature_c": r7(s.bms_temp_c), "bms_units": 1,
            "lcd1_min_cell_v": r7(lcd1.min_cell_v), "lcd1_max_cell_v": r7(lcd1.max_cell_v),
            "lcd1_max_temperature_c": r7(lcd1.max_temp_c),
            "min_cell_unit": lcd3.min_cell_unit, "min_cell_number": lcd3.min_cell,
            "max_cell_unit": lcd3.max_cell_unit, "max_cell_number": lcd3.max_cell,
            "hottest_sensor_unit": lcd3.hottest_unit,
            "hottest_sensor_number": lcd3.hottest_sensor, "lcd3_ah": float(lcd3.ah),
        },
        "rec_info": {
            "identification": s.identification, "software_version": s.software_version,
            "hardware_version": s.hardware_version,
            "adc_reference_v": p.parse_number(p.format_number(s.adc_reference_v)),
        },
        "rec_settings": {
            field: (int(s.settings[name]) if SETTABLE[name].shape == "int"
                    else p.parse_number(p.format_number(s.settings[name])))
            for name, field in SETTING_FIELDS.items()
        },
    }
    for n, v in enumerate(cells, 1):
        out[f"cell:{n}"] = {"voltage_v": v}
    for n, t in enumerate(temps, 1):
        out[f"temperature:{n}"] = {"temperature_c": t}
    for n, ohm in enumerate(s.rint_ohm, 1):
        out[f"rec_cell:{n}"] = {"internal_resistance_ohm": r7(ohm)}
    return out


def key(point: Point) -> str:
    if point.measurement in ("cell", "rec_cell"):
        return f"{point.measurement}:{point.tags['cell']}"
    if point.measurement == "temperature":
        return f"temperature:{point.tags['sensor']}"
    return point.measurement


def assert_matches(result: PollResult, sim: RecSimulator) -> int:
    want = expected(sim)
    compared = 0
    for point in result.points:
        assert point.tags["device"] == "bank" and point.tags["plugin"] == "rec"
        assert point.tags["pack"] == str(sim.state.address)
        for name, value in point.fields.items():
            assert value == want[key(point)][name], (key(point), name, value)
            compared += 1
    return compared


# --- clean polls ---------------------------------------------------------------------------------


def test_poll_reports_exactly_what_the_simulator_holds():
    sim = make_sim(cells=16, sensors=3, error_code=2, error_location=5)
    with bench(sim) as driver:
        result = driver.poll()
    assert result.errors == [] and result.complete
    assert result.requests == result.answered == 13
    assert list(sim.request_log) == ["LCD1", "CELL", "PTEM", "BTEM", "ERRO", "LCD3", "RINT",
                                     "*IDN", "SWVR", "HWVR", "REFC", "CAPA", "CYCL"]
    assert assert_matches(result, sim) > 80
    alarm = next(pt for pt in result.points if pt.measurement == "alarm")
    assert alarm.fields["cell_voltage_low"] is True and alarm.fields["active_count"] == 1
    battery = next(pt for pt in result.points if pt.measurement == "battery")
    assert battery.fields["full_ah"] == 450.0 and battery.fields["cycles"] == 103
    assert [pt.measurement for pt in result.points].count("cell") == 16
    assert driver.counters.snapshot() == {}
    assert sim.writes_received == []


def test_output_uses_only_declared_fields_and_types_and_readme_lists_them():
    sim = make_sim(cells=5, sensors=2)
    sim.state.current_a = p.f32(-12.5)
    with bench(sim, read_settings=True) as driver:
        result = driver.poll()
    assert result.complete and result.requests == 13 + len(SETTING_FIELDS)
    declared = {(f.measurement, f.field): f for f in FIELDS}
    types = {"float": float, "int": int, "bool": bool, "str": str}
    emitted = set()
    for point in result.points:
        for name, value in point.fields.items():
            spec: FieldSpec = declared[(point.measurement, name)]
            assert type(value) is types[spec.type], (point.measurement, name, value)
            emitted.add((point.measurement, name))
    assert emitted == set(declared)
    assert_matches(result, sim)
    battery = next(pt for pt in result.points if pt.measurement == "battery")
    assert battery.fields["current_a"] == -12.5
    with open(DEVICE.readme, encoding="utf-8") as f:
        readme = f.read()
    for spec in FIELDS:
        assert f"| `{spec.measurement}` | `{spec.field}` | {spec.type} |" in readme, spec
    for option in DEVICE.options:
        assert f"`{option.name}`" in readme
    for write in DEVICE.writes:
        assert f"| `{write.name}` |" in readme


def test_caps_sign_and_slow_groups():
    sim = make_sim(cells=14, sensors=2, ptem_slots=4)
    sim.state.current_a = p.f32(3.25)
    with bench(sim, cells=12, sensors=2, invert_current=True, rint_interval=3600.0,
               info_interval=3600.0) as driver:
        first = driver.poll()
        # rebuilt for the next poll like the runtime does, with the same device counters
        second = RecDriver(driver.device, driver.transport, driver.counters).poll()
    measurements = [pt.measurement for pt in first.points]
    assert measurements.count("cell") == 12 and measurements.count("temperature") == 2
    assert measurements.count("rec_cell") == 12
    battery = next(pt for pt in first.points if pt.measurement == "battery")
    assert battery.fields["current_a"] == -3.25
    assert battery.fields["temp_max_c"] == r7(max(sim.state.temps_c))
    # the second poll skips RINT and the info group: they are not due yet
    assert second.requests == 6 and second.complete
    assert "rec_cell" not in [pt.measurement for pt in second.points]


def test_aa_and_55_bytes_inside_the_data():
    sim = make_sim(aa_values=True, cells=16)
    with bench(sim) as driver:
        result = driver.poll()
    assert result.complete and driver.counters.snapshot() == {}
    assert_matches(result, sim)


def test_several_units_on_one_bus_by_address():
    one, six = make_sim(address=1, cells=8), make_sim(address=6, cells=12)
    bus = SimulatedBus([one, six])
    with serve_pty(bus) as server, open_transport(server.path, SETTINGS) as line:
        results = {a: RecDriver(device(address=a), line).poll() for a in (1, 6)}
    for address, sim in ((1, one), (6, six)):
        assert results[address].complete
        assert_matches(results[address], sim)
        cells = [pt for pt in results[address].points if pt.measurement == "cell"]
        assert len(cells) == len(sim.state.cells_v)
    assert one.ignored["address"] == 13 and six.ignored["address"] == 13


# --- busy BMS and faults ----------------------------------------------------------------


def test_busy_bms_is_asked_again_and_answers():
    sim = make_sim(busy_rate=0.4, busy="mixed", seed=1)
    with bench(sim, retries=3) as driver:
        results = [driver.poll() for _ in range(2)]
    counts = driver.counters.snapshot()
    assert sum(sim.busy_events.values()) > 0
    assert counts.get("timeout", 0) > 0 and counts.get("retry", 0) > 0
    for result in results:
        assert result.answered >= 11
        assert_matches(result, sim)


def test_lone_count_frame_is_retried():
    sim = make_sim(first_only_rate=0.5, seed=2)
    with bench(sim, retries=3) as driver:
        result = driver.poll()
    assert sim.busy_events["first_only"] > 0
    assert driver.counters.get("retry") > 0
    assert result.answered >= 12
    assert_matches(result, sim)


@pytest.mark.parametrize("fault,kinds,retried", [
    ("checksum", ("checksum",), True),
    ("truncate", ("framing",), True),
    ("noise", ("framing", "checksum"), False),
    ("wrong", ("unexpected",), True),
])
def test_faults_are_rejected_counted_and_retried(fault, kinds, retried):
    sim = make_sim(DataCorruptingSim, cells=16, fault=[fault], fault_rate=0.3, seed=11)
    with bench(sim, retries=3) as driver:
        results = [driver.poll() for _ in range(2)]
    counts = driver.counters.snapshot()
    assert sum(counts.get(k, 0) for k in kinds) > 0, counts
    assert (counts.get("retry", 0) > 0) is retried, counts
    assert sum(sim.faults_injected.values()) > 0
    for result in results:
        assert result.answered >= 10
        assert_matches(result, sim)


def test_slow_answers_fit_the_deadline():
    sim = make_sim(cells=16, fault=["slow"], fault_rate=1.0)
    with bench(sim) as driver:
        result = driver.poll()
    assert result.complete, result.errors
    assert driver.counters.get("timeout") == 0
    assert_matches(result, sim)


def test_silent_device_gives_a_silent_result_quickly():
    sim = make_sim(fault=["silence"], fault_rate=1.0)
    with bench(sim, retries=1) as driver:
        start = time.monotonic()
        result = driver.poll()
        took = time.monotonic() - start
    assert result.silent and result.points == [] and result.requests == 1
    assert "silent" in result.errors[-1]
    assert driver.counters.get("timeout") == 2
    # two tries, each followed by the late-answer drain (late_window, 0.8 s): no more
    assert took < 2.2


def test_late_answers_are_never_used_and_the_driver_recovers():
    sim = make_sim()
    sim.faults, sim.fault_rate = ("late",), 1.0
    with bench(sim, retries=1) as driver:
        first = driver.poll()
        sim.faults = ()
        results = [driver.poll() for _ in range(3)]
    assert first.silent
    assert results[-1].complete
    for result in results:
        assert_matches(result, sim)


def test_partial_poll_keeps_what_was_read():
    sim = make_sim(NoRintSim)
    with bench(sim, retries=1) as driver:
        result = driver.poll()
    assert result.requests == 13 and result.answered == 12
    assert len(result.errors) == 1 and "RINT" in result.errors[0]
    assert not result.complete and not result.silent
    assert "rec_cell" not in [pt.measurement for pt in result.points]
    assert_matches(result, sim)


class ErrorCapaSim(RecSimulator):
    """A unit that answers ERROR1 to CAPA?."""

    def _answer(self, name: str, text: str) -> bytes | None:
        if name == "CAPA":
            return p.text_answer(self.state.address, "ERROR1")
        return super()._answer(name, text)


def test_error_answer_is_a_device_error_not_a_value():
    sim = make_sim(ErrorCapaSim)
    with bench(sim) as driver:
        with pytest.raises(DeviceReportedError):
            driver.ask("CAPA")
        result = driver.poll()
    assert sim.requests_received["CAPA"] == 2  # an error answer is not asked again
    assert result.answered == result.requests - 1
    assert any("CAPA" in e and "ERROR1" in e for e in result.errors)
    assert driver.counters.get("device_error") == 1
    battery = next(pt for pt in result.points if pt.measurement == "battery")
    assert "full_ah" not in battery.fields


# --- writes --------------------------------------------------------------------------------


def test_writes_refused_without_allow_writes_and_nothing_sent():
    sim = make_sim()
    with bench(sim) as driver:
        driver.poll()
        for name, value in (("CHAR", "3.5"), ("SOCS", "0.5"), ("CAPA", "400")):
            with pytest.raises(WriteRefusedError):
                driver.write(name, value, confirmed=True)
    assert sim.writes_received == []


@pytest.mark.parametrize("name,value", [("CHAR", "4.31"), ("CHAR", "1.99"), ("TMIN", "-31"),
                                        ("CHEM", "6"), ("CHEM", "2.5"), ("CAPA", "abc"),
                                        ("CAPA", "nan"), ("EAVC", "0.0004")])
def test_out_of_range_sets_are_refused_before_any_byte(name, value, tmp_path):
    sim = make_sim()
    audit = tmp_path / "audit.log"
    with bench(sim, allow_writes=True, audit_log=str(audit)) as driver:
        with pytest.raises(WriteRefusedError):
            driver.write(name, value, confirmed=True)
        with pytest.raises(WriteRefusedError):
            driver.write(name, value, dry_run=True)
    assert sim.writes_received == [] and sum(sim.requests_received.values()) == 0
    record = json.loads(audit.read_text().splitlines()[0])
    assert record["command"] == name and "error" in record["answer"]


def test_set_is_read_back_and_audited(tmp_path):
    sim = make_sim()
    audit = tmp_path / "state" / "audit.log"
    with bench(sim, allow_writes=True, audit_log=str(audit)) as driver:
        answer = driver.write("CHAR", "3.55")
        assert answer["old"] == 3.58 and answer["new"] == 3.55 and answer["read_back"] == 3.55
        assert answer["answer"] == "SET"
        assert driver.write("CHEM", "4")["read_back"] == 4
        assert driver.write("IOJA", "0.0078", confirmed=True)["read_back"] == 0.0078
        with pytest.raises(WriteRefusedError):
            driver.write("SOCS", "0.5")  # needs confirmation
        assert driver.write("SOCS", "0.5", confirmed=True)["read_back"] == 0.5
    assert sim.state.settings["CHAR"] == 3.55 and sim.state.settings["CHEM"] == 4
    assert sim.writes_received == [("CHAR", "3.55"), ("CHEM", "4"), ("IOJA", "0.0078"),
                                   ("SOCS", "0.5")]
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    first = records[0]
    assert first["command"] == "CHAR" and first["value"] == "3.55"
    assert first["answer"]["old"] == 3.58 and first["answer"]["new"] == 3.55
    assert first["answer"]["read_back"] == 3.55 and first["time"].endswith("Z")


def test_writable_list_and_refused_by_the_bms(tmp_path):
    sim = make_sim()
    with bench(sim, allow_writes=True, writable=["BMIN"]) as driver:
        with pytest.raises(WriteRefusedError):
            driver.write("CHAR", "3.5")
        assert sim.writes_received == []
        # a value the table allows but this unit refuses: ERROR1, nothing assumed applied
        sim.state.settings["BMIN"] = 3.45

        def refuse(name: str, text: str) -> str:
            return "ERROR1"

        sim._set = refuse  # type: ignore[method-assign]
        with pytest.raises(DeviceReportedError, match="ERROR1"):
            driver.write("BMIN", "3.94")
    assert sim.state.settings["BMIN"] == 3.45


def test_dry_run_needs_no_line_and_sends_nothing():
    driver = RecDriver(device(address=1), None)  # type: ignore[arg-type]
    plan = driver.write("BMIN", "3.94", dry_run=True)
    assert plan["frame"] == "55 01 00 09 42 4d 49 4e 20 33 2e 39 34 c1 ea aa"
    assert plan["dry_run"] is True
    with pytest.raises(WriteRefusedError):
        driver.write("BMIN", "4.4", dry_run=True)
