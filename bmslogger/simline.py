"""Simulated serial lines: a device `Simulator` played onto a wire with realistic timing.

A simulator only turns request bytes into `Transmission`s; this module decides *when* each
byte reaches the host, so drivers meet the same timing they meet on a real RS-485/RS-232
line and their deadlines, retries and benchmarks mean something. Three lines share one
timing model (`_Wire`):

* ``sim://PLUGIN?key=value`` (`open_sim_port`, `open_sim_line`): in-process, no file
  descriptors, a pyserial-like object that `bmslogger.transport.Transport` drives;
* `serve_pty`: a pseudo-terminal any program can open (pyserial, python-daly-bms, minicom);
* `serve_tcp`: a raw TCP server, like an RS-485-to-Ethernet bridge (``socket://``).

Timing model. The host's request takes ``wire_time(len)`` to cross the wire; the device
then answers. Each transmission starts ``delay_s`` after the end of the request (or after
the broadcast's due time) and, because the device has one transmitter, never before the
previous transmission ended; its bytes arrive one per ``wire_time(1) + gap_s``. A byte is
readable once its last bit arrived. Answers still in flight when the host writes again
keep arriving, which is how a "late" answer lands in the next exchange.

Which baud rate paces the line: the *device's* (``simulator.port_settings``: the plugin's
defaults, overridden by the ``baudrate``/``turnaround`` simulator options), because on a
real line the device's UART decides when its bytes arrive. The host's `PortSettings` only
matter to the host's deadlines; a mismatch is logged as a warning (a real line would carry
garbage), not emulated.

The module knows nothing about any device: everything specific lives in the simulator.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
import tty
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Union
from urllib.parse import parse_qsl, urlsplit

from bmslogger.errors import (
    ConfigError,
    ConfigIssue,
    PluginError,
    PortUnavailableError,
    TransportError,
)
from bmslogger.model import PortSettings
from bmslogger.options import OptionProblems, resolve_options
from bmslogger.simulator import SimulatedBus, Simulator, Transmission

log = logging.getLogger(__name__)

#: Unread bytes a line holds before it drops whole transmissions, like a tty's input
#: buffer overrunning while nobody reads (a device broadcasting for hours unattended).
INPUT_BUFFER_BYTES = 4096

#: Broadcasts missed by more than this many periods (nobody looked at the line for a
#: long time) are skipped instead of being generated one by one.
_MAX_BROADCAST_BACKLOG = 16

#: Servers write the bytes that are due in bursts at most this often: per-byte sleeps are
#: too coarse for the scheduler, while bursts keep the cumulative rate exact.
_BURST_S = 0.002

_EPS = 1e-9


# --- the timing model --------------------------------------------------------------------


@dataclass
class _Burst:
    """One transmission on the device's transmitter: byte i has fully arrived at
    ``start + (i + 1) * step``. `taken` counts bytes already delivered or dropped."""

    start: float
    step: float
    data: bytes
    taken: int = 0

    def arrived(self, now: float) -> int:
        if now < self.start:
            return 0
        return min(len(self.data), int((now - self.start) / self.step + _EPS))

    def arrival(self, index: int) -> float:
        return self.start + (index + 1) * self.step

    @property
    def end(self) -> float:
        return self.start + len(self.data) * self.step


class _Wire:
    """When each byte a simulator sends reaches the host. Not thread-safe: every caller
    holds its own lock around it. Times are `time.monotonic` seconds."""

    def __init__(self, simulator: Simulator, now: float, limit: int = INPUT_BUFFER_BYTES) -> None:
        self.simulator = simulator
        self.settings: PortSettings = simulator.port_settings
        self.byte_time = self.settings.wire_time(1)
        self.limit = limit
        self.host_free = now  # end of the host's last request on the wire
        self.device_free = now  # end of the device's last transmission
        self.bursts: deque[_Burst] = deque()
        interval = simulator.broadcast_interval_s
        self.interval = float(interval) if interval else None
        self.next_broadcast = now + self.interval if self.interval else None
        self.requests_bytes = 0
        self.dropped_bytes = 0

    # host → device

    def host_write(self, data: bytes, now: float) -> float:
        """The host sent `data` at `now`; returns when its last byte leaves the wire."""
        start = max(now, self.host_free)
        end = start + self.settings.wire_time(len(data))
        self.host_free = end
        self.requests_bytes += len(data)
        try:
            answers = self.simulator.handle(bytes(data))
        except Exception as err:
            # A simulator bug, not a line fault: surface it as one, never as a TransportError.
            raise RuntimeError(
                f"simulator {type(self.simulator).__name__} failed on {bytes(data)!r}: {err}"
            ) from err
        for tx in answers:
            due = end + max(0.0, tx.delay_s)
            self.pump(due)
            self._place(tx, due)
        return end

    # device → host

    def pump(self, until: float) -> None:
        """Generate the broadcasts due up to `until` (lazily: no thread ticks)."""
        interval = self.interval
        if interval is None or self.next_broadcast is None:
            return
        behind = until - self.next_broadcast
        if behind > _MAX_BROADCAST_BACKLOG * interval:
            skipped = int(behind / interval) - _MAX_BROADCAST_BACKLOG
            self.next_broadcast += skipped * interval
        while self.next_broadcast <= until:
            due = self.next_broadcast
            self.next_broadcast += interval
            for tx in self.simulator.broadcast():
                self._place(tx, due + max(0.0, tx.delay_s))

    def _place(self, tx: Transmission, due: float) -> None:
        if not tx.data:
            return
        unread = sum(len(b.data) - b.taken for b in self.bursts)
        if unread + len(tx.data) > self.limit:
            self.dropped_bytes += len(tx.data)
            return
        start = max(due, self.device_free)
        burst = _Burst(start, self.byte_time + max(0.0, tx.gap_s), bytes(tx.data))
        self.bursts.append(burst)
        self.device_free = burst.end

    def available(self, now: float) -> int:
        """Bytes that have arrived and were not taken yet."""
        total = 0
        for burst in self.bursts:
            got = burst.arrived(now)
            total += got - burst.taken
            if got < len(burst.data):
                break  # later bursts start after this one ends
        return total

    def take(self, size: int, now: float) -> bytes:
        """Up to `size` arrived bytes, oldest first."""
        out = bytearray()
        while self.bursts and len(out) < size:
            burst = self.bursts[0]
            got = burst.arrived(now)
            n = min(got - burst.taken, size - len(out))
            if n > 0:
                out += burst.data[burst.taken:burst.taken + n]
                burst.taken += n
            if burst.taken == len(burst.data):
                self.bursts.popleft()
            elif burst.taken >= got:
                break
        return bytes(out)

    def drop_arrived(self, now: float) -> int:
        """Forget what has arrived (input buffer reset); bytes in flight keep coming."""
        return len(self.take(1 << 30, now))

    def next_event(self, now: float) -> float | None:
        """When the next byte arrives or the next broadcast is due; None if never."""
        event = None
        for burst in self.bursts:
            got = burst.arrived(now)
            if got < len(burst.data):
                event = burst.arrival(got)
                break
        if self.next_broadcast is not None and (event is None or self.next_broadcast < event):
            event = self.next_broadcast
        return event


def _warn_mismatch(name: str, host: PortSettings | None, device: PortSettings) -> None:
    if host is None:
        return
    mine = (host.baudrate, host.bytesize, host.parity, host.stopbits)
    theirs = (device.baudrate, device.bytesize, device.parity, device.stopbits)
    if mine != theirs:
        log.warning(
            "%s: host line settings %s differ from the simulated device's %s; a real line "
            "would carry garbage, the simulated one paces at the device's settings",
            name, _framing(host), _framing(device),
        )


def _framing(s: PortSettings) -> str:
    stop = int(s.stopbits) if float(s.stopbits).is_integer() else s.stopbits
    return f"{s.baudrate} {s.bytesize}{s.parity}{stop}"


# --- in-process line: sim:// ---------------------------------------------------------------


class SimLine:
    """One simulated device on one emulated wire, shared by every `SimPort` opened on it.

    The device stays "powered" while ports open and close (its values keep drifting and
    an answer in flight is not lost), like a real BMS on a real cable.
    """

    def __init__(self, simulator: Simulator, name: str = "sim",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.simulator = simulator
        self.name = name
        self.clock = clock
        self.cond = threading.Condition()
        self.wire = _Wire(simulator, clock())

    def open(self, settings: PortSettings | None = None) -> SimPort:
        """A new port handle on this line; arrived bytes are dropped, like pyserial's open."""
        _warn_mismatch(self.name, settings, self.simulator.port_settings)
        port = SimPort(self)
        with self.cond:
            now = self.clock()
            self.wire.pump(now)
            self.wire.drop_arrived(now)
        return port


