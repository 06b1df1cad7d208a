"""The REC BMS 1Q instruction table: every name, what it means, its unit, and for the
settable ones the range the installation manual allows.

Plain data, no imports beyond the standard library, because three places read it: the
device description (`WriteSpec`s for ``bmslogger describe`` and ``set``), the codec (which
answer shape each query gets) and the simulator (what it stores and refuses). Facts from
the protocol reference ``/work/shared/protocols/rec.md`` §6.1 and §6.2 (the ranges are
the ones the REC-BMSManager PowerShell tool enforces; confidence medium).
"""

from __future__ import annotations

from dataclasses import dataclass

#: answer shapes (§5): one ASCII frame, or a count frame then a binary frame
TEXT = "text"  #: ASCII string (identification, versions)
FLOAT = "float"  #: ASCII number, scientific notation as sent by the BMS
INT = "int"  #: ASCII number, a count or code
FLOATS = "floats"  #: "N" (BMS units) + little-endian float32 per value (CELL, PTEM, RINT)
BLOCK = "block"  #: "N" (byte count) + N raw bytes (LCD1, LCD3, ERRO)
FLOAT_COUNT = "float_count"  #: "N" (float count) + N float32 (BTEM)

SHAPES = (TEXT, FLOAT, INT, FLOATS, BLOCK, FLOAT_COUNT)


@dataclass(frozen=True)
class Instruction:
    """One instruction. `settable` ones take ``NAME value`` within `min`..`max`."""

    name: str
    meaning: str
    unit: str
    shape: str
    settable: bool = False
    min: float | None = None
    max: float | None = None
    default: float | None = None  #: REC's default sheet for the 1Q VICTRON, if known
    #: a set rewrites history or calibration (counters, SOC, current/cell calibration)
    sensitive: bool = False
    #: bytes of the binary frame for BLOCK answers (the count frame says the same)
    block_len: int = 0

    @property
    def is_array(self) -> bool:
        return self.shape in (FLOATS, BLOCK, FLOAT_COUNT)

    @property
    def range_text(self) -> str:
        """``2.0..4.3 V`` for a settable instruction, "" otherwise."""
        if not self.settable:
            return ""
        unit = f" {self.unit}" if self.unit else ""
        return f"{_num(self.min)}..{_num(self.max)}{unit}"


def _num(x: float | None) -> str:
    if x is None:
        return "?"
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _w(name: str, meaning: str, unit: str, shape: str, lo: float, hi: float,
       default: float | None = None, sensitive: bool = False) -> Instruction:
    return Instruction(name, meaning, unit, shape, True, lo, hi, default, sensitive)


#: §6.1 live data, read-only.
LIVE: tuple[Instruction, ...] = (
    Instruction("*IDN", "identification text", "", TEXT),
    Instruction("LCD1", "main data: min cell V, max cell V, current A, max temperature °C, "
                "pack V, SOC 0..1, SOH 0..1", "", BLOCK, block_len=28),
    Instruction("LCD3", "unit and number of the min cell, max cell and hottest sensor, "
                "and an Ah counter (big-endian)", "", BLOCK, block_len=8),
    Instruction("CELL", "cell voltages, one float per cell", "V", FLOATS),
    Instruction("PTEM", "cell/pack temperature sensors, one float per sensor", "°C", FLOATS),
    Instruction("RINT", "cell internal DC resistance, one float per cell", "Ω", FLOATS),
    Instruction("BTEM", "BMS board temperature", "°C", FLOAT_COUNT),
    Instruction("ERRO", "current error: present, BMS unit, error number, cell or sensor",
                "", BLOCK, block_len=4),
    Instruction("SWVR", "firmware version", "", TEXT),
    Instruction("HWVR", "hardware version", "", TEXT),
    Instruction("REFC", "ADC reference voltage (nominal 5.000 V; read-only)", "V", FLOAT),
)

