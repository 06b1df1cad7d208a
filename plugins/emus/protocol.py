"""EMUS G1 serial sentences: CRC-8, sentence builder, incremental line parser, decoders.

Sans-IO in the h11 sense: bytes in, sentences and typed values out; no clock, no logging,
no port. The driver and the simulator both build on it, so they cannot drift apart.

A sentence is one ASCII line ``NNN,F1,...,Fn,CC`` + CR LF: a three-character name (two
capitals and a digit), data fields each *followed* by a comma, and a CRC-8 (Dallas/Maxim
1-Wire) of everything from the name up to and including the last comma, as two hex
digits. Facts, and how sure we are of each, are in ``/work/shared/protocols/emus.md``;
section numbers below (§4 ...) refer to it.

Bad device bytes only ever raise or yield `bmslogger.errors` types (`ChecksumError`,
`FramingError`); misuse by the caller (a bad sentence name, a comma inside a field)
raises `ValueError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Optional, Union

from bmslogger.errors import ChecksumError, FramingError, ProtocolError
from bmslogger.sansio import NEED_DATA, NeedData
from bmslogger.sansio import FrameParser as BaseFrameParser

# --- CRC-8/MAXIM-DOW (§4) -------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc8(data: bytes, crc: int = 0) -> int:
    """CRC-8/MAXIM (reflected polynomial 0x8C, init 0, no final XOR): the EMUS sentence
    checksum. ``crc8(b"123456789") == 0xA1``."""
    for byte in data:
        crc = _CRC_TABLE[crc ^ byte]
    return crc


# --- sentence names (§7) --------------------------------------------------------------------

#: One-line answers to ``NNN,?``.
SUMMARY = ("BB1", "BC1", "BT1", "BT3", "BV1", "CV1", "DT1", "ST1", "OT1", "IN1", "CS1",
           "CG1", "VR1", "TD1", "RS2")
#: One line per group of up to 8 cells of one string (§6.3).
GROUPS = ("BV2", "BT2", "BT4", "BB2")
#: An unknown number of lines, one per event or statistic.
LISTS = ("LG1", "SS1")
#: Every sentence a poll may ask for: ``NNN,?`` never changes the unit.
READS = SUMMARY + GROUPS + LISTS
#: Sentences that change the unit (§10), with what their one argument means.
WRITES = {
    "SC1": "state of charge",
    "RC1": "(none): zero the current sensor",
    "PW1": "password, or empty to log out",
    "LG1": "c: clear the event log",
    "SS1": "c: clear the statistics",
    "RS1": "(none): reboot",
    "FD1": "(none): factory defaults",
}
#: Sentences the unit sends by itself in broadcast mode (§6.2; ST1 very probably).
BROADCAST = ("BB1", "BC1", "BT1", "BT3", "BV1", "CV1", "DT1", "OT1", "ST1")
#: The summary sentence whose first field counts the cells a group sentence covers.
GROUP_COUNT_FROM = {"BV2": ("BV1", "BB1", "BT1"), "BB2": ("BB1", "BV1", "BT1"),
                    "BT2": ("BT1", "BV1", "BB1"), "BT4": ("BT3",)}

GROUP_SIZE = 8
MAX_CELLS = 255

_NAME_RE = re.compile(r"^[A-Z]{2}[0-9]$")
_START_RE = re.compile(rb"[A-Z]{2}[0-9],")
_HEX_RE = re.compile(r"^[0-9A-Fa-f]+$")
_DEC_RE = re.compile(r"^[0-9]+$")
_STAT_ID_RE = re.compile(r"^[0-9A-F]{2}$")


# --- building sentences ---------------------------------------------------------------------


def encode_sentence(name: str, fields: Sequence[str] = ()) -> bytes:
    """``NAME,f1,...,fn,CC`` + CR LF, each field followed by a comma, CRC in capitals."""
    if not _NAME_RE.match(name):
        raise ValueError(f"a sentence name is two capitals and a digit, got {name!r}")
    for f in fields:
        if any(c in f for c in ",\r\n") or not all(32 <= ord(c) < 127 for c in f):
            raise ValueError(f"field {f!r} of {name}: printable ASCII without commas only")
    body = (name + "," + "".join(f + "," for f in fields)).encode("ascii")
    return body + f"{crc8(body):02X}".encode("ascii") + b"\r\n"


#: Sent before each request: ends any half line the unit holds (R does it; harmless).
LINE_SYNC = b"\r\n"


def request(name: str, arg: str = "?", sync: bool = True) -> bytes:
    """A read request (``BV1,?,4F`` CR LF), optionally after a CR LF line sync.

    Only sentences in `READS` may be asked, and only with ``?`` (SS1 also with a
    statistic id of two capital hex digits): anything that could change the unit goes
    through `write_sentence`."""
    if name not in READS:
        raise ValueError(f"{name!r} is not a read sentence (reads: {', '.join(READS)})")
    # exactly two capital hex digits: a lone "c" is hex too, and SS1,c clears the statistics
    if arg != "?" and not (name == "SS1" and _STAT_ID_RE.match(arg)):
        raise ValueError(f"{name} is read with '?', not {arg!r}")
    return (LINE_SYNC if sync else b"") + encode_sentence(name, (arg,))


def write_sentence(name: str, args: Sequence[str] = (), sync: bool = True) -> bytes:
    """A sentence that changes the unit (`WRITES`). The driver guards who may send it."""
    if name not in WRITES:
        raise ValueError(f"{name!r} is not a write sentence (writes: {', '.join(WRITES)})")
    return (LINE_SYNC if sync else b"") + encode_sentence(name, tuple(args))


def hexf(value: int, width: int) -> str:
    """Unsigned `value` as `width` capital hex digits (clamped to the width)."""
    value = max(0, min(int(value), (1 << (4 * width)) - 1))
    return f"{value:0{width}X}"


def hex_signed(value: int, width: int) -> str:
    """Signed `value` as two's complement over `width` hex digits (clamped)."""
    bits = 4 * width
    value = max(-(1 << (bits - 1)), min(int(value), (1 << (bits - 1)) - 1))
    return f"{value & ((1 << bits) - 1):0{width}X}"


