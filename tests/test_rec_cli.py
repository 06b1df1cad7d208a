"""`bmslogger read|set|describe|simulate rec` as real processes.

Sets run against a simulator served in this process on a real pty (so the test can see
exactly which requests reached it), or against `bmslogger simulate rec` in another
process, or in-process `sim://` where state lives for one command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bmslogger.options import resolve_options
from bmslogger.plugins.rec.simulator import RecSimulator
from bmslogger.simline import serve_pty


def run(args: list[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BMSLOGGER_CONFIG"}
    return subprocess.run([sys.executable, "-m", "bmslogger", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def make_sim(**options: Any) -> RecSimulator:
    options.setdefault("drift", False)
    return RecSimulator(resolve_options(RecSimulator.all_options(), options))


def dev_args(port: str, tmp_path: Path) -> list[str]:
    return ["--port", port, "--lock-dir", str(tmp_path / "locks")]


def test_read_through_sim_url(tmp_path):
    proc = run(["read", "rec", *dev_args("sim://rec?drift=false&cells=16", tmp_path),
                "--format", "json", "--option", "info_interval=0"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    points = json.loads(proc.stdout)
    cells = [pt for pt in points if pt["measurement"] == "cell"]
    assert len(cells) == 16 and all(3.9 < c["fields"]["voltage_v"] < 4.05 for c in cells)
    battery = next(pt for pt in points if pt["measurement"] == "battery")
    assert battery["fields"]["full_ah"] == 450.0 and battery["fields"]["soc_pct"] == 78.0
    assert battery["tags"] == {"device": "rec", "plugin": "rec", "pack": "1"}


def test_read_and_set_against_bmslogger_simulate_on_a_pty(tmp_path):
    server = subprocess.Popen(
        [sys.executable, "-m", "bmslogger", "simulate", "rec", "--option", "drift=false",
         "--option", "address=3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        path = server.stdout.readline().strip()
        assert path.startswith("/dev/")
        base = [*dev_args(path, tmp_path), "--option", "address=3"]
        proc = run(["read", "rec", *base, "--format", "json"], tmp_path)
        assert proc.returncode == 0, proc.stderr
        points = json.loads(proc.stdout)
        assert {pt["tags"]["pack"] for pt in points} == {"3"}
        info = next(pt for pt in points if pt["measurement"] == "rec_info")
        assert info["fields"]["identification"] == "REC BMS 1Q VICTRON"
        # the set persists in the simulate process: a later read sees it
        proc = run(["set", "rec", *base, "--option", "allow_writes=true", "BMIN", "3.94"],
                   tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["read_back"] == 3.94
        proc = run(["read", "rec", *base, "--option", "read_settings=true"], tmp_path)
        settings = next(pt for pt in json.loads(proc.stdout)
                        if pt["measurement"] == "rec_settings")
        assert settings["fields"]["bmin_v"] == 3.94
    finally:
        server.terminate()
        server.wait(10)
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture()
def pty_sim():
    sim = make_sim()
    with serve_pty(sim) as server:
        yield sim, server.path


def test_set_refused_without_allow_writes(tmp_path, pty_sim):
    sim, path = pty_sim
    proc = run(["set", "rec", *dev_args(path, tmp_path), "CHAR", "3.5"], tmp_path)
    assert proc.returncode == 1
    assert "allow_writes" in proc.stderr and "Traceback" not in proc.stderr
    assert sim.writes_received == [] and sum(sim.requests_received.values()) == 0


@pytest.mark.parametrize("value", ["4.5", "1.5", "-3", "three"])
def test_set_out_of_range_refused_with_nothing_sent(tmp_path, pty_sim, value):
    sim, path = pty_sim
    proc = run(["set", "rec", *dev_args(path, tmp_path), "--option", "allow_writes=true",
                "CHAR", value], tmp_path)
    assert proc.returncode == 1
    assert "nothing sent" in proc.stderr and "Traceback" not in proc.stderr
    assert sim.writes_received == [] and sum(sim.requests_received.values()) == 0
    assert sim.state.settings["CHAR"] == 3.58
    record = json.loads((tmp_path / "data" / "state" / "audit.log").read_text())
    assert record["command"] == "CHAR" and "error" in record["answer"]


def test_dry_run_prints_the_exact_frame(tmp_path, pty_sim):
    sim, path = pty_sim
    proc = run(["set", "rec", *dev_args(path, tmp_path), "--dry-run", "BMIN", "3.94"],
               tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["frame"] == "55 01 00 09 42 4d 49 4e 20 33 2e 39 34 c1 ea aa"
    assert plan["text"] == "BMIN 3.94"
    assert sum(sim.requests_received.values()) == 0
    proc = run(["set", "rec", *dev_args(path, tmp_path), "--dry-run", "BMIN", "9"], tmp_path)
    assert proc.returncode == 1 and "outside" in proc.stderr


def test_set_reads_back_and_lands_in_the_audit_log(tmp_path, pty_sim):
    sim, path = pty_sim
    proc = run(["set", "rec", *dev_args(path, tmp_path), "--option", "allow_writes=true",
                "CHAR", "3.55"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert (answer["old"], answer["new"], answer["read_back"]) == (3.58, 3.55, 3.55)
    assert sim.state.settings["CHAR"] == 3.55 and sim.writes_received == [("CHAR", "3.55")]
    assert list(sim.request_log) == ["CHAR", "CHAR", "CHAR"]  # old value, set, read-back
    [record] = [json.loads(line) for line in
                (tmp_path / "data" / "state" / "audit.log").read_text().splitlines()]
    assert record["command"] == "CHAR" and record["port"] == path
    assert record["answer"]["old"] == 3.58 and record["answer"]["new"] == 3.55
    assert record["answer"]["read_back"] == 3.55 and record["time"]


def test_set_needing_confirmation(tmp_path, pty_sim):
    sim, path = pty_sim
    base = ["set", "rec", *dev_args(path, tmp_path), "--option", "allow_writes=true"]
    proc = run([*base, "SOCS", "0.5"], tmp_path)
    assert proc.returncode == 1 and "--confirm" in proc.stderr
    assert sim.writes_received == []
    proc = run([*base, "--confirm", "SOCS", "0.5"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sim.state.soc == 0.5


def test_set_through_sim_url_in_one_process(tmp_path):
    proc = run(["set", "rec", *dev_args("sim://rec?drift=false", tmp_path), "--option",
                "allow_writes=true", "CAPA", "280"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["old"] == 450.0 and answer["read_back"] == 280.0


def test_describe_rec_lists_instructions_with_units_ranges_and_fields(tmp_path):
    proc = run(["describe", "rec"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "56000 baud 8N1" in text
    assert "command CHAR number 2..4.3 V: cell end-of-charge voltage" in text
    assert "[settable; unit V, min 2 max 4.3]" in text
    assert "needs --confirm" in text
    assert "measurement rec_settings:" in text and "char_v" in text
    proc = run(["describe", "rec", "--format", "json"], tmp_path)
    data = json.loads(proc.stdout)
    commands = {c["name"]: c for c in data["commands"]}
    assert len(commands) == 31 and "REFC" not in commands and "LCD1" not in commands
    assert commands["TMIN"]["min"] == -30 and commands["TMIN"]["max"] == 65
    assert commands["TMIN"]["unit"] == "°C" and commands["TMIN"]["settable"] is True
    assert commands["SOCS"]["needs_confirmation"] is True
    fields = {(f["measurement"], f["field"]): f for f in data["fields"]}
    assert fields[("battery", "soh_pct")]["unit"] == "%"
    assert "settable" in fields[("rec_settings", "tmax_c")]["description"]


def test_describe_works_for_every_device_plugin(tmp_path):
    proc = run(["list-plugins", "--format", "json"], tmp_path)
    devices = [r["name"] for r in json.loads(proc.stdout) if r["kind"] == "device"]
    assert "rec" in devices
    for name in devices:
        proc = run(["describe", name], tmp_path)
        assert proc.returncode == 0, (name, proc.stderr)
        assert "Traceback" not in proc.stderr