#: §6.2 settings: query with ``NAME?``, set with ``NAME value``.
SETTINGS: tuple[Instruction, ...] = (
    _w("BVOL", "balancing end voltage", "V", FLOAT, 2.5, 4.3, 3.58),
    _w("BMIN", "balancing start voltage", "V", FLOAT, 2.5, 4.3, 3.45),
    _w("CMAX", "cell over-voltage switch-off", "V", FLOAT, 2.0, 4.3, 3.85),
    _w("MAXH", "over-voltage switch-off hysteresis (per cell)", "V", FLOAT, 0.005, 2.0, 0.25),
    _w("CMIN", "cell under-voltage switch-off", "V", FLOAT, 1.8, 4.0, 2.8),
    _w("MINH", "under-voltage switch-off hysteresis", "V", FLOAT, 0.005, 2.0, 0.1),
    _w("CHAR", "cell end-of-charge voltage", "V", FLOAT, 2.0, 4.3, 3.58),
    _w("CHIS", "end-of-charge hysteresis (per cell)", "V", FLOAT, 0.005, 2.0, 0.25),
    _w("RAZL", "max allowed cell voltage difference", "V", FLOAT, 0.005, 1.0, 0.25),
    _w("TMAX", "cell over-temperature switch-off", "°C", FLOAT, -20, 65, 55),
    _w("TMIN", "under-temperature charging disable", "°C", FLOAT, -30, 65, -10),
    _w("TBAL", "BMS over-temperature switch-off", "°C", FLOAT, -20, 65, 55),
    _w("BMTH", "BMS over-temperature hysteresis", "°C", FLOAT, 1, 30, 5),
    _w("IOFF", "current zero offset (calibration)", "A", FLOAT, -2, 2, 0.0, sensitive=True),
    _w("IOJA", "voltage-to-current coefficient (calibration)", "A/bit", FLOAT, 0.0005, 0.5,
       0.0078125, sensitive=True),
    _w("CYCL", "number of full pack cycles (counter)", "", INT, 0, 8000, None, sensitive=True),
    _w("CAPA", "pack capacity", "Ah", FLOAT, 1, 5000, 500),
    _w("CHEM", "chemistry code: 1 Li-po Kokam high power, 2 Li-po Kokam high capacity, "
       "3 LiFePO4 (Winston), 4 LiFePO4 (A123), 5 LiMnO2", "", INT, 1, 5, 3),
    _w("SOCH", "SOC end-of-charge hysteresis", "fraction", FLOAT, 0.005, 0.99, 0.05),
    _w("SOCS", "manual SOC reset: writing sets the SOC", "fraction", FLOAT, 0.01, 1.0, None,
       sensitive=True),
    _w("CHAC", "charge coefficient (C-rate for the inverter limit)", "C", FLOAT, 0.01, 1.0,
       0.6),
    _w("DCHC", "discharge coefficient", "C", FLOAT, 0.01, 3.0, 1.5),
    _w("SISN", "number of inverters/chargers on the bus", "", INT, 1, 6, 1),
    _w("MAXC", "max charge current per inverter", "A", FLOAT, 5, 345, 70),
    _w("MAXD", "max discharge current per inverter", "A", FLOAT, 5, 345, 120),
    _w("CLOW", "cell under-voltage discharge protection", "V", FLOAT, 1.8, 4.2, 2.9),
    _w("CANF", "CAN bit rate code: 1 = 250 kbit/s, 2 = 500 kbit/s", "", INT, 1, 2, 1),
    _w("VMAX", "count of CMAX exceedances (counter)", "", INT, 0, 8000, None, sensitive=True),
    _w("VMIN", "count of CMIN exceedances (counter)", "", INT, 0, 8000, None, sensitive=True),
    _w("EAVC", "even-cell calibration offset", "V", FLOAT, -0.0003, 0.0003, None,
       sensitive=True),
    _w("ODDC", "odd-cell calibration offset", "V", FLOAT, -0.0003, 0.0003, None,
       sensitive=True),
)

INSTRUCTIONS: dict[str, Instruction] = {i.name: i for i in LIVE + SETTINGS}
SETTABLE: dict[str, Instruction] = {i.name: i for i in SETTINGS}

#: ERRO byte 2 (§8). 1-5 agree across REC's documents; 6+ come from Active-BMS notes only.
ERROR_NAMES: dict[int, str] = {
    1: "cell_voltage_high",
    2: "cell_voltage_low",
    3: "cell_voltage_difference",
    4: "temperature_high",
    5: "bms_temperature_high",
    6: "cell_count_mismatch",
    7: "charge_temperature_low",
    8: "temperature_sensor_error",
    9: "communication_error",
    10: "cell_measurement_error",
    11: "contactor_error",
    12: "current_measurement_error",
    13: "wrong_chemistry",
    14: "memory_error",
    15: "balancing_error",
    16: "internal_error",
}

ERROR_TEXT: dict[int, str] = {
    1: "cell voltage too high (over-voltage switch-off)",
    2: "cell voltage too low (under-voltage switch-off)",
    3: "cell voltages differ more than allowed (RAZL)",
    4: "cell/pack temperature too high",
    5: "BMS temperature too high",
    6: "cell count / address not set correctly (medium confidence)",
    7: "temperature too low for charging (low confidence)",
    8: "temperature sensor error (low confidence)",
    9: "RS-485 communication error (low confidence)",
    10: "cell voltage measurement error (low confidence)",
    11: "contactor / relay fault (low confidence)",
    12: "current measurement error (low confidence)",
    13: "wrong chemistry selected (low confidence)",
    14: "internal memory problem (low confidence)",
    15: "balancing transistor error (low confidence)",
    16: "internal error (low confidence)",
}
