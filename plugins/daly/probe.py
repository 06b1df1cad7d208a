"""``bmslogger detect`` probe for a Daly BMS: one 0x94 status read (cell and sensor counts).

A read request only (no settings change), no retries, to board 1 at host address 0x40,
the defaults of Daly's PC software; the answer must pass the codec's checksum and come
from the board asked. Boards sharing one RS-485 bus have numbers 1..16 (set in Daly's PC
tool), so ``detect --scan-bus`` asks the others too. See `bmslogger.hookspecs.Probe` and
`bmslogger.detect.bus_probe`.
"""

from __future__ import annotations

from typing import Any

from bmslogger.detect import bus_probe, probe_device_config
from bmslogger.model import PortSettings
from bmslogger.transport import Transport

from . import DEVICE
from . import protocol as p
from .driver import DalyDriver


@bus_probe("board", range(1, 17))
def probe(transport: Transport, settings: PortSettings, address: int = 1
          ) -> dict[str, Any] | None:
    """{"board": N, "_about": "16 cells, 2 sensors"} if board N answered 0x94, else None."""
    device = probe_device_config(DEVICE, transport, settings, board=address)
    driver = DalyDriver(device, transport)
    frames = driver._read(p.STATUS, retries=0)
    status = p.decode_status(frames[1])
    return {"board": address, "_about": f"Daly BMS, board {address}: {status.cells} cells, "
                                  f"{status.sensors} temperature sensors"}
