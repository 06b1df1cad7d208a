"""``bmslogger doctor``: why a logger does not log, in one screen.

The usual reasons a BMS logger reads nothing on a fresh Raspberry Pi are a port the service
user may not open (not in ``dialout``), another program holding the port, a port name that
moved after a re-plug, and a device that stays silent (wiring, baud rate, address). The
doctor checks each: every serial port with its by-id name, USB id, owner group and whether
this user may open it, who holds its lock, and whether every configured device answers.
``--raw DEVICE`` polls one device once and prints every byte sent and received in hex with
time stamps, for comparing with the protocol document or a vendor tool's capture; with
``--save FILE`` the same session is written as a capture file (`bmslogger.capture`) that
``bmslogger replay`` serves again, for bug reports and tests without the device.
"""

from __future__ import annotations

import grp
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bmslogger.errors import BmsLoggerError


@dataclass
class PortCheck:
    """One serial port as the doctor sees it."""

    device: str
    by_id: str | None
    usb_id: str | None
    serial_number: str | None
    description: str | None
    stable_url: str
    group: str | None
    may_open: bool
    hint: str
    lock_holder: int | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def access_check(device: str) -> tuple[str | None, bool, str]:
    """(owning group, may this user read and write it, what to do if not)."""
    try:
        st = os.stat(device)
    except OSError as err:
        return None, False, f"cannot stat {device}: {err.strerror or err}"
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    if os.access(device, os.R_OK | os.W_OK):
        return group, True, ""
    user = _user()
    if st.st_gid not in os.getgroups():
        return group, False, (f"user {user} is not in group {group}: "
                              f"sudo usermod -aG {group} {user}, then log in again")
    return group, False, f"permissions {oct(st.st_mode & 0o777)} deny read/write"


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def check_ports(lock_dir: str, ports: Any = None) -> list[PortCheck]:
    """Every serial port (`bmslogger.ports.list_serial_ports`) with access and lock owner."""
    from bmslogger.locking import lock_holder
    from bmslogger.ports import list_serial_ports
    from bmslogger.transport import port_identity

    out = []
    for info in list_serial_ports(ports=ports):
        group, ok, hint = access_check(info.device)
        try:
            holder = lock_holder(port_identity(info.device), lock_dir)
        except BmsLoggerError:
            holder = None
        out.append(PortCheck(info.device, info.by_id, info.usb_id, info.serial_number,
                             info.product or info.description, info.stable_url, group, ok,
                             hint, holder))
    return out


def check_device(poller: Any) -> dict[str, Any]:
    """Poll one configured device once (under its lock); what answered and what failed."""
    from bmslogger.locking import lock_holder
    from bmslogger.transport import port_identity, resolve_port

    device = poller.device
    row: dict[str, Any] = {"device": device.name, "plugin": device.plugin, "port": device.port}
    try:
        row["resolved"] = resolve_port(device.port)
        row["lock_holder"] = lock_holder(port_identity(device.port), poller.lock_dir)
    except BmsLoggerError as err:
        row.update(resolved=None, lock_holder=None, answers=False, errors=[str(err)])
        return row
    if "://" not in row["resolved"]:
        row["group"], row["may_open"], row["hint"] = access_check(row["resolved"])
    started = time.monotonic()
    result = poller.run()
    row.update(
        answers=not result.silent,
        complete=result.complete,
        requests=result.requests,
        answered=result.answered,
        errors=list(result.errors),
        seconds=round(time.monotonic() - started, 3),
    )
    return row


# --- raw frames ------------------------------------------------------------------------------


class TapPort:
    """Wraps an open pyserial(-like) port and reports every byte written and read."""

    def __init__(self, port: Any, emit: Callable[[str, bytes], None]) -> None:
        object.__setattr__(self, "_port", port)
        object.__setattr__(self, "_emit", emit)

    def write(self, data: bytes) -> Any:
        self._emit("TX", bytes(data))
        return self._port.write(data)

    def read(self, size: int = 1) -> bytes:
        data = self._port.read(size)
        if data:
            self._emit("RX", bytes(data))
        return data

    def reset_input_buffer(self) -> None:
        waiting = self._port.in_waiting
        if waiting:
            self._emit("RX (discarded)", self._port.read(waiting))
        self._port.reset_input_buffer()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._port, name, value)


class HexLog:
    """Collects ``+0.123 TX a5 40 ...`` lines, merging consecutive chunks of one direction."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.entries: list[tuple[float, str, bytearray]] = []

    def __call__(self, direction: str, data: bytes) -> None:
        now = self.clock() - self.start
        if self.entries and self.entries[-1][1] == direction and direction != "TX":
            self.entries[-1][2].extend(data)
            return
        self.entries.append((now, direction, bytearray(data)))

    def lines(self) -> list[str]:
        return [f"+{t:8.3f} {d:<3} {bytes(b).hex(' ')}" for t, d, b in self.entries]


def raw_poll(device: Any, dtype: Any, lock_dir: str, log: Callable[[str, bytes], None]) -> Any:
    """One poll of `device` with every byte on the line reported to `log` (a `HexLog`,
    or anything called the same way)."""
    from bmslogger.locking import PortLock
    from bmslogger.runtime import _process_lock
    from bmslogger.transport import Transport, open_transport, port_identity

    identity = port_identity(device.port)
    with _process_lock(identity), PortLock(identity, lock_dir, device.lock_timeout_s), \
            open_transport(device.port, device.port_settings) as line:
        port = line.serial
        tapped = Transport(line.url, line.settings,
                           TapPort(port, log) if port is not None else None)
        driver = dtype.load_driver()(device, tapped)
        return driver.poll()


def raw_polls(device: Any, dtype: Any, lock_dir: str, log: HexLog, polls: int = 1,
              recorder: Any = None) -> list[Any]:
    """`polls` polls of `device` back to back, every byte reported to `log` and, for
    ``--save``, to `recorder` (a `bmslogger.capture.Recorder`, told where each poll ends).

    Several polls show how values move and which answers repeat, which a replay needs
    to look like the device; the port is opened and locked per poll, as the logger does.
    """
    def emit(direction: str, data: bytes) -> None:
        log(direction, data)
        if recorder is not None:
            recorder(direction, data)

    results = []
    for _ in range(max(1, polls)):
        result = raw_poll(device, dtype, lock_dir, emit)
        if recorder is not None:
            recorder.poll_done(result)
        results.append(result)
    return results
