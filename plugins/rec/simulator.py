"""A REC BMS 1Q on the other end of the line: state, drift, busy moments and settings.

Built on the same codec as the driver (`protocol`), so both sides agree on every byte.
By default it behaves like the unit in the reference's captures: address 1, 14 cells
near 3.96 V, a 450 Ah pack, ``*IDN`` "REC BMS 1Q VICTRON", REC's default settings, float
answers written like ``4.50000e2``, array answers as a count frame and a data frame.

Everything it would report lives in `state` (a `RecState`), so a test can compare a
driver's output with exactly what it holds; with ``drift=false`` nothing moves between
polls. Settings persist in `state.settings`: a valid ``NAME value`` inside the manual's
range is stored and answered ``SET``; a missing space, a value that is not a plain decimal
or one outside the range gets ``ERROR1`` and changes nothing. Every set request it heard
is recorded in `writes_received`, so tests can assert a driver sent none.

REC-specific behaviour on top of the shared faults: busy moments (``busy_rate``) when the
BMS answers after its 350 ms window or not at all, a lone count frame
(``first_only_rate``), padded PTEM slots, cell values whose float bytes contain 0xAA and
0x55 (``aa_values``), silence (or ``ERROR1``) for unknown instructions, and silence for a
bad CRC or a frame to another address.
"""

from __future__ import annotations

import random
import struct
from collections import Counter, deque
from dataclasses import dataclass, field

from bmslogger.errors import ProtocolError
from bmslogger.model import PortSettings
from bmslogger.options import Option
from bmslogger.simulator import Simulator, SineLoad, Transmission

from . import PORT_DEFAULTS
from . import protocol as p
from .instructions import INSTRUCTIONS, INT, SETTABLE, SETTINGS

#: The simulated unit answers 30-45 ms after a request (the reference's 38400 trace:
#: ~57 ms for a 46-byte answer), well inside the 350 ms window the driver allows.
SIM_PORT_DEFAULTS = PortSettings(
    baudrate=PORT_DEFAULTS.baudrate, bytesize=8, parity="N", stopbits=1, turnaround_s=0.045)

OPTIONS: tuple[Option, ...] = (
    Option("address", "int", 1, "RS-485 address it answers at", min=1, max=16),
    Option("cells", "int", 14, "cells in series", min=1, max=16),
    Option("sensors", "int", 2, "temperature sensors", min=1, max=16),
    Option("ptem_slots", "int", 0, "floats PTEM sends; slots beyond `sensors` carry junk "
           "resembling cell voltages; 0 = exactly `sensors`", min=0, max=16),
    Option("busy_rate", "float", 0.0, "share of requests met while busy", min=0.0, max=1.0),
    Option("busy", "choice", "mixed", "what a busy BMS does: silent (no answer), late "
           "(answers after busy_delay) or mixed", choices=("silent", "late", "mixed")),
    Option("busy_delay", "duration", 0.6, "when a late busy answer starts (REC's window is "
           "350 ms)"),
    Option("first_only_rate", "float", 0.0, "share of two-frame answers cut after the count "
           "frame", min=0.0, max=1.0),
    Option("unknown", "choice", "silent", "answer to an unknown instruction: silent or ERROR1",
           choices=("silent", "error")),
    Option("soc", "float", 0.78, "initial state of charge, 0..1", min=0.0, max=1.0),
    Option("capacity", "float", 450.0, "pack capacity (CAPA), Ah", min=1.0, max=5000.0),
    *SineLoad.options(current=5.0, current_max=500.0),
    Option("cycles", "int", 103, "full cycles reported (CYCL)", min=0, max=8000),
    Option("error_code", "int", 0, "ERRO error number; 0 = no error", min=0, max=255),
    Option("error_location", "int", 0, "ERRO cell or sensor number", min=0, max=255),
    Option("aa_values", "bool", False, "cell voltages whose float bytes contain 0xAA and "
           "0x55, the bytes a naive parser cuts frames at"),
)


