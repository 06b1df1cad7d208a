"""systemd: sd_notify over a real datagram socket, a watchdog that stops being petted when
a sink hangs (and resumes when it moves again), and the unit file install-service writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from bmslogger import hookimpl
from bmslogger.config import parse_config
from bmslogger.manager import build_registry, get_plugin_manager
from bmslogger.model import Point, SinkType
from bmslogger.runtime import LoggerService
from bmslogger.sink import Sink
from bmslogger.systemd import (
    UNIT_TEMPLATE,
    Watchdog,
    render_unit,
    sd_notify,
    watchdog_interval,
)

REPO = Path(__file__).resolve().parent.parent


class Listener:
    """The systemd side of NOTIFY_SOCKET: a bound AF_UNIX datagram socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def pets(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for t, m in self.messages if since <= t < until and "WATCHDOG=1" in m)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(str(tmp_path / "notify.sock"))
    yield lst
    lst.close()


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_sd_notify_sends_one_datagram(listener: Listener, tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    assert sd_notify("READY=1\nSTATUS=hello", env) is True
    assert _wait_for(lambda: listener.messages, 2)
    assert listener.messages[0][1] == "READY=1\nSTATUS=hello"
    assert sd_notify("READY=1", {}) is False  # outside systemd: nothing, no error
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "missing")}) is False


def test_sd_notify_abstract_socket() -> None:
    name = f"bmslogger-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_watchdog_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "120000000"}) == 60.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "nonsense"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000000",
                              "WATCHDOG_PID": str(os.getpid())}) == 0.5


# --- a logger whose sink hangs stops petting the watchdog ---------------------------------------

HANG = threading.Event()  # set: every write blocks until RELEASE is set
RELEASE = threading.Event()
WRITTEN: list[int] = []


class HangingSink(Sink):
    """Writes instantly, or hangs in write() (like a database client without a timeout)."""

    def write(self, points: Sequence[Point]) -> None:
        if HANG.is_set():
            RELEASE.wait(30)
        WRITTEN.append(len(points))


def _registry(monkeypatch: pytest.MonkeyPatch):
    module = types.ModuleType("bmslogger_test_hangsink")
    module.HangingSink = HangingSink  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bmslogger_test_hangsink", module)

    class Plugin:
        @hookimpl
        def register_sink_types(self) -> list[SinkType]:
            return [SinkType("hang", "test sink that hangs", (),
                             "bmslogger_test_hangsink:HangingSink")]

    pm = get_plugin_manager()
    pm.register(Plugin(), name="hangtest")
    return build_registry(pm)


def _start_logger(tmp_path: Path, registry, body: str):
    """A LoggerService on `body` (devices, sinks, extra [logger] keys) running in a thread
    under a fake systemd (NOTIFY_SOCKET, WATCHDOG_USEC set by `watchdog_env`)."""
    config = parse_config(
        '[logger]\nstate_dir = "state"\nspool_dir = "spool"\nlock_dir = "locks"\n' + body,
        str(tmp_path / "logger.toml"), registry)
    service = LoggerService(config, registry)
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop, 3.0), daemon=True)
    runner.start()
    return service, stop, runner


@pytest.fixture
def watchdog_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # pet every 0.2 s at most
    monkeypatch.delenv("WATCHDOG_PID", raising=False)


def test_hung_sink_stops_the_watchdog_and_progress_resumes_it(
        listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        watchdog_env: None) -> None:
    HANG.clear()
    RELEASE.clear()
    WRITTEN.clear()
    registry = _registry(monkeypatch)
    service, stop, runner = _start_logger(tmp_path, registry, (
        'sink_stall = "1.5s"\n'
        '[[devices.daly]]\nname = "d"\nport = "sim://daly?cells=4&sensors=1"\n'
        'interval = "1s"\n[sinks.hang]\nbatch_size = 1\nflush_interval = "100ms"\n'))
    try:
        assert _wait_for(lambda: any("READY=1" in m for _, m in listener.messages), 10)
        assert _wait_for(lambda: WRITTEN and listener.pets() >= 2, 10)  # healthy: petted
        HANG.set()
        hung_at = time.monotonic()
        # a stalled sink is noticed after [logger] sink_stall; then pets stop entirely
        assert _wait_for(lambda: any(m.startswith("STATUS=stalled: sink hang")
                                     for _, m in listener.messages), 10)
        noticed = time.monotonic()
        time.sleep(2.0)
        assert listener.pets(since=noticed) == 0
        assert listener.pets(since=hung_at) <= 10  # only until the stall was noticed
        assert service.last_poll_done is not None  # polls went on meanwhile
        RELEASE.set()  # the write returns: progress, so the watchdog is petted again
        released = time.monotonic()
        assert _wait_for(lambda: listener.pets(since=released) >= 1, 10)
    finally:
        RELEASE.set()
        HANG.clear()
        stop.set()
        runner.join(20)
    assert not runner.is_alive()
    assert any("STOPPING=1" in m for _, m in listener.messages)


# --- the unit file --------------------------------------------------------------------------------


def test_repository_unit_is_the_rendered_template() -> None:
    shipped = (REPO / "contrib" / "systemd" / "bmslogger.service").read_text()
    assert shipped == render_unit()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure",
                 "RestartPreventExitStatus=2", "SupplementaryGroups=dialout",
                 "StateDirectory=bmslogger", "User=bmslogger"):
        assert line in shipped
    assert "@" not in shipped.replace("multi-user", "")  # every placeholder filled
    with pytest.raises(ValueError):
        render_unit(config="/etc/x\nExecStartPre=/bin/evil")
    assert "@EXEC@" in UNIT_TEMPLATE


