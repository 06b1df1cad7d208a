"""PACE BMS "paceic" protocol (VER 0x25): frames, the incremental parser, decoders.

Sans-IO: bytes in, frames and typed values out; no clock, no logging, no port. The driver
and the simulator both build on it, so they cannot disagree about a byte.

A frame is printable ASCII between a raw ``~`` and a raw CR: VER, ADR, CID1, CID2 (a
reply's RTN), LENGTH (4-bit LCHKSUM + 12-bit LENID, the count of INFO characters), INFO,
and a 16-bit CHKSUM, every field as uppercase hex. Section numbers (§8.2 ...) refer to the
project's protocol reference ``/work/shared/protocols/pace.md``.

The hard part is the 0x42 (analog) and 0x44 (status) replies of a multi-pack battery:
firmware lines append 0 to 22 undocumented bytes to each pack record, and the "P" byte
that should say how many does not (§8.2). `split_records` solves the per-pack length from
the INFO length with plausibility limits instead of a hand-tuned offset.

Only `bmslogger.errors` types are raised for bad device bytes. Misuse by the caller (an
address that is not a byte) raises `ValueError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

from bmslogger.checksums import ydt1363_chksum, ydt1363_lchksum
from bmslogger.errors import (
    ChecksumError,
    DeviceReportedError,
    FramingError,
    ProtocolError,
    UnexpectedAnswerError,
)
from bmslogger.sansio import NEED_DATA, NeedData
from bmslogger.sansio import FrameParser as BaseFrameParser

SOI = 0x7E  #: "~"
EOI = 0x0D  #: CR
HEADER_CHARS = 12  #: VER ADR CID1 CID2 LENGTH
MIN_FRAME = 18  #: SOI + header + CHKSUM + EOI, no INFO
MAX_LENID = 0xFFF
MAX_FRAME = MIN_FRAME + MAX_LENID

VER_PACE = 0x25
VER_PYLON = 0x20  #: some PACE firmwares answer with VER 0x20 and the same commands (§13.4)
CID1_BATTERY = 0x46

# --- commands (CID2) ------------------------------------------------------------------------

ANALOG = 0x42  #: cell voltages, temperatures, current, voltage, capacities (§8)
STATUS = 0x44  #: warnings, protections, status, faults, balancing (§9)
PACK_COUNT = 0x90  #: packs in the parallel group (§7)
CAPACITY = 0xA6  #: remaining, full, design of the connected pack (§10)
DATETIME = 0xB1  #: BMS clock (§10)
VERSION = 0xC1  #: software version text (+ Bluetooth name on V3.1)
PRODUCT = 0xC2  #: BMS and pack serial / product text
INTERNAL_VERSION = 0xC6  #: software version (<= 30 chars) + hardware version (10 chars)

#: Command value that asks the master for every pack in one reply (§6).
ALL_PACKS = 0xFF
MAX_PACK = 0x0F  #: highest single-pack COMMAND in the documents (V3.1 hints at 32, §16.7)

#: RTN codes (§12): what the BMS says instead of data. 00 is success.
RTN_NAMES = {
    0x00: "normal",
    0x01: "VER error",
    0x02: "CHKSUM error (our request arrived damaged)",
    0x03: "LCHKSUM error (our request arrived damaged)",
    0x04: "command (CID2) not supported",
    0x05: "command format error",
    0x06: "invalid data",
    0x07: "no data",
    0x09: "operation or write error",
    0x90: "address error",
    0x91: "internal communication error",
    0xE1: "CID1 invalid",
    0xE2: "execution failure",
    0xE3: "device fault",
    0xE4: "permission denied",
}

TEMP_OFFSET = 2730  #: 0.1 K offset of PACE temperatures (§5); Pylontech/Seplos use 2731
TEMP_ABSENT = 0x8000  #: "no such sensor" in a temperature slot (V3.1)

#: plausibility limits of the per-pack length solver (§8.2)
MAX_CELLS = 32
MAX_SENSORS = 16
MAX_ANALOG_TAIL = 63  #: bytes after P
MAX_STATUS_EXTRA = 8  #: bytes after warn state 2 (5 documented)
#: tail lengths (bytes after P) seen on real firmware, preferred when several fit (§8.2)
KNOWN_ANALOG_TAILS = (6, 7, 20, 28, 16, 4)
KNOWN_STATUS_EXTRAS = (0, 1, 3, 5)
#: layout names of the known analog tails (bytes after P)
ANALOG_LAYOUTS = {4: "pylon", 6: "classic", 7: "soc", 16: "enersol", 20: "extended",
                  28: "extended_summary"}

_HEX = b"0123456789ABCDEFabcdef"


# --- frames ---------------------------------------------------------------------------------


def length_field(lenid: int) -> int:
    """The 16-bit LENGTH value for `lenid` INFO characters: LCHKSUM in the top nibble."""
    return ydt1363_lchksum(lenid) << 12 | lenid


@dataclass(frozen=True)
class Frame:
    """One whole, checksum-valid frame. `info` holds the logical INFO bytes (hex decoded);
    `cid2` is the command in a request and the RTN in a reply."""

    ver: int
    adr: int
    cid1: int
    cid2: int
    info: bytes = b""
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def rtn(self) -> int:
        return self.cid2

    def __repr__(self) -> str:
        return (f"Frame(ver=0x{self.ver:02X}, adr=0x{self.adr:02X}, cid1=0x{self.cid1:02X}, "
                f"cid2=0x{self.cid2:02X}, info={self.info.hex().upper()})")


def _byte(name: str, value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be a byte (0..255), got {value!r}")
    return value


def build_frame(cid2: int, info: bytes = b"", adr: int = 1, ver: int = VER_PACE,
                cid1: int = CID1_BATTERY) -> bytes:
    """The wire bytes of a frame: INFO given as logical bytes, written as uppercase hex."""
    text_info = bytes(info).hex().upper().encode("ascii")
    if len(text_info) > MAX_LENID:
        raise ValueError(f"INFO of {len(info)} bytes does not fit LENID (at most 2047 bytes)")
    head = "{:02X}{:02X}{:02X}{:02X}{:04X}".format(
        _byte("ver", ver), _byte("adr", adr), _byte("cid1", cid1), _byte("cid2", cid2),
        length_field(len(text_info)),
    ).encode("ascii")
    body = head + text_info
    return b"~" + body + b"%04X" % ydt1363_chksum(body) + b"\r"


def request(cid2: int, info: bytes = b"", adr: int = 1, ver: int = VER_PACE,
            cid1: int = CID1_BATTERY) -> bytes:
    """A request frame (same layout as any frame; named for readability at call sites)."""
    return build_frame(cid2, info, adr, ver, cid1)


def pack_request(cid2: int, pack: int = ALL_PACKS, adr: int = 1, ver: int = VER_PACE,
                 cid1: int = CID1_BATTERY) -> bytes:
    """0x42 or 0x44 for one pack (1..15) or every pack (0xFF) behind the master."""
    if pack != ALL_PACKS and not 0 <= pack <= 0xFE:
        raise ValueError(f"pack must be 0..254 or 0xFF (all), got {pack!r}")
    return build_frame(cid2, bytes((pack,)), adr, ver, cid1)


class LengthChecksumError(ChecksumError):
    """The LCHKSUM nibble does not match LENID (a damaged LENGTH field)."""


def decode_frame(raw: bytes) -> Frame:
    """Check and decode one candidate that starts with ``~`` and ends with CR.

    Raises `FramingError` (wrong shape, non-hex characters, INFO length not LENID),
    `LengthChecksumError` or `ChecksumError`.
    """
    raw = bytes(raw)
    if len(raw) < MIN_FRAME or raw[0] != SOI or raw[-1] != EOI:
        raise FramingError(f"not a frame: {len(raw)} bytes, at least {MIN_FRAME} needed "
                           "between '~' and CR", raw)
    body = raw[1:-5]
    text = raw[1:-1]
    if any(c not in _HEX for c in text):
        raise FramingError("non-hex character inside a frame", raw)
    length = int(body[8:12], 16)
    lenid = length & 0xFFF
    if length >> 12 != ydt1363_lchksum(lenid):
        raise LengthChecksumError(
            f"LCHKSUM {length >> 12:X} does not match LENID 0x{lenid:03X} "
            f"(expected {ydt1363_lchksum(lenid):X})", raw)
    info_text = body[HEADER_CHARS:]
    if len(info_text) != lenid:
        raise FramingError(f"LENID says {lenid} INFO characters, the frame holds "
                           f"{len(info_text)}", raw)
    if lenid % 2:
        raise FramingError(f"odd LENID {lenid}: INFO must be whole bytes", raw)
    expected = ydt1363_chksum(body.upper())
    got = int(raw[-5:-1], 16)
    if got != expected and got != ydt1363_chksum(body):
        raise ChecksumError(f"CHKSUM {got:04X}, expected {expected:04X}", raw)
    return Frame(
        ver=int(body[0:2], 16), adr=int(body[2:4], 16), cid1=int(body[4:6], 16),
        cid2=int(body[6:8], 16), info=bytes.fromhex(info_text.decode("ascii")), raw=raw,
    )


# --- the parser -----------------------------------------------------------------------------

Event = Union[Frame, ProtocolError, NeedData]


class FrameParser(BaseFrameParser[Frame]):
    """Incremental parser: feed any chunks (TCP bridges deliver several or partial frames
    per read, §13.7), take frames and errors one by one.

    A frame starts at ``~`` and ends at the next CR. ``~`` never occurs inside a frame
    (every other character is hex), so a second ``~`` before the CR means the first frame
    was cut short: that part is reported as a `FramingError` and parsing restarts at the
    new ``~``. Bytes outside frames are reported once per run, whatever the chunking; a
    candidate longer than the longest possible frame is dropped. Errors are returned, not
    raised, so the caller sees every good frame and every bad one. The buffer, junk run,
    `events` and `close` come from `bmslogger.sansio.FrameParser`.
    """

    start_byte = SOI

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        if max_frame < MIN_FRAME:
            raise ValueError(f"max_frame must be at least {MIN_FRAME}")
        super().__init__()
        self.max_frame = max_frame

    def _incomplete(self, left: bytes) -> ProtocolError:
        return FramingError(f"incomplete frame: {len(left)} bytes without the final CR",
                            left[:64])

    def _parse_frame(self) -> Event:
        buf = self._buf
        end = buf.find(b"\r")
        restart = buf.find(b"~", 1, end if end >= 0 else len(buf))
        if restart > 0:
            cut = bytes(buf[:restart])
            del buf[:restart]
            return FramingError(f"frame cut short after {len(cut)} bytes", cut[:64])
        if end < 0:
            if len(buf) > self.max_frame:
                cut = bytes(buf)
                buf.clear()
                return FramingError(f"no CR within {self.max_frame} bytes", cut[:64])
            return NEED_DATA
        candidate = bytes(buf[:end + 1])
        del buf[:end + 1]
        try:
            return decode_frame(candidate)
        except ProtocolError as err:
            return err


# --- replies: RTN, echo -----------------------------------------------------------------------


def rtn_text(rtn: int) -> str:
    return RTN_NAMES.get(rtn, "undocumented return code")


def check_rtn(frame: Frame, what: str = "request") -> Frame:
    """The frame itself if RTN is 00; otherwise a `DeviceReportedError` naming the code."""
    if frame.rtn != 0:
        raise DeviceReportedError(
            f"{what}: the BMS answered RTN 0x{frame.rtn:02X} ({rtn_text(frame.rtn)})",
            frame.raw)
    return frame


def is_echo(frame: Frame, sent: bytes) -> bool:
    """Our own request coming back (RS-232-to-Ethernet bridges that loop back, §13.6): the
    same bytes, or a frame whose CID2 is the request's command rather than a return code."""
    if frame.raw and frame.raw == bytes(sent):
        return True
    try:
        asked = int(bytes(sent)[7:9], 16)
    except ValueError:
        return False
    return frame.cid2 == asked and frame.cid2 not in RTN_NAMES


