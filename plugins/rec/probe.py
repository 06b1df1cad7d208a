"""``bmslogger detect`` probe for a REC BMS 1Q: one ``*IDN?`` query at address 1.

A query only (never a parameter setting), no retries, and a short late-answer window so a
silent port costs little; the answer must pass the frame checksum and come from the
address asked. Up to 16 units share one RS-485 bus at addresses 1..16, so
``detect --scan-bus`` asks the others too. See `bmslogger.hookspecs.Probe` and
`bmslogger.detect.bus_probe`.
"""

from __future__ import annotations

from typing import Any

from bmslogger.detect import bus_probe, probe_device_config
from bmslogger.model import PortSettings
from bmslogger.transport import Transport

from . import DEVICE
from .driver import RecDriver


@bus_probe("address", range(1, 17))
def probe(transport: Transport, settings: PortSettings, address: int = 1
          ) -> dict[str, Any] | None:
    """{"address": N, "_about": "<identification>"} if the REC at N answered, else None."""
    device = probe_device_config(DEVICE, transport, settings, address=address,
                                 late_window=0.1)
    ident = RecDriver(device, transport).ask("*IDN", retries=0)
    text = " ".join(str(ident).split())[:60]
    about = f"REC BMS at address {address}" + (f": {text}" if text else "")
    return {"address": address, "_about": about}
