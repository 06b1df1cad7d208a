"""The ``bmslogger`` command end to end, as a user or a script runs it: real processes,
real pseudo-terminals, real files."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bmslogger.simline import build_simulator

BMSLOGGER = [sys.executable, "-m", "bmslogger"]


def run(*args: str, cwd: Path | None = None, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("BMSLOGGER_CONFIG", None)
    return subprocess.run([*BMSLOGGER, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=full_env)


@contextmanager
def simulate(*options: str) -> Iterator[str]:
    """`bmslogger simulate daly` in a child process; yields the pty path it printed."""
    args = [*BMSLOGGER, "simulate", "daly"]
    for opt in options:
        args += ["--option", opt]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/"), (path, proc.stderr.read() if proc.poll() else "")
        yield path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)  # also closes the pipes
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def write_config(folder: Path, devices: str, extra: str = "") -> Path:
    config = folder / "logger.toml"
    config.write_text(textwrap.dedent(f"""
        [logger]
        interval = "1s"
        lock_dir = "{folder / 'locks'}"
        state_dir = "{folder / 'state'}"
        spool_dir = "{folder / 'spool'}"
        {extra}
        [sinks.csv]
        directory = "{folder / 'data'}"
        """) + textwrap.dedent(devices))
    return config


def csv_rows(folder: Path, measurement: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted((folder / "data" / measurement).glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    return rows


# --- help, plugins, describe ---------------------------------------------------------------


def test_help_and_version() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("run", "once", "read", "set", "list-plugins", "list-ports", "check-config",
                    "simulate", "describe"):
        assert command in out.stdout
    assert run("--version").stdout.startswith("bmslogger ")
    assert run().returncode == 2  # no command: usage


def test_list_plugins_shows_builtins() -> None:
    out = run("list-plugins", "--format", "json")
    assert out.returncode == 0, out.stderr
    names = {(r["kind"], r["name"]) for r in json.loads(out.stdout)}
    assert {("device", "daly"), ("sink", "csv"), ("sink", "stdout")} <= names


def test_describe_lists_options_commands_and_fields() -> None:
    out = run("describe", "daly", "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"board", "allow_writes"} <= {o["name"] for o in data["options"]}
    assert "set_soc" in {c["name"] for c in data["commands"]}
    assert ("battery", "soc_pct") in {(f["measurement"], f["field"]) for f in data["fields"]}
    text = run("describe", "daly").stdout
    assert "measurement battery:" in text and "soc_pct" in text
    bad = run("describe", "nosuchthing")
    assert bad.returncode == 2 and "unknown device plugin 'nosuchthing'" in bad.stderr


# --- read -----------------------------------------------------------------------------------


def test_read_json_equals_what_the_simulator_holds() -> None:
    options = ("cells=16", "sensors=2", "drift=false", "seed=7")
    expected = build_simulator("daly", dict(o.split("=") for o in options)).state
    with simulate(*options) as pty:
        out = run("read", "daly", "--port", pty, "--format", "json")
    assert out.returncode == 0, out.stderr
    points = json.loads(out.stdout)
    by = {}
    for p in points:
        assert set(p) == {"measurement", "tags", "fields", "time"}
        assert p["time"].endswith("Z") and "T" in p["time"]
        key = (p["measurement"], p["tags"].get("cell") or p["tags"].get("sensor"))
        by[key] = p
    battery = by[("battery", None)]["fields"]
    assert battery["voltage_v"] == pytest.approx(expected.voltage_dv / 10)
    assert battery["soc_pct"] == pytest.approx(expected.soc_permille / 10)
    assert battery["cycles"] == expected.cycles
    for n, mv in enumerate(expected.cells_mv, 1):
        assert by[("cell", str(n))]["fields"]["voltage_v"] == pytest.approx(mv / 1000)
    for n, c in enumerate(expected.temps_c, 1):
        assert by[("temperature", str(n))]["fields"]["temperature_c"] == pytest.approx(c)
    assert by[("battery", None)]["tags"] == {"device": "daly", "plugin": "daly", "pack": "1"}


def test_read_never_takes_a_value_from_a_bad_frame() -> None:
    options = ("cells=8", "drift=false", "seed=3", "fault=checksum", "fault_rate=0.3")
    expected = build_simulator("daly", dict(o.split("=") for o in options)).state
    out = run("read", "daly", "--port", "sim://daly?" + "&".join(options), "--format", "json",
              "--option", "retries=5")
    assert out.returncode in (0, 1), out.stderr
    cells = {p["tags"]["cell"]: p["fields"]["voltage_v"]
             for p in json.loads(out.stdout) if p["measurement"] == "cell"}
    for n, volts in cells.items():
        assert volts == pytest.approx(expected.cells_mv[int(n) - 1] / 1000)


def test_read_exit_codes_for_silence_and_usage() -> None:
    silent = run("read", "daly", "--port", "sim://daly?fault=silence", "--format", "json",
                 "--option", "retries=0")
    assert silent.returncode == 3
    assert json.loads(silent.stdout) == []
    assert "no answer" in silent.stderr
    missing = run("read", "daly", "--port", "/dev/does-not-exist")
    assert missing.returncode == 3 and "/dev/does-not-exist" in missing.stderr
    bad = run("read", "daly", "--port", "sim://daly", "--option", "board=99")
    assert bad.returncode == 2 and "board" in bad.stderr and "Traceback" not in bad.stderr
    assert run("read", "daly").returncode == 2  # --port is required


def test_read_partial_poll_exits_one_and_keeps_what_was_read() -> None:
    # seeded faults are repeatable: with seed 1 the answers to 0x91, 0x93 and 0x97 are lost
    out = run("read", "daly", "--port", "sim://daly?fault=silence&fault_rate=0.2&seed=1",
              "--option", "retries=0", "--format", "json")
    assert out.returncode == 1, out.stderr
    assert out.stderr.splitlines() == [
        "daly: 0x91 cell extremes: no answer after 1 tries",
        "daly: 0x93 mosfet: no answer after 1 tries",
        "daly: 0x97 balancing: no answer after 1 tries",
    ]
    points = json.loads(out.stdout)
    assert {p["measurement"] for p in points} >= {"battery", "cell", "temperature", "alarm"}


def test_read_check_is_a_nagios_plugin() -> None:
    port = "sim://daly?drift=false&soc=50"
    ok = run("read", "daly", "--port", port, "--check", "--warning", "soc_pct=20:")
    assert ok.returncode == 0 and ok.stdout.startswith("DALY OK - ")
    assert "soc_pct=50" in ok.stdout
    crit = run("read", "daly", "--port", port, "--check", "--critical", "soc_pct=60:")
    assert crit.returncode == 2 and "CRITICAL" in crit.stdout
    unknown = run("read", "daly", "--port", "sim://daly?fault=silence", "--check",
                  "--option", "retries=0")
    assert unknown.returncode == 3 and "UNKNOWN" in unknown.stdout


# --- set ------------------------------------------------------------------------------------


def test_set_is_refused_without_allow_writes(tmp_path: Path) -> None:
    out = run("set", "daly", "--port", "sim://daly", "set_soc", "80", cwd=tmp_path)
    assert out.returncode == 1
    assert "allow_writes" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "data" / "state" / "audit.log").exists()


def test_set_with_allow_writes_is_audited(tmp_path: Path) -> None:
    out = run("set", "daly", "--port", "sim://daly", "set_soc", "80",
              "--option", "allow_writes=true", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in
               (tmp_path / "data" / "state" / "audit.log").read_text().splitlines()]
    assert [(r["command"], r["value"], r["device"]) for r in records] == [("set_soc", "80", "daly")]


# --- config, once, run ---------------------------------------------------------------------


def test_check_config_reports_every_problem_with_exit_two(tmp_path: Path) -> None:
    config = write_config(tmp_path, """
        [[devices.daly]]
        name = "a"
        port = "sim://daly"
        board = 40
        interval = "soon"
        colour = "red"
        """)
    out = run("check-config", "-c", str(config))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    for key in ("devices.daly[0].board", "devices.daly[0].interval", "devices.daly[0].colour"):
        assert f"{config}: {key}:" in out.stderr, out.stderr


def test_check_config_accepts_the_shipped_example() -> None:
    root = Path(__file__).resolve().parent.parent
    out = run("check-config", "-c", str(root / "logger.toml"))
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout


def test_once_writes_csv_and_exits_zero(tmp_path: Path) -> None:
    config = write_config(tmp_path, """
        [[devices.daly]]
        name = "bank-a"
        port = "sim://daly?cells=4"
        [[devices.daly]]
        name = "bank-b"
        port = "sim://daly?cells=8&seed=2"
        """)
    out = run("once", "-c", str(config))
    assert out.returncode == 0, out.stderr
    battery = csv_rows(tmp_path, "battery")
    assert sorted(r["device"] for r in battery) == ["bank-a", "bank-b"]
    assert len(csv_rows(tmp_path, "cell")) == 12
    metrics = [r for r in csv_rows(tmp_path, "bmslogger") if r.get("device")]
    assert {r["device"]: r["poll_ok"] for r in metrics} == {"bank-a": "true", "bank-b": "true"}


def test_once_exits_one_when_a_device_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path, """
        [[devices.daly]]
        name = "good"
        port = "sim://daly"
        [[devices.daly]]
        name = "asleep"
        port = "sim://daly?sleep=silent"
        retries = 0
        """)
    out = run("once", "-c", str(config))
    assert out.returncode == 1
    assert "asleep" in out.stderr
    assert [r["device"] for r in csv_rows(tmp_path, "battery")] == ["good"]


def test_run_logs_until_sigterm_then_flushes(tmp_path: Path) -> None:
    config = write_config(tmp_path, """
        [[devices.daly]]
        name = "bank"
        port = "sim://daly?cells=4"
        interval = "500ms"
        """)
    proc = subprocess.Popen([*BMSLOGGER, "run", "-c", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(csv_rows(tmp_path, "battery")) < 3:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping" in err
    rows = csv_rows(tmp_path, "battery")
    assert len(rows) >= 3
    times = [r["time"] for r in rows]
    assert times == sorted(times)


def test_daemon_and_cron_once_share_one_port_without_mixing_bytes(tmp_path: Path) -> None:
    """A `run` daemon polls a real pty every 200 ms while `once` processes poll the same
    port: thanks to the port lock no request interleaves, so no frame is ever corrupted."""
    with simulate("cells=16", "seed=5") as pty:
        config = write_config(tmp_path, f"""
            [[devices.daly]]
            name = "bank"
            port = "{pty}"
            interval = "200ms"
            """)
        daemon = subprocess.Popen([*BMSLOGGER, "run", "-c", str(config)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            results = [run("once", "-c", str(config)) for _ in range(4)]
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    for r in results:
        assert r.returncode == 0, r.stderr
    metrics = [r for r in csv_rows(tmp_path, "bmslogger") if r.get("device") == "bank"]
    assert len(metrics) >= 8
    for row in metrics:
        assert row["poll_ok"] == "true", row
        for key, value in row.items():
            if key.startswith("errors_"):
                assert value in ("", "0"), (key, row)


def test_relative_times_may_follow_from_and_to_as_separate_words() -> None:
    from bmslogger.cli import _join_relative_times

    assert _join_relative_times(["export", "--from", "-2h", "--to", "-1h", "--field", "x"]) == [
        "export", "--from=-2h", "--to=-1h", "--field", "x"]
    out = run("export", "--from", "-2h", "--field", "soc_pct", "--directory", "/nonexistent")
    assert "expected one argument" not in out.stderr
    # a negative interval is a mistake, said in one line like every export mistake
    out = run("export", "--interval", "-5m", "--field", "soc_pct", "--directory", "/tmp")
    assert out.returncode == 2 and "expected one argument" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "--interval" in out.stderr
