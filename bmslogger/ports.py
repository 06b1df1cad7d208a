"""The serial ports this machine has, and the stable name to put in logger.toml for each.

``/dev/ttyUSB0`` is whatever adapter the kernel enumerated first; after a re-plug or a
reboot with two adapters it may be the other one, and the logger would talk Daly to a
TriStar. `list_serial_ports` shows, for each port, a name that survives that: the USB
identity ``usb:VID:PID[:SERIAL]`` (looked up at every open by `bmslogger.transport`) when
it names exactly one port, else the udev ``/dev/serial/by-id`` link (one port of a
multi-port adapter), else the ``/dev/serial/by-path`` link (the USB socket: the only
thing that tells identical adapters without serial numbers apart), else the device path.
``bmslogger list-ports`` prints these.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

BY_ID_DIR = "/dev/serial/by-id"
BY_PATH_DIR = "/dev/serial/by-path"


@dataclass(frozen=True)
class PortInfo:
    """One serial port: where it is, what it is, and how a config should name it."""

    device: str
    by_id: str | None
    by_path: str | None
    vid: int | None
    pid: int | None
    serial_number: str | None
    product: str | None
    manufacturer: str | None
    description: str | None
    stable_url: str

    @property
    def usb_id(self) -> str | None:
        """``0403:6001`` for a USB adapter, None otherwise."""
        if self.vid is None or self.pid is None:
            return None
        return f"{self.vid:04x}:{self.pid:04x}"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for ``list-ports --format json``; ids as 4-digit hex strings, the way
        lsusb and the ``usb:`` URL spell them."""
        out = asdict(self)
        out["vid"] = None if self.vid is None else f"{self.vid:04x}"
        out["pid"] = None if self.pid is None else f"{self.pid:04x}"
        return out


def usb_url(vid: int, pid: int, serial_number: str | None = None) -> str:
    """``usb:0403:6001`` or ``usb:0403:6001:A10K1ABC``: the form `bmslogger.transport` opens."""
    url = f"usb:{vid:04x}:{pid:04x}"
    return f"{url}:{serial_number}" if serial_number else url


def link_targets(folder: str) -> dict[str, str]:
    """Real device path → symlink in `folder` (udev's by-id or by-path). When several
    links reach one device, the shortest name wins (ties: alphabetical)."""
    try:
        names = sorted(os.listdir(folder), key=lambda n: (len(n), n))
    except OSError:  # no such folder: no USB serial adapter was ever plugged in
        return {}
    out: dict[str, str] = {}
    for name in names:
        link = os.path.join(folder, name)
        if not os.path.islink(link):
            continue
        out.setdefault(os.path.realpath(link), link)
    return out


def list_serial_ports(
    by_id_dir: str = BY_ID_DIR,
    by_path_dir: str = BY_PATH_DIR,
    ports: Iterable[Any] | None = None,
) -> list[PortInfo]:
    """Every serial port pyserial sees, sorted by device, each with a suggested stable URL.

    `ports` are pyserial ``ListPortInfo`` objects (default: ``comports()`` now); the folder
    arguments exist so tests can use a folder of their own links.
    """
    if ports is None:
        from serial.tools import list_ports

        ports = list_ports.comports()
    found = sorted(ports, key=lambda p: p.device)
    by_id = link_targets(by_id_dir)
    by_path = link_targets(by_path_dir)

    def usb_key(p: Any, with_serial: bool) -> tuple[Any, ...]:
        if with_serial:
            return ("serial", p.vid, p.pid, p.serial_number)
        return ("any", p.vid, p.pid)

    counts: dict[tuple[Any, ...], int] = {}
    for p in found:
        if p.vid is not None and p.pid is not None:
            for with_serial in (True, False):
                key = usb_key(p, with_serial)
                counts[key] = counts.get(key, 0) + 1

    infos = []
    for p in found:
        real = os.path.realpath(p.device)
        link_id = by_id.get(real)
        link_path = by_path.get(real)
        serial_number = p.serial_number or None
        stable = None
        if p.vid is not None and p.pid is not None:
            if serial_number and counts[usb_key(p, True)] == 1:
                stable = usb_url(p.vid, p.pid, serial_number)
            elif counts[usb_key(p, False)] == 1:
                # the only adapter of its kind here: its serial number is not needed
                stable = usb_url(p.vid, p.pid)
        if stable is None:
            if p.vid is not None and not serial_number:
                # Identical adapters without serial numbers share one by-id name, which
                # udev points at whichever came last; only the USB socket tells them apart.
                stable = link_path or link_id or p.device
            else:
                stable = link_id or link_path or p.device
        infos.append(
            PortInfo(
                device=p.device,
                by_id=link_id,
                by_path=link_path,
                vid=p.vid,
                pid=p.pid,
                serial_number=serial_number,
                product=p.product or None,
                manufacturer=p.manufacturer or None,
                description=p.description if p.description not in (None, "", "n/a") else None,
                stable_url=stable,
            )
        )
    return infos
