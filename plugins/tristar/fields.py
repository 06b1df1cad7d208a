"""Every field the TriStar MPPT plugin emits: the schema tests and the README table check
against this list, and ``bmslogger describe tristar`` prints it."""

from __future__ import annotations

from bmslogger.model import FieldSpec

from .protocol import ALARM_NAMES, DAILY_FLAG_NAMES, FAULT_NAMES, SETTINGS_MAP

_CHARGER = (
    ("battery_voltage_v", "float", "V", "battery voltage used for regulation (adc_vb_f_med)"),
    ("array_voltage_v", "float", "V", "solar array voltage (adc_va_f)"),
    ("battery_current_a", "float", "A", "charge current into the battery, slightly negative at "
     "night (adc_ib_f_shadow)"),
    ("array_current_a", "float", "A", "array current, ±20 % (adc_ia_f_shadow)"),
    ("output_power_w", "float", "W", "power into the battery (power_out_shadow)"),
    ("input_power_w", "float", "W", "power from the array (power_in_shadow)"),
    ("heatsink_temperature_c", "float", "°C", "heatsink (T_hs)"),
    ("battery_temperature_c", "float", "°C", "temperature used for regulation: the RTS, or 25 "
     "without one (T_batt)"),
    ("charge_state", "str", "", "charge stage: start, night_check, disconnect, night, fault, "
     "mppt, absorption, float, equalize, slave (charge_state)"),
    ("target_voltage_v", "float", "V", "regulation target, temperature compensated, 0 when not "
     "charging (vb_ref)"),
    ("charging", "bool", "", "charge state is mppt, absorption, float, equalize or slave"),
)

_FAULT_TEXT = {
    "overcurrent": "overcurrent", "fets_shorted": "FETs shorted",
    "software_bug": "software bug", "battery_hvd": "battery high-voltage disconnect",
    "array_hvd": "array high-voltage disconnect",
    "dip_switch_changed": "settings switch changed while powered",
    "custom_settings_edit": "EEPROM settings written; charging stops until a reset",
    "rts_shorted": "remote temperature sensor shorted",
    "rts_disconnected": "remote temperature sensor disconnected",
    "eeprom_retry_limit": "EEPROM retry limit", "reserved_bit10": "reserved bit 10",
    "slave_control_timeout": "vb_ref_slave not refreshed in time",
}
_ALARM_TEXT = {
    "rts_open": "RTS open", "rts_shorted": "RTS shorted",
    "rts_disconnected": "RTS disconnected",
    "heatsink_sensor_open": "heatsink temperature sensor open",
    "heatsink_sensor_shorted": "heatsink temperature sensor shorted",
    "high_temperature_current_limit": "current limited by high temperature",
    "current_limit": "current limit", "current_offset": "current offset",
    "battery_sense_out_of_range": "battery sense out of range",
    "battery_sense_disconnected": "battery sense disconnected",
    "uncalibrated": "uncalibrated", "rts_miswire": "RTS miswire",
    "high_voltage_disconnect": "high voltage disconnect", "system_miswire": "system miswire",
    "mosfet_open": "MOSFET open", "p12_voltage_off": "12 V supply off",
    "high_input_voltage_current_limit": "current limited by high input voltage",
    "adc_input_max": "ADC input at maximum", "controller_was_reset": "controller was reset",
}


def _alarm_fields(measurement: str, source: str) -> list[FieldSpec]:
    out = []
    for bit, name in enumerate(FAULT_NAMES):
        text = _FAULT_TEXT.get(name, f"undefined fault bit {bit}")
        out.append(FieldSpec(measurement, f"fault_{name}", "bool", "",
                             f"{text} (fault bit {bit}, {source[0]})"))
    for bit, name in enumerate(ALARM_NAMES):
        text = _ALARM_TEXT.get(name, f"undefined alarm bit {bit}")
        out.append(FieldSpec(measurement, f"alarm_{name}", "bool", "",
                             f"{text} (alarm bit {bit}, {source[1]})"))
    out.append(FieldSpec(measurement, "active_count", "int", "",
                         "fault and alarm bits set"))
    return out


