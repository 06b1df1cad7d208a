"""``bmslogger detect``: every simulated device found on its own pseudo-terminal, the
proposed config accepted by check-config and read by once, the cache, and probes that
never change a device; ports taken from the machine's port listing (stable names, ports
that cannot be opened or are locked by another process); the bus scan that finds several
units on one RS-485 line."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from serial.tools.list_ports_common import ListPortInfo

import bmslogger.ports
from bmslogger.cli import main
from bmslogger.detect import (
    DEFAULT_SCAN,
    Found,
    addressing,
    cache_path,
    config_blocks,
    configured_names,
    detect,
    detect_ports,
    load_cache,
    parse_addresses,
    stable_port,
)
from bmslogger.manager import build_registry
from bmslogger.plugins.rec import protocol as rec_protocol
from bmslogger.simline import PtyServer, build_bus, build_simulator, serve_pty
from bmslogger.transport import port_identity

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


# --- ports from the machine's listing -------------------------------------------------------


def _listed(device: str, vid: int | None = None, pid: int | None = None,
            serial_number: str | None = None) -> ListPortInfo:
    """A pyserial port-listing entry, as ``comports()`` makes them for a USB adapter."""
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number = vid, pid, serial_number
    if vid is not None:
        info.manufacturer, info.product = "FTDI", "USB serial"
    return info


@pytest.fixture
def listing(monkeypatch, tmp_path: Path):
    """Make `bmslogger.ports.list_serial_ports` (where detect reads the machine's ports)
    list the given entries, with udev links in a by-id folder of the test's own; the
    real function still works out every stable name."""
    real = bmslogger.ports.list_serial_ports
    by_id = tmp_path / "by-id"
    by_id.mkdir()

    def install(entries: Sequence[ListPortInfo], links: Mapping[str, str] = {}) -> None:
        for name, target in links.items():
            os.symlink(target, by_id / name)
        monkeypatch.setattr(
            bmslogger.ports, "list_serial_ports",
            lambda: real(by_id_dir=str(by_id), by_path_dir=str(tmp_path / "by-path"),
                         ports=list(entries)))

    install.by_id = by_id  # type: ignore[attr-defined]
    return install


@pytest.fixture
def cli(capsys) -> Iterator[Any]:
    """`bmslogger.cli.main` in this process (so the port listing can be replaced), with
    the root logger put back afterwards: the CLI points it at this test's stderr."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    try:
        yield run
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


@contextlib.contextmanager
def lock_held_elsewhere(port: str, lock_dir: str) -> Iterator[int]:
    """Another process holds the real port lock of `port` (as a running daemon would);
    yields its pid."""
    code = ("import sys; from bmslogger.locking import PortLock\n"
            f"with PortLock({port_identity(port)!r}, {lock_dir!r}, 5):\n"
            "    print('held', flush=True); sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()


def _config(path: Path) -> None:
    path.write_text(
        '[logger]\ninterval = "10s"\nstate_dir = "state"\nspool_dir = "spool"\n'
        'lock_dir = "locks"\n\n[sinks.stdout]\nformat = "json"\n\n'
        '[[devices.daly]]\nname = "daly-1"\nport = "sim://daly"\nenabled = false\n'
    )


def test_detect_without_ports_probes_exactly_the_listed_ones(
        servers, listing, cli, tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyUSB9")  # listed, but unplugged since
    listing(
        [_listed(servers["daly"].path, 0x0403, 0x6001, "A10K1ABC"),
         # two ports of one FT4232H share its serial number: only by-id tells them apart
         _listed(servers["rec"].path, 0x0403, 0x6011, "FT4ABC"),
         _listed(servers["tristar"].path, 0x0403, 0x6011, "FT4ABC"),
         _listed(servers["pace"].path),
         _listed(missing, 0x1a86, 0x7523)],
        links={"usb-FTDI_Quad_FT4ABC-if00-port0": servers["rec"].path,
               "usb-FTDI_Quad_FT4ABC-if01-port0": servers["tristar"].path})
    config = tmp_path / "logger.toml"
    _config(config)
    with lock_held_elsewhere(servers["pace"].path, str(tmp_path / "locks")) as holder:
        code, out, err = cli("detect", "-c", str(config), "--write-config", str(config))
    assert code == 0, err
    rec_link = str(listing.by_id / "usb-FTDI_Quad_FT4ABC-if00-port0")
    tristar_link = str(listing.by_id / "usb-FTDI_Quad_FT4ABC-if01-port0")
    assert 'port = "usb:0403:6001:A10K1ABC"' in out
    assert f'port = "{rec_link}"' in out and f'port = "{tristar_link}"' in out
    assert out.count("[[devices.") == 3
    assert "[[devices.daly]]" in out and "[[devices.rec]]" in out
    assert "[[devices.tristar]]" in out
    # the ports it could not use, each with why, and nothing else was said about them
    assert f"# skipped {missing}: " in err and "cannot open" in err
    assert f"# skipped {servers['pace'].path}: " in err
    assert f"busy: held by pid {holder}" in err
    assert "nothing answered" not in err
    # the unlisted port was never touched; the locked one got no byte
    assert servers["emus"].bytes_received == 0
    assert servers["pace"].bytes_received == 0
    assert configured_names(str(config)) == {"daly-1", "daly-2", "rec-1", "tristar-1"}
    check = _run("check-config", "-c", str(config), cwd=tmp_path)
    assert check.returncode == 0, check.stderr + check.stdout
    cache = load_cache(cache_path(str(tmp_path / "state")))
    assert set(cache) == {"usb:0403:6001:A10K1ABC", rec_link, tristar_link}


def test_busy_port_is_given_up_after_one_lock_wait_and_keeps_its_cache(
        servers, registry, tmp_path: Path) -> None:
    port, lock_dir, state_dir = servers["rec"].link, str(tmp_path / "locks"), \
        str(tmp_path / "state")
    assert [f.plugin for f in detect([port], registry, lock_dir, state_dir)] == ["rec"]
    with lock_held_elsewhere(port, lock_dir) as holder:
        started = time.monotonic()
        [result] = detect_ports([port], registry, lock_dir, state_dir, lock_timeout_s=0.3)
        elapsed = time.monotonic() - started
    assert result.found == [] and f"held by pid {holder}" in result.problem
    # one wait for the lock, not one per plugin and baud rate
    assert elapsed < 1.0
    assert load_cache(cache_path(state_dir))[port]["plugin"] == "rec"


def test_cli_detect_no_listed_ports(listing, cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no logger.toml of the checkout's
    listing([])
    code, _, err = cli("detect")
    assert code == 1 and "no serial ports found" in err


# --- several units on one bus -------------------------------------------------------------


def serve_bus(plugin: str, option: str, addresses: Sequence[int], link: str) -> PtyServer:
    """`plugin` units at `addresses` on one pty (each with its own seed, so their values
    differ), as `bmslogger simulate PLUGIN --bus` serves them."""
    return serve_pty(build_bus(plugin, {"seed": "0"}, addresses), link=link)


@pytest.fixture
def buses(tmp_path: Path) -> Iterator[Any]:
    started: list[PtyServer] = []

    def start(plugin: str, option: str, addresses: Sequence[int]) -> PtyServer:
        server = serve_bus(plugin, option, addresses,
                           str(tmp_path / f"bus-{plugin}-{len(started)}"))
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


def test_addressable_probes_name_their_plugins_own_option(registry) -> None:
    expected = {"daly": ("board", 16), "rec": ("address", 16), "tristar": ("unit", 247)}
    for name, dtype in registry.devices.items():
        bus = addressing(dtype)
        if name not in expected:
            # PACE's master answers for its whole group; EMUS is one unit per line
            assert bus is None, name
            continue
        option = {o.name: o for o in dtype.options}[bus.option]
        assert (bus.option, len(bus.addresses)) == expected[name]
        assert option.min == bus.addresses[0] and option.max == bus.addresses[-1]
        assert bus.default == option.default == 1


@pytest.mark.parametrize(("plugin", "option", "addresses"), [
    ("rec", "address", (1, 3, 7)),
    ("daly", "board", (1, 2, 4)),
    ("tristar", "unit", (1, 2, 5)),
])
def test_scan_bus_proposes_every_unit(buses, registry, tmp_path: Path, plugin: str,
                                      option: str, addresses: tuple[int, ...]) -> None:
    bus = buses(plugin, option, addresses)
    lock_dir = str(tmp_path / "locks")
    # the default stays one probe per protocol: only the first unit
    plain = detect([bus.link], registry, lock_dir, plugins=[plugin])
    assert [f.options for f in plain] == [{option: 1}]
    started = time.monotonic()
    found = detect([bus.link], registry, lock_dir, plugins=[plugin], scan=range(1, 9))
    elapsed = time.monotonic() - started
    assert [f.options for f in found] == [{option: a} for a in addresses]
    assert {(f.plugin, f.port, f.stable_port) for f in found} == {(plugin, bus.link, bus.link)}
    for f, address in zip(found, addresses):
        assert f" {address}" in f.about
    # eight probes, five of them to absent units: each costs its wire-time deadline only
    assert elapsed < 8 * 0.6
    text = config_blocks(found)
    assert [f'name = "{plugin}-{n}"' in text for n in (1, 2, 3)] == [True] * 3
    assert text.count(f'port = "{bus.link}"') == 3


def test_scan_finds_a_bus_without_unit_1_and_the_cache_remembers_where(
        buses, registry, tmp_path: Path) -> None:
    bus = buses("rec", "address", (2, 5))
    lock_dir, state_dir = str(tmp_path / "locks"), str(tmp_path / "state")
    assert detect([bus.link], registry, lock_dir, state_dir) == []
    found = detect([bus.link], registry, lock_dir, state_dir, scan=DEFAULT_SCAN[:6])
    assert [(f.plugin, f.options) for f in found] == [("rec", {"address": 2}),
                                                      ("rec", {"address": 5})]
    # the next plain detect asks the cached unit first: one REC query, nothing else
    before = bus.bytes_received
    again = detect([bus.link], registry, lock_dir, state_dir)
    assert [(f.plugin, f.options) for f in again] == [("rec", {"address": 2})]
    assert bus.bytes_received - before == len(rec_protocol.query("*IDN", 2))


def test_parse_addresses() -> None:
    assert parse_addresses("1-3,5, 2") == (1, 2, 3, 5)
    assert parse_addresses("16") == (16,)
    for bad in ("x", "3-1", "1-300", "", "1-"):
        with pytest.raises(ValueError):
            parse_addresses(bad)


def test_cli_scan_bus_writes_a_config_that_once_reads_unit_by_unit(
        buses, tmp_path: Path) -> None:
    rec = buses("rec", "address", (1, 3))
    daly = buses("daly", "board", (1, 2))
    tristar = buses("tristar", "unit", (1, 4))
    config = tmp_path / "logger.toml"
    _config(config)
    out = _run("detect", "-c", str(config), "--write-config", str(config),
               "--addresses", "1-4", rec.link, daly.link, tristar.link, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "appended 6 device table(s)" in out.stderr
    for option, value in (("address", 1), ("address", 3), ("board", 1), ("board", 2),
                          ("unit", 1), ("unit", 4)):
        assert f"{option} = {value}\n" in out.stdout
    assert configured_names(str(config)) == {"daly-1", "daly-2", "daly-3", "rec-1", "rec-2",
                                             "tristar-1", "tristar-2"}
    check = _run("check-config", "-c", str(config), cwd=tmp_path)
    assert check.returncode == 0, check.stderr + check.stdout
    once = _run("once", "-c", str(config), cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    points = [json.loads(line) for line in once.stdout.splitlines() if line.startswith("{")]
    devices = {p["tags"].get("device") for p in points}
    assert {"daly-2", "daly-3", "rec-1", "rec-2", "tristar-1", "tristar-2"} <= devices
    # each REC unit is read at its own address (its pack tag)
    packs = {p["tags"]["device"]: p["tags"].get("pack") for p in points
             if p["measurement"] == "battery" and p["tags"]["device"].startswith("rec")}
    assert packs == {"rec-1": "1", "rec-2": "3"}
    bad = _run("detect", "--addresses", "1-x", rec.link, cwd=tmp_path)
    assert bad.returncode == 2 and "--addresses: '1-x' is not an address" in bad.stderr
