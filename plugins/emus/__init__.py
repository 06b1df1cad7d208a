"""EMUS G1 BMS Control Unit over its USB or RS-232 port (ASCII sentences, 57600 8N1).

The G1 Control Unit speaks one-line ASCII sentences (``BV1,?,4F`` CR LF) with a
Dallas/Maxim CRC-8. The logger either asks for a set of sentences (request mode, answers
matched by name since the unit may answer out of order) or listens to what the unit
broadcasts by itself every period (broadcast mode, nothing sent). Per-cell sentences
(BV2, BT2, BT4, BB2) come one line per group of up to eight cells; how many lines to wait
for follows from the cell count the unit reports.

This module only describes the device type; the codec (`protocol`), the driver and the
simulator are imported when an EMUS device is actually configured. Protocol facts and
their confidence: ``/work/shared/protocols/emus.md``, summarised in this folder's README.
"""

from __future__ import annotations

import os

from bmslogger import hookimpl
from bmslogger.model import DeviceType, PortSettings, TaskSpec, WriteSpec
from bmslogger.options import Option

_HERE = os.path.dirname(__file__)

#: 57600 8N1 (both public implementations). The answer latency is undocumented; 50 ms
#: is a guess that the flowing-answer deadline extension makes uncritical.
PORT_DEFAULTS = PortSettings(baudrate=57600, bytesize=8, parity="N", stopbits=1,
                             turnaround_s=0.05)

#: Read in request mode when `sentences` is left empty: every one-line and per-cell read.
DEFAULT_REQUEST = ("BV1", "BB1", "BT1", "BT3", "BC1", "CV1", "ST1", "DT1", "OT1", "IN1",
                   "CS1", "CG1", "VR1", "TD1", "RS2", "BV2", "BB2", "BT2", "BT4")
#: Expected in broadcast mode when `sentences` is left empty (BT3 only with cell sensors,
#: so it is kept when heard but not waited for).
DEFAULT_BROADCAST = ("BB1", "BC1", "BT1", "BV1", "CV1", "DT1", "OT1", "ST1")

OPTIONS: tuple[Option, ...] = (
    Option("mode", "choice", "request", "\"request\": ask for the sentences and match the "
           "answers by name; \"broadcast\": send nothing, listen for one broadcast period",
           choices=("request", "broadcast")),
    Option("sentences", "str_list", (), "sentences to read, e.g. [\"BV1\", \"CV1\", \"BV2\"]; "
           "empty = every read sentence but LG1/SS1 (request mode) or BB1, BC1, BT1, BV1, "
           "CV1, DT1, OT1, ST1 (broadcast mode). LG1 and SS1 may be added; they are also "
           "the events and statistics tasks"),
    Option("cells", "int", 0, "cells the per-cell sentences (BV2, BB2, BT2) cover; 0 = as "
           "the unit reports in BV1/BB1/BT1", min=0, max=255),
    Option("cell_sensors", "int", 0, "cell temperature sensors BT4 covers; 0 = as the unit "
           "reports in BT3", min=0, max=255),
    Option("pipeline", "bool", True, "send several requests at once and take the answers "
           "in any order; false = one request at a time"),
    Option("broadcast_period", "duration", 1.0, "the unit's \"data transmission to display "
           "period\"; broadcast mode listens this long (plus the wire time) at most"),
    Option("invert_current", "bool", False, "flip the current sign, for a current sensor "
           "mounted the other way round"),
    Option("line_sync", "bool", True, "send CR LF before each request, so a half line in "
           "the unit's buffer cannot spoil it"),
    Option("allow_writes", "bool", False, "allow commands that change the unit (set_soc, "
           "reset_current_sensor, login, clear_events, clear_statistics, reset, "
           "factory_defaults)"),
    Option("password", "str", "", "password for the login command (PW1); never logged",
           secret=True),
)

WRITES: tuple[WriteSpec, ...] = (
    WriteSpec("set_soc", "0-100", "SC1: set the state of charge in percent (sent in 0.01 % "
              "steps; encoding unverified)"),
    WriteSpec("reset_current_sensor", "", "RC1: zero the current sensor (only with no "
              "current flowing, or the SOC drifts)"),
    WriteSpec("login", "|logout", "PW1: log in with the password option (empty value) or "
              "log out (\"logout\")", secret_value=True),
    WriteSpec("clear_events", "", "LG1,c: clear the event log"),
    WriteSpec("clear_statistics", "", "SS1,c: clear the unprotected statistics"),
    WriteSpec("reset", "", "RS1: reboot the Control Unit", needs_confirmation=True),
    WriteSpec("factory_defaults", "", "FD1: restore factory defaults (wipes the "
              "configuration)", needs_confirmation=True),
)

TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("statistics", "0 3 * * *", "read every SS1 statistic (emus_statistic points)"),
    TaskSpec("events", "*/30 * * * *", "read the LG1 event log (emus_event points, "
             "timestamped with each event's own time)"),
)

DEVICE = DeviceType(
    name="emus",
    title="EMUS G1 BMS Control Unit (USB / RS-232 ASCII sentences)",
    options=OPTIONS,
    port_defaults=PORT_DEFAULTS,
    driver="bmslogger.plugins.emus.driver:EmusDriver",
    simulator="bmslogger.plugins.emus.simulator:EmusSimulator",
    fields="bmslogger.plugins.emus.fields:FIELDS",
    tasks=TASKS,
    writes=WRITES,
    sample_config=os.path.join(_HERE, "sample.toml"),
    readme=os.path.join(_HERE, "README.md"),
    probe="bmslogger.plugins.emus.probe:probe",
)


@hookimpl
def register_device_types() -> list[DeviceType]:
    """The EMUS G1 device type."""
    return [DEVICE]