# --- value helpers ----------------------------------------------------------------------------


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "big")


def _s16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "big", signed=True)


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "big")


def temperature_c(raw: int, offset: int = TEMP_OFFSET) -> float | None:
    """°C from a raw 0.1 K value: (raw - 2730) / 10; None for 0x8000 (no such sensor)."""
    if raw == TEMP_ABSENT:
        return None
    return round((raw - offset) / 10, 1)


def current_a(raw: int) -> float:
    """Amps from the signed 16-bit current in 10 mA (+ while charging): raw - 65536 for
    raw >= 0x8000, so 0xFFFF is -0.01 A (bmspace's -(65535 - raw) is 10 mA off, §5)."""
    if raw >= 0x8000:
        raw -= 0x10000
    return round(raw / 100, 2)


# --- the per-pack length solver ---------------------------------------------------------------

#: walks one record at `at`; returns its end, or None if the record is implausible
RecordWalker = Callable[[bytes, int, int], Union[int, None]]


def _analog_walker(data: bytes, at: int, tail: int) -> int | None:
    if at >= len(data):
        return None
    cells = data[at]
    if not 1 <= cells <= MAX_CELLS:
        return None
    t_at = at + 1 + 2 * cells
    if t_at >= len(data):
        return None
    sensors = data[t_at]
    if sensors > MAX_SENSORS:
        return None
    # current, voltage, remaining (2 each), P (1), then `tail` bytes
    end = t_at + 1 + 2 * sensors + 7 + tail
    return end if end <= len(data) else None