def soc_field(soc_pct: float) -> str:
    """The SC1 argument: SOC in 0.01 % steps, 4 hex digits like BC1 field 3 (§7.24: the
    encoding is unknown; this follows the unit's own SOC format)."""
    if not 0.0 <= soc_pct <= 100.0:
        raise ValueError(f"SOC must be 0..100 %, got {soc_pct}")
    return hexf(round(soc_pct * 100), 4)


# --- the parser -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sentence:
    """One checksum-valid line: its name and raw data fields (strings, maybe empty)."""

    name: str
    fields: tuple[str, ...]

    @property
    def raw(self) -> bytes:
        """The line on the wire, CR LF included."""
        return encode_sentence(self.name, self.fields)

    def __str__(self) -> str:
        return self.raw.decode("ascii").rstrip()


ParserEvent = Union[Sentence, ProtocolError, NeedData]


def parse_line(line: bytes) -> list[Sentence | ProtocolError]:
    """Events from one line (terminator removed): a sentence, possibly after a report of
    junk in front of it, or one error.

    A sentence may start anywhere in the line: line noise or the unterminated rest of a
    cut-short answer can sit in front of it. The first candidate start (two capitals, a
    digit, a comma) whose CRC matches wins; the checksum is the text after the last comma.
    """
    line = line.strip(b" \t")
    if not line:
        return []
    shaped = False
    for m in _START_RE.finditer(line):
        text = line[m.start():]
        comma = text.rfind(b",")
        tail = text[comma + 1:]
        if len(tail) != 2 or not all(c in b"0123456789ABCDEFabcdef" for c in tail):
            continue
        if not all(32 <= c < 127 for c in text):
            continue
        shaped = True
        if crc8(text[:comma + 1]) != int(tail, 16):
            continue
        parts = text[:comma].decode("ascii").split(",")
        out: list[Sentence | ProtocolError] = []
        if m.start():
            out.append(FramingError(f"skipped {m.start()} bytes before a {parts[0]} sentence",
                                    line[:m.start()]))
        out.append(Sentence(parts[0], tuple(parts[1:])))
        return out
    if shaped:
        return [ChecksumError(f"CRC mismatch in {len(line)}-byte sentence", line[:128])]
    return [FramingError(f"not a sentence: {len(line)} bytes", line[:64])]


