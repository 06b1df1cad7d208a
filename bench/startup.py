"""Benchmark: how fast ``bmslogger --help`` starts, and how much memory ``run`` needs.

Why: bmslogger runs for months on a Raspberry Pi and is also called from cron and
Nagios, so start-up time and resident memory matter more than raw speed. Issue 2's
targets: ``bmslogger --help`` under 0.3 s (import only what the configured plugins and
sinks need), and the peak memory of ``bmslogger run`` on the default config, reported.

What it measures:

* wall time of ``bmslogger --help`` (the console script next to this interpreter, not a
  version manager's shim), median and p90 of 20 runs, twice: as this environment runs
  it, and with a warm bytecode cache. The second matters because this environment sets
  ``PYTHONDONTWRITEBYTECODE=1`` and the project is an editable install, so every start
  compiles bmslogger's sources again, which no pip-installed copy does; the warm runs
  unset it and point ``PYTHONPYCACHEPREFIX`` at a temporary folder (the repository
  stays clean). ``python -c pass`` and ``daly-bms-cli --help`` are timed the same way
  for scale;
* ``python -X importtime`` of ``bmslogger --help``: the bmslogger modules it loads and
  the ten slowest imports (printed in full when the target is missed);
* ``bmslogger run`` on the embedded default config (two simulated Daly BMS, CSV sink)
  for 20 s in a temporary folder (its ``./data`` goes there), stopped with SIGTERM: peak
  resident memory from the kernel (``ru_maxrss`` of the reaped child, and ``VmHWM``
  sampled from /proc), rows written, exit status.

Run: ``python bench/startup.py`` (about 40 s). Prints Markdown tables; writes
``bench/results/startup.json``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import fmt_s, machine_info, md_table, script, summary, write_json

HELP_TARGET_S = 0.3


def timed_runs(cmd: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        times.append(time.perf_counter() - t0)
    return summary(times)


def warm_env(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = cache
    return env


def import_profile(env: dict[str, str]) -> dict[str, Any]:
    """Modules ``bmslogger --help`` imports, with the slowest by cumulative time."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "bmslogger", "--help"],
                         env=env, capture_output=True, text=True, check=False)
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        # "import time:  self_us |  cumulative_us | <indent>module"; indent = nesting
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        rows.append({"module": name[1:], "self_ms": int(self_us) / 1000,
                     "cumulative_ms": int(cum_us) / 1000})
    top_level = [r for r in rows if not r["module"].startswith(" ")]
    ours = sorted(r["module"].strip() for r in rows if r["module"].strip().startswith("bmslogger"))
    slowest = sorted(top_level, key=lambda r: r["cumulative_ms"], reverse=True)[:10]
    return {"modules_imported": len(rows), "bmslogger_modules": ours,
            "slowest_top_level": slowest,
            "total_ms": sum(r["cumulative_ms"] for r in top_level)}


def _vm(pid: int) -> dict[str, int]:
    vals = {}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    vals[key] = int(value.split()[0])  # kB
    except OSError:
        pass
    return vals


