"""REC BMS 1Q RS-485 codec: frames, CRC, queries and sets, the parser, answer decoders.

Sans-IO in the h11 sense: bytes in, frames and typed values out; no clock, no logging, no
port. The driver and the simulator both build on it, so they agree on every byte.

Frame (reference §2): ``55 DST SRC LEN payload[LEN] CRC_hi CRC_lo AA``. The CRC is
CRC-16/ARC over DST..payload, sent high byte first. There is **no escaping**: 0x55 and
0xAA occur inside binary payloads and CRCs, so frames are cut by their length byte, never
at the first 0xAA. Requests carry ASCII (``LCD1?``, ``BMIN 3.94``); answers are one ASCII
frame (single values) or two frames back to back (an ASCII count, then binary data with
little-endian float32 values), see §5.

Only `bmslogger.errors` types are raised for bad device bytes: `ChecksumError`,
`FramingError`, `UnexpectedAnswerError` and `DeviceReportedError`. Misuse by the caller
(an address of 40, a name of 7 letters) raises `ValueError`.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from typing import Union

from bmslogger.checksums import crc16_arc
from bmslogger.errors import (
    ChecksumError,
    DeviceReportedError,
    FramingError,
    ProtocolError,
    UnexpectedAnswerError,
)
from bmslogger.sansio import NEED_DATA, NeedData
from bmslogger.sansio import FrameParser as BaseFrameParser

from .instructions import (
    BLOCK,
    FLOAT,
    FLOAT_COUNT,
    FLOATS,
    INSTRUCTIONS,
    INT,
    Instruction,
)

STX = 0x55
ETX = 0xAA
MASTER = 0x00
#: STX, DST, SRC, LEN + CRC (2) + ETX
OVERHEAD = 7
MAX_PAYLOAD = 255
MAX_ADDRESS = 16
#: BMS units a count frame of CELL/PTEM/RINT may announce (one per slave on REC's bus)
MAX_UNITS = 16

_NAME_RE = re.compile(r"^[A-Z0-9*]{4}$")
#: what a single-value number may look like: plain decimals and exponent forms
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def crc(data: bytes) -> int:
    """CRC-16/ARC over DST, SRC, LEN and the payload (§3)."""
    return crc16_arc(data)


@dataclass(frozen=True)
class Frame:
    """One whole frame whose CRC and end marker were right."""

    dst: int
    src: int
    payload: bytes

    @property
    def raw(self) -> bytes:
        """The bytes on the wire."""
        return encode(self.dst, self.payload, self.src)

    @property
    def text(self) -> str:
        """The payload as ASCII text; bytes outside printable ASCII become ``?``."""
        return "".join(chr(b) if 32 <= b < 127 else "?" for b in self.payload).strip()

    def __repr__(self) -> str:
        return f"Frame(dst={self.dst}, src={self.src}, payload={self.payload!r})"


def encode(dst: int, payload: bytes | str, src: int = MASTER) -> bytes:
    """The wire bytes of one frame (CRC appended, high byte first)."""
    if isinstance(payload, str):
        payload = payload.encode("ascii")
    if not (0 <= dst <= 0xFF and 0 <= src <= 0xFF):
        raise ValueError(f"addresses must be bytes, got dst={dst!r} src={src!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a payload holds at most {MAX_PAYLOAD} bytes, got {len(payload)}")
    body = bytes((dst, src, len(payload))) + bytes(payload)
    return bytes((STX,)) + body + crc(body).to_bytes(2, "big") + bytes((ETX,))


# --- requests -------------------------------------------------------------------------------


def normalise_name(name: str) -> str:
    """``"lcd1"`` → ``"LCD1"``; ValueError for anything that cannot be an instruction."""
    upper = name.strip().upper()
    if not _NAME_RE.match(upper):
        raise ValueError(f"an instruction is 4 characters (letters, digits, *), got {name!r}")
    return upper


def check_address(address: int) -> int:
    if not 1 <= address <= MAX_ADDRESS:
        raise ValueError(f"BMS address must be 1..{MAX_ADDRESS}, got {address!r}")
    return address


def query(name: str, address: int = 1) -> bytes:
    """``NAME?`` to `address`, e.g. ``LCD1?`` → ``55 01 00 05 4C 43 44 31 3F 46 D0 AA``."""
    return encode(check_address(address), normalise_name(name) + "?")


def format_set_value(value: float, integer: bool = False) -> str:
    """The value text of a set: plain decimal with a dot, never an exponent (§4), at most
    seven decimals (IOJA needs them). ValueError if it cannot be written that way."""
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"expected a whole number, got {value!r}")
        return str(int(value))
    text = f"{value:.7f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if not math.isclose(float(text), value, rel_tol=0, abs_tol=5e-10):
        raise ValueError(f"{value!r} needs more than 7 decimals")
    return text


def set_request(name: str, value_text: str, address: int = 1) -> bytes:
    """``NAME value`` (one space, ASCII) to `address`, e.g. ``BMIN 3.94``."""
    text = value_text.strip()
    if not text or not _NUMBER_RE.match(text) or "e" in text.lower():
        raise ValueError(f"a set value is a plain decimal number, got {value_text!r}")
    return encode(check_address(address), f"{normalise_name(name)} {text}")


# --- parsing numbers and text ---------------------------------------------------------------


def parse_number(text: str, raw: bytes = b"") -> float:
    """A number in either form the BMS uses: ``4.50000e2``, ``-1.2351e2``, ``103``,
    ``3.94``. UnexpectedAnswerError for anything else (NaN and infinity included)."""
    stripped = text.strip().rstrip("\0").strip()
    if not _NUMBER_RE.match(stripped):
        raise UnexpectedAnswerError(f"expected a number, got {text!r}", raw)
    value = float(stripped)
    if not math.isfinite(value):
        raise UnexpectedAnswerError(f"number out of range: {text!r}", raw)
    return value


def parse_int(text: str, raw: bytes = b"") -> int:
    """A count or code, accepting ``103`` and ``1.03000e2``; must be (nearly) whole."""
    value = parse_number(text, raw)
    rounded = round(value)
    if abs(value - rounded) > 1e-6 * max(1.0, abs(value)):
        raise UnexpectedAnswerError(f"expected a whole number, got {text!r}", raw)
    return int(rounded)


def format_number(value: float) -> str:
    """How the BMS writes a float (§10 simulator): one digit, a dot, five decimals, ``e``
    and the bare exponent: ``4.50000e2``, ``3.58000e0``, ``-1.00000e1``."""
    mantissa, _, exponent = f"{value:.5e}".partition("e")
    return f"{mantissa}e{int(exponent)}"


def is_error_text(text: str) -> bool:
    """An error answer such as ``ERROR1`` / ``ERROR 1`` (exact text unsure, §11.3)."""
    return text.upper().startswith("ERR")


def decode_floats(payload: bytes) -> tuple[float, ...]:
    """Little-endian float32 values (§5 B); FramingError unless the length is a multiple
    of 4."""
    if len(payload) % 4:
        raise FramingError(f"float data of {len(payload)} bytes is not a multiple of 4",
                           payload)
    return struct.unpack(f"<{len(payload) // 4}f", payload)


def encode_floats(values: tuple[float, ...] | list[float]) -> bytes:
    """Little-endian float32 bytes (for the simulator)."""
    return struct.pack(f"<{len(values)}f", *values)


def f32(value: float) -> float:
    """`value` as the nearest float32 reads back: what a driver sees after the wire."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


