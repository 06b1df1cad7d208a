"""The conversation with one TriStar MPPT through modbus-tk, and the points it yields.

Reads (reference §4): the poll is ONE request, 80 words from 0x0000 (scaling constants,
every live value and today's logger), so V_PU/I_PU always come with the values they
scale. The daily task reads that block again plus the EEPROM charge settings (34 words
from 0xE000), the EEPROM totals (13 from 0xE080) and the identity (14 from 0xE0C0).

modbus-tk does all Modbus framing; this module sets what modbus-tk gets wrong by default
(reference §13):

* RtuMaster replaces the port timeout with 3.5 character times (4 ms at 9600 baud), so the
  timeout is set before every request from the wire time of request and answer plus the
  unit's turnaround and a margin (or the device's ``timeout``);
* RtuMaster would open and close the port; here it borrows the port the core opened under
  the port lock and never closes it;
* Master.execute takes one process-wide lock; the port lock already serialises each line,
  so requests pass ``threadsafe=False`` and units on different ports poll in parallel;
* modbus-tk does not check the answer's function code or register count: both are checked
  here, so a valid frame answering another request is rejected, never decoded;
* Modbus TCP: the unit closes the connection after every answer, so the driver connects,
  asks one thing, and closes — per request (``modbus-tcp://host[:port]``, unit id from the
  ``unit`` option, several units behind one gateway are several devices).

Each failed attempt is counted by kind (``timeout``, ``checksum``, ``framing``,
``unexpected``, ``device_error``, ``transport``) and retried up to the device's
``retries``; an exception answer from the unit (e.g. 02, illegal address) is not retried.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence

from modbus_tk.exceptions import ModbusError, ModbusInvalidResponseError
from modbus_tk.modbus_rtu import RtuMaster
from modbus_tk.modbus_tcp import ModbusInvalidMbapError, TcpMaster

from bmslogger.driver import Driver
from bmslogger.errors import (
    DeviceReportedError,
    NoAnswerError,
    PortUnavailableError,
    ProtocolError,
    TransportError,
)
from bmslogger.model import FieldValue, Point, PollResult

from . import protocol as p
from .fields import setting_field

#: beyond the computed wait: scheduling jitter on a busy Pi, USB adapter latency
MARGIN_S = 0.1
#: TCP: allowance for the network and the unit's network processor
TCP_MARGIN_S = 0.5
DEFAULT_TCP_PORT = 502


class _PortRtuMaster(RtuMaster):
    """RtuMaster on a port the core opened (under the port lock) and will close itself.

    Keeps the last raw answer so failures can be told apart and the function code
    checked, which modbus-tk does not do."""

    last_response: bytes = b""

    def _do_open(self) -> None:
        """The core opened the port."""

    def _do_close(self) -> bool:
        return True  # the core closes the port; a garbage-collected master must not

    def _recv(self, expected_length: int = -1) -> bytes:
        self.last_response = b""
        self.last_response = bytes(super()._recv(expected_length))
        return self.last_response


class _TcpMaster(TcpMaster):
    """TcpMaster that keeps the last raw answer (see `_PortRtuMaster`)."""

    last_response: bytes = b""

    def hang_up(self) -> None:
        """Close the socket, also after a failed connect (where `close` does nothing)."""
        self._do_close()
        self._is_opened = False

    def _recv(self, expected_length: int = -1) -> bytes:
        self.last_response = b""
        self.last_response = bytes(super()._recv(expected_length))
        return self.last_response


def parse_modbus_tcp_url(url: str) -> tuple[str, int]:
    """``modbus-tcp://host[:port]`` → (host, port); PortUnavailableError if malformed."""
    rest = url.split("://", 1)[1].split("?", 1)[0].rstrip("/")
    host, sep, number = rest.rpartition(":")
    if not sep:
        host, number = number, str(DEFAULT_TCP_PORT)
    host = host.strip("[]")
    if not host or not number.isdigit() or not 0 < int(number) < 65536:
        raise PortUnavailableError(f"{url}: expected modbus-tcp://host[:port]")
    return host, int(number)


