"""An EMUS G1 Control Unit on the other end of the line: state, drift, both modes, writes.

Built on the same codec as the driver (`protocol`), so both sides agree on every byte.
The pack charges and discharges slowly (a sine of current); charge and SOC follow the
current, cells sit near 3.3 V with a small spread and rise or sag with the current,
temperatures follow the load, cells above the lowest balance while charging, and the
charging stage follows. Everything the unit reports lives in `state` (an `EmusState` of
raw wire values), so a test can compare a driver's output with exactly what the
simulator holds; with ``drift=false`` nothing moves between polls.

Modes: ``mode=request`` answers ``NNN,?`` requests (several at once, in a shuffled order
with ``shuffle=true``, as real units do when requests are pipelined); ``mode=broadcast``
also sends BB1, BC1, BT1, BT3 (with cell sensors), BV1, CV1, DT1, OT1 and ST1 by itself
every ``broadcast_period``. A bad CRC, an unknown name or a malformed request gets
silence. Writes (SC1, RC1, PW1, LG1,c, SS1,c, RS1, FD1) are applied, recorded in
`writes_received` and echoed back as the acknowledgement.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bmslogger.options import Option
from bmslogger.simulator import Simulator, SineLoad, Transmission

from . import PORT_DEFAULTS
from . import protocol as p

OPTIONS: tuple[Option, ...] = (
    Option("cells", "int", 16, "cells in the string (groups of 8 per line)", min=1, max=255),
    Option("cell_sensors", "int", 4, "cell temperature sensors (BT3/BT4); 0 = none, BT3 "
           "fields empty", min=0, max=255),
    Option("mode", "choice", "request", "request: answer requests only; broadcast: also "
           "send the summary sentences every broadcast_period", choices=("request", "broadcast")),
    Option("broadcast_period", "duration", 1.0, "period of unsolicited sentences"),
    Option("shuffle", "bool", True, "answer requests that arrive together in a random order"),
    Option("extra_fields", "int", 0, "append this many fields to every one-line sentence, "
           "as newer firmware may", min=0, max=8),
    Option("no_cell_comm", "bool", False, "lost the cells: cell sentences have empty fields"),
    Option("soc", "float", 60.0, "initial state of charge, %", min=0.0, max=100.0),
    Option("capacity", "float", 100.0, "capacity, Ah", min=1.0, max=10000.0),
    *SineLoad.options(current=20.0, current_max=3000.0),
    Option("protection_flags", "int", 0, "ST1 field 6 bits", min=0, max=0xFFFF),
    Option("reduction_flags", "int", 0, "ST1 field 7 bits", min=0, max=0xFF),
    Option("password", "str", "emus", "password PW1 accepts"),
)

#: Statistics that hold one cell voltage or temperature byte.
_BYTE_STATISTICS = (10, 11, 15, 16, 47, 48)

#: Sentences sent by itself in broadcast mode, in order.
BROADCAST_ORDER = ("BB1", "BC1", "BT1", "BT3", "BV1", "CV1", "DT1", "OT1", "ST1")


@dataclass
class EmusState:
    """What the simulated unit holds right now, as raw wire values."""

    cells_raw: list[int]  #: BV2 bytes: volts = (raw + 200) / 100
    module_temps_raw: list[int]  #: BT2 bytes: raw - 100 °C
    sensor_temps_raw: list[int]  #: BT4 bytes
    balancing_raw: list[int]  #: BB2 bytes: raw * 100 / 255 %
    capacity_c: int
    charge_c: int
    current_da: int = 0  #: 0.1 A, + while charging
    current_offset_da: int = 0  #: RC1 zeroing
    balancing_threshold_raw: int = 140  #: 3.40 V
    stage: int = 0
    error: int = 0
    error_param: int = 0
    stage_duration_s: int = 0
    protection_flags: int = 0
    reduction_flags: int = 0
    pin_flags: int = 0
    outputs: list[int] = field(default_factory=lambda: [0x40, 0, 0x08, 0])
    inputs: int = 0x08
    chargers: int = 1
    charger_status: int = 0
    set_voltage_dv: int = 0
    set_current_da: int = 0
    actual_voltage_dv: int = 0
    actual_current_da: int = 0
    dt1: list[int] = field(default_factory=lambda: [0, 1234, 85, 15000, 5120, 4870, 92, 14000,
                                                    4990, 6120, 88, 14500])
    hardware: str = "G1CU"
    serial: str = "0001A2B3"
    firmware: str = "2.0.19_RC9"
    clock: datetime = datetime(2024, 5, 1, 12, 0, 0)
    uptime_s: int = 86400
    current_sensor: int = 1
    cg1_field2: int = 0
    can_groups: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)] * 32)
    resets: list[tuple[int, int]] = field(default_factory=list)
    events: list[tuple[int, int, int, int]] = field(default_factory=list)
    statistics: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    no_cell_comm: bool = False
    logged_in: bool = False

    @property
    def cells(self) -> int:
        return len(self.cells_raw)

    @property
    def sensors(self) -> int:
        return len(self.sensor_temps_raw)

    @property
    def total_cv(self) -> int:
        """Pack voltage in 0.01 V: the sum of the cells."""
        return sum(raw + 200 for raw in self.cells_raw)

    @property
    def reported_current_da(self) -> int:
        return self.current_da - self.current_offset_da

    @property
    def soc_raw(self) -> int:
        """SOC in 0.01 %."""
        return round(10000 * self.charge_c / self.capacity_c)

    @staticmethod
    def summary(raw: Sequence[int]) -> tuple[int, int, int]:
        """(min, max, average rounded) of raw bytes."""
        return min(raw), max(raw), round(sum(raw) / len(raw))

    @property
    def seconds_since_2000(self) -> int:
        return int((self.clock - p.EPOCH).total_seconds())


class EmusSimulator(Simulator):
    """An EMUS G1 Control Unit. `state` is public and may be changed by tests at any time.
    `ignored` counts requests refused in silence: bad CRC, unknown names, odd arguments."""

    OPTIONS = OPTIONS
    PORT_DEFAULTS = PORT_DEFAULTS

    def setup(self) -> None:
        options = self.options
        rnd = self.random
        cells = int(options.get("cells", 16))
        sensors = int(options.get("cell_sensors", 4))
        self.mode: str = options.get("mode", "request")
        self.period_broadcast_s = max(0.05, float(options.get("broadcast_period", 1.0)))
        if self.mode == "broadcast":
            self.broadcast_interval_s = self.period_broadcast_s
        self.shuffle = bool(options.get("shuffle", True))
        self.extra_fields = int(options.get("extra_fields", 0))
        self.drift = bool(options.get("drift", True))
        self.password: str = options.get("password", "emus")
        capacity = round(float(options.get("capacity", 100.0)) * 3600)
        self._cell_offsets = [rnd.randint(-2, 2) for _ in range(cells)]
        self._module_offsets = [rnd.randint(-2, 2) for _ in range(cells)]
        self._sensor_offsets = [rnd.randint(-2, 2) for _ in range(sensors)]
        start = p.EPOCH + timedelta(days=8500 + rnd.randrange(300), seconds=rnd.randrange(86400))
        since = int((start - p.EPOCH).total_seconds())
        self.state = EmusState(
            cells_raw=[0] * cells, module_temps_raw=[0] * cells,
            sensor_temps_raw=[0] * sensors, balancing_raw=[0] * cells,
            capacity_c=capacity,
            charge_c=round(capacity * float(options.get("soc", 60.0)) / 100),
            protection_flags=int(options.get("protection_flags", 0)),
            reduction_flags=int(options.get("reduction_flags", 0)),
            no_cell_comm=bool(options.get("no_cell_comm", False)),
            clock=start,
            uptime_s=rnd.randrange(3600, 10 * 86400),
            can_groups=[(8, 1), (8, 1)] + [(0, 0)] * 30 if cells > 200 else [(0, 0)] * 32,
            resets=[(since - 86400 * (k + 1), 1 << k % 7) for k in range(5)],
            events=[(k + 1, code, k, since - 3600 * (5 - k))
                    for k, code in enumerate((1, 3, 22, 26, 27))],
            statistics={sid: (rnd.randrange(100, 160) if sid in _BYTE_STATISTICS
                              else rnd.randrange(1, 5000),
                              rnd.randrange(0, cells), since - sid * 60)
                        for sid in p.STATISTICS},
        )
        self._parser = p.SentenceParser()
        #: current in 0.1 A, like `EmusState.current_da`
        self.load = SineLoad(self.clock, round(float(options.get("current", 20.0)) * 10),
                             float(options.get("period", 600.0)))
        self._shape(0.0)
        #: every write received: (name, fields)
        self.writes_received: list[tuple[str, tuple[str, ...]]] = []
        #: read requests answered, by name
        self.requests_received: Counter[str] = Counter()
        #: names of the last requests, in order of arrival
        self.request_log: deque[str] = deque(maxlen=1000)

    # --- values that drift ------------------------------------------------------------

    def _advance(self) -> None:
        step = self.load.step(self.drift)
        if step is None:
            return
        current, dt = step
        s = self.state
        s.current_da = round(current)
        s.charge_c = max(0, min(s.capacity_c, round(s.charge_c + s.current_da / 10 * dt)))
        s.clock += timedelta(seconds=dt)
        s.uptime_s += round(dt)
        s.stage_duration_s += round(dt)
        self._shape(dt)

    def _shape(self, dt: float) -> None:
        """Cells, temperatures, balancing, stage and flags from SOC and current."""
        s = self.state
        soc = s.charge_c / s.capacity_c
        base = 320 + 20 * soc + s.current_da / 10 * 0.05 - 200  # raw: volts*100 - 200
        jitter = (lambda: self.random.randint(-1, 1)) if dt > 0 else (lambda: 0)
        s.cells_raw = [max(0, min(255, round(base) + off + jitter())) for off in self._cell_offsets]
        heat = abs(s.current_da) / 200
        s.module_temps_raw = [round(125 + heat) + off for off in self._module_offsets]
        s.sensor_temps_raw = [round(124 + heat) + off for off in self._sensor_offsets]
        low = min(s.cells_raw)
        charging = s.current_da > 0
        s.balancing_raw = [min(255, (raw - low) * 60) if charging and raw - low >= 2 else 0
                           for raw in s.cells_raw]
        stage = (4 if any(s.balancing_raw) else 3) if charging else 0
        if stage != s.stage:
            s.stage, s.stage_duration_s = stage, 0
        s.set_voltage_dv = round(s.cells * 3.45 * 10) if charging else 0
        s.set_current_da = max(0, s.current_da)
        s.actual_voltage_dv = round(s.total_cv / 10) if charging else 0
        s.actual_current_da = max(0, s.current_da)
        s.pin_flags = (1 << 11) | ((1 << 9) | (1 << 4) if charging else 0)
        s.charger_status = 1 if charging else 0

    # --- the line -----------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Transmission]:
        out = self.answer_each(self._parser.events(data), self._transmit)
        if self.shuffle and len(out) > 1:
            self.random.shuffle(out)
        return out

    def _transmit(self, sentence: p.Sentence) -> Transmission | None:
        answer = self._request(sentence)
        if answer is None:
            return None
        latency = self.port_settings.turnaround_s * self.random.uniform(0.5, 1.0)
        return Transmission(answer, delay_s=latency)

    def _request(self, sentence: p.Sentence) -> bytes | None:
        name, args = sentence.name, sentence.fields
        if (name in ("LG1", "SS1") and args == ("c",)) or name in ("SC1", "RC1", "PW1", "RS1",
                                                                  "FD1"):
            return self._apply_write(name, args)
        if name not in p.READS or len(args) != 1:
            self.ignored["unknown"] += 1
            return None
        self._advance()
        self.requests_received[name] += 1
        self.request_log.append(name)
        answer = self.answer(name, args[0])
        if answer is None:
            self.ignored["argument"] += 1
        return answer

    # --- answers (pure: state in, bytes out) --------------------------------------------

    def _line(self, name: str, fields: Sequence[str]) -> bytes:
        return p.encode_sentence(name, tuple(fields) + ("0000",) * self.extra_fields)

    def answer(self, name: str, arg: str = "?") -> bytes | None:
        """The reply bytes to ``name,arg`` from the current state, or None (silence)."""
        s = self.state
        h = p.hexf
        empty_cells = s.no_cell_comm
        if name in p.GROUPS:
            if arg != "?":
                return None
            raw = {"BV2": s.cells_raw, "BT2": s.module_temps_raw, "BT4": s.sensor_temps_raw,
                   "BB2": s.balancing_raw}[name]
            values: list[int | None] = [None] * len(raw) if empty_cells else list(raw)
            return p.encode_groups(name, values)
        if name == "SS1":
            if arg == "?":
                return b"".join(self._statistic(sid) for sid in sorted(s.statistics))
            if len(arg) != 2 or any(c not in "0123456789ABCDEF" for c in arg):
                return None
            sid = int(arg, 16)
            return self._statistic(sid) if sid in s.statistics else None
        if arg != "?":
            return None
        if name == "LG1":
            return b"".join(p.encode_sentence("LG1", (h(q, 4), h(c, 2), h(d, 4), h(t, 8)))
                            for q, c, d, t in s.events)
        if name in ("BV1", "BT1", "BT3", "BB1"):
            return self._line(name, self._cell_summary(name))
        if name == "BC1":
            return self._line(name, (h(s.charge_c, 8), h(s.capacity_c, 8), h(s.soc_raw, 4)))
        if name == "CV1":
            return self._line(name, (h(s.total_cv, 8), p.hex_signed(s.reported_current_da, 4),
                                     *(("0000",) * 8)))
        if name == "ST1":
            return self._line(name, (h(s.stage, 2), h(s.error, 2), h(s.error_param, 4),
                                     h(s.stage_duration_s, 8), h(self.status_flags, 2),
                                     h(s.protection_flags, 4), h(s.reduction_flags, 2),
                                     h(s.pin_flags, 8)))
        if name == "DT1":
            return self._line(name, [h(v, 8 if i in (4, 5, 8, 9) else 4)
                                     for i, v in enumerate(s.dt1)])
        if name == "OT1":
            return self._line(name, [h(v, 2) for v in s.outputs])
        if name == "IN1":
            return self._line(name, (h(s.inputs, 2),))
        if name == "CS1":
            return self._line(name, (h(s.chargers, 2), h(s.charger_status, 4),
                                     h(s.set_voltage_dv, 4), h(s.set_current_da, 4),
                                     h(s.actual_voltage_dv, 4), h(s.actual_current_da, 4)))
        if name == "CG1":
            pairs = [f for cells, status in s.can_groups for f in (h(cells, 2), h(status, 2))]
            return self._line(name, (h(s.current_sensor, 2), h(s.cg1_field2, 2), *pairs))
        if name == "VR1":
            return self._line(name, (s.hardware, s.serial, s.firmware))
        if name == "TD1":
            c = s.clock
            return self._line(name, (f"{c.year:04d}", f"{c.month:02d}", f"{c.day:02d}",
                                     f"{c.hour:02d}", f"{c.minute:02d}", f"{c.second:02d}",
                                     h(s.uptime_s, 8)))
        if name == "RS2":
            return self._line(name, [f for t, fl in s.resets for f in (h(t, 8), h(fl, 2))])
        return None

    @property
    def status_flags(self) -> int:
        """ST1 field 5: every validity bit, cell temperatures only with sensors."""
        s = self.state
        if s.no_cell_comm:
            return 0
        return 0b01111 | (0b100000 if s.sensors else 0) | (0b10000 if s.stage == 5 else 0)

    def _cell_summary(self, name: str) -> list[str]:
        s = self.state
        h = p.hexf
        raw = {"BV1": s.cells_raw, "BT1": s.module_temps_raw, "BT3": s.sensor_temps_raw,
               "BB1": s.balancing_raw}[name]
        count = len(raw)
        blanks = 6 if name in ("BV1", "BB1") else 5
        if s.no_cell_comm:
            return [""] * blanks
        if not raw:
            return [h(0, 4)] + [""] * (blanks - 1)
        lo, hi, avg = s.summary(raw)
        head = [h(count, 4), h(lo, 2), h(hi, 2), h(avg, 2)]
        if name == "BV1":
            return [*head, h(s.total_cv, 8), ""]
        if name == "BB1":
            return [*head, "", h(s.balancing_threshold_raw, 2)]
        return [*head, ""]

    def _statistic(self, sid: int) -> bytes:
        value, info, t = self.state.statistics[sid]
        h = p.hexf
        return p.encode_sentence("SS1", (h(sid, 2), h(value, 8), h(info, 4), h(t, 8)))

    def broadcast(self) -> list[Transmission]:
        """The summary sentences, each through the configured faults."""
        self._advance()
        out: list[Transmission] = []
        for name in BROADCAST_ORDER:
            if name == "BT3" and not self.state.sensors:
                continue
            data = self.answer(name)
            if data:
                tx = Transmission(data)
                out.extend(self._inject(tx))
                self._previous_answer = data
        return out

    # --- writes ---------------------------------------------------------------------------

    def _apply_write(self, name: str, args: tuple[str, ...]) -> bytes | None:
        s = self.state
        self.writes_received.append((name, args))
        if name == "SC1":
            raw = p.parse_hex(args[0]) if args else None
            if raw is None or raw > 10000:
                return None
            s.charge_c = round(s.capacity_c * raw / 10000)
        elif name == "RC1":
            s.current_offset_da = s.current_da
        elif name == "PW1":
            s.logged_in = bool(args) and args[0] == self.password
            return p.encode_sentence("PW1", ("1" if s.logged_in else "0",))
        elif name == "LG1":
            s.events = []
        elif name == "SS1":
            s.statistics = {sid: (0, 0, 0) for sid in s.statistics}
        elif name == "RS1":
            s.uptime_s = 0
            s.events.append((len(s.events) + 1, 1, 0, s.seconds_since_2000))
        elif name == "FD1":
            s.balancing_threshold_raw = 140
        return p.encode_sentence(name, args)

    # --- faults the core injects --------------------------------------------------------

    def corrupt_checksum(self, data: bytes) -> bytes:
        """Change one checksum digit of one line of the answer (still a well-formed line)."""
        lines = data.split(b"\r\n")
        full = [i for i, line in enumerate(lines) if len(line) >= 3]
        if not full:
            return super().corrupt_checksum(data)
        k = self.fault_random.choice(full)
        line = lines[k]
        digit = line[-1:]
        lines[k] = line[:-1] + (b"0" if digit != b"0" else b"1")
        return b"\r\n".join(lines)

    def wrong_answer(self, data: bytes) -> bytes:
        """A valid sentence, but not the one asked for."""
        asked = data[:3].decode("ascii", "replace")
        other = self.fault_random.choice([n for n in ("BC1", "CV1", "ST1", "BT1") if n != asked])
        return self.answer(other) or data
