"""``bmslogger detect`` probe for a Daly BMS: one 0x94 status read (cell and sensor counts).

A read request only (no settings change), no retries, to board 1 at host address 0x40,
the defaults of Daly's PC software; the answer must pass the codec's checksum and come
from board 1. See `bmslogger.hookspecs.Probe`.
"""

from __future__ import annotations

from typing import Any

from bmslogger.detect import probe_device_config
from bmslogger.model import PortSettings
from bmslogger.transport import Transport

from . import DEVICE
from . import protocol as p
from .driver import DalyDriver


def probe(transport: Transport, settings: PortSettings) -> dict[str, Any] | None:
    """{"board": 1, "_about": "16 cells, 2 sensors"} if a Daly answered 0x94, else None."""
    device = probe_device_config(DEVICE, transport, settings, board=1)
    driver = DalyDriver(device, transport)
    frames = driver._read(p.STATUS, retries=0)
    status = p.decode_status(frames[1])
    return {"board": 1, "_about": f"Daly BMS, board 1: {status.cells} cells, "
                                  f"{status.sensors} temperature sensors"}
