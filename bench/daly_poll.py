"""Benchmark: one full 16-cell Daly poll at 9600 baud, ours against python-daly-bms.

Why: issue 2 asks whether bmslogger's Daly driver gets a poll done close to what the
wire allows, whether a lost answer costs little, and whether a corrupt answer can ever
become a value; python-daly-bms (PyPI ``dalybms`` 0.5.0) is the baseline users know.

What it measures, on simulated lines (`bmslogger.simline.serve_pty`, a real
pseudo-terminal served by a thread of this process, paced at 9600 8N1 with the
simulator's answer latency):

* clean line: wall time of a full poll for each contender, all on one shared pty, in
  interleaved rounds (so load changes hit every contender alike) after one uncounted
  warm-up round: ours in-process (open the pty with `open_transport`,
  `DalyDriver.poll()`, close, as the logger does every interval), python-daly-bms
  in-process (``DalyBMS(request_retries=3, address=4)`` connected once, then
  ``get_all()``), and both command lines as subprocesses (``bmslogger read daly`` and
  ``daly-bms-cli --all``; process start-up included). Each round is compared with its
  own wire-time lower bound: (request bytes + answer bytes) x 10 / 9600 plus the answer
  latencies the simulator used in that round, as recorded. The simulator draws 50-80 ms
  per answer; the bench fixes it at 65 ms (``--random-latency`` keeps the draw) so
  every contender meets the same line;
* a line that drops 5 % of answers (``fault=silence``; each client on its own pty with
  an identical simulator and seed, so both meet the same faults): cost per dropped answer =
  (mean poll time with drops - mean clean poll time) / mean drops per poll, plus the
  least-squares slope of poll time on drops per poll as a cross-check;
* a line that corrupts 5 % of answers (``fault=checksum,truncate,noise``, again one
  identical line per client), with the
  simulator's state frozen (``drift=false``) so every value has one right answer:
  every decoded value is compared with a reference read on a clean line, and the
  reference itself with the simulator's state. The bench's ``checksum`` fault flips one
  bit of one data byte and leaves the checksum byte alone (the plugin's own fault breaks
  the checksum byte, which keeps the data right and so hides a client that ignores the
  checksum); that is what line noise does, and a client that uses the frame shows a
  wrong value.

Run: ``python bench/daly_poll.py`` (about 5 minutes on 2 cores; ``--quick`` for a smoke
run). Prints Markdown tables; writes ``bench/results/daly_poll.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from common import (
    fmt_s,
    machine_info,
    md_table,
    script,
    slope,
    summary,
    write_json,
)

from bmslogger.model import DeviceConfig, Point
from bmslogger.options import resolve_options
from bmslogger.plugins.daly import DEVICE
from bmslogger.plugins.daly import protocol as p
from bmslogger.plugins.daly.driver import DalyDriver
from bmslogger.plugins.daly.simulator import DalySimulator
from bmslogger.simline import PtyServer, serve_pty
from bmslogger.simulator import Transmission
from bmslogger.stats import Counters
from bmslogger.transport import open_transport

#: the same simulated BMS for every contender: 16 cells, 2 sensors, board 1 (listens to
#: host 0x40, python-daly-bms's RS-485 address, and 0x80), only the needed frames
SIM_OPTIONS = {"cells": "16", "sensors": "2", "frames": "needed", "seed": "1"}
FAULT_RATE = "0.05"
#: fields that legitimately change on every read of a frozen BMS
VOLATILE_FIELDS = {"heartbeat"}
#: counter kinds that are waits, not rejected frames
WAIT_KINDS = {"timeout", "retry", "stale_bytes"}


class BenchDaly(DalySimulator):
    """The plugin's simulator, recording what it sends, with a data-corrupting fault and
    optionally one fixed answer latency instead of the plugin's 50-80 ms draw."""

    def __init__(self, options: Any, latency_s: float | None = None) -> None:
        super().__init__(options)
        self.latency_s = latency_s
        #: (latency before the answer, answer bytes) for every transmission, in order
        self.sent: list[tuple[float, int]] = []

    def receive(self, data: bytes) -> list[Transmission]:
        out = super().receive(data)
        if self.latency_s is None:
            return out
        # before the faults: a "slow" or "late" fault still adds its delay on top
        return [replace(tx, delay_s=self.latency_s) for tx in out]

    def handle(self, data: bytes) -> list[Transmission]:
        out = super().handle(data)
        for tx in out:
            self.sent.append((tx.delay_s, len(tx.data)))
        return out

    def corrupt_checksum(self, data: bytes) -> bytes:
        """Flip one bit of one data byte of one frame; the checksum no longer matches."""
        frames = len(data) // p.FRAME_LEN
        if not frames:
            return super().corrupt_checksum(data)
        rnd = self.fault_random
        pos = rnd.randrange(frames) * p.FRAME_LEN + 4 + rnd.randrange(8)
        return data[:pos] + bytes((data[pos] ^ (1 << rnd.randrange(8)),)) + data[pos + 1:]


