"""Run every benchmark of issue 2, one after the other, and keep their tables together.

Why one after the other: they time real-time lines and process start-ups, so running
them side by side would measure each other. Each script prints its Markdown tables and
writes its JSON under ``bench/results/``; this runner also saves the tables of the run
as ``bench/results/latest.md`` (what the README's Benchmarks section quotes).

Run: ``python bench/run_all.py`` (about 5 minutes on 2 cores), or
``python bench/run_all.py --quick`` for a smoke run of a few rounds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from common import HERE, RESULTS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few rounds only (smoke run)")
    args = ap.parse_args(argv)
    jobs = [
        [sys.executable, str(HERE / "daly_poll.py"), *(["--quick"] if args.quick else [])],
        [sys.executable, str(HERE / "startup.py"),
         *(["--runs", "5", "--run-seconds", "5"] if args.quick else [])],
    ]
    parts, status = [], 0
    for cmd in jobs:
        print(f"$ {' '.join(cmd)}", file=sys.stderr)
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        sys.stdout.write(out.stdout + "\n")
        parts.append(out.stdout)
        status = status or out.returncode
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text("\n".join(parts), encoding="utf-8")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