def run_memory(seconds: float) -> dict[str, Any]:
    """`bmslogger run` on the default config for `seconds`, then SIGTERM."""
    with tempfile.TemporaryDirectory(prefix="bmsbench-run-") as tmp:
        env = dict(os.environ)
        env.pop("BMSLOGGER_CONFIG", None)  # the embedded default, not someone's file
        proc = subprocess.Popen([script("bmslogger"), "run"], cwd=tmp, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        hwm = rss = 0
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end and proc.poll() is None:
            vm = _vm(proc.pid)
            hwm = max(hwm, vm.get("VmHWM", 0))
            rss = vm.get("VmRSS", rss)
            samples.append(rss)
            time.sleep(0.25)
        alive = proc.poll() is None
        t_stop = time.monotonic()
        if alive:
            vm = _vm(proc.pid)
            hwm = max(hwm, vm.get("VmHWM", 0))
            proc.send_signal(signal.SIGTERM)
        # reap it ourselves: wait4 gives this child's own peak RSS
        _, status, usage = os.wait4(proc.pid, 0)
        stop_s = time.monotonic() - t_stop
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        rows = 0
        files = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*.csv"))
        for name in files:
            with open(Path(tmp) / name, encoding="utf-8") as f:
                rows += max(0, sum(1 for _ in f) - 1)
        return {
            "seconds": seconds, "exit_status": proc.returncode, "was_running": alive,
            "stop_s": stop_s, "ru_maxrss_kb": usage.ru_maxrss, "vmhwm_kb": hwm,
            "vmrss_last_kb": rss, "vmrss_samples_kb": summary(samples),
            "csv_files": files, "csv_rows": rows, "stderr_tail": stderr[-500:],
        }


def baseline_rss() -> int:
    """Peak RSS of a bare interpreter, for scale (kB)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="runs per start-up timing")
    ap.add_argument("--run-seconds", type=float, default=20.0, help="how long `run` runs")
    args = ap.parse_args(argv)
    machine = machine_info()
    started = time.monotonic()
    as_is = dict(os.environ)
    bms = script("bmslogger")
    rows, timings = [], {}
    with tempfile.TemporaryDirectory(prefix="bmsbench-pyc-") as cache:
        warm = warm_env(cache)
        for cmd in ([bms, "--help"], [script("daly-bms-cli"), "--help"]):
            subprocess.run(cmd, env=warm, capture_output=True, check=False)  # fill cache
        cases = [
            ("`bmslogger --help`", "help_as_is", [bms, "--help"], as_is),
            ("`bmslogger --help`, warm bytecode cache", "help_warm", [bms, "--help"], warm),
            ("`python -c pass`", "python_as_is", [sys.executable, "-c", "pass"], as_is),
            ("`daly-bms-cli --help`, warm bytecode cache", "dalybms_help_warm",
             [script("daly-bms-cli"), "--help"], warm),
        ]
        for label, key, cmd, env in cases:
            s = timed_runs(cmd, args.runs, env)
            timings[key] = s
            rows.append([label, s["n"], fmt_s(s["median"]), fmt_s(s["p90"]), fmt_s(s["min"])])
        profile = import_profile(as_is)
        profile_warm = import_profile(warm)
    memory = run_memory(args.run_seconds)
    base = baseline_rss()

    help_med = timings["help_as_is"]["median"]
    targets = [
        ("`bmslogger --help` under 0.3 s (median, as this environment runs it)",
         f"{help_med:.3f} s", help_med < HELP_TARGET_S),
        ("`bmslogger --help` under 0.3 s (median, warm bytecode cache)",
         f"{timings['help_warm']['median']:.3f} s",
         timings["help_warm"]["median"] < HELP_TARGET_S),
        (f"`bmslogger run`, default config, {args.run_seconds:.0f} s: peak RSS (reported)",
         f"{memory['ru_maxrss_kb'] / 1024:.1f} MiB (bare Python {base / 1024:.1f} MiB)",
         memory["exit_status"] == 0 and memory["csv_rows"] > 0),
    ]
    print(f"# Start-up and memory ({machine['date_utc']}, {machine['nproc']} x "
          f"{machine['cpu']}, Python {machine['python']}, load {machine['loadavg_start']})\n")
    print(md_table(["target", "measured", "met"],
                   [(a, b, "yes" if c else "**no**") for a, b, c in targets]) + "\n")
    print("## Start-up\n")
    print(md_table(["command", "runs", "median s", "p90 s", "min s"], rows) + "\n")
    print(f"`bmslogger --help` imports {len(profile['bmslogger_modules'])} bmslogger "
          f"modules: {', '.join(profile['bmslogger_modules'])}\n")
    if help_med >= HELP_TARGET_S:
        print("Slowest imports (cumulative):\n")
    else:
        print("Slowest top-level imports, for the record (cumulative, as-is / warm):\n")
    warm_by = {r["module"]: r["cumulative_ms"] for r in profile_warm["slowest_top_level"]}
    print(md_table(["module", "ms as-is", "ms warm"],
                   [(r["module"].strip(), f"{r['cumulative_ms']:.1f}",
                     fmt_s(warm_by.get(r["module"]), 1))
                    for r in profile["slowest_top_level"]]) + "\n")
    print("## `bmslogger run`, default config\n")
    print(md_table(
        ["seconds", "peak RSS (ru_maxrss)", "VmHWM sampled", "RSS at stop", "CSV rows",
         "exit status", "stop took"],
        [[f"{args.run_seconds:.0f}", f"{memory['ru_maxrss_kb'] / 1024:.1f} MiB",
          f"{memory['vmhwm_kb'] / 1024:.1f} MiB", f"{memory['vmrss_last_kb'] / 1024:.1f} MiB",
          memory["csv_rows"], memory["exit_status"], f"{memory['stop_s']:.2f} s"]]) + "\n")
    elapsed = time.monotonic() - started
    print(f"_{elapsed:.0f} s_")
    path = write_json("startup", {
        "machine": machine, "args": vars(args), "elapsed_s": elapsed,
        "targets": [{"target": a, "measured": b, "met": c} for a, b, c in targets],
        "startup_s": timings, "importtime": profile, "importtime_warm": profile_warm,
        "run_memory": memory, "python_baseline_maxrss_kb": base,
    })
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
