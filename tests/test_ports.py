"""Serial port listing and the stable names it suggests, on a folder of real symlinks laid
out like /dev/serial (this machine has no USB adapters), plus the usb: lookup refusing to
guess between ports."""

from __future__ import annotations

import json
import os

import pytest
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from bmslogger.errors import PortUnavailableError
from bmslogger.ports import PortInfo, link_targets, list_serial_ports, usb_url
from bmslogger.transport import parse_usb, resolve_port


def usb_port(device: str, vid: int, pid: int, serial: str | None = None,
             product: str | None = "USB Serial", manufacturer: str | None = "Vendor",
             description: str = "USB Serial") -> ListPortInfo:
    """What pyserial's comports() returns for a USB adapter."""
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number = vid, pid, serial
    info.product, info.manufacturer, info.description = product, manufacturer, description
    info.hwid = f"USB VID:PID={vid:04X}:{pid:04X}"
    return info


@pytest.fixture
def dev(tmp_path):
    """A fake /dev: device files, and by-id/by-path folders of relative symlinks as udev
    makes them."""
    root = tmp_path / "dev"
    (root / "serial" / "by-id").mkdir(parents=True)
    (root / "serial" / "by-path").mkdir(parents=True)
    for name in ("ttyUSB0", "ttyUSB1", "ttyUSB2", "ttyUSB3", "ttyUSB4", "ttyUSB5", "ttyUSB6",
                 "ttyACM0", "ttyAMA0"):
        (root / name).write_text("")

    def link(folder: str, name: str, target: str) -> str:
        path = root / "serial" / folder / name
        os.symlink(os.path.join("..", "..", target), path)
        return str(path)

    links = {
        "ftdi": link("by-id", "usb-FTDI_FT232R_USB_UART_A10K1ABC-if00-port0", "ttyUSB0"),
        # two identical CH340s without serial numbers: udev's one by-id name points at
        # whichever came last; by-path tells them apart
        "ch340_id": link("by-id", "usb-1a86_USB_Serial-if00-port0", "ttyUSB2"),
        "ch340_a": link("by-path", "platform-3f980000.usb-usb-0:1.2:1.0-port0", "ttyUSB1"),
        "ch340_b": link("by-path", "platform-3f980000.usb-usb-0:1.3:1.0-port0", "ttyUSB2"),
        "acm": link("by-id", "usb-Victron_VE.Direct_HQ2207ABCDE-if00", "ttyACM0"),
    }
    for n in range(4):  # an FT4232H: four ports, one serial number
        links[f"quad{n}"] = link(
            "by-id", f"usb-FTDI_Quad_RS232-HS_FT4ABCD-if0{n}-port0", f"ttyUSB{3 + n}")
    # a second, longer name for the FTDI: the shorter one is shown
    link("by-id", "usb-FTDI_FT232R_USB_UART_A10K1ABC-if00-port0-alias", "ttyUSB0")
    ports = [
        usb_port(str(root / "ttyUSB2"), 0x1A86, 0x7523, None, product="USB Serial"),
        usb_port(str(root / "ttyUSB0"), 0x0403, 0x6001, "A10K1ABC", product="FT232R USB UART",
                 manufacturer="FTDI"),
        usb_port(str(root / "ttyUSB1"), 0x1A86, 0x7523, None, product="USB Serial"),
        usb_port(str(root / "ttyACM0"), 0x16D0, 0x0E9F, "HQ2207ABCDE", product="VE Direct"),
        *[usb_port(str(root / f"ttyUSB{3 + n}"), 0x0403, 0x6011, "FT4ABCD") for n in range(4)],
    ]
    uart = ListPortInfo(str(root / "ttyAMA0"), skip_link_detection=True)
    uart.description = "ttyAMA0"
    ports.append(uart)
    return root, ports, links


def listed(dev) -> dict[str, PortInfo]:
    root, ports, _ = dev
    infos = list_serial_ports(str(root / "serial" / "by-id"), str(root / "serial" / "by-path"),
                              ports=ports)
    assert [i.device for i in infos] == sorted(i.device for i in infos)
    return {os.path.basename(i.device): i for i in infos}