def _status_walker(data: bytes, at: int, extra: int) -> int | None:
    if at >= len(data):
        return None
    cells = data[at]
    if not 1 <= cells <= MAX_CELLS:
        return None
    t_at = at + 1 + cells
    if t_at >= len(data):
        return None
    if any(not _warning_ok(b) for b in data[at + 1:t_at]):
        return None
    sensors = data[t_at]
    if sensors > MAX_SENSORS:
        return None
    w_end = t_at + 1 + sensors
    if w_end > len(data) or any(not _warning_ok(b) for b in data[t_at + 1:w_end]):
        return None
    end = w_end + 12 + extra
    return end if end <= len(data) else None


def _warning_ok(value: int) -> bool:
    """A warning value byte the documents define: 00, 01, 02, 80..EF, F0 (§9.1)."""
    return value <= 2 or 0x80 <= value <= 0xF0


def _tile(data: bytes, count: int, size: int, walker: RecordWalker) -> list[tuple[int, int]] | None:
    """Record (start, end) pairs if `count` records of tail `size` end exactly at the end."""
    spans = []
    at = 2
    for _ in range(count):
        end = walker(data, at, size)
        if end is None:
            return None
        spans.append((at, end))
        at = end
    return spans if at == len(data) else None


def split_records(data: bytes, count: int, walker: RecordWalker, sizes: Sequence[int],
                  preferred: Sequence[int], forced: int | None = None
                  ) -> tuple[int, list[tuple[int, int]]]:
    """Find the per-record extra length that makes `count` records end exactly at the end
    of INFO (every record of one reply has the same layout, §8.2). Tries `forced` only if
    given; otherwise every size in `sizes`, and if several fit, the first of `preferred`
    that does, then the smallest. Raises `FramingError` if none fits."""
    candidates = [forced] if forced is not None else list(sizes)
    fits = {}
    for size in candidates:
        spans = _tile(data, count, size, walker)
        if spans is not None:
            fits[size] = spans
    if not fits:
        how = f"with {forced} extra bytes" if forced is not None else "with any tail length"
        raise FramingError(f"{count} pack record(s) do not fit {len(data) - 2} INFO bytes "
                           f"{how}", data[:64])
    for size in preferred:
        if size in fits:
            return size, fits[size]
    best = min(fits)
    return best, fits[best]