# --- the parser -----------------------------------------------------------------------------

Event = Union[Frame, ProtocolError, NeedData]


class FrameParser(BaseFrameParser[Frame]):
    """Incremental frame parser: feed any chunks, take frames and errors as events.

    A candidate starts at 0x55; its length byte says where it ends; it counts only if the
    byte there is 0xAA and the CRC matches (§9 rule 2). Otherwise the parser reports it
    and moves on by one byte, so a good frame behind a broken one, or a 0x55 inside data,
    is still found. A candidate that a valid frame starts inside of was cut short (a
    truncated answer followed by the retry's answer): it is reported as a `FramingError`
    at once instead of swallowing the good frame. Stray bytes are reported once per run,
    a corrupt frame once. Errors are returned, not raised, so the caller sees them all.
    The verdicts do not depend on how the input was chunked. The buffer, junk run,
    `events` and `close` come from `bmslogger.sansio.FrameParser`.
    """

    start_byte = STX

    def __init__(self, max_buffer: int = 4096) -> None:
        if max_buffer < 2 * (MAX_PAYLOAD + OVERHEAD):
            raise ValueError("max_buffer must hold two of the longest frames")
        super().__init__(max_buffer)

    def _incomplete(self, left: bytes) -> ProtocolError | None:
        """A partial frame is "incomplete", never decoded; the rest of a frame already
        reported as bad is not reported again."""
        if len(left) <= self._quiet:
            return None
        expected = left[3] + OVERHEAD if len(left) > 3 and left[0] == STX else 0
        of = f" of {expected}" if expected else ""
        return FramingError(f"incomplete frame: {len(left)}{of} bytes", left)

    def _parse_frame(self) -> Event:
        buf = self._buf
        if len(buf) < 4:
            return NEED_DATA
        total = buf[3] + OVERHEAD
        if len(buf) < total:
            # incomplete: a whole valid frame starting inside means this one was cut
            inner = self._inner_frame(1, len(buf))
            if inner is NEED_DATA or inner is None:
                return NEED_DATA
            return self._cut_short(int(inner))  # type: ignore[arg-type]
        if self._valid_at(0):
            frame = Frame(buf[1], buf[2], bytes(buf[4:total - 3]))
            del buf[:total]
            self._quiet = 0
            return frame
        inner = self._inner_frame(1, total)
        if inner is NEED_DATA:
            return NEED_DATA
        if inner is not None:
            return self._cut_short(int(inner))  # type: ignore[arg-type]
        candidate = bytes(buf[:total])
        del buf[:1]
        self._quiet = total - 1
        if candidate[-1] != ETX:
            return FramingError(
                f"no end marker at byte {total - 1} (LEN {candidate[3]}): "
                f"0x{candidate[-1]:02X}", candidate)
        got = int.from_bytes(candidate[-3:-1], "big")
        return ChecksumError(
            f"CRC 0x{got:04X}, expected 0x{crc(candidate[1:-3]):04X}", candidate)

    def _valid_at(self, at: int) -> bool:
        buf = self._buf
        total = buf[at + 3] + OVERHEAD
        end = at + total
        if buf[end - 1] != ETX:
            return False
        return crc(bytes(buf[at + 1:end - 3])) == int.from_bytes(buf[end - 3:end - 1], "big")

    def _inner_frame(self, start: int, stop: int) -> int | NeedData | None:
        """Offset of the first valid frame starting in buf[start:stop]; NEED_DATA if a
        start there cannot be judged yet; None if none can be a frame."""
        buf = self._buf
        at = buf.find(STX, start, stop)
        while at >= 0:
            if len(buf) < at + 4:
                return NEED_DATA
            if len(buf) < at + buf[at + 3] + OVERHEAD:
                return NEED_DATA
            if self._valid_at(at):
                return at
            at = buf.find(STX, at + 1, stop)
        return None

    def _cut_short(self, at: int) -> ProtocolError:
        head = bytes(self._buf[:at])
        del self._buf[:at]
        self._quiet = 0
        return FramingError(f"frame cut short after {at} bytes (incomplete, not decoded)", head)


