"""A PACE battery on the other end of the RS-232 line: 1 to 15 chained packs behind a master.

Built on the driver's codec (`protocol`), so both sides agree on every byte. Each pack
drifts slowly (a sine of current, SOC following it, cells near 3.3 V, temperatures
following the load, balancing while charging). Everything the packs would report lives in
`state` (a `PaceState`), so a test can compare a driver's output with exactly what the
simulator holds; with ``drift=false`` nothing moves between polls.

Firmware profiles the reference names (§8.2, §13 "Simulator guidance"): ``variant`` picks
the 0x42 record tail (classic, soc, enersol, extended, extended_summary, pylon),
``status_extra`` the bytes appended to each 0x44 record, ``version`` the VER byte. Quirks:
packs that go offline (all-zero records in an FF reply; zeros or silence when asked
alone), a firmware that answers only the first pack for FF, request echo from a bridge,
any ADR answered on RS-232 (an ``rs485`` bus mode answers only its own), RTN 02/03 for a
damaged request, RTN 04 for a command it does not know.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from bmslogger.errors import ChecksumError, ProtocolError
from bmslogger.options import Option
from bmslogger.simulator import Simulator, SineLoad, Transmission

from . import PORT_DEFAULTS
from . import protocol as p

#: 0x42 tail after P for each firmware variant, and its P byte (§8.2)
VARIANTS = {
    "classic": (6, 3),
    "soc": (7, 2),
    "enersol": (16, 2),
    "extended": (20, 9),
    "extended_summary": (28, 9),
    "pylon": (4, 2),
}
#: 0x44 extra bytes a variant sends unless status_extra says otherwise
VARIANT_STATUS_EXTRA = {"classic": 0, "soc": 1, "enersol": 1, "extended": 1,
                        "extended_summary": 5, "pylon": 0}

OPTIONS: tuple[Option, ...] = (
    Option("packs", "int", 1, "packs in the parallel group", min=1, max=15),
    Option("cells", "int", 16, "cells in series per pack", min=1, max=32),
    Option("sensors", "int", 6, "temperature sensors per pack (6: 4 cells, MOSFET, "
           "environment)", min=0, max=16),
    Option("address", "int", 1, "DIP address of the connected pack; only address 1 is a "
           "master that reports the other packs", min=0, max=15),
    Option("variant", "choice", "classic", "0x42 record layout: " + ", ".join(VARIANTS),
           choices=tuple(VARIANTS)),
    Option("status_extra", "int", -1, "bytes appended to each 0x44 record (0, 1, 3, 5); "
           "-1 = as the variant sends", min=-1, max=5),
    Option("version", "choice", "auto", "VER of its replies: 0x25, 0x20, or auto (0x20 for "
           "the pylon variant)", choices=("auto", "0x25", "0x20")),
    Option("cid1", "int", 0x46, "CID1 it answers to and sends", min=0, max=255),
    Option("offline", "int_list", (), "pack numbers that are offline", min=1, max=15),
    Option("offline_reply", "choice", "zeros", "answer to a request for an offline pack "
           "alone: an all-zero record, or silence", choices=("zeros", "silent")),
    Option("ff_first_only", "bool", False, "answer COMMAND FF with the first pack only"),
    Option("echo", "bool", False, "a bridge that sends every request back before the answer"),
    Option("bus", "choice", "rs232", "rs232: answer any ADR; rs485: only its own address",
           choices=("rs232", "rs485")),
    Option("soc", "float", 60.0, "initial state of charge, %", min=0.0, max=100.0),
    Option("capacity", "float", 100.0, "design capacity per pack, Ah", min=1.0, max=600.0),
    *SineLoad.options(current=20.0, current_max=300.0, per="pack"),
    Option("cycles", "int", 42, "cycle count of pack 1 (others count a few more)",
           min=0, max=65535),
    Option("protect1", "int", 0, "protect state 1 of every pack", min=0, max=255),
    Option("protect2", "int", 0, "protect state 2 of every pack", min=0, max=255),
    Option("fault_state", "int", 0, "0x44 fault state of every pack (\"fault\" names the "
           "injected line faults)", min=0, max=255),
    Option("warn1", "int", 0, "warn state 1 of every pack", min=0, max=255),
    Option("warn2", "int", 0, "warn state 2 of every pack", min=0, max=255),
)


@dataclass
class PackState:
    """One pack's values in wire units."""

    number: int
    cells_mv: list[int]
    temps_raw: list[int]  #: 0.1 K + 2730
    current_raw: int = 0  #: signed 10 mA, + charging
    remaining: int = 6000  #: 10 mAh
    full: int = 10000
    design: int = 10000
    cycles: int = 42
    cell_warnings: list[int] = field(default_factory=list)
    temp_warnings: list[int] = field(default_factory=list)
    charge_current_warning: int = 0
    voltage_warning: int = 0
    discharge_current_warning: int = 0
    protect1: int = 0
    protect2: int = 0
    indicator: int = 0x06  #: charge and discharge FET on
    control: int = 0x01  #: buzzer enabled
    fault: int = 0
    balance_bits: int = 0
    warn1: int = 0
    warn2: int = 0
    extra: bytes = b""  #: 0x44 bytes after warn state 2
    enersol_last: int = 0x64
    offline: bool = False
    voltage_mv: int = 0  #: the sum of the cells after every drift step


    @property
    def soc_pct(self) -> int:
        return round(100 * self.remaining / self.full) if self.full else 0

    @property
    def soh_pct(self) -> int:
        return min(100, round(100 * self.full / self.design)) if self.design else 0

    @property
    def independent_voltage_mv(self) -> int:
        return self.voltage_mv + 3  # a second measurement, a hair off the first


