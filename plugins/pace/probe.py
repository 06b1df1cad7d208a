"""``bmslogger detect`` probe for a PACE battery: one 0x90 "packs in the group" read.

A read command only, no retries, to ADR 1; the answer must pass the frame's length and
checksum fields and carry CID1 0x46. See `bmslogger.hookspecs.Probe`.

Not a `bmslogger.detect.bus_probe`: the packs of a parallel group sit at DIP addresses
1..15, but the master (ADR 1) answers for every pack of its group (its 0x90 count is in
the proposal, and the driver reads them all through it), so one device covers the group.
Scanning the other addresses would propose each slave again and log its pack twice.
"""

from __future__ import annotations

from typing import Any

from bmslogger.detect import probe_device_config
from bmslogger.model import PortSettings
from bmslogger.transport import Transport

from . import DEVICE
from . import protocol as p
from .driver import PaceDriver


def probe(transport: Transport, settings: PortSettings) -> dict[str, Any] | None:
    """{"address": 1, "_about": "N pack(s)"} if a PACE master answered, else None."""
    device = probe_device_config(DEVICE, transport, settings, address=1)
    driver = PaceDriver(device, transport)
    count = driver._ask(p.PACK_COUNT, b"", 1, lambda f: p.decode_pack_count(f.info), "0x90")
    return {"address": 1, "_about": f"PACE battery at ADR 1: {count} pack(s) in the group"}