#: answer latency every bench line uses; None = the simulator's own 50-80 ms draw.
#: Fixed by default so every contender meets the same line (a random draw adds ~26 ms
#: of spread per poll, more than the differences measured); the bound uses the recorded
#: latencies either way.
LATENCY_S: float | None = 0.065


def make_simulator(extra: Mapping[str, str] | None = None) -> BenchDaly:
    raw = {**SIM_OPTIONS, **(extra or {})}
    return BenchDaly(resolve_options(BenchDaly.all_options(), raw, from_text=True),
                     latency_s=LATENCY_S)


@dataclass
class Line:
    """A served pty with its simulator; `mark`/`since` measure one round on it."""

    sim: BenchDaly
    server: PtyServer

    @classmethod
    def start(cls, extra: Mapping[str, str] | None = None) -> Line:
        sim = make_simulator(extra)
        return cls(sim, serve_pty(sim))

    @property
    def path(self) -> str:
        return self.server.path

    def mark(self) -> tuple[int, int, dict[str, int]]:
        return self.server.bytes_received, len(self.sim.sent), dict(self.sim.faults_injected)

    def since(self, mark: tuple[int, int, dict[str, int]]) -> dict[str, Any]:
        """Bytes, latencies, faults and the wire-time bound of what happened since `mark`."""
        rx0, n0, faults0 = mark
        # the last answer's bytes have all reached the client once it returns; give the
        # server thread a moment to count the request bytes of a client that gave up
        time.sleep(0.002)
        sent = self.sim.sent[n0:]
        request_bytes = self.server.bytes_received - rx0
        answer_bytes = sum(n for _, n in sent)
        latency = sum(d for d, _ in sent)
        wire = self.sim.port_settings.wire_time
        faults = {k: v - faults0.get(k, 0) for k, v in self.sim.faults_injected.items()
                  if v - faults0.get(k, 0)}
        return {
            "requests": request_bytes // p.FRAME_LEN,
            "request_bytes": request_bytes,
            "answer_bytes": answer_bytes,
            "latency_s": latency,
            "bound_s": wire(request_bytes + answer_bytes) + latency,
            "faults": faults,
        }

    def close(self) -> None:
        self.server.close()


# --- contenders ------------------------------------------------------------------------------


def device_config(port: str) -> DeviceConfig:
    return DeviceConfig(
        name="bench", plugin="daly", port=port, interval_s=0.0,
        port_settings=DEVICE.port_defaults, options=resolve_options(DEVICE.options, {}),
    )


def flatten_points(points: list[Point]) -> dict[str, Any]:
    """{"measurement[tag=v].field": value} for every point, volatile fields left out."""
    out: dict[str, Any] = {}
    for pt in points:
        if pt.measurement == "bmslogger":
            continue
        tags = ",".join(f"{k}={v}" for k, v in sorted(pt.tags.items())
                        if k not in ("device", "plugin", "pack"))
        for name, value in pt.fields.items():
            if name not in VOLATILE_FIELDS:
                out[f"{pt.measurement}[{tags}].{name}"] = value
    return out