# --- answers ----------------------------------------------------------------------------------


def check_source(frame: Frame, address: int) -> None:
    """Accept only frames to the master from `address` (§9 rule 4): our own request
    looped back by an adapter, or another BMS's answer, is an UnexpectedAnswerError."""
    if frame.dst != MASTER or frame.src != address:
        raise UnexpectedAnswerError(
            f"frame from {frame.src} to {frame.dst}, expected from {address} to {MASTER} "
            "(echo, or another device)", frame.raw)


@dataclass
class Answer:
    """Collects the answer to one query, frame by frame (`add`), for the conversation
    loop. `done` once complete; then `value` holds the decoded result:

    * text instructions: str; numbers: float (or int for INT instructions);
    * arrays: ``(count, data)`` where data is a tuple of floats (FLOATS, FLOAT_COUNT) or
      the raw bytes (BLOCK).

    A two-frame answer must start with its count frame; a data frame without one, a count
    that does not fit the instruction, or data of the wrong length raise
    `UnexpectedAnswerError` (the conversation counts it and keeps listening). An ``ERROR``
    text answer is kept in `error` and ends the answer: `result()` raises it.
    """

    instruction: Instruction
    address: int = 1
    count: int | None = None
    parts: list[bytes] = field(default_factory=list)
    value: object = None
    error: str | None = None
    done: bool = False

    def add(self, frame: Frame) -> bool:
        check_source(frame, self.address)
        ins = self.instruction
        text = frame.text
        if not ins.is_array:
            if is_error_text(text):
                self.error, self.done = text, True
                return True
            self.value = decode_single(ins, frame)
            self.done = True
            return True
        count = _count(frame)
        if count is not None:
            # count frames have 1-3 bytes, data frames 4 or more: never confused; a new
            # count frame starts the answer again (the answer to a resent request)
            self._start(count, frame)
            return False
        if self.count is None:
            if is_error_text(text):
                self.error, self.done = text, True
                return True
            raise UnexpectedAnswerError(
                f"{ins.name}: data frame without its count frame", frame.raw)
        if not _fits_data(ins, self.count, frame.payload):
            raise UnexpectedAnswerError(
                f"{ins.name}: {len(frame.payload)} data bytes do not fit count {self.count}",
                frame.raw)
        self.parts.append(frame.payload)
        if ins.shape == FLOATS and len(self.parts) < self.count:
            return False
        self.value = self._decode()
        self.done = True
        return True

    def _start(self, count: int, frame: Frame) -> None:
        ins = self.instruction
        if ins.shape == BLOCK and count != ins.block_len:
            raise UnexpectedAnswerError(
                f"{ins.name}: count frame says {count}, expected {ins.block_len}", frame.raw)
        if ins.shape in (FLOATS, FLOAT_COUNT) and not 1 <= count <= MAX_UNITS:
            raise UnexpectedAnswerError(
                f"{ins.name}: count frame says {count}, expected 1..{MAX_UNITS}", frame.raw)
        self.count = count
        self.parts = []

    def _decode(self) -> tuple[int, object]:
        ins = self.instruction
        assert self.count is not None
        if ins.shape == BLOCK:
            return self.count, self.parts[0]
        return self.count, tuple(v for part in self.parts for v in decode_floats(part))

    def result(self) -> object:
        """The decoded value; DeviceReportedError for an error answer."""
        if self.error is not None:
            raise DeviceReportedError(f"{self.instruction.name}: the BMS answered "
                                      f"{self.error!r}", self.error.encode("ascii", "replace"))
        if not self.done:
            raise FramingError(f"{self.instruction.name}: answer incomplete")
        return self.value


