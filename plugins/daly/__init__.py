"""Daly smart BMS over its UART / RS-485 port ("A5" protocol, 13-byte frames, 9600 8N1).

Covers the Daly "smart BMS" family that the PC tool *BMS Monitor* talks to (J/T/A/U/W/ND
series, most 8S-24S units, the budget Y-series): a polled master/slave protocol where
every request and every answer frame is 13 bytes starting ``A5``. Several boards can
share one RS-485 bus, told apart by their board number. Not covered: the Sinowealth
units (configured with *BMStool*) and the Modbus-style H/K/M/S series.

This module only describes the device type; the codec (`protocol`), the driver and the
simulator are imported when a Daly device is actually configured, so ``bmslogger --help``
stays fast. Protocol facts and their sources: ``/work/shared/protocols/daly.md`` in the
project notes, summarised in this folder's README.md.
"""

from __future__ import annotations

import os

from bmslogger import hookimpl
from bmslogger.model import DeviceType, PortSettings, WriteSpec
from bmslogger.options import Option

_HERE = os.path.dirname(__file__)

#: 9600 8N1; awake units answer 50-80 ms after the request, so 80 ms is the worst usual.
PORT_DEFAULTS = PortSettings(baudrate=9600, bytesize=8, parity="N", stopbits=1, turnaround_s=0.08)

OPTIONS: tuple[Option, ...] = (
    Option("board", "int", 1, "board number on the RS-485 bus (set in Daly's PC tool); "
           "requests go to 0x3F + board", min=1, max=16),
    Option("host_address", "choice", "0x40", "host address the BMS listens to: \"0x40\" "
           "(Daly's PC software, most units), \"0x80\" (some UART/Bluetooth units) or "
           "\"auto\" (try 0x40, then 0x80, and keep what answered)",
           choices=("0x40", "0x80", "auto")),
    Option("filler", "choice", "0x00", "value of the 8 ignored data bytes of a read: "
           "\"0x00\" as documented, \"0xAA\" if the BMS drops requests",
           choices=("0x00", "0xAA")),
    Option("invert_current", "bool", False, "flip the current sign, for units that send "
           "charge current the way most units send discharge current"),
    Option("cells", "int", 0, "cells in series; 0 = as the BMS reports (0x94)", min=0, max=48),
    Option("sensors", "int", 0, "temperature sensors; 0 = as the BMS reports (0x94)",
           min=0, max=16),
    Option("frames", "choice", "needed", "cell/temperature frames the BMS sends: "
           "\"needed\" (only those that carry values), \"all\" (every slot: 16 cell frames, "
           "3 temperature frames) or \"auto\" (learn it). Never waited for; with all, the "
           "next request's deadline allows for the extra frames still on the wire",
           choices=("needed", "all", "auto")),
    Option("read_info", "bool", False, "also read identity and alarm thresholds "
           "(0x50, 0x53, 0x57, 0x59, 0x5A, 0x62, 0x63) as daly_info/daly_settings points, "
           "on the first poll and then every info_interval"),
    Option("info_interval", "duration", 3600.0, "how often read_info repeats"),
    Option("allow_writes", "bool", False, "allow commands that change the BMS (set_soc, "
           "charge_mosfet, discharge_mosfet, reset)"),
)

WRITES: tuple[WriteSpec, ...] = (
    WriteSpec("set_soc", "0-100", "set the state of charge in percent (0.1 % steps); the "
              "BMS clock bytes are sent as zeros"),
    WriteSpec("charge_mosfet", "on|off", "switch the charge MOSFET; the answer re-reads 0x93"),
    WriteSpec("discharge_mosfet", "on|off", "switch the discharge MOSFET (off cuts the load); "
              "the answer re-reads 0x93", needs_confirmation=True),
    WriteSpec("reset", "", "restart the BMS", needs_confirmation=True),
)

DEVICE = DeviceType(
    name="daly",
    title="Daly smart BMS (UART / RS-485, A5 protocol)",
    options=OPTIONS,
    port_defaults=PORT_DEFAULTS,
    driver="bmslogger.plugins.daly.driver:DalyDriver",
    simulator="bmslogger.plugins.daly.simulator:DalySimulator",
    fields="bmslogger.plugins.daly.fields:FIELDS",
    writes=WRITES,
    address_option="board",
    sample_config=os.path.join(_HERE, "sample.toml"),
    readme=os.path.join(_HERE, "README.md"),
    probe="bmslogger.plugins.daly.probe:probe",
)


@hookimpl
def register_device_types() -> list[DeviceType]:
    """The Daly device type."""
    return [DEVICE]
