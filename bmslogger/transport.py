"""Opening the line a config names, and byte I/O with deadlines, over pyserial.

A port is one of:

* a device path: ``/dev/ttyUSB0``, ``/dev/serial/by-id/usb-FTDI_...``, ``COM3``;
* ``usb:VID:PID[:SERIAL]``: a USB adapter by identity, looked up in pyserial's port list at
  every open, so an adapter that comes back as another ttyUSB after a re-plug is found;
* ``socket://host:port``: a raw RS-485/RS-232-to-TCP bridge;
* ``rfc2217://host:port``: a bridge speaking Telnet COM-port control;
* ``sim://PLUGIN?key=value``: an in-process simulator on an emulated line
  (`bmslogger.simline`), paced at the baud rate;
* a scheme in `DIRECT_SCHEMES` (``modbus-tcp://host[:port]``): not opened here at all.
  The driver connects by itself (a TriStar MPPT closes its Modbus TCP connection after
  every answer, so its driver connects per request); the core still takes the port lock
  per host:port and hands the driver a `Transport` whose `serial` is None.

Everything else but ``usb:`` goes to pyserial's ``serial_for_url``. pyserial and
socket errors never escape: they become `PortUnavailableError` (cannot open) or
`TransportError` (failed mid-conversation).
"""

from __future__ import annotations

import os
import re
import select
from typing import Any

from bmslogger.errors import PortUnavailableError, TransportError
from bmslogger.model import PortSettings

#: URL schemes the core does not open: the driver owns the connection (see module docstring).
DIRECT_SCHEMES: tuple[str, ...] = ("modbus-tcp",)

_USB_RE = re.compile(r"^usb:([0-9a-fA-F]{4}):([0-9a-fA-F]{4})(?::(.+))?$")


def parse_usb(url: str) -> tuple[int, int, str | None] | None:
    """``usb:0403:6001:AB0CDEF`` → (0x0403, 0x6001, "AB0CDEF"); None if not a usb: URL."""
    m = _USB_RE.match(url)
    if not m:
        return None
    return int(m.group(1), 16), int(m.group(2), 16), m.group(3)


def resolve_port(url: str) -> str:
    """The URL pyserial should open: ``usb:`` looked up now, ``serial://`` stripped."""
    if url.startswith("serial://"):
        return url[len("serial://"):]
    usb = parse_usb(url)
    if usb is None:
        if url.startswith("usb:"):
            raise PortUnavailableError(
                f"{url}: expected usb:VID:PID or usb:VID:PID:SERIAL with 4-digit hex ids"
            )
        return url
    from serial.tools import list_ports

    vid, pid, serial_number = usb
    matches = [
        p for p in list_ports.comports()
        if p.vid == vid
        and p.pid == pid
        and (serial_number is None or p.serial_number == serial_number)
    ]
    if not matches:
        raise PortUnavailableError(f"{url}: no USB serial adapter with that identity is plugged in")
    if len(matches) > 1:
        # Never guess: the wrong port means talking one device's protocol to another.
        names = ", ".join(sorted(p.device for p in matches))
        hint = (
            "add the serial number" if serial_number is None
            # a multi-port adapter (FT4232H...) shows one serial number on every port
            else "they share the serial number; name the port by its /dev/serial/by-id path"
        )
        raise PortUnavailableError(
            f"{url}: {len(matches)} ports match ({names}); {hint} (see bmslogger list-ports)"
        )
    return sorted(p.device for p in matches)[0]


def port_identity(url: str) -> str:
    """A file-name-safe name of the physical line, the same for every spelling of it.

    ``/dev/serial/by-id/usb-FTDI...`` and ``/dev/ttyUSB0`` (and ``usb:0403:6001``) all
    name ``ttyUSB0``, so two programs that spell the port differently still share a lock.
    """
    target = resolve_port(url)
    if "://" in target:
        scheme, _, rest = target.partition("://")
        rest = rest.split("?", 1)[0] if scheme != "sim" else rest
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{scheme}_{rest}").strip("_")
    return os.path.basename(os.path.realpath(target))


