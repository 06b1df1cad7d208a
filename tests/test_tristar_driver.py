"""The real TriStar driver (modbus-tk RtuMaster/TcpMaster) against the simulator through a
real pseudo-terminal and real TCP sockets: values equal what the simulator holds, every
shared fault, TCP hang-ups, several units behind one gateway, the CLI."""

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

from bmslogger.errors import TransportError
from bmslogger.model import DeviceConfig, Point, PollResult
from bmslogger.options import resolve_options
from bmslogger.plugins.tristar import DEVICE
from bmslogger.plugins.tristar import protocol as p
from bmslogger.plugins.tristar.driver import TriStarDriver
from bmslogger.plugins.tristar.fields import FIELDS, setting_field
from bmslogger.plugins.tristar.simulator import TriStarSimulator
from bmslogger.simline import serve_pty, serve_tcp
from bmslogger.transport import open_transport

SETTINGS = DEVICE.port_defaults


class DataCorruptingSim(TriStarSimulator):
    """The checksum fault damaging a value byte, not the CRC: a driver that used such a
    frame would report a wrong value, which the comparison with `state` catches."""

    def corrupt_checksum(self, data: bytes) -> bytes:
        if len(data) < 8 or self._framing == "tcp":
            return super().corrupt_checksum(data)
        return data[:5] + bytes((data[5] ^ 0x10,)) + data[6:]


def make_sim(cls: type[TriStarSimulator] = TriStarSimulator, **options: Any) -> TriStarSimulator:
    options.setdefault("drift", False)
    options.setdefault("start", "12:30")
    return cls(resolve_options(cls.all_options(), options))


def device(port: str = "pty", retries: int = 2, **options: Any) -> DeviceConfig:
    return DeviceConfig(name="mppt", plugin="tristar", port=port, interval_s=10.0,
                        port_settings=SETTINGS, options=resolve_options(DEVICE.options, options),
                        retries=retries)


@contextlib.contextmanager
def on_pty(sim: TriStarSimulator, **options: Any) -> Iterator[TriStarDriver]:
    with serve_pty(sim) as server:
        transport = open_transport(server.path, SETTINGS)
        try:
            yield TriStarDriver(device(**options), transport)
        finally:
            transport.close()


@contextlib.contextmanager
def on_tcp(sim: TriStarSimulator, **options: Any) -> Iterator[tuple[TriStarDriver, Any]]:
    with serve_tcp(sim) as server:
        host, port = server.address
        url = f"modbus-tcp://{host}:{port}"
        transport = open_transport(url, SETTINGS)
        yield TriStarDriver(device(url, **options), transport), server


# --- what the simulator holds, as the driver should report it -----------------------------------


