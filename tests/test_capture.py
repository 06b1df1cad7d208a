"""Record a device session with ``doctor --raw --save`` and replay it (`bmslogger.capture`).

Sessions are recorded from simulators on real pseudo-terminals by the real ``bmslogger``
program, and the replay is polled by the real driver through a real pty: what the driver
reads from the replay must be what it read from the device, value for value.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslogger.capture import (
    Capture,
    CaptureError,
    Recorder,
    ReplaySimulator,
    load_capture,
    parse_capture,
    point_json,
    write_capture,
)
from bmslogger.config import load_config
from bmslogger.doctor import HexLog, raw_poll
from bmslogger.manager import build_registry
from bmslogger.model import PollResult
from bmslogger.simline import build_simulator, serve_pty, serve_tcp

REGISTRY = build_registry()


def _config(tmp_path: Path, plugin: str, port: str, extra: str = "") -> Path:
    path = tmp_path / f"{plugin}-{abs(hash(port))}.toml"
    path.write_text(
        f'[logger]\nstate_dir = "{tmp_path}/state"\nspool_dir = "{tmp_path}/spool"\n'
        f'lock_dir = "{tmp_path}/locks"\n'
        f'[[devices.{plugin}]]\nname = "dev"\nport = "{port}"\nretries = 0\n{extra}'
        '[sinks.stdout]\n'
    )
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bmslogger", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def _record(tmp_path: Path, plugin: str, sim_options: dict[str, str], polls: int,
            extra: str = "") -> Path:
    """A session of a simulated `plugin`, recorded by ``bmslogger doctor --raw --save``."""
    saved = tmp_path / f"{plugin}.capture.jsonl"
    with serve_pty(build_simulator(plugin, sim_options)) as server:
        config = _config(tmp_path, plugin, server.path, extra)
        out = _run("doctor", "-c", str(config), "--raw", "dev", "--save", str(saved),
                   "--polls", str(polls), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"capture written to {saved}" in out.stderr
    return saved


def _poll(tmp_path: Path, plugin: str, port: str, extra: str = "") -> PollResult:
    """One poll by the real driver of `plugin` on `port`, as the logger would do it."""
    config = load_config(str(_config(tmp_path, plugin, port, extra)), REGISTRY)
    result = raw_poll(config.device("dev"), REGISTRY.device(plugin),
                      str(config.settings.lock_dir), HexLog())
    assert result.complete, result.errors
    return result


def _points(result: PollResult) -> list[dict[str, Any]]:
    # through JSON, as the capture holds them, so 3.0 and 3 compare as the file does
    return json.loads(json.dumps([point_json(p) for p in result.points]))


@pytest.fixture(scope="module")
def daly_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _record(tmp_path_factory.mktemp("daly"), "daly",
                   {"cells": "4", "sensors": "2", "seed": "7"}, polls=2)


# --- recording ----------------------------------------------------------------------------


def test_the_capture_file_holds_header_frames_and_points(daly_capture: Path) -> None:
    lines = [json.loads(line) for line in daly_capture.read_text().splitlines()]
    header = lines[0]
    assert header["format"] == "bmslogger-capture" and header["version"] == 1
    assert header["plugin"] == "daly" and header["device"] == "dev"
    assert header["settings"]["baudrate"] == 9600 and header["settings"]["parity"] == "N"
    assert header["options"]["board"] == 1 and header["polls"] == 2
    frames = [line for line in lines if "dir" in line]
    # Daly's first request: 0x94 to board 1 from host 0x40, and its answer from board 1
    assert frames[0]["dir"] == "tx" and frames[0]["hex"].startswith("a5 40 94 08")
    assert frames[1]["dir"] == "rx" and frames[1]["hex"].startswith("a5 01 94 08")
    times = [line["t"] for line in lines[1:]]
    assert times == sorted(times)
    polls = [line for line in lines if "poll" in line]
    assert [p["poll"] for p in polls] == [1, 2]
    assert all(p["requests"] == p["answered"] > 0 and p["points"] for p in polls)
    battery = next(p for p in polls[0]["points"] if p["measurement"] == "battery")
    assert battery["tags"]["device"] == "dev" and isinstance(battery["fields"]["voltage_v"],
                                                             float)
    # the second poll's frames come after the first poll's record
    assert lines.index(polls[0]) < len(lines) - 1 - lines[::-1].index(frames[-1])


def test_save_without_raw_is_a_usage_error(tmp_path: Path) -> None:
    config = _config(tmp_path, "daly", "/dev/null")
    out = _run("doctor", "-c", str(config), "--save", str(tmp_path / "x"), cwd=tmp_path)
    assert out.returncode == 2 and "--raw" in out.stderr and "Traceback" not in out.stderr


def test_secrets_are_masked_in_the_header_and_the_bytes(tmp_path: Path) -> None:
    config = load_config(str(_config(tmp_path, "emus", "/dev/null",
                                     'password = "hunter2"\n')), REGISTRY)
    device = config.device("dev")
    times = iter([0.0, 0.01, 0.02, 0.03])
    recorder = Recorder(clock=lambda: next(times))
    recorder("TX", b"PW1,hunter2,5A\r\n")
    recorder("RX", b"PW1,1,AB\r\n")
    saved = tmp_path / "emus.jsonl"
    write_capture(str(saved), device, recorder)
    text = saved.read_text()
    assert "hunter2" not in text and b"hunter2".hex(" ") not in text
    capture = load_capture(str(saved))
    assert capture.header["options"]["password"] == "***"
    login = capture.records[0]
    assert login.masked and login.data == b"PW1,*******,5A\r\n"
    assert not capture.records[1].masked


# --- replaying with the real driver -------------------------------------------------------


def test_replay_gives_the_driver_the_recorded_values_in_order(daly_capture: Path,
                                                              tmp_path: Path) -> None:
    capture = load_capture(str(daly_capture))
    recorded = [p["points"] for p in capture.polls]
    assert recorded[0] != recorded[1]  # values moved between polls, so order shows
    simulator = ReplaySimulator(capture)
    with serve_pty(simulator) as server:
        replayed = [_points(_poll(tmp_path, "daly", server.path)) for _ in range(3)]
    # each poll gets the answers recorded at the same place; then they start over
    assert replayed == [recorded[0], recorded[1], recorded[0]]
    assert simulator.ignored["unknown request"] == 0
    assert simulator.answered == 3 * len(capture.exchanges()) // 2


def test_replay_of_a_second_protocol_over_tcp(tmp_path: Path) -> None:
    saved = _record(tmp_path, "rec", {"cells": "4", "seed": "3"}, polls=1)
    capture = load_capture(str(saved))
    with serve_tcp(ReplaySimulator(capture)) as server:
        replayed = _points(_poll(tmp_path, "rec", server.url))
    assert replayed == capture.polls[0]["points"]
    cells = [p for p in replayed if p["measurement"] == "cell"]
    assert len(cells) == 4 and all(c["fields"]["voltage_v"] > 2.0 for c in cells)


def test_bmslogger_replay_serves_the_capture_on_a_pty(daly_capture: Path,
                                                      tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bmslogger", "replay", str(daly_capture)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "replay printed no path"
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/")
        replayed = _points(_poll(tmp_path, "daly", path))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert replayed == load_capture(str(daly_capture)).polls[0]["points"]
    assert "0 unknown request(s)" in err and "Traceback" not in err


def _read_exactly(fd: int, count: int, deadline_s: float) -> bytes:
    """Read until `count` bytes arrived or the deadline passed."""
    end = time.monotonic() + deadline_s
    data = b""
    while len(data) < count:
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        data += os.read(fd, count - len(data))
    return data


def test_an_unknown_request_gets_silence(daly_capture: Path) -> None:
    capture = load_capture(str(daly_capture))
    request, answer, _ = capture.exchanges()[0]
    simulator = ReplaySimulator(capture)
    unknown = bytes.fromhex("a5 40 d8 08 00 00 00 00 00 00 00 00 c5")  # not recorded
    with serve_pty(simulator) as server:
        fd = os.open(server.path, os.O_RDWR | os.O_NOCTTY)
        try:
            import tty

            tty.setraw(fd)
            os.write(fd, unknown + request)
            settings_ = simulator.port_settings
            wait = settings_.wire_time(len(unknown + request) + 2 * len(answer)) \
                + 10 * settings_.turnaround_s + 1.0
            got = _read_exactly(fd, len(answer) + 1, wait)
        finally:
            os.close(fd)
    # only the known request's answer came back: nothing for the unknown one
    assert got == answer
    assert simulator.ignored["unknown request"] == 1


# --- the replay state machine, without a line ---------------------------------------------


def _capture(*records: tuple[str, str], settings_: dict[str, Any] | None = None) -> Capture:
    lines = [json.dumps({"format": "bmslogger-capture", "version": 1, "plugin": "x",
                         "settings": settings_ or {"baudrate": 9600}})]
    lines += [json.dumps({"dir": d, "t": i * 0.1, "hex": h})
              for i, (d, h) in enumerate(records)]
    return parse_capture(lines)


def test_repeated_requests_cycle_and_chunking_does_not_matter() -> None:
    sim = ReplaySimulator(_capture(("tx", "01 02"), ("rx", "aa"), ("tx", "03"),
                                   ("tx", "01 02"), ("rx", "bb"), ("rx", "cc")))
    assert [t.data for t in sim.receive(b"\x01")] == []  # half a request: wait
    assert [t.data for t in sim.receive(b"\x02")] == [b"\xaa"]
    assert [t.data for t in sim.receive(b"\x03\x01\x02\x01\x02")] == [b"\xbb\xcc", b"\xaa"]
    assert sim.ignored["unknown request"] == 0  # 03 was recorded, unanswered
    assert sim.receive(b"\x09\x09\x01\x02")[0].data == b"\xbb\xcc"
    assert sim.ignored["unknown request"] == 1


def test_timing_uses_the_recorded_delay() -> None:
    capture = _capture(("tx", "01"), ("rx", "aa"), settings_={"baudrate": 9600,
                                                              "turnaround_s": 0.02})
    assert ReplaySimulator(capture).receive(b"\x01")[0].delay_s == 0.02
    timed = ReplaySimulator(capture, timing=True).receive(b"\x01")[0].delay_s
    assert timed == pytest.approx(0.1 - 10 / 9600)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(1, 8))
def test_random_bytes_never_break_the_replay(data: bytes, chunk: int) -> None:
    sim = ReplaySimulator(_capture(("tx", "a5 40 90"), ("rx", "a5 01 90"), ("tx", "a5 40"),
                                   ("rx", "77")))
    for i in range(0, len(data), chunk):
        for tx in sim.receive(data[i:i + chunk]):
            assert tx.data in (b"\xa5\x01\x90", b"\x77")
    assert len(sim._buffer) <= 3


# --- bad capture files ----------------------------------------------------------------------


@pytest.mark.parametrize("line3, message", [
    ('{"dir": "tx", "t": 0.1, "hex": "zz"}', "line 3: hex is not hex bytes"),
    ('{"dir": "up", "t": 0.1, "hex": "00"}', 'line 3: dir must be "tx" or "rx"'),
    ('{"dir": "rx", "t": -1, "hex": "00"}', "line 3: t must be a number >= 0"),
    ('{"dir": "rx", "t": 0.1, "hex": "00"', "line 3: not JSON"),
    ('[1, 2]', "line 3: expected an object"),
])
def test_a_corrupt_line_is_named(tmp_path: Path, line3: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"format": "bmslogger-capture", "version": 1, "settings": {}}\n'
                    '{"dir": "tx", "t": 0.0, "hex": "01"}\n' + line3 + "\n")
    with pytest.raises(CaptureError) as err:
        load_capture(str(path))
    assert str(err.value).startswith(f"{path} {message}")


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ('{"format": "pcap"}\n', "line 1: not a capture file"),
    ('{"format": "bmslogger-capture", "version": 9}\n', "line 1: capture format version 9"),
    ('{"format": "bmslogger-capture", "version": 1, "settings": {"baudrate": 0}}\n',
     "line 1: header: baudrate must be a positive integer"),
    ('{"format": "bmslogger-capture", "version": 1}\n{"dir": "rx", "t": 0, "hex": ""}\n',
     "holds no request"),
])
def test_a_file_that_is_no_capture_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(CaptureError, match=message):
        load_capture(str(path))


def test_replay_of_a_corrupt_file_says_which_line(daly_capture: Path, tmp_path: Path) -> None:
    lines = daly_capture.read_text().splitlines()
    lines[4] = lines[4][:20]  # cut short, as a file truncated by a full disk
    bad = tmp_path / "cut.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    out = _run("replay", str(bad), cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert f"{bad} line 5: not JSON" in out.stderr and "Traceback" not in out.stderr
    missing = _run("replay", str(tmp_path / "nope.jsonl"), cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=4))
def test_random_lines_give_a_capture_or_a_capture_error(lines: list[str]) -> None:
    header = '{"format": "bmslogger-capture", "version": 1}'
    for candidate in (lines, [header, *lines]):
        try:
            capture = parse_capture(candidate)
        except CaptureError:
            continue
        ReplaySimulator(capture).receive(b"\x00\x01")
