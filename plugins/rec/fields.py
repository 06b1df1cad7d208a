"""Every field the REC driver emits, with its type and unit: the README's field table,
``bmslogger describe rec`` and the schema test all read this one list."""

from __future__ import annotations

from bmslogger.model import FieldSpec

from .instructions import ERROR_NAMES, ERROR_TEXT, SETTINGS, Instruction

_SUFFIX = {"V": "_v", "°C": "_c", "A": "_a", "A/bit": "_a_per_bit", "Ah": "_ah",
           "fraction": "_ratio", "C": "_c_rate", "": ""}

#: Settings that the schema already has a place for (read on the info schedule).
BATTERY_SETTINGS = {"CAPA": "full_ah", "CYCL": "cycles"}


def setting_field(ins: Instruction) -> str:
    """The rec_settings field of a settable instruction: ``CHAR`` → ``char_v``."""
    return ins.name.lower() + _SUFFIX[ins.unit]


#: rec_settings field per instruction (everything settable but CAPA and CYCL).
SETTING_FIELDS: dict[str, str] = {
    i.name: setting_field(i) for i in SETTINGS if i.name not in BATTERY_SETTINGS
}


def _setting_spec(ins: Instruction) -> FieldSpec:
    unit = "" if ins.unit == "fraction" else ins.unit
    text = f"{ins.meaning} ({ins.name}; settable {ins.range_text})"
    return FieldSpec("rec_settings", SETTING_FIELDS[ins.name],
                     "int" if ins.shape == "int" else "float", unit, text)


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("battery", "voltage_v", "float", "V", "pack voltage (LCD1)"),
    FieldSpec("battery", "current_a", "float", "A", "pack current, + while charging (LCD1)"),
    FieldSpec("battery", "power_w", "float", "W", "voltage * current, + while charging"),
    FieldSpec("battery", "soc_pct", "float", "%", "state of charge (LCD1, 0..1 times 100)"),
    FieldSpec("battery", "soh_pct", "float", "%", "state of health (LCD1, 0..1 times 100)"),
    FieldSpec("battery", "cell_min_v", "float", "V", "lowest cell (CELL; LCD1 if CELL failed)"),
    FieldSpec("battery", "cell_max_v", "float", "V", "highest cell (CELL; LCD1 if CELL failed)"),
    FieldSpec("battery", "cell_avg_v", "float", "V", "mean cell voltage (CELL)"),
    FieldSpec("battery", "cell_delta_v", "float", "V", "highest minus lowest cell"),
    FieldSpec("battery", "temp_min_c", "float", "°C", "lowest sensor (PTEM)"),
    FieldSpec("battery", "temp_max_c", "float", "°C",
              "highest sensor (PTEM; LCD1's max temperature if PTEM failed)"),
    FieldSpec("battery", "full_ah", "float", "Ah",
              "pack capacity setting (CAPA; settable 1..5000 Ah; info schedule)"),
    FieldSpec("battery", "cycles", "int", "",
              "full pack cycles (CYCL; settable counter; info schedule)"),
    FieldSpec("cell", "voltage_v", "float", "V", "cell voltage, tag cell = 1..N (CELL)"),
    FieldSpec("temperature", "temperature_c", "float", "°C",
              "sensor temperature, tag sensor = 1..N (PTEM)"),
    *(FieldSpec("alarm", ERROR_NAMES[n], "bool", "", f"ERRO error {n}: {ERROR_TEXT[n]}")
      for n in sorted(ERROR_NAMES)),
    FieldSpec("alarm", "active_count", "int", "", "1 while ERRO reports an error, else 0"),
    FieldSpec("alarm", "error_code", "int", "", "ERRO error number, 0 = none (raw, any value)"),
    FieldSpec("alarm", "error_unit", "int", "", "ERRO: BMS unit with the error"),
    FieldSpec("alarm", "error_location", "int", "", "ERRO: cell or sensor number concerned"),
    FieldSpec("rec_status", "bms_temperature_c", "float", "°C", "BMS board temperature (BTEM)"),
    FieldSpec("rec_status", "lcd1_min_cell_v", "float", "V", "lowest cell as LCD1 reports it"),
    FieldSpec("rec_status", "lcd1_max_cell_v", "float", "V", "highest cell as LCD1 reports it"),
    FieldSpec("rec_status", "lcd1_max_temperature_c", "float", "°C",
              "highest temperature as LCD1 reports it"),
    FieldSpec("rec_status", "min_cell_unit", "int", "", "BMS unit of the lowest cell (LCD3)"),
    FieldSpec("rec_status", "min_cell_number", "int", "", "number of the lowest cell (LCD3)"),
    FieldSpec("rec_status", "max_cell_unit", "int", "", "BMS unit of the highest cell (LCD3)"),
    FieldSpec("rec_status", "max_cell_number", "int", "", "number of the highest cell (LCD3)"),
    FieldSpec("rec_status", "hottest_sensor_unit", "int", "",
              "BMS unit of the hottest sensor (LCD3)"),
    FieldSpec("rec_status", "hottest_sensor_number", "int", "",
              "number of the hottest sensor (LCD3)"),
    FieldSpec("rec_status", "lcd3_ah", "float", "Ah",
              "LCD3 Ah counter; looks like Ah taken out since full (undocumented)"),
    FieldSpec("rec_status", "bms_units", "int", "", "BMS units the CELL count frame announces"),
    FieldSpec("rec_cell", "internal_resistance_ohm", "float", "Ω",
              "cell internal DC resistance, tag cell = 1..N (RINT; rint_interval schedule)"),
    FieldSpec("rec_info", "identification", "str", "", "identification text (*IDN)"),
    FieldSpec("rec_info", "software_version", "str", "", "firmware version (SWVR)"),
    FieldSpec("rec_info", "hardware_version", "str", "", "hardware version (HWVR)"),
    FieldSpec("rec_info", "adc_reference_v", "float", "V",
              "ADC reference voltage, nominal 5.000 (REFC)"),
    *(_setting_spec(i) for i in SETTINGS if i.name in SETTING_FIELDS),
)