class SimPort:
    """The pyserial-like surface of a `SimLine` that `Transport` uses.

    ``timeout``: None blocks until `read` has its bytes, 0 returns what has arrived,
    a number waits at most that many seconds. `write` queues the request on the wire and
    returns; `flush` waits until it has left (like ``tcdrain``).
    """

    def __init__(self, line: SimLine) -> None:
        self.line = line
        self.name = line.name
        self.port = line.name
        self.timeout: float | None = None
        self.is_open = True

    @property
    def simulator(self) -> Simulator:
        return self.line.simulator

    def _check_open(self) -> None:
        if not self.is_open:
            import serial

            raise serial.SerialException(f"{self.name}: port is closed")

    def write(self, data: bytes) -> int:
        line = self.line
        with line.cond:
            self._check_open()
            now = line.clock()
            line.wire.pump(now)
            line.wire.host_write(bytes(data), now)
            line.cond.notify_all()
        return len(data)

    def flush(self) -> None:
        line = self.line
        with line.cond:
            while True:
                self._check_open()
                left = line.wire.host_free - line.clock()
                if left <= 0:
                    return
                line.cond.wait(left)

    def read(self, size: int = 1) -> bytes:
        if size <= 0:
            return b""
        line = self.line
        timeout = self.timeout
        with line.cond:
            deadline = None if timeout is None else line.clock() + max(0.0, timeout)
            while True:
                self._check_open()
                now = line.clock()
                wire = line.wire
                wire.pump(now)
                if wire.available(now) >= size or (deadline is not None and now >= deadline):
                    return wire.take(size, now)
                waits = [t - now for t in (wire.next_event(now), deadline) if t is not None]
                line.cond.wait(max(0.0, min(waits)) + 1e-5 if waits else None)

    @property
    def in_waiting(self) -> int:
        line = self.line
        with line.cond:
            self._check_open()
            now = line.clock()
            line.wire.pump(now)
            return line.wire.available(now)

    def reset_input_buffer(self) -> None:
        line = self.line
        with line.cond:
            self._check_open()
            now = line.clock()
            line.wire.pump(now)
            line.wire.drop_arrived(now)

    def reset_output_buffer(self) -> None:
        """Nothing to do: requests are handed to the device when written."""

    def close(self) -> None:
        with self.line.cond:
            self.is_open = False
            self.line.cond.notify_all()

    def __enter__(self) -> SimPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sim_line(simulator: Simulator, settings: PortSettings | None = None) -> SimPort:
    """A port on a new in-process line playing `simulator` (tests, benchmarks, embedding)."""
    return SimLine(simulator, name=f"sim:{type(simulator).__name__}").open(settings)