def _records_header(info: bytes, command: int, what: str) -> int:
    """Check INFOFLAG and the count/echo byte; return how many records follow (§6)."""
    if len(info) < 3:
        raise FramingError(f"{what} reply of {len(info)} bytes is too short", info)
    if info[0] > 1:
        raise UnexpectedAnswerError(f"{what} reply: INFOFLAG 0x{info[0]:02X}, expected 00 or 01",
                                    info[:16])
    second = info[1]
    if command == ALL_PACKS:
        if not 1 <= second <= MAX_PACK * 2:
            raise UnexpectedAnswerError(f"{what} reply says {second} packs", info[:16])
        return second
    if second != command:
        raise UnexpectedAnswerError(
            f"{what} reply for pack {second} while pack {command} was asked", info[:16])
    return 1


# --- 0x42 analog values -----------------------------------------------------------------------


@dataclass(frozen=True)
class AnalogPack:
    """One pack record of a 0x42 reply (§8), raw units as sent."""

    cells_mv: tuple[int, ...]
    temps_raw: tuple[int, ...]  #: 0.1 K + offset; 0x8000 = no sensor
    current_raw: int  #: signed, 10 mA, + charging
    voltage_mv: int
    remaining_10mah: int
    p_value: int  #: the "user-defined item count"; unreliable (§8.2)
    tail: bytes  #: every byte after P
    full_10mah: int | None = None
    cycles: int | None = None
    design_10mah: int | None = None
    soc_pct: int | None = None  #: the BMS's own SOC, when the layout carries it
    soh_pct: int | None = None  #: the BMS's own SOH (V3.1 layout)
    cumulative_charge: int | None = None  #: V3.1; holds design capacity on every capture
    cumulative_discharge: int | None = None
    independent_voltage_mv: int | None = None
    independent_current_raw: int | None = None  #: signed, 10 mA
    summary_remaining_10mah: int | None = None
    summary_full_10mah: int | None = None
    extra: bytes = b""  #: undecoded bytes after design capacity (Enersol and unknown layouts)

    @property
    def layout(self) -> str:
        """Name of the tail layout: classic, soc, extended, extended_summary, enersol,
        pylon, or "other"."""
        return ANALOG_LAYOUTS.get(len(self.tail), "other")

    @property
    def offline(self) -> bool:
        """The all-zero record a master sends for a slave it cannot reach (§7, §13.9)."""
        return self.voltage_mv == 0 and not any(self.cells_mv)

    def temperatures_c(self, offset: int = TEMP_OFFSET) -> tuple[float | None, ...]:
        return tuple(temperature_c(t, offset) for t in self.temps_raw)


