"""The device side of a protocol, and the faults every simulated line can inject.

A plugin's simulator is a state machine: it is fed the bytes the host sends (in any
chunking), and returns `Transmission`s, the answer bytes with the silence before them.
It never sleeps or touches a port; `bmslogger.simline` plays transmissions onto a
pseudo-terminal, a TCP socket or the in-process ``sim://`` line, paced at the baud rate.

Faults that every protocol shares live here, so each simulator gets them for free; a
plugin only says how to corrupt its checksum and what a "wrong answer" looks like, and
may add its own (Daly's echo while asleep). Faults are chosen with the common options
``fault=checksum,noise`` and ``fault_rate=0.05``.

Two more things are here because several simulators would otherwise each write them:
`Simulator.setup`, the hook where a plugin reads its options (so no plugin repeats the
constructor), and `SineLoad`, the slow charge/discharge cycle the battery simulators drift
with.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from bmslogger.errors import ProtocolError
from bmslogger.model import PortSettings
from bmslogger.options import Option, Options, resolve_options

#: Faults every simulator supports. Each applies to one answer (`fault_rate` decides which).
FAULTS = {
    "checksum": "the answer's checksum is wrong",
    "truncate": "the answer is cut short",
    "noise": "stray bytes arrive before the answer",
    "silence": "no answer at all",
    "wrong": "a valid answer to a different request",
    "slow": "the answer trickles in with gaps between bytes, well inside a sane deadline",
    "late": "the answer comes after any sane deadline, and lands in the next exchange",
}

COMMON_OPTIONS: tuple[Option, ...] = (
    Option("fault", "str_list", (), "faults to inject: " + ", ".join(FAULTS)),
    Option("fault_rate", "float", 1.0, "share of answers a fault hits", min=0.0, max=1.0),
    Option("seed", "int", 0, "seed for values and faults; same seed, same session"),
    Option("baudrate", "int", 0, "line speed to emulate; 0 = the device's default", min=0),
    Option("turnaround", "duration", -1.0, "answer latency; negative = the device's default"),
)


@dataclass(frozen=True)
class Transmission:
    """Bytes the device sends, after `delay_s` of silence counted from the end of the
    request (or from now, for unsolicited broadcasts). `gap_s` is extra silence between
    bytes, for the ``slow`` fault."""

    data: bytes
    delay_s: float = 0.0
    gap_s: float = 0.0


class Simulator:
    """Base class for a device simulator. Subclasses implement `receive` (and, for devices
    that talk without being asked, `broadcast`).

    `OPTIONS` are the plugin's own settings (cell count, board number, ...). `options`
    passed in hold both those and `COMMON_OPTIONS`, validated. A plugin reads them in
    `setup`, not in an `__init__` of its own.
    """

    OPTIONS: tuple[Option, ...] = ()
    #: set by subclasses from their DeviceType's port_defaults
    PORT_DEFAULTS: PortSettings = PortSettings()
    #: seconds between unsolicited transmissions, or None for a purely polled device
    broadcast_interval_s: float | None = None
    #: on a TCP line (`bmslogger.simline.serve_tcp`), close the client's connection once
    #: everything queued has been sent, like Modbus TCP units that hang up after every
    #: answer. May change per request; other lines ignore it.
    hangup_after_answer: bool = False

    def __init__(self, options: Options, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.clock = clock
        self.random = random.Random(options.get("seed", 0))
        self.fault_random = random.Random((options.get("seed", 0) or 0) + 1)
        self.faults = tuple(options.get("fault", ()))
        self.fault_rate = float(options.get("fault_rate", 1.0))
        self.faults_injected: dict[str, int] = {}
        settings = self.PORT_DEFAULTS
        if options.get("baudrate"):
            settings = replace(settings, baudrate=int(options["baudrate"]))
        if options.get("turnaround", -1.0) >= 0:
            settings = replace(settings, turnaround_s=float(options["turnaround"]))
        self.port_settings = settings
        #: requests or frames refused in silence, by reason (a parser error's ``kind``, or
        #: the plugin's own: a foreign address, an unknown name, ...); tests read it
        self.ignored: Counter[str] = Counter()
        self.setup()

    def setup(self) -> None:
        """Read the plugin's options into attributes and build the device's state.

        Called at the end of `__init__`, when ``options``, ``clock``, ``random`` (seeded
        for values), ``fault_random``, ``faults``, ``port_settings`` and ``ignored`` are
        set, so a plugin overrides this instead of repeating the constructor's signature.
        Draw from ``self.random`` in a fixed order: the same seed must give the same
        device."""

    @classmethod
    def all_options(cls) -> tuple[Option, ...]:
        return tuple(cls.OPTIONS) + COMMON_OPTIONS

    # --- what subclasses implement ---------------------------------------------------

    def receive(self, data: bytes) -> list[Transmission]:
        """Take bytes from the host; return the answers to every request now complete."""
        raise NotImplementedError

    def broadcast(self) -> list[Transmission]:
        """Unsolicited transmissions due now (devices in broadcast mode)."""
        return []

    def corrupt_checksum(self, data: bytes) -> bytes:
        """The same answer with a wrong checksum. Default: flip the last byte's low bit."""
        return data[:-1] + bytes([data[-1] ^ 0x01]) if data else data

    def wrong_answer(self, data: bytes) -> bytes:
        """A valid answer, but not to the request in hand. Default: the answer repeated
        from the previous exchange."""
        previous = getattr(self, "_previous_answer", b"")
        return previous or data

    # --- helpers for subclasses -------------------------------------------------------

    def answer_each(self, events: Iterable[object],
                    request: Callable[[object], Transmission | None]) -> list[Transmission]:
        """The answers `request` gives to each parsed request in `events`, in order.

        For a `receive` built on an incremental parser: a `ProtocolError` the parser
        yields (bad checksum, garbage) is counted in `ignored` by its ``kind`` and gets
        silence, as a device that drops a damaged frame; `request` returning None is
        silence too."""
        out: list[Transmission] = []
        for event in events:
            if isinstance(event, ProtocolError):
                self.ignored[event.kind] += 1
                continue
            tx = request(event)
            if tx is not None:
                out.append(tx)
        return out

    # --- fault machinery (core) ---------------------------------------------------------

    def handle(self, data: bytes) -> list[Transmission]:
        """`receive`, then the configured faults. This is what lines call."""
        out: list[Transmission] = []
        for tx in self.receive(data):
            out.extend(self._inject(tx))
            self._previous_answer = tx.data
        return out

    def _inject(self, tx: Transmission) -> list[Transmission]:
        if not self.faults or self.fault_random.random() >= self.fault_rate:
            return [tx]
        fault = self.fault_random.choice(self.faults)
        self.faults_injected[fault] = self.faults_injected.get(fault, 0) + 1
        if fault == "checksum":
            return [replace(tx, data=self.corrupt_checksum(tx.data))]
        if fault == "truncate":
            cut = self.fault_random.randrange(1, max(2, len(tx.data)))
            return [replace(tx, data=tx.data[:cut])]
        if fault == "noise":
            count = self.fault_random.randrange(1, 8)
            junk = bytes(self.fault_random.randrange(256) for _ in range(count))
            return [replace(tx, data=junk + tx.data)]
        if fault == "silence":
            return []
        if fault == "wrong":
            return [replace(tx, data=self.wrong_answer(tx.data))]
        if fault == "slow":
            # a slow line: the answer starts on time but trickles, two byte-times of
            # silence after every byte (an answer that starts late is "late")
            return [replace(tx, gap_s=2 * self.port_settings.wire_time(1))]
        if fault == "late":
            return [replace(tx, delay_s=tx.delay_s + 2.0)]
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")


