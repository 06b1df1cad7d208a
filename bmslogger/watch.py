"""``bmslogger watch``: a live terminal view of every device, from the daemon's status file.

The running daemon keeps each device's latest values in ``<state_dir>/status.json`` (the
file ``bmslogger status`` reads) and rewrites it within a second of a poll landing. The
view re-reads it when it changes, so it costs the daemon nothing, opens no port, and works
for any user who may read the state folder. Shown per device and pack: pack voltage,
current, SOC, cell min/max/delta, temperatures, active alarms, the last good read; and per
sink the points still waiting.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

#: battery/charger fields kept in the status file, in display order
BATTERY_FIELDS = ("voltage_v", "current_a", "soc_pct", "cell_min_v", "cell_max_v",
                  "cell_delta_v", "temp_min_c", "temp_max_c")
CHARGER_FIELDS = ("battery_voltage_v", "battery_current_a", "array_voltage_v",
                  "output_power_w", "charge_state")


def summarize(points: Iterable[Any]) -> dict[str, Any]:
    """The values worth a glance from one poll's points, by pack (JSON-ready):
    ``{"packs": {"1": {...}}, "charger": {...}, "alarms": {"1": ["cell_overvoltage"]}}``."""
    out: dict[str, Any] = {}
    for p in points:
        pack = str(p.tags.get("pack", "1"))
        if p.measurement == "battery":
            vals = {k: p.fields[k] for k in BATTERY_FIELDS if k in p.fields}
            out.setdefault("packs", {})[pack] = vals
        elif p.measurement == "charger":
            out["charger"] = {k: p.fields[k] for k in CHARGER_FIELDS if k in p.fields}
        elif p.measurement == "alarm":
            active = sorted(k for k, v in p.fields.items() if v is True)
            out.setdefault("alarms", {})[pack] = active
    return out


def _num(value: Any, fmt: str, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:{fmt}}{unit}"
    return str(value)


def _ago(ts: Any, now: float) -> str:
    if not ts:
        return "never"
    age = max(0.0, now - float(ts))
    return f"{age:.0f}s ago" if age < 120 else f"{age / 60:.0f}min ago"


def render(status: dict[str, Any], now: float | None = None) -> str:
    """The screen for one status snapshot (as `bmslogger.status.assess` returns it)."""
    now = time.time() if now is None else now
    head = (f"bmslogger pid {status.get('pid')}: {status.get('state', '?')}, "
            f"updated {_ago(status.get('updated'), now)}   "
            f"{time.strftime('%H:%M:%S', time.localtime(now))}")
    lines = [head, "",
             f"{'device':<16} {'pack':>4} {'V':>8} {'A':>8} {'SOC':>6} {'cell min':>9} "
             f"{'max':>7} {'delta':>7} {'temp':>11}  last good  alarms"]
    for name, d in sorted(status.get("devices", {}).items()):
        values = d.get("values") or {}
        last = _ago(d.get("last_ok"), now)
        avail = "" if d.get("available") is not False else "  UNAVAILABLE"
        alarms = values.get("alarms", {})
        rows = sorted((values.get("packs") or {}).items())
        if not rows and not values.get("charger"):
            lines.append(f"{name:<16} {'':>4} {'(no values yet)':>40}  {last}{avail}")
        for pack, v in rows:
            tmin, tmax = v.get("temp_min_c"), v.get("temp_max_c")
            temps = f"{_num(tmin, '.0f', '')}..{_num(tmax, '.0f', '')}°C" if tmin is not None \
                else "-"
            active = ", ".join(alarms.get(pack, [])) or "-"
            cells = " ".join((f"{_num(v.get('cell_min_v'), '.3f', ''):>9}",
                              f"{_num(v.get('cell_max_v'), '.3f', ''):>7}",
                              f"{_num(v.get('cell_delta_v'), '.3f', ''):>7}"))
            lines.append(
                f"{name:<16} {pack:>4} {_num(v.get('voltage_v'), '.2f', ''):>8} "
                f"{_num(v.get('current_a'), '+.1f', ''):>8} "
                f"{_num(v.get('soc_pct'), '.0f', '%'):>6} {cells} {temps:>11}  "
                f"{last:<9}  {active}{avail}"
            )
        c = values.get("charger")
        if c:
            active = ", ".join(alarms.get("1", [])) or "-"
            lines.append(
                f"{name:<16} {'chg':>4} {_num(c.get('battery_voltage_v'), '.2f', ''):>8} "
                f"{_num(c.get('battery_current_a'), '+.1f', ''):>8} "
                f"array {_num(c.get('array_voltage_v'), '.1f', 'V')} "
                f"{_num(c.get('output_power_w'), '.0f', 'W')} {c.get('charge_state', '-')}"
                f"  {last}  {active}{avail}"
            )
    lines += ["", "sinks:"]
    for name, s in sorted(status.get("sinks", {}).items()):
        lines.append(f"  {name:<14} waiting {int(s.get('queued') or 0):>7}  written "
                     f"{int(s.get('written') or 0):>9}  last success "
                     f"{_ago(s.get('last_success'), now)}"
                     + (f"  error: {s['last_error']}" if s.get("last_error") else ""))
    return "\n".join(lines)


def watch(path: str, interval: float = 1.0, count: int | None = None,
          out: TextIO = sys.stdout) -> int:
    """Redraw whenever the status file changes (and every `interval` for the ages);
    `count` screens then stop (None: until Ctrl-C). Returns how many screens were drawn."""
    from bmslogger.status import assess, read_status

    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    drawn = 0
    last_key: tuple[float, float] | None = None
    while count is None or drawn < count:
        try:
            st = os.stat(path)
            key = (st.st_mtime, time.monotonic() // max(interval, 0.1))
            if key != last_key:
                last_key = key
                screen = render(assess(read_status(path)))
                out.write(clear + screen + "\n" + ("" if clear else "\n"))
                out.flush()
                drawn += 1
        except FileNotFoundError:
            out.write(f"waiting for {path} (is bmslogger run running with this config?)\n")
            out.flush()
            drawn += 1
        except ValueError:
            pass  # caught mid-replace by an older writer: the next look gets it whole
        if count is None or drawn < count:
            time.sleep(min(0.25, interval))
    return drawn
