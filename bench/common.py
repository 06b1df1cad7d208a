"""Helpers the benchmark scripts share: machine facts, summary statistics, output.

Every script records where and when it ran (CPU, core count, Python, load average)
next to its numbers, because a timing without its machine cannot be compared with
anything; and every script prints a Markdown table and writes the same numbers as
JSON under ``bench/results/``, so the README can quote them and a later run can be
diffed against them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
#: console scripts of the running interpreter, called directly: a version manager's shim
#: (pyenv's bash wrapper costs ~80 ms) would be timed otherwise
BIN = Path(sys.executable).parent


def script(name: str) -> str:
    """Path of console script `name` next to this interpreter (fallback: bare name)."""
    path = BIN / name
    return str(path) if path.exists() else name


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """Where and when the numbers were taken."""
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "bmslogger": _version("bmslogger"),
        "dalybms": _version("dalybms"),
        "pyserial": _version("pyserial"),
        "commit": _git_commit(),
        "loadavg_start": loadavg(),
    }


def summary(values: Iterable[float]) -> dict[str, float]:
    """n, mean, median, p90, min, max of `values` (p90 by linear interpolation)."""
    vals = sorted(values)
    if not vals:
        return {"n": 0}
    p90 = statistics.quantiles(vals, n=10, method="inclusive")[8] if len(vals) > 1 else vals[0]
    return {
        "n": len(vals),
        "mean": statistics.fmean(vals),
        "median": statistics.median(vals),
        "p90": p90,
        "min": vals[0],
        "max": vals[-1],
    }


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys on xs (None when xs do not vary)."""
    if len(xs) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def fmt_s(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write `data` to bench/results/<name>.json (with the end load average added)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data.setdefault("machine", {})["loadavg_end"] = loadavg()
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n",
                    encoding="utf-8")
    return path