class _Failure(Exception):
    """One failed attempt: the counter kind and what happened."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class TriStarDriver(Driver):
    """Polls a TriStar MPPT; see the module docstring for the reads and the rules."""

    def setup(self) -> None:
        opts = self.options
        self.unit: int = int(opts.get("unit", 1))
        self.function: int = int(opts.get("function", 4))
        self.settings = self.device.port_settings
        self.tcp: tuple[str, int] | None = None
        self._rtu: _PortRtuMaster | None = None
        transport = self.transport
        url = transport.url if transport is not None else self.device.port
        if url.startswith("modbus-tcp://"):
            self.tcp = parse_modbus_tcp_url(url)
        elif transport is not None:
            port = transport.serial
            if port is None:
                raise PortUnavailableError(f"{url}: no serial line to talk Modbus RTU on")
            # t0 from our settings: the sim:// line has no baudrate attribute to read
            self._rtu = _PortRtuMaster(port, t0=self.settings.wire_time(1))
            self._rtu.handle_local_echo = bool(opts.get("local_echo", False))

    # --- one read ----------------------------------------------------------------------------

    def timeout_for(self, count: int) -> float:
        """Seconds to wait for the answer to a read of `count` words: the request (8 bytes)
        and the answer (5 + 2·count bytes) on the wire, the unit's turnaround, a margin;
        the device's ``timeout`` replaces it when set."""
        if self.device.timeout_s:
            return float(self.device.timeout_s)
        wire = self.settings.wire_time(8) + self.settings.wire_time(5 + 2 * count)
        margin = TCP_MARGIN_S if self.tcp else MARGIN_S
        return wire + self.settings.turnaround_s + margin

    def read_words(self, start: int, count: int, label: str) -> tuple[int, ...]:
        """`count` words from `start`, retried per the device's ``retries``.

        Raises NoAnswerError (no valid answer), DeviceReportedError (the unit answered
        with a Modbus exception), TransportError (a TCP unit refused every connection)."""
        tries = 1 + max(0, int(self.device.retries))
        failures: list[str] = []
        connect_failures = 0
        for attempt in range(1, tries + 1):
            if attempt > 1:
                self.counters.count("retry")
            try:
                values = self._attempt(start, count)
            except ModbusError as err:
                code = err.get_exception_code()
                self.counters.count(DeviceReportedError.kind)
                raise DeviceReportedError(
                    f"{label}: the unit answered Modbus exception {code:02d}"
                    f" ({_EXCEPTIONS.get(code, 'unknown')})"
                ) from None
            except _Failure as failure:
                self.counters.count(failure.kind)
                if failure.kind == "transport":
                    connect_failures += 1
                failures.append(str(failure))
                self.log.debug("%s: try %d: %s: %s", label, attempt, failure.kind, failure)
                continue
            return values
        if connect_failures == tries:
            raise TransportError(f"{label}: {failures[-1]}")
        raise NoAnswerError(f"{label}: no valid answer after {tries} tries ({failures[-1]})")

    def _attempt(self, start: int, count: int) -> tuple[int, ...]:
        timeout = self.timeout_for(count)
        if self.tcp is not None:
            return self._attempt_tcp(start, count, timeout)
        return self._attempt_rtu(start, count, timeout)

    def _attempt_rtu(self, start: int, count: int, timeout: float) -> tuple[int, ...]:
        master = self._rtu
        assert master is not None
        stale = self.transport.discard_input()
        if stale:
            self.counters.count("stale_bytes", len(stale))
            self.log.debug("discarded stale %s", stale.hex(" "))
        master.set_timeout(timeout)
        expected = 5 + 2 * count
        try:
            values = master.execute(self.unit, self.function, start, count, threadsafe=False)
        except ModbusError:
            raise
        except ModbusInvalidResponseError as err:
            failure = self._classify(str(err), master.last_response, expected)
            if master.last_response:
                self._drain()
            raise failure from None
        except struct.error:
            self._drain()
            raise _Failure("unexpected", "an answer of the wrong size") from None
        except (OSError, ValueError) as err:  # the port failed under modbus-tk
            raise TransportError(f"{self.transport.url}: {err}") from err
        try:
            self._check(master.last_response[1:2], values, count)
        except _Failure:
            self._drain()
            raise
        return tuple(values)

    def _drain(self) -> None:
        """After a broken answer, wait until the line is quiet (an RTU frame ends with
        3.5 character times of silence, plus slack for USB adapters and scheduling), so
        the rest of it cannot spoil the next request's answer. Bounded: a line that
        never stops talking is left after one answer's wire time."""
        silence = self.settings.wire_time(4) + 0.02
        deadline = time.monotonic() + self.timeout_for(p.MAX_READ_WORDS)
        drained = 0
        while time.monotonic() < deadline:
            chunk = self.transport.read(silence)
            if not chunk:
                break
            drained += len(chunk)
        if drained:
            self.counters.count("stale_bytes", drained)

    def _attempt_tcp(self, start: int, count: int, timeout: float) -> tuple[int, ...]:
        assert self.tcp is not None
        host, port = self.tcp
        master = _TcpMaster(host, port, timeout)
        try:
            try:
                master.open()
            except OSError as err:
                raise _Failure("transport", f"cannot connect to {host}:{port}: {err}") from None
            try:
                values = master.execute(self.unit, self.function, start, count,
                                        threadsafe=False)
            except ModbusError:
                raise
            except ModbusInvalidMbapError as err:
                raise _Failure("unexpected", f"MBAP header: {err}") from None
            except ModbusInvalidResponseError as err:
                if not master.last_response:
                    raise _Failure("timeout", "the unit closed without answering") from None
                raise _Failure("framing", str(err)) from None
            except struct.error:
                raise _Failure("unexpected", "an answer of the wrong size") from None
            except TimeoutError:
                heard = len(master.last_response)
                raise _Failure("timeout", f"no whole answer within {timeout:.2f} s"
                               f" ({heard} bytes)") from None
            except OSError as err:
                raise _Failure("transport", f"{host}:{port}: {err}") from None
        finally:
            master.hang_up()  # the unit hangs up after every answer anyway
        self._check(master.last_response[7:8], values, count)
        return tuple(values)

    def _check(self, function: bytes, values: Sequence[int], count: int) -> None:
        if function and function[0] != self.function:
            raise _Failure("unexpected", f"answer to function {function[0]}, "
                           f"asked {self.function}")
        if len(values) != count:
            raise _Failure("unexpected", f"{len(values)} words, asked {count}")

    @staticmethod
    def _classify(message: str, response: bytes, expected: int) -> _Failure:
        if not response:
            return _Failure("timeout", "no answer")
        if "address" in message:
            return _Failure("unexpected", message)
        if len(response) < expected and not (len(response) == 5 and response[1] & 0x80):
            return _Failure("framing", f"answer cut short: {len(response)} of {expected} bytes")
        if "CRC" in message:
            return _Failure("checksum", message)
        return _Failure("framing", message)

    # --- poll and task ------------------------------------------------------------------------

    def _read_ram(self, result: PollResult) -> p.Ram | None:
        result.requests += 1
        try:
            words = self.read_words(p.RAM_START, p.RAM_POLL_WORDS, "RAM 0x0000")
            ram = p.decode_ram(words)
        except (NoAnswerError, DeviceReportedError) as err:
            result.errors.append(str(err))
            return None
        except ProtocolError as err:
            self.counters.count(err.kind)
            result.errors.append(f"RAM 0x0000: {err}")
            return None
        result.answered += 1
        return ram

    def poll(self) -> PollResult:
        """One request: every live value, as charger, alarm and tristar_* points."""
        result = PollResult()
        now = self.clock()
        ram = self._read_ram(result)
        if ram is not None:
            result.points.extend(self.live_points(ram, now))
        return result

    def run_task(self, task: str) -> PollResult:
        """``daily``: today's logger values, the charge settings, identity and totals."""
        if task != "daily":
            return super().run_task(task)
        result = PollResult()
        now = self.clock()
        ram = self._read_ram(result)
        if ram is None:
            result.errors.append("daily: nothing else read without the scaling words")
            return result
        result.points.extend(self.daily_points(ram, now))
        blocks: dict[int, tuple[int, ...]] = {}
        for start, count, label in ((p.SETTINGS_START, p.SETTINGS_WORDS, "settings 0xE000"),
                                    (p.EEPROM_STATS_START, p.EEPROM_STATS_WORDS,
                                     "EEPROM totals 0xE080"),
                                    (p.IDENTITY_START, p.IDENTITY_WORDS, "identity 0xE0C0")):
            result.requests += 1
            try:
                blocks[start] = self.read_words(start, count, label)
            except (NoAnswerError, DeviceReportedError, TransportError) as err:
                result.errors.append(str(err))
                continue
            result.answered += 1
        tags = self.base_tags
        if p.SETTINGS_START in blocks:
            values = p.decode_settings(blocks[p.SETTINGS_START], ram.v_pu, ram.i_pu)
            kinds = {name: kind for _o, name, kind, _u in p.SETTINGS_MAP}
            fields: dict[str, FieldValue] = {
                setting_field(name, kinds[name]): value for name, value in values.items()
            }
            result.points.append(Point("tristar_settings", tags, fields, now))
        info: dict[str, FieldValue] = {"ver_sw": ram.ver_sw}
        if p.IDENTITY_START in blocks:
            ident = p.decode_identity(blocks[p.IDENTITY_START])
            info.update(serial=ident.serial, model=ident.model,
                        hardware_version=ident.hardware_version)
        if p.EEPROM_STATS_START in blocks:
            st = p.decode_eeprom_stats(blocks[p.EEPROM_STATS_START], ram.v_pu)
            info.update(
                ehourmeter_h=st.ehourmeter, eahc_r_ah=st.eahc_r, eahc_t_ah=st.eahc_t,
                ekwhc_r_kwh=float(st.ekwhc_r), ekwhc_t_kwh=float(st.ekwhc_t),
                evb_min_v=st.evb_min, evb_max_v=st.evb_max, eva_max_v=st.eva_max,
                etmr_eqcalendar_days=st.etmr_eqcalendar,
                etmr_batt_service_days=st.etmr_batt_service,
            )
        if len(info) > 1:
            result.points.append(Point("tristar_info", tags, info, now))
        return result

    # --- points -----------------------------------------------------------------------------------

    def live_points(self, ram: p.Ram, t: int) -> list[Point]:
        """The instantaneous groups: charger, alarm, tristar_adc, _temperatures, _status,
        _charger, _mppt."""
        tags = self.base_tags
        charger: dict[str, FieldValue] = {
            "battery_voltage_v": ram.adc_vb_f_med,
            "array_voltage_v": ram.adc_va_f,
            "battery_current_a": ram.adc_ib_f_shadow,
            "array_current_a": ram.adc_ia_f_shadow,
            "output_power_w": ram.power_out,
            "input_power_w": ram.power_in,
            "heatsink_temperature_c": float(ram.t_hs),
            "battery_temperature_c": float(ram.t_batt),
            "charge_state": p.charge_state_name(ram.charge_state),
            "target_voltage_v": ram.vb_ref,
            "charging": ram.charge_state in p.CHARGING_STATES,
        }
        adc: dict[str, FieldValue] = {
            "adc_vbterm_f_v": ram.adc_vbterm_f, "adc_vbs_f_v": ram.adc_vbs_f,
            "adc_p12_f_v": ram.adc_p12_f, "adc_p3_f_v": ram.adc_p3_f,
            "adc_pmeter_f_v": ram.adc_pmeter_f, "adc_p18_f_v": ram.adc_p18_f,
            "adc_v_ref_v": ram.adc_v_ref,
        }
        temps: dict[str, FieldValue] = {"rts_connected": ram.t_rts is not None}
        if ram.t_rts is not None:
            temps["t_rts_c"] = float(ram.t_rts)
        dip = ram.dip
        status: dict[str, FieldValue] = {
            "v_pu_v": ram.v_pu, "i_pu_a": ram.i_pu, "ver_sw": ram.ver_sw,
            "adc_vb_f_1m_v": ram.adc_vb_f_1m, "adc_ib_f_1m_a": ram.adc_ib_f_1m,
            "vb_min_v": ram.vb_min, "vb_max_v": ram.vb_max, "hourmeter_h": ram.hourmeter,
            "fault_all": ram.fault_all, "alarm": ram.alarm, "dip_all": ram.dip_all,
            **{f"dip_switch_{k}": on for k, on in enumerate(dip.switches, 1)},
            "dip_system_voltage": dip.system_voltage,
            "dip_charging_program": dip.charging_program,
            "led_state": p.led_state_name(ram.led_state), "led_state_code": ram.led_state,
        }
        charger_extra: dict[str, FieldValue] = {
            "charge_state_code": ram.charge_state, "ahc_r_ah": ram.ahc_r, "ahc_t_ah": ram.ahc_t,
            "kwhc_r_kwh": float(ram.kwhc_r), "kwhc_t_kwh": float(ram.kwhc_t),
        }
        mppt: dict[str, FieldValue] = {
            "sweep_pin_max_w": ram.sweep_pin_max, "sweep_vmp_v": ram.sweep_vmp,
            "sweep_voc_v": ram.sweep_voc,
        }
        return [
            Point("charger", tags, charger, t),
            Point("alarm", tags, dict(p.alarm_fields(ram.fault_all, ram.alarm)), t),
            Point("tristar_adc", tags, adc, t),
            Point("tristar_temperatures", tags, temps, t),
            Point("tristar_status", tags, status, t),
            Point("tristar_charger", tags, charger_extra, t),
            Point("tristar_mppt", tags, mppt, t),
        ]

    def daily_points(self, ram: p.Ram, t: int) -> list[Point]:
        """Today's logger values (tristar_daily) and today's sticky faults and alarms
        (tristar_daily_alarm)."""
        tags = self.base_tags
        daily: dict[str, FieldValue] = {
            "vb_min_daily_v": ram.vb_min_daily, "vb_max_daily_v": ram.vb_max_daily,
            "va_max_daily_v": ram.va_max_daily, "ahc_daily_ah": ram.ahc_daily,
            "whc_daily_wh": float(ram.whc_daily), "flags_daily": ram.flags_daily,
            **{f"flag_{name}": on
               for name, on in p.bit_flags(ram.flags_daily, p.DAILY_FLAG_NAMES).items()},
            "pout_max_daily_w": ram.pout_max_daily,
            "tb_min_daily_c": float(ram.tb_min_daily), "tb_max_daily_c": float(ram.tb_max_daily),
            "fault_daily": ram.fault_daily, "alarm_daily": ram.alarm_daily,
            "time_ab_daily_s": ram.time_ab_daily, "time_eq_daily_s": ram.time_eq_daily,
            "time_fl_daily_s": ram.time_fl_daily,
        }
        return [
            Point("tristar_daily", tags, daily, t),
            Point("tristar_daily_alarm", tags,
                  dict(p.alarm_fields(ram.fault_daily, ram.alarm_daily)), t),
        ]


_EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
               4: "slave device failure", 6: "slave device busy",
               10: "gateway path unavailable", 11: "gateway target failed to respond"}
