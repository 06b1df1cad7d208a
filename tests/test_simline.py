"""Simulated lines: wire-time pacing, faults, late answers, broadcasts, pty and TCP servers,
and the Transport over them. Real pseudo-terminals, real sockets, real clocks."""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import types

import pytest
import serial

import bmslogger
from bmslogger.errors import (
    ChecksumError,
    ConfigError,
    FramingError,
    PluginError,
    PortUnavailableError,
    TransportError,
)
from bmslogger.manager import build_registry, get_plugin_manager
from bmslogger.model import DeviceType, PortSettings
from bmslogger.options import Option, resolve_options
from bmslogger.simline import (
    INPUT_BUFFER_BYTES,
    SimLine,
    build_simulator,
    forget_sim_ports,
    open_sim_line,
    open_sim_port,
    parse_sim_url,
    run_forever,
    serve_pty,
    serve_tcp,
)
from bmslogger.simulator import Simulator, SineLoad, Transmission
from bmslogger.transport import Transport, open_transport

BAUD = 9600
TURNAROUND = 0.02
SETTINGS = PortSettings(baudrate=BAUD, turnaround_s=TURNAROUND)


class PingSim(Simulator):
    """``PING n [pad]\\r`` → ``PONG n <pad x's>\\r``; with ``broadcast=S``, ``TICK k\\r``
    every S seconds."""

    OPTIONS = (Option("broadcast", "float", 0.0, "seconds between TICKs; 0 = none", min=0),)
    PORT_DEFAULTS = SETTINGS

    def setup(self):
        self.buffer = b""
        self.requests: list[bytes] = []
        self.ticks = 0
        if self.options["broadcast"]:
            self.broadcast_interval_s = self.options["broadcast"]

    def receive(self, data):
        self.buffer += data
        out = []
        while b"\r" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\r")
            self.requests.append(line)
            words = line.split()
            if len(words) >= 2 and words[0] == b"PING":
                pad = int(words[2]) if len(words) > 2 else 0
                answer = b"PONG " + words[1] + (b" " + b"x" * pad if pad else b"") + b"\r"
                out.append(Transmission(answer, self.port_settings.turnaround_s))
        return out

    def broadcast(self):
        self.ticks += 1
        return [Transmission(b"TICK %d\r" % self.ticks)]


class EchoSim(Simulator):
    """Every byte straight back: shows whether a line changes bytes on the way."""

    PORT_DEFAULTS = PortSettings(baudrate=115200, turnaround_s=0.0)

    def receive(self, data):
        return [Transmission(data)]


def make_sim(cls=PingSim, **options: str) -> Simulator:
    return cls(resolve_options(cls.all_options(), options, from_text=True))


def answer_len(pad: int, n: int = 1) -> int:
    return len(b"PONG %d" % n) + (1 + pad if pad else 0) + 1


def wire(nbytes: int, baud: int = BAUD) -> float:
    return nbytes * 10 / baud