def expected(state: Any, settings: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    s = state
    dip = p.DipSwitches(s.dip_all)
    out: dict[str, dict[str, Any]] = {
        "charger": {
            "battery_voltage_v": s.adc_vb_f_med, "array_voltage_v": s.adc_va_f,
            "battery_current_a": s.adc_ib_f_shadow, "array_current_a": s.adc_ia_f_shadow,
            "output_power_w": s.power_out, "input_power_w": s.power_in,
            "heatsink_temperature_c": float(s.t_hs), "battery_temperature_c": float(s.t_batt),
            "charge_state": p.charge_state_name(s.charge_state), "target_voltage_v": s.vb_ref,
            "charging": s.charge_state in (5, 6, 7, 8, 9),
        },
        "alarm": p.alarm_fields(s.fault_all, s.alarm),
        "tristar_adc": {
            "adc_vbterm_f_v": s.adc_vbterm_f, "adc_vbs_f_v": s.adc_vbs_f,
            "adc_p12_f_v": s.adc_p12_f, "adc_p3_f_v": s.adc_p3_f,
            "adc_pmeter_f_v": s.adc_pmeter_f, "adc_p18_f_v": s.adc_p18_f,
            "adc_v_ref_v": s.adc_v_ref,
        },
        "tristar_temperatures": {"rts_connected": s.t_rts is not None,
                                 **({"t_rts_c": float(s.t_rts)} if s.t_rts is not None else {})},
        "tristar_status": {
            "v_pu_v": s.v_pu, "i_pu_a": s.i_pu, "ver_sw": s.ver_sw,
            "adc_vb_f_1m_v": s.adc_vb_f_1m, "adc_ib_f_1m_a": s.adc_ib_f_1m,
            "vb_min_v": s.vb_min, "vb_max_v": s.vb_max, "hourmeter_h": s.hourmeter,
            "fault_all": s.fault_all, "alarm": s.alarm, "dip_all": s.dip_all,
            **{f"dip_switch_{k}": on for k, on in enumerate(dip.switches, 1)},
            "dip_system_voltage": dip.system_voltage,
            "dip_charging_program": dip.charging_program,
            "led_state": p.led_state_name(s.led_state), "led_state_code": s.led_state,
        },
        "tristar_charger": {
            "charge_state_code": s.charge_state, "ahc_r_ah": s.ahc_r, "ahc_t_ah": s.ahc_t,
            "kwhc_r_kwh": float(s.kwhc_r), "kwhc_t_kwh": float(s.kwhc_t),
        },
        "tristar_mppt": {"sweep_pin_max_w": s.sweep_pin_max, "sweep_vmp_v": s.sweep_vmp,
                         "sweep_voc_v": s.sweep_voc},
        "tristar_daily": {
            "vb_min_daily_v": s.vb_min_daily, "vb_max_daily_v": s.vb_max_daily,
            "va_max_daily_v": s.va_max_daily, "ahc_daily_ah": s.ahc_daily,
            "whc_daily_wh": float(s.whc_daily), "flags_daily": s.flags_daily,
            **{f"flag_{n}": on for n, on in p.bit_flags(s.flags_daily,
                                                        p.DAILY_FLAG_NAMES).items()},
            "pout_max_daily_w": s.pout_max_daily, "tb_min_daily_c": float(s.tb_min_daily),
            "tb_max_daily_c": float(s.tb_max_daily), "fault_daily": s.fault_daily,
            "alarm_daily": s.alarm_daily, "time_ab_daily_s": s.time_ab_daily,
            "time_eq_daily_s": s.time_eq_daily, "time_fl_daily_s": s.time_fl_daily,
        },
        "tristar_daily_alarm": p.alarm_fields(s.fault_daily, s.alarm_daily),
        "tristar_info": {
            "ver_sw": s.ver_sw, "serial": s.serial, "model": p.MODELS[s.model_code],
            "hardware_version": s.hardware_version, "ehourmeter_h": s.hourmeter,
            "eahc_r_ah": s.ahc_r, "eahc_t_ah": s.ahc_t, "ekwhc_r_kwh": float(s.kwhc_r),
            "ekwhc_t_kwh": float(s.kwhc_t), "evb_min_v": s.evb_min, "evb_max_v": s.evb_max,
            "eva_max_v": s.eva_max, "etmr_eqcalendar_days": s.etmr_eqcalendar,
            "etmr_batt_service_days": s.etmr_batt_service,
        },
    }
    if settings is not None:
        kinds = {name: kind for _o, name, kind, _u in p.SETTINGS_MAP}
        out["tristar_settings"] = {setting_field(k, kinds[k]): v for k, v in settings.items()}
    return out


def assert_matches(result: PollResult, sim: TriStarSimulator, unit: int | None = None) -> int:
    chosen = sim.units[unit] if unit is not None else sim.unit
    want = expected(chosen.state, chosen.settings())
    compared = 0
    for point in result.points:
        if point.measurement == "bmslogger":
            continue
        assert point.tags == {"device": "mppt", "plugin": "tristar"}
        assert dict(point.fields) == want[point.measurement], point.measurement
        compared += len(point.fields)
    return compared


def by_measurement(points: list[Point]) -> dict[str, Point]:
    return {pt.measurement: pt for pt in points}


# --- clean polls --------------------------------------------------------------------------------


@pytest.mark.parametrize("start,stage", [("03:00", "night"), ("09:00", "mppt"),
                                         ("12:30", "absorption"), ("16:00", "float")])
def test_poll_over_a_pty_reports_exactly_what_the_simulator_holds(start, stage):
    sim = make_sim(start=start)
    with on_pty(sim) as driver:
        result = driver.poll()
        # the 4 ms default of modbus-tk is gone: the timeout comes from the wire time
        assert driver._rtu is not None and driver._rtu.get_timeout() > 0.2
    assert result.complete and result.requests == result.answered == 1
    assert assert_matches(result, sim) > 90
    assert by_measurement(result.points)["charger"].fields["charge_state"] == stage
    assert sim.unit.requests_received == [(4, 0, 80)]  # one request for every live value
    assert sim.writes_received == []
    assert driver.counters.snapshot() == {}


def test_daily_task_reads_logger_settings_and_identity():
    sim = make_sim(start="23:58", fault_bits=0, alarm_bits=1 << 19)
    with on_pty(sim) as driver:
        result = driver.run_task("daily")
    assert result.complete and result.requests == 4
    assert [pt.measurement for pt in result.points] == [
        "tristar_daily", "tristar_daily_alarm", "tristar_settings", "tristar_info"]
    assert assert_matches(result, sim) > 80
    daily = by_measurement(result.points)["tristar_daily"].fields
    assert daily["whc_daily_wh"] > 1000 and daily["flag_entered_float"] is True
    assert daily["flag_alarm_occurred"] is True
    settings = by_measurement(result.points)["tristar_settings"].fields
    assert settings["ev_absorp_v"] == pytest.approx(28.8, abs=0.006)
    assert settings["ev_tempcomp_v_per_c"] < 0 and settings["emodbus_id"] == 1
    assert [r[1:] for r in sim.unit.requests_received] == [
        (0, 80), (0xE000, 34), (0xE080, 13), (0xE0C0, 14)]
    assert sim.writes_received == []
    with pytest.raises(KeyError):
        TriStarDriver(device(), None).run_task("weekly")  # type: ignore[arg-type]


def test_output_uses_only_declared_fields_and_types_and_readme_lists_them():
    sim = make_sim(rts=True, fault_bits=0x0008, alarm_bits=0x80001)
    with on_pty(sim) as driver:
        points = driver.poll().points + driver.run_task("daily").points
    declared = {(f.measurement, f.field): f for f in FIELDS}
    types = {"float": float, "int": int, "bool": bool, "str": str}
    emitted = set()
    for point in points:
        for name, value in point.fields.items():
            spec = declared[(point.measurement, name)]
            assert type(value) is types[spec.type], (point.measurement, name, value)
            emitted.add((point.measurement, name))
    assert emitted == set(declared)  # a poll and a daily task emit every field
    alarm = by_measurement(points)["alarm"].fields
    assert alarm["fault_battery_hvd"] and alarm["alarm_rts_open"]
    assert alarm["alarm_controller_was_reset"] and alarm["active_count"] == 3
    with open(DEVICE.readme, encoding="utf-8") as f:
        readme = f.read()
    for spec in FIELDS:
        assert f"| `{spec.measurement}` | `{spec.field}` | {spec.type} |" in readme, spec
    for option in DEVICE.options:
        assert f"`{option.name}`" in readme
    for option in TriStarSimulator.OPTIONS:
        assert f"`{option.name}`" in readme


def test_no_rts_and_function_3():
    sim = make_sim(start="03:00", rts=False)
    with on_pty(sim, function=3) as driver:
        result = driver.poll()
    temps = by_measurement(result.points)["tristar_temperatures"].fields
    assert temps == {"rts_connected": False}
    charger = by_measurement(result.points)["charger"].fields
    assert charger["battery_temperature_c"] == 25.0 and charger["battery_current_a"] < 0
    assert sim.unit.requests_received == [(3, 0, 80)]
    assert_matches(result, sim)


def test_unit_id_and_the_other_units_silence():
    sim = make_sim(units=[7])
    with on_pty(sim, unit=7) as driver:
        assert driver.poll().complete
    with on_pty(make_sim(units=[7]), unit=1, retries=0) as driver:
        start = time.monotonic()
        silent = driver.poll()
        assert time.monotonic() - start < 1.5
    assert silent.silent and silent.points == [] and "no valid answer" in silent.errors[0]
    assert driver.counters.get("timeout") == 1


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault,kinds", [
    ("checksum", ("checksum",)),
    ("truncate", ("framing", "checksum")),
    ("noise", ("checksum", "framing", "unexpected")),
    ("wrong", ("unexpected",)),
])
def test_faults_are_rejected_counted_and_retried(fault, kinds):
    sim = make_sim(DataCorruptingSim, fault=[fault], fault_rate=0.4, seed=3)
    with on_pty(sim, retries=4) as driver:
        results = [driver.poll() for _ in range(4)]
    counts = driver.counters.snapshot()
    assert sum(sim.faults_injected.values()) > 0
    assert sum(counts.get(k, 0) for k in kinds) > 0, counts
    assert counts.get("retry", 0) > 0
    # retries recover (five bad answers in a row are possible, and then nothing is kept)
    assert sum(r.complete for r in results) >= 3, [r.errors for r in results]
    for result in results:
        assert result.complete or result.points == []
        assert_matches(result, sim)


