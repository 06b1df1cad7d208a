"""TriStar MPPT register map and value codec: words in, engineering values out (and back).

Sans-IO: this module never touches a line. Modbus framing and CRCs belong to modbus-tk
(the driver's `RtuMaster`/`TcpMaster`, the simulator's `RtuQuery`/`TcpQuery`); what is
here is what the Morningstar document adds on top of Modbus: which word means what,
how it scales (V_PU / I_PU read from the device, never assumed), which words are signed,
which 32-bit values come HI word first (RAM) and which LO word first (EEPROM copies),
and the names of every enum value and bit.

The encoders (``encode_*``) are the inverse, for the simulator, so both sides of the
line agree on every rounding. Decoders raise only `ProtocolError` subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bmslogger.errors import FramingError, UnexpectedAnswerError

# --- addresses (request-PDU, 0-based: logical = PDU + 1) ----------------------------------------

RAM_START = 0x0000
#: words of RAM a poll reads: scaling, every live value and today's logger (0x0000-0x004F)
RAM_POLL_WORDS = 80
#: the documented RAM range, manual-control words 0x0058-0x005B included
RAM_WORDS = 0x5C
SETTINGS_START = 0xE000
SETTINGS_WORDS = 34  # 0xE000-0xE021; 32 (the greenhouse code's count) misses two
EEPROM_STATS_START = 0xE080
EEPROM_STATS_WORDS = 13  # 0xE080-0xE08C
IDENTITY_START = 0xE0C0
IDENTITY_WORDS = 14  # 0xE0C0-0xE0CD
#: every range a TS-MPPT serves: (first address, number of words)
RANGES: tuple[tuple[int, int], ...] = (
    (RAM_START, RAM_WORDS),
    (SETTINGS_START, SETTINGS_WORDS),
    (EEPROM_STATS_START, EEPROM_STATS_WORDS),
    (IDENTITY_START, IDENTITY_WORDS),
)
#: RAM words a host may write with 0x06 (volatile manual control, 0x0058-0x005B)
RAM_WRITABLE = range(0x0058, 0x005C)
#: the most registers one Modbus read may ask for
MAX_READ_WORDS = 125

# RAM word offsets used by the decoder and the simulator
V_PU_HI, V_PU_LO, I_PU_HI, I_PU_LO, VER_SW = 0x00, 0x01, 0x02, 0x03, 0x04
ADC_VB_F_MED, ADC_VBTERM_F, ADC_VBS_F, ADC_VA_F = 0x18, 0x19, 0x1A, 0x1B
ADC_IB_F_SHADOW, ADC_IA_F_SHADOW = 0x1C, 0x1D
ADC_P12_F, ADC_P3_F, ADC_PMETER_F, ADC_P18_F, ADC_V_REF = 0x1E, 0x1F, 0x20, 0x21, 0x22
T_HS, T_RTS, T_BATT = 0x23, 0x24, 0x25
ADC_VB_F_1M, ADC_IB_F_1M, VB_MIN, VB_MAX = 0x26, 0x27, 0x28, 0x29
HOURMETER_HI, HOURMETER_LO, FAULT_ALL = 0x2A, 0x2B, 0x2C
ALARM_HI, ALARM_LO, DIP_ALL, LED_STATE = 0x2E, 0x2F, 0x30, 0x31
CHARGE_STATE, VB_REF = 0x32, 0x33
AHC_R_HI, AHC_R_LO, AHC_T_HI, AHC_T_LO, KWHC_R, KWHC_T = 0x34, 0x35, 0x36, 0x37, 0x38, 0x39
POWER_OUT, POWER_IN, SWEEP_PIN_MAX, SWEEP_VMP, SWEEP_VOC = 0x3A, 0x3B, 0x3C, 0x3D, 0x3E
VB_MIN_DAILY, VB_MAX_DAILY, VA_MAX_DAILY, AHC_DAILY, WHC_DAILY = 0x40, 0x41, 0x42, 0x43, 0x44
FLAGS_DAILY, POUT_MAX_DAILY, TB_MIN_DAILY, TB_MAX_DAILY, FAULT_DAILY = 0x45, 0x46, 0x47, 0x48, 0x49
ALARM_DAILY_HI, ALARM_DAILY_LO = 0x4B, 0x4C
TIME_AB_DAILY, TIME_EQ_DAILY, TIME_FL_DAILY = 0x4D, 0x4E, 0x4F
IB_REF_SLAVE, VB_REF_SLAVE, VA_REF_FIXED, VA_REF_FIXED_PCT = 0x58, 0x59, 0x5A, 0x5B

#: T_rts when no remote temperature sensor is fitted (the spec's 0x80; a sign-extended
#: 0xFF80 is accepted too, as the firmware's choice was never observed)
RTS_DISCONNECTED = (0x0080, 0xFF80)

# --- names --------------------------------------------------------------------------------------

CHARGE_STATES: dict[int, str] = {
    0: "start", 1: "night_check", 2: "disconnect", 3: "night", 4: "fault", 5: "mppt",
    6: "absorption", 7: "float", 8: "equalize", 9: "slave",
}
#: charge states in which the controller delivers charge
CHARGING_STATES = frozenset((5, 6, 7, 8, 9))

LED_STATES: dict[int, str] = {
    0: "start", 1: "start2", 2: "branch", 3: "fast_green_blink", 4: "slow_green_blink",
    5: "green_blink_1hz", 6: "green", 7: "undefined_7", 8: "yellow", 9: "undefined_9",
    10: "blink_red", 11: "red", 12: "r_y_g_error", 13: "ry_g_error", 14: "rg_y_error",
    15: "r_y_error_htd", 16: "r_g_error_hvd", 17: "ry_gy_error", 18: "g_y_r_error",
    19: "g_y_r_x2_error",
}

#: fault_all / fault_daily, bit 0 first
FAULT_NAMES: tuple[str, ...] = (
    "overcurrent", "fets_shorted", "software_bug", "battery_hvd", "array_hvd",
    "dip_switch_changed", "custom_settings_edit", "rts_shorted", "rts_disconnected",
    "eeprom_retry_limit", "reserved_bit10", "slave_control_timeout", "undefined_bit12",
    "undefined_bit13", "undefined_bit14", "undefined_bit15",
)
#: the 24-bit alarm field (HI word bits 16-23, LO word bits 0-15), bit 0 first
ALARM_NAMES: tuple[str, ...] = (
    "rts_open", "rts_shorted", "rts_disconnected", "heatsink_sensor_open",
    "heatsink_sensor_shorted", "high_temperature_current_limit", "current_limit",
    "current_offset", "battery_sense_out_of_range", "battery_sense_disconnected",
    "uncalibrated", "rts_miswire", "high_voltage_disconnect", "undefined_bit13",
    "system_miswire", "mosfet_open", "p12_voltage_off", "high_input_voltage_current_limit",
    "adc_input_max", "controller_was_reset", "undefined_bit20", "undefined_bit21",
    "undefined_bit22", "undefined_bit23",
)
#: flags_daily, bit 0 first (bits 5-15 are not documented)
DAILY_FLAG_NAMES: tuple[str, ...] = (
    "reset_detected", "equalize_triggered", "entered_float", "alarm_occurred",
    "fault_occurred",
)
#: DIP switches 2-3 (switch 2, switch 3) → system voltage
SYSTEM_VOLTAGES = {(False, False): "auto", (False, True): "12v", (True, False): "24v",
                   (True, True): "48v"}
MODELS = {0: "TS-MPPT-45", 1: "TS-MPPT-60", 2: "TS-MPPT-30"}


def charge_state_name(code: int) -> str:
    return CHARGE_STATES.get(code, f"unknown_{code}")


def led_state_name(code: int) -> str:
    return LED_STATES.get(code, f"unknown_{code}")


def bit_flags(value: int, names: Sequence[str]) -> dict[str, bool]:
    """``{name: bit set}`` for bit 0.. of `value`, one entry per name."""
    return {name: bool(value >> bit & 1) for bit, name in enumerate(names)}


def alarm_fields(fault_bits: int, alarm_bits: int) -> dict[str, bool | int]:
    """The ``alarm`` measurement: ``fault_<name>`` and ``alarm_<name>`` booleans for every
    bit, plus ``active_count``."""
    out: dict[str, bool | int] = {}
    for name, on in bit_flags(fault_bits, FAULT_NAMES).items():
        out[f"fault_{name}"] = on
    for name, on in bit_flags(alarm_bits, ALARM_NAMES).items():
        out[f"alarm_{name}"] = on
    active = bin(fault_bits & 0xFFFF).count("1") + bin(alarm_bits & 0xFFFFFF).count("1")
    out["active_count"] = active
    return out


@dataclass(frozen=True)
class DipSwitches:
    """dip_all decoded: bit k is switch k+1 (True = ON)."""

    word: int

    @property
    def switches(self) -> tuple[bool, ...]:
        return tuple(bool(self.word >> k & 1) for k in range(8))

    @property
    def system_voltage(self) -> str:
        s = self.switches
        return SYSTEM_VOLTAGES[(s[1], s[2])]

    @property
    def charging_program(self) -> int:
        """1-8 from switches 4-5-6, switch 4 most significant; 8 = custom (EEPROM)."""
        s = self.switches
        return 1 + (s[3] << 2 | s[4] << 1 | s[5])


# --- scalar conversions -------------------------------------------------------------------------


def s16(word: int) -> int:
    """The word as a two's-complement signed number."""
    return word - 0x10000 if word >= 0x8000 else word