def _count(frame: Frame) -> int | None:
    """The number in a count frame (1-3 ASCII digits), or None if it is not one."""
    payload = frame.payload
    if 1 <= len(payload) <= 3 and payload.isdigit():
        return int(payload)
    return None


def _fits_data(ins: Instruction, count: int, payload: bytes) -> bool:
    if ins.shape == BLOCK:
        return len(payload) == count
    if ins.shape == FLOAT_COUNT:
        return len(payload) == 4 * count
    return len(payload) > 0 and len(payload) % 4 == 0  # FLOATS: one frame per unit


def decode_single(ins: Instruction, frame: Frame) -> object:
    """A single-value answer: str, float or int by the instruction's shape."""
    payload = frame.payload
    if any(not 32 <= b < 127 for b in payload.rstrip(b"\0")):
        raise UnexpectedAnswerError(f"{ins.name}: binary bytes in a text answer", frame.raw)
    text = payload.rstrip(b"\0").decode("ascii").strip()
    if ins.shape == FLOAT:
        return parse_number(text, frame.raw)
    if ins.shape == INT:
        return parse_int(text, frame.raw)
    return text


def instruction(name: str) -> Instruction:
    """The table entry for `name` (any case); KeyError naming it otherwise."""
    upper = normalise_name(name)
    try:
        return INSTRUCTIONS[upper]
    except KeyError:
        raise KeyError(f"unknown instruction {upper!r}") from None