def test_slow_answers_fit_the_deadline():
    sim = make_sim(fault=["slow"])
    with on_pty(sim) as driver:
        result = driver.poll()
    assert result.complete and driver.counters.get("timeout") == 0
    assert_matches(result, sim)


def test_silent_unit_gives_a_silent_result_quickly():
    sim = make_sim(fault=["silence"])
    with on_pty(sim) as driver:
        start = time.monotonic()
        result = driver.poll()
        took = time.monotonic() - start
    assert result.silent and result.points == [] and result.requests == 1
    assert driver.counters.get("timeout") == 3 and driver.counters.get("retry") == 2
    assert took < 2.5


def test_late_answers_never_give_wrong_values_and_the_driver_recovers():
    sim = make_sim()
    sim.faults, sim.fault_rate = ("late",), 1.0
    with on_pty(sim, retries=1) as driver:
        first = driver.poll()
        sim.faults = ()
        later = [driver.poll() for _ in range(3)]
    assert first.silent
    assert later[-1].complete
    for result in later:
        assert_matches(result, sim)


def test_partial_daily_task_keeps_what_was_read():
    sim = make_sim()  # a unit whose identity range answers exception 02
    real = sim.unit.handle_pdu

    def refuse_identity(pdu: bytes, broadcast: bool = False) -> bytes:
        if pdu[0] in (3, 4) and int.from_bytes(pdu[1:3], "big") == p.IDENTITY_START:
            return bytes((pdu[0] | 0x80, 2))
        return real(pdu, broadcast)

    sim.unit.handle_pdu = refuse_identity  # type: ignore[method-assign]
    with on_pty(sim) as driver:
        result = driver.run_task("daily")
    assert result.requests == 4 and result.answered == 3 and not result.silent
    assert len(result.errors) == 1 and "exception 02" in result.errors[0]
    assert driver.counters.get("device_error") == 1 and driver.counters.get("retry") == 0
    info = by_measurement(result.points)["tristar_info"].fields
    assert "serial" not in info and "ehourmeter_h" in info
    assert "tristar_settings" in by_measurement(result.points)


