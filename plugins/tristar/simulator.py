"""A TriStar MPPT 60 on the other end of the line: a solar day, its registers, its quirks.

Built on the core simulator machinery (`bmslogger.simulator.Simulator`), so the shared
line faults, pty/TCP serving and ``sim://tristar`` come with it, and on modbus-tk's own
pieces for everything Modbus: `RtuQuery` checks request CRCs and builds RTU answers with
modbus-tk's CRC, `TcpQuery` does the MBAP header. Not on modbus-tk's server classes: they
read 0x03 and 0x04 from different stores, die under warnings-as-errors, accept functions
the device does not have and refuse 0x2B (reference §13); a device image answered here
avoids all of that.

What it reproduces (reference §12): one or several unit ids; 0x03 and 0x04 answered from
the same word image; every documented word served (reserved ones as 0), anything else
exception 02; reads of more than 125 words exception 03; 0x01/0x02/0x05 on the coil
table (set-only coils read 0, values other than 0x0000/0xFF00 exception 03), 0x06 on the
EEPROM charge settings and the manual-control words; 0x2B basic device identification;
0x0F/0x10/0x16/0x17 and others exception 01; broadcasts (unit 0) obeyed but unanswered.
Modbus RTU and Modbus TCP framing (``framing=auto`` tells them apart per request); on TCP
it hangs up after every answer, like the real -60 (``tcp_close``).

The day: the sun rises at 06:00 and sets at 20:00; the battery (24 V lead-acid by
default, a constant house load the controller does not see) charges in MPPT until the
absorption voltage, holds it for Et_absorp, then floats; at night the charger draws a
little from the battery. Counters grow, today's values restart at dawn, the hourmeter
counts. `state` (a `TriStarState`, engineering units) holds exactly what the registers
say — the driver's output can be compared with it value for value. ``start`` sets the
time of day the simulation starts at, ``speed`` how fast simulated time runs,
``drift=false`` freezes it. Faults and alarms on demand (``fault_bits``, ``alarm_bits``,
``rts``, ``stage``) or by writing `state` from a test.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime

from modbus_tk.modbus import ModbusInvalidRequestError
from modbus_tk.modbus_rtu import RtuQuery
from modbus_tk.modbus_tcp import ModbusInvalidMbapError, TcpQuery

from bmslogger.errors import ChecksumError, FramingError, ProtocolError
from bmslogger.options import Option, Options
from bmslogger.simulator import Simulator, Transmission

from . import PORT_DEFAULTS
from . import protocol as p

DAY = 86400.0
SUNRISE, SUNSET = 6 * 3600.0, 20 * 3600.0
#: simulated seconds per integration step
STEP_S = 60.0

STAGES = {"auto": None, "night": 3, "disconnect": 2, "mppt": 5, "absorption": 6, "float": 7,
          "equalize": 8}

OPTIONS: tuple[Option, ...] = (
    Option("units", "int_list", (1,), "Modbus unit ids served (several = units behind one "
           "Modbus TCP gateway or on one EIA-485 bus)", min=1, max=247),
    Option("framing", "choice", "auto", "request framing: rtu, tcp (MBAP) or auto (told apart "
           "per request)", choices=("auto", "rtu", "tcp")),
    Option("tcp_close", "bool", True, "hang up after every Modbus TCP answer, as the real "
           "unit does"),
    Option("start", "str", "now", "time of day the simulation starts at, HH:MM, or \"now\""),
    Option("speed", "float", 1.0, "simulated seconds per real second", min=0.0, max=100000.0),
    Option("drift", "bool", True, "values follow the simulated clock; false = frozen"),
    Option("stage", "choice", "auto", "force a charge stage instead of following the sun",
           choices=tuple(STAGES)),
    Option("battery", "choice", 24, "nominal battery voltage", choices=(12, 24, 48)),
    Option("soc", "float", 70.0, "battery state of charge at midnight, %", min=5.0, max=100.0),
    Option("capacity", "float", 400.0, "battery capacity, Ah", min=10.0, max=10000.0),
    Option("array_w", "float", 1800.0, "array peak power, W", min=0.0, max=4000.0),
    Option("load", "float", 6.0, "house load on the battery (not seen by the charger), A",
           min=0.0, max=100.0),
    Option("fault_bits", "int", 0, "fault_all word (bit names in the README)", min=0,
           max=0xFFFF),
    Option("alarm_bits", "int", 0, "24-bit alarm field", min=0, max=0xFFFFFF),
    Option("rts", "bool", True, "a remote temperature sensor is fitted (false: T_rts reads "
           "0x0080 and T_batt 25 °C)"),
    Option("v_pu", "float", 180.0, "voltage scaling V_PU (TS-MPPT-60: 180)", min=1.0,
           max=1000.0),
    Option("i_pu", "float", 80.0, "current scaling I_PU (TS-MPPT-60: 80)", min=1.0, max=1000.0),
    Option("serial", "str", "16130421", "serial number (8 characters)"),
    Option("model", "choice", 1, "Emodel: 0 = TS-MPPT-45, 1 = TS-MPPT-60, 2 = TS-MPPT-30",
           choices=(0, 1, 2)),
)

#: the charge settings at 25 °C on a 12 V basis (times 2 for 24 V, 4 for 48 V)
SETTINGS_12V = dict(ev_absorp=14.4, ev_float=13.6, ev_absorp_ext=12.2, ev_float_cancel=12.5,
                    ev_eq=15.2, ev_hvd=16.0, ev_hvr=14.5, evb_ref_lim=15.75, ev_soc_g_gy=13.2,
                    ev_soc_gy_y=12.7, ev_soc_y_yr=12.2, ev_soc_yr_r=11.8)
SETTINGS_OTHER = dict(et_absorp=7200, et_absorp_ext=10800, et_float_exit_cum=3600,
                      et_eqcalendar=28, et_eq_above=10800, et_eq_reg=7200, et_batt_service=0,
                      etb_max=60.0, etb_min=-30.0, emeterbus_id=1, eib_lim=60.0,
                      eva_ref_fixed_init=0.0, eva_ref_fixed_pct_init=0.0)
#: valid coil addresses (read and write), as (first, count) ranges
COIL_RANGES = ((0x0000, 0x1A), (0x00F0, 1), (0x00FF, 1), (0x1000, 4), (0x10FF, 1))
#: coils that only act and read back 0
SET_ONLY_COILS = frozenset((0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x18, 0x19, 0xF0, 0xFF,
                            0x1000, 0x1001, 0x1002, 0x1003, 0x10FF))
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3
SETTINGS_START = p.SETTINGS_START


@dataclass
class TriStarState:
    """Everything the registers of one unit say, in engineering units (already rounded to
    what the words can carry, so a driver's decoded values compare exactly)."""

    v_pu: float = 180.0
    i_pu: float = 80.0
    ver_sw: str = "142"
    adc_vb_f_med: float = 0.0
    adc_vbterm_f: float = 0.0
    adc_vbs_f: float = 0.0
    adc_va_f: float = 0.0
    adc_ib_f_shadow: float = 0.0
    adc_ia_f_shadow: float = 0.0
    adc_p12_f: float = 13.38
    adc_p3_f: float = 3.62
    adc_pmeter_f: float = 12.95
    adc_p18_f: float = 1.78
    adc_v_ref: float = 2.04
    t_hs: int = 20
    t_rts: int | None = 20
    t_batt: int = 20
    adc_vb_f_1m: float = 0.0
    adc_ib_f_1m: float = 0.0
    vb_min: float = 0.0
    vb_max: float = 0.0
    hourmeter: int = 87017
    fault_all: int = 0
    alarm: int = 0
    dip_all: int = 0xFA
    led_state: int = 6
    charge_state: int = 3
    vb_ref: float = 0.0
    ahc_r: float = 0.0
    ahc_t: float = 0.0
    kwhc_r: int = 0
    kwhc_t: int = 0
    power_out: float = 0.0
    power_in: float = 0.0
    sweep_pin_max: float = 0.0
    sweep_vmp: float = 0.0
    sweep_voc: float = 0.0
    vb_min_daily: float = 0.0
    vb_max_daily: float = 0.0
    va_max_daily: float = 0.0
    ahc_daily: float = 0.0
    whc_daily: int = 0
    flags_daily: int = 0
    pout_max_daily: float = 0.0
    tb_min_daily: int = 0
    tb_max_daily: int = 0
    fault_daily: int = 0
    alarm_daily: int = 0
    time_ab_daily: int = 0
    time_eq_daily: int = 0
    time_fl_daily: int = 0
    ib_ref_slave: float = 0.0
    vb_ref_slave: float = 0.0
    va_ref_fixed: float = 0.0
    va_ref_fixed_pct: float = 0.0
    serial: str = "16130421"
    model_code: int = 1
    hardware_version: str = "3.0"
    etmr_eqcalendar: int = 5
    etmr_batt_service: int = 0
    evb_min: float = 0.0
    evb_max: float = 0.0
    eva_max: float = 0.0


# --- request framing (modbus-tk does CRC and MBAP) ----------------------------------------------


@dataclass(frozen=True)
class Request:
    """One whole request: its framing ("rtu"/"tcp"), unit id, PDU and the modbus-tk query
    that parsed it (it builds the answer's frame)."""

    framing: str
    unit: int
    pdu: bytes
    query: object

    def answer(self, pdu: bytes) -> bytes:
        return self.query.build_response(pdu)  # type: ignore[attr-defined]


def rtu_request_length(buf: bytes) -> int | None:
    """Length of the RTU request starting at buf[0], from its function code; None if the
    function has no fixed layout (then a valid CRC over the whole buffer decides)."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc in (1, 2, 3, 4, 5, 6, 8):
        return 8
    if fc in (7, 11, 12, 17):
        return 4
    if fc == 0x2B:
        return 7
    if fc == 0x16:
        return 10
    if fc in (0x0F, 0x10):
        return 9 + buf[6] if len(buf) > 6 else -1
    if fc == 0x17:
        return 13 + buf[10] if len(buf) > 10 else -1
    return None


class RequestFramer:
    """Cuts the host's byte stream into requests: RTU (CRC-checked by modbus-tk) or Modbus
    TCP (MBAP parsed by modbus-tk). Garbage is skipped byte by byte and reported as a
    `ProtocolError`, like a device that ignores frames with a bad CRC."""

    MAX_BUFFER = 300

    def __init__(self, framing: str = "auto") -> None:
        self.framing = framing
        self.buf = b""

    def close(self) -> ProtocolError | None:
        left, self.buf = self.buf, b""
        return FramingError("partial request", left) if left else None

    def events(self, data: bytes) -> Iterator[Request | ProtocolError]:
        self.buf += bytes(data)
        while self.buf:
            event = self._next()
            if event is None:
                if len(self.buf) > self.MAX_BUFFER:
                    bad, self.buf = self.buf[:1], self.buf[1:]
                    yield FramingError("no request fits the buffered bytes", bad)
                    continue
                return
            yield event

    def _next(self) -> Request | ProtocolError | None:
        buf = self.buf
        want_rtu = self.framing in ("auto", "rtu")
        want_tcp = self.framing in ("auto", "tcp")
        rtu_len = rtu_request_length(buf) if want_rtu else None
        if want_rtu and rtu_len is not None and rtu_len > 0 and len(buf) >= rtu_len:
            frame = buf[:rtu_len]
            query = RtuQuery()
            try:
                unit, pdu = query.parse_request(frame)
            except ModbusInvalidRequestError:
                pass
            else:
                self.buf = buf[rtu_len:]
                return Request("rtu", unit, pdu, query)
        elif want_rtu and rtu_len is None and len(buf) >= 4:
            query = RtuQuery()
            try:
                unit, pdu = query.parse_request(buf)
            except ModbusInvalidRequestError:
                pass
            else:
                self.buf = b""
                return Request("rtu", unit, pdu, query)
        tcp_state = self._tcp_state(buf) if want_tcp else "no"
        if tcp_state == "whole":
            total = 6 + struct.unpack(">H", buf[4:6])[0]
            query = TcpQuery()
            try:
                unit, pdu = query.parse_request(buf[:total])
            except (ModbusInvalidMbapError, ModbusInvalidRequestError) as err:
                self.buf = buf[total:]
                return FramingError(f"bad MBAP header: {err}", buf[:total])
            self.buf = buf[total:]
            return Request("tcp", unit, pdu, query)
        if tcp_state == "partial":
            return None
        if want_rtu:
            if rtu_len is not None and 0 < rtu_len <= len(buf):
                bad, self.buf = buf[:1], buf[1:]
                return ChecksumError("request with a bad CRC (or a stray byte)", bad)
            if rtu_len is None and len(buf) >= 8:
                # no known layout and no valid CRC over 8 bytes or more: resynchronise
                bad, self.buf = buf[:1], buf[1:]
                return FramingError("stray byte", bad)
            return None
        bad, self.buf = buf[:1], buf[1:]
        return FramingError("not a Modbus TCP header", bad)

    @staticmethod
    def _tcp_state(buf: bytes) -> str:
        """"whole", "partial" (a plausible MBAP header, more to come) or "no"."""
        if len(buf) >= 4 and buf[2:4] != b"\x00\x00":
            return "no"
        if len(buf) < 6:
            return "partial" if len(buf) < 4 or buf[2:4] == b"\x00\x00" else "no"
        length = struct.unpack(">H", buf[4:6])[0]
        if not 2 <= length <= 254:
            return "no"
        return "whole" if len(buf) >= 6 + length else "partial"


# --- one unit: the device image and its physics -------------------------------------------------


def _exception(fc: int, code: int) -> bytes:
    return bytes((fc | 0x80, code))


class TriStarUnit:
    """One controller: state, EEPROM words, coils, and how they evolve over the day."""

    def __init__(self, unit_id: int, options: Options, scale: float = 1.0) -> None:
        self.unit_id = unit_id
        self.k = int(options.get("battery", 24)) / 12
        self.capacity = float(options.get("capacity", 400.0))
        self.array_w = float(options.get("array_w", 1800.0)) * scale
        self.load_a = float(options.get("load", 6.0))
        self.soc = float(options.get("soc", 70.0)) / 100
        self.forced = STAGES[options.get("stage", "auto")]
        self.rts = bool(options.get("rts", True))
        v_pu, i_pu = float(options.get("v_pu", 180.0)), float(options.get("i_pu", 80.0))
        # the words carry V_PU/I_PU; keep exactly what they can say
        self.state = TriStarState(
            v_pu=p.scaling(*p.encode_scaling(v_pu)), i_pu=p.scaling(*p.encode_scaling(i_pu)),
            fault_all=int(options.get("fault_bits", 0)), alarm=int(options.get("alarm_bits", 0)),
            serial=str(options.get("serial", "16130421"))[:8],
            model_code=int(options.get("model", 1)),
            dip_all={12: 0xFC, 24: 0xFA, 48: 0xFE}[int(options.get("battery", 24))],
        )
        for name, full in (("adc_p12_f", p.P12_FULL_SCALE), ("adc_p3_f", p.P3_FULL_SCALE),
                           ("adc_pmeter_f", p.P12_FULL_SCALE), ("adc_p18_f", p.P18_FULL_SCALE),
                           ("adc_v_ref", p.P18_FULL_SCALE)):
            word = p.encode_fixed_voltage(getattr(self.state, name), full)
            setattr(self.state, name, p.fixed_voltage(word, full))
        self.eeprom = self._default_eeprom(unit_id)
        self.coils: dict[int, bool] = {}
        self.writes_received: list[tuple[int, int, int]] = []
        self.requests_received: list[tuple[int, int, int]] = []
        # integrators
        self._ah_r = 0.0
        self._ah_t = 190342.0
        self._wh_r = 0.0
        self._wh_t = 2_470_000.0
        self._ah_day = 0.0
        self._wh_day = 0.0
        self._seconds = 0.0
        self._absorb_s = 0.0
        self._eq_s = 0.0
        self._eq_requested = False
        self._slave_age = 0.0
        self._stage = 3
        self._sun = 0.0
        self._fresh_day = True

    # --- settings -----------------------------------------------------------------------------

    def _default_eeprom(self, unit_id: int) -> dict[int, int]:
        s = self.state
        words = {SETTINGS_START + i: 0 for i in range(p.SETTINGS_WORDS)}
        values: dict[str, float] = {k: v * self.k for k, v in SETTINGS_12V.items()}
        values.update(SETTINGS_OTHER)
        values["ev_tempcomp"] = 0.03 * self.k
        values["emodbus_id"] = unit_id
        for offset, name, kind, _unit in p.SETTINGS_MAP:
            value = values[name]
            if kind == "v":
                word = p.encode_voltage(value, s.v_pu)
            elif kind == "a":
                word = p.encode_current(value, s.i_pu)
            elif kind == "c":
                word = p.word_s16(round(value))
            elif kind == "tc":
                word = p.encode_tempcomp(value, s.v_pu)
            elif kind == "pct":
                word = p.encode_percent_of_voc(value)
            else:
                word = int(value)
            words[SETTINGS_START + offset] = word
        return words

    def settings(self) -> dict[str, float | int]:
        """The charge settings as the EEPROM words say now (after any write)."""
        words = [self.eeprom[SETTINGS_START + i] for i in range(p.SETTINGS_WORDS)]
        return p.decode_settings(words, self.state.v_pu, self.state.i_pu)

    # --- physics --------------------------------------------------------------------------------

    def _ocv(self) -> float:
        soc = self.soc
        return self.k * (12.0 + 0.8 * soc + 1.2 * max(0.0, soc - 0.85) / 0.15)

    def step(self, tod: float, dt: float) -> None:
        """Advance `dt` simulated seconds ending at time of day `tod`."""
        s = self.state
        cfg = self.settings()
        sun = 0.0
        if SUNRISE < tod < SUNSET:
            sun = math.sin(math.pi * (tod - SUNRISE) / (SUNSET - SUNRISE))
        if self.forced == 3:
            sun = 0.0
        elif self.forced is not None:
            sun = max(sun, 0.7)
        self._sun = sun
        # temperatures: battery follows the day a little, heatsink follows the power
        tb_real = 18.0 + 6.0 * sun
        t_batt = round(tb_real) if self.rts else 25
        tb = min(max(t_batt, cfg["etb_min"]), cfg["etb_max"])
        comp = float(cfg["ev_tempcomp"]) * (tb - 25)  # ev_tempcomp is negative

        stage = self._next_stage(sun, cfg, dt)
        r = 0.0125 * self.k
        ocv = self._ocv()
        limit = min(float(cfg["eib_lim"]) or 60.0, 60.0)
        avail = self.array_w * sun * 0.96
        target = {6: cfg["ev_absorp"], 7: cfg["ev_float"], 8: cfg["ev_eq"]}.get(stage)
        if stage == 9:
            target = s.vb_ref_slave
        vb_ref = 0.0
        if stage == 5:
            ib = min(avail / ocv, limit)
        elif target is not None:
            vb_ref = float(target) + comp if stage != 9 else float(target)
            needed = (vb_ref - ocv) / r + self.load_a
            ib = max(0.0, min(needed, avail / max(vb_ref, 1.0), limit))
        elif stage in (2, 4):
            ib = 0.0
        else:  # night: the controller itself draws a little from the battery
            ib = -0.15
        if stage == 5:
            vb_ref = float(cfg["ev_absorp"]) + comp
        net = ib - self.load_a
        vb = ocv + net * r
        pout = max(0.0, vb * ib)
        pin = pout / 0.96 if pout > 0 else 0.0
        voc = (94.0 * (0.97 + 0.03 * sun)) if sun > 0 else 0.6
        vmp = 0.8 * voc
        if sun <= 0:
            va = voc
        elif stage == 5:
            va = vmp
        else:
            share = pin / avail if avail > 0 else 0.0
            va = vmp + (voc - vmp) * (1 - min(1.0, share))
        ia = pin / va if va > 1 else 0.0

        # integrate
        self.soc = min(1.0, max(0.05, self.soc + net * dt / 3600 / self.capacity))
        if ib > 0:
            self._ah_r += ib * dt / 3600
            self._ah_t += ib * dt / 3600
            self._ah_day += ib * dt / 3600
            self._wh_r += pout * dt / 3600
            self._wh_t += pout * dt / 3600
            self._wh_day += pout * dt / 3600
        self._seconds += dt
        if stage == 6:
            self._absorb_s += dt
            s.time_ab_daily = min(0xFFFF, s.time_ab_daily + round(dt))
        elif stage == 8:
            self._eq_s += dt
            s.time_eq_daily = min(0xFFFF, s.time_eq_daily + round(dt))
        elif stage == 7:
            s.time_fl_daily = min(0xFFFF, s.time_fl_daily + round(dt))
            s.flags_daily |= 1 << 2
        if stage == 9:
            self._slave_age += dt
            if self._slave_age > 60:
                s.fault_all |= 1 << 11

        v, a, w = self._v, self._a, self._w
        s.adc_vb_f_med = v(vb)
        s.adc_vbterm_f = v(vb + ib * 0.002 * self.k)
        s.adc_vbs_f = v(vb)
        s.adc_va_f = v(va)
        s.adc_ib_f_shadow = a(ib)
        s.adc_ia_f_shadow = a(ia)
        s.t_batt = t_batt
        s.t_rts = round(tb_real) if self.rts else None
        s.t_hs = round(16.0 + 4.0 * sun + pout / 60)
        alpha = min(1.0, dt / 60)
        s.adc_vb_f_1m = v(s.adc_vb_f_1m + (vb - s.adc_vb_f_1m) * alpha if s.adc_vb_f_1m else vb)
        s.adc_ib_f_1m = a(s.adc_ib_f_1m + (ib - s.adc_ib_f_1m) * alpha)
        s.vb_min = v(min(s.vb_min, vb) if s.vb_min else vb)
        s.vb_max = v(max(s.vb_max, vb))
        s.hourmeter = 87017 + int(self._seconds // 3600)
        s.charge_state = stage
        s.vb_ref = v(vb_ref)
        s.ahc_r = round(int(self._ah_r * 10) * 0.1, 1)
        s.ahc_t = round(int(self._ah_t * 10) * 0.1, 1)
        s.kwhc_r = int(self._wh_r // 1000)
        s.kwhc_t = int(self._wh_t // 1000)
        s.power_out = w(pout)
        s.power_in = w(pin)
        if sun > 0:
            s.sweep_pin_max = w(avail / 0.96)
            s.sweep_vmp = v(vmp)
            s.sweep_voc = v(voc)
        # today's values
        if self._fresh_day:
            self._fresh_day = False
            s.vb_min_daily = s.vb_max_daily = v(vb)
            s.tb_min_daily = s.tb_max_daily = t_batt
            s.va_max_daily = v(va)
        s.vb_min_daily = v(min(s.vb_min_daily, vb))
        s.vb_max_daily = v(max(s.vb_max_daily, vb))
        s.va_max_daily = v(max(s.va_max_daily, va))
        s.tb_min_daily = min(s.tb_min_daily, t_batt)
        s.tb_max_daily = max(s.tb_max_daily, t_batt)
        s.ahc_daily = round(min(0xFFFF, int(self._ah_day * 10)) * 0.1, 1)
        s.whc_daily = min(0xFFF0, int(self._wh_day // 10) * 10)
        s.pout_max_daily = max(s.pout_max_daily, s.power_out)
        s.fault_daily |= s.fault_all
        s.alarm_daily |= s.alarm
        if s.alarm:
            s.flags_daily |= 1 << 3
        if s.fault_all:
            s.flags_daily |= 1 << 4
        s.led_state = self._led(stage, vb, cfg)
        s.evb_min, s.evb_max = s.vb_min, s.vb_max
        s.eva_max = max(s.eva_max, s.va_max_daily)

    def _next_stage(self, sun: float, cfg: dict[str, float | int], dt: float) -> int:
        s = self.state
        previous = self._stage
        if s.fault_all:
            stage = 4
        elif self.coils.get(2):
            stage = 2
        elif s.vb_ref_slave:
            stage = 9
        elif self.forced is not None:
            stage = self.forced
        elif sun < 0.01:
            stage = 3
        elif previous in (3, 0, 1, 2, 4):
            stage = 5
        else:
            stage = previous
            vb = self.state.adc_vb_f_med
            if stage == 5 and vb >= float(cfg["ev_absorp"]) - 0.05 * self.k:
                stage = 6
            elif stage == 6 and self._absorb_s >= float(cfg["et_absorp"]):
                stage = 7
            if self._eq_requested and stage in (6, 7):
                stage = 8
            if stage == 8 and self._eq_s >= float(cfg["et_eq_reg"]):
                stage, self._eq_requested = 7, False
                self.coils[0] = False
        if previous == 3 and stage == 5:
            self._new_day()
        self._stage = stage
        return stage

    def _new_day(self) -> None:
        """Dawn: today's values start over (the controller keeps yesterday's in its log)."""
        s = self.state
        self._ah_day = self._wh_day = 0.0
        self._absorb_s = self._eq_s = 0.0
        s.flags_daily = 0
        s.pout_max_daily = 0.0
        s.fault_daily = s.fault_all
        s.alarm_daily = s.alarm
        s.time_ab_daily = s.time_eq_daily = s.time_fl_daily = 0
        self._fresh_day = True

    def _led(self, stage: int, vb: float, cfg: dict[str, float | int]) -> int:
        s = self.state
        if stage == 4:
            return 16 if s.fault_all & (1 << 3) else 12
        if s.alarm & 0b111:  # RTS problems
            return 17
        if stage in (6, 9):
            return 5
        if stage == 7:
            return 4
        if stage == 8:
            return 3
        if vb >= float(cfg["ev_soc_gy_y"]):
            return 6
        if vb >= float(cfg["ev_soc_y_yr"]):
            return 8
        return 11

    def _v(self, volts: float) -> float:
        return p.voltage(p.encode_voltage(volts, self.state.v_pu), self.state.v_pu)

    def _a(self, amps: float) -> float:
        return p.current(p.encode_current(amps, self.state.i_pu), self.state.i_pu)

    def _w(self, watts: float) -> float:
        s = self.state
        return p.power(p.encode_power(watts, s.v_pu, s.i_pu), s.v_pu, s.i_pu)

    # --- the word image -----------------------------------------------------------------------

    def ram_words(self) -> list[int]:
        s = self.state
        vp, ip = s.v_pu, s.i_pu
        w = [0] * p.RAM_WORDS

        def v(x: float) -> int:
            return p.encode_voltage(x, vp)

        def a(x: float) -> int:
            return p.encode_current(x, ip)

        def pw(x: float) -> int:
            return p.encode_power(x, vp, ip)

        w[p.V_PU_HI], w[p.V_PU_LO] = p.encode_scaling(vp)
        w[p.I_PU_HI], w[p.I_PU_LO] = p.encode_scaling(ip)
        w[p.VER_SW] = p.encode_bcd(s.ver_sw)
        for index, name in ((p.ADC_VB_F_MED, "adc_vb_f_med"), (p.ADC_VBTERM_F, "adc_vbterm_f"),
                            (p.ADC_VBS_F, "adc_vbs_f"), (p.ADC_VA_F, "adc_va_f"),
                            (p.ADC_VB_F_1M, "adc_vb_f_1m"), (p.VB_MIN, "vb_min"),
                            (p.VB_MAX, "vb_max"), (p.VB_REF, "vb_ref"),
                            (p.SWEEP_VMP, "sweep_vmp"), (p.SWEEP_VOC, "sweep_voc"),
                            (p.VB_MIN_DAILY, "vb_min_daily"), (p.VB_MAX_DAILY, "vb_max_daily"),
                            (p.VA_MAX_DAILY, "va_max_daily"), (p.VB_REF_SLAVE, "vb_ref_slave"),
                            (p.VA_REF_FIXED, "va_ref_fixed")):
            w[index] = v(getattr(s, name))
        for index, name in ((p.ADC_IB_F_SHADOW, "adc_ib_f_shadow"),
                            (p.ADC_IA_F_SHADOW, "adc_ia_f_shadow"), (p.ADC_IB_F_1M, "adc_ib_f_1m"),
                            (p.IB_REF_SLAVE, "ib_ref_slave")):
            w[index] = a(getattr(s, name))
        for index, name in ((p.POWER_OUT, "power_out"), (p.POWER_IN, "power_in"),
                            (p.SWEEP_PIN_MAX, "sweep_pin_max"),
                            (p.POUT_MAX_DAILY, "pout_max_daily")):
            w[index] = pw(getattr(s, name))
        w[p.ADC_P12_F] = p.encode_fixed_voltage(s.adc_p12_f, p.P12_FULL_SCALE)
        w[p.ADC_P3_F] = p.encode_fixed_voltage(s.adc_p3_f, p.P3_FULL_SCALE)
        w[p.ADC_PMETER_F] = p.encode_fixed_voltage(s.adc_pmeter_f, p.P12_FULL_SCALE)
        w[p.ADC_P18_F] = p.encode_fixed_voltage(s.adc_p18_f, p.P18_FULL_SCALE)
        w[p.ADC_V_REF] = p.encode_fixed_voltage(s.adc_v_ref, p.P18_FULL_SCALE)
        w[p.T_HS] = p.word_s16(s.t_hs)
        w[p.T_RTS] = 0x0080 if s.t_rts is None else p.word_s16(s.t_rts)
        w[p.T_BATT] = p.word_s16(s.t_batt)
        w[p.HOURMETER_HI], w[p.HOURMETER_LO] = p.split_u32(s.hourmeter)
        w[p.FAULT_ALL] = s.fault_all
        w[p.ALARM_HI], w[p.ALARM_LO] = p.split_u32(s.alarm)
        w[p.DIP_ALL] = s.dip_all
        w[p.LED_STATE] = s.led_state
        w[p.CHARGE_STATE] = s.charge_state
        w[p.AHC_R_HI], w[p.AHC_R_LO] = p.split_u32(round(s.ahc_r * 10))
        w[p.AHC_T_HI], w[p.AHC_T_LO] = p.split_u32(round(s.ahc_t * 10))
        w[p.KWHC_R], w[p.KWHC_T] = s.kwhc_r & 0xFFFF, s.kwhc_t & 0xFFFF
        w[p.AHC_DAILY] = round(s.ahc_daily * 10) & 0xFFFF
        w[p.WHC_DAILY] = s.whc_daily & 0xFFFF
        w[p.FLAGS_DAILY] = s.flags_daily
        w[p.TB_MIN_DAILY] = p.word_s16(s.tb_min_daily)
        w[p.TB_MAX_DAILY] = p.word_s16(s.tb_max_daily)
        w[p.FAULT_DAILY] = s.fault_daily
        w[p.ALARM_DAILY_HI], w[p.ALARM_DAILY_LO] = p.split_u32(s.alarm_daily)
        w[p.TIME_AB_DAILY] = s.time_ab_daily
        w[p.TIME_EQ_DAILY] = s.time_eq_daily
        w[p.TIME_FL_DAILY] = s.time_fl_daily
        w[p.VA_REF_FIXED_PCT] = p.encode_percent_of_voc(s.va_ref_fixed_pct)
        return w

    def words(self) -> dict[int, int]:
        """Every served word: address → unsigned 16-bit value."""
        s = self.state
        out = dict(enumerate(self.ram_words()))
        out.update(self.eeprom)
        hm_hi, hm_lo = p.split_u32(s.hourmeter)
        ahr_hi, ahr_lo = p.split_u32(round(s.ahc_r * 10))
        aht_hi, aht_lo = p.split_u32(round(s.ahc_t * 10))
        stats = [hm_lo, hm_hi, ahr_lo, ahr_hi, aht_lo, aht_hi, s.kwhc_r & 0xFFFF,
                 s.kwhc_t & 0xFFFF, p.encode_voltage(s.evb_min, s.v_pu),
                 p.encode_voltage(s.evb_max, s.v_pu), p.encode_voltage(s.eva_max, s.v_pu),
                 s.etmr_eqcalendar, s.etmr_batt_service]
        out.update({p.EEPROM_STATS_START + i: w for i, w in enumerate(stats)})
        ident = [0] * p.IDENTITY_WORDS
        ident[0:4] = p.encode_serial(s.serial)
        major, _, minor = s.hardware_version.partition(".")
        ident[12] = s.model_code
        ident[13] = (int(major) & 0xFF) << 8 | (int(minor or 0) & 0xFF)
        out.update({p.IDENTITY_START + i: w for i, w in enumerate(ident)})
        return out

    # --- Modbus application layer --------------------------------------------------------------

    def handle_pdu(self, pdu: bytes, broadcast: bool = False) -> bytes:
        """The response PDU to request `pdu` (an exception PDU where the device refuses)."""
        fc = pdu[0]
        if fc in (3, 4):
            if len(pdu) != 5:
                return _exception(fc, ILLEGAL_VALUE)
            start, count = struct.unpack(">HH", pdu[1:5])
            self.requests_received.append((fc, start, count))
            if not 1 <= count <= p.MAX_READ_WORDS:
                return _exception(fc, ILLEGAL_VALUE)
            if not _inside(start, count, p.RANGES):
                return _exception(fc, ILLEGAL_ADDRESS)
            image = self.words()
            values = [image[a] for a in range(start, start + count)]
            return struct.pack(f">BB{count}H", fc, 2 * count, *values)
        if fc in (1, 2):
            if len(pdu) != 5:
                return _exception(fc, ILLEGAL_VALUE)
            start, count = struct.unpack(">HH", pdu[1:5])
            self.requests_received.append((fc, start, count))
            if not 1 <= count <= 2000:
                return _exception(fc, ILLEGAL_VALUE)
            if not _inside(start, count, COIL_RANGES):
                return _exception(fc, ILLEGAL_ADDRESS)
            bits = [self._coil(a) for a in range(start, start + count)]
            data = bytes(sum(b << i for i, b in enumerate(bits[j:j + 8]))
                         for j in range(0, count, 8))
            return bytes((fc, len(data))) + data
        if fc == 5:
            address, value = struct.unpack(">HH", pdu[1:5])
            self.writes_received.append((fc, address, value))
            if value not in (0x0000, 0xFF00):
                return _exception(fc, ILLEGAL_VALUE)
            if not _inside(address, 1, COIL_RANGES):
                return _exception(fc, ILLEGAL_ADDRESS)
            self._write_coil(address, value == 0xFF00)
            return pdu[:5]
        if fc == 6:
            address, value = struct.unpack(">HH", pdu[1:5])
            self.writes_received.append((fc, address, value))
            if not (address in p.RAM_WRITABLE or _inside(address, 1, ((SETTINGS_START,
                                                                        p.SETTINGS_WORDS),))):
                return _exception(fc, ILLEGAL_ADDRESS)
            self._write_register(address, value)
            return pdu[:5]
        if fc == 0x2B and len(pdu) >= 4 and pdu[1] == 0x0E:
            return self._identification(pdu)
        return _exception(fc, ILLEGAL_FUNCTION)

    def _coil(self, address: int) -> bool:
        if address in SET_ONLY_COILS:
            return False
        return self.coils.get(address, False)

    def _write_coil(self, address: int, on: bool) -> None:
        s = self.state
        if address not in SET_ONLY_COILS:
            self.coils[address] = on
            if address == 0:
                self._eq_requested = on
                if on:
                    s.flags_daily |= 1 << 1
            return
        if not on:
            return
        if address == 0x10:
            self._ah_r = 0.0  # the resettable kWh has its own coil (0x12)
        elif address == 0x11:
            self._ah_t = 0.0
        elif address == 0x12:
            self._wh_r = 0.0
        elif address == 0x13:
            s.etmr_batt_service = 0
        elif address == 0x14:
            s.fault_all = 0
        elif address == 0x15:
            s.alarm = 0
        elif address == 0x18:
            self._wh_t = 0.0
        elif address == 0x19:
            s.vb_min = s.vb_max = 0.0
        elif address == 0xFF:
            # the controller restarts: EEPROM edits take effect, today's values restart
            s.fault_all &= ~(1 << 6)
            self._new_day()
            s.flags_daily = 1
            s.alarm |= 1 << 19
            s.ahc_daily, s.whc_daily = 0.0, 0

    def _write_register(self, address: int, value: int) -> None:
        s = self.state
        if address >= SETTINGS_START:
            self.eeprom[address] = value
            s.fault_all |= 1 << 6  # "custom settings edit": charging stops until a reset
            return
        if address == p.IB_REF_SLAVE:
            s.ib_ref_slave = p.current(value, s.i_pu)
        elif address == p.VB_REF_SLAVE:
            s.vb_ref_slave = p.voltage(value, s.v_pu)
            self._slave_age = 0.0
        elif address == p.VA_REF_FIXED:
            s.va_ref_fixed = p.voltage(value, s.v_pu)
        else:
            s.va_ref_fixed_pct = p.percent_of_voc(value)

    def _identification(self, pdu: bytes) -> bytes:
        code = pdu[2]
        objects = [b"Morningstar Corp.",
                   p.MODELS.get(self.state.model_code, "TS-MPPT").encode(),
                   b"v" + self.state.hardware_version.encode() + b".01"]
        if code == 4:
            if pdu[3] > 2:
                return _exception(0x2B, ILLEGAL_ADDRESS)
            chosen = [(pdu[3], objects[pdu[3]])]
        elif code == 1:
            first = pdu[3] if pdu[3] <= 2 else 0
            chosen = list(enumerate(objects))[first:]
        else:
            return _exception(0x2B, ILLEGAL_VALUE)
        body = b"".join(bytes((i, len(v))) + v for i, v in chosen)
        return bytes((0x2B, 0x0E, code, 0x81, 0x00, 0x00, len(chosen))) + body


def _inside(start: int, count: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(first <= start and start + count <= first + size for first, size in ranges)


def _parse_start(text: str, clock_now: datetime | None = None) -> float:
    text = text.strip().lower()
    if text == "now":
        now = clock_now or datetime.now()
        return now.hour * 3600 + now.minute * 60 + now.second
    hours, _sep, minutes = text.partition(":")
    try:
        h, m = int(hours), int(minutes or 0)
    except ValueError:
        raise ValueError(f"start: expected HH:MM or \"now\", got {text!r}") from None
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"start: expected HH:MM or \"now\", got {text!r}")
    return h * 3600.0 + m * 60.0


# --- the simulator ------------------------------------------------------------------------------


#: Silence after which the simulated unit drops a partial RTU request. Real units use
#: 3.5 character times; the emulated line delivers each write at once, so a looser bound
#: keeps one request whole under scheduling jitter.
RTU_IDLE_RESET_S = 0.05


class TriStarSimulator(Simulator):
    """One or several TriStar MPPT units on one line. `state` is the first unit's state;
    `units` maps each unit id to its `TriStarUnit` (state, EEPROM words, coils, the
    requests and writes it received). `ignored` counts requests refused in silence, by
    reason (a parser error's kind, ``framing``, ``empty``, ``unit``)."""

    OPTIONS = OPTIONS
    PORT_DEFAULTS = PORT_DEFAULTS

    def setup(self) -> None:
        options = self.options
        ids = tuple(dict.fromkeys(options.get("units", (1,)) or (1,)))
        self.units: dict[int, TriStarUnit] = {
            uid: TriStarUnit(uid, options, scale=1.0 - 0.05 * n) for n, uid in enumerate(ids)
        }
        self.framer = RequestFramer(options.get("framing", "auto"))
        self.tcp_close = bool(options.get("tcp_close", True))
        self.drift = bool(options.get("drift", True))
        self.speed = float(options.get("speed", 1.0))
        self.tod = _parse_start(str(options.get("start", "now")))
        self._framing = "rtu"
        self._last = self.clock()
        self._warm_up()

    @property
    def state(self) -> TriStarState:
        return next(iter(self.units.values())).state

    @property
    def unit(self) -> TriStarUnit:
        return next(iter(self.units.values()))

    @property
    def writes_received(self) -> list[tuple[int, int, int]]:
        return [w for u in self.units.values() for w in u.writes_received]

    def _warm_up(self) -> None:
        """Live the day from midnight to the start time, so counters and today's values
        are what a controller would show at that hour."""
        target, t = self.tod, 0.0
        while t < target:
            dt = min(STEP_S, target - t)
            t += dt
            for unit in self.units.values():
                unit.step(t, dt)
        if target == 0:
            for unit in self.units.values():
                unit.step(0.0, 1.0)

    def advance(self, seconds: float) -> None:
        """Let `seconds` of simulated time pass (tests; also what the clock does)."""
        left = seconds
        while left > 0:
            dt = min(STEP_S, left)
            left -= dt
            self.tod = (self.tod + dt) % DAY
            for unit in self.units.values():
                unit.step(self.tod, dt)

    def _advance_clock(self) -> None:
        now = self.clock()
        elapsed, self._last = now - self._last, now
        if self.drift and elapsed > 0 and self.speed > 0:
            self.advance(elapsed * self.speed)

    # --- the line ---------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Transmission]:
        now = self.clock()
        if self.framer.buf and self._framing == "rtu" and \
                now - getattr(self, "_last_rx", now) > RTU_IDLE_RESET_S:
            # an RTU device ends a frame at 3.5 character times of silence and drops what
            # it holds then (a cut request, another protocol's bytes from a port scan)
            self.framer.close()
            self.ignored["framing"] += 1
        self._last_rx = now
        return self.answer_each(self.framer.events(data), self._request)

    def _request(self, request: Request) -> Transmission | None:
        self._framing = request.framing
        self.hangup_after_answer = self.tcp_close and request.framing == "tcp"
        if not request.pdu:
            self.ignored["empty"] += 1
            return None
        if request.unit == 0:  # broadcast: every unit obeys writes, nobody answers
            self._advance_clock()
            for unit in self.units.values():
                if request.pdu[0] in (5, 6):
                    unit.handle_pdu(request.pdu, broadcast=True)
            return None
        unit = self.units.get(request.unit)
        if unit is None:
            self.ignored["unit"] += 1
            return None
        self._advance_clock()
        answer = request.answer(unit.handle_pdu(request.pdu))
        latency = self.port_settings.turnaround_s * self.random.uniform(0.6, 1.0)
        return Transmission(answer, delay_s=latency)

    # --- shared faults, in Modbus terms -----------------------------------------------------------

    def corrupt_checksum(self, data: bytes) -> bytes:
        """RTU: a wrong CRC. TCP has no checksum of its own, so the MBAP protocol id is
        damaged instead (what a master rejects)."""
        if self._framing == "tcp" and len(data) >= 4:
            return data[:2] + b"\x00\x01" + data[4:]
        return super().corrupt_checksum(data)

    def wrong_answer(self, data: bytes) -> bytes:
        """A valid answer, but from another unit id (RTU: CRC recomputed by modbus-tk) or
        to another transaction (TCP)."""
        if self._framing == "tcp" and len(data) >= 7:
            tid = (struct.unpack(">H", data[:2])[0] + 1) & 0xFFFF
            return struct.pack(">H", tid) + data[2:]
        if len(data) < 4:
            return data
        query = RtuQuery()
        query._request_address = (data[0] % 247) + 1
        return query.build_response(data[1:-2])


def state_fields() -> tuple[str, ...]:
    """Names of every `TriStarState` field (for tests and docs)."""
    return tuple(f.name for f in fields(TriStarState))
