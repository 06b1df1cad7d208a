"""The conversation with a PACE battery through its master's RS-232 port.

One poll: 0x90 (how many packs the master reports; it also sizes the deadline of the
long multi-pack replies), then 0x42 and 0x44 for every pack at once (COMMAND FF), and in
``per_pack = "auto"`` one request per pack for the packs a firmware left out of its FF
answer (some answer FF with the first pack only). ``per_pack = "always"`` asks pack by pack,
``"never"`` only with FF. Each exchange goes through the shared
`bmslogger.conversation.Conversation` (stale input discarded, deadline from the wire time
of the expected reply, retries, errors counted by kind).

A pack that is offline (the master sends an all-zero record, or says nothing when asked
for it alone) costs only its own data: the other packs' points are returned, with one
``errors`` entry per missing pack, so ``bmslogger read`` exits 1; a battery that answers
nothing at all gives a silent result (exit 3).

A frame is only used if its checksums are right, it is not our own request coming back
(bridges that echo), it carries the configured CID1, and its INFO decodes as the answer
asked for (pack echo byte, record layout, cell counts that agree between 0x42 and 0x44).
Replies are matched by position, never by ADR: on RS-232 the BMS answers any ADR with
its own DIP address (§7).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from bmslogger.driver import Driver
from bmslogger.errors import (
    DeviceReportedError,
    NoAnswerError,
    ProtocolError,
    UnexpectedAnswerError,
)
from bmslogger.model import FieldValue, Point, PollResult

from . import protocol as p

#: INFO bytes assumed per pack record before a reply has shown the real size: a 16-cell,
#: 8-sensor record with the longest known tail (generous on purpose: too short a guess
#: cuts a long reply off, too long only costs time when the battery is silent).
ANALOG_RECORD_GUESS = 1 + 2 * 16 + 1 + 2 * 8 + 7 + 28
STATUS_RECORD_GUESS = 1 + 16 + 1 + 8 + 12 + 8
#: packs assumed when the master does not say (0x90 unsupported)
MAX_PACKS_GUESS = 15

NAMES = {p.PACK_COUNT: "pack count", p.ANALOG: "analog", p.STATUS: "status",
         p.VERSION: "version", p.PRODUCT: "product info", p.DATETIME: "clock"}


def _label(cid2: int, command: int | None = None) -> str:
    name = f"0x{cid2:02X} {NAMES.get(cid2, 'request')}"
    if command is None:
        return name
    return f"{name} {'all packs' if command == p.ALL_PACKS else f'pack {command}'}"


class PaceDriver(Driver):
    """Polls every configured pack of a PACE battery; see the module docstring."""

    def setup(self) -> None:
        opts = self.options
        self.address = int(opts.get("address", 1))
        self.packs: tuple[int, ...] = tuple(sorted(set(opts.get("packs", ()))))
        self.per_pack: str = opts.get("per_pack", "auto")
        self.ver = int(opts.get("version", "0x25"), 16)
        self.cid1 = int(opts.get("cid1", p.CID1_BATTERY))
        extra = int(opts.get("analog_extra_bytes", -1))
        self.tail_bytes: int | None = None if extra < 0 else 6 + extra
        extra = int(opts.get("status_extra_bytes", -1))
        self.status_extra: int | None = None if extra < 0 else extra
        self.temp_offset = int(opts.get("temp_offset", p.TEMP_OFFSET))
        self.invert_current = bool(opts.get("invert_current", False))
        self.cell_width = int(opts.get("cell_tag_width", 0))
        self.pack_width = int(opts.get("pack_tag_width", 0))
        self.read_info = bool(opts.get("read_info", False))
        self.info_interval_s = float(opts.get("info_interval", 3600.0))
        self.request_gap_s = float(opts.get("request_gap", 0.05))
        self.conversation = self.conversation_for_line()
        self._parser = p.FrameParser()
        self._last_end = 0.0
        # record sizes seen in this poll, for the deadline of the next request
        self._analog_size = ANALOG_RECORD_GUESS
        self._status_size = STATUS_RECORD_GUESS

    # --- one exchange ---------------------------------------------------------------------

    def _pace(self) -> None:
        """Keep `request_gap` of silence after the previous answer: packs that are asked
        again at once have been seen to stop answering (§1)."""
        wait = self._last_end + self.request_gap_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _ask(self, cid2: int, info: bytes, expect_info: int, decode: Callable[[p.Frame], Any],
             label: str) -> Any:
        """Send one request and return `decode` of the first acceptable answer.

        Raises `NoAnswerError` when no valid answer came after every retry, and
        `DeviceReportedError` when the BMS answered with an error RTN (after asking again
        for 02/03, which mean our request arrived damaged)."""
        request = p.request(cid2, info, self.address, self.ver, self.cid1)
        attempts = 1 + max(0, self.device.retries)
        got: dict[str, Any] = {}

        def on_frame(frame: p.Frame) -> bool:
            if p.is_echo(frame, request):
                raise UnexpectedAnswerError("echo of our own request", frame.raw)
            if frame.cid1 != self.cid1:
                raise UnexpectedAnswerError(
                    f"foreign frame with CID1 0x{frame.cid1:02X}", frame.raw)
            if frame.ver not in (p.VER_PACE, p.VER_PYLON, self.ver):
                raise UnexpectedAnswerError(f"frame with VER 0x{frame.ver:02X}", frame.raw)
            if frame.rtn != 0:
                got["error"] = frame
                return True
            got["value"] = decode(frame)
            return True

        for attempt in range(attempts):
            got.clear()
            self._pace()
            try:
                self.conversation.exchange(
                    request, self._parser, on_frame,
                    expect_bytes=p.MIN_FRAME + 2 * expect_info, label=label)
            finally:
                self._last_end = time.monotonic()
            if "value" in got:
                return got["value"]
            error: p.Frame = got["error"]
            self.counters.count(DeviceReportedError.kind)
            if error.rtn in (0x02, 0x03) and attempt + 1 < attempts:
                self.counters.count("retry")
                continue
            p.check_rtn(error, label)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the poll ---------------------------------------------------------------------------

    def poll(self) -> PollResult:
        """Read every configured pack; keep what was read when a pack or a part fails."""
        result = PollResult()
        now_ns = self.clock()
        self._analog_size, self._status_size = ANALOG_RECORD_GUESS, STATUS_RECORD_GUESS

        def ask(cid2: int, info: bytes, expect: int, decode: Callable[[p.Frame], Any],
                label: str) -> Any:
            result.requests += 1
            try:
                value = self._ask(cid2, info, expect, decode, label)
            except DeviceReportedError:
                result.answered += 1  # it did answer, with an error code
                raise
            result.answered += 1
            return value

        count: int | None = None
        if not (self.per_pack == "always" and self.packs):
            try:
                count = ask(p.PACK_COUNT, b"", 1, lambda f: p.decode_pack_count(f.info),
                            _label(p.PACK_COUNT))
            except NoAnswerError as err:
                result.errors.append(f"{err}; battery silent (asleep, wrong port or "
                                     "cable?), nothing else asked")
                return result
            except DeviceReportedError as err:
                self.log.debug("pack count unknown: %s", err)
        wanted = list(self.packs) or (list(range(1, count + 1)) if count else [])

        analog, analog_info = self._read_packs(p.ANALOG, ask, result, wanted, count, {})
        if not analog and not result.answered:
            return result
        online = {n: rec for n, rec in analog.items() if not rec.offline}
        status, _ = self._read_packs(p.STATUS, ask, result, sorted(online) or wanted, count,
                                     online)

        shown = wanted or sorted(analog)
        for n in shown:
            rec = analog.get(n)
            if rec is None:
                result.errors.append(f"pack {n}: no 0x42 analog values "
                                     f"({analog_info.get(n, 'not in the answer')})")
                continue
            if rec.offline:
                result.errors.append(f"pack {n}: offline (the master sent an all-zero record)")
                continue
            st = status.get(n)
            if st is None:
                result.errors.append(f"pack {n}: no 0x44 status; analog values kept")
            result.points.extend(self._pack_points(n, rec, st, now_ns))

        if self.read_info:
            self._poll_info(ask, result, count, now_ns)
        return result

    def _read_packs(self, cid2: int, ask: Callable[..., Any], result: PollResult,
                    wanted: list[int], count: int | None, analog: Mapping[int, p.AnalogPack],
                    ) -> tuple[dict[int, Any], dict[Any, Any]]:
        """0x42 or 0x44 for the wanted packs: FF first (unless per_pack is "always"), then
        pack by pack for what FF left out (per_pack "auto"/"always"). Returns records by
        pack number, and notes (why a pack is missing; the solved tail length)."""
        got: dict[int, Any] = {}
        notes: dict[Any, Any] = {}
        size = self._analog_size if cid2 == p.ANALOG else self._status_size
        if self.per_pack != "always":
            packs_expected = count or (max(wanted) if wanted else MAX_PACKS_GUESS)
            try:
                reply = ask(cid2, bytes((p.ALL_PACKS,)), 2 + packs_expected * size,
                            self._decoder(cid2, p.ALL_PACKS, analog), _label(cid2, p.ALL_PACKS))
            except (NoAnswerError, DeviceReportedError) as err:
                result.errors.append(str(err))
                if self.per_pack == "never" or not wanted:
                    for n in wanted:
                        notes[n] = "the FF request failed"
                    return got, notes
            else:
                for n, rec in enumerate(reply.packs, 1):
                    got[n] = rec
                self._learn(cid2, reply)
                notes["tail"] = reply.tail_bytes if cid2 == p.ANALOG else reply.extra_bytes
                if len(reply.packs) < len(wanted) or (count and len(reply.packs) < count):
                    self.log.debug("FF answered %d pack(s) of %s", len(reply.packs),
                                   count or len(wanted))
        if self.per_pack == "never":
            return got, notes
        for n in wanted:
            if n in got:
                continue
            try:
                reply = ask(cid2, bytes((n,)), 2 + self._size(cid2),
                            self._decoder(cid2, n, analog), _label(cid2, n))
            except NoAnswerError as err:
                notes[n] = f"no answer when asked alone: {err}"
                continue
            except (DeviceReportedError, ProtocolError) as err:
                notes[n] = str(err)
                continue
            got[n] = reply.packs[0]
            self._learn(cid2, reply)
            notes.setdefault("tail", reply.tail_bytes if cid2 == p.ANALOG else reply.extra_bytes)
        return got, notes

    def _size(self, cid2: int) -> int:
        return self._analog_size if cid2 == p.ANALOG else self._status_size

    def _learn(self, cid2: int, reply: Any) -> None:
        """Size the next deadline from the record length this battery really sends."""
        live = [r for r in reply.packs if not getattr(r, "offline", False)]
        if not live:
            return
        r = live[0]
        if cid2 == p.ANALOG:
            self._analog_size = 1 + 2 * len(r.cells_mv) + 1 + 2 * len(r.temps_raw) + 7 + len(
                r.tail)
        else:
            self._status_size = 1 + r.cells + 1 + r.sensors + 12 + len(r.extra)

    def _decoder(self, cid2: int, command: int, analog: Mapping[int, p.AnalogPack]
                 ) -> Callable[[p.Frame], Any]:
        if cid2 == p.ANALOG:
            return lambda f: p.decode_analog(f.info, command, self.tail_bytes)

        def status(frame: p.Frame) -> p.StatusReply:
            reply = p.decode_status(frame.info, command, self.status_extra)
            first = 1 if command == p.ALL_PACKS else command
            for n, rec in enumerate(reply.packs, first):
                seen = analog.get(n)
                if seen is not None and (rec.cells, rec.sensors) != (
                        len(seen.cells_mv), len(seen.temps_raw)):
                    # a late 0x42 answer can pass for a 0x44 one; the counts tell them apart
                    raise UnexpectedAnswerError(
                        f"0x44 record of pack {n} has {rec.cells} cells/{rec.sensors} sensors, "
                        f"0x42 said {len(seen.cells_mv)}/{len(seen.temps_raw)}", frame.raw)
            return reply

        return status

    # --- identity ------------------------------------------------------------------------------

    def _poll_info(self, ask: Callable[..., Any], result: PollResult, count: int | None,
                   t: int) -> None:
        # the driver is rebuilt every poll; the device's memory keeps the schedule
        if time.monotonic() < self.memory.get("info_due", 0.0):
            return
        info: dict[str, FieldValue] = {}
        if count is not None:
            info["pack_count"] = count
        failed = False
        reads = (
            (p.VERSION, 40, lambda f: p.decode_version(f.info)),
            (p.PRODUCT, 40, lambda f: p.decode_product(f.info)),
            (p.DATETIME, 6, lambda f: p.decode_datetime(f.info)),
        )
        for cid2, size, decode in reads:
            try:
                value = ask(cid2, b"", size, decode, _label(cid2))
            except DeviceReportedError as err:
                # an older firmware without this command: not a failure of the poll
                self.log.debug("%s", err)
                continue
            except (NoAnswerError, ProtocolError) as err:
                result.errors.append(str(err))
                failed = True
                continue
            if isinstance(value, p.Version):
                info["software_version"] = value.software
                if value.bluetooth_name is not None:
                    info["bluetooth_name"] = value.bluetooth_name
            elif isinstance(value, p.Product):
                info["bms_info"] = value.bms
                if value.pack is not None:
                    info["pack_info"] = value.pack
            else:
                info["bms_time"] = value
        if info:
            result.points.append(Point("pace_info", dict(self.base_tags), info, t))
        if not failed:
            self.memory["info_due"] = time.monotonic() + self.info_interval_s

    # --- points ------------------------------------------------------------------------------

    def _tag(self, number: int, width: int) -> str:
        return str(number).zfill(width)

    def _pack_points(self, n: int, rec: p.AnalogPack, st: p.StatusPack | None,
                     t: int) -> list[Point]:
        tags = {**self.base_tags, "pack": self._tag(n, self.pack_width)}
        out: list[Point] = []
        current = p.current_a(rec.current_raw)
        if self.invert_current:
            current = -current
        voltage = rec.voltage_mv / 1000
        battery: dict[str, FieldValue] = {
            "voltage_v": voltage, "current_a": current, "charging": current > 0,
            "power_w": round(voltage * current, 2), "remaining_ah": rec.remaining_10mah / 100,
        }
        pack: dict[str, FieldValue] = {"layout": rec.layout, "tail_bytes": len(rec.tail),
                                       "p_value": rec.p_value}
        if rec.full_10mah is not None:
            battery["full_ah"] = rec.full_10mah / 100
        if rec.cycles is not None:
            battery["cycles"] = rec.cycles
        if rec.soc_pct is not None:
            battery["soc_pct"] = float(rec.soc_pct)
            pack["soc_source"] = "bms"
        elif rec.full_10mah:
            battery["soc_pct"] = round(100 * rec.remaining_10mah / rec.full_10mah, 1)
            pack["soc_source"] = "computed"
        if rec.soh_pct is not None:
            battery["soh_pct"] = float(rec.soh_pct)
            pack["soh_source"] = "bms"
        elif rec.design_10mah and rec.full_10mah is not None:
            # full / design exceeds 100 % on many packs (§8.3): capped, as PACE tools show it
            battery["soh_pct"] = min(100.0, round(100 * rec.full_10mah / rec.design_10mah, 1))
            pack["soh_source"] = "computed"
        volts = [mv / 1000 for mv in rec.cells_mv]
        if volts:
            battery.update(
                cell_min_v=min(volts), cell_max_v=max(volts),
                cell_avg_v=round(sum(volts) / len(volts), 4),
                cell_delta_v=round(max(volts) - min(volts), 3),
            )
        temps = rec.temperatures_c(self.temp_offset)
        cell_temps = temps[:4] if len(temps) == 6 else temps
        present = [c for c in cell_temps if c is not None]
        if present:
            battery.update(temp_min_c=min(present), temp_max_c=max(present))
        if len(temps) == 6:
            if temps[4] is not None:
                pack["mosfet_temperature_c"] = temps[4]
            if temps[5] is not None:
                pack["environment_temperature_c"] = temps[5]
        if st is not None:
            battery["balancing_cells"] = sum(st.balancing(c) for c in range(1, len(volts) + 1))
        if rec.design_10mah is not None:
            pack["design_ah"] = rec.design_10mah / 100
        if rec.cumulative_charge is not None:
            pack["cumulative_charge_raw"] = rec.cumulative_charge
            pack["cumulative_discharge_raw"] = rec.cumulative_discharge or 0
        if rec.independent_voltage_mv is not None:
            pack["independent_voltage_v"] = rec.independent_voltage_mv / 1000
        if rec.independent_current_raw is not None:
            amps = p.current_a(rec.independent_current_raw)
            pack["independent_current_a"] = -amps if self.invert_current else amps
        if rec.summary_remaining_10mah is not None:
            pack["summary_remaining_ah"] = rec.summary_remaining_10mah / 100
            pack["summary_full_ah"] = (rec.summary_full_10mah or 0) / 100
        out.append(Point("battery", tags, battery, t))

        for c, v in enumerate(volts, 1):
            fields: dict[str, FieldValue] = {"voltage_v": v}
            if st is not None:
                fields["balancing"] = st.balancing(c)
            out.append(Point("cell", {**tags, "cell": self._tag(c, self.cell_width)}, fields, t))
        for s, c in enumerate(temps, 1):
            if c is not None:
                out.append(Point("temperature", {**tags, "sensor": str(s)},
                                 {"temperature_c": c}, t))
        if st is not None:
            alarms = st.alarms
            undefined = st.undefined_bits
            if undefined:
                self.log.debug("pack %d: undefined status bits set: %s", n, ", ".join(undefined))
            alarm: dict[str, FieldValue] = dict(alarms)
            alarm["active_count"] = sum(alarms.values())
            out.append(Point("alarm", tags, alarm, t))
            status: dict[str, FieldValue] = dict(st.status)
            status.update(
                protect1=st.protect1, protect2=st.protect2, indicator=st.indicator,
                control=st.control, fault=st.fault, warn1=st.warn1, warn2=st.warn2,
                balance_bits=st.balance_bits,
                cell_warning_count=sum(1 for w in st.cell_warnings if w),
                temp_warning_count=sum(1 for w in st.temp_warnings if w),
                extra_bytes=len(st.extra),
            )
            for i, b in enumerate(st.extra[:5], 1):
                status[f"extra_{i}"] = b
            out.append(Point("pace_status", tags, status, t))
        out.append(Point("pace_pack", tags, pack, t))
        return out
