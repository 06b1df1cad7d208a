"""Nagios/Icinga plugin output for ``bmslogger read --check``.

Thresholds use the Nagios plugin range syntax, so monitoring people can reuse what they
know: ``10`` alerts outside 0..10, ``10:`` below 10, ``~:10`` above 10, ``10:20``
outside 10..20, ``@10:20`` inside 10..20. A threshold names a field of the ``battery``
measurement (``soc_pct``) or ``measurement.field`` (``alarm.active_count``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bmslogger.model import Point

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


@dataclass(frozen=True)
class Range:
    """A Nagios range; `alerts(x)` is True when x is outside it (inside, with ``@``)."""

    low: float
    high: float
    inside: bool
    text: str

    @classmethod
    def parse(cls, text: str) -> Range:
        raw = text.strip()
        inside = raw.startswith("@")
        body = raw[1:] if inside else raw
        try:
            if ":" in body:
                lo_s, hi_s = body.split(":", 1)
                low = -math.inf if lo_s == "~" else float(lo_s or 0)
                high = math.inf if hi_s == "" else float(hi_s)
            else:
                low, high = 0.0, float(body)
        except ValueError:
            raise ValueError(
                f"not a Nagios range: {text!r} (examples: 10, 10:, ~:10, @10:20)"
            ) from None
        if low > high:
            raise ValueError(f"range {text!r} has its start above its end")
        return cls(low, high, inside, raw)

    def alerts(self, value: float) -> bool:
        within = self.low <= value <= self.high
        return within if self.inside else not within


@dataclass(frozen=True)
class Threshold:
    measurement: str
    field: str
    range: Range

    @classmethod
    def parse(cls, spec: str) -> Threshold:
        """``soc_pct=20:`` or ``alarm.active_count=0``."""
        name, sep, rng = spec.partition("=")
        if not sep:
            raise ValueError(f"expected FIELD=RANGE, e.g. soc_pct=20:, got {spec!r}")
        measurement, _, fld = name.strip().rpartition(".")
        return cls(measurement or "battery", fld, Range.parse(rng))


def evaluate(
    plugin: str,
    points: Sequence[Point],
    warning: Sequence[Threshold],
    critical: Sequence[Threshold],
    silent: bool,
) -> tuple[int, str]:
    """The exit status and the one-line plugin output with performance data."""
    name = plugin.upper()
    if silent:
        return UNKNOWN, f"{name} UNKNOWN - the device did not answer"
    values: dict[tuple[str, str], float] = {}
    for p in points:
        for k, v in p.fields.items():
            if isinstance(v, (int, float)):  # bools count as 0/1
                values.setdefault((p.measurement, k), float(v))
    hits: dict[int, bool] = {CRITICAL: False, WARNING: False, UNKNOWN: False}
    reasons: list[str] = []
    for level, thresholds in ((CRITICAL, critical), (WARNING, warning)):
        for t in thresholds:
            value = values.get((t.measurement, t.field))
            if value is None:
                hits[UNKNOWN] = True
                reasons.append(f"{t.measurement}.{t.field} not reported")
            elif t.range.alerts(value):
                hits[level] = True
                reasons.append(f"{t.field}={_fmt(value)} ({STATUS[level]} range {t.range.text})")
    active = values.get(("alarm", "active_count"), 0.0)
    if active:
        hits[WARNING] = True
        reasons.append(f"{int(active)} alarm(s) active")
    status = next((lvl for lvl in (CRITICAL, WARNING, UNKNOWN) if hits[lvl]), OK)
    summary = []
    for key, unit in (("voltage_v", "V"), ("current_a", "A"), ("soc_pct", "%")):
        if ("battery", key) in values:
            summary.append(f"{_fmt(values[('battery', key)])} {unit}")
    perf = " ".join(
        f"{k}={_fmt(v)}" for (m, k), v in values.items()
        if m == "battery" and k in ("voltage_v", "current_a", "soc_pct", "cell_delta_v",
                                    "temp_max_c", "cell_min_v", "cell_max_v")
    )
    text = f"{name} {STATUS[status]} - " + ", ".join(summary or ["no battery values"])
    if reasons:
        text += "; " + "; ".join(reasons)
    return status, text + (f" | {perf}" if perf else "")


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")