# --- typed live data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lcd1:
    """LCD1: the main data block, seven float32 (§6.1)."""

    min_cell_v: float
    max_cell_v: float
    current_a: float
    max_temp_c: float
    pack_v: float
    soc: float  #: 0..1
    soh: float  #: 0..1


def decode_lcd1(data: bytes) -> Lcd1:
    if len(data) != 28:
        raise UnexpectedAnswerError(f"LCD1 carries 28 bytes, got {len(data)}", data)
    return Lcd1(*decode_floats(data))


@dataclass(frozen=True)
class Lcd3:
    """LCD3: where the extremes are, and an Ah counter (big-endian, §5)."""

    min_cell_unit: int
    min_cell: int
    max_cell_unit: int
    max_cell: int
    hottest_unit: int
    hottest_sensor: int
    ah: int


def decode_lcd3(data: bytes) -> Lcd3:
    if len(data) != 8:
        raise UnexpectedAnswerError(f"LCD3 carries 8 bytes, got {len(data)}", data)
    return Lcd3(data[0], data[1], data[2], data[3], data[4], data[5],
                int.from_bytes(data[6:8], "big"))


@dataclass(frozen=True)
class ErrorState:
    """ERRO: is there an error, on which unit, which number (§8), which cell/sensor."""

    present: bool
    unit: int
    code: int
    location: int


def decode_erro(data: bytes) -> ErrorState:
    if len(data) != 4:
        raise UnexpectedAnswerError(f"ERRO carries 4 bytes, got {len(data)}", data)
    return ErrorState(data[0] != 0, data[1], data[2], data[3])


# --- answers, device side (the simulator builds them with these) -------------------------------


def answer_frames(address: int, ins: Instruction, value: object) -> bytes:
    """The BMS's answer to a query of `ins` holding `value` (str / number / floats /
    raw bytes), addresses swapped: DST = master, SRC = the BMS."""
    if ins.shape == FLOAT:
        return encode(MASTER, format_number(float(value)), address)  # type: ignore[arg-type]
    if ins.shape == INT:
        return encode(MASTER, str(int(value)), address)  # type: ignore[call-overload]
    if ins.shape == BLOCK:
        data = bytes(value)  # type: ignore[call-overload]
        return encode(MASTER, str(len(data)), address) + encode(MASTER, data, address)
    if ins.shape == FLOAT_COUNT:
        floats = tuple(value)  # type: ignore[call-overload]
        return (encode(MASTER, str(len(floats)), address)
                + encode(MASTER, encode_floats(floats), address))
    if ins.shape == FLOATS:
        floats = tuple(value)  # type: ignore[call-overload]
        return encode(MASTER, "1", address) + encode(MASTER, encode_floats(floats), address)
    return encode(MASTER, str(value), address)


def text_answer(address: int, text: str) -> bytes:
    """A one-frame ASCII answer (``SET``, ``ERROR1``)."""
    return encode(MASTER, text, address)