def test_unique_adapter_with_serial_gets_full_usb_url(dev):
    info = listed(dev)["ttyUSB0"]
    _, _, links = dev
    assert info.by_id == links["ftdi"]  # the shorter of two links
    assert info.stable_url == "usb:0403:6001:A10K1ABC"
    assert (info.vid, info.pid, info.serial_number) == (0x0403, 0x6001, "A10K1ABC")
    assert info.product == "FT232R USB UART" and info.manufacturer == "FTDI"
    assert info.usb_id == "0403:6001"
    assert listed(dev)["ttyACM0"].stable_url == "usb:16d0:0e9f:HQ2207ABCDE"


def test_identical_adapters_without_serial_fall_back_to_the_usb_socket(dev):
    infos = listed(dev)
    _, _, links = dev
    a, b = infos["ttyUSB1"], infos["ttyUSB2"]
    assert a.serial_number is None and b.serial_number is None
    assert a.by_id is None and b.by_id == links["ch340_id"]
    assert a.stable_url == links["ch340_a"] == a.by_path
    assert b.stable_url == links["ch340_b"] == b.by_path


def test_ports_of_a_multi_port_adapter_get_their_by_id_link(dev):
    infos = listed(dev)
    _, _, links = dev
    for n in range(4):
        info = infos[f"ttyUSB{3 + n}"]
        assert info.serial_number == "FT4ABCD"
        assert info.stable_url == links[f"quad{n}"] == info.by_id
        assert f"-if0{n}-" in info.stable_url


def test_a_lone_adapter_without_serial_gets_the_short_usb_url(dev):
    root, ports, _ = dev
    lone = [p for p in ports if p.device.endswith(("ttyUSB1", "ttyAMA0"))]
    infos = list_serial_ports(str(root / "serial" / "by-id"), str(root / "serial" / "by-path"),
                              ports=lone)
    assert [i.stable_url for i in infos] == [str(root / "ttyAMA0"), "usb:1a86:7523"]


def test_a_built_in_uart_keeps_its_device_path(dev):
    info = listed(dev)["ttyAMA0"]
    assert info.vid is None and info.usb_id is None
    assert info.by_id is None and info.by_path is None
    assert info.stable_url == info.device
    assert info.description == "ttyAMA0"


def test_to_json(dev):
    data = listed(dev)["ttyUSB0"].to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["vid"] == "0403" and data["pid"] == "6001"
    assert data["stable_url"] == "usb:0403:6001:A10K1ABC"
    assert set(data) == {"device", "by_id", "by_path", "vid", "pid", "serial_number", "product",
                         "manufacturer", "description", "stable_url"}
    assert listed(dev)["ttyAMA0"].to_json()["vid"] is None


def test_missing_by_id_folder_is_not_an_error(dev, tmp_path):
    _, ports, _ = dev
    infos = list_serial_ports(str(tmp_path / "nope"), str(tmp_path / "nope2"), ports=ports)
    assert all(i.by_id is None and i.by_path is None for i in infos)
    assert link_targets(str(tmp_path / "nope")) == {}


def test_usb_url_format_round_trips_through_the_transport():
    assert usb_url(0x403, 0x6001) == "usb:0403:6001"
    assert usb_url(0x1A86, 0x7523, "5&2B3C") == "usb:1a86:7523:5&2B3C"
    assert parse_usb(usb_url(0x16D0, 0x0E9F, "HQ22")) == (0x16D0, 0x0E9F, "HQ22")


def test_listing_this_machine_works():
    infos = list_serial_ports()
    assert all(isinstance(i, PortInfo) and i.stable_url for i in infos)


def test_usb_lookup_never_guesses_between_ports(dev, monkeypatch):
    _, ports, _ = dev
    monkeypatch.setattr(list_ports, "comports", lambda: list(ports))
    assert resolve_port("usb:0403:6001:A10K1ABC").endswith("ttyUSB0")
    assert resolve_port("usb:0403:6001").endswith("ttyUSB0")
    with pytest.raises(PortUnavailableError, match="add the serial number"):
        resolve_port("usb:1a86:7523")
    with pytest.raises(PortUnavailableError, match=r"4 ports match.*by-id"):
        resolve_port("usb:0403:6011:FT4ABCD")
    with pytest.raises(PortUnavailableError, match="no USB serial adapter"):
        resolve_port("usb:0403:6001:OTHER")