@dataclass
class PaceState:
    """What the simulated battery holds; `packs[0]` is the connected pack."""

    packs: list[PackState]
    software_version: str = "P16S100A-1812-1.00"
    bluetooth_name: str = "PACE-SIM-BT"
    bms_info: str = "SIM2024BMS0001"
    pack_info: str = "SIM2024PACK0001"
    clock: tuple[int, int, int, int, int, int] = (24, 8, 21, 5, 29, 31)


class PaceSimulator(Simulator):
    """A PACE master with its slaves. `state` is public; tests may change it at any time.
    `ignored` counts requests it ignored or refused, by kind (damaged frames get RTN 02/03
    and are counted too)."""

    OPTIONS = OPTIONS
    PORT_DEFAULTS = PORT_DEFAULTS

    def setup(self) -> None:
        options = self.options
        rnd = self.random
        self.address = int(options.get("address", 1))
        self.variant: str = options.get("variant", "classic")
        self.tail_bytes, self.p_value = VARIANTS[self.variant]
        extra = int(options.get("status_extra", -1))
        self.status_extra = VARIANT_STATUS_EXTRA[self.variant] if extra < 0 else extra
        version = options.get("version", "auto")
        if version == "auto":
            version = "0x20" if self.variant == "pylon" else "0x25"
        self.ver = int(version, 16)
        self.cid1 = int(options.get("cid1", p.CID1_BATTERY))
        self.offline_reply: str = options.get("offline_reply", "zeros")
        self.ff_first_only = bool(options.get("ff_first_only", False))
        self.echo = bool(options.get("echo", False))
        self.rs485 = options.get("bus", "rs232") == "rs485"
        self.drift = bool(options.get("drift", True))
        #: peak current per pack, A, before each pack's share
        self.peak = float(options.get("current", 20.0))
        cells = int(options.get("cells", 16))
        sensors = int(options.get("sensors", 6))
        design = round(float(options.get("capacity", 100.0)) * 100)
        soc = float(options.get("soc", 60.0)) / 100
        count = int(options.get("packs", 1))
        offline = set(options.get("offline", ()))
        packs = []
        for n in range(1, count + 1):
            full = max(1, design - rnd.randint(0, design // 20))
            pack = PackState(
                number=n, cells_mv=[0] * cells, temps_raw=[0] * sensors,
                remaining=round(full * min(1.0, soc + rnd.uniform(-0.02, 0.02))),
                full=full, design=design, cycles=int(options.get("cycles", 42)) + 3 * (n - 1),
                cell_warnings=[0] * cells, temp_warnings=[0] * sensors,
                protect1=int(options.get("protect1", 0)), protect2=int(options.get("protect2", 0)),
                fault=int(options.get("fault_state", 0)), warn1=int(options.get("warn1", 0)),
                warn2=int(options.get("warn2", 0)), extra=bytes(self.status_extra),
                offline=n in offline,
            )
            packs.append(pack)
        self.state = PaceState(packs)
        self._cell_offsets = [[rnd.randint(-6, 6) for _ in range(cells)] for _ in packs]
        self._temp_offsets = [[rnd.randint(-8, 8) for _ in range(sensors)] for _ in packs]
        self._share = [rnd.uniform(0.9, 1.1) for _ in packs]
        self._parser = p.FrameParser()
        #: the bare wave (-1..1); each pack scales it by `peak` and its share
        self.load = SineLoad(self.clock, 1.0, float(options.get("period", 600.0)))
        self._shape(0.0)
        #: every request it answered or refused, by CID2
        self.requests_received: Counter[int] = Counter()
        #: (CID2, COMMAND or None) of each request, in order
        self.request_log: deque[tuple[int, int | None]] = deque(maxlen=1000)
        #: write commands received (this logger never sends any)
        self.writes_received: list[tuple[int, bytes]] = []
        self._alternate: tuple[bytes, bytes] = (b"", b"")

    # --- values that drift ------------------------------------------------------------

    @property
    def chain(self) -> list[PackState]:
        """The packs the master reports: all of them at address 1, else only itself."""
        packs = self.state.packs
        return packs if self.address == 1 else packs[:1]

    def _advance(self) -> None:
        step = self.load.step(self.drift)
        if step is None:
            return
        wave, dt = step
        for i, pack in enumerate(self.state.packs):
            amps = self.peak * self._share[i] * wave
            pack.current_raw = round(amps * 100)
            pack.remaining = max(0, min(pack.full, round(
                pack.remaining + amps * 100 * dt / 3600)))
        self._shape(dt)

    def _shape(self, dt: float) -> None:
        """Cells and temperatures from SOC and current; balancing while charging."""
        jitter = (lambda: self.random.randint(-1, 1)) if dt > 0 else (lambda: 0)
        for i, pack in enumerate(self.state.packs):
            amps = pack.current_raw / 100
            base = 3200 + 200 * pack.remaining / pack.full + amps * 0.5
            pack.cells_mv = [round(base) + off + jitter() for off in self._cell_offsets[i]]
            pack.voltage_mv = sum(pack.cells_mv)
            pack.temps_raw = [p.TEMP_OFFSET + 250 + round(abs(amps) * 2) + off
                              for off in self._temp_offsets[i]]
            low = min(pack.cells_mv) if pack.cells_mv else 0
            pack.balance_bits = 0
            if amps > 1:
                for c, mv in enumerate(pack.cells_mv[:16]):
                    if mv - low > 6:
                        pack.balance_bits |= 1 << c
            fets = 0x06
            pack.indicator = fets | (0x08 if amps < -0.5 else 0) | (0x20 if amps > 0.5 else 0)

    # --- the line -----------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Transmission]:
        out: list[Transmission] = []
        for event in self._parser.events(data):
            if isinstance(event, ProtocolError):
                out.extend(self._damaged(event))
                continue
            out.extend(self._request(event))
        return out

    def _latency(self) -> float:
        return self.port_settings.turnaround_s * self.random.uniform(0.5, 1.0)

    def _reply(self, rtn: int, info: bytes = b"") -> bytes:
        return p.build_frame(rtn, info, self.address, self.ver, self.cid1)

    def _damaged(self, err: ProtocolError) -> list[Transmission]:
        """RTN 03 for a bad LCHKSUM, 02 for a bad CHKSUM, silence for anything else."""
        self.ignored[err.kind] += 1
        if isinstance(err, p.LengthChecksumError):
            return [Transmission(self._reply(0x03), self._latency())]
        if isinstance(err, ChecksumError):
            return [Transmission(self._reply(0x02), self._latency())]
        return []

    def _request(self, frame: p.Frame) -> list[Transmission]:
        if frame.cid1 != self.cid1:
            self.ignored["cid1"] += 1
            return []
        if self.rs485 and frame.adr != self.address:
            self.ignored["address"] += 1
            return []
        command = frame.info[0] if len(frame.info) == 1 else None
        self.requests_received[frame.cid2] += 1
        self.request_log.append((frame.cid2, command))
        self._advance()
        out = []
        if self.echo:
            out.append(Transmission(frame.raw, delay_s=0.001))
        answer = self.answer(frame.cid2, frame.info)
        if answer is None:
            self.ignored["offline"] += 1
            return out
        self._alternate = (answer, self._alternative(frame.cid2, command))
        out.append(Transmission(answer, delay_s=self._latency()))
        return out

    # --- answers (pure: state in, bytes out) --------------------------------------------

    def answer(self, cid2: int, info: bytes = b"") -> bytes | None:
        """The reply frame to a request from the current state; None = silence."""
        if cid2 in (p.ANALOG, p.STATUS):
            if len(info) != 1:
                return self._reply(0x05)
            return self._pack_reply(cid2, info[0])
        s = self.state
        first = self.chain[0]
        if cid2 == p.PACK_COUNT:
            return self._reply(0, bytes((len(self.chain),)))
        if cid2 == p.VERSION:
            body = p.encode_text(s.software_version)
            if self.variant.startswith("extended"):
                body += p.encode_text(s.bluetooth_name)
            return self._reply(0, body)
        if cid2 == p.PRODUCT:
            return self._reply(0, p.encode_text(s.bms_info) + p.encode_text(s.pack_info))
        if cid2 == p.CAPACITY:
            return self._reply(0, b"".join(v.to_bytes(2, "big") for v in (
                first.remaining, first.full, first.design)))
        if cid2 == p.DATETIME:
            return self._reply(0, bytes(s.clock))
        return self._reply(0x04)

    def _pack_reply(self, cid2: int, command: int) -> bytes | None:
        record = self.analog_record if cid2 == p.ANALOG else self.status_record
        chain = self.chain
        if command == p.ALL_PACKS:
            packs = chain[:1] if self.ff_first_only else chain
            body = bytes((0, len(packs))) + b"".join(record(pk) for pk in packs)
            return self._reply(0, body)
        if not 1 <= command <= p.MAX_PACK:
            return self._reply(0x06)
        if command <= len(chain):
            pack = chain[command - 1]
            if pack.offline and self.offline_reply == "silent":
                return None
            return self._reply(0, bytes((0, command)) + record(pack))
        # a slot beyond the group: the master has nothing but zeros for it
        return self._reply(0, bytes((0, command)) + record(self.chain[0], zeros=True))

    def analog_record(self, pack: PackState, zeros: bool = False) -> bytes:
        """One 0x42 pack record in this simulator's variant layout."""
        u16 = lambda v: (int(v) & 0xFFFF).to_bytes(2, "big")  # noqa: E731
        u32 = lambda v: int(v).to_bytes(4, "big")  # noqa: E731
        if zeros or pack.offline:
            head = bytes((len(pack.cells_mv),)) + bytes(2 * len(pack.cells_mv))
            head += bytes((len(pack.temps_raw),)) + u16(0x0AAA) * len(pack.temps_raw)
            return head + bytes(6) + bytes((self.p_value,)) + bytes(self.tail_bytes)
        out = bytes((len(pack.cells_mv),)) + b"".join(u16(v) for v in pack.cells_mv)
        out += bytes((len(pack.temps_raw),)) + b"".join(u16(v) for v in pack.temps_raw)
        out += u16(pack.current_raw) + u16(pack.voltage_mv) + u16(pack.remaining)
        out += bytes((self.p_value,))
        tail = u16(pack.full) + u16(pack.cycles)
        if self.tail_bytes >= 6:
            tail += u16(pack.design)
        if self.tail_bytes == 7:
            tail += bytes((pack.soc_pct,))
        elif self.tail_bytes == 16:  # Enersol: SOC, two 4-byte fields, one byte (§8.2)
            tail += bytes((pack.soc_pct,)) + u32(pack.design) * 2 + bytes((pack.enersol_last,))
        elif self.tail_bytes >= 20:
            tail += bytes((pack.soc_pct,)) + u32(pack.design) * 2 + bytes((pack.soh_pct,))
            tail += u16(pack.independent_voltage_mv) + u16(pack.current_raw)
            if self.tail_bytes == 28:
                tail += u32(pack.remaining) + u32(pack.full)
        assert len(tail) == self.tail_bytes
        return out + tail

    def status_record(self, pack: PackState, zeros: bool = False) -> bytes:
        """One 0x44 pack record, with this simulator's extra bytes."""
        cells, sensors = len(pack.cells_mv), len(pack.temps_raw)
        if zeros or pack.offline:
            return (bytes((cells,)) + bytes(cells) + bytes((sensors,)) + bytes(sensors)
                    + bytes(12 + self.status_extra))
        out = bytes((cells,)) + bytes(pack.cell_warnings) + bytes((sensors,))
        out += bytes(pack.temp_warnings)
        out += bytes((pack.charge_current_warning, pack.voltage_warning,
                      pack.discharge_current_warning, pack.protect1, pack.protect2,
                      pack.indicator, pack.control, pack.fault, pack.balance_bits & 0xFF,
                      pack.balance_bits >> 8 & 0xFF, pack.warn1, pack.warn2))
        return out + bytes(pack.extra[:self.status_extra]).ljust(self.status_extra, b"\0")

    # --- faults the core injects --------------------------------------------------------

    def _alternative(self, cid2: int, command: int | None) -> bytes:
        """A valid answer to a different request than `cid2`/`command`."""
        chain = self.chain
        if cid2 in (p.ANALOG, p.STATUS) and command not in (None, p.ALL_PACKS) and len(chain) > 1:
            other = command % len(chain) + 1
            record = self.analog_record if cid2 == p.ANALOG else self.status_record
            return self._reply(0, bytes((0, other)) + record(chain[other - 1]))
        if cid2 == p.PACK_COUNT:
            return self.answer(p.VERSION) or b""
        return self._reply(0, bytes((len(chain),)))

    def wrong_answer(self, data: bytes) -> bytes:
        answer, alternative = self._alternate
        return alternative if answer == data and alternative else super().wrong_answer(data)

    def corrupt_checksum(self, data: bytes) -> bytes:
        """The same frame with one CHKSUM digit changed (still hex, so only the sum fails)."""
        if len(data) < p.MIN_FRAME or data[-1] != p.EOI:
            return super().corrupt_checksum(data)
        digit = data[-2]
        swapped = b"0" if digit != ord("0") else b"1"
        return data[:-2] + swapped + data[-1:]