class SentenceParser(BaseFrameParser[Sentence]):
    """Incremental sentence parser: feed any chunks, take events one by one.

    Lines end at LF (or CR; empty lines are skipped). `next_event` returns a `Sentence`, a
    `ProtocolError` instance (returned, not raised, so the caller sees every good sentence
    and every error and the parser keeps its place), or `NEED_DATA`. A line longer than
    `max_line` is dropped with one `FramingError`, up to its end. The buffer, `events`
    and `close` come from `bmslogger.sansio.FrameParser`; any byte may start a line, so
    there is no stray-byte run here (`parse_line` reports noise in front of a sentence).

    `skip_first_partial`: the first line is probably cut (the listener joined the line
    mid-sentence, as in broadcast mode); if it does not parse, it is dropped quietly and
    counted in `skipped_partial` instead of being reported.
    """

    def __init__(self, max_line: int = 1024, skip_first_partial: bool = False) -> None:
        if max_line < 16:
            raise ValueError("max_line must hold a sentence (16 bytes or more)")
        super().__init__()
        self.max_line = max_line
        self.skip_first_partial = skip_first_partial
        self.skipped_partial = 0
        self._discarding = False  # inside an over-long line, until its end

    def _reset_state(self) -> None:
        self._discarding = False

    def _incomplete(self, left: bytes) -> ProtocolError | None:
        if left.strip(b" \t") and not self._discarding:
            return FramingError(f"incomplete sentence: {len(left)} bytes without CR LF",
                                left[:64])
        return None

    def _parse_frame(self) -> ParserEvent | None:
        """One line: its events (the first returned, the rest queued), None if it gave
        none, or `NEED_DATA` while no line end has come."""
        buf = self._buf
        ends = [i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0]
        if not ends:
            if len(buf) > self.max_line:
                dropped = bytes(buf[:64])
                size = len(buf)
                buf.clear()
                if not self._discarding:
                    self._discarding = True
                    return FramingError(f"line longer than {self.max_line} bytes "
                                        f"({size} so far): dropped", dropped)
            return NEED_DATA
        end = min(ends)
        line = bytes(buf[:end])
        del buf[:end + 1]
        if self._discarding:
            self._discarding = False
            return None
        if len(line) > self.max_line:
            return FramingError(f"line longer than {self.max_line} bytes: dropped",
                                line[:64])
        events = parse_line(line)
        if not events:
            return None
        if self.skip_first_partial:
            self.skip_first_partial = False
            if not isinstance(events[-1], Sentence):
                self.skipped_partial += 1
                return None
            events = [e for e in events if isinstance(e, Sentence)]
        self._pending.extend(events[1:])
        return events[0]


# --- field decoding (§5) -------------------------------------------------------------------


def _bad(name: str, index: int, text: str, what: str) -> FramingError:
    return FramingError(f"{name} field {index}: expected {what}, got {text[:20]!r}",
                        text[:64].encode("ascii", "replace"))


def parse_hex(text: str, name: str = "", index: int = 0) -> int | None:
    """Unsigned hex of any width; empty = None (no data)."""
    if text == "":
        return None
    if not _HEX_RE.match(text):
        raise _bad(name, index, text, "hex digits")
    return int(text, 16)


def parse_signed(text: str, name: str = "", index: int = 0) -> int | None:
    """Two's complement over the field's own width (4 digits = 16 bit)."""
    raw = parse_hex(text, name, index)
    if raw is None:
        return None
    bits = 4 * len(text)
    return raw - (1 << bits) if raw >> (bits - 1) & 1 else raw


def parse_dec(text: str, name: str = "", index: int = 0) -> int | None:
    """Decimal digits (TD1); empty = None."""
    if text == "":
        return None
    if not _DEC_RE.match(text):
        raise _bad(name, index, text, "decimal digits")
    return int(text)


def cell_voltage(raw: int) -> float:
    """One cell voltage byte: (raw + 200) x 0.01 V."""
    return (raw + 200) / 100


def temperature(raw: int) -> float:
    """One temperature byte: raw - 100 °C."""
    return float(raw - 100)


def balancing_rate(raw: int) -> float:
    """One balancing-rate byte: raw x 100 / 255 %, to 0.01 %."""
    return round(raw * 100 / 255, 2)


def centi(raw: int) -> float:
    return raw / 100


def deci(raw: int) -> float:
    return raw / 10


def _as_int(raw: int) -> int:
    return raw


EPOCH = datetime(2000, 1, 1)


def timestamp(seconds: int) -> str:
    """Seconds since 2000-01-01 00:00:00 (the unit's local time) as ISO text."""
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


