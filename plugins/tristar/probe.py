"""``bmslogger detect`` probe for a TriStar MPPT: one read of the scaling registers.

Reads words 0x0000-0x0003 (V_PU and I_PU) from unit 1, no retries; a read function only,
never a coil or register write. The Modbus CRC and the answer's shape must be right and
the scalings plausible. Several controllers share one EIA-485 bus (or one Modbus TCP
gateway) with unit ids 1..247, so ``detect --scan-bus`` asks the others too. See
`bmslogger.hookspecs.Probe` and `bmslogger.detect.bus_probe`.
"""

from __future__ import annotations

from typing import Any

from bmslogger.detect import bus_probe, probe_device_config
from bmslogger.model import PortSettings
from bmslogger.transport import Transport

from . import DEVICE
from . import protocol as p
from .driver import TriStarDriver


@bus_probe("unit", range(1, 248))
def probe(transport: Transport, settings: PortSettings, address: int = 1
          ) -> dict[str, Any] | None:
    """{"unit": N, "_about": ...} if TriStar unit N answered, else None."""
    device = probe_device_config(DEVICE, transport, settings, unit=address)
    words = TriStarDriver(device, transport).read_words(p.RAM_START, 4, "scaling 0x0000")
    v_pu, i_pu = p.scaling(words[0], words[1]), p.scaling(words[2], words[3])
    if not (0 < v_pu < 1000 and 0 < i_pu < 1000):
        return None
    return {"unit": address,
            "_about": f"TriStar MPPT, unit {address} (V_PU {v_pu:g}, I_PU {i_pu:g})"}
