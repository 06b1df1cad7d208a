"""PACE BMS over its RS-232 port (ASCII-hex "paceic" protocol, VER 0x25, 9600 8N1).

PACE boards (P16S100A, P16S120A, P16S150A, P16S200A, P8S150A ...) sit in many OEM
LiFePO4 rack and wall batteries (Jakiper, SOK, Hubble, Revov, Gobel, EASUN, Tewaycell,
Enersol ...). Several packs are chained over their link ports; the pack whose DIP address
is 1 is the master, and through its RS-232 port the logger reads every pack: 0x42 analog
values and 0x44 warnings/status, for all packs at once (COMMAND FF) or one by one.

This module only describes the device type; codec, driver and simulator are imported
when a PACE device is configured. Protocol facts and their sources:
``/work/shared/protocols/pace.md``, summarised in this folder's README.md.
"""

from __future__ import annotations

import os

from bmslogger import hookimpl
from bmslogger.model import DeviceType, PortSettings
from bmslogger.options import Option

_HERE = os.path.dirname(__file__)

#: 9600 8N1. Turnaround: the documents allow 500 ms; packs seen answer far sooner, and the
#: deadline also grows with the expected reply length (a 10-pack reply takes 1.5 s).
PORT_DEFAULTS = PortSettings(baudrate=9600, bytesize=8, parity="N", stopbits=1, turnaround_s=0.1)

OPTIONS: tuple[Option, ...] = (
    Option("address", "int", 1, "ADR of the requests: the DIP address of the pack the cable "
           "goes to (the master is 1). On RS-232 any pack answers any ADR; devices sharing "
           "one bus need distinct addresses", min=0, max=255),
    Option("packs", "int_list", (), "pack numbers to read through the master (1..15); "
           "empty = every pack the master reports", min=1, max=15),
    Option("per_pack", "choice", "auto", "how packs are asked: \"never\" (one FF request "
           "for all packs), \"always\" (one request per pack), \"auto\" (FF, then one by "
           "one for the packs a firmware left out of its FF answer)",
           choices=("auto", "never", "always")),
    Option("version", "choice", "0x25", "VER byte of the requests: \"0x25\" (PACE) or "
           "\"0x20\" (some firmwares); replies with either are accepted",
           choices=("0x25", "0x20")),
    Option("cid1", "int", 0x46, "CID1 device type byte (0x46; one rebadged pack uses 0x4F)",
           min=0, max=255),
    Option("analog_extra_bytes", "int", -1, "bytes each 0x42 pack record carries after "
           "design capacity; -1 = solve it from the reply length (bmspace's "
           "force_pack_offset / 2)", min=-1, max=57),
    Option("status_extra_bytes", "int", -1, "bytes each 0x44 pack record carries after "
           "warn state 2; -1 = solve it from the reply length", min=-1, max=8),
    Option("temp_offset", "choice", 2730, "raw temperature of 0 °C in 0.1 K (PACE: 2730; "
           "Pylontech-style firmware: 2731)", choices=(2730, 2731)),
    Option("invert_current", "bool", False, "flip the current sign (units wired so that "
           "charging shows as negative)"),
    Option("cell_tag_width", "int", 0, "zero-pad cell numbers in the cell tag to this many "
           "digits (2: \"01\"), for dashboards that sort tags as text", min=0, max=3),
    Option("pack_tag_width", "int", 0, "zero-pad pack numbers in the pack tag to this many "
           "digits", min=0, max=3),
    Option("read_info", "bool", False, "also read the connected pack's identity (0xC1 "
           "version, 0xC2 serials, 0xB1 clock) as pace_info points, on the first poll and "
           "then every info_interval"),
    Option("info_interval", "duration", 3600.0, "how often read_info repeats"),
    Option("request_gap", "duration", 0.05, "least silence between the end of an answer "
           "and the next request (packs stop answering when hammered)"),
)

DEVICE = DeviceType(
    name="pace",
    title="PACE BMS (RS-232, ASCII-hex protocol VER 0x25), multi-pack",
    options=OPTIONS,
    port_defaults=PORT_DEFAULTS,
    driver="bmslogger.plugins.pace.driver:PaceDriver",
    simulator="bmslogger.plugins.pace.simulator:PaceSimulator",
    fields="bmslogger.plugins.pace.fields:FIELDS",
    address_option="address",
    sample_config=os.path.join(_HERE, "sample.toml"),
    readme=os.path.join(_HERE, "README.md"),
    probe="bmslogger.plugins.pace.probe:probe",
)


@hookimpl
def register_device_types() -> list[DeviceType]:
    """The PACE device type."""
    return [DEVICE]