Parse = Callable[[str, str, int], Optional[int]]
#: (key or None for a reserved field, parse, scale); None parse = keep the text
FieldDef = tuple[Optional[str], Optional[Parse], Callable[[int], Any]]


def _fields(*defs: tuple[str | None, Parse | None, Callable[[int], Any]]) -> tuple[FieldDef, ...]:
    return tuple(defs)


_U, _S, _D = parse_hex, parse_signed, parse_dec
_RESERVED: FieldDef = (None, None, _as_int)

_TEMP_SUMMARY = _fields(("cells", _U, _as_int), ("min_c", _U, temperature),
                        ("max_c", _U, temperature), ("avg_c", _U, temperature), _RESERVED)

#: Field layouts of the one-line sentences, by position (§7).
LAYOUTS: dict[str, tuple[FieldDef, ...]] = {
    "BB1": _fields(("cells", _U, _as_int), ("min_pct", _U, balancing_rate),
                   ("max_pct", _U, balancing_rate), ("avg_pct", _U, balancing_rate),
                   _RESERVED, ("threshold_v", _U, cell_voltage)),
    "BC1": _fields(("charge_c", _U, _as_int), ("capacity_c", _U, _as_int),
                   ("soc_pct", _U, centi)),
    "BT1": _TEMP_SUMMARY,
    "BT3": _TEMP_SUMMARY,
    "BV1": _fields(("cells", _U, _as_int), ("min_v", _U, cell_voltage),
                   ("max_v", _U, cell_voltage), ("avg_v", _U, cell_voltage),
                   ("total_v", _U, centi), _RESERVED),
    "CV1": _fields(("voltage_v", _U, centi), ("current_a", _S, deci), *([_RESERVED] * 8)),
    "VR1": _fields(("hardware", None, _as_int), ("serial", None, _as_int),
                   ("firmware", None, _as_int)),
    "DT1": _fields(("speed_kmh", _U, deci), ("distance_since_charge_km", _U, centi),
                   ("consumption_wh_per_km", _U, deci), ("distance_left_km", _U, centi),
                   ("last_charge_energy_wh", _U, float), ("last_discharge_energy_wh", _U, float),
                   ("last_trip_consumption_wh_per_km", _U, deci),
                   ("distance_left_last_trip_km", _U, centi),
                   ("avg_discharge_energy_wh", _U, float), ("max_discharge_energy_wh", _U, float),
                   ("trip_consumption_wh_per_km", _U, deci),
                   ("distance_left_avg_km", _U, centi)),
    "ST1": _fields(("stage", _U, _as_int), ("error", _U, _as_int),
                   ("error_param", _U, _as_int), ("stage_duration_s", _U, _as_int),
                   ("status_flags", _U, _as_int), ("protection_flags", _U, _as_int),
                   ("reduction_flags", _U, _as_int), ("pin_flags", _U, _as_int)),
    "OT1": _fields(*((f"outputs_{i}", _U, _as_int) for i in range(1, 5))),
    "IN1": _fields(("inputs_1", _U, _as_int)),
    "CS1": _fields(("chargers", _U, _as_int), ("charger_status", _U, _as_int),
                   ("set_voltage_v", _U, deci), ("set_current_a", _U, deci),
                   ("actual_voltage_v", _U, deci), ("actual_current_a", _U, deci)),
    "CG1": _fields(("current_sensor", _U, _as_int), ("field_2", _U, _as_int),
                   *((f"group{n}_{what}", _U, _as_int)
                     for n in range(1, 33) for what in ("cells", "status"))),
    "TD1": _fields(("year", _D, _as_int), ("month", _D, _as_int), ("day", _D, _as_int),
                   ("hour", _D, _as_int), ("minute", _D, _as_int), ("second", _D, _as_int),
                   ("uptime_s", _U, _as_int)),
    "RS2": _fields(*((f"reset{n}_{what}", _U, _as_int)
                     for n in range(1, 6) for what in ("time", "flags"))),
}


@dataclass(frozen=True)
class Summary:
    """A decoded one-line sentence: values by key (None = empty field, "no data"), and
    the raw text of fields beyond the known layout (newer firmware)."""

    name: str
    values: dict[str, Any]
    extra: tuple[str, ...] = ()

    def get(self, key: str) -> Any:
        return self.values.get(key)


