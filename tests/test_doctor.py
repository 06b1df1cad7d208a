"""``bmslogger doctor``: access checks, lock holders, configured devices answering or
silent, and the raw hex dump of one device's conversation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmslogger.doctor import HexLog, access_check, check_ports
from bmslogger.locking import PortLock
from bmslogger.simline import PtyServer, build_simulator, serve_pty


@pytest.fixture
def daly(tmp_path: Path) -> Iterator[PtyServer]:
    server = serve_pty(build_simulator("daly", {"cells": "4", "sensors": "1"}),
                       link=str(tmp_path / "ttyDALY"))
    yield server
    server.close()


def _config(tmp_path: Path, port: str, extra: str = "") -> Path:
    path = tmp_path / "logger.toml"
    path.write_text(
        '[logger]\nstate_dir = "state"\nspool_dir = "spool"\nlock_dir = "locks"\n'
        f'[[devices.daly]]\nname = "bank"\nport = "{port}"\nretries = 0\n{extra}'
        '[sinks.stdout]\n'
    )
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bmslogger", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_access_check_of_a_pty_and_a_missing_file(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        group, ok, hint = access_check(os.ttyname(slave))
        assert ok is True and hint == "" and group
    finally:
        os.close(master)
        os.close(slave)
    group, ok, hint = access_check(str(tmp_path / "nope"))
    assert (group, ok) == (None, False) and "cannot stat" in hint


def test_check_ports_reports_the_lock_holder(daly: PtyServer, tmp_path: Path) -> None:
    class Info:  # what pyserial's comports() yields, for a pty it does not list
        device = daly.path
        vid = pid = serial_number = product = manufacturer = None
        description = "simulated"

    lock_dir = str(tmp_path / "locks")
    [free] = check_ports(lock_dir, ports=[Info()])
    assert free.lock_holder is None and free.may_open
    with PortLock(os.path.basename(daly.path), lock_dir, 1.0):
        [held] = check_ports(lock_dir, ports=[Info()])
    assert held.lock_holder == os.getpid()


def test_doctor_says_which_device_answers(daly: PtyServer, tmp_path: Path) -> None:
    config = _config(tmp_path, daly.link)
    out = _run("doctor", "-c", str(config), "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    [bank] = report["devices"]
    assert bank["device"] == "bank" and bank["answers"] is True and bank["complete"] is True
    assert bank["resolved"] == daly.link and bank["may_open"] is True
    text = _run("doctor", "-c", str(config), cwd=tmp_path)
    assert "bank (daly) on" in text.stdout and "answers" in text.stdout


def test_doctor_flags_a_silent_device(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        config = _config(tmp_path, os.ttyname(slave))
        out = _run("doctor", "-c", str(config), cwd=tmp_path)
    finally:
        os.close(master)
        os.close(slave)
    assert out.returncode == 1
    assert "SILENT" in out.stdout and "0x94" in out.stdout


def test_doctor_raw_prints_every_frame_in_hex(daly: PtyServer, tmp_path: Path) -> None:
    config = _config(tmp_path, daly.link)
    out = _run("doctor", "-c", str(config), "--raw", "bank", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    tx = [line for line in lines if " TX " in line]
    rx = [line for line in lines if " RX " in line]
    # the first request is 0x94 to board 1 from host 0x40, the documented 13-byte frame
    assert tx[0].split("TX", 1)[1].strip().startswith("a5 40 94 08")
    assert len(tx) == 9 and len(rx) >= 9
    assert all(line.split("RX", 1)[1].strip().startswith("a5 01") for line in rx)
    assert "9 of 9 request(s) answered" in out.stderr
    bad = _run("doctor", "-c", str(config), "--raw", "nosuch", cwd=tmp_path)
    assert bad.returncode == 2 and "bank" in bad.stderr


def test_hexlog_merges_received_chunks() -> None:
    times = iter([0.0, 0.1, 0.2, 0.25, 0.3])
    log = HexLog(clock=lambda: next(times))
    log("TX", b"\xa5\x40")
    log("RX", b"\xa5")
    log("RX", b"\x01\x02")
    log("TX", b"\x00")
    assert log.lines() == ["+   0.100 TX  a5 40", "+   0.200 RX  a5 01 02",
                           "+   0.300 TX  00"]
