"""Daly smart BMS "A5" protocol: request builders, an incremental frame parser, decoders.

Sans-IO in the h11 sense: bytes in, frames and typed values out, no clock, no logging,
no port. The driver and the simulator both build on it, so they cannot drift apart.

Every frame is 13 bytes: ``A5``, address, data ID, length (always 8), eight data bytes,
and a checksum that is the low byte of the sum of the first twelve. Multi-byte numbers
are big-endian and unsigned. The facts and their confidence are in
``/work/shared/protocols/daly.md``; section numbers below (§5.1 ...) refer to it.

Only `bmslogger.errors` types are raised for bad device bytes: `ChecksumError`,
`FramingError` and `UnexpectedAnswerError`. Misuse by the caller (a SOC of 150 %, an
address out of range) raises `ValueError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

from bmslogger.errors import ChecksumError, FramingError, ProtocolError, UnexpectedAnswerError
from bmslogger.sansio import NEED_DATA, NeedData
from bmslogger.sansio import FrameParser as BaseFrameParser

START = 0xA5
FRAME_LEN = 13
DATA_LEN = 8

# --- data IDs -----------------------------------------------------------------------------

PACK = 0x90  #: total voltage, current, SOC
CELL_EXTREMES = 0x91  #: highest/lowest cell voltage and which cells
TEMP_EXTREMES = 0x92  #: highest/lowest temperature and which sensors
MOSFET = 0x93  #: charge/discharge state, MOSFETs, heartbeat, remaining capacity
STATUS = 0x94  #: cell and sensor counts, charger/load, DI/DO, cycles
CELL_VOLTAGES = 0x95  #: three cells per frame, frames numbered from 1
TEMPERATURES = 0x96  #: seven sensors per frame, frames numbered from 1
BALANCING = 0x97  #: balancing bitmap, cell 1 = byte 0 bit 0
FAILURES = 0x98  #: alarm bits and fault code

RATED = 0x50  #: rated capacity, nominal cell voltage
BATTERY_INFO = 0x53  #: production date
BATTERY_CODE = 0x57  #: five frames of ASCII
CELL_THRESHOLDS = 0x59  #: cell voltage alarm levels
PACK_THRESHOLDS = 0x5A  #: pack voltage alarm levels
CURRENT_THRESHOLDS = 0x5B  #: current alarm levels (single source)
DELTA_THRESHOLDS = 0x5E  #: cell/temperature difference alarm levels (single source)
BALANCE_THRESHOLDS = 0x5F  #: balancing start voltage and delta (single source)
SOFTWARE_VERSION = 0x62  #: two frames of ASCII
HARDWARE_VERSION = 0x63  #: two frames of ASCII

SET_SOC = 0x21  #: write: SOC (and clock)
DISCHARGE_MOSFET = 0xD9  #: write: discharge MOSFET on/off
CHARGE_MOSFET = 0xDA  #: write: charge MOSFET on/off
RESET = 0x00  #: write: restart the BMS

READ_IDS = (
    PACK, CELL_EXTREMES, TEMP_EXTREMES, MOSFET, STATUS, CELL_VOLTAGES, TEMPERATURES,
    BALANCING, FAILURES, RATED, BATTERY_INFO, BATTERY_CODE, CELL_THRESHOLDS,
    PACK_THRESHOLDS, CURRENT_THRESHOLDS, DELTA_THRESHOLDS, BALANCE_THRESHOLDS,
    SOFTWARE_VERSION, HARDWARE_VERSION,
)
WRITE_IDS = (SET_SOC, DISCHARGE_MOSFET, CHARGE_MOSFET, RESET)

#: Number of frames a multi-frame text read returns.
TEXT_FRAMES = {BATTERY_CODE: 5, SOFTWARE_VERSION: 2, HARDWARE_VERSION: 2}

MAX_CELLS = 48
MAX_SENSORS = 16
CELLS_PER_FRAME = 3
SENSORS_PER_FRAME = 7
MAX_CELL_FRAMES = 16
MAX_TEMP_FRAMES = 3
CURRENT_OFFSET = 30000
TEMP_OFFSET = 40

#: The default host address (Daly PC software, most RS-485 users) and the alternative.
HOST_PC = 0x40
HOST_ALT = 0x80
#: Real replies carry a board number (1..16); anything from 0x20 up is our own request
#: coming back (echo of a sleeping BMS, RS-485 adapter loopback). See §8 quirk 6.
ECHO_ADDRESS_MIN = 0x20


def checksum(data: bytes) -> int:
    """Low 8 bits of the byte sum: the Daly frame checksum (§2.3)."""
    return sum(data) & 0xFF


@dataclass(frozen=True)
class Frame:
    """One whole, checksum-valid 13-byte frame."""

    address: int
    data_id: int
    data: bytes

    @property
    def raw(self) -> bytes:
        """The 13 bytes on the wire."""
        return build_frame(self.address, self.data_id, self.data)

    def __repr__(self) -> str:
        return (
            f"Frame(address=0x{self.address:02X}, id=0x{self.data_id:02X}, "
            f"data={self.data.hex(' ')})"
        )


def build_frame(address: int, data_id: int, data: bytes = bytes(DATA_LEN)) -> bytes:
    """13 wire bytes for an address, data ID and eight data bytes (checksum appended)."""
    if not 0 <= address <= 0xFF or not 0 <= data_id <= 0xFF:
        raise ValueError(f"address and data ID must be bytes, got {address!r}, {data_id!r}")
    if len(data) != DATA_LEN:
        raise ValueError(f"a Daly frame carries exactly 8 data bytes, got {len(data)}")
    head = bytes((START, address, data_id, DATA_LEN)) + bytes(data)
    return head + bytes((checksum(head),))


# --- requests -----------------------------------------------------------------------------


def request_address(host: int, board: int = 1) -> int:
    """Byte 1 of a request: ``0x3F + board`` for the 0x40 scheme (board 1 = 0x40, board 2 =
    0x41 ...). 0x80 is sent as is: whether it can address other boards is unknown (§2.2)."""
    if not 1 <= board <= 16:
        raise ValueError(f"board must be 1..16, got {board}")
    if host == HOST_PC:
        return 0x3F + board
    if not 0 <= host <= 0xFF:
        raise ValueError(f"host address must be a byte, got {host}")
    return host


def read_request(data_id: int, address: int = HOST_PC, filler: int = 0x00) -> bytes:
    """A read request. `filler` fills the eight ignored data bytes: 0x00 per the PDFs, 0xAA
    helps some weak UART receivers resynchronise (§2.4)."""
    if not 0 <= filler <= 0xFF:
        raise ValueError(f"filler must be a byte, got {filler}")
    return build_frame(address, data_id, bytes((filler,)) * DATA_LEN)


def set_soc_request(
    soc_pct: float, address: int = HOST_PC, clock: tuple[int, int, int, int, int, int] | None = None
) -> bytes:
    """0x21: set SOC (0..100 %, 0.1 % steps). `clock` is (year-2000, month, day, hour,
    minute, second); None sends zeros, which units accept (§7)."""
    if not 0.0 <= soc_pct <= 100.0:
        raise ValueError(f"SOC must be 0..100 %, got {soc_pct}")
    stamp = bytes(clock) if clock is not None else bytes(6)
    if len(stamp) != 6:
        raise ValueError("clock is six numbers: year-2000, month, day, hour, minute, second")
    return build_frame(address, SET_SOC, stamp + round(soc_pct * 10).to_bytes(2, "big"))


def mosfet_request(data_id: int, on: bool, address: int = HOST_PC) -> bytes:
    """0xD9 (discharge) or 0xDA (charge) MOSFET switch: data byte 0 = 1 on, 0 off."""
    if data_id not in (DISCHARGE_MOSFET, CHARGE_MOSFET):
        raise ValueError(f"not a MOSFET command: 0x{data_id:02X}")
    return build_frame(address, data_id, bytes((1 if on else 0,)) + bytes(7))


def reset_request(address: int = HOST_PC) -> bytes:
    """0x00: restart the BMS."""
    return build_frame(address, RESET)


# --- the parser ---------------------------------------------------------------------------

Event = Union[Frame, ProtocolError, NeedData]


class FrameParser(BaseFrameParser[Frame]):
    """Incremental A5 frame parser: feed any chunks, take events one by one.

    `next_event` returns a `Frame`, a `ProtocolError` instance (returned, not raised, so
    the caller sees every good frame and every error and the parser keeps its place), or
    `NEED_DATA`. Resynchronisation follows §8 quirk 9: a candidate starts at ``A5`` with
    length byte 8 and a matching checksum; otherwise the parser moves on by one byte, so a
    real frame hidden behind a corrupt one (or an ``A5`` inside data) is still found. A
    corrupt frame is reported once; stray bytes between frames once per run. The buffer
    never holds more than `max_buffer` bytes. The buffer, junk run, `events` and `close`
    come from `bmslogger.sansio.FrameParser`.
    """

    def __init__(self, max_buffer: int = 4096) -> None:
        if max_buffer < 2 * FRAME_LEN:
            raise ValueError(f"max_buffer must hold two frames ({2 * FRAME_LEN} bytes)")
        super().__init__(max_buffer)

    def _parse_frame(self) -> Event | None:
        buf = self._buf
        if len(buf) < FRAME_LEN:
            return NEED_DATA
        if checksum(buf[:12]) == buf[12]:
            frame = Frame(buf[1], buf[2], bytes(buf[4:12]))
            del buf[:FRAME_LEN]
            self._quiet = 0
            return frame
        if self._quiet:
            self._skip(1)
            return None
        return self._bad_frame()

    def _incomplete(self, left: bytes) -> ProtocolError:
        return FramingError(f"incomplete frame: {len(left)} of {FRAME_LEN} bytes", left)

    def _find_start(self, at: int) -> int:
        """First position from `at` that may start a frame: ``A5`` followed (if it has
        arrived) by length byte 8. len(buffer) if there is none."""
        buf = self._buf
        while True:
            at = buf.find(START, at)
            if at < 0:
                return len(buf)
            if at + 3 >= len(buf) or buf[at + 3] == DATA_LEN:
                return at
            at += 1

    def _bad_frame(self) -> Event:
        """A 13-byte candidate with length 8 and a wrong checksum. If a valid frame starts
        inside it, the candidate was cut short (a framing error); if none can, its bytes
        were damaged (a checksum error). Waits for bytes while that is undecided, so the
        verdict does not depend on how the input was chunked."""
        buf = self._buf
        candidate = bytes(buf[:FRAME_LEN])
        j = self._find_start(1)
        while j < FRAME_LEN and j < len(buf):
            if len(buf) < j + FRAME_LEN:
                return NEED_DATA
            if checksum(buf[j:j + 12]) == buf[j + 12]:
                del buf[:j]
                return FramingError(f"frame cut short after {j} bytes", candidate[:j])
            j = self._find_start(j + 1)
        del buf[:1]
        self._quiet = FRAME_LEN - 1
        return ChecksumError(
            f"checksum 0x{candidate[12]:02X}, expected 0x{checksum(candidate[:12]):02X}",
            candidate,
        )


def is_echo(frame: Frame, request: bytes) -> bool:
    """True for our own request coming back (§8 quirk 6): a sleeping BMS echoes it, and
    RS-485 adapters can loop it back. Real replies carry a board number below 0x20."""
    return frame.address >= ECHO_ADDRESS_MIN or frame.raw == bytes(request)


# --- decoded values -----------------------------------------------------------------------


def _expect(frame: Frame, data_id: int) -> bytes:
    if frame.data_id != data_id:
        raise UnexpectedAnswerError(
            f"expected data ID 0x{data_id:02X}, got 0x{frame.data_id:02X}", frame.raw
        )
    return frame.data


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "big")


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "big")


@dataclass(frozen=True)
class Pack:
    """0x90: pack voltage, current, SOC (§5.1)."""

    voltage_dv: int  #: 0.1 V
    acquired_voltage_dv: int  #: 0.1 V, "acquisition" voltage, 0 on every unit seen
    current_raw: int  #: unsigned, 30000 = 0 A, 0.1 A steps
    soc_permille: int  #: 0.1 %

    @property
    def voltage_v(self) -> float:
        return self.voltage_dv / 10

    @property
    def acquired_voltage_v(self) -> float:
        return self.acquired_voltage_dv / 10

    @property
    def current_offset_a(self) -> float:
        """(raw - 30000) * 0.1 A, sign as the BMS sends it."""
        return (self.current_raw - CURRENT_OFFSET) / 10

    def current_a(self, invert: bool = False) -> float:
        """Current with bmslogger's sign: + while charging. Most units send raw above
        30000 while discharging (§5.1); `invert` is for units that do the opposite."""
        if invert:
            return (self.current_raw - CURRENT_OFFSET) / 10
        return (CURRENT_OFFSET - self.current_raw) / 10

    @property
    def soc_pct(self) -> float:
        return self.soc_permille / 10


def decode_pack(frame: Frame) -> Pack:
    d = _expect(frame, PACK)
    return Pack(_u16(d, 0), _u16(d, 2), _u16(d, 4), _u16(d, 6))


@dataclass(frozen=True)
class CellExtremes:
    """0x91: highest and lowest cell (§5.2)."""

    max_mv: int
    max_cell: int
    min_mv: int
    min_cell: int


def decode_cell_extremes(frame: Frame) -> CellExtremes:
    d = _expect(frame, CELL_EXTREMES)
    return CellExtremes(_u16(d, 0), d[2], _u16(d, 3), d[5])


@dataclass(frozen=True)
class TempExtremes:
    """0x92: highest and lowest temperature, °C (§5.3)."""

    max_c: int
    max_sensor: int
    min_c: int
    min_sensor: int


def decode_temp_extremes(frame: Frame) -> TempExtremes:
    d = _expect(frame, TEMP_EXTREMES)
    return TempExtremes(d[0] - TEMP_OFFSET, d[1], d[2] - TEMP_OFFSET, d[3])


STATE_NAMES = {0: "idle", 1: "charging", 2: "discharging"}


@dataclass(frozen=True)
class MosfetStatus:
    """0x93: state, MOSFETs, heartbeat, remaining capacity (§5.4)."""

    state: int
    charge_mosfet: bool
    discharge_mosfet: bool
    heartbeat: int
    remaining_mah: int

    @property
    def state_name(self) -> str:
        """``idle``, ``charging``, ``discharging`` or ``unknown`` for other values."""
        return STATE_NAMES.get(self.state, "unknown")


def decode_mosfet(frame: Frame) -> MosfetStatus:
    d = _expect(frame, MOSFET)
    return MosfetStatus(d[0], d[1] != 0, d[2] != 0, d[3], _u32(d, 4))


@dataclass(frozen=True)
class Status:
    """0x94: counts, charger/load, DI/DO bits, cycles (§5.5). Cycles are read from bytes
    5-6 as in the V1.0 PDF and most captures (§13 item 2)."""

    cells: int
    sensors: int
    charger_connected: bool
    load_connected: bool
    dio: int  #: bit0..3 = DI1..DI4, bit4..7 = DO1..DO4
    cycles: int

    @property
    def di(self) -> tuple[bool, bool, bool, bool]:
        return tuple(bool(self.dio >> i & 1) for i in range(4))  # type: ignore[return-value]

    @property
    def do(self) -> tuple[bool, bool, bool, bool]:
        return tuple(bool(self.dio >> i & 1) for i in range(4, 8))  # type: ignore[return-value]


def decode_status(frame: Frame) -> Status:
    d = _expect(frame, STATUS)
    return Status(d[0], d[1], d[2] != 0, d[3] != 0, d[4], _u16(d, 5))


def _frame_number(frame: Frame, most: int) -> int:
    number = frame.data[0]
    if not 1 <= number <= most:
        raise UnexpectedAnswerError(
            f"0x{frame.data_id:02X} frame number {number} outside 1..{most}", frame.raw
        )
    return number


@dataclass(frozen=True)
class CellFrame:
    """One 0x95 frame: its number (from 1) and three cell voltages in mV (§5.6)."""

    number: int
    millivolts: tuple[int, int, int]


def decode_cell_frame(frame: Frame) -> CellFrame:
    d = _expect(frame, CELL_VOLTAGES)
    number = _frame_number(frame, MAX_CELL_FRAMES)
    return CellFrame(number, (_u16(d, 1), _u16(d, 3), _u16(d, 5)))


def cell_frames_needed(cells: int) -> int:
    """Frames that carry `cells` voltages: ceil(cells / 3)."""
    return -(-cells // CELLS_PER_FRAME)


def assemble_cells(frames: Mapping[int, CellFrame], cells: int) -> tuple[int, ...]:
    """Cell voltages (mV) 1..cells from frames keyed by number. Slots past `cells` are
    ignored, since some units fill them (§5.6). KeyError if a needed frame is missing."""
    out: list[int] = []
    for n in range(1, cell_frames_needed(cells) + 1):
        out.extend(frames[n].millivolts)
    return tuple(out[:cells])


@dataclass(frozen=True)
class TempFrame:
    """One 0x96 frame: its number (from 1) and seven temperatures in °C (§5.7)."""

    number: int
    celsius: tuple[int, ...]


def decode_temp_frame(frame: Frame) -> TempFrame:
    d = _expect(frame, TEMPERATURES)
    number = _frame_number(frame, MAX_TEMP_FRAMES)
    return TempFrame(number, tuple(b - TEMP_OFFSET for b in d[1:8]))


def temp_frames_needed(sensors: int) -> int:
    """Frames that carry `sensors` temperatures: ceil(sensors / 7)."""
    return -(-sensors // SENSORS_PER_FRAME)


def assemble_temps(frames: Mapping[int, TempFrame], sensors: int) -> tuple[int, ...]:
    """Temperatures (°C) of sensors 1..sensors; KeyError if a needed frame is missing."""
    out: list[int] = []
    for n in range(1, temp_frames_needed(sensors) + 1):
        out.extend(frames[n].celsius)
    return tuple(out[:sensors])


@dataclass(frozen=True)
class Balancing:
    """0x97: which cells balance. Cell 1 = byte 0 bit 0 (LSB first, §5.8)."""

    bits: int  #: 48-bit little-endian bitmap of data bytes 0..5

    def cell(self, number: int) -> bool:
        return bool(self.bits >> (number - 1) & 1)

    def cells(self, count: int) -> tuple[bool, ...]:
        return tuple(self.cell(n) for n in range(1, count + 1))


def decode_balancing(frame: Frame) -> Balancing:
    d = _expect(frame, BALANCING)
    return Balancing(int.from_bytes(d[0:6], "little"))


#: 0x98 flags by (byte, bit); None = reserved. Field names of the ``alarm`` measurement.
ALARM_BITS: tuple[tuple[str | None, ...], ...] = (
    ("cell_volt_high_l1", "cell_volt_high_l2", "cell_volt_low_l1", "cell_volt_low_l2",
     "pack_volt_high_l1", "pack_volt_high_l2", "pack_volt_low_l1", "pack_volt_low_l2"),
    ("charge_temp_high_l1", "charge_temp_high_l2", "charge_temp_low_l1", "charge_temp_low_l2",
     "discharge_temp_high_l1", "discharge_temp_high_l2", "discharge_temp_low_l1",
     "discharge_temp_low_l2"),
    ("charge_overcurrent_l1", "charge_overcurrent_l2", "discharge_overcurrent_l1",
     "discharge_overcurrent_l2", "soc_high_l1", "soc_high_l2", "soc_low_l1", "soc_low_l2"),
    ("cell_volt_diff_l1", "cell_volt_diff_l2", "temp_diff_l1", "temp_diff_l2",
     None, None, None, None),
    ("charge_mos_overtemp", "discharge_mos_overtemp", "charge_mos_sensor_fault",
     "discharge_mos_sensor_fault", "charge_mos_stuck", "discharge_mos_stuck",
     "charge_mos_open", "discharge_mos_open"),
    ("afe_fault", "cell_voltage_lost", "temp_sensor_fault", "eeprom_fault", "rtc_fault",
     "precharge_fault", "vehicle_comm_fault", "internal_comm_fault"),
    ("current_module_fault", "pack_voltage_module_fault", "short_circuit_fault",
     "low_voltage_no_charge", None, None, None, None),
)

#: Every named flag, in wire order.
ALARM_NAMES: tuple[str, ...] = tuple(n for row in ALARM_BITS for n in row if n)


@dataclass(frozen=True)
class Failures:
    """0x98: 56 flag bits and the fault code (§5.9)."""

    bits: int  #: data bytes 0..6, byte 0 in the low 8 bits
    fault_code: int

    def flag(self, name: str) -> bool:
        for byte, row in enumerate(ALARM_BITS):
            if name in row:
                return bool(self.bits >> (8 * byte + row.index(name)) & 1)
        raise KeyError(name)

    @property
    def flags(self) -> dict[str, bool]:
        """Every named flag, set or not."""
        return {name: self.flag(name) for name in ALARM_NAMES}

    @property
    def active(self) -> tuple[str, ...]:
        """Named flags that are set."""
        return tuple(name for name in ALARM_NAMES if self.flag(name))

    @property
    def unknown(self) -> tuple[str, ...]:
        """Set bits the documents call reserved, as ``"byte 6 bit 4"`` (seen in the wild)."""
        return tuple(
            f"byte {byte} bit {bit}"
            for byte, row in enumerate(ALARM_BITS)
            for bit, name in enumerate(row)
            if name is None and self.bits >> (8 * byte + bit) & 1
        )


def decode_failures(frame: Frame) -> Failures:
    d = _expect(frame, FAILURES)
    return Failures(int.from_bytes(d[0:7], "little"), d[7])


# --- configuration and identity (§6) ------------------------------------------------------


@dataclass(frozen=True)
class Rated:
    """0x50: rated capacity (mAh) and nominal cell voltage (mV, bytes 4-7 as u32)."""

    capacity_mah: int
    nominal_cell_mv: int


def decode_rated(frame: Frame) -> Rated:
    d = _expect(frame, RATED)
    return Rated(_u32(d, 0), _u32(d, 4))


@dataclass(frozen=True)
class BatteryInfo:
    """0x53: production date (bytes 2-4); bytes 0-1 are of unknown meaning, kept raw."""

    head: int
    year: int
    month: int
    day: int

    @property
    def production_date(self) -> str:
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"


def decode_battery_info(frame: Frame) -> BatteryInfo:
    d = _expect(frame, BATTERY_INFO)
    return BatteryInfo(_u16(d, 0), 2000 + d[2], d[3], d[4])


@dataclass(frozen=True)
class Thresholds:
    """0x59 (mV) or 0x5A (0.1 V): high L1, high L2, low L1, low L2, in volts."""

    high_l1_v: float
    high_l2_v: float
    low_l1_v: float
    low_l2_v: float


def decode_cell_thresholds(frame: Frame) -> Thresholds:
    d = _expect(frame, CELL_THRESHOLDS)
    return Thresholds(*(_u16(d, i) / 1000 for i in (0, 2, 4, 6)))


def decode_pack_thresholds(frame: Frame) -> Thresholds:
    d = _expect(frame, PACK_THRESHOLDS)
    return Thresholds(*(_u16(d, i) / 10 for i in (0, 2, 4, 6)))


@dataclass(frozen=True)
class CurrentThresholds:
    """0x5B (single source): charge L1/L2, discharge L1/L2, amps as sent (offset removed)."""

    charge_l1_a: float
    charge_l2_a: float
    discharge_l1_a: float
    discharge_l2_a: float


def decode_current_thresholds(frame: Frame) -> CurrentThresholds:
    d = _expect(frame, CURRENT_THRESHOLDS)
    return CurrentThresholds(*((_u16(d, i) - CURRENT_OFFSET) / 10 for i in (0, 2, 4, 6)))


@dataclass(frozen=True)
class DeltaThresholds:
    """0x5E (single source): cell-difference L1/L2 (mV) and temperature-difference L1/L2."""

    cell_delta_l1_mv: int
    cell_delta_l2_mv: int
    temp_delta_l1_c: int
    temp_delta_l2_c: int


def decode_delta_thresholds(frame: Frame) -> DeltaThresholds:
    d = _expect(frame, DELTA_THRESHOLDS)
    return DeltaThresholds(_u16(d, 0), _u16(d, 2), d[4], d[5])


@dataclass(frozen=True)
class BalanceThresholds:
    """0x5F (single source): balancing start voltage and allowed delta, mV."""

    start_mv: int
    delta_mv: int


def decode_balance_thresholds(frame: Frame) -> BalanceThresholds:
    d = _expect(frame, BALANCE_THRESHOLDS)
    return BalanceThresholds(_u16(d, 0), _u16(d, 2))


def decode_text_frame(frame: Frame, data_id: int) -> tuple[int, bytes]:
    """One frame of a text read (0x57, 0x62, 0x63): (frame number, seven bytes)."""
    _expect(frame, data_id)
    return _frame_number(frame, TEXT_FRAMES[data_id]), frame.data[1:8]


def assemble_text(parts: Mapping[int, bytes], data_id: int) -> str:
    """The text from every frame of a text read, NULs and edge spaces stripped; bytes that
    are not printable ASCII become ``?``. KeyError if a frame is missing."""
    raw = b"".join(parts[n] for n in range(1, TEXT_FRAMES[data_id] + 1))
    text = "".join(chr(b) if 32 <= b < 127 else ("\0" if b == 0 else "?") for b in raw)
    return text.replace("\0", " ").strip()


def encode_text(text: str, data_id: int, address: int) -> bytes:
    """Frames of a text reply (for the simulator): ASCII padded with NULs."""
    count = TEXT_FRAMES[data_id]
    raw = text.encode("ascii", "replace")[: 7 * count].ljust(7 * count, b"\0")
    return b"".join(
        build_frame(address, data_id, bytes((n + 1,)) + raw[7 * n:7 * n + 7]) for n in range(count)
    )
