"""Plausibility of the common schema's values, checked after the codec's checksum.

A checksum proves that a frame arrived as the BMS sent it, not that the BMS measured
something real: Daly boards answer with cell frames full of zeros or garbage now and
then (a known complaint against the peers), a pack whose cell count is set wrong reports
cells that do not exist, a sensor that is not fitted reads -40 °C or 215 °C. Charts and
CSV files must not show such numbers as if they were measurements.

Two checks, both on the brand-independent measurements only (``battery``, ``cell``,
``temperature``), because their physical limits are known whatever the device:

* **range**: a value outside what the quantity can physically be (`LIMITS`) is removed
  from its point, and a point left without fields is dropped; so are a pack's cell
  minimum, maximum, average and delta when one of its cells is removed, since they were
  computed over it. Nothing is invented: the chart shows a gap, never a zero. Counted as
  ``errors_implausible``.
* **consistency**: the cells of a pack must add up to the pack voltage (within
  `SUM_TOLERANCE_V` or `SUM_TOLERANCE_FRACTION`, as cells and pack are often read a moment
  apart under changing current). Which side is wrong cannot be told, so both are kept;
  the mismatch is counted as ``errors_inconsistent`` and logged.

Each kind of problem is logged once per device and field when it starts, and once when
it ends, so a sensor that is simply not fitted does not fill the log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bmslogger.model import Point

#: (measurement, field) -> (lowest, highest) value the quantity can physically have
LIMITS: dict[tuple[str, str], tuple[float, float]] = {
    # a pack of 1 to 300 cells in series; 0 V is a BMS that lost its sense lines
    ("battery", "voltage_v"): (0.5, 1500.0),
    ("battery", "soc_pct"): (0.0, 100.0),
    ("battery", "soh_pct"): (0.0, 110.0),  # a new pack may test above its rating
    ("battery", "current_a"): (-10_000.0, 10_000.0),
    # every chemistry on the market lives between these (LTO ~1.5 V to NMC 4.35 V)
    ("cell", "voltage_v"): (0.5, 5.0),
    ("battery", "cell_min_v"): (0.5, 5.0),
    ("battery", "cell_max_v"): (0.5, 5.0),
    ("battery", "cell_avg_v"): (0.5, 5.0),
    ("battery", "cell_delta_v"): (0.0, 4.5),
    # battery, BMS board and ambient sensors; beyond these the sensor is absent or broken
    ("cell", "temperature_c"): (-50.0, 150.0),
    ("temperature", "temperature_c"): (-50.0, 150.0),
    ("battery", "temp_min_c"): (-50.0, 150.0),
    ("battery", "temp_max_c"): (-50.0, 150.0),
}

#: battery fields computed over the cells: meaningless once a cell of the pack is not
CELL_AGGREGATES = ("cell_min_v", "cell_max_v", "cell_avg_v", "cell_delta_v")

SUM_TOLERANCE_V = 1.0
SUM_TOLERANCE_FRACTION = 0.05


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def out_of_range(measurement: str, name: str, value: Any) -> bool:
    """Whether `value` of ``measurement.name`` is outside its physical limits (NaN is)."""
    limits = LIMITS.get((measurement, name))
    number = _number(value)
    if limits is None or number is None:
        return False
    return math.isnan(number) or not limits[0] <= number <= limits[1]


class PlausibilityCheck:
    """The checks for one device; keeps which problems are ongoing, to log each once."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self._ongoing: set[str] = set()

    def apply(self, points: Sequence[Point]) -> tuple[list[Point], dict[str, int]]:
        """`points` without implausible values, and the problems counted by kind."""
        counts = {"implausible": 0, "inconsistent": 0}
        seen: set[str] = set()
        out: list[Point] = []
        broken_cells = {p.tags.get("pack", "") for p in points if p.measurement == "cell"
                        and out_of_range("cell", "voltage_v", p.fields.get("voltage_v"))}
        for point in points:
            bad = [k for k, v in point.fields.items()
                   if out_of_range(point.measurement, k, v)]
            if point.measurement == "battery" and point.tags.get("pack", "") in broken_cells:
                bad += [k for k in CELL_AGGREGATES if k in point.fields and k not in bad]
            if not bad:
                out.append(point)
                continue
            counts["implausible"] += len(bad)
            for name in bad:
                where = _where(point, name)
                seen.add(where)
                why = (f"is outside {LIMITS[(point.measurement, name)]}"
                       if out_of_range(point.measurement, name, point.fields[name])
                       else "is computed over an implausible cell")
                self._start(where, f"{where} = {point.fields[name]!r} {why}; not written")
            kept = {k: v for k, v in point.fields.items() if k not in bad}
            if kept:
                out.append(replace(point, fields=kept))
        for where, message in _sum_mismatches(points):
            counts["inconsistent"] += 1
            seen.add(where)
            self._start(where, message)
        for where in sorted(self._ongoing - seen):
            self._ongoing.discard(where)
            self.log.info("%s is plausible again", where)
        return out, {k: n for k, n in counts.items() if n}

    def _start(self, where: str, message: str) -> None:
        if where not in self._ongoing:
            self._ongoing.add(where)
            self.log.warning("%s (logged once until it recovers)", message)


def _where(point: Point, name: str) -> str:
    keys = [f"{k}={point.tags[k]}" for k in ("pack", "cell", "sensor") if k in point.tags]
    return f"{point.measurement}.{name}" + (f" ({', '.join(keys)})" if keys else "")


def _sum_mismatches(points: Sequence[Point]) -> list[tuple[str, str]]:
    """(where, message) for every pack whose cells do not add up to its voltage; packs
    with a voltage out of range are left to the range check."""
    cells: dict[str, list[float]] = {}
    packs: dict[str, float] = {}
    broken: set[str] = set()
    for p in points:
        pack = p.tags.get("pack", "")
        volts = _number(p.fields.get("voltage_v"))
        if volts is None:
            continue
        if out_of_range(p.measurement, "voltage_v", volts):
            broken.add(pack)
        if p.measurement == "cell":
            cells.setdefault(pack, []).append(volts)
        elif p.measurement == "battery":
            packs[pack] = volts
    out = []
    for pack, total in packs.items():
        group = cells.get(pack, [])
        if len(group) < 2 or pack in broken:
            continue
        cell_sum = sum(group)
        if abs(cell_sum - total) > max(SUM_TOLERANCE_V, SUM_TOLERANCE_FRACTION * total):
            where = "battery.voltage_v" + (f" (pack={pack})" if pack else "")
            out.append((where, f"{where} = {total:.3f} V but its {len(group)} cells add "
                               f"up to {cell_sum:.3f} V"))
    return out