@dataclass
class RecState:
    """What the simulated BMS holds right now; floats are float32-exact."""

    address: int
    cells_v: list[float]
    temps_c: list[float]
    rint_ohm: list[float]
    settings: dict[str, float | int]
    current_a: float = 0.0
    soc: float = 0.78
    soh: float = 0.97
    bms_temp_c: float = 27.5
    error_code: int = 0
    error_unit: int = 1
    error_location: int = 0
    lcd3_ah: int = 0
    identification: str = "REC BMS 1Q VICTRON"
    software_version: str = "2.5"
    hardware_version: str = "1Q-3"
    adc_reference_v: float = 5.001
    ptem_padding: list[float] = field(default_factory=list)
    units: int = 1

    @property
    def pack_v(self) -> float:
        return p.f32(sum(self.cells_v))

    def lcd1(self) -> tuple[float, ...]:
        """The seven LCD1 floats, each float32-exact."""
        return tuple(p.f32(v) for v in (
            min(self.cells_v), max(self.cells_v), self.current_a, max(self.temps_c),
            self.pack_v, self.soc, self.soh))

    def lcd3(self) -> bytes:
        lo = min(range(len(self.cells_v)), key=lambda i: self.cells_v[i])
        hi = max(range(len(self.cells_v)), key=lambda i: self.cells_v[i])
        hot = max(range(len(self.temps_c)), key=lambda i: self.temps_c[i])
        ah = max(0, min(0xFFFF, self.lcd3_ah))
        return bytes((self.units, lo + 1, self.units, hi + 1, self.units, hot + 1)) + \
            ah.to_bytes(2, "big")

    def erro(self) -> bytes:
        present = 1 if self.error_code else 0
        return bytes((present, self.error_unit, self.error_code & 0xFF,
                      self.error_location & 0xFF))

    def value(self, name: str) -> object:
        """What a query of `name` answers (before encoding), or None if unknown."""
        if name in self.settings:
            return self.settings[name]
        return {
            "LCD1": lambda: p.encode_floats(self.lcd1()),
            "LCD3": self.lcd3,
            "ERRO": self.erro,
            "CELL": lambda: tuple(self.cells_v),
            "PTEM": lambda: tuple(self.temps_c) + tuple(self.ptem_padding),
            "RINT": lambda: tuple(self.rint_ohm),
            "BTEM": lambda: (self.bms_temp_c,),
            "*IDN": lambda: self.identification,
            "SWVR": lambda: self.software_version,
            "HWVR": lambda: self.hardware_version,
            "REFC": lambda: self.adc_reference_v,
        }.get(name, lambda: None)()


def _with_aa_55(value: float, flip: bool) -> float:
    """`value` with its two low float bytes replaced by AA 55 (or 55 AA): changes it by
    well under a millivolt, and puts both marker bytes inside the data."""
    raw = bytearray(struct.pack("<f", value))
    raw[0], raw[1] = (0x55, 0xAA) if flip else (0xAA, 0x55)
    return struct.unpack("<f", bytes(raw))[0]


