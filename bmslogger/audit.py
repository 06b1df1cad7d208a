"""The audit log of commands that changed a device.

Writes to a BMS are rare and consequential (a wrong SOC, a MOSFET switched off), so each
one is appended as a JSON line: when, which device and port, what was asked, and what
the device answered (with old and new values where the plugin reads them back). The file
is append-only and fsynced; a failure to write it is logged but never hides the result
of the command itself.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from bmslogger.model import DeviceConfig, rfc3339

log = logging.getLogger(__name__)


def audit(device: DeviceConfig, command: str, value: str, answer: Mapping[str, Any],
          time_ns: int) -> None:
    """Append one record to `device.audit_log` (nothing when it is "")."""
    if not device.audit_log:
        return
    record = {
        "time": rfc3339(time_ns),
        "device": device.name,
        "plugin": device.plugin,
        "port": device.port,
        "command": command,
        "value": value,
        "answer": dict(answer),
        "pid": os.getpid(),
    }
    try:
        folder = os.path.dirname(device.audit_log)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(device.audit_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        log.error("[%s] could not append to the audit log %s: %s", device.name,
                  device.audit_log, err)
