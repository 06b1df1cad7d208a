"""Every field the EMUS driver emits, with its type and unit: the README's field table,
``bmslogger describe emus`` and the schema test all read this one list."""

from __future__ import annotations

from bmslogger.model import FieldSpec

from .protocol import PIN_FUNCTIONS, PROTECTION_BITS, REDUCTION_BITS, STATUS_BITS

_PROTECTION_TEXT = {
    "cell_undervoltage": "cell under-voltage protection",
    "cell_overvoltage": "cell over-voltage protection",
    "discharge_overcurrent": "discharge over-current protection",
    "charge_overcurrent": "charge over-current protection",
    "module_overheat": "cell-module overheat protection",
    "leakage": "leakage (insulation) protection",
    "no_cell_comm": "no communication with the cells",
    "ms_config_error": "master/slave configuration error (bit 7, from the CAN protocol)",
    "ms_internal_can_error": "master/slave internal CAN error (bit 8, from CAN)",
    "ms_common_can_error": "master/slave common CAN error (bit 9, from CAN)",
    "charger_connected_flag": "bit 10, \"charger connected\" per the CAN protocol",
    "cell_overheat": "cell overheat protection (bit 11)",
    "no_current_sensor": "no current sensor (bit 12, from CAN)",
    "pack_undervoltage": "pack under-voltage (bit 13, from CAN)",
    "pack_overvoltage": "pack over-voltage (bit 14, from CAN)",
    "cell_undertemperature": "cell too cold (bit 15, from CAN)",
}
_REDUCTION_TEXT = {
    "low_cell_voltage_warning": "power reduced: low cell voltage",
    "high_current_warning": "power reduced: high discharge current",
    "high_module_temperature_warning": "power reduced: high cell-module temperature",
    "ms_config_mismatch_warning": "master/slave configuration mismatch (bit 3, from CAN)",
    "ms_bus_malfunction_warning": "master/slave common bus malfunction (bit 4, from CAN)",
    "high_cell_temperature_warning": "power reduced: high cell temperature",
}
_STATUS_TEXT = {
    "cell_voltages_valid": "cell voltages are valid (bit 0; bit order tentative)",
    "module_temperatures_valid": "cell-module temperatures are valid (bit 1)",
    "balancing_rates_valid": "balancing rates are valid (bit 2)",
    "live_cells_valid": "number of live cells is valid (bit 3)",
    "charging_finished": "battery charging finished (bit 4)",
    "cell_temperatures_valid": "cell temperatures are valid (bit 5)",
}
_DT1 = (
    ("speed_kmh", "km/h", "speed"),
    ("distance_since_charge_km", "km", "distance since the last charge"),
    ("consumption_wh_per_km", "Wh/km", "momentary energy consumption"),
    ("distance_left_km", "km", "estimated distance left"),
    ("last_charge_energy_wh", "Wh", "energy of the last charge"),
    ("last_discharge_energy_wh", "Wh", "energy of the last discharge"),
    ("last_trip_consumption_wh_per_km", "Wh/km", "average consumption of the last trip"),
    ("distance_left_last_trip_km", "km", "distance left at the last trip's consumption"),
    ("avg_discharge_energy_wh", "Wh", "average discharge energy"),
    ("max_discharge_energy_wh", "Wh", "largest discharge energy"),
    ("trip_consumption_wh_per_km", "Wh/km", "average consumption of the current trip"),
    ("distance_left_avg_km", "km", "distance left at the average consumption"),
)

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("battery", "voltage_v", "float", "V", "pack voltage (CV1; BV1 total if CV1 "
              "is not read)"),
    FieldSpec("battery", "current_a", "float", "A", "pack current, + while charging (CV1)"),
    FieldSpec("battery", "charging", "bool", "", "current above 0 A (CV1)"),
    FieldSpec("battery", "power_w", "float", "W", "voltage * current, + while charging"),
    FieldSpec("battery", "soc_pct", "float", "%", "state of charge (BC1)"),
    FieldSpec("battery", "remaining_ah", "float", "Ah", "charge left (BC1, coulombs / 3600)"),
    FieldSpec("battery", "full_ah", "float", "Ah", "battery capacity (BC1, coulombs / 3600)"),
    FieldSpec("battery", "cell_min_v", "float", "V", "lowest cell (BV1)"),
    FieldSpec("battery", "cell_max_v", "float", "V", "highest cell (BV1)"),
    FieldSpec("battery", "cell_avg_v", "float", "V", "average cell (BV1)"),
    FieldSpec("battery", "cell_delta_v", "float", "V", "highest minus lowest cell (BV1)"),
    FieldSpec("battery", "temp_min_c", "float", "°C", "coolest cell module (BT1)"),
    FieldSpec("battery", "temp_max_c", "float", "°C", "warmest cell module (BT1)"),
    FieldSpec("battery", "balancing_cells", "int", "", "cells with a balancing rate above 0 "
              "(BB2)"),
    FieldSpec("cell", "voltage_v", "float", "V", "cell voltage, tags pack = string, cell = "
              "1..N (BV2)"),
    FieldSpec("cell", "balancing", "bool", "", "balancing rate above 0 (BB2)"),
    FieldSpec("cell", "temperature_c", "float", "°C", "cell-module temperature (BT2)"),
    FieldSpec("temperature", "temperature_c", "float", "°C", "cell temperature sensor, tag "
              "sensor = 1..N (BT4)"),
    *(FieldSpec("alarm", n, "bool", "", _PROTECTION_TEXT[n] + " (ST1 field 6)")
      for n in PROTECTION_BITS),
    *(FieldSpec("alarm", n, "bool", "", _REDUCTION_TEXT[n] + " (ST1 field 7)")
      for n in REDUCTION_BITS if n),
    FieldSpec("alarm", "active_count", "int", "", "protection and power-reduction bits set, "
              "named or not"),
    FieldSpec("alarm", "unknown_count", "int", "", "set power-reduction bits without a name "
              "(bits 6, 7)"),
    FieldSpec("emus_cell", "balancing_pct", "float", "%", "balancing rate of the cell, tags "
              "as cell (BB2)"),
    FieldSpec("emus_pack", "cells", "int", "", "cells the unit counts (BV1)"),
    FieldSpec("emus_pack", "module_temp_avg_c", "float", "°C", "average cell-module "
              "temperature (BT1)"),
    FieldSpec("emus_pack", "balancing_min_pct", "float", "%", "lowest balancing rate (BB1)"),
    FieldSpec("emus_pack", "balancing_max_pct", "float", "%", "highest balancing rate (BB1)"),
    FieldSpec("emus_pack", "balancing_avg_pct", "float", "%", "average balancing rate (BB1)"),
    FieldSpec("emus_pack", "balancing_threshold_v", "float", "V", "balancing voltage "
              "threshold (BB1)"),
    FieldSpec("emus_pack", "cell_sensors", "int", "", "cell temperature sensors (BT3)"),
    FieldSpec("emus_pack", "cell_temp_min_c", "float", "°C", "coolest cell sensor (BT3)"),
    FieldSpec("emus_pack", "cell_temp_max_c", "float", "°C", "warmest cell sensor (BT3)"),
    FieldSpec("emus_pack", "cell_temp_avg_c", "float", "°C", "average cell sensor (BT3)"),
    FieldSpec("emus_pack", "charge_c", "int", "C", "charge left in coulombs, as sent (BC1)"),
    FieldSpec("emus_pack", "capacity_c", "int", "C", "capacity in coulombs, as sent (BC1)"),
    FieldSpec("emus_charging", "stage", "str", "", "disconnected, pre_heating, pre_charging, "
              "main_charging, balancing, finished, error or unknown (ST1 field 1)"),
    FieldSpec("emus_charging", "stage_code", "int", "", "charging stage number (ST1 field 1)"),
    FieldSpec("emus_charging", "error", "str", "", "last charging error by name, \"none\" or "
              "unknown (ST1 field 2)"),
    FieldSpec("emus_charging", "error_code", "int", "", "last charging error number (ST1 "
              "field 2)"),
    FieldSpec("emus_charging", "error_param", "int", "", "charging error detail (ST1 field 3)"),
    FieldSpec("emus_charging", "stage_duration_s", "int", "s", "time in the current stage "
              "(ST1 field 4)"),
    FieldSpec("emus_charging", "chargers", "int", "", "CAN chargers connected (CS1)"),
    FieldSpec("emus_charging", "charger_status", "int", "", "CAN charger status flags (CS1)"),
    FieldSpec("emus_charging", "set_voltage_v", "float", "V", "charger set voltage (CS1)"),
    FieldSpec("emus_charging", "set_current_a", "float", "A", "charger set current (CS1)"),
    FieldSpec("emus_charging", "actual_voltage_v", "float", "V", "charger output voltage "
              "(CS1)"),
    FieldSpec("emus_charging", "actual_current_a", "float", "A", "charger output current "
              "(CS1)"),
    FieldSpec("emus_flags", "status_flags", "int", "", "ST1 field 5, every bit"),
    FieldSpec("emus_flags", "protection_flags", "int", "", "ST1 field 6, every bit"),
    FieldSpec("emus_flags", "reduction_flags", "int", "", "ST1 field 7, every bit"),
    *(FieldSpec("emus_flags", n, "bool", "", _STATUS_TEXT[n] + " (ST1 field 5)")
      for n in STATUS_BITS),
    FieldSpec("emus_pins", "pin_flags", "int", "", "ST1 field 8, every bit"),
    *(FieldSpec("emus_pins", n, "bool", "", f"a pin assigned to function {i} "
                f"({n.replace('_', ' ')}) is active (ST1 field 8 bit {i})")
      for i, n in enumerate(PIN_FUNCTIONS)),
    *(FieldSpec("emus_pins", f"outputs_{i}", "int", "", f"OT1 field {i}, raw bits (meaning "
                "tentative)") for i in range(1, 5)),
    FieldSpec("emus_pins", "inputs_1", "int", "", "IN1 field 1, raw bits (meaning tentative)"),
    *(FieldSpec("emus_distance", key, "float", unit, text + " (DT1)")
      for key, unit, text in _DT1),
    FieldSpec("emus_info", "hardware", "str", "", "hardware type (VR1)"),
    FieldSpec("emus_info", "serial", "str", "", "serial number, as sent (VR1)"),
    FieldSpec("emus_info", "firmware", "str", "", "firmware version (VR1)"),
    FieldSpec("emus_info", "clock", "str", "", "the unit's clock, YYYY-MM-DDTHH:MM:SS (TD1)"),
    FieldSpec("emus_info", "uptime_s", "int", "s", "time since the unit started (TD1)"),
    FieldSpec("emus_can", "current_sensor", "str", "", "CAN current sensor: not_configured, "
              "ok, error, no_response or unknown (CG1 field 1)"),
    FieldSpec("emus_can", "field_2", "int", "", "CG1 field 2, meaning unknown"),
    *(f for n in range(1, 33) for f in (
        FieldSpec("emus_can", f"group{n}_cells", "int", "", f"cells of CAN cell group {n} "
                  "(CG1)"),
        FieldSpec("emus_can", f"group{n}_status", "str", "", f"status of CAN cell group {n}, "
                  "as current_sensor (CG1)"),
    )),
    *(f for n in range(1, 6) for f in (
        FieldSpec("emus_resets", f"reset{n}_time", "str", "", f"time of reset record {n} "
                  "(RS2)"),
        FieldSpec("emus_resets", f"reset{n}_flags", "int", "", f"reset sources of record {n}: "
                  "bit 0 power-on, 1 external, 2 brown-out, 3 watchdog, 4 JTAG, 5 stack "
                  "overflow, 6 user (RS2)"),
    )),
    FieldSpec("emus_statistic", "value", "float", "", "the statistic in its unit (named by "
              "tag statistic; SS1)"),
    FieldSpec("emus_statistic", "raw", "int", "", "the value as sent (SS1 field 2)"),
    FieldSpec("emus_statistic", "info", "int", "", "additional information, e.g. a cell "
              "number (SS1 field 3)"),
    FieldSpec("emus_statistic", "time", "str", "", "when it was set, unit clock (SS1 "
              "field 4)"),
    FieldSpec("emus_event", "sequence", "int", "", "event number in the log (LG1 field 1)"),
    FieldSpec("emus_event", "code", "int", "", "event code (LG1 field 2)"),
    FieldSpec("emus_event", "event", "str", "", "event by name (LG1 field 2)"),
    FieldSpec("emus_event", "data", "int", "", "LG1 field 3, meaning unknown"),
)