@dataclass(frozen=True)
class Group:
    """One line of a group sentence: string and first cell (0-based, as on the wire) and
    the raw byte of each cell in the group (None when the field is empty)."""

    name: str
    string: int
    first: int
    raw: tuple[int, ...] | None
    size: int = 0
    extra: tuple[str, ...] = field(default=())

    @property
    def key(self) -> tuple[int, int]:
        return (self.string, self.first)


@dataclass(frozen=True)
class LogEvent:
    """One LG1 line: an entry of the unit's event log (§7.21, layout tentative)."""

    sequence: int
    code: int
    data: int | None
    time_s: int | None  #: seconds since 2000-01-01

    @property
    def text(self) -> str:
        return EVENT_NAMES.get(self.code, f"event {self.code}")


@dataclass(frozen=True)
class Statistic:
    """One SS1 line: statistic id, raw value, additional info, time (§7.22)."""

    id: int
    value: int | None
    info: int | None
    time_s: int | None

    @property
    def key(self) -> str:
        return STATISTICS.get(self.id, (f"statistic_{self.id}", _as_int))[0]

    @property
    def scaled(self) -> float | None:
        if self.value is None:
            return None
        return float(STATISTICS.get(self.id, ("", _as_int))[1](self.value))


Decoded = Union[Summary, Group, LogEvent, Statistic]


def decode(sentence: Sentence) -> Decoded:
    """Typed values of a read sentence. `FramingError` for a field that is not what its
    position says; KeyError-free: an unknown name is a `FramingError` too."""
    name = sentence.name
    if name in LAYOUTS:
        return decode_summary(sentence)
    if name in GROUPS:
        return decode_group(sentence)
    if name == "LG1":
        return decode_event(sentence)
    if name == "SS1":
        return decode_statistic(sentence)
    raise FramingError(f"no decoder for {name}", sentence.raw)


def decode_summary(sentence: Sentence) -> Summary:
    layout = LAYOUTS[sentence.name]
    values: dict[str, Any] = {}
    for i, (key, parse, scale) in enumerate(layout):
        text = sentence.fields[i] if i < len(sentence.fields) else ""
        if key is None:
            continue
        if parse is None:
            values[key] = text if text else None
            continue
        raw = parse(text, sentence.name, i + 1)
        values[key] = None if raw is None else scale(raw)
    return Summary(sentence.name, values, tuple(sentence.fields[len(layout):]))


def decode_group(sentence: Sentence) -> Group:
    f = sentence.fields
    name = sentence.name
    if len(f) < 4:
        raise FramingError(f"{name}: a group line has 4 fields, got {len(f)}", sentence.raw)
    string = parse_hex(f[0], name, 1)
    first = parse_hex(f[1], name, 2)
    size = parse_hex(f[2], name, 3)
    if string is None or first is None or size is None:
        raise FramingError(f"{name}: string, first cell and size must not be empty",
                           sentence.raw)
    if not 1 <= size <= GROUP_SIZE or first + size > MAX_CELLS + 1:
        raise FramingError(f"{name}: group of {size} from cell {first} is impossible",
                           sentence.raw)
    data = f[3]
    if data == "":
        return Group(name, string, first, None, size, tuple(f[4:]))
    if len(data) < 2 * size or not _HEX_RE.match(data):
        raise _bad(name, 4, data, f"{size} hex bytes")
    raw = tuple(int(data[2 * i:2 * i + 2], 16) for i in range(size))
    return Group(name, string, first, raw, size, tuple(f[4:]))


def group_value(name: str, raw: int) -> float:
    """The physical value of one byte of a group sentence."""
    if name == "BV2":
        return cell_voltage(raw)
    if name == "BB2":
        return balancing_rate(raw)
    return temperature(raw)


def decode_event(sentence: Sentence) -> LogEvent:
    f = list(sentence.fields) + [""] * 4
    seq = parse_hex(f[0], "LG1", 1)
    code = parse_hex(f[1], "LG1", 2)
    if seq is None or code is None:
        raise FramingError("LG1: sequence and event code must not be empty", sentence.raw)
    return LogEvent(seq, code, parse_hex(f[2], "LG1", 3), parse_hex(f[3], "LG1", 4))


def decode_statistic(sentence: Sentence) -> Statistic:
    f = list(sentence.fields) + [""] * 4
    sid = parse_hex(f[0], "SS1", 1)
    if sid is None:
        raise FramingError("SS1: statistic id must not be empty", sentence.raw)
    return Statistic(sid, parse_hex(f[1], "SS1", 2), parse_hex(f[2], "SS1", 3),
                     parse_hex(f[3], "SS1", 4))