def u32_hi_first(hi: int, lo: int) -> int:
    """Two RAM words, HI word at the lower address (hourmeter, alarms, Ah counters)."""
    return hi << 16 | lo


def scaling(hi: int, lo: int) -> float:
    """V_PU or I_PU: whole part plus a binary fraction in 1/65536 (not 1/32768)."""
    return hi + lo / 65536


def voltage(word: int, v_pu: float) -> float:
    return round(s16(word) * v_pu / 32768, 4)


def current(word: int, i_pu: float) -> float:
    return round(s16(word) * i_pu / 32768, 4)


def power(word: int, v_pu: float, i_pu: float) -> float:
    """Powers are unsigned and scale with V_PU·I_PU/2^17."""
    return round(word * v_pu * i_pu / 131072, 3)


def fixed_voltage(word: int, full_scale: float) -> float:
    """Internal supplies: s16·full_scale/32768 (18.612 for 12 V and MeterBus, 6.6 for 3 V,
    3 for 1.8 V and the reference)."""
    return round(s16(word) * full_scale / 32768, 4)


def percent_of_voc(word: int) -> float:
    return round(word * 100 / 65536, 3)


def tempcomp(word: int, v_pu: float) -> float:
    """EV_tempcomp: the stored magnitude, returned with its implied negative sign (V/°C)."""
    return round(-(word * v_pu / 65536), 5)