class Transport:
    """An open line: write bytes, read what arrived before a deadline, discard leftovers.

    Drivers use only this. `read` returns as soon as at least one byte is there, so a
    driver that feeds its parser with each chunk finishes the moment the answer is whole.
    """

    def __init__(self, url: str, settings: PortSettings, port: Any) -> None:
        self.url = url
        self.settings = settings
        self._port = port
        self._timeout: float | None = None
        self._fileno: int | bool | None = False  # False: not looked up yet

    def wire_time(self, nbytes: int) -> float:
        """Seconds `nbytes` take on this line at its baud rate."""
        return self.settings.wire_time(nbytes)

    @property
    def serial(self) -> Any:
        """The open pyserial port (or the ``sim://`` stand-in with the same surface), for
        drivers built on a library that drives a pyserial object itself (modbus-tk's
        RtuMaster). Such a library may change the port's timeouts; the next `read`
        re-applies its own. The core still owns the port: do not close it. None for the
        `DIRECT_SCHEMES`, whose drivers connect by themselves."""
        self._timeout = None
        return self._port

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except (OSError, ValueError) as err:  # SerialException subclasses OSError
            raise TransportError(f"{self.url}: write failed: {err}") from err

    def read(self, timeout: float, max_bytes: int = 4096) -> bytes:
        """Bytes that arrive within `timeout` seconds: at least one, or b"" on timeout."""
        port = self._port
        timeout = max(0.0, timeout)
        try:
            fd = self._fd()
            if fd is not None:
                # a real port: wait in select() and read what is there without blocking,
                # instead of re-configuring the terminal's timeout on every call
                if self._timeout != 0.0:
                    port.timeout = 0.0
                    self._timeout = 0.0
                ready, _, _ = select.select([fd], [], [], timeout)
                if not ready:
                    return b""
                return port.read(max(1, min(port.in_waiting, max_bytes)))
            if self._timeout != timeout:
                port.timeout = timeout
                self._timeout = timeout
            data = port.read(1)
            if not data:
                return b""
            # pyserial's socket:// reports in_waiting as 0 or 1, so keep asking until it
            # says nothing more is there
            while len(data) < max_bytes:
                waiting = port.in_waiting
                if not waiting:
                    break
                data += port.read(min(waiting, max_bytes - len(data)))
            return data
        except (OSError, ValueError) as err:
            raise TransportError(f"{self.url}: read failed: {err}") from err

    def _fd(self) -> int | None:
        """The file descriptor of a local serial port (pyserial's posix Serial), else None
        (sockets, RFC 2217, the in-process simulator)."""
        if self._fileno is False:
            try:
                fileno = self._port.fileno()
            except (AttributeError, OSError, ValueError, TypeError):
                fileno = None
            self._fileno = fileno if isinstance(fileno, int) else None
        return self._fileno  # type: ignore[return-value]

    def discard_input(self) -> bytes:
        """Drop whatever is waiting (late or stale answers); returns it for hex logging."""
        try:
            waiting = self._port.in_waiting
            stale = self._port.read(waiting) if waiting else b""
            self._port.reset_input_buffer()
            return stale
        except (OSError, ValueError) as err:
            raise TransportError(f"{self.url}: read failed: {err}") from err

    def close(self) -> None:
        if self._port is None:
            return
        try:
            self._port.close()
        except Exception:  # closing a vanished adapter must not mask the real error
            pass

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_transport(url: str, settings: PortSettings) -> Transport:
    """Open `url` with `settings`; raise `PortUnavailableError` with the cause if it can't.

    For a `DIRECT_SCHEMES` URL nothing is opened: the Transport only carries the URL and
    settings to the driver, which connects by itself."""
    if url.split("://", 1)[0] in DIRECT_SCHEMES and "://" in url:
        return Transport(url, settings, None)
    if url.startswith("sim://"):
        from bmslogger.simline import open_sim_port

        return Transport(url, settings, open_sim_port(url, settings))
    target = resolve_port(url)
    import serial

    try:
        port = serial.serial_for_url(
            target,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            timeout=0,
            write_timeout=max(1.0, settings.wire_time(4096)),
            do_not_open=True,
        )
        if hasattr(port, "exclusive") and "://" not in target:
            port.exclusive = False  # the flock in bmslogger.locking arbitrates instead
        port.open()
    except (serial.SerialException, OSError, ValueError) as err:
        raise PortUnavailableError(f"{url}: cannot open: {err}") from err
    return Transport(url, settings, port)
