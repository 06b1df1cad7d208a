"""``bmslogger detect``: every simulated device found on its own pseudo-terminal, the
proposed config accepted by check-config and read by once, the cache, and probes that
never change a device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmslogger.detect import (
    Found,
    cache_path,
    config_blocks,
    configured_names,
    detect,
    load_cache,
    stable_port,
)
from bmslogger.manager import build_registry
from bmslogger.simline import PtyServer, build_simulator, serve_pty

PLUGINS = ("daly", "emus", "rec", "pace", "tristar")


@pytest.fixture(scope="module")
def registry():
    return build_registry()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, PtyServer]]:
    """One simulator per plugin, each on its own pty with a stable link in tmp_path."""
    started: dict[str, PtyServer] = {}
    try:
        for name in PLUGINS:
            link = str(tmp_path / f"tty-{name}")
            started[name] = serve_pty(build_simulator(name, {}), link=link)
        yield started
    finally:
        for server in started.values():
            server.close()


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bmslogger", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_detect_finds_each_device_on_its_port(servers, registry, tmp_path: Path) -> None:
    ports = [s.link for s in servers.values()]
    found = detect(ports, registry, str(tmp_path / "locks"), str(tmp_path / "state"))
    by_port = {f.port: f for f in found}
    assert {by_port[s.link].plugin for s in servers.values()} == set(PLUGINS)
    for name, server in servers.items():
        f = by_port[server.link]
        assert f.plugin == name
        # a symlink that is no listed serial port is kept as given (the stable name)
        assert f.stable_port == server.link
        assert f.baudrate == registry.devices[name].port_defaults.baudrate
    assert by_port[servers["daly"].link].options == {"board": 1}
    assert "16 cells" in by_port[servers["daly"].link].about
    assert by_port[servers["tristar"].link].options == {"unit": 1}
    # probes read only: the TriStar simulator logs every write it is sent
    assert servers["tristar"].simulator.writes_received == []
    cache = load_cache(cache_path(str(tmp_path / "state")))
    assert {cache[s.link]["plugin"] for s in servers.values()} == set(PLUGINS)


def test_cache_makes_the_next_detect_one_request_per_port(servers, registry,
                                                          tmp_path: Path) -> None:
    tristar = servers["tristar"]
    lock_dir, state_dir = str(tmp_path / "locks"), str(tmp_path / "state")
    first = detect([tristar.link], registry, lock_dir, state_dir)
    assert [f.plugin for f in first] == ["tristar"]
    # without a cache every other protocol was tried before Modbus
    assert tristar.bytes_received > 8
    before = tristar.bytes_received
    again = detect([tristar.link], registry, lock_dir, state_dir)
    assert [f.plugin for f in again] == ["tristar"]
    assert tristar.bytes_received - before == 8  # one Modbus RTU read request, nothing else
    before = tristar.bytes_received
    detect([tristar.link], registry, lock_dir, state_dir, use_cache=False)
    assert tristar.bytes_received - before > 8


def test_silent_port_finds_nothing_and_is_forgotten(registry, tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        state_dir = str(tmp_path / "state")
        cache_file = cache_path(state_dir)
        os.makedirs(state_dir)
        Path(cache_file).write_text(json.dumps({path: {"plugin": "daly", "baudrate": 9600}}))
        assert detect([path], registry, str(tmp_path / "locks"), state_dir) == []
        assert path not in load_cache(cache_file)
    finally:
        os.close(master)
        os.close(slave)


def test_config_blocks_names_and_baudrate() -> None:
    found = [
        Found("/dev/ttyUSB0", "usb:0403:6001", "daly", 9600, {"board": 2}, "x",
              default_baudrate=9600),
        Found("/dev/ttyUSB1", "/dev/serial/by-id/a \"b\"", "daly", 19200, {}, "",
              default_baudrate=9600),
    ]
    text = config_blocks(found, taken={"daly-1"})
    assert 'name = "daly-2"' in text and 'name = "daly-3"' in text
    assert 'port = "usb:0403:6001"' in text and "board = 2" in text
    assert 'port = "/dev/serial/by-id/a \\"b\\""' in text
    assert text.count("baudrate = 19200") == 1
    assert config_blocks([]) == ""


def test_stable_port_prefers_the_listed_stable_url(tmp_path: Path) -> None:
    class Info:
        device = str(tmp_path / "ttyUSB7")
        stable_url = "usb:0403:6001:AB12"

    Path(Info.device).write_text("")
    assert stable_port(Info.device, [Info()]) == "usb:0403:6001:AB12"
    assert stable_port("socket://h:1", [Info()]) == "socket://h:1"
    assert stable_port(str(tmp_path / "other"), [Info()]) == str(tmp_path / "other")


def test_cli_detect_writes_a_config_that_check_config_and_once_accept(
        servers, tmp_path: Path) -> None:
    config = tmp_path / "logger.toml"
    config.write_text(
        '[logger]\ninterval = "10s"\nstate_dir = "state"\nspool_dir = "spool"\n'
        'lock_dir = "locks"\n\n[sinks.stdout]\nformat = "json"\n\n'
        '[[devices.daly]]\nname = "daly-1"\nport = "sim://daly"\nenabled = false\n'
    )
    ports = [s.link for s in servers.values()]
    out = _run("detect", "-c", str(config), "--write-config", str(config), *ports,
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for name in PLUGINS:
        assert f"[[devices.{name}]]" in out.stdout
    assert "appended 5 device table(s)" in out.stderr
    assert configured_names(str(config)) == {"daly-1", "daly-2", "emus-1", "rec-1",
                                             "pace-1", "tristar-1"}
    check = _run("check-config", "-c", str(config), cwd=tmp_path)
    assert check.returncode == 0, check.stderr + check.stdout
    once = _run("once", "-c", str(config), cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    devices = {json.loads(line)["tags"].get("device") for line in once.stdout.splitlines()
               if line.startswith("{")}
    assert {"daly-2", "emus-1", "rec-1", "pace-1", "tristar-1"} <= devices


def test_cli_detect_nothing_answers_exits_1(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        out = _run("detect", "--plugin", "daly", os.ttyname(slave), cwd=tmp_path)
    finally:
        os.close(master)
        os.close(slave)
    assert out.returncode == 1
    assert "nothing answered" in out.stderr
    bad = _run("detect", "--plugin", "nosuch", "/dev/null", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown device plugin" in bad.stderr