def test_install_service_writes_the_unit(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bmslogger", "install-service", *args],
                              capture_output=True, text=True, timeout=60)

    out = run("--prefix", str(tmp_path), "--exec", "/opt/bms/bin/bmslogger",
              "--user", "bms", "--config-file", "/etc/bms/logger.toml")
    assert out.returncode == 0, out.stderr
    unit = tmp_path / "etc" / "systemd" / "system" / "bmslogger.service"
    text = unit.read_text()
    assert "ExecStart=/opt/bms/bin/bmslogger run -c /etc/bms/logger.toml" in text
    assert "User=bms\n" in text and "useradd" in out.stdout
    assert run("--prefix", str(tmp_path), "--exec", "/opt/bms/bin/bmslogger", "--user", "bms",
               "--config-file", "/etc/bms/logger.toml").returncode == 0  # same: fine
    other = run("--path", str(unit))
    assert other.returncode == 2 and "--force" in other.stderr
    assert unit.read_text() == text
    assert run("--path", str(unit), "--force").returncode == 0
    assert "User=bmslogger" in unit.read_text()


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    import shutil

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "bmslogger.service"
    unit.write_text(render_unit(executable=sys.executable, user="root"))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == ""


# --- one hung poller among healthy ones --------------------------------------------------------


class FakeService:
    """What the Watchdog reads from a LoggerService, set by hand."""

    def __init__(self, intervals: dict[str, float]) -> None:
        self.pollers = [types.SimpleNamespace(device=types.SimpleNamespace(
            name=n, interval_s=i)) for n, i in intervals.items()]
        self.polls_running: dict[tuple[str, str], float] = {}
        self.polls_done: dict[str, float] = {}
        self.pipeline = types.SimpleNamespace(stats=lambda: {})
        self.config = types.SimpleNamespace(settings=types.SimpleNamespace(
            poll_stall_s=None, sink_stall_s=180.0))


def test_watchdog_judges_every_device_on_its_own_interval() -> None:
    now = [100.0]
    service = FakeService({"fast": 5.0, "slow": 60.0})
    dog = Watchdog(service, env={}, clock=lambda: now[0])
    assert dog.poll_stall_for(5.0) == 60.0 and dog.poll_stall_for(60.0) == 180.0
    now[0] = 150.0
    service.polls_done = {"fast": 149.0, "slow": 120.0}
    assert dog.problems() == []
    # fast keeps polling; slow's poll started at 150 and never returns
    service.polls_running[("slow", "poll")] = 150.0
    now[0] = 300.0
    service.polls_done["fast"] = 299.0
    assert dog.problems() == []  # 150 s: within three of slow's intervals
    now[0] = 331.0
    service.polls_done["fast"] = 330.0
    assert dog.problems() == ["poll of slow running for 181 s"]
    # a device the ticker stopped starting at all (no poll running, none finishing)
    del service.polls_running[("slow", "poll")]
    service.polls_done["slow"] = 331.0
    now[0] = 400.0
    service.polls_done["slow"] = 331.0
    service.polls_done["fast"] = 330.0
    assert dog.problems() == ["no poll of fast finished for 70 s"]
    # a fixed limit from [logger] poll_stall overrides the per-interval one
    service.config.settings.poll_stall_s = 30.0
    assert Watchdog(service, env={}, clock=lambda: now[0]).poll_stall_for(60.0) == 30.0


HUNG_DEVICES: set[str] = set()
UNHANG = threading.Event()


def _hang_named_daly_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Daly polls of the devices named in HUNG_DEVICES block (a driver stuck in a read
    without a deadline); the others poll the simulator as usual."""
    from bmslogger.plugins.daly.driver import DalyDriver

    real_poll = DalyDriver.poll

    def poll(self):  # type: ignore[no-untyped-def]
        if self.device.name in HUNG_DEVICES:
            UNHANG.wait(30)
        return real_poll(self)

    monkeypatch.setattr(DalyDriver, "poll", poll)


def test_one_hung_poller_stops_the_watchdog_while_the_others_poll(
        listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        watchdog_env: None) -> None:
    HUNG_DEVICES.clear()
    UNHANG.clear()
    _hang_named_daly_polls(monkeypatch)
    fast_sim = "sim://daly?sensors=1&baudrate=115200&turnaround=0.005"
    devices = "".join(  # two simulated lines (their cell counts differ)
        f'[[devices.daly]]\nname = "{n}"\nport = "{fast_sim}&cells={cells}"\n'
        'baudrate = 115200\ninterval = "300ms"\n' for n, cells in (("good", 4), ("stuck", 5)))
    service, stop, runner = _start_logger(tmp_path, build_registry(), (
        f'poll_stall = "1.5s"\n{devices}[sinks.csv]\ndirectory = "csv"\n'))
    try:
        assert _wait_for(lambda: listener.pets() >= 2 and len(service.polls_done) == 2, 10)
        HUNG_DEVICES.add("stuck")
        hung_at = time.monotonic()
        assert _wait_for(lambda: any(m.startswith("STATUS=stalled: poll of stuck running")
                                     for _, m in listener.messages), 10)
        noticed = time.monotonic()
        good_before = service.polls_done["good"]
        time.sleep(1.5)
        assert listener.pets(since=noticed) == 0
        assert service.polls_done["good"] > good_before  # the healthy device polls on
        assert noticed - hung_at >= 1.4  # not before poll_stall
        UNHANG.set()
        released = time.monotonic()
        assert _wait_for(lambda: listener.pets(since=released) >= 1, 10)
    finally:
        UNHANG.set()
        stop.set()
        runner.join(20)
    assert not runner.is_alive()
