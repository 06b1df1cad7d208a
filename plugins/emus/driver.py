"""The conversation with one EMUS G1 Control Unit, in request or broadcast mode, and the points.

Request mode asks the configured sentences through the shared `Conversation` (stale
input discarded, deadline from the wire time, errors counted by kind). Several requests
go out at once (``pipeline``) in batches whose answers fit about 1 KiB, and answers are
matched by *name*, never by position, because the unit may answer in any order. The
per-cell sentences (BV2, BB2, BT2, BT4) come one line per group of up to eight cells:
the cell count from BV1/BB1/BT1 (BT3 for BT4), or the ``cells`` option, says how many
cells they must cover, so a batch ends the moment every expected line is in. A retry asks
only for what is still missing; lines already received stay. If the first batch gets no
valid answer the unit is treated as silent for this poll and nothing else is asked.

Broadcast mode sends nothing: it drops what waited in the input buffer, then listens for
one broadcast period plus the wire time of the expected sentences, or until each of them
was heard, feeding the same parser. The first line heard may be cut (we joined the line
mid-sentence); it is dropped quietly.

LG1 (event log) and SS1 (statistics) answer with an unknown number of lines: they are read
until the line falls quiet, by the ``events`` and ``statistics`` tasks or when listed in
``sentences``. Writes are built here and guarded by `Driver.write`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bmslogger.conversation import DEFAULT_MARGIN_S
from bmslogger.driver import Driver
from bmslogger.errors import (
    ConfigError,
    ConfigIssue,
    NoAnswerError,
    ProtocolError,
    UnexpectedAnswerError,
    WriteRefusedError,
)
from bmslogger.model import FieldValue, Point, PollResult

from . import DEFAULT_BROADCAST, DEFAULT_REQUEST, WRITES
from . import protocol as p

#: Answers of one pipelined batch stay below this, so neither the unit's transmit buffer
#: nor the host's input buffer has to hold more.
BATCH_BYTES = 1024
#: Ignored without complaint: CAN traffic mirrored to the serial port (§7.23).
MIRROR = ("CN1", "CN2")
#: 2000-01-01 00:00:00 UTC in Unix seconds: the unit's clock epoch.
EPOCH_2000_UNIX = 946_684_800
#: The longest LG1/SS1 answer waited for (256 lines).
LIST_MAX_BYTES = 256 * 40


@dataclass
class Reading:
    """Everything decoded in one poll, keyed by sentence name."""

    summaries: dict[str, p.Summary] = field(default_factory=dict)
    groups: dict[str, dict[tuple[int, int], p.Group]] = field(default_factory=dict)
    events: list[p.LogEvent] = field(default_factory=list)
    statistics: list[p.Statistic] = field(default_factory=list)


def _write_sentence(name: str, value: str, password: str) -> tuple[str, tuple[str, ...], str]:
    """(sentence name, arguments, text safe to show) for write command `name`."""
    text = (value or "").strip()
    if name == "set_soc":
        try:
            soc = float(text)
        except ValueError:
            raise WriteRefusedError(f"set_soc needs a percentage 0-100, got {value!r}") from None
        if not 0.0 <= soc <= 100.0:
            raise WriteRefusedError(f"set_soc needs a percentage 0-100, got {value!r}")
        args: tuple[str, ...] = (p.soc_field(soc),)
        return "SC1", args, p.encode_sentence("SC1", args).decode("ascii").rstrip()
    if name == "login":
        if text.lower() == "logout":
            return "PW1", (), p.encode_sentence("PW1").decode("ascii").rstrip()
        if text:
            raise WriteRefusedError("login takes the password from the password option (a "
                                    "secret, never logged), not as a value; give no value, "
                                    "or \"logout\"")
        if not password:
            raise WriteRefusedError("login needs the password option (--option password=... "
                                    "or password / password_file in the config)")
        return "PW1", (password,), "PW1,***,**"
    simple = {"reset_current_sensor": ("RC1", ()), "clear_events": ("LG1", ("c",)),
              "clear_statistics": ("SS1", ("c",)), "reset": ("RS1", ()),
              "factory_defaults": ("FD1", ())}
    if name not in simple:  # pragma: no cover - Driver.write only passes declared names
        raise WriteRefusedError(f"unknown command {name!r}")
    if text:
        raise WriteRefusedError(f"{name} takes no value, got {value!r}")
    sentence, args = simple[name]
    return sentence, args, p.encode_sentence(sentence, args).decode("ascii").rstrip()


class EmusDriver(Driver):
    """Reads an EMUS G1 Control Unit; see the module docstring for the two modes."""

    WRITES = WRITES

    def setup(self) -> None:
        opts = self.options
        self.mode: str = opts.get("mode", "request")
        names = tuple(str(n).strip().upper() for n in opts.get("sentences", ()))
        unknown = [n for n in names if n not in p.READS]
        if unknown:
            raise ConfigError([ConfigIssue("", "sentences", (
                f"unknown or write sentence(s) {', '.join(unknown)}; "
                f"read sentences: {', '.join(p.READS)}"))])
        default = DEFAULT_REQUEST if self.mode == "request" else DEFAULT_BROADCAST
        self.sentences: tuple[str, ...] = tuple(dict.fromkeys(names or default))
        self.cells_option: int = int(opts.get("cells", 0))
        self.sensors_option: int = int(opts.get("cell_sensors", 0))
        self.pipeline: bool = bool(opts.get("pipeline", True))
        self.broadcast_period_s: float = float(opts.get("broadcast_period", 1.0))
        self.invert_current: bool = bool(opts.get("invert_current", False))
        self.line_sync: bool = bool(opts.get("line_sync", True))
        self.password: str = str(opts.get("password", ""))
        self.conversation = self.conversation_for_line(retries=0)
        self.retries = max(0, int(self.device.retries))
        self._parser = p.SentenceParser()
        self._extra_logged: set[str] = set()

    # --- counts and completeness ------------------------------------------------------

    def cell_count(self, group: str, reading: Reading) -> int | None:
        """Cells (or sensors, for BT4) group sentence `group` must cover; None if unknown."""
        option = self.sensors_option if group == "BT4" else self.cells_option
        if option:
            return option
        for source in p.GROUP_COUNT_FROM[group]:
            summary = reading.summaries.get(source)
            if summary is not None and summary.get("cells") is not None:
                return int(min(summary.get("cells"), p.MAX_CELLS))
        return None

    def _covered(self, group: str, reading: Reading) -> int:
        return sum(g.size for g in reading.groups.get(group, {}).values())

    def _complete(self, name: str, reading: Reading, counts: Mapping[str, int | None]) -> bool:
        if name in p.GROUPS:
            count = counts.get(name)
            return count is not None and self._covered(name, reading) >= count
        return name in reading.summaries

    def _store(self, sentence: p.Sentence, reading: Reading, wanted: Sequence[str],
               counts: Mapping[str, int | None]) -> None:
        """Decode and keep `sentence`; `UnexpectedAnswerError` for what nobody asked."""
        name = sentence.name
        if name in p.GROUPS:
            if name not in wanted or counts.get(name) is None:
                raise UnexpectedAnswerError(f"{name} line while not waiting for it",
                                            sentence.raw)
            group = p.decode_group(sentence)
            if group.first >= (counts[name] or 0):
                raise UnexpectedAnswerError(
                    f"{name} group from cell {group.first + 1} beyond the "
                    f"{counts[name]} cells reported", sentence.raw)
            reading.groups.setdefault(name, {})[group.key] = group
            return
        if name not in p.LAYOUTS:
            raise UnexpectedAnswerError(f"{name} while waiting for {', '.join(wanted)}",
                                        sentence.raw)
        if name not in wanted and name not in self.sentences:
            raise UnexpectedAnswerError(f"{name} was not asked for", sentence.raw)
        summary = p.decode_summary(sentence)
        if summary.extra and name not in self._extra_logged:
            self._extra_logged.add(name)
            self.log.debug("%s carries %d fields beyond the known layout (newer firmware?): "
                           "%s", name, len(summary.extra), ",".join(summary.extra))
        reading.summaries[name] = summary

    # --- request mode -------------------------------------------------------------------

    def _request_bytes(self, names: Sequence[str]) -> bytes:
        return b"".join(p.request(n, sync=self.line_sync) for n in names)

    def _batches(self, names: Sequence[str], counts: Mapping[str, int | None]
                 ) -> list[list[str]]:
        if not self.pipeline:
            return [[n] for n in names]
        out: list[list[str]] = []
        size = 0
        for name in names:
            need = p.answer_bytes(name, counts.get(name) or 0)
            if out and size + need <= BATCH_BYTES:
                out[-1].append(name)
                size += need
            else:
                out.append([name])
                size = need
        return out

    def _exchange(self, batch: Sequence[str], reading: Reading,
                  counts: Mapping[str, int | None]) -> list[str]:
        """Ask `batch`, retrying only what is missing; returns the names still missing."""
        pending = list(batch)
        for attempt in range(1 + self.retries):
            if attempt:
                self.counters.count("retry")
            wanted = list(pending)
            request = self._request_bytes(wanted)
            expect = sum(p.answer_bytes(n, counts.get(n) or 0) for n in wanted)

            def on_frame(sentence: p.Sentence, wanted: list[str] = wanted) -> bool:
                if sentence.name in MIRROR:
                    return False
                self._store(sentence, reading, wanted, counts)
                return all(self._complete(n, reading, counts) for n in wanted)

            try:
                self.conversation.exchange(request, self._parser, on_frame, expect,
                                           label=",".join(wanted), retries=0)
            except NoAnswerError:
                pass
            pending = [n for n in pending if not self._complete(n, reading, counts)]
            if not pending:
                break
        return pending

    def _ask(self, names: Sequence[str], reading: Reading, result: PollResult) -> None:
        counts = {n: self.cell_count(n, reading) for n in names if n in p.GROUPS}
        for batch in self._batches(names, counts):
            result.requests += len(batch)
            missing = self._exchange(batch, reading, counts)
            result.answered += len(batch) - len(missing)
            tries = 1 + self.retries
            for name in missing:
                if name in p.GROUPS and reading.groups.get(name):
                    result.errors.append(f"{name}: {self._covered(name, reading)} of "
                                         f"{counts[name]} cells after {tries} tries")
                else:
                    result.errors.append(f"{name}: no valid answer after {tries} tries")

    def _ask_list(self, name: str, reading: Reading, result: PollResult) -> None:
        """LG1/SS1: any number of lines; the answer ends when the line falls quiet."""
        result.requests += 1
        request = self._request_bytes([name])
        wire = self.transport.wire_time
        items: list[Any] = []
        for attempt in range(1 + self.retries):
            if attempt:
                self.counters.count("retry")
            stale = self.transport.discard_input()
            if stale:
                self.counters.count("stale_bytes", len(stale))
            self._parser.close()
            self.transport.write(request)
            start = time.monotonic()
            wait = self.conversation.deadline_s(len(request), p.answer_bytes(name))
            deadline = start + wait
            hard = start + wait + wire(LIST_MAX_BYTES)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                chunk = self.transport.read(remaining)
                if not chunk:
                    continue
                for event in self._parser.events(chunk):
                    if isinstance(event, ProtocolError):
                        self.counters.count(event.kind)
                        continue
                    if event.name != name:
                        if event.name not in MIRROR:
                            self.counters.count(UnexpectedAnswerError.kind)
                        continue
                    try:
                        items.append(p.decode(event))
                    except ProtocolError as err:
                        self.counters.count(err.kind)
                # the answer is flowing: it ends when no line follows within a line's time
                deadline = min(hard, max(deadline, time.monotonic() + wire(64)
                                         + DEFAULT_MARGIN_S))
            partial = self._parser.close()
            if partial is not None:
                self.counters.count(partial.kind)
            if items:
                break
            self.counters.count(NoAnswerError.kind)
        if not items:
            result.errors.append(f"{name}: no valid answer after {1 + self.retries} tries")
            return
        result.answered += 1
        if name == "LG1":
            reading.events = [i for i in items if isinstance(i, p.LogEvent)]
        else:
            reading.statistics = [i for i in items if isinstance(i, p.Statistic)]

    def poll(self) -> PollResult:
        """Read the configured sentences once; keep what was read when a part fails."""
        if self.mode == "broadcast":
            return self._listen_broadcast()
        result = PollResult()
        t = self.clock()
        reading = Reading()
        names = self.sentences
        groups = [n for n in names if n in p.GROUPS]
        summary = [n for n in names if n in p.LAYOUTS]
        for group in groups:  # a group sentence needs its count source
            if self.cell_count(group, reading) is None and not any(
                    s in summary for s in p.GROUP_COUNT_FROM[group]):
                summary.append(p.GROUP_COUNT_FROM[group][0])
        known = [g for g in groups if self.cell_count(g, reading) is not None]
        first = summary + known
        if first:
            self._ask(first, reading, result)
            if result.answered == 0:
                result.errors.append("EMUS silent (wrong port, baud rate, or broadcast-only "
                                     "unit?); nothing else asked")
                return result
        for group in groups:
            if group in known:
                continue
            count = self.cell_count(group, reading)
            if count is None:
                result.requests += 1
                result.errors.append(f"{group}: skipped, cell count unknown "
                                     f"({'/'.join(p.GROUP_COUNT_FROM[group])} not read)")
            elif count == 0 and group != "BT4":
                result.requests += 1
                result.errors.append(f"{group}: skipped, the unit reports 0 cells")
        later = [g for g in groups if g not in known and self.cell_count(g, reading)]
        if later:
            self._ask(later, reading, result)
        for name in names:
            if name in p.LISTS:
                self._ask_list(name, reading, result)
        result.points.extend(self.points(reading, t))
        return result

    def run_task(self, task: str) -> PollResult:
        """``statistics`` (SS1) or ``events`` (LG1)."""
        name = {"statistics": "SS1", "events": "LG1"}.get(task)
        if name is None:
            return super().run_task(task)
        result = PollResult()
        t = self.clock()
        reading = Reading()
        self._ask_list(name, reading, result)
        result.points.extend(self.points(reading, t))
        return result

    # --- broadcast mode -----------------------------------------------------------------

    def _listen_broadcast(self) -> PollResult:
        result = PollResult()
        t = self.clock()
        reading = Reading()
        expected = list(self.sentences)
        counts = {n: self.cell_count(n, reading) for n in expected if n in p.GROUPS}
        stale = self.transport.discard_input()
        if stale:
            self.counters.count("stale_bytes", len(stale))
        parser = p.SentenceParser(skip_first_partial=True)
        expect = sum(p.answer_bytes(n, counts.get(n) or 0) for n in expected)
        wait = self.device.timeout_s or (
            self.broadcast_period_s + self.transport.wire_time(expect)
            + self.transport.settings.turnaround_s + DEFAULT_MARGIN_S)
        start = time.monotonic()
        deadline = start + wait
        heard = 0
        wanted = expected + [n for n in p.LAYOUTS if n not in expected]

        def done() -> bool:
            return all(self._complete(n, reading, counts) for n in expected)

        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            chunk = self.transport.read(remaining)
            heard += len(chunk)
            for event in parser.events(chunk):
                if isinstance(event, ProtocolError):
                    self.counters.count(event.kind)
                    self.log.debug("broadcast: %s: %s", event.kind, event)
                    continue
                if event.name in MIRROR:
                    continue
                try:
                    self._store(event, reading, wanted, counts)
                except ProtocolError as err:
                    self.counters.count(err.kind)
                    continue
                for name in counts:  # a summary heard may tell a group's cell count
                    if counts[name] is None:
                        counts[name] = self.cell_count(name, reading)
        if parser.skipped_partial:
            self.counters.count("stale_bytes", 1)
        result.requests = len(expected)
        result.answered = sum(1 for n in expected if self._complete(n, reading, counts))
        if not heard:
            result.errors.append(f"nothing heard in {wait:.2f} s: is the unit broadcasting "
                                 "on this port, at this period (broadcast_period)?")
        else:
            for name in expected:
                if not self._complete(name, reading, counts):
                    result.errors.append(f"{name}: not heard within {wait:.2f} s (one "
                                         "broadcast period plus wire time)")
        result.points.extend(self.points(reading, t))
        return result

    # --- points ---------------------------------------------------------------------------

    def points(self, reading: Reading, t: int) -> list[Point]:
        """Every point from one poll's `reading`, timestamped `t` (events: their own time)."""
        tags = {**self.base_tags, "pack": "1"}
        s = reading.summaries
        out: list[Point] = []

        def val(name: str, key: str) -> Any:
            summary = s.get(name)
            return None if summary is None else summary.get(key)

        def put(fields: dict[str, FieldValue], key: str, value: Any) -> None:
            if value is not None:
                fields[key] = value

        battery: dict[str, FieldValue] = {}
        voltage = val("CV1", "voltage_v")
        if voltage is None:
            voltage = val("BV1", "total_v")
        current = val("CV1", "current_a")
        if current is not None and self.invert_current:
            current = -current
        put(battery, "voltage_v", voltage)
        if current is not None:
            battery["current_a"] = current
            battery["charging"] = current > 0
            if voltage is not None:
                battery["power_w"] = round(voltage * current, 2)
        put(battery, "soc_pct", val("BC1", "soc_pct"))
        charge, capacity = val("BC1", "charge_c"), val("BC1", "capacity_c")
        if charge is not None:
            battery["remaining_ah"] = round(charge / 3600, 3)
        if capacity is not None:
            battery["full_ah"] = round(capacity / 3600, 3)
        lo, hi = val("BV1", "min_v"), val("BV1", "max_v")
        put(battery, "cell_min_v", lo)
        put(battery, "cell_max_v", hi)
        put(battery, "cell_avg_v", val("BV1", "avg_v"))
        if lo is not None and hi is not None:
            battery["cell_delta_v"] = round(hi - lo, 2)
        put(battery, "temp_min_c", val("BT1", "min_c"))
        put(battery, "temp_max_c", val("BT1", "max_c"))
        rates = self._cells(reading, "BB2")
        if rates:
            battery["balancing_cells"] = sum(1 for raw in rates.values() if raw > 0)
        if battery:
            out.append(Point("battery", tags, battery, t))

        volts, temps = self._cells(reading, "BV2"), self._cells(reading, "BT2")
        for key in sorted(set(volts) | set(temps) | set(rates)):
            string, cell = key
            cell_tags = {**tags, "pack": str(string + 1), "cell": str(cell + 1)}
            fields: dict[str, FieldValue] = {}
            if key in volts:
                fields["voltage_v"] = p.cell_voltage(volts[key])
            if key in rates:
                fields["balancing"] = rates[key] > 0
            if key in temps:
                fields["temperature_c"] = p.temperature(temps[key])
            out.append(Point("cell", cell_tags, fields, t))
            if key in rates:
                out.append(Point("emus_cell", cell_tags,
                                 {"balancing_pct": p.balancing_rate(rates[key])}, t))
        for (string, sensor), raw in sorted(self._cells(reading, "BT4").items()):
            out.append(Point("temperature", {**tags, "pack": str(string + 1),
                                             "sensor": str(sensor + 1)},
                             {"temperature_c": p.temperature(raw)}, t))

        st1 = s.get("ST1")
        prot, red = val("ST1", "protection_flags"), val("ST1", "reduction_flags")
        if prot is not None or red is not None:
            alarm: dict[str, FieldValue] = {**p.bits(prot, p.PROTECTION_BITS),
                                            **p.bits(red, p.REDUCTION_BITS)}
            named = sum(1 for i, n in enumerate(p.REDUCTION_BITS) if n and (red or 0) >> i & 1)
            unknown = bin(red or 0).count("1") - named
            alarm["active_count"] = bin(prot or 0).count("1") + named + unknown
            alarm["unknown_count"] = unknown
            out.append(Point("alarm", tags, alarm, t))

        pack: dict[str, FieldValue] = {}
        put(pack, "cells", val("BV1", "cells"))
        put(pack, "module_temp_avg_c", val("BT1", "avg_c"))
        for key in ("min", "max", "avg"):
            put(pack, f"balancing_{key}_pct", val("BB1", f"{key}_pct"))
        put(pack, "balancing_threshold_v", val("BB1", "threshold_v"))
        put(pack, "cell_sensors", val("BT3", "cells"))
        for key in ("min", "max", "avg"):
            put(pack, f"cell_temp_{key}_c", val("BT3", f"{key}_c"))
        put(pack, "charge_c", charge)
        put(pack, "capacity_c", capacity)
        if pack:
            out.append(Point("emus_pack", tags, pack, t))

        charging: dict[str, FieldValue] = {}
        if st1 is not None:
            stage, error = st1.get("stage"), st1.get("error")
            if stage is not None:
                charging["stage"] = p.STAGES.get(stage, "unknown")
                charging["stage_code"] = stage
            if error is not None:
                charging["error"] = p.CHARGING_ERRORS.get(error, "unknown")
                charging["error_code"] = error
            put(charging, "error_param", st1.get("error_param"))
            put(charging, "stage_duration_s", st1.get("stage_duration_s"))
        cs1 = s.get("CS1")
        if cs1 is not None:
            for key in ("chargers", "charger_status", "set_voltage_v", "set_current_a",
                        "actual_voltage_v", "actual_current_a"):
                put(charging, key, cs1.get(key))
        if charging:
            out.append(Point("emus_charging", tags, charging, t))

        if st1 is not None:
            flags: dict[str, FieldValue] = {}
            status = st1.get("status_flags")
            put(flags, "status_flags", status)
            put(flags, "protection_flags", prot)
            put(flags, "reduction_flags", red)
            if status is not None:
                flags.update(p.bits(status, p.STATUS_BITS))
            if flags:
                out.append(Point("emus_flags", tags, flags, t))
        pins: dict[str, FieldValue] = {}
        pin_flags = val("ST1", "pin_flags")
        if pin_flags is not None:
            pins["pin_flags"] = pin_flags
            pins.update(p.bits(pin_flags, p.PIN_FUNCTIONS))
        for i in range(1, 5):
            put(pins, f"outputs_{i}", val("OT1", f"outputs_{i}"))
        put(pins, "inputs_1", val("IN1", "inputs_1"))
        if pins:
            out.append(Point("emus_pins", tags, pins, t))

        for measurement, name in (("emus_distance", "DT1"),):
            summary = s.get(name)
            if summary is not None:
                fields = {k: float(v) for k, v in summary.values.items() if v is not None}
                if fields:
                    out.append(Point(measurement, tags, fields, t))

        info: dict[str, FieldValue] = {}
        for key in ("hardware", "serial", "firmware"):
            put(info, key, val("VR1", key))
        td1 = s.get("TD1")
        if td1 is not None:
            parts = [td1.get(k) for k in ("year", "month", "day", "hour", "minute", "second")]
            if None not in parts:
                info["clock"] = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}".format(*parts)
            put(info, "uptime_s", td1.get("uptime_s"))
        if info:
            out.append(Point("emus_info", tags, info, t))

        cg1 = s.get("CG1")
        if cg1 is not None:
            can: dict[str, FieldValue] = {}
            for key, value in cg1.values.items():
                if value is None:
                    continue
                if key == "current_sensor" or key.endswith("_status"):
                    can[key] = p.CAN_STATUS.get(value, "unknown")
                else:
                    can[key] = value
            if can:
                out.append(Point("emus_can", tags, can, t))

        rs2 = s.get("RS2")
        if rs2 is not None:
            resets: dict[str, FieldValue] = {}
            for key, value in rs2.values.items():
                if value is not None:
                    resets[key] = p.timestamp(value) if key.endswith("_time") else value
            if resets:
                out.append(Point("emus_resets", tags, resets, t))

        for stat in reading.statistics:
            fields = {"raw": stat.value} if stat.value is not None else {}
            if stat.value is not None:
                fields["value"] = stat.scaled  # type: ignore[assignment]
            put(fields, "info", stat.info)
            if stat.time_s is not None:
                fields["time"] = p.timestamp(stat.time_s)
            if fields:
                out.append(Point("emus_statistic", {**tags, "statistic": stat.key},
                                 fields, t))
        for event in reading.events:
            # the event's own time (unit clock, read as UTC) keeps re-reads idempotent;
            # the sequence number in the nanoseconds keeps two events in one second apart
            when = t if event.time_s is None else (
                (EPOCH_2000_UNIX + event.time_s) * 1_000_000_000
                + event.sequence % 1_000_000_000)
            fields = {"sequence": event.sequence, "code": event.code, "event": event.text}
            put(fields, "data", event.data)
            out.append(Point("emus_event", tags, fields, when))
        return out

    @staticmethod
    def _cells(reading: Reading, name: str) -> dict[tuple[int, int], int]:
        """Raw byte per (string, cell index) from the lines of group sentence `name`."""
        out: dict[tuple[int, int], int] = {}
        for group in reading.groups.get(name, {}).values():
            if group.raw is None:
                continue
            for i, raw in enumerate(group.raw):
                out[(group.string, group.first + i)] = raw
        return out

    # --- writes -------------------------------------------------------------------------------

    def _plan_write(self, name: str, value: str) -> Mapping[str, Any]:
        """What `name` would send: the sentence (a password shown as ***)."""
        _, _, shown = _write_sentence(name, value, self.password)
        return {"command": name, "value": value, "sentence": shown}

    def _read_soc(self) -> float | None:
        reading = Reading()
        missing = self._exchange(["BC1"], reading, {})
        return None if missing else reading.summaries["BC1"].get("soc_pct")

    def _write(self, name: str, value: str) -> Mapping[str, Any]:
        """Send one command (Driver.write has already checked allow_writes)."""
        sentence, args, shown = _write_sentence(name, value, self.password)
        old_soc = self._read_soc() if name == "set_soc" else None
        request = p.write_sentence(sentence, args, sync=self.line_sync)
        self.log.info("sending %s=%s: %s", name, value, shown)
        answer: dict[str, p.Sentence] = {}

        def on_frame(reply: p.Sentence) -> bool:
            if reply.name != sentence:
                raise UnexpectedAnswerError(f"{reply.name} while waiting for the {sentence} "
                                            "acknowledgement", reply.raw)
            answer["reply"] = reply
            return True

        # never repeated: whether the unit acknowledges at all is undocumented, and a
        # reboot or factory reset must not be sent twice
        try:
            self.conversation.exchange(request, self._parser, on_frame,
                                       expect_bytes=len(request), label=sentence, retries=0)
        except NoAnswerError:
            pass
        reply = answer.get("reply")
        out: dict[str, Any] = {"command": name, "sentence": shown,
                               "acknowledged": reply is not None}
        if reply is not None:
            out["reply"] = "PW1,***" if sentence == "PW1" and args else str(reply)
        if sentence == "PW1" and reply is not None and args:
            out["logged_in"] = reply.fields[:1] == ("1",)
        if name == "set_soc":
            out["old_soc_pct"] = old_soc
            out["new_soc_pct"] = self._read_soc()
        self.log.info("%s answered %s", name, out)
        return out