def version_bcd(word: int) -> str:
    """ver_sw: BCD digits in one word (0x0142 → "142"); non-BCD nibbles show as hex."""
    return f"{word:x}"


P12_FULL_SCALE = 18.612
P3_FULL_SCALE = 6.6
P18_FULL_SCALE = 3.0


def _check_words(words: Sequence[int], need: int, what: str) -> None:
    if len(words) < need:
        raise FramingError(f"{what}: {len(words)} words, need {need}")
    for w in words[:need]:
        if not isinstance(w, int) or not 0 <= w <= 0xFFFF:
            raise FramingError(f"{what}: {w!r} is not a 16-bit word")


# --- RAM ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ram:
    """RAM 0x0000-0x004F (and 0x0058-0x005B when read) in engineering units."""

    v_pu: float
    i_pu: float
    ver_sw: str
    # filtered ADC
    adc_vb_f_med: float
    adc_vbterm_f: float
    adc_vbs_f: float
    adc_va_f: float
    adc_ib_f_shadow: float
    adc_ia_f_shadow: float
    adc_p12_f: float
    adc_p3_f: float
    adc_pmeter_f: float
    adc_p18_f: float
    adc_v_ref: float
    # temperatures, °C; t_rts None when no sensor is fitted
    t_hs: int
    t_rts: int | None
    t_batt: int
    # status
    adc_vb_f_1m: float
    adc_ib_f_1m: float
    vb_min: float
    vb_max: float
    hourmeter: int
    fault_all: int
    alarm: int
    dip_all: int
    led_state: int
    # charger
    charge_state: int
    vb_ref: float
    ahc_r: float
    ahc_t: float
    kwhc_r: int
    kwhc_t: int
    # MPPT
    power_out: float
    power_in: float
    sweep_pin_max: float
    sweep_vmp: float
    sweep_voc: float
    # logger: today's values
    vb_min_daily: float
    vb_max_daily: float
    va_max_daily: float
    ahc_daily: float
    whc_daily: int
    flags_daily: int
    pout_max_daily: float
    tb_min_daily: int
    tb_max_daily: int
    fault_daily: int
    alarm_daily: int
    time_ab_daily: int
    time_eq_daily: int
    time_fl_daily: int
    # manual control (only when 92 words were read)
    ib_ref_slave: float | None = None
    vb_ref_slave: float | None = None
    va_ref_fixed: float | None = None
    va_ref_fixed_pct: float | None = None

    @property
    def dip(self) -> DipSwitches:
        return DipSwitches(self.dip_all)