def _decode_analog_record(rec: bytes) -> AnalogPack:
    cells = rec[0]
    cells_mv = tuple(_u16(rec, 1 + 2 * i) for i in range(cells))
    at = 1 + 2 * cells
    sensors = rec[at]
    temps = tuple(_u16(rec, at + 1 + 2 * i) for i in range(sensors))
    at += 1 + 2 * sensors
    current = _u16(rec, at)
    voltage = _u16(rec, at + 2)
    remaining = _u16(rec, at + 4)
    p_value = rec[at + 6]
    tail = bytes(rec[at + 7:])
    values: dict[str, object] = {}
    if len(tail) >= 2:
        values["full_10mah"] = _u16(tail, 0)
    if len(tail) >= 4:
        values["cycles"] = _u16(tail, 2)
    if len(tail) >= 6:
        values["design_10mah"] = _u16(tail, 4)
    extra = tail[min(6, len(tail) - len(tail) % 2):]
    if len(extra) == 1:  # "+SOC" firmware: the byte equals SOC % (§8.2)
        values["soc_pct"] = extra[0]
        extra = b""
    elif len(extra) in (14, 22):  # V3.1 extended layout (§8.1)
        values.update(
            soc_pct=extra[0], cumulative_charge=_u32(extra, 1),
            cumulative_discharge=_u32(extra, 5), soh_pct=extra[9],
            independent_voltage_mv=_u16(extra, 10), independent_current_raw=_u16(extra, 12),
        )
        if len(extra) == 22:
            values.update(summary_remaining_10mah=_u32(extra, 14),
                          summary_full_10mah=_u32(extra, 18))
        extra = b""
    return AnalogPack(cells_mv, temps, current, voltage, remaining, p_value, tail,
                      extra=bytes(extra), **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AnalogReply:
    """A whole 0x42 reply: INFOFLAG, the records in wire order, the solved tail length."""

    infoflag: int
    packs: tuple[AnalogPack, ...]
    tail_bytes: int  #: bytes after P in every record
    echo: int  #: the count (FF request) or the echoed pack number


def decode_analog(info: bytes, command: int = ALL_PACKS, tail_bytes: int | None = None
                  ) -> AnalogReply:
    """Decode a 0x42 reply's INFO. `command` is what was asked (0xFF or a pack number);
    `tail_bytes` forces the bytes after P instead of solving them (bmspace's
    ``force_pack_offset`` / 2 + 6)."""
    count = _records_header(info, command, "0x42")
    size, spans = split_records(
        info, count, _analog_walker, range(MAX_ANALOG_TAIL + 1), KNOWN_ANALOG_TAILS,
        forced=tail_bytes)
    packs = tuple(_decode_analog_record(info[a:b]) for a, b in spans)
    return AnalogReply(info[0], packs, size, info[1])


# --- 0x44 warnings, protections, status ------------------------------------------------------

#: Bit names by byte, bit 0 first; None = undefined. Alarm flags (field names of `alarm`).
PROTECT1_BITS = (
    "cell_overvoltage_protect", "cell_undervoltage_protect", "pack_overvoltage_protect",
    "pack_undervoltage_protect", "charge_overcurrent_protect", "discharge_overcurrent_protect",
    "short_circuit_protect", "charger_overvoltage_protect",
)
#: bit 7 "fully charged" is a status, not a protection: it goes to STATUS_FLAGS
PROTECT2_BITS = (
    "charge_overtemp_protect", "discharge_overtemp_protect", "charge_undertemp_protect",
    "discharge_undertemp_protect", "mosfet_overtemp_protect", "env_overtemp_protect",
    "env_undertemp_protect", None,
)
FAULT_BITS = (
    "charge_mosfet_fault", "discharge_mosfet_fault", "temp_sensor_fault", "communication_fault",
    "cell_fault", "sampling_fault", "current_limit_fault", "heater_fault",
)
WARN1_BITS = (
    "cell_overvoltage_warn", "cell_undervoltage_warn", "pack_overvoltage_warn",
    "pack_undervoltage_warn", "charge_overcurrent_warn", "discharge_overcurrent_warn",
    None, None,
)
WARN2_BITS = (
    "charge_overtemp_warn", "discharge_overtemp_warn", "charge_undertemp_warn",
    "discharge_undertemp_warn", "env_overtemp_warn", "env_undertemp_warn",
    "mosfet_overtemp_warn", "low_soc_warn",
)
#: V3.1 extra bytes, decoded only when all five are present (§9.9, §16.3)
FAULT8_BITS = (
    "total_voltage_fault", "temp_difference_fault", "current_sense_fault", "breaker_tripped",
    "breaker_fault", "master_slave_offline", "pack_locked", "mcu_overvoltage",
)
FAULT10_BITS = ("supply_12v_fault", None, None, None, None, None, None, None)

#: The warning value bytes (§9.1) become three flags per group: below / above the limit,
#: and any other code (F0 "other fault", 80..EF user-defined).
WARNING_GROUPS = ("cell_voltage", "temperature", "charge_current", "pack_voltage",
                  "discharge_current")
WARNING_FLAGS = tuple(f"{g}_{k}" for g in WARNING_GROUPS
                      for k in ("below_limit", "above_limit", "other_warning"))

#: Every alarm flag, in a stable order (the `alarm` measurement's boolean fields).
ALARM_NAMES: tuple[str, ...] = tuple(
    n for row in (PROTECT1_BITS, PROTECT2_BITS, FAULT_BITS, WARN1_BITS, WARN2_BITS,
                  WARNING_FLAGS, FAULT8_BITS, FAULT10_BITS) for n in row if n
)

#: Instruction / indicator state (§9.4), as the PACE documents name the bits.
INDICATOR_BITS = (
    "current_limit_on", "charge_fet_on", "discharge_fet_on", "pack_supplying",
    "reverse_connection", "ac_in", "shutdown", "heater_on",
)
#: Control / configuration state (§9.5), the documents' polarity.
CONTROL_BITS = (
    "buzzer_enabled", "charge_fet_function", "discharge_fet_function", "current_limit_low_gear",
    "charge_current_limit_disabled", "led_warning_disabled", "system_lock", "test_mode",
)
#: V3.1 indicator state 9 (§9.9)
INDICATOR9_BITS = ("bluetooth_connected", "wifi_connected", "hw_current_limit_off",
                   None, None, None, None, None)

#: Every status flag (the `pace_status` measurement's boolean fields).
STATUS_FLAGS: tuple[str, ...] = tuple(
    n for row in (INDICATOR_BITS, CONTROL_BITS, ("fully_charged",), INDICATOR9_BITS)
    for n in row if n
)

V31_EXTRA = 5  #: fault 8, indicator 9, active balance 1, active balance 2, fault 10


def _bits(value: int, names: Sequence[str | None]) -> dict[str, bool]:
    return {n: bool(value >> i & 1) for i, n in enumerate(names) if n}


@dataclass(frozen=True)
class StatusPack:
    """One pack record of a 0x44 reply (§9)."""

    cell_warnings: tuple[int, ...]
    temp_warnings: tuple[int, ...]
    charge_current_warning: int
    voltage_warning: int
    discharge_current_warning: int
    protect1: int
    protect2: int
    indicator: int
    control: int
    fault: int
    balance1: int  #: cells 1-8, bit 0 = cell 1
    balance2: int  #: cells 9-16
    warn1: int
    warn2: int
    extra: bytes = b""  #: bytes after warn state 2 (0-5 seen; meaning depends on firmware)

    @property
    def cells(self) -> int:
        return len(self.cell_warnings)

    @property
    def sensors(self) -> int:
        return len(self.temp_warnings)

    @property
    def balance_bits(self) -> int:
        """Cell n balances when bit n-1 is set (byte 1 = cells 1-8, bit 0 first; §9.7)."""
        return self.balance1 | self.balance2 << 8

    def balancing(self, cell: int) -> bool:
        return bool(self.balance_bits >> (cell - 1) & 1)

    @property
    def v31(self) -> bool:
        """All five V3.1 extra bytes are present, so their documented meaning applies."""
        return len(self.extra) == V31_EXTRA

    def _warning_flags(self) -> dict[str, bool]:
        groups = {
            "cell_voltage": self.cell_warnings, "temperature": self.temp_warnings,
            "charge_current": (self.charge_current_warning,),
            "pack_voltage": (self.voltage_warning,),
            "discharge_current": (self.discharge_current_warning,),
        }
        out = {}
        for name, values in groups.items():
            out[f"{name}_below_limit"] = any(v == 1 for v in values)
            out[f"{name}_above_limit"] = any(v == 2 for v in values)
            out[f"{name}_other_warning"] = any(v > 2 for v in values)
        return out

    @property
    def alarms(self) -> dict[str, bool]:
        """Every alarm flag this record carries (V3.1 fault bytes only with `v31`)."""
        out = {}
        out.update(_bits(self.protect1, PROTECT1_BITS))
        out.update(_bits(self.protect2, PROTECT2_BITS))
        out.update(_bits(self.fault, FAULT_BITS))
        out.update(_bits(self.warn1, WARN1_BITS))
        out.update(_bits(self.warn2, WARN2_BITS))
        out.update(self._warning_flags())
        if self.v31:
            out.update(_bits(self.extra[0], FAULT8_BITS))
            out.update(_bits(self.extra[4], FAULT10_BITS))
        return out

    @property
    def status(self) -> dict[str, bool]:
        """Indicator, control and "fully charged" flags (+ indicator 9 with `v31`)."""
        out = {}
        out.update(_bits(self.indicator, INDICATOR_BITS))
        out.update(_bits(self.control, CONTROL_BITS))
        out["fully_charged"] = bool(self.protect2 & 0x80)
        if self.v31:
            out.update(_bits(self.extra[1], INDICATOR9_BITS))
        return out

    @property
    def undefined_bits(self) -> tuple[str, ...]:
        """Set bits the documents leave undefined, as ``"warn1 bit 6"``."""
        out = []
        for name, value, names in (("warn1", self.warn1, WARN1_BITS),):
            out.extend(f"{name} bit {i}" for i, n in enumerate(names)
                       if n is None and value >> i & 1)
        return tuple(out)


def _decode_status_record(rec: bytes) -> StatusPack:
    cells = rec[0]
    cw = tuple(rec[1:1 + cells])
    at = 1 + cells
    sensors = rec[at]
    tw = tuple(rec[at + 1:at + 1 + sensors])
    f = rec[at + 1 + sensors:]
    return StatusPack(cw, tw, *f[:12], extra=bytes(f[12:]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class StatusReply:
    infoflag: int
    packs: tuple[StatusPack, ...]
    extra_bytes: int
    echo: int


def decode_status(info: bytes, command: int = ALL_PACKS, extra_bytes: int | None = None
                  ) -> StatusReply:
    """Decode a 0x44 reply's INFO (the same length solver as 0x42; `extra_bytes` forces
    the bytes after warn state 2)."""
    count = _records_header(info, command, "0x44")
    size, spans = split_records(
        info, count, _status_walker, range(MAX_STATUS_EXTRA + 1), KNOWN_STATUS_EXTRAS,
        forced=extra_bytes)
    packs = tuple(_decode_status_record(info[a:b]) for a, b in spans)
    return StatusReply(info[0], packs, size, info[1])


# --- identity, count, capacity, clock ---------------------------------------------------------


def _exact(info: bytes, sizes: Sequence[int], what: str) -> bytes:
    if len(info) not in sizes:
        want = " or ".join(str(s) for s in sizes)
        raise UnexpectedAnswerError(f"{what} reply has {len(info)} INFO bytes, expected {want}",
                                    info[:64])
    return info


def decode_pack_count(info: bytes) -> int:
    """0x90: packs in the group (1 when the connected pack is not the master, §7)."""
    count = _exact(info, (1,), "0x90")[0]
    if count == 0:
        raise UnexpectedAnswerError("0x90 reply says 0 packs", info)
    return count


def text(raw: bytes) -> str:
    """ASCII text with the NUL/space padding trimmed (§13.11); other bytes become ``?``."""
    out = "".join(chr(b) if 32 <= b < 127 else ("\0" if b == 0 else "?") for b in raw)
    return out.replace("\0", " ").strip()


@dataclass(frozen=True)
class Version:
    """0xC1: software version (+ the Bluetooth name on V3.1 firmware)."""

    software: str
    bluetooth_name: str | None = None


def decode_version(info: bytes) -> Version:
    _exact(info, (20, 40), "0xC1")
    return Version(text(info[:20]), text(info[20:]) if len(info) == 40 else None)


@dataclass(frozen=True)
class Product:
    """0xC2: BMS information and pack information (serials, a date, or blanks)."""

    bms: str
    pack: str | None = None


def decode_product(info: bytes) -> Product:
    _exact(info, (20, 40), "0xC2")
    return Product(text(info[:20]), text(info[20:]) if len(info) == 40 else None)


@dataclass(frozen=True)
class Capacity:
    """0xA6: remaining, full, design capacity of the connected pack (10 mAh)."""

    remaining_10mah: int
    full_10mah: int
    design_10mah: int


def decode_capacity(info: bytes) -> Capacity:
    _exact(info, (6,), "0xA6")
    return Capacity(_u16(info, 0), _u16(info, 2), _u16(info, 4))


def decode_datetime(info: bytes) -> str:
    """0xB1: ``YYYY-MM-DD HH:MM:SS`` from six binary bytes (year - 2000 first, §5)."""
    y, mo, d, h, mi, s = _exact(info, (6,), "0xB1")
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 60):
        raise UnexpectedAnswerError(f"0xB1 reply is no date: {info.hex()}", info)
    return f"{2000 + y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"


def encode_text(value: str, size: int = 20) -> bytes:
    """`value` as ASCII padded with spaces to `size` bytes (for the simulator)."""
    return value.encode("ascii", "replace")[:size].ljust(size, b" ")