def ours_inprocess(line: Line) -> dict[str, Any]:
    """Open, poll, close, as `bmslogger.runtime.DevicePoller` does every interval."""
    counters = Counters()
    c0 = time.process_time()
    t0 = time.perf_counter()
    with open_transport(line.path, DEVICE.port_defaults) as transport:
        t1 = time.perf_counter()
        result = DalyDriver(device_config(line.path), transport, counters).poll()
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    return {
        "time_s": t3 - t0, "poll_only_s": t2 - t1, "cpu_s": time.process_time() - c0,
        "ok": result.complete, "errors": result.errors,
        "values": flatten_points(result.points), "counters": counters.snapshot(),
    }


class CountingHandler(logging.Handler):
    """Counts python-daly-bms's own debug lines about bad checksums and skipped frames."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for key in ("crc mismatch", "invalid header", "out of order", "failed after"):
            if key in msg:
                self.counts[key] = self.counts.get(key, 0) + 1


def flatten_daly(data: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten_daly(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, list) and data:
        for i, v in enumerate(data):
            out.update(flatten_daly(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = data
    return out


class DalyLib:
    """python-daly-bms's library path, connected once (its `connect` sends 0x94)."""

    def __init__(self, line: Line, verbose_log: bool = False) -> None:
        from dalybms import DalyBMS

        self.handler = CountingHandler()
        logger = logging.getLogger(f"bench.dalybms.{id(self)}")
        logger.propagate = False
        logger.handlers[:] = [self.handler]
        # debug lines (crc mismatches) only when they are counted: they cost time
        logger.setLevel(logging.DEBUG if verbose_log else logging.ERROR)
        self.bms = DalyBMS(request_retries=3, address=4, logger=logger)
        self.bms.connect(line.path)

    def __call__(self, line: Line) -> dict[str, Any]:
        before = dict(self.handler.counts)
        c0 = time.process_time()
        t0 = time.perf_counter()
        crash = None
        data: Any = None
        try:
            data = self.bms.get_all()
        except Exception as err:  # its decoders raise on bad frames; that is a finding
            crash = f"{type(err).__name__}: {err}"
        t1 = time.perf_counter()
        cpu = time.process_time() - c0
        log = {k: v - before.get(k, 0) for k, v in self.handler.counts.items()
               if v - before.get(k, 0)}
        values = flatten_daly(data) if data is not None else {}
        values.pop("balancing_status.error", None)  # constant "not implemented"
        return {"time_s": t1 - t0, "cpu_s": cpu, "crash": crash, "values": values, "log": log,
                "ok": crash is None and not any(_absent(v) for v in (data or {}).values())}

    def close(self) -> None:
        self.bms.disconnect()


def cli_env(tmp: str, bytecode_cache: bool) -> dict[str, str]:
    """The environment for command-line runs. This environment sets
    PYTHONDONTWRITEBYTECODE and bmslogger is an editable install, so each start would
    compile its sources again, which no pip-installed copy does (python-daly-bms's
    bytecode was written at install time). With `bytecode_cache`, caches go to a
    temporary folder (PYTHONPYCACHEPREFIX), so the repository stays clean."""
    env = dict(os.environ)
    env.pop("BMSLOGGER_CONFIG", None)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
    return env


def ours_cli(line: Line, tmp: str, env: dict[str, str]) -> dict[str, Any]:
    cmd = [script("bmslogger"), "read", "daly", "--port", line.path, "--format", "json",
           "--lock-dir", tmp]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=60)
    t1 = time.perf_counter()
    points = len(json.loads(out.stdout)) if out.returncode in (0, 1) else 0
    return {"time_s": t1 - t0, "rc": out.returncode, "points": points,
            "ok": out.returncode == 0, "stderr": out.stderr[-300:]}