def decode_ram(words: Sequence[int]) -> Ram:
    """RAM words read from 0x0000 (at least 80). Raises FramingError for a short or
    malformed block and UnexpectedAnswerError for a zero scaling word (no TS-MPPT
    answers that: the words came from something else)."""
    _check_words(words, RAM_POLL_WORDS, "RAM block")
    w = words
    v_pu = scaling(w[V_PU_HI], w[V_PU_LO])
    i_pu = scaling(w[I_PU_HI], w[I_PU_LO])
    if v_pu <= 0 or i_pu <= 0:
        raise UnexpectedAnswerError(f"scaling V_PU={v_pu} I_PU={i_pu}: not a TriStar MPPT")

    def v(i: int) -> float:
        return voltage(w[i], v_pu)

    def a(i: int) -> float:
        return current(w[i], i_pu)

    def p(i: int) -> float:
        return power(w[i], v_pu, i_pu)

    manual: dict[str, float] = {}
    if len(words) >= RAM_WORDS:
        _check_words(words, RAM_WORDS, "RAM block")
        manual = dict(ib_ref_slave=a(IB_REF_SLAVE), vb_ref_slave=v(VB_REF_SLAVE),
                      va_ref_fixed=v(VA_REF_FIXED),
                      va_ref_fixed_pct=percent_of_voc(w[VA_REF_FIXED_PCT]))
    return Ram(
        v_pu=v_pu, i_pu=i_pu, ver_sw=version_bcd(w[VER_SW]),
        adc_vb_f_med=v(ADC_VB_F_MED), adc_vbterm_f=v(ADC_VBTERM_F), adc_vbs_f=v(ADC_VBS_F),
        adc_va_f=v(ADC_VA_F), adc_ib_f_shadow=a(ADC_IB_F_SHADOW),
        adc_ia_f_shadow=a(ADC_IA_F_SHADOW),
        adc_p12_f=fixed_voltage(w[ADC_P12_F], P12_FULL_SCALE),
        adc_p3_f=fixed_voltage(w[ADC_P3_F], P3_FULL_SCALE),
        adc_pmeter_f=fixed_voltage(w[ADC_PMETER_F], P12_FULL_SCALE),
        adc_p18_f=fixed_voltage(w[ADC_P18_F], P18_FULL_SCALE),
        adc_v_ref=fixed_voltage(w[ADC_V_REF], P18_FULL_SCALE),
        t_hs=s16(w[T_HS]),
        t_rts=None if w[T_RTS] in RTS_DISCONNECTED else s16(w[T_RTS]),
        t_batt=s16(w[T_BATT]),
        adc_vb_f_1m=v(ADC_VB_F_1M), adc_ib_f_1m=a(ADC_IB_F_1M),
        vb_min=v(VB_MIN), vb_max=v(VB_MAX),
        hourmeter=u32_hi_first(w[HOURMETER_HI], w[HOURMETER_LO]),
        fault_all=w[FAULT_ALL], alarm=u32_hi_first(w[ALARM_HI], w[ALARM_LO]),
        dip_all=w[DIP_ALL], led_state=w[LED_STATE],
        charge_state=w[CHARGE_STATE], vb_ref=v(VB_REF),
        ahc_r=round(u32_hi_first(w[AHC_R_HI], w[AHC_R_LO]) * 0.1, 1),
        ahc_t=round(u32_hi_first(w[AHC_T_HI], w[AHC_T_LO]) * 0.1, 1),
        kwhc_r=w[KWHC_R], kwhc_t=w[KWHC_T],
        power_out=p(POWER_OUT), power_in=p(POWER_IN), sweep_pin_max=p(SWEEP_PIN_MAX),
        sweep_vmp=v(SWEEP_VMP), sweep_voc=v(SWEEP_VOC),
        vb_min_daily=v(VB_MIN_DAILY), vb_max_daily=v(VB_MAX_DAILY),
        va_max_daily=v(VA_MAX_DAILY), ahc_daily=round(w[AHC_DAILY] * 0.1, 1),
        whc_daily=w[WHC_DAILY], flags_daily=w[FLAGS_DAILY], pout_max_daily=p(POUT_MAX_DAILY),
        tb_min_daily=s16(w[TB_MIN_DAILY]), tb_max_daily=s16(w[TB_MAX_DAILY]),
        fault_daily=w[FAULT_DAILY],
        alarm_daily=u32_hi_first(w[ALARM_DAILY_HI], w[ALARM_DAILY_LO]),
        time_ab_daily=w[TIME_AB_DAILY], time_eq_daily=w[TIME_EQ_DAILY],
        time_fl_daily=w[TIME_FL_DAILY],
        **manual,
    )


