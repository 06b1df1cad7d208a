"""Morningstar TriStar MPPT charge controllers (TS-MPPT-30/45/60) over Modbus.

Modbus RTU on the serial ports (RS-232, MeterBus through Morningstar's adapter, EIA-485
on the -60; 9600 baud 8N2, unit 1) or Modbus TCP on the Ethernet port of the -60 models
(``port = "modbus-tcp://host[:port]"``). The driver is built on modbus-tk (`RtuMaster`,
`TcpMaster`); the register map, scaling and bit names live in `protocol`. Besides the
regular poll (live values), a daily task (23:58 local time by default) records today's
logger values and the EEPROM charge settings.

Nothing heavy is imported here, so ``bmslogger --help`` stays fast: modbus-tk, the driver
and the simulator load when a TriStar device is actually used. Protocol facts and their
sources: ``/work/shared/protocols/tristar.md`` in the project notes, summarised in this
folder's README.md.
"""

from __future__ import annotations

import os

from bmslogger import hookimpl
from bmslogger.model import DeviceType, PortSettings, TaskSpec
from bmslogger.options import Option

_HERE = os.path.dirname(__file__)

#: 9600 baud, 8 data bits, no parity; the controller sends 2 stop bits (and accepts 1 or 2).
#: Its answer latency is not documented; 100 ms is a cautious guess (see README).
PORT_DEFAULTS = PortSettings(baudrate=9600, bytesize=8, parity="N", stopbits=2, turnaround_s=0.1)

OPTIONS: tuple[Option, ...] = (
    Option("unit", "int", 1, "Modbus unit id (slave address, EEPROM Emodbus_id); several units "
           "behind one Modbus TCP gateway or on one EIA-485 bus are several devices with the "
           "same port and their own unit", min=1, max=247),
    Option("function", "choice", 4, "read function: 4 (read input registers, as the Victron "
           "GX drivers do) or 3 (read holding registers); the unit answers both alike",
           choices=(3, 4)),
    Option("local_echo", "bool", False, "the RS-485 adapter echoes what it sends; drop the "
           "echo before the answer (modbus-tk's handle_local_echo)"),
)

TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("daily", "58 23 * * *", "today's logger values (tristar_daily, "
             "tristar_daily_alarm), the EEPROM charge settings (tristar_settings) and identity "
             "and EEPROM totals (tristar_info), once a day before the controller's day ends"),
)

DEVICE = DeviceType(
    name="tristar",
    title="Morningstar TriStar MPPT charge controller (Modbus RTU / Modbus TCP)",
    options=OPTIONS,
    port_defaults=PORT_DEFAULTS,
    driver="bmslogger.plugins.tristar.driver:TriStarDriver",
    simulator="bmslogger.plugins.tristar.simulator:TriStarSimulator",
    fields="bmslogger.plugins.tristar.fields:FIELDS",
    tasks=TASKS,
    address_option="unit",
    sample_config=os.path.join(_HERE, "sample.toml"),
    readme=os.path.join(_HERE, "README.md"),
    probe="bmslogger.plugins.tristar.probe:probe",
)


@hookimpl
def register_device_types() -> list[DeviceType]:
    """The TriStar MPPT device type."""
    return [DEVICE]
