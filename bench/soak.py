"""Benchmark: does ``bmslogger run`` stay flat over many polls?

Why: the logger runs for months on a Raspberry Pi. A few bytes kept per poll (a cache
that never forgets, a list of results, a file or thread opened per poll and never closed)
is invisible in a test and fatal after a season. This drives every device plugin far
faster than a real installation would, so that a short run covers as many polls as weeks
of a normal one, and watches the process from outside.

What it runs: ``bmslogger run`` as a child process on a config of all five simulated
devices (``sim://``, in-process lines paced at their baud rates, the Daly with a
checksum and noise fault so the error paths run too), polled every 0.2 s, into the CSV
sink with a spool (fsync never, to measure the logger rather than the disk).

What it measures, from /proc every few seconds: resident memory (VmRSS), open file
descriptors, threads; and at the end the polls done (the ``bmslogger`` points in the CSV
files). Reported: the values after warm-up (the first sample after ``--warmup`` seconds)
and at the end, the growth over the second half of the run after warm-up, and the
least-squares slope after warm-up, per hour of this run and per million polls. A flat
logger stops growing: its second-half growth is near zero and its fds and threads
constant.

Run: ``python bench/soak.py [--minutes 10]``. Prints a Markdown table; writes
``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_info, md_table, slope, write_json

CONFIG = """
[logger]
interval = "200ms"
state_dir = "{d}/state"
spool_dir = "{d}/spool"
lock_dir = "{d}/locks"
spool_fsync = "never"
log_level = "warning"

[[devices.daly]]
name = "daly"
port = "sim://daly?cells=16&sensors=2&fault=checksum,noise&fault_rate=0.05"

[[devices.emus]]
name = "emus"
port = "sim://emus?cells=16"

[[devices.rec]]
name = "rec"
port = "sim://rec?cells=16"

[[devices.pace]]
name = "pace"
port = "sim://pace?packs=2&cells=16"

[[devices.tristar]]
name = "tristar"
port = "sim://tristar"

[sinks.csv]
directory = "{d}/data"
"""


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS (KiB), threads and open file descriptors of `pid`."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = float(value.split()[0])
    out["fds"] = float(len(os.listdir(f"/proc/{pid}/fd")))
    return out


def count_polls(data: Path) -> int:
    polls = 0
    for path in data.glob("bmslogger/bmslogger-*.csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            polls += sum(1 for row in csv.DictReader(fh) if row.get("device"))
    return polls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    args = ap.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bmslogger-soak-"))
    config = folder / "logger.toml"
    config.write_text(CONFIG.format(d=folder), encoding="utf-8")
    child = subprocess.Popen([sys.executable, "-m", "bmslogger", "run", "-c", str(config)],
                             cwd=folder, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, dict[str, float]]] = []
    start = time.monotonic()
    end = start + args.minutes * 60
    try:
        while time.monotonic() < end and child.poll() is None:
            samples.append((time.monotonic() - start, proc_status(child.pid)))
            time.sleep(args.every)  # sampling period of an outside observer, not a wait on I/O
    finally:
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    polls = count_polls(folder / "data")
    steady = [(t, s) for t, s in samples if t >= args.warmup]
    if len(steady) < 2 or child.returncode != 0:
        print(f"run ended early or failed (exit {child.returncode}): {err[-2000:]}")
        return 1
    hours = [t / 3600 for t, _ in steady]
    rows, result = [], {}
    for key, unit in (("VmRSS", "KiB"), ("fds", ""), ("Threads", "")):
        values = [s[key] for _, s in steady]
        per_hour = slope(hours, values) or 0.0
        per_mpoll = per_hour * (hours[-1] - hours[0]) / max(1, polls) * 1e6 \
            if hours[-1] > hours[0] else 0.0
        # growth over the second half of the steady part: warm-up effects (allocator
        # arenas, caches filling, the thread pool reaching its size) are over by then
        half = values[len(values) // 2:]
        late = half[-1] - half[0]
        result[key] = {"after_warmup": values[0], "end": values[-1], "max": max(values),
                       "second_half_growth": late,
                       "slope_per_hour": per_hour, "slope_per_million_polls": per_mpoll}
        rows.append([f"{key} {unit}".strip(), f"{values[0]:.0f}", f"{values[-1]:.0f}",
                     f"{max(values):.0f}", f"{late:+.0f}", f"{per_hour:+.1f}",
                     f"{per_mpoll:+.0f}"])
    duration = samples[-1][0]
    print(f"`bmslogger run`, 5 simulated devices every 0.2 s, {duration / 60:.1f} min, "
          f"{polls} polls ({polls / duration:.1f}/s), exit {child.returncode}\n")
    print(md_table(["", "after warm-up", "end", "max", "second half", "slope per hour",
                    "slope per million polls"], rows))
    write_json("soak", {"machine": machine_info(), "minutes": duration / 60, "polls": polls,
                        "exit": child.returncode, "samples": samples, "result": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