# --- EEPROM charge settings 0xE000-0xE021 -------------------------------------------------------

#: (offset, name, kind, unit) for every used word; kinds: v (V_PU), a (I_PU), s (seconds),
#: d (days), c (°C, signed), n (plain number), tc (temperature compensation), pct (% of Voc)
SETTINGS_MAP: tuple[tuple[int, str, str, str], ...] = (
    (0x00, "ev_absorp", "v", "V"),
    (0x01, "ev_float", "v", "V"),
    (0x02, "et_absorp", "s", "s"),
    (0x03, "et_absorp_ext", "s", "s"),
    (0x04, "ev_absorp_ext", "v", "V"),
    (0x05, "ev_float_cancel", "v", "V"),
    (0x06, "et_float_exit_cum", "s", "s"),
    (0x07, "ev_eq", "v", "V"),
    (0x08, "et_eqcalendar", "d", "days"),
    (0x09, "et_eq_above", "s", "s"),
    (0x0A, "et_eq_reg", "s", "s"),
    (0x0B, "et_batt_service", "d", "days"),
    (0x0D, "ev_tempcomp", "tc", "V/°C"),
    (0x0E, "ev_hvd", "v", "V"),
    (0x0F, "ev_hvr", "v", "V"),
    (0x10, "evb_ref_lim", "v", "V"),
    (0x11, "etb_max", "c", "°C"),
    (0x12, "etb_min", "c", "°C"),
    (0x15, "ev_soc_g_gy", "v", "V"),
    (0x16, "ev_soc_gy_y", "v", "V"),
    (0x17, "ev_soc_y_yr", "v", "V"),
    (0x18, "ev_soc_yr_r", "v", "V"),
    (0x19, "emodbus_id", "n", ""),
    (0x1A, "emeterbus_id", "n", ""),
    (0x1D, "eib_lim", "a", "A"),
    (0x20, "eva_ref_fixed_init", "v", "V"),
    (0x21, "eva_ref_fixed_pct_init", "pct", "%"),
)


def decode_settings(words: Sequence[int], v_pu: float, i_pu: float) -> dict[str, float | int]:
    """The 34 words from 0xE000 as ``{register name: value}`` (V, A, s, days, °C, V/°C, %)."""
    _check_words(words, SETTINGS_WORDS, "charge settings")
    out: dict[str, float | int] = {}
    for offset, name, kind, _unit in SETTINGS_MAP:
        word = words[offset]
        if kind == "v":
            out[name] = voltage(word, v_pu)
        elif kind == "a":
            out[name] = current(word, i_pu)
        elif kind == "c":
            out[name] = float(s16(word))
        elif kind == "tc":
            out[name] = tempcomp(word, v_pu)
        elif kind == "pct":
            out[name] = percent_of_voc(word)
        else:
            out[name] = word
    return out