class SineLoad:
    """The slow charge/discharge cycle a simulated battery drifts with: a current of
    ``peak * sin(2π (t - t0) / period_s)``, sampled whenever the device is asked.

    Daly, EMUS, REC and PACE all model their pack this way, so the timing lives here
    once: when the cycle started, when it was last sampled, and the sine. What the
    current does to the pack (charge in mAh, coulombs, a 0..1 SOC, per-pack shares) is
    each plugin's own, because the units and the state differ. It is a helper object and
    not more base-class state because not every simulator drifts like this (TriStar
    follows a solar day; line tests use bare simulators), and because PACE scales one
    wave per pack: built with ``peak=1.0`` it hands out the bare wave.
    """

    def __init__(self, clock: Callable[[], float], peak: float, period_s: float) -> None:
        self.clock = clock
        #: amplitude, in whatever unit the plugin keeps its current in
        self.peak = peak
        #: seconds per charge/discharge cycle; at least 1 s
        self.period_s = max(1.0, float(period_s))
        self.t0 = clock()
        self.last = self.t0

    @staticmethod
    def options(current: float, current_max: float, per: str = "") -> tuple[Option, ...]:
        """The options of this model, for a plugin's `OPTIONS`: ``drift`` (false freezes
        the device), ``current`` (the peak, A, default `current`; `per` names what it is
        per, e.g. "pack") and ``period``. Declared here so every battery simulator
        spells them alike; the plugin still scales ``current`` to its own unit."""
        each = f" per {per}" if per else ""
        return (
            Option("drift", "bool", True, "values change over time; false = frozen state"),
            Option("current", "float", current, f"peak of the slow charge/discharge "
                   f"current{each}, A", min=0.0, max=current_max),
            Option("period", "duration", 600.0, "period of the charge/discharge cycle"),
        )

    def step(self, drift: bool = True) -> tuple[float, float] | None:
        """``(current, dt)``: the current now and the seconds since the previous step.

        None when nothing should move: `drift` is off (a frozen device) or the clock has
        not advanced. The step is taken either way, so when drift is switched back on,
        time frozen meanwhile is not charged to the pack in one jump."""
        now = self.clock()
        dt = now - self.last
        self.last = now
        if not drift or dt <= 0:
            return None
        return self.peak * math.sin(2 * math.pi * (now - self.t0) / self.period_s), dt


class SimulatedBus(Simulator):
    """Several simulated units of one plugin on one RS-485 pair.

    Every unit hears every request and only the one addressed answers, as on a real bus;
    each unit keeps its own faults. Built by `bmslogger.simline.build_bus` for
    ``bmslogger simulate PLUGIN --bus 1,3,7`` and ``sim://PLUGIN?bus=1,3,7``, so
    ``detect --scan-bus`` and several devices on one port can be tried without hardware.
    """

    def __init__(self, units: Sequence[Simulator]) -> None:
        if not units:
            raise ValueError("a bus needs at least one unit")
        self.units = list(units)
        # the bus itself injects no faults: the units do, each as configured
        super().__init__(resolve_options(Simulator.all_options(), {}), units[0].clock)
        self.port_settings = units[0].port_settings
        self.broadcast_interval_s = units[0].broadcast_interval_s

    def receive(self, data: bytes) -> list[Transmission]:
        return [tx for unit in self.units for tx in unit.handle(data)]

    def broadcast(self) -> list[Transmission]:
        return [tx for unit in self.units for tx in unit.broadcast()]