# --- Modbus TCP ---------------------------------------------------------------------------------


def test_modbus_tcp_connects_per_request_and_survives_the_hang_up():
    sim = make_sim()
    with on_tcp(sim) as (driver, server):
        poll = driver.poll()
        daily = driver.run_task("daily")
    assert poll.complete and daily.complete
    assert server.clients_served == 5  # the unit hangs up: one connection per request
    assert_matches(poll, sim)
    assert_matches(daily, sim)


def test_several_units_behind_one_gateway_are_several_devices():
    sim = make_sim(units=[1, 2])
    with serve_tcp(sim) as server:
        url = "modbus-tcp://{}:{}".format(*server.address)
        results = {}
        for unit in (1, 2):
            driver = TriStarDriver(device(url, unit=unit), open_transport(url, SETTINGS))
            results[unit] = driver.poll()
    for unit in (1, 2):
        assert results[unit].complete
        assert_matches(results[unit], sim, unit=unit)
    assert results[1].points[0].fields != results[2].points[0].fields


@pytest.mark.parametrize("fault", ["checksum", "wrong", "truncate"])
def test_tcp_faults_are_rejected_and_retried(fault):
    sim = make_sim(fault=[fault], fault_rate=0.5, seed=5)
    with on_tcp(sim, retries=4) as (driver, _server):
        results = [driver.poll() for _ in range(3)]
    assert sum(sim.faults_injected.values()) > 0 and driver.counters.get("retry") > 0
    for result in results:
        assert result.complete
        assert_matches(result, sim)


def test_refused_tcp_connection_is_a_transport_error():
    driver = TriStarDriver(device("modbus-tcp://127.0.0.1:1", retries=1),
                           open_transport("modbus-tcp://127.0.0.1:1", SETTINGS))
    with pytest.raises(TransportError):
        driver.poll()
    assert driver.counters.get("transport") == 2


# --- the command line ---------------------------------------------------------------------------


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning:bmslogger"}
    return subprocess.run([sys.executable, "-m", "bmslogger", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_read_from_sim_url(tmp_path):
    out = run_cli("read", "tristar", "--port", "sim://tristar?start=16:00&drift=false",
                  "--format", "json", "--lock-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    points = {pt["measurement"]: pt["fields"] for pt in json.loads(out.stdout)}
    sim = make_sim(start="16:00")
    assert points["charger"] == expected(sim.state)["charger"]
    assert points["charger"]["charge_state"] == "float"


@contextlib.contextmanager
def simulate(*args: str) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "bmslogger", "simulate", "tristar", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


@pytest.mark.parametrize("how", ["pty", "tcp"])
def test_cli_read_through_bmslogger_simulate(how, tmp_path):
    opts = ["--option", "start=12:30", "--option", "drift=false"]
    with simulate(*opts, *(["--tcp", "0"] if how == "tcp" else [])) as where:
        port = where.replace("socket://", "modbus-tcp://") if how == "tcp" else where
        out = run_cli("read", "tristar", "--port", port, "--format", "json",
                      "--lock-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    points = {pt["measurement"]: pt["fields"] for pt in json.loads(out.stdout)}
    want = expected(make_sim(start="12:30").state)
    for measurement in ("charger", "tristar_adc", "tristar_status", "tristar_charger"):
        assert points[measurement] == want[measurement]