# --- EEPROM read-only: statistics and identity --------------------------------------------------


@dataclass(frozen=True)
class EepromStats:
    """0xE080-0xE08C. The 32-bit values here are LO word first, unlike RAM."""

    ehourmeter: int
    eahc_r: float
    eahc_t: float
    ekwhc_r: int
    ekwhc_t: int
    evb_min: float
    evb_max: float
    eva_max: float
    etmr_eqcalendar: int
    etmr_batt_service: int


def decode_eeprom_stats(words: Sequence[int], v_pu: float) -> EepromStats:
    _check_words(words, EEPROM_STATS_WORDS, "EEPROM statistics")
    w = words
    return EepromStats(
        ehourmeter=u32_hi_first(w[1], w[0]),
        eahc_r=round(u32_hi_first(w[3], w[2]) * 0.1, 1),
        eahc_t=round(u32_hi_first(w[5], w[4]) * 0.1, 1),
        ekwhc_r=w[6], ekwhc_t=w[7],
        evb_min=voltage(w[8], v_pu), evb_max=voltage(w[9], v_pu), eva_max=voltage(w[10], v_pu),
        etmr_eqcalendar=w[11], etmr_batt_service=w[12],
    )


@dataclass(frozen=True)
class Identity:
    serial: str
    model_code: int
    hardware_version: str

    @property
    def model(self) -> str:
        return MODELS.get(self.model_code, f"unknown_{self.model_code}")


def decode_identity(words: Sequence[int]) -> Identity:
    """0xE0C0-0xE0CD: serial (8 ASCII characters, the first in the LOW byte of each word),
    model, hardware version (major in the high byte, minor in the low byte)."""
    _check_words(words, IDENTITY_WORDS, "identity")
    raw = bytes(b for w in words[:4] for b in (w & 0xFF, w >> 8))
    serial = "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in raw.rstrip(b"\x00 "))
    hw = words[13]
    return Identity(serial=serial, model_code=words[12], hardware_version=f"{hw >> 8}.{hw & 0xFF}")


# --- encoders (simulator side) ------------------------------------------------------------------


def word_s16(value: int) -> int:
    """A signed number as the unsigned word pattern the wire carries (clamped)."""
    return max(-0x8000, min(0x7FFF, int(value))) & 0xFFFF


def encode_scaling(value: float) -> tuple[int, int]:
    hi = int(value)
    lo = round((value - hi) * 65536)
    if lo == 65536:
        hi, lo = hi + 1, 0
    return hi, lo


def encode_voltage(volts: float, v_pu: float) -> int:
    return word_s16(round(volts * 32768 / v_pu))


def encode_current(amps: float, i_pu: float) -> int:
    return word_s16(round(amps * 32768 / i_pu))


def encode_power(watts: float, v_pu: float, i_pu: float) -> int:
    return max(0, min(0xFFFF, round(watts * 131072 / (v_pu * i_pu))))


def encode_fixed_voltage(volts: float, full_scale: float) -> int:
    return word_s16(round(volts * 32768 / full_scale))


def encode_percent_of_voc(pct: float) -> int:
    return max(0, min(0xFFFF, round(pct * 65536 / 100)))


def encode_tempcomp(v_per_c: float, v_pu: float) -> int:
    """From the coefficient (sign ignored: the register holds the magnitude)."""
    return max(0, min(0xFFFF, round(abs(v_per_c) * 65536 / v_pu)))


def split_u32(value: int) -> tuple[int, int]:
    """(HI, LO) words of a 32-bit value."""
    value = max(0, min(0xFFFFFFFF, int(value)))
    return value >> 16, value & 0xFFFF


def encode_bcd(text: str) -> int:
    """ver_sw from its digits ("142" → 0x0142)."""
    return int(text, 16) & 0xFFFF


def encode_serial(serial: str) -> list[int]:
    raw = serial.encode("ascii", "replace")[:8].ljust(8, b"\x00")
    return [raw[i] | raw[i + 1] << 8 for i in range(0, 8, 2)]