class RecSimulator(Simulator):
    """A REC BMS 1Q. `state` is public and may be changed by tests at any time. `ignored`
    counts frames refused in silence, by reason (bad CRC, foreign address, ...)."""

    OPTIONS = OPTIONS
    PORT_DEFAULTS = SIM_PORT_DEFAULTS

    def setup(self) -> None:
        options = self.options
        rnd = self.random
        cells = int(options.get("cells", 14))
        sensors = int(options.get("sensors", 2))
        slots = int(options.get("ptem_slots", 0))
        self.busy_rate = float(options.get("busy_rate", 0.0))
        self.busy_mode: str = options.get("busy", "mixed")
        self.busy_delay_s = float(options.get("busy_delay", 0.6))
        self.first_only_rate = float(options.get("first_only_rate", 0.0))
        self.unknown_mode: str = options.get("unknown", "silent")
        self.drift = bool(options.get("drift", True))
        self.aa_values = bool(options.get("aa_values", False))
        self.busy_random = random.Random((options.get("seed", 0) or 0) + 2)
        settings: dict[str, float | int] = {
            i.name: (int(i.default) if i.shape == INT else float(i.default))
            for i in SETTINGS if i.default is not None
        }
        capacity = float(options.get("capacity", 450.0))
        settings.update(CAPA=capacity, CYCL=int(options.get("cycles", 103)), VMAX=0, VMIN=0,
                        EAVC=0.0, ODDC=0.0, SOCS=float(options.get("soc", 0.78)))
        self._cell_offsets = [rnd.uniform(-0.004, 0.004) for _ in range(cells)]
        self._temp_offsets = [rnd.uniform(-1.0, 1.0) for _ in range(sensors)]
        self.state = RecState(
            address=int(options.get("address", 1)),
            cells_v=[0.0] * cells,
            temps_c=[0.0] * sensors,
            rint_ohm=[p.f32(rnd.uniform(6e-5, 4e-4)) for _ in range(cells)],
            settings=settings,
            soc=float(options.get("soc", 0.78)),
            error_code=int(options.get("error_code", 0)),
            error_location=int(options.get("error_location", 0)),
            ptem_padding=[p.f32(3.3 + 0.01 * i) for i in range(max(0, slots - sensors))],
        )
        self._parser = p.FrameParser()
        #: current in A, like `RecState.current_a`
        self.load = SineLoad(self.clock, float(options.get("current", 5.0)),
                             float(options.get("period", 600.0)))
        self._shape()
        #: every set request heard: (instruction, value text as sent)
        self.writes_received: list[tuple[str, str]] = []
        #: queries and sets it listened to, by instruction name
        self.requests_received: Counter[str] = Counter()
        #: the instructions of the last requests it listened to, in order
        self.request_log: deque[str] = deque(maxlen=1000)
        #: busy moments, by what happened
        self.busy_events: Counter[str] = Counter()

    # --- values that drift ------------------------------------------------------------------

    def _advance(self) -> None:
        step = self.load.step(self.drift)
        if step is None:
            return
        s = self.state
        s.current_a, dt = step
        capacity = float(s.settings.get("CAPA", 450.0))
        s.soc = max(0.0, min(1.0, s.soc + s.current_a * dt / 3600 / capacity))
        self._shape()

    def _shape(self) -> None:
        """Cells, temperatures, LCD3 Ah from SOC and current; all float32-exact."""
        s = self.state
        base = 3.45 + 0.65 * s.soc + 0.002 * s.current_a
        s.cells_v = [p.f32(base + off) for off in self._cell_offsets]
        if self.aa_values:
            s.cells_v = [_with_aa_55(v, i % 2 == 1) for i, v in enumerate(s.cells_v)]
        s.temps_c = [p.f32(22.0 + abs(s.current_a) / 10 + off) for off in self._temp_offsets]
        s.current_a = p.f32(s.current_a)
        s.soc = p.f32(s.soc)
        s.soh = p.f32(s.soh)
        s.bms_temp_c = p.f32(s.bms_temp_c)
        capacity = float(s.settings.get("CAPA", 450.0))
        s.lcd3_ah = round((1.0 - s.soc) * capacity)

    # --- the line ---------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Transmission]:
        return self.answer_each(self._parser.events(data), self._request)

    def _request(self, frame: p.Frame) -> Transmission | None:
        s = self.state
        if frame.dst != s.address or frame.src != p.MASTER:
            self.ignored["address"] += 1
            return None
        text = frame.payload.decode("ascii", "replace")
        name = text[:4].upper()
        self.requests_received[name] += 1
        self.request_log.append(name)
        self._advance()
        answer = self._answer(name, text)
        if answer is None:
            return None
        if self.busy_rate and self.busy_random.random() < self.busy_rate:
            mode = self.busy_mode
            if mode == "mixed":
                mode = self.busy_random.choice(("silent", "late"))
            self.busy_events[mode] += 1
            if mode == "silent":
                return None
            return Transmission(answer, delay_s=self.busy_delay_s)
        latency = self.port_settings.turnaround_s * self.random.uniform(0.65, 1.0)
        return Transmission(answer, delay_s=latency)

    def _answer(self, name: str, text: str) -> bytes | None:
        s = self.state
        if len(text) == 5 and text.endswith("?"):
            ins = INSTRUCTIONS.get(name)
            if ins is None:
                return self._unknown()
            answer = p.answer_frames(s.address, ins, s.value(name))
            if ins.is_array and self.first_only_rate and \
                    self.fault_random.random() < self.first_only_rate:
                self.busy_events["first_only"] += 1
                first_len = answer[3] + p.OVERHEAD
                return answer[:first_len]
            return answer
        if name in SETTABLE:
            self.writes_received.append((name, text[5:] if len(text) > 4 else ""))
            return p.text_answer(s.address, self._set(name, text))
        if name in INSTRUCTIONS:
            # a read-only instruction with a value: not documented; refuse like a bad set
            return p.text_answer(s.address, "ERROR1")
        return self._unknown()

    def _unknown(self) -> bytes | None:
        self.ignored["unknown"] += 1
        if self.unknown_mode == "error":
            return p.text_answer(self.state.address, "ERROR1")
        return None

    def _set(self, name: str, text: str) -> str:
        """Apply ``NAME value``; ``SET`` or ``ERROR1``."""
        ins = SETTABLE[name]
        if len(text) < 6 or text[4] != " ":
            return "ERROR1"  # REC support: the space is required
        value_text = text[5:].strip()
        try:
            p.set_request(name, value_text, self.state.address)  # plain decimal only
            value = p.parse_number(value_text)
        except (ValueError, ProtocolError):
            return "ERROR1"
        assert ins.min is not None and ins.max is not None
        if not ins.min <= value <= ins.max:
            return "ERROR1"  # real behaviour unknown (§10): anything but SET
        if ins.shape == INT:
            if value != int(value):
                return "ERROR1"
            self.state.settings[name] = int(value)
        else:
            self.state.settings[name] = value
        if name == "SOCS":
            self.state.soc = p.f32(value)
            self._shape()
        elif name == "CAPA":
            self._shape()
        return "SET"

    # --- faults the core injects --------------------------------------------------------------

    def corrupt_checksum(self, data: bytes) -> bytes:
        """Break the CRC of one frame of the answer (either of a two-frame answer)."""
        spans = _frame_spans(data)
        if not spans:
            return super().corrupt_checksum(data)
        _start, end = spans[self.fault_random.randrange(len(spans))]
        at = end - 3  # CRC high byte
        return data[:at] + bytes((data[at] ^ 0x5A,)) + data[at + 1:]

    def wrong_answer(self, data: bytes) -> bytes:
        """A valid answer, but to another question: another array's two frames for an
        array read, a lone binary frame (ERRO's data) for a single value."""
        s = self.state
        spans = _frame_spans(data)
        if len(spans) >= 2:
            other = "ERRO" if data[4:6] == b"28" else "LCD1"
            return p.answer_frames(s.address, INSTRUCTIONS[other], s.value(other))
        return p.encode(p.MASTER, s.erro(), s.address)


def _frame_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each frame in a well-formed answer, walking the length bytes."""
    spans = []
    at = 0
    while at + 4 <= len(data) and data[at] == p.STX:
        end = at + data[at + 3] + p.OVERHEAD
        if end > len(data):
            break
        spans.append((at, end))
        at = end
    return spans
