"""``bmslogger detect`` probe for a REC BMS 1Q: one ``*IDN?`` query at address 1.

A query only (never a parameter setting), no retries, and a short late-answer window so a
silent port costs little; the answer must pass the frame checksum. See
`bmslogger.hookspecs.Probe`.
"""

from __future__ import annotations

from typing import Any

from bmslogger.detect import probe_device_config
from bmslogger.model import PortSettings
from bmslogger.transport import Transport

from . import DEVICE
from .driver import RecDriver


def probe(transport: Transport, settings: PortSettings) -> dict[str, Any] | None:
    """{"address": 1, "_about": "<identification>"} if a REC answered, else None."""
    device = probe_device_config(DEVICE, transport, settings, address=1, late_window=0.1)
    ident = RecDriver(device, transport).ask("*IDN", retries=0)
    text = " ".join(str(ident).split())[:60]
    return {"address": 1, "_about": f"REC BMS at address 1: {text}" if text else "REC BMS"}