_sim_lines: dict[tuple[str, tuple[tuple[str, str], ...]], SimLine] = {}
_sim_lines_lock = threading.Lock()
_default_registry: Any = None


def _registry() -> Any:
    global _default_registry
    if _default_registry is None:
        from bmslogger.manager import build_registry

        _default_registry = build_registry()
    return _default_registry


def parse_sim_url(url: str) -> tuple[str, dict[str, str]]:
    """``sim://daly?cells=16&fault=checksum`` → ("daly", {"cells": "16", ...}).

    Raises `PortUnavailableError` for a malformed URL or a key given twice.
    """
    parts = urlsplit(url)
    if parts.scheme != "sim" or not parts.netloc or parts.path not in ("", "/"):
        raise PortUnavailableError(
            f"{url}: expected sim://PLUGIN?key=value&... (for example sim://daly?cells=16)"
        )
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise PortUnavailableError(
            f"{url}: expected key=value pairs joined by & after the ?, got {parts.query!r}"
        ) from None
    for key, value in pairs:
        if key in options:
            raise PortUnavailableError(
                f"{url}: option {key} given twice; give lists once, comma-separated"
            )
        options[key] = value
    return parts.netloc, options


def build_simulator(plugin: str, raw_options: Mapping[str, str], registry: Any = None) -> Simulator:
    """The simulator of device plugin `plugin`, with options given as text (from a
    ``sim://`` query or ``bmslogger simulate --option k=v``).

    Raises `PluginError` for an unknown plugin or a simulator that is not a `Simulator`,
    and `ConfigError` listing every bad option (its path is the option's key).
    """
    registry = registry if registry is not None else _registry()
    devices = registry.devices
    if plugin not in devices:
        known = ", ".join(sorted(devices)) or "none"
        raise PluginError(f"unknown device plugin {plugin!r} (installed: {known})")
    sim_class = devices[plugin].load_simulator()
    if not (isinstance(sim_class, type) and issubclass(sim_class, Simulator)):
        raise PluginError(f"plugin {plugin!r}: its simulator {sim_class!r} is not a Simulator")
    problems = OptionProblems()
    options = resolve_options(sim_class.all_options(), raw_options, from_text=True,
                              problems=problems)
    if problems:
        raise ConfigError([ConfigIssue("", key, msg) for key, msg in problems.items])
    try:
        return sim_class(options)
    except ValueError as err:  # a simulator refusing a combination of options
        raise ConfigError([ConfigIssue("", "", str(err))]) from err