_SETTING_UNITS = {"v": ("float", "V"), "a": ("float", "A"), "s": ("int", "s"),
                  "d": ("int", "days"), "c": ("float", "°C"), "n": ("int", ""),
                  "tc": ("float", "V/°C"), "pct": ("float", "%")}
_SETTING_SUFFIX = {"v": "_v", "a": "_a", "s": "_s", "d": "_days", "c": "_c", "n": "",
                   "tc": "_v_per_c", "pct": "_pct"}


def setting_field(name: str, kind: str) -> str:
    """The tristar_settings field name of an EEPROM register: its name plus its unit."""
    return name + _SETTING_SUFFIX[kind]


FIELDS: tuple[FieldSpec, ...] = (
    *(FieldSpec("charger", n, t, u, d) for n, t, u, d in _CHARGER),
    *_alarm_fields("alarm", ("fault_all", "alarm_HI/LO")),
    # instantaneous groups
    FieldSpec("tristar_adc", "adc_vbterm_f_v", "float", "V", "voltage at the battery terminals"),
    FieldSpec("tristar_adc", "adc_vbs_f_v", "float", "V", "voltage on the battery-sense input"),
    FieldSpec("tristar_adc", "adc_p12_f_v", "float", "V", "internal 12 V supply"),
    FieldSpec("tristar_adc", "adc_p3_f_v", "float", "V", "internal 3 V supply"),
    FieldSpec("tristar_adc", "adc_pmeter_f_v", "float", "V", "MeterBus supply voltage"),
    FieldSpec("tristar_adc", "adc_p18_f_v", "float", "V", "internal 1.8 V supply"),
    FieldSpec("tristar_adc", "adc_v_ref_v", "float", "V", "ADC reference voltage"),
    FieldSpec("tristar_temperatures", "t_rts_c", "float", "°C",
              "remote temperature sensor (absent when none is connected)"),
    FieldSpec("tristar_temperatures", "rts_connected", "bool", "",
              "a remote temperature sensor is connected (T_rts is not 0x80)"),
    FieldSpec("tristar_status", "v_pu_v", "float", "V", "voltage scaling V_PU"),
    FieldSpec("tristar_status", "i_pu_a", "float", "A", "current scaling I_PU"),
    FieldSpec("tristar_status", "ver_sw", "str", "", "controller firmware version (BCD digits)"),
    FieldSpec("tristar_status", "adc_vb_f_1m_v", "float", "V", "battery voltage, 1-minute filter"),
    FieldSpec("tristar_status", "adc_ib_f_1m_a", "float", "A", "charge current, 1-minute filter"),
    FieldSpec("tristar_status", "vb_min_v", "float", "V", "long-term minimum battery voltage"),
    FieldSpec("tristar_status", "vb_max_v", "float", "V", "long-term maximum battery voltage"),
    FieldSpec("tristar_status", "hourmeter_h", "int", "h", "hours of operation (HI word first)"),
    FieldSpec("tristar_status", "fault_all", "int", "", "active faults as a number (bits in "
              "the alarm measurement)"),
    FieldSpec("tristar_status", "alarm", "int", "", "active alarms, 24 bits, HI word first"),
    FieldSpec("tristar_status", "dip_all", "int", "", "settings switches, bit 0 = switch 1"),
    *(FieldSpec("tristar_status", f"dip_switch_{k}", "bool", "", f"settings switch {k} is ON")
      for k in range(1, 9)),
    FieldSpec("tristar_status", "dip_system_voltage", "str", "",
              "system voltage set by switches 2-3: auto, 12v, 24v, 48v"),
    FieldSpec("tristar_status", "dip_charging_program", "int", "",
              "charging program 1-8 set by switches 4-6 (8 = custom, EEPROM)"),
    FieldSpec("tristar_status", "led_state", "str", "", "LED indication (led_state enum)"),
    FieldSpec("tristar_status", "led_state_code", "int", "", "LED indication, raw value"),
    FieldSpec("tristar_charger", "charge_state_code", "int", "", "charge state, raw value"),
    FieldSpec("tristar_charger", "ahc_r_ah", "float", "Ah", "charge Ah, resettable"),
    FieldSpec("tristar_charger", "ahc_t_ah", "float", "Ah", "charge Ah, lifetime total"),
    FieldSpec("tristar_charger", "kwhc_r_kwh", "float", "kWh", "charge kWh, resettable"),
    FieldSpec("tristar_charger", "kwhc_t_kwh", "float", "kWh", "charge kWh, lifetime total"),
    FieldSpec("tristar_mppt", "sweep_pin_max_w", "float", "W",
              "maximum array power found by the last sweep"),
    FieldSpec("tristar_mppt", "sweep_vmp_v", "float", "V", "array voltage at that maximum"),
    FieldSpec("tristar_mppt", "sweep_voc_v", "float", "V", "array open-circuit voltage"),
    # daily task
    FieldSpec("tristar_daily", "vb_min_daily_v", "float", "V", "minimum battery voltage today"),
    FieldSpec("tristar_daily", "vb_max_daily_v", "float", "V", "maximum battery voltage today"),
    FieldSpec("tristar_daily", "va_max_daily_v", "float", "V", "maximum array voltage today"),
    FieldSpec("tristar_daily", "ahc_daily_ah", "float", "Ah", "charge Ah today"),
    FieldSpec("tristar_daily", "whc_daily_wh", "float", "Wh", "charge energy today (10 Wh steps)"),
    FieldSpec("tristar_daily", "flags_daily", "int", "", "today's event flags as a number"),
    *(FieldSpec("tristar_daily", f"flag_{name}", "bool", "", f"flags_daily bit {bit}: "
                + name.replace("_", " ")) for bit, name in enumerate(DAILY_FLAG_NAMES)),
    FieldSpec("tristar_daily", "pout_max_daily_w", "float", "W", "maximum output power today"),
    FieldSpec("tristar_daily", "tb_min_daily_c", "float", "°C",
              "minimum battery temperature today"),
    FieldSpec("tristar_daily", "tb_max_daily_c", "float", "°C",
              "maximum battery temperature today"),
    FieldSpec("tristar_daily", "fault_daily", "int", "", "faults that occurred today, as a number"),
    FieldSpec("tristar_daily", "alarm_daily", "int", "", "alarms that occurred today, as a number"),
    FieldSpec("tristar_daily", "time_ab_daily_s", "int", "s", "time in absorption today"),
    FieldSpec("tristar_daily", "time_eq_daily_s", "int", "s", "time in equalize today"),
    FieldSpec("tristar_daily", "time_fl_daily_s", "int", "s", "time in float today"),
    *_alarm_fields("tristar_daily_alarm", ("fault_daily", "alarm_daily")),
    *(FieldSpec("tristar_settings", setting_field(name, kind), *_SETTING_UNITS[kind],
                f"EEPROM 0x{0xE000 + offset:04X} {name}")
      for offset, name, kind, _unit in SETTINGS_MAP),
    FieldSpec("tristar_info", "serial", "str", "", "serial number (Eserial)"),
    FieldSpec("tristar_info", "model", "str", "", "TS-MPPT-30, -45 or -60 (Emodel)"),
    FieldSpec("tristar_info", "hardware_version", "str", "", "hardware version major.minor"),
    FieldSpec("tristar_info", "ver_sw", "str", "", "controller firmware version (BCD digits)"),
    FieldSpec("tristar_info", "ehourmeter_h", "int", "h", "hourmeter in EEPROM (LO word first)"),
    FieldSpec("tristar_info", "eahc_r_ah", "float", "Ah", "resettable charge Ah in EEPROM"),
    FieldSpec("tristar_info", "eahc_t_ah", "float", "Ah", "total charge Ah in EEPROM"),
    FieldSpec("tristar_info", "ekwhc_r_kwh", "float", "kWh", "resettable kWh in EEPROM"),
    FieldSpec("tristar_info", "ekwhc_t_kwh", "float", "kWh", "total kWh in EEPROM"),
    FieldSpec("tristar_info", "evb_min_v", "float", "V", "stored minimum battery voltage"),
    FieldSpec("tristar_info", "evb_max_v", "float", "V", "stored maximum battery voltage"),
    FieldSpec("tristar_info", "eva_max_v", "float", "V", "stored maximum array voltage"),
    FieldSpec("tristar_info", "etmr_eqcalendar_days", "int", "days", "days since the last "
              "equalize"),
    FieldSpec("tristar_info", "etmr_batt_service_days", "int", "days", "battery-service timer"),
)
