"""REC BMS 1Q over its RS-485 "PC" port (binary frames, 56000 8N1; some units 38400).

The single-unit 4-16 cell BMS from REC d.o.o., including the "1Q VICTRON" variant. The
logger is the bus master (address 0) and asks one BMS at a time by its address (1..16),
so several units can share one bus. Requests are ASCII instructions (``LCD1?``,
``CHAR 3.55``) in CRC-16/ARC framed envelopes; answers are ASCII numbers or a count frame
followed by little-endian float data.

This module only describes the device type; the codec, driver and simulator are imported
when a REC device is configured. The instruction table (`instructions`) is plain data and
cheap to import: it gives `describe` and `set` every settable instruction with its unit and
range. Protocol facts and their confidence: ``/work/shared/protocols/rec.md``, summarised in
this folder's README.md.
"""

from __future__ import annotations

import os

from bmslogger import hookimpl
from bmslogger.model import DeviceType, PortSettings, WriteSpec
from bmslogger.options import Option

from .instructions import SETTINGS, Instruction

_HERE = os.path.dirname(__file__)

#: 56000 8N1. REC asks the master to allow 350 ms for an answer because the BMS serves
#: RS-485 only outside its interrupt routines: the driver's deadline is the wire time plus
#: this turnaround plus the 100 ms margin, i.e. the 350 ms answer window.
PORT_DEFAULTS = PortSettings(baudrate=56000, bytesize=8, parity="N", stopbits=1,
                             turnaround_s=0.25)

OPTIONS: tuple[Option, ...] = (
    Option("address", "int", 1, "RS-485 address of the BMS (1..16); several units on one "
           "bus need distinct addresses", min=1, max=16),
    Option("cells", "int", 0, "cells to report; 0 = as many as CELL returns", min=0, max=16),
    Option("sensors", "int", 0, "temperature sensors to report from PTEM; 0 = all it "
           "returns (set it if unused slots carry junk)", min=0, max=16),
    Option("invert_current", "bool", False, "flip the current sign (if charging shows as "
           "negative current)"),
    Option("late_window", "duration", 0.8, "after an unanswered request, how long input is "
           "drained before the next one, so a late answer is never taken for another "
           "instruction's (REC answers do not name the instruction)"),
    Option("rint_interval", "duration", 300.0, "how often to read cell internal resistances "
           "(RINT); 0 = every poll"),
    Option("info_interval", "duration", 3600.0, "how often to read identity, versions, "
           "capacity and cycle count (*IDN, SWVR, HWVR, REFC, CAPA, CYCL); 0 = every poll"),
    Option("read_settings", "bool", False, "also read every settable parameter as rec_settings "
           "points, on the info_interval schedule"),
    Option("allow_writes", "bool", False, "allow `bmslogger set rec` to change settings "
           "(stored by the BMS; off by default)"),
    Option("writable", "str_list", (), "instructions `set` may change; empty = every settable "
           "one (counters, SOCS and calibration also need --confirm)"),
)


def _write_spec(ins: Instruction) -> WriteSpec:
    kind = "whole number" if ins.shape == "int" else "number"
    unit = f" {ins.unit}" if ins.unit else ""
    default = "" if ins.default is None else f"; REC default {ins.default:g}{unit}"
    warn = " Rewrites history or calibration: needs --confirm." if ins.sensitive else ""
    return WriteSpec(
        ins.name,
        f"{kind} {ins.range_text}",
        f"{ins.meaning}{default}.{warn}",
        needs_confirmation=ins.sensitive,
        unit=ins.unit,
        min=ins.min,
        max=ins.max,
    )


#: Every settable instruction (§6.2 W rows), by its own name: ``bmslogger set rec CHAR 3.55``.
WRITES: tuple[WriteSpec, ...] = tuple(_write_spec(i) for i in SETTINGS)

DEVICE = DeviceType(
    name="rec",
    title="REC BMS 1Q (RS-485 PC port, binary framed protocol)",
    options=OPTIONS,
    port_defaults=PORT_DEFAULTS,
    driver="bmslogger.plugins.rec.driver:RecDriver",
    simulator="bmslogger.plugins.rec.simulator:RecSimulator",
    fields="bmslogger.plugins.rec.fields:FIELDS",
    writes=WRITES,
    address_option="address",
    sample_config=os.path.join(_HERE, "sample.toml"),
    readme=os.path.join(_HERE, "README.md"),
    probe="bmslogger.plugins.rec.probe:probe",
)


@hookimpl
def register_device_types() -> list[DeviceType]:
    """The REC BMS 1Q device type."""
    return [DEVICE]