def build_bus(
    plugin: str, raw_options: Mapping[str, str], addresses: Sequence[int], registry: Any = None
) -> Simulator:
    """Units of `plugin` at `addresses` on one line, each with the other options given and
    its own seed (seed + address), so their values differ.

    A simulator that serves several unit ids by itself (a ``units`` option, as TriStar's
    Modbus slave) gets them directly; otherwise one simulator per address, set through the
    plugin's ``address_option``, on a `SimulatedBus`. Raises ConfigError for a plugin
    without bus addresses."""
    registry = registry if registry is not None else _registry()
    dtype = registry.devices.get(plugin)
    if dtype is None:
        return build_simulator(plugin, raw_options, registry)  # its error names the plugin
    names = {o.name for o in dtype.load_simulator().all_options()}
    listed = ",".join(str(a) for a in addresses)
    if "units" in names:
        return build_simulator(plugin, {**raw_options, "units": listed}, registry)
    option = dtype.address_option
    if not option or option not in names:
        raise ConfigError([ConfigIssue("", "bus", f"{plugin} has no bus address to simulate "
                                                  "several units with")])
    seed = int(raw_options.get("seed", 0) or 0)
    return SimulatedBus([
        build_simulator(plugin, {**raw_options, option: str(a), "seed": str(seed + a)},
                        registry)
        for a in addresses
    ])


