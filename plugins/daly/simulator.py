"""A Daly smart BMS on the other end of the line: state, drift, quirks and writes.

Built on the same codec as the driver (`protocol`), so both sides agree on every byte.
The pack charges and discharges slowly (a sine of current), its SOC and remaining
capacity follow the current, cells sit near 3.3 V with a small spread and sag or rise
with the current, temperatures follow the load. Everything the BMS would report lives in
`state` (a `DalyState`), so a test can compare a driver's output with exactly what the
simulator holds; with ``drift=false`` it stays put between polls (only the 0x93
heartbeat moves, as on real units).

Quirks of real units (reference §8 and §11): stale reserved bytes (``reserved=stale``),
frame numbers from 1, ``frames=needed|all``, non-zero unused cell slots
(``extra_cell_slots``), either current sign (``sign``), sleep (``sleep=silent`` says
nothing, ``sleep=echo`` sends the request back after 1-5 ms), silence for a bad checksum,
an unknown data ID or an address it does not listen to. Writes are applied and recorded
in `writes_received`, so tests can assert a driver sent none.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from bmslogger.options import Option
from bmslogger.simulator import Simulator, SineLoad, Transmission

from . import PORT_DEFAULTS
from . import protocol as p

OPTIONS: tuple[Option, ...] = (
    Option("cells", "int", 16, "cells in series", min=1, max=48),
    Option("sensors", "int", 2, "temperature sensors", min=1, max=16),
    Option("board", "int", 1, "board number; the BMS answers with it", min=1, max=16),
    Option("hosts", "int_list", (), "request addresses it listens to; empty = 0x3F+board "
           "and 0x80"),
    Option("frames", "choice", "needed", "cell/temperature frames sent: only the needed "
           "ones, or all (16 cell frames, 3 temperature frames)", choices=("needed", "all")),
    Option("reserved", "choice", "stale", "reserved bytes: zero, or stale buffer content as "
           "most units send", choices=("zero", "stale")),
    Option("filler", "int", -1, "the session's filler byte for reserved bytes; -1 = from the "
           "seed", min=-1, max=255),
    Option("extra_cell_slots", "bool", False, "non-zero voltages in the unused slots of the "
           "last cell frame"),
    Option("sign", "choice", "normal", "current sign: normal = raw above 30000 while "
           "discharging (most units), inverted = the opposite", choices=("normal", "inverted")),
    Option("sleep", "choice", "none", "asleep from the start: silent, or echoing requests",
           choices=("none", "silent", "echo")),
    Option("soc", "float", 60.0, "initial state of charge, %", min=0.0, max=100.0),
    Option("capacity", "float", 100.0, "capacity, Ah", min=1.0, max=4000.0),
    *SineLoad.options(current=10.0, current_max=500.0),
    Option("cycles", "int", 17, "charge cycles reported", min=0, max=65535),
    Option("alarm_bits", "int", 0, "0x98 bytes 0-6 as one number, byte 0 lowest", min=0,
           max=(1 << 56) - 1),
    Option("fault_code", "int", 0, "0x98 byte 7", min=0, max=255),
    Option("refuse_mos_on_alarm", "bool", False, "acknowledge MOSFET switches but ignore "
           "them while an alarm is active, like units in protection"),
)


@dataclass
class DalyState:
    """What the simulated BMS holds right now; every field maps to wire bytes."""

    board: int
    cells_mv: list[int]
    temps_c: list[int]
    current_da: int = 0  #: 0.1 A, + while charging (the sign option decides the wire)
    inverted: bool = False
    acquired_dv: int = 0
    capacity_mah: int = 100_000
    remaining_mah: int = 60_000
    cycles: int = 17
    charge_mosfet: bool = True
    discharge_mosfet: bool = True
    heartbeat: int = 0x5D
    dio: int = 0x02  #: DI2 is commonly set on idle units
    charger_connected: bool = False
    load_connected: bool = False
    balancing_bits: int = 0
    alarm_bits: int = 0
    fault_code: int = 0
    nominal_cell_mv: int = 3200
    production: tuple[int, int, int] = (2023, 5, 17)
    info_head: int = 0x0100
    battery_code: str = "SIM-DALY-16S-100AH"
    software_version: str = "20210222-1.01T"
    hardware_version: str = "DL-BMS-R32-01E"
    cell_thresholds_mv: tuple[int, int, int, int] = (3650, 3750, 2800, 2500)
    pack_thresholds_dv: tuple[int, int, int, int] = (584, 600, 448, 400)
    current_thresholds_da: tuple[int, int, int, int] = (1000, 1200, 1500, 2000)
    delta_thresholds: tuple[int, int, int, int] = (300, 500, 8, 15)
    balance_thresholds_mv: tuple[int, int] = (3400, 30)
    clock: bytes = bytes(6)

    @property
    def cells(self) -> int:
        return len(self.cells_mv)

    @property
    def sensors(self) -> int:
        return len(self.temps_c)

    @property
    def voltage_dv(self) -> int:
        return round(sum(self.cells_mv) / 100)

    @property
    def current_raw(self) -> int:
        """The 0x90 current word for this unit's sign convention."""
        delta = -self.current_da if not self.inverted else self.current_da
        return max(0, min(0xFFFF, p.CURRENT_OFFSET + delta))

    @property
    def soc_permille(self) -> int:
        return round(1000 * self.remaining_mah / self.capacity_mah)

    @property
    def state(self) -> int:
        """0 idle, 1 charging, 2 discharging (below 1 A counts as idle)."""
        if self.current_da >= 10:
            return 1
        if self.current_da <= -10:
            return 2
        return 0

    def cell_extremes(self) -> tuple[int, int, int, int]:
        """(max mV, max cell, min mV, min cell), cells numbered from 1, first wins."""
        hi = max(range(self.cells), key=lambda i: self.cells_mv[i])
        lo = min(range(self.cells), key=lambda i: self.cells_mv[i])
        return self.cells_mv[hi], hi + 1, self.cells_mv[lo], lo + 1

    def temp_extremes(self) -> tuple[int, int, int, int]:
        hi = max(range(self.sensors), key=lambda i: self.temps_c[i])
        lo = min(range(self.sensors), key=lambda i: self.temps_c[i])
        return self.temps_c[hi], hi + 1, self.temps_c[lo], lo + 1