def read_line(port, timeout: float) -> bytes:
    """pyserial-style: bytes up to and including CR, or what came before the deadline."""
    deadline = time.monotonic() + timeout
    out = b""
    while not out.endswith(b"\r"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        port.timeout = left
        chunk = port.read(1)
        if not chunk:
            break
        out += chunk
    return out


def transport_line(transport: Transport, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    out = b""
    while not out.endswith(b"\r"):
        chunk = transport.read(max(0.0, deadline - time.monotonic()))
        if not chunk:
            break
        out += chunk
    return out


@pytest.fixture(autouse=True)
def _fresh_sim_ports():
    forget_sim_ports()
    yield
    forget_sim_ports()


@pytest.fixture
def registry(monkeypatch):
    """A real plugin manager holding one test plugin, "ping", whose simulator is PingSim."""
    mod = types.ModuleType("bmsl_test_simline_plugin")
    mod.PingSim = PingSim

    @bmslogger.hookimpl
    def register_device_types():
        return [DeviceType(
            name="ping", title="ping test device", options=(), port_defaults=SETTINGS,
            driver="bmsl_test_simline_plugin:PingSim",  # never loaded here
            simulator="bmsl_test_simline_plugin:PingSim",
            fields="bmsl_test_simline_plugin:FIELDS",
        )]

    mod.register_device_types = register_device_types
    mod.FIELDS = ()
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    pm = get_plugin_manager(autoload=False)
    pm.register(mod, name="ping")
    return build_registry(pm)


# --- the timing model, with a hand-driven clock -------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bytes_become_readable_one_wire_time_apart():
    clock = FakeClock()
    port = SimLine(make_sim(), clock=clock).open(SETTINGS)
    port.write(b"PING 1 10\r")  # 10 bytes on the wire before the device has them
    answer = b"PONG 1 " + b"x" * 10 + b"\r"
    first_byte = wire(10) + TURNAROUND + wire(1)
    clock.now += first_byte - 1e-6
    assert port.in_waiting == 0
    clock.now += 2e-6
    assert port.in_waiting == 1
    clock.now += wire(5)
    assert port.in_waiting == 6
    port.timeout = 0
    assert port.read(100) == answer[:6]
    clock.now += wire(len(answer))
    assert port.read(100) == answer[6:]


def test_a_request_written_while_the_last_is_on_the_wire_waits_for_it():
    clock = FakeClock()
    port = SimLine(make_sim(), clock=clock).open(SETTINGS)
    port.write(b"NOT A QUESTION\r")  # 15 bytes the device does not answer
    port.write(b"PING 2\r")  # the host's UART sends it after the first
    clock.now += wire(15 + 7) + TURNAROUND + wire(1) - 1e-6
    assert port.in_waiting == 0
    clock.now += 2e-6
    assert port.in_waiting == 1
    clock.now += wire(6)
    port.timeout = 0
    assert port.read(100) == b"PONG 2\r"


def test_an_unread_broadcasting_line_is_bounded():
    clock = FakeClock()
    sim = make_sim(broadcast="0.01")
    port = SimLine(sim, clock=clock).open(SETTINGS)
    clock.now += 86400.0  # a day nobody read the line
    assert 0 < port.in_waiting <= INPUT_BUFFER_BYTES
    assert sim.ticks < 100  # skipped ahead instead of generating 8.6 million ticks


# --- the in-process line, real clock -------------------------------------------------------


def test_answer_is_paced_at_the_baud_rate_and_read_returns_when_complete():
    port = open_sim_line(make_sim(), SETTINGS)
    port.timeout = 3.0
    pad = 200 - answer_len(0) - 1
    request = b"PING 1 %d\r" % pad
    started = time.monotonic()
    port.write(request)
    port.flush()
    flushed = time.monotonic() - started
    data = port.read(200)
    elapsed = time.monotonic() - started
    assert data == b"PONG 1 " + b"x" * pad + b"\r" and len(data) == 200
    assert flushed >= wire(len(request)) * 0.95  # flush waits for the request to leave
    assert elapsed >= wire(len(request)) + TURNAROUND + wire(200)  # >= 0.24 s
    assert elapsed < 1.0  # returned as soon as the 200 bytes were there, not at 3 s


def test_read_timeout_returns_empty_and_partial():
    port = open_sim_line(make_sim(), SETTINGS)
    port.timeout = 0.2
    started = time.monotonic()
    assert port.read(10) == b""
    assert time.monotonic() - started >= 0.2
    port.write(b"PING 1\r")
    port.timeout = 1.0
    assert port.read(100) == b"PONG 1\r"  # fewer than asked: whatever came in time
    port.timeout = 0
    started = time.monotonic()
    assert port.read(10) == b""
    assert time.monotonic() - started < 0.05


def test_reset_input_buffer_drops_what_arrived_but_not_what_is_in_flight():
    port = open_sim_line(make_sim(), SETTINGS)
    pad = 100
    answer = b"PONG 1 " + b"x" * pad + b"\r"
    port.write(b"PING 1 %d\r" % pad)
    while port.in_waiting < 30:
        time.sleep(0.005)
    port.reset_input_buffer()
    assert port.in_waiting < 10
    port.timeout = 1.0
    rest = port.read(len(answer))
    assert rest and len(rest) < len(answer) - 25
    assert answer.endswith(rest)


def test_closed_port_refuses_io():
    port = open_sim_line(make_sim(), SETTINGS)
    port.close()
    with pytest.raises(serial.SerialException):
        port.read(1)
    with pytest.raises(serial.SerialException):
        port.write(b"PING 1\r")


def test_close_wakes_a_blocked_reader():
    port = open_sim_line(make_sim(), SETTINGS)
    port.timeout = None
    errors = []

    def reader():
        try:
            port.read(1)
        except serial.SerialException as err:
            errors.append(err)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.05)
    port.close()
    t.join(2)
    assert not t.is_alive() and len(errors) == 1


def exchange(port, n: int, timeout: float = 0.5, pad: int = 0) -> tuple[bytes, float]:
    port.reset_input_buffer()
    started = time.monotonic()
    port.write(b"PING %d %d\r" % (n, pad) if pad else b"PING %d\r" % n)
    data = read_line(port, timeout)
    return data, time.monotonic() - started


def test_fault_checksum():
    port = open_sim_line(make_sim(fault="checksum"), SETTINGS)
    port.timeout = 0.5
    port.write(b"PING 1\r")
    assert port.read(7) == b"PONG 1\x0c"  # last byte's low bit flipped


def test_fault_truncate():
    sim = make_sim(fault="truncate")
    port = open_sim_line(sim, SETTINGS)
    data, _ = exchange(port, 1, timeout=0.4, pad=20)
    full = b"PONG 1 " + b"x" * 20 + b"\r"
    assert 0 < len(data) < len(full) and full.startswith(data)
    assert sim.faults_injected == {"truncate": 1}


def test_fault_noise():
    port = open_sim_line(make_sim(fault="noise", seed="3"), SETTINGS)
    port.timeout = 0.5
    port.write(b"PING 1\r")
    data = b""
    while not data.endswith(b"PONG 1\r"):
        chunk = port.read(1)
        assert chunk, f"no answer after {data!r}"
        data += chunk
    assert 1 <= len(data) - len(b"PONG 1\r") <= 7


def test_fault_silence():
    port = open_sim_line(make_sim(fault="silence"), SETTINGS)
    data, elapsed = exchange(port, 1, timeout=0.3)
    assert data == b"" and elapsed >= 0.3


def test_fault_wrong():
    port = open_sim_line(make_sim(fault="wrong"), SETTINGS)
    assert exchange(port, 1)[0] == b"PONG 1\r"  # nothing to confuse it with yet
    assert exchange(port, 2)[0] == b"PONG 1\r"  # the previous exchange's answer


def test_fault_slow():
    port = open_sim_line(make_sim(fault="slow"), SETTINGS)
    data, elapsed = exchange(port, 1, timeout=2.0, pad=50)
    assert data == b"PONG 1 " + b"x" * 50 + b"\r"
    # on time, but each byte takes three byte-times instead of one
    assert elapsed >= wire(len(b"PING 1 50\r")) + TURNAROUND + 3 * wire(len(data))
    assert elapsed < 2.0


def test_fault_late_lands_in_the_next_exchange():
    port = open_sim_line(make_sim(fault="late"), SETTINGS)
    data, elapsed = exchange(port, 1, timeout=0.3)
    assert data == b"" and elapsed >= 0.3
    # the next request: without a reset, the host reads the first answer, ~2 s after it
    started = time.monotonic()
    port.write(b"PING 2\r")
    data = read_line(port, 3.0)
    assert data == b"PONG 1\r"
    assert time.monotonic() - started + elapsed >= 2.0


def test_broadcasts_arrive_on_the_period_in_process():
    sim = make_sim(broadcast="0.2")
    port = open_sim_line(sim, SETTINGS)
    started = time.monotonic()
    times = []
    for k in (1, 2, 3):
        assert read_line(port, 1.0) == b"TICK %d\r" % k
        times.append(time.monotonic() - started)
    assert times[0] >= 0.2 + wire(7)
    for a, b in zip(times, times[1:]):
        assert 0.15 <= b - a <= 0.35


# --- what the core gives every simulator: setup(), answer_each(), SineLoad --------------------


def test_setup_runs_after_the_core_has_set_everything_it_may_read():
    seen = {}

    class Probe(Simulator):
        PORT_DEFAULTS = SETTINGS

        def setup(self):
            seen.update(seed=self.options["seed"], rate=self.fault_rate, faults=self.faults,
                        baud=self.port_settings.baudrate, ignored=dict(self.ignored),
                        first=self.random.random())

    Probe(resolve_options(Probe.all_options(), {"seed": 5, "fault": ["noise"],
                                                "fault_rate": 0.5, "baudrate": 2400}))
    assert seen == {"seed": 5, "rate": 0.5, "faults": ("noise",), "baud": 2400,
                    "ignored": {}, "first": random.Random(5).random()}
    assert PingSim.__init__ is Simulator.__init__  # plugins add setup(), not a constructor
    assert make_sim(broadcast="2").broadcast_interval_s == 2.0


def test_answer_each_answers_in_order_and_counts_parser_errors_by_kind():
    sim = make_sim(EchoSim)
    events = [b"a", ChecksumError("bad"), b"skip", FramingError("junk"), ChecksumError("x"),
              b"b"]
    out = sim.answer_each(events, lambda e: None if e == b"skip" else Transmission(e * 2))
    assert [tx.data for tx in out] == [b"aa", b"bb"]
    assert sim.ignored == {"checksum": 2, "framing": 1}


def test_sine_load_is_the_peak_times_the_sine_of_the_cycle_phase():
    clock = FakeClock()
    load = SineLoad(clock, peak=50.0, period_s=40.0)
    assert load.step() is None  # no time has passed
    clock.now += 10.0  # a quarter period: the peak
    assert load.step() == (50.0, 10.0)
    clock.now += 20.0  # three quarters: the negative peak, dt since the previous step
    current, dt = load.step()
    assert current == pytest.approx(-50.0) and dt == 20.0
    clock.now += 5.0
    assert load.step(drift=False) is None  # frozen, but the step is taken ...
    clock.now += 5.0
    current, dt = load.step()
    assert dt == 5.0 and current == pytest.approx(0.0, abs=1e-9)  # ... so dt is 5 s, not 10
    assert SineLoad(clock, 1.0, 0.2).period_s == 1.0  # a period under 1 s is 1 s


def test_sine_load_options_are_declared_alike_for_every_battery():
    drift, current, period = SineLoad.options(current=20.0, current_max=300.0, per="pack")
    assert (drift.name, drift.default) == ("drift", True)
    assert (current.name, current.default, current.max) == ("current", 20.0, 300.0)
    assert "per pack" in current.help
    assert (period.name, period.default) == ("period", 600.0)
    opts = resolve_options((drift, current, period), {"period": "2m", "current": "7.5"},
                           from_text=True)
    assert opts["period"] == 120.0 and opts["current"] == 7.5 and opts["drift"] is True


def test_a_bug_in_the_simulator_is_not_a_transport_error():
    class Broken(PingSim):
        def receive(self, data):
            raise KeyError("oops")

    port = open_sim_line(make_sim(Broken), SETTINGS)
    transport = Transport("sim://broken", SETTINGS, port)
    with pytest.raises(RuntimeError, match="oops"):
        transport.write(b"PING 1\r")


# --- sim:// URLs ---------------------------------------------------------------------------


def test_parse_sim_url():
    assert parse_sim_url("sim://daly?cells=16&fault=checksum,noise") == (
        "daly", {"cells": "16", "fault": "checksum,noise"})
    assert parse_sim_url("sim://daly") == ("daly", {})
    for bad in ("sim://", "sim:///x", "sim://daly/path", "sim://daly?cells", "sim://d?a=1&a=2"):
        with pytest.raises(PortUnavailableError):
            parse_sim_url(bad)


def test_open_sim_port_and_transport(registry):
    url = "sim://ping?seed=4"
    port = open_sim_port(url, SETTINGS, registry=registry)
    assert isinstance(port.simulator, PingSim) and port.simulator.options["seed"] == 4
    port.close()
    # open_transport finds the same simulated device: it stays powered between opens
    with open_transport(url, SETTINGS) as transport:
        assert transport._port.simulator is port.simulator
        transport.write(b"PING 9\r")
        assert transport_line(transport, 1.0) == b"PONG 9\r"
        assert transport.read(0.1) == b""
        transport.write(b"PING 10\r")
        time.sleep(wire(8) + TURNAROUND + wire(8) + 0.05)
        assert transport.discard_input() == b"PONG 10\r"
        assert transport.read(0.05) == b""


def test_sim_url_errors_name_the_key_and_what_was_expected(registry):
    with pytest.raises(PortUnavailableError) as err:
        open_sim_port("sim://nosuch?x=1", SETTINGS, registry=registry)
    assert "nosuch" in str(err.value) and "ping" in str(err.value)
    with pytest.raises(PortUnavailableError) as err:
        open_sim_port("sim://ping?broadcast=soon", SETTINGS, registry=registry)
    message = str(err.value)
    assert "\n" not in message
    assert "option broadcast" in message and "expected a number" in message
    with pytest.raises(PortUnavailableError, match="bogus: unknown key"):
        open_sim_port("sim://ping?bogus=1", SETTINGS, registry=registry)
    with pytest.raises(PortUnavailableError, match="baudrate"):
        open_sim_port("sim://ping?baudrate=-5", SETTINGS, registry=registry)


def test_build_simulator_options_and_errors(registry):
    sim = build_simulator("ping", {"baudrate": "19200", "turnaround": "5ms"}, registry=registry)
    assert sim.port_settings.baudrate == 19200 and sim.port_settings.turnaround_s == 0.005
    with pytest.raises(PluginError, match="unknown device plugin 'nope'"):
        build_simulator("nope", {}, registry=registry)
    with pytest.raises(ConfigError) as err:
        build_simulator("ping", {"broadcast": "x", "seed": "y"}, registry=registry)
    assert sorted(i.path for i in err.value.issues) == ["broadcast", "seed"]


def test_simulator_baudrate_option_paces_the_line(registry):
    port = open_sim_port("sim://ping?baudrate=1200&turnaround=0", SETTINGS, registry=registry)
    data, elapsed = exchange(port, 1, timeout=2.0, pad=40)
    assert len(data) == answer_len(40)
    assert elapsed >= wire(10 + len(data), baud=1200)  # ~0.43 s at 1200 baud


# --- the pty server --------------------------------------------------------------------------


def test_pty_serves_pyserial_opened_and_closed_many_times():
    sim = make_sim()
    with serve_pty(sim) as server:
        assert server.path.startswith("/dev/")
        for n in range(6):
            with serial.Serial(server.path, BAUD, timeout=1.0) as port:
                pad = 150 if n == 0 else 0
                request = b"PING %d %d\r" % (n, pad) if pad else b"PING %d\r" % n
                started = time.monotonic()
                port.write(request)
                data = port.read_until(b"\r")
                elapsed = time.monotonic() - started
                assert data == b"PONG %d" % n + (b" " + b"x" * pad if pad else b"") + b"\r"
                assert elapsed >= wire(len(request)) + TURNAROUND + wire(len(data))
                assert elapsed < 0.9
        assert server.alive and server.error is None
        assert server.bytes_dropped == 0
    assert not server.alive


def test_pty_is_raw_every_byte_passes_unchanged():
    with serve_pty(make_sim(EchoSim)) as server, serial.Serial(server.path, 115200,
                                                                timeout=1.0) as port:
        everything = bytes(range(256))
        port.write(everything)
        assert port.read(256) == everything


def test_pty_link_is_made_and_removed(tmp_path):
    link = str(tmp_path / "ttySIM")
    with serve_pty(make_sim(), link=link) as server:
        assert os.readlink(link) == server.path
        with serial.Serial(link, BAUD, timeout=1.0) as port:
            port.write(b"PING 3\r")
            assert port.read_until(b"\r") == b"PONG 3\r"
    assert not os.path.lexists(link)


def test_pty_broadcasts_arrive_on_the_period():
    with serve_pty(make_sim(broadcast="0.2")) as server, serial.Serial(server.path, BAUD,
                                                                       timeout=1.0) as port:
        lines = [port.read_until(b"\r") for _ in range(3)]
        arrived = [time.monotonic()]
        lines.append(port.read_until(b"\r"))
        arrived.append(time.monotonic())
        lines.append(port.read_until(b"\r"))
        arrived.append(time.monotonic())
        numbers = [int(line.split()[1]) for line in lines]
        assert all(line.startswith(b"TICK ") and line.endswith(b"\r") for line in lines)
        assert numbers == list(range(numbers[0], numbers[0] + 5))
        assert 0.15 <= arrived[1] - arrived[0] <= 0.35
        assert 0.15 <= arrived[2] - arrived[1] <= 0.35


def test_transport_over_pty():
    with serve_pty(make_sim()) as server:
        with open_transport(server.path, SETTINGS) as transport:
            assert transport.wire_time(96) == pytest.approx(0.1)
            started = time.monotonic()
            assert transport.read(0.2) == b""
            assert time.monotonic() - started >= 0.2
            transport.write(b"PING 1 60\r")
            assert transport_line(transport, 1.0) == b"PONG 1 " + b"x" * 60 + b"\r"
            transport.write(b"PING 2\r")
            time.sleep(wire(7) + TURNAROUND + wire(7) + 0.1)
            assert transport.discard_input() == b"PONG 2\r"
            assert transport.read(0.05) == b""
            # read returns what is there without waiting for max_bytes
            transport.write(b"PING 3 100\r")
            time.sleep(wire(11) + TURNAROUND + wire(108) + 0.1)
            started = time.monotonic()
            assert transport.read(1.0, max_bytes=50) == b"PONG 3 " + b"x" * 43
            assert time.monotonic() - started < 0.1
        transport.close()  # closing twice is harmless
        with pytest.raises(TransportError):
            transport.write(b"PING 4\r")
        assert server.alive


def test_opening_a_missing_device_names_it(tmp_path):
    missing = str(tmp_path / "ttyUSB9")
    with pytest.raises(PortUnavailableError) as err:
        open_transport(missing, SETTINGS)
    assert missing in str(err.value)


# --- the tcp server ----------------------------------------------------------------------------


def test_tcp_serves_socket_url_one_client_after_another():
    sim = make_sim()
    with serve_tcp(sim) as server:
        host, port_number = server.address
        assert host == "127.0.0.1" and port_number > 0
        for n in range(2):
            port = serial.serial_for_url(f"socket://127.0.0.1:{port_number}", timeout=1.0)
            try:
                started = time.monotonic()
                port.write(b"PING %d 100\r" % n)
                data = port.read_until(b"\r")
                elapsed = time.monotonic() - started
            finally:
                port.close()
            assert data == b"PONG %d " % n + b"x" * 100 + b"\r"
            assert elapsed >= wire(len(b"PING 0 100\r")) + TURNAROUND + wire(len(data))
            assert elapsed < 0.9
            deadline = time.monotonic() + 2
            while server.clients_served <= n and time.monotonic() < deadline:
                time.sleep(0.01)
        with open_transport(server.url, SETTINGS) as transport:
            transport.write(b"PING 7\r")
            assert transport_line(transport, 1.0) == b"PONG 7\r"
        assert server.alive


def test_run_forever_returns_when_stopped_and_closes():
    server = serve_tcp(make_sim())
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    run_forever(server, stop, poll_s=0.05)
    assert time.monotonic() - started >= 0.2
    assert not server.alive


# --- several units on one simulated line ---------------------------------------------------


def test_sim_url_bus_serves_several_configured_units_on_one_line(tmp_path):
    """Two REC devices at addresses 1 and 3 behind ``sim://rec?bus=1,3``: one simulated
    line, each device answered by its own unit, with its own values."""
    from bmslogger.config import parse_config
    from bmslogger.runtime import LoggerService
    from bmslogger.simline import forget_sim_ports

    forget_sim_ports()
    registry = build_registry()
    port = "sim://rec?bus=1,3&cells=4"
    config = parse_config(
        f'[logger]\nstate_dir = "{tmp_path}/s"\nspool_dir = "{tmp_path}/sp"\n'
        f'lock_dir = "{tmp_path}/l"\n'
        f'[[devices.rec]]\nname = "a"\nport = "{port}"\naddress = 1\n'
        f'[[devices.rec]]\nname = "c"\nport = "{port}"\naddress = 3\n'
        f'[sinks.csv]\ndirectory = "{tmp_path}/csv"\n', str(tmp_path / "l.toml"), registry)
    service = LoggerService(config, registry)
    results = {p.device.name: p.run() for p in service.pollers}
    forget_sim_ports()
    volts = {}
    for name, result in results.items():
        assert result.complete, (name, result.errors)
        (pack,) = [p for p in result.points if p.measurement == "battery"]
        volts[name] = pack.fields["voltage_v"]
    assert volts["a"] != volts["c"]  # two units, two seeds


def test_bus_options_refused_with_their_reason():
    from bmslogger.simline import build_bus

    with pytest.raises(ConfigError, match="emus has no bus address"):
        build_bus("emus", {}, [1, 2])
    with pytest.raises(PortUnavailableError, match="bus"):
        open_sim_port("sim://rec?bus=1-x")


def test_simulate_bus_and_detect_scan_bus_find_every_unit(tmp_path):
    """What a user without hardware types to try a bus scan."""
    import json
    import subprocess

    sim = subprocess.Popen([sys.executable, "-m", "bmslogger", "simulate", "daly", "--bus",
                            "1,2", "-o", "cells=4"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        path = sim.stdout.readline().strip()
        assert path.startswith("/dev/")
        out = subprocess.run(
            [sys.executable, "-m", "bmslogger", "detect", path, "--plugin", "daly",
             "--addresses", "1-3", "--no-cache", "--format", "json"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "BMSLOGGER_CONFIG": str(tmp_path / "none.toml")})
    finally:
        sim.terminate()
        sim.communicate(timeout=10)
    assert out.returncode == 0, out.stderr

    config = json.loads(out.stdout)["config"]
    assert config.count("[[devices.daly]]") == 2, config
    assert "board = 1" in config and "board = 2" in config and "board = 3" not in config