def open_sim_port(url: str, settings: PortSettings | None = None, registry: Any = None) -> SimPort:
    """Open ``sim://PLUGIN?key=value&...`` in-process.

    The same URL opened again (every poll opens and closes its port) reaches the same
    simulated device, so values drift across polls and late answers are not lost.
    `registry` defaults to the installed plugins (`bmslogger.manager.build_registry`).
    Raises `PortUnavailableError` with a one-line message for an unknown plugin or a bad
    option, naming the key and what was expected.
    """
    plugin, raw = parse_sim_url(url)
    key = (plugin, tuple(sorted(raw.items())))
    with _sim_lines_lock:
        line = _sim_lines.get(key)
        if line is None:
            try:
                simulator = _build_for_url(plugin, raw, registry)
            except PluginError as err:
                raise PortUnavailableError(f"{url}: {err}") from err
            except ConfigError as err:
                first = err.issues[0]
                what = f"option {first.path}: " if first.path else ""
                raise PortUnavailableError(f"{url}: {what}{first.message}") from err
            line = SimLine(simulator, name=url)
            _sim_lines[key] = line
    return line.open(settings)


def _build_for_url(plugin: str, raw: Mapping[str, str], registry: Any) -> Simulator:
    """``bus=1,3,7`` in a sim:// URL builds a `SimulatedBus`; the rest are the units'
    options."""
    if "bus" not in raw:
        return build_simulator(plugin, raw, registry)
    from bmslogger.detect import parse_addresses

    rest = {k: v for k, v in raw.items() if k != "bus"}
    try:
        addresses = parse_addresses(raw["bus"])
    except ValueError as err:
        raise ConfigError([ConfigIssue("", "bus", str(err))]) from None
    return build_bus(plugin, rest, addresses, registry)


def forget_sim_ports() -> None:
    """Power off every ``sim://`` device opened so far (tests; a reloaded config)."""
    global _default_registry
    with _sim_lines_lock:
        _sim_lines.clear()
        _default_registry = None


# --- servers: pty and tcp ------------------------------------------------------------------


