"""The running daemon's status, as a small JSON file other commands can read.

``bmslogger run`` rewrites ``<state_dir>/status.json`` every few seconds (temp file +
rename, so a reader never sees half a file) with its pid, when it started, and per device
and per sink the same numbers the ``bmslogger`` self-metrics points carry.
``bmslogger status`` reads it, says how old it is and whether that pid still runs.

A file rather than a local socket: it needs no server thread in the daemon, works when
the reader has no permission to connect anywhere (a read-only user, a cron job), and
still tells something after the daemon died (its last state, and that it is stale).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

STATUS_FILE = "status.json"
#: How often ``run`` rewrites the file; ``status`` calls it stale after three periods.
STATUS_INTERVAL_S = 5.0


def status_path(state_dir: str) -> str:
    """Where the daemon using `state_dir` keeps its status file."""
    return os.path.join(state_dir, STATUS_FILE)


def write_status(path: str, data: dict[str, Any]) -> None:
    """Replace the status file atomically (no fsync: it is rewritten in seconds)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=str, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def read_status(path: str) -> dict[str, Any]:
    """The status a daemon wrote; OSError if there is none, ValueError if unreadable."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "updated" not in data:
        raise ValueError(f"{path} is not a bmslogger status file")
    return data


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def assess(data: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The status plus ``age_s``, ``pid_alive`` and ``state`` (running, stale, stopped)."""
    now = time.time() if now is None else now
    age = max(0.0, now - float(data.get("updated", 0)))
    alive = pid_alive(int(data.get("pid", 0)))
    if data.get("stopped"):
        state = "stopped"
    elif not alive:
        state = "dead"
    elif age > 3 * float(data.get("interval_s", STATUS_INTERVAL_S)):
        state = "stale"
    else:
        state = "running"
    return {**data, "age_s": round(age, 1), "pid_alive": alive, "state": state}


def _ago(ts: Any, now: float) -> str:
    if not ts:
        return "never"
    return f"{max(0.0, now - float(ts)):.0f} s ago"


def format_text(status: dict[str, Any], now: float | None = None) -> str:
    """What ``bmslogger status`` prints by default."""
    now = time.time() if now is None else now
    lines = [
        f"bmslogger pid {status.get('pid')}: {status['state']} "
        f"(status written {status['age_s']:.0f} s ago, started {_ago(status.get('started'), now)})",
        f"config: {status.get('config', '?')}",
        "devices:",
    ]
    for name, d in sorted(status.get("devices", {}).items()):
        avail = {True: "available", False: "UNAVAILABLE", None: "not polled yet"}[
            d.get("available")
        ]
        errors = ", ".join(f"{k}={v}" for k, v in sorted(d.get("errors", {}).items())) or "none"
        lines.append(f"  {name} ({d.get('plugin')}): {avail}, last good poll "
                     f"{_ago(d.get('last_ok'), now)}, polls {d.get('polls', 0)} "
                     f"(failed {d.get('polls_failed', 0)}), errors: {errors}")
        if d.get("last_error") and d.get("available") is False:
            lines.append(f"    last error: {d['last_error']}")
    lines.append("sinks:")
    for name, s in sorted(status.get("sinks", {}).items()):
        lines.append(
            f"  {name}: queued {s.get('queued', 0)}, spool {s.get('spool_points', 0)} points / "
            f"{s.get('spool_bytes', 0)} bytes, written {s.get('written', 0)}, retries "
            f"{s.get('retries', 0)}, dropped {s.get('dropped', 0)}, dead-lettered "
            f"{s.get('dead_lettered', 0)}, last success {_ago(s.get('last_success'), now)}"
        )
        if s.get("last_error"):
            lines.append(f"    last error: {s['last_error']}")
    return "\n".join(lines)