def daly_cli(line: Line, tmp: str, env: dict[str, str]) -> dict[str, Any]:
    cmd = [script("daly-bms-cli"), "-d", line.path, "--all"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=60)
    t1 = time.perf_counter()
    cells = 0
    if out.returncode == 0:
        cells = len(json.loads(out.stdout).get("cell_voltages") or {})
    return {"time_s": t1 - t0, "rc": out.returncode, "cells": cells,
            "ok": out.returncode == 0 and cells == 16, "stderr": out.stderr[-300:]}


# --- scenarios ----------------------------------------------------------------------------------


@dataclass
class Runs:
    name: str
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def times(self) -> list[float]:
        return [r["time_s"] for r in self.rounds]

    def ratios(self) -> list[float]:
        return [r["time_s"] / r["line"]["bound_s"] for r in self.rounds]


Contender = Callable[[Line], dict[str, Any]]


def interleave(contenders: dict[str, tuple[Line, Contender]], rounds: int, label: str
               ) -> dict[str, Runs]:
    """`rounds` rounds, each contender once per round on its line, after one warm-up
    round that is not counted (imports, bytecode caches)."""
    runs = {name: Runs(name) for name in contenders}
    for line, fn in contenders.values():
        fn(line)
    for i in range(rounds):
        for name, (line, fn) in contenders.items():
            mark = line.mark()
            r = fn(line)
            r["line"] = line.since(mark)
            runs[name].rounds.append(r)
        print(f"  {label}: round {i + 1}/{rounds}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    return runs


def clean_scenario(rounds: int, cli_rounds: int, tmp: str) -> dict[str, Runs]:
    line = Line.start()  # one pty for every contender
    lib = DalyLib(line)
    try:
        runs = interleave({"ours": (line, ours_inprocess), "dalybms": (line, lib)}, rounds,
                          "clean, in-process")
        warm, as_is = cli_env(tmp, True), cli_env(tmp, False)
        runs.update(interleave({
            "ours_cli": (line, lambda ln: ours_cli(ln, tmp, warm)),
            "dalybms_cli": (line, lambda ln: daly_cli(ln, tmp, warm)),
            "ours_cli_nocache": (line, lambda ln: ours_cli(ln, tmp, as_is)),
        }, cli_rounds, "clean, command lines"))
    finally:
        lib.close()
        line.close()
    return runs


def faulty_pair(extra: Mapping[str, str], rounds: int, label: str,
                verbose_log: bool = False) -> dict[str, Runs]:
    """Each client on its own line, both lines the same simulator with the same seed, so
    the n-th answer meets the same fault on both (until retries make them diverge)."""
    ours_line, their_line = Line.start(extra), Line.start(extra)
    lib = None
    try:
        lib = DalyLib(their_line, verbose_log=verbose_log)
        return interleave({"ours": (ours_line, ours_inprocess),
                           "dalybms": (their_line, lib)}, rounds, label)
    finally:
        if lib is not None:
            lib.close()
        ours_line.close()
        their_line.close()


def drop_scenario(rounds: int) -> dict[str, Runs]:
    return faulty_pair({"fault": "silence", "fault_rate": FAULT_RATE}, rounds, "drops")


def reference_reads() -> dict[str, Any]:
    """Clean reads of the frozen BMS by both clients, checked against the state."""
    line = Line.start({"drift": "false"})
    lib = DalyLib(line)
    try:
        ours = ours_inprocess(line)
        theirs = lib(line)
    finally:
        lib.close()
        line.close()
    s = line.sim.state
    want_ours = {
        "battery[].voltage_v": s.voltage_dv / 10,
        "battery[].soc_pct": s.soc_permille / 10,
        "battery[].remaining_ah": s.remaining_mah / 1000,
        "battery[].cycles": s.cycles,
        "battery[].cell_min_v": min(s.cells_mv) / 1000,
        "battery[].cell_max_v": max(s.cells_mv) / 1000,
        **{f"cell[cell={n}].voltage_v": mv / 1000 for n, mv in enumerate(s.cells_mv, 1)},
        **{f"temperature[sensor={n}].temperature_c": float(c)
           for n, c in enumerate(s.temps_c, 1)},
    }
    want_theirs = {
        "soc.total_voltage": s.voltage_dv / 10,
        "soc.soc_percent": s.soc_permille / 10,
        "status.cells": s.cells,
        "status.cycles": s.cycles,
        **{f"cell_voltages.{n}": mv / 1000 for n, mv in enumerate(s.cells_mv, 1)},
        **{f"temperatures.{n}": c for n, c in enumerate(s.temps_c, 1)},
    }
    bad_ours = {k: (ours["values"].get(k), v) for k, v in want_ours.items()
                if ours["values"].get(k) != v}
    bad_theirs = {k: (theirs["values"].get(k), v) for k, v in want_theirs.items()
                  if theirs["values"].get(k) != v}
    return {"ours": ours["values"], "dalybms": theirs["values"],
            "checked_against_state": {"ours": len(want_ours), "dalybms": len(want_theirs)},
            "state_mismatches": {"ours": bad_ours, "dalybms": bad_theirs}}


def _absent(v: Any) -> bool:
    return v is None or v is False


def compare(values: Mapping[str, Any], reference: Mapping[str, Any]) -> tuple[int, int]:
    """(wrong, missing). Wrong: a value that differs from the reference, or one the
    reference does not have. Missing: a reference value the read did not produce (a part
    that failed after its retries; python-daly-bms then has False/None for a section)."""
    wrong = sum(1 for k, v in values.items()
                if (k in reference and reference[k] != v)
                or (k not in reference and not _absent(v)))
    missing = sum(1 for k in reference if k not in values)
    return wrong, missing


def corrupt_scenario(rounds: int, reference: dict[str, Any]) -> dict[str, Runs]:
    runs = faulty_pair({"drift": "false", "fault": "checksum,truncate,noise",
                        "fault_rate": FAULT_RATE}, rounds, "corruption", verbose_log=True)
    for name, run in runs.items():
        ref = reference[name]
        for r in run.rounds:
            r["wrong"], r["missing"] = compare(r["values"], ref)
            r["wrong_keys"] = sorted(
                k for k, v in r["values"].items()
                if (k in ref and ref[k] != v) or (k not in ref and not _absent(v)))[:20]
            del r["values"]
    return runs


# --- report -----------------------------------------------------------------------------------


def clean_table(runs: dict[str, Runs]) -> tuple[str, dict[str, Any]]:
    labels = {
        "ours": "bmslogger, in-process (open + poll + close)",
        "dalybms": "python-daly-bms, in-process (`get_all()`)",
        "ours_cli": "`bmslogger read daly` (subprocess)",
        "dalybms_cli": "`daly-bms-cli --all` (subprocess)",
        "ours_cli_nocache": "`bmslogger read daly`, no bytecode cache (this environment)",
    }
    rows, data = [], {}
    for name, run in runs.items():
        t, ratio = summary(run.times()), summary(run.ratios())
        bound = summary(r["line"]["bound_s"] for r in run.rounds)
        lat = summary(r["line"]["latency_s"] for r in run.rounds)
        reqs = summary(r["line"]["requests"] for r in run.rounds)
        failed = sum(1 for r in run.rounds if not r.get("ok"))
        data[name] = {"time_s": t, "bound_s": bound, "ratio": ratio, "latency_s": lat,
                      "requests": reqs, "failed_rounds": failed}
        if name == "ours":
            data[name]["poll_only_s"] = summary(r["poll_only_s"] for r in run.rounds)
        over = summary(r["time_s"] - r["line"]["bound_s"] for r in run.rounds)
        data[name]["over_bound_s"] = over
        cpu = summary(r["cpu_s"] for r in run.rounds if "cpu_s" in r)
        data[name]["cpu_s"] = cpu
        rows.append([labels[name], t["n"], fmt_s(t["median"]), fmt_s(t["p90"]),
                     f"{reqs['median']:.0f}", fmt_s(bound["median"]),
                     f"{ratio['median']:.3f}", f"{ratio['p90']:.3f}",
                     f"{over['median'] * 1000:.1f}",
                     f"{cpu['median'] * 1000:.1f}" if cpu["n"] else "", failed])
    table = md_table(["contender", "polls", "median s", "p90 s", "requests",
                      "bound s (median)", "time/bound median", "time/bound p90",
                      "over bound ms (median)", "CPU ms/poll (median)", "failed"], rows)
    return table, data


def drop_table(runs: dict[str, Runs], clean: dict[str, Runs]) -> tuple[str, dict[str, Any]]:
    rows, data = [], {}
    for name, run in runs.items():
        drops = [r["line"]["faults"].get("silence", 0) for r in run.rounds]
        times = run.times()
        mean_t = summary(times)["mean"]
        mean_clean = summary(clean[name].times())["mean"]
        mean_drops = sum(drops) / len(drops)
        cost = (mean_t - mean_clean) / mean_drops if mean_drops else None
        fit = slope(drops, times)
        failed = sum(1 for r in run.rounds if not r.get("ok"))
        crashes = sum(1 for r in run.rounds if r.get("crash"))
        data[name] = {"polls": len(times), "drops": sum(drops), "mean_s": mean_t,
                      "clean_mean_s": mean_clean, "drops_per_poll": mean_drops,
                      "cost_per_drop_s": cost, "slope_s_per_drop": fit,
                      "incomplete_polls": failed, "crashes": crashes,
                      "time_s": summary(times)}
        rows.append([name, len(times), sum(drops), fmt_s(mean_clean), fmt_s(mean_t),
                     f"{mean_drops:.2f}", fmt_s(cost), fmt_s(fit), failed, crashes])
    table = md_table(["contender", "polls", "dropped answers", "clean mean s",
                      "mean s with drops", "drops/poll", "cost per drop s",
                      "slope s/drop", "incomplete polls", "crashes"], rows)
    return table, data


def corrupt_table(runs: dict[str, Runs]) -> tuple[str, dict[str, Any]]:
    rows, data = [], {}
    for name, run in runs.items():
        faults: dict[str, int] = {}
        for r in run.rounds:
            for k, v in r["line"]["faults"].items():
                faults[k] = faults.get(k, 0) + v
        wrong = sum(r["wrong"] for r in run.rounds)
        wrong_polls = sum(1 for r in run.rounds if r["wrong"])
        missing_polls = sum(1 for r in run.rounds if r["missing"])
        crashes = sum(1 for r in run.rounds if r.get("crash"))
        if name == "ours":
            rejected: dict[str, int] = {}
            for r in run.rounds:
                for k, v in r["counters"].items():
                    if k not in WAIT_KINDS:
                        rejected[k] = rejected.get(k, 0) + v
            detail = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) or "0"
        else:
            log: dict[str, int] = {}
            for r in run.rounds:
                for k, v in r["log"].items():
                    log[k] = log.get(k, 0) + v
            rejected = log
            detail = (f"bad-checksum chunks read {log.get('crc mismatch', 0)} (used unless "
                      f"the header is off), header skips {log.get('invalid header', 0)}")
        examples = sorted({k for r in run.rounds for k in r["wrong_keys"]})[:12]
        data[name] = {"polls": len(run.rounds), "faults_injected": faults,
                      "wrong_values": wrong, "polls_with_wrong_values": wrong_polls,
                      "polls_with_missing_values": missing_polls, "crashes": crashes,
                      "rejected_or_logged": rejected, "wrong_value_examples": examples,
                      "crash_examples": sorted({r["crash"] for r in run.rounds
                                                if r.get("crash")})[:5]}
        rows.append([name, len(run.rounds), sum(faults.values()), wrong, wrong_polls,
                     missing_polls, crashes, detail])
    table = md_table(["contender", "polls", "corrupted answers", "wrong values",
                      "polls with wrong values", "polls with missing values", "crashes",
                      "frames rejected (ours) / bad frames read (python-daly-bms)"], rows)
    return table, data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=25, help="clean in-process rounds")
    ap.add_argument("--cli-rounds", type=int, default=10, help="clean command-line rounds")
    ap.add_argument("--fault-rounds", type=int, default=40,
                    help="rounds per contender on the dropping and the corrupting line")
    ap.add_argument("--quick", action="store_true", help="a few rounds of each (smoke run)")
    ap.add_argument("--random-latency", action="store_true",
                    help="keep the simulator's 50-80 ms latency draw instead of 65 ms")
    args = ap.parse_args(argv)
    global LATENCY_S
    if args.random_latency:
        LATENCY_S = None
    if args.quick:
        args.rounds, args.cli_rounds, args.fault_rounds = 3, 2, 4
    logging.getLogger("bmslogger").setLevel(logging.ERROR)
    machine = machine_info()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bmsbench-") as tmp:
        clean = clean_scenario(args.rounds, args.cli_rounds, tmp)
    drops = drop_scenario(args.fault_rounds)
    reference = reference_reads()
    corrupt = corrupt_scenario(args.fault_rounds, reference)

    t_clean, d_clean = clean_table(clean)
    t_drop, d_drop = drop_table(drops, clean)
    t_corrupt, d_corrupt = corrupt_table(corrupt)

    ours, theirs = d_clean["ours"], d_clean["dalybms"]
    cost = d_drop["ours"]["cost_per_drop_s"]
    targets = [
        ("clean poll within 1.15x of the wire-time bound (median, in-process)",
         f"{ours['ratio']['median']:.3f}x", ours["ratio"]["median"] <= 1.15),
        ("clean poll no slower than python-daly-bms (median, in-process)",
         f"{ours['time_s']['median']:.3f} s vs {theirs['time_s']['median']:.3f} s",
         ours["time_s"]["median"] <= theirs["time_s"]["median"]),
        ("same, command lines (median, start-up included, bytecode cached)",
         f"{d_clean['ours_cli']['time_s']['median']:.3f} s vs "
         f"{d_clean['dalybms_cli']['time_s']['median']:.3f} s",
         d_clean["ours_cli"]["time_s"]["median"] <= d_clean["dalybms_cli"]["time_s"]["median"]),
        ("each dropped answer costs at most 0.15 s", f"{fmt_s(cost)} s",
         cost is not None and cost <= 0.15),
        ("no value from a bad frame", f"{d_corrupt['ours']['wrong_values']} wrong values",
         d_corrupt["ours"]["wrong_values"] == 0),
    ]
    t_targets = md_table(["target", "measured", "met"],
                         [(a, b, "yes" if c else "**no**") for a, b, c in targets])
    elapsed = time.monotonic() - started
    print(f"# Daly 16-cell poll, 9600 baud, simulated pty ({machine['date_utc']}, "
          f"{machine['nproc']} x {machine['cpu']}, Python {machine['python']}, "
          f"load {machine['loadavg_start']})\n")
    print("## Targets\n\n" + t_targets + "\n")
    print("## Clean line\n\n" + t_clean + "\n")
    print(f"## Line dropping {float(FAULT_RATE):.0%} of answers\n\n" + t_drop + "\n")
    print(f"## Line corrupting {float(FAULT_RATE):.0%} of answers "
          "(checksum = flipped data bit, truncate, noise)\n\n" + t_corrupt + "\n")
    print(f"_{elapsed:.0f} s_")
    path = write_json("daly_poll", {
        "machine": machine, "simulator_options": SIM_OPTIONS, "fault_rate": FAULT_RATE,
        "latency_s": LATENCY_S if LATENCY_S is not None else "simulator draw (50-80 ms)",
        "args": vars(args), "elapsed_s": elapsed,
        "targets": [{"target": a, "measured": b, "met": c} for a, b, c in targets],
        "clean": d_clean, "drops": d_drop, "corruption": d_corrupt,
        "reference": {k: v for k, v in reference.items() if k not in ("ours", "dalybms")},
        "rounds": {
            "clean": {k: [{kk: vv for kk, vv in r.items() if kk != "values"}
                          for r in v.rounds] for k, v in clean.items()},
            "drops": {k: [{kk: vv for kk, vv in r.items() if kk != "values"}
                          for r in v.rounds] for k, v in drops.items()},
        },
    })
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