class _LineServer:
    """A thread that plays a simulator onto a file descriptor, paced by `_Wire`.

    Subclasses say which descriptor carries the host's bytes right now (`_host_fd`),
    and how to read from it and write to it.
    """

    kind = "line"

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.bytes_received = 0
        self.bytes_sent = 0
        self.bytes_dropped = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._wire = _Wire(simulator, time.monotonic())
        self._thread = threading.Thread(
            target=self._run, name=f"simline-{self.kind}-{type(simulator).__name__}", daemon=True
        )
        self._closed = False

    # subclass hooks

    def _fds(self) -> list[int]:
        raise NotImplementedError

    def _readable(self, fd: int, now: float) -> None:
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Close the subclass's descriptors (after the thread stopped)."""

    def _hang_up(self) -> None:
        """The device ended the connection after its answer (`Simulator.hangup_after_answer`);
        only lines with connections (TCP) do anything."""

    # loop

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _received(self, data: bytes, now: float) -> None:
        self.bytes_received += len(data)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s rx %s", self.kind, data.hex(" "))
        try:
            self._wire.host_write(data, now)
        except RuntimeError:
            # The device ignores what it cannot handle; keep the line up for the next one.
            log.exception("%s: simulator failed; request ignored", self.kind)

    def _run(self) -> None:
        wire = self._wire
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                wire.pump(now)
                due = wire.take(1 << 30, now)
                if due:
                    self._send(due)
                    if not wire.bursts and self.simulator.hangup_after_answer:
                        self._hang_up()
                event = wire.next_event(now)
                timeout = None if event is None else max(0.0, event - now)
                if due and timeout is not None:
                    # mid-answer: let a few byte-times accumulate, then write them at once
                    timeout = max(timeout, _BURST_S)
                ready, _, _ = select.select([self._wake_r, *self._fds()], [], [], timeout)
                now = time.monotonic()
                for fd in ready:
                    if fd == self._wake_r:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 512)
                    else:
                        self._readable(fd, now)
        except BaseException as err:  # the loop must say why it stopped, never vanish
            self.error = err
            log.exception("simulated %s line stopped", self.kind)

    def _count_sent(self, data: bytes, sent: int) -> None:
        self.bytes_sent += sent
        self.bytes_dropped += len(data) - sent
        if sent and log.isEnabledFor(logging.DEBUG):
            log.debug("%s tx %s", self.kind, data[:sent].hex(" "))

    def close(self) -> None:
        """Stop the thread and close every descriptor. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._release()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PtyServer(_LineServer):
    """A simulated device behind a pseudo-terminal; `path` is the device to open.

    The server keeps a descriptor of the slave side open itself, so clients may open and
    close the port as often as they like without the master ever seeing a hang-up.
    """

    kind = "pty"

    def __init__(self, simulator: Simulator, link: str | None = None) -> None:
        super().__init__(simulator)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation, no signals
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.link = link
        if link:
            try:
                if os.path.islink(link):
                    os.unlink(link)  # a stale link from a killed simulator
                os.symlink(self.path, link)
            except OSError as err:
                self.link = None
                self.close()
                raise TransportError(f"cannot make the link {link} to {self.path}: {err}") from err
        self._thread.start()

    def _fds(self) -> list[int]:
        return [self._master]

    def _readable(self, fd: int, now: float) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno == errno.EIO:  # no slave open: cannot happen while we hold one
                time.sleep(_BURST_S)
                return
            raise
        if data:
            self._received(data, now)

    def _send(self, data: bytes) -> None:
        try:
            sent = os.write(self._master, data)
        except (BlockingIOError, OSError):
            sent = 0  # the client's input buffer is full: an overrun, bytes are lost
        self._count_sent(data, sent)

    def _release(self) -> None:
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link:
            with contextlib.suppress(OSError):
                if os.path.islink(self.link) and os.readlink(self.link) == self.path:
                    os.unlink(self.link)


class TcpServer(_LineServer):
    """A simulated device behind a raw TCP port, like an RS-485-to-Ethernet bridge.

    One client at a time, as such bridges usually allow: a second connection waits in the
    listen queue until the first one closes. Bytes the device sends while no client is
    connected are lost, as on a bridge.
    """

    kind = "tcp"

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(simulator)
        self._client: socket.socket | None = None
        self.clients_served = 0
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(4)
        except OSError:
            self._listener.close()
            self.close()
            raise
        self._listener.setblocking(False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._thread.start()

    @property
    def url(self) -> str:
        """The ``socket://`` URL a logger config would name."""
        host, port = self.address
        return f"socket://{host}:{port}"

    def _fds(self) -> list[int]:
        if self._client is not None:
            return [self._client.fileno()]
        return [self._listener.fileno()]

    def _readable(self, fd: int, now: float) -> None:
        if self._client is None:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._client = client
            self.clients_served += 1
            return
        try:
            data = self._client.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        self._received(data, now)

    def _hang_up(self) -> None:
        self._drop_client()

    def _drop_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(OSError):
                self._client.close()
            self._client = None

    def _send(self, data: bytes) -> None:
        sent = 0
        if self._client is not None:
            try:
                sent = self._client.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop_client()
        self._count_sent(data, sent)

    def _release(self) -> None:
        self._drop_client()
        with contextlib.suppress(OSError):
            self._listener.close()


Server = Union[PtyServer, TcpServer]


def serve_pty(simulator: Simulator, link: str | None = None) -> PtyServer:
    """Serve `simulator` on a new pseudo-terminal in raw mode; open ``server.path``.

    `link`: also make this symlink to the pty (a stable name for configs), removed on close.
    """
    return PtyServer(simulator, link=link)


def serve_tcp(simulator: Simulator, host: str = "127.0.0.1", port: int = 0) -> TcpServer:
    """Serve `simulator` on a TCP port (0 = any free one); ``server.address`` says which."""
    return TcpServer(simulator, host=host, port=port)


def run_forever(server: Server, stop_event: threading.Event | None = None,
                poll_s: float = 0.5) -> None:
    """Block until `stop_event` is set (or Ctrl-C), then close `server`.

    Raises `TransportError` if the server's thread died, with the reason.
    """
    stop = stop_event if stop_event is not None else threading.Event()
    try:
        while not stop.wait(poll_s):
            if not server.alive:
                raise TransportError(f"simulated {server.kind} line stopped: {server.error}")
    finally:
        server.close()