@dataclass
class _Session:
    """Per-session buffer leftovers that stale reserved bytes copy."""

    filler: int
    last_91_tail: bytes = field(default_factory=lambda: bytes(4))


class DalySimulator(Simulator):
    """A Daly smart BMS. `state` is public and may be changed by tests at any time.
    `ignored` counts frames refused in silence: bad checksum, foreign address (or asleep),
    unknown ID."""

    OPTIONS = OPTIONS
    PORT_DEFAULTS = PORT_DEFAULTS

    def setup(self) -> None:
        options = self.options
        rnd = self.random
        cells = int(options.get("cells", 16))
        sensors = int(options.get("sensors", 2))
        board = int(options.get("board", 1))
        hosts = tuple(options.get("hosts", ()))
        self.hosts: frozenset[int] = frozenset(hosts or (0x3F + board, 0x80))
        self.frames_mode: str = options.get("frames", "needed")
        self.reserved_mode: str = options.get("reserved", "stale")
        self.extra_cell_slots: bool = bool(options.get("extra_cell_slots", False))
        self.sleep_mode: str = options.get("sleep", "none")
        self.drift: bool = bool(options.get("drift", True))
        self.refuse_mos_on_alarm = bool(options.get("refuse_mos_on_alarm", False))
        filler = int(options.get("filler", -1))
        self.session = _Session(filler if filler >= 0 else rnd.randrange(1, 256))
        capacity = round(float(options.get("capacity", 100.0)) * 1000)
        self._cell_offsets = [rnd.randint(-8, 8) for _ in range(cells)]
        self._temp_offsets = [rnd.randint(-2, 2) for _ in range(sensors)]
        self.state = DalyState(
            board=board,
            cells_mv=[0] * cells,
            temps_c=[0] * sensors,
            inverted=options.get("sign", "normal") == "inverted",
            capacity_mah=capacity,
            remaining_mah=round(capacity * float(options.get("soc", 60.0)) / 100),
            cycles=int(options.get("cycles", 17)),
            heartbeat=rnd.randrange(256),
            alarm_bits=int(options.get("alarm_bits", 0)),
            fault_code=int(options.get("fault_code", 0)),
            battery_code=f"SIM-DALY-{cells}S-{capacity // 1000}AH",
            pack_thresholds_dv=(
                round(cells * 36.5), round(cells * 37.5), round(cells * 28), round(cells * 25)
            ),
        )
        self._parser = p.FrameParser()
        #: current in 0.1 A, like `DalyState.current_da`
        self.load = SineLoad(self.clock, round(float(options.get("current", 10.0)) * 10),
                             float(options.get("period", 600.0)))
        self._shape(0.0)
        #: every write command received: (data ID, eight data bytes)
        self.writes_received: list[tuple[int, bytes]] = []
        #: requests it listened to (awake, its address), by data ID
        self.requests_received: Counter[int] = Counter()
        #: the data IDs of the last requests it listened to, in order
        self.request_log: deque[int] = deque(maxlen=1000)

    # --- values that drift ------------------------------------------------------------

    def _advance(self) -> None:
        step = self.load.step(self.drift)
        if step is None:
            return
        current, dt = step
        s = self.state
        s.current_da = round(current)
        s.remaining_mah = max(0, min(s.capacity_mah, round(
            s.remaining_mah + s.current_da / 10 * dt / 3.6
        )))
        self._shape(dt)

    def _shape(self, dt: float) -> None:
        """Cells and temperatures from SOC and current; balancing while charging."""
        s = self.state
        soc = s.remaining_mah / s.capacity_mah
        base = 3200 + 200 * soc + s.current_da / 10 * 0.5
        jitter = (lambda: self.random.randint(-1, 1)) if dt > 0 else (lambda: 0)
        s.cells_mv = [round(base) + off + jitter() for off in self._cell_offsets]
        s.temps_c = [round(25 + abs(s.current_da) / 200) + off for off in self._temp_offsets]
        s.charger_connected = s.state == 1
        s.load_connected = s.state == 2
        low = min(s.cells_mv)
        s.balancing_bits = 0
        if s.state == 1:
            for i, mv in enumerate(s.cells_mv):
                if mv - low > 10:
                    s.balancing_bits |= 1 << i

    # --- the line -----------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Transmission]:
        return self.answer_each(self._parser.events(data), self._request)

    def _request(self, frame: p.Frame) -> Transmission | None:
        if frame.address not in self.hosts:
            self.ignored["address"] += 1
            return None
        if self.sleep_mode == "silent":
            self.ignored["asleep"] += 1
            return None
        if self.sleep_mode == "echo":
            return Transmission(frame.raw, delay_s=self.random.uniform(0.001, 0.005))
        self.requests_received[frame.data_id] += 1
        self.request_log.append(frame.data_id)
        self._advance()
        if frame.data_id in p.WRITE_IDS:
            answer = self._apply_write(frame)
        else:
            if frame.data_id == p.MOSFET:
                self.state.heartbeat = (self.state.heartbeat + self.random.randrange(5, 40)) % 256
            answer = self.answer(frame.data_id)
        if answer is None:
            self.ignored["unknown_id"] += 1
            return None
        latency = self.port_settings.turnaround_s * self.random.uniform(0.625, 1.0)
        return Transmission(answer, delay_s=latency)

    # --- answers (pure: state in, bytes out) --------------------------------------------

    def _frame(self, data_id: int, data: bytes) -> bytes:
        return p.build_frame(self.state.board, data_id, data)

    def _reserved(self, n: int) -> bytes:
        if self.reserved_mode == "stale":
            return bytes((self.session.filler,)) * n
        return bytes(n)

    def answer(self, data_id: int) -> bytes | None:
        """The reply bytes to a read of `data_id` from the current state, or None if this
        BMS does not know the ID."""
        s = self.state
        stale = self.reserved_mode == "stale"
        u16 = lambda v: int(v).to_bytes(2, "big")  # noqa: E731
        u32 = lambda v: int(v).to_bytes(4, "big")  # noqa: E731
        if data_id == p.PACK:
            data = u16(s.voltage_dv) + u16(s.acquired_dv) + u16(s.current_raw) + u16(s.soc_permille)
        elif data_id == p.CELL_EXTREMES:
            hi, hi_n, lo, lo_n = s.cell_extremes()
            tail = u16(s.soc_permille) if stale else bytes(2)
            data = u16(hi) + bytes((hi_n,)) + u16(lo) + bytes((lo_n,)) + tail
            self.session.last_91_tail = data[4:8]
        elif data_id == p.TEMP_EXTREMES:
            hi, hi_n, lo, lo_n = s.temp_extremes()
            tail = self.session.last_91_tail if stale else bytes(4)
            data = bytes((hi + p.TEMP_OFFSET, hi_n, lo + p.TEMP_OFFSET, lo_n)) + tail
        elif data_id == p.MOSFET:
            data = bytes((s.state, int(s.charge_mosfet), int(s.discharge_mosfet), s.heartbeat))
            data += u32(s.remaining_mah)
        elif data_id == p.STATUS:
            data = bytes((s.cells, s.sensors, int(s.charger_connected), int(s.load_connected),
                          s.dio)) + u16(s.cycles) + self._reserved(1)
        elif data_id == p.CELL_VOLTAGES:
            return self._cell_frames()
        elif data_id == p.TEMPERATURES:
            return self._temp_frames()
        elif data_id == p.BALANCING:
            data = s.balancing_bits.to_bytes(6, "little") + bytes(2)
        elif data_id == p.FAILURES:
            data = s.alarm_bits.to_bytes(7, "little") + bytes((s.fault_code,))
        elif data_id == p.RATED:
            data = u32(s.capacity_mah) + u32(s.nominal_cell_mv)
        elif data_id == p.BATTERY_INFO:
            year, month, day = s.production
            data = u16(s.info_head) + bytes((year - 2000, month, day)) + bytes(3)
        elif data_id in p.TEXT_FRAMES:
            text = {p.BATTERY_CODE: s.battery_code, p.SOFTWARE_VERSION: s.software_version,
                    p.HARDWARE_VERSION: s.hardware_version}[data_id]
            return p.encode_text(text, data_id, s.board)
        elif data_id == p.CELL_THRESHOLDS:
            data = b"".join(u16(v) for v in s.cell_thresholds_mv)
        elif data_id == p.PACK_THRESHOLDS:
            data = b"".join(u16(v) for v in s.pack_thresholds_dv)
        elif data_id == p.CURRENT_THRESHOLDS:
            data = b"".join(u16(p.CURRENT_OFFSET + v) for v in s.current_thresholds_da)
        elif data_id == p.DELTA_THRESHOLDS:
            a, b, c, d = s.delta_thresholds
            data = u16(a) + u16(b) + bytes((c, d)) + bytes(2)
        elif data_id == p.BALANCE_THRESHOLDS:
            data = u16(s.balance_thresholds_mv[0]) + u16(s.balance_thresholds_mv[1]) + bytes(4)
        elif data_id == 0xD8:
            data = bytes((0, 0, 0, 0, 1, 0, 0, 0))
        else:
            return None
        return self._frame(data_id, data)

    def _cell_frames(self) -> bytes:
        s = self.state
        needed = p.cell_frames_needed(s.cells)
        count = p.MAX_CELL_FRAMES if self.frames_mode == "all" else needed
        slots = list(s.cells_mv) + [0] * (3 * p.MAX_CELL_FRAMES - s.cells)
        if self.extra_cell_slots:
            for i in range(s.cells, 3 * needed):
                slots[i] = 3300 + 7 * i  # plausible-looking junk the driver must cut off
        out = b""
        for n in range(1, count + 1):
            trio = slots[3 * (n - 1):3 * n]
            out += self._frame(p.CELL_VOLTAGES, bytes((n,)) + b"".join(
                v.to_bytes(2, "big") for v in trio) + self._reserved(1))
        return out

    def _temp_frames(self) -> bytes:
        s = self.state
        needed = p.temp_frames_needed(s.sensors)
        count = p.MAX_TEMP_FRAMES if self.frames_mode == "all" else needed
        unused = self.session.filler if self.reserved_mode == "stale" else 0
        slots = [t + p.TEMP_OFFSET for t in s.temps_c]
        slots += [unused] * (7 * p.MAX_TEMP_FRAMES - len(slots))
        return b"".join(
            self._frame(p.TEMPERATURES, bytes((n,)) + bytes(slots[7 * (n - 1):7 * n]))
            for n in range(1, count + 1)
        )

    # --- writes ---------------------------------------------------------------------------

    def _apply_write(self, frame: p.Frame) -> bytes:
        s = self.state
        d = frame.data
        self.writes_received.append((frame.data_id, d))
        if frame.data_id == p.SET_SOC:
            permille = int.from_bytes(d[6:8], "big")
            if permille > 1000:
                return self._frame(p.SET_SOC, bytes(8))
            s.clock = bytes(d[0:6])
            s.remaining_mah = round(s.capacity_mah * permille / 1000)
            return self._frame(p.SET_SOC, bytes((1,)) + bytes(7))
        if frame.data_id in (p.CHARGE_MOSFET, p.DISCHARGE_MOSFET):
            on = d[0] == 1
            if not (self.refuse_mos_on_alarm and s.alarm_bits):
                if frame.data_id == p.CHARGE_MOSFET:
                    s.charge_mosfet = on
                else:
                    s.discharge_mosfet = on
            return self._frame(frame.data_id, bytes((d[0],)) + bytes(7))
        # reset: counters start again
        s.heartbeat = 0
        return self._frame(p.RESET, bytes(8))

    # --- faults the core injects --------------------------------------------------------

    def corrupt_checksum(self, data: bytes) -> bytes:
        """Break the checksum of one frame of the answer (any of a multi-frame reply)."""
        frames = len(data) // p.FRAME_LEN
        if not frames:
            return super().corrupt_checksum(data)
        k = self.fault_random.randrange(frames)
        end = (k + 1) * p.FRAME_LEN - 1
        return data[:end] + bytes((data[end] ^ 0x5A,)) + data[end + 1:]

    def wrong_answer(self, data: bytes) -> bytes:
        """A valid frame, but for another data ID than the one asked."""
        asked = data[2] if len(data) > 2 else p.PACK
        others = [i for i in (p.PACK, p.CELL_EXTREMES, p.TEMP_EXTREMES, p.MOSFET, p.STATUS,
                              p.BALANCING, p.FAILURES) if i != asked]
        return self.answer(self.fault_random.choice(others)) or data