def groups_needed(cells: int) -> int:
    """Lines of a group sentence for one string of `cells` cells: ceil(cells / 8)."""
    return -(-max(0, cells) // GROUP_SIZE)


def encode_groups(name: str, raw: Sequence[int | None], string: int = 0) -> bytes:
    """Every line of a group sentence for one string (simulator side). A None byte makes
    that group's array empty (no data)."""
    out = b""
    for first in range(0, len(raw), GROUP_SIZE):
        chunk = raw[first:first + GROUP_SIZE]
        data = "" if any(v is None for v in chunk) else "".join(
            hexf(v, 2) for v in chunk)  # type: ignore[arg-type]
        out += encode_sentence(name, (hexf(string, 2), hexf(first, 4), hexf(len(chunk), 2),
                                      data))
    return out


def answer_bytes(name: str, cells: int = 0) -> int:
    """Typical answer length in bytes (for deadlines): summary lines by their usual
    widths (§12), group sentences by ceil(cells/8) lines of 36 bytes at most."""
    if name in GROUPS:
        full, rest = divmod(max(0, cells), GROUP_SIZE)
        return full * 36 + (20 + 2 * rest if rest else 0)
    return _TYPICAL.get(name, 64)


_TYPICAL = {"BB1": 26, "BC1": 31, "BT1": 23, "BT3": 23, "BV1": 32, "CV1": 60, "DT1": 70,
            "ST1": 47, "OT1": 20, "IN1": 12, "CS1": 37, "CG1": 203, "VR1": 40, "TD1": 35,
            "RS2": 80, "LG1": 30, "SS1": 30}

# --- enumerations (§8, §9) -----------------------------------------------------------------

STAGES = {0: "disconnected", 1: "pre_heating", 2: "pre_charging", 3: "main_charging",
          4: "balancing", 5: "finished", 6: "error"}

CHARGING_ERRORS = {
    0: "none",
    1: "no_cell_comm_at_start",
    2: "no_cell_comm",
    3: "stage_too_long",
    4: "cell_comm_lost_charging",
    5: "cannot_set_balancing_threshold",
    6: "temperature_too_high",
    7: "cell_comm_lost_preheating",
    8: "cell_count_mismatch",
    9: "cell_overvoltage",
    10: "cell_protection_event",
}

#: ST1 field 5 (§8.3, order tentative): bit -> field name.
STATUS_BITS = ("cell_voltages_valid", "module_temperatures_valid", "balancing_rates_valid",
               "live_cells_valid", "charging_finished", "cell_temperatures_valid")

#: ST1 field 6, 16 bits (§8.4). Bits 7-10 and 12-15 are CAN-derived (medium confidence).
PROTECTION_BITS = ("cell_undervoltage", "cell_overvoltage", "discharge_overcurrent",
                   "charge_overcurrent", "module_overheat", "leakage", "no_cell_comm",
                   "ms_config_error", "ms_internal_can_error", "ms_common_can_error",
                   "charger_connected_flag", "cell_overheat", "no_current_sensor",
                   "pack_undervoltage", "pack_overvoltage", "cell_undertemperature")

#: ST1 field 7 (§8.5); None = unknown bit.
REDUCTION_BITS: tuple[str | None, ...] = (
    "low_cell_voltage_warning", "high_current_warning", "high_module_temperature_warning",
    "ms_config_mismatch_warning", "ms_bus_malfunction_warning",
    "high_cell_temperature_warning", None, None)

#: ST1 field 8: bit n = the pin assigned to function n is active (§8.6).
PIN_FUNCTIONS = ("no_function", "speed_sensor", "fast_charge_switch", "ignition_key",
                 "charger_mains_sense", "heater_enable", "sound_buzzer", "battery_low",
                 "charging_indication", "charger_enable", "soc_output", "battery_contactor",
                 "battery_fan", "current_sensor", "leakage_sensor", "power_reduction",
                 "charging_interlock", "analog_charger_control", "zvu_boost_charge",
                 "zvu_slow_charge", "zvu_buffer_mode", "bms_failure", "equalization_enable",
                 "dcdc_control", "esm_rectifier_current_limit", "contactor_precharge")

CAN_STATUS = {0: "not_configured", 1: "ok", 2: "error", 3: "no_response"}

RESET_SOURCES = ("power_on", "external", "brown_out", "watchdog", "jtag", "stack_overflow",
                 "user")

EVENT_NAMES = {
    0: "none", 1: "bms_started", 2: "lost_cell_comm", 3: "cell_comm_established",
    4: "cell_voltage_critically_low", 5: "cell_voltage_low_recovered",
    6: "cell_voltage_critically_high", 7: "cell_voltage_high_recovered",
    8: "discharge_current_critically_high", 9: "discharge_current_recovered",
    10: "charge_current_critically_high", 11: "charge_current_recovered",
    12: "module_temperature_critically_high", 13: "module_temperature_recovered",
    14: "leakage_detected", 15: "leakage_recovered",
    16: "low_voltage_power_reduction", 17: "low_voltage_power_reduction_recovered",
    18: "high_current_power_reduction", 19: "high_current_power_reduction_recovered",
    20: "high_module_temperature_power_reduction",
    21: "high_module_temperature_power_reduction_recovered",
    22: "charger_connected", 23: "charger_disconnected", 24: "pre_heating_started",
    25: "pre_charging_started", 26: "main_charging_started", 27: "balancing_started",
    28: "charging_finished", 29: "charging_error", 30: "retrying_charging",
    31: "restarting_charging", 42: "cell_temperature_critically_high",
    43: "cell_temperature_recovered", 44: "high_cell_temperature_power_reduction",
}


def _stat_cell_v(raw: int) -> float:
    return cell_voltage(raw)


def _stat_temp(raw: int) -> float:
    return temperature(raw)


#: SS1 statistic id -> (field name, scale) (§9.2; voltage/temperature scaling tentative).
STATISTICS: dict[int, tuple[str, Callable[[int], Any]]] = {
    0: ("total_discharge_ah", _as_int), 1: ("total_charge_ah", _as_int),
    2: ("total_discharge_energy_wh", _as_int), 3: ("total_charge_energy_wh", _as_int),
    4: ("total_discharge_time_s", _as_int), 5: ("total_charge_time_s", _as_int),
    6: ("total_distance_pulses", _as_int), 7: ("master_clear_count", _as_int),
    8: ("max_discharge_current_a", deci), 9: ("max_charge_current_a", deci),
    10: ("min_cell_voltage_v", _stat_cell_v), 11: ("max_cell_voltage_v", _stat_cell_v),
    12: ("max_cell_voltage_difference_v", centi), 13: ("min_pack_voltage_v", centi),
    14: ("max_pack_voltage_v", centi), 15: ("min_module_temperature_c", _stat_temp),
    16: ("max_module_temperature_c", _stat_temp),
    17: ("max_module_temperature_difference_c", float),
    18: ("bms_start_count", _as_int), 19: ("undervoltage_protection_count", _as_int),
    20: ("overvoltage_protection_count", _as_int),
    21: ("discharge_overcurrent_protection_count", _as_int),
    22: ("charge_overcurrent_protection_count", _as_int),
    23: ("module_overheat_protection_count", _as_int),
    24: ("leakage_protection_count", _as_int),
    25: ("no_cell_comm_protection_count", _as_int),
    26: ("low_voltage_power_reduction_count", _as_int),
    27: ("high_current_power_reduction_count", _as_int),
    28: ("high_module_temperature_power_reduction_count", _as_int),
    29: ("charger_connect_count", _as_int), 30: ("charger_disconnect_count", _as_int),
    31: ("pre_heat_stage_count", _as_int), 32: ("pre_charge_stage_count", _as_int),
    33: ("main_charge_stage_count", _as_int), 34: ("balancing_stage_count", _as_int),
    35: ("charging_finished_count", _as_int), 36: ("charging_error_count", _as_int),
    37: ("charging_retry_count", _as_int), 38: ("trips_count", _as_int),
    39: ("charging_restarts_count", _as_int), 45: ("cell_overheat_protection_count", _as_int),
    46: ("high_cell_temperature_power_reduction_count", _as_int),
    47: ("min_cell_temperature_c", _stat_temp), 48: ("max_cell_temperature_c", _stat_temp),
    49: ("max_cell_temperature_difference_c", float),
}


def bits(value: int | None, names: Sequence[str | None]) -> dict[str, bool]:
    """Named flags of a bit field (bit 0 = first name); unnamed positions are skipped."""
    v = value or 0
    return {n: bool(v >> i & 1) for i, n in enumerate(names) if n}
