"""``bmslogger detect`` probe for an EMUS G1: one BV1 read (cell voltage summary).

A read sentence only, no retries, no login; the answer must pass the sentence CRC. See
`bmslogger.hookspecs.Probe`.
"""

from __future__ import annotations

from typing import Any

from bmslogger.detect import probe_device_config
from bmslogger.model import PollResult, PortSettings
from bmslogger.transport import Transport

from . import DEVICE
from .driver import EmusDriver, Reading


def probe(transport: Transport, settings: PortSettings) -> dict[str, Any] | None:
    """{"_about": ...} if an EMUS control unit answered BV1, else None."""
    device = probe_device_config(DEVICE, transport, settings, mode="request",
                                 sentences=["BV1"])
    driver = EmusDriver(device, transport)
    reading = Reading()
    result = PollResult()
    driver._ask(["BV1"], reading, result)
    if not result.answered:
        return None
    summary: Any = reading.summaries.get("BV1")
    cells = getattr(summary, "values", {}).get("cells") if summary is not None else None
    about = f"EMUS G1 control unit: {cells} cells" if cells else "EMUS G1 control unit"
    return {"_about": about}
