"""The conversation with one Daly smart BMS: which reads, in what order, and the points.

One poll asks 0x94 first (cell and sensor counts decide how many 0x95/0x96 frames carry
values), then 0x90, 0x91, 0x92, 0x93, 0x95, 0x96, 0x97, 0x98, each through the shared
`bmslogger.conversation.Conversation` (stale input discarded, deadline from wire time,
retries, errors counted by kind). Multi-frame answers are complete as soon as frames
1..ceil(n/3) (or 1..ceil(n/7)) are in; units that send all 16 frames are not waited for:
the leftovers are dropped by the next request's discard or ignored by data ID.

A frame is only used if its checksum is right, it carries the data ID asked for, and
it comes from the configured board and not from our own request coming back (a sleeping
BMS echoes; RS-485 adapters loop back). If 0x94 gets no valid answer after every retry,
the BMS is treated as silent for this poll (asleep, wrong address or wrong board) and
nothing else is asked, so a sleeping pack costs one request's retries, not nine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from bmslogger.driver import Driver
from bmslogger.errors import (
    NoAnswerError,
    ProtocolError,
    UnexpectedAnswerError,
    WriteRefusedError,
)
from bmslogger.model import FieldValue, Point, PollResult

from . import WRITES
from . import protocol as p

#: The regular poll, in order (0x94 first: it says how many cells and sensors there are).
POLL_ORDER = (p.STATUS, p.PACK, p.CELL_EXTREMES, p.TEMP_EXTREMES, p.MOSFET,
              p.CELL_VOLTAGES, p.TEMPERATURES, p.BALANCING, p.FAILURES)
#: Identity and thresholds, read with read_info.
INFO_IDS = (p.RATED, p.BATTERY_INFO, p.BATTERY_CODE, p.CELL_THRESHOLDS, p.PACK_THRESHOLDS,
            p.SOFTWARE_VERSION, p.HARDWARE_VERSION)

NAMES = {
    p.STATUS: "status", p.PACK: "pack", p.CELL_EXTREMES: "cell extremes",
    p.TEMP_EXTREMES: "temperature extremes", p.MOSFET: "mosfet", p.CELL_VOLTAGES: "cells",
    p.TEMPERATURES: "temperatures", p.BALANCING: "balancing", p.FAILURES: "failures",
    p.RATED: "rated", p.BATTERY_INFO: "battery info", p.BATTERY_CODE: "battery code",
    p.CELL_THRESHOLDS: "cell thresholds", p.PACK_THRESHOLDS: "pack thresholds",
    p.SOFTWARE_VERSION: "software version", p.HARDWARE_VERSION: "hardware version",
    p.SET_SOC: "set soc", p.CHARGE_MOSFET: "charge mosfet",
    p.DISCHARGE_MOSFET: "discharge mosfet", p.RESET: "reset",
}


def _label(data_id: int) -> str:
    return f"0x{data_id:02X} {NAMES.get(data_id, 'read')}"


class DalyDriver(Driver):
    """Polls a Daly smart BMS; see the module docstring for the order and the rules."""

    WRITES = WRITES

    def setup(self) -> None:
        opts = self.options
        self.board: int = int(opts.get("board", 1))
        host = opts.get("host_address", "0x40")
        #: host addresses to try, in order; "auto" keeps the one that answered first
        self.host_candidates: tuple[int, ...] = (
            (p.HOST_PC, p.HOST_ALT) if host == "auto" else (int(host, 16),)
        )
        # in "auto" mode the address that answered is remembered across polls
        self.host: int | None = (
            self.memory.get("host") if host == "auto" else self.host_candidates[0]
        )
        self.filler: int = int(opts.get("filler", "0x00"), 16)
        #: "all": the unit sends every cell/temperature frame slot; "auto" learns it
        self.frames_mode: str = opts.get("frames", "needed")
        self.sends_all_frames: bool = (
            self.frames_mode == "all" or bool(self.memory.get("sends_all_frames"))
        )
        # bytes of unneeded frames still on the wire after a multi-frame answer: the BMS
        # sends them before it answers the next request, so that wait grows by as much
        self._in_flight = 0
        self._needed: dict[int, int] = {}  # frames needed per multi-frame ID, last asked
        self.invert_current: bool = bool(opts.get("invert_current", False))
        self.read_info: bool = bool(opts.get("read_info", False))
        self.info_interval_s: float = float(opts.get("info_interval", 3600.0))
        # A Daly answers 50-80 ms after a request (reference §3.2; the turnaround in
        # PORT_DEFAULTS is the 80 ms end), so 40 ms of slack for the first byte is ample,
        # and a lost answer costs about 0.135 s before the retry instead of a long timeout.
        self.conversation = self.conversation_for_line(first_byte_margin_s=0.04)
        self._parser = p.FrameParser()

    # --- one exchange ---------------------------------------------------------------------

    def _address(self, host: int) -> int:
        return p.request_address(host, self.board)

    def _check(self, frame: p.Frame, data_id: int, request: bytes) -> None:
        """Reject what is not an answer to `request` (counted as ``unexpected``)."""
        if frame.data_id != data_id and self.frames_mode == "auto" and not self.sends_all_frames:
            limit = self._needed.get(frame.data_id)
            if limit is not None and frame.data[0] > limit:
                self.log.debug("unit sends all 0x%02X frames, not only the needed ones",
                               frame.data_id)
                self.sends_all_frames = self.memory["sends_all_frames"] = True
        if p.is_echo(frame, request):
            raise UnexpectedAnswerError("echo of the request (BMS asleep, or adapter "
                                        "loopback)", frame.raw)
        if frame.data_id != data_id:
            raise UnexpectedAnswerError(
                f"stale or foreign frame 0x{frame.data_id:02X} while waiting for 0x{data_id:02X}",
                frame.raw,
            )
        if frame.address != self.board:
            raise UnexpectedAnswerError(
                f"frame from board {frame.address}, expected board {self.board}", frame.raw
            )

    def _read(self, data_id: int, frames: int = 1, host: int | None = None,
              retries: int | None = None) -> dict[int, p.Frame]:
        """Ask `data_id`; return its frames keyed by frame number (1 for single frames).
        Raises NoAnswerError (or TransportError)."""
        address = self._address(host if host is not None else self._host())
        request = p.read_request(data_id, address, self.filler)
        got: dict[int, p.Frame] = {}
        multi = frames > 1 or data_id in (p.CELL_VOLTAGES, p.TEMPERATURES) or (
            data_id in p.TEXT_FRAMES)
        if data_id in (p.CELL_VOLTAGES, p.TEMPERATURES):
            self._needed[data_id] = frames

        def on_frame(frame: p.Frame) -> bool:
            self._check(frame, data_id, request)
            if not multi:
                got[1] = frame
                return True
            number = frame.data[0]
            if not 1 <= number <= p.MAX_CELL_FRAMES:
                raise UnexpectedAnswerError(f"frame number {number} out of range", frame.raw)
            if number <= frames:
                got[number] = frame
            return all(n in got for n in range(1, frames + 1))

        in_flight, self._in_flight = self._in_flight, 0
        self.conversation.exchange(
            request, self._parser, on_frame, expect_bytes=frames * p.FRAME_LEN + in_flight,
            label=_label(data_id), retries=retries,
        )
        if data_id in self._needed and self.sends_all_frames:
            slots = p.MAX_CELL_FRAMES if data_id == p.CELL_VOLTAGES else p.MAX_TEMP_FRAMES
            self._in_flight = max(0, slots - frames) * p.FRAME_LEN
        return got

    def _host(self) -> int:
        return self.host if self.host is not None else self.host_candidates[0]

    # --- the poll ---------------------------------------------------------------------------

    def poll(self) -> PollResult:
        """Read everything once; keep what was read when a part fails."""
        result = PollResult()
        now_ns = self.clock()
        got: dict[int, Any] = {}

        def ask(data_id: int, decode: Callable[[dict[int, p.Frame]], Any], frames: int = 1,
                ) -> bool:
            result.requests += 1
            try:
                got[data_id] = decode(self._read(data_id, frames))
            except NoAnswerError as err:
                result.errors.append(str(err))
                return False
            except ProtocolError as err:  # checksum-valid frames that make no sense
                self.counters.count(err.kind)
                result.errors.append(f"{_label(data_id)}: {err}")
                return False
            result.answered += 1
            return True

        if not self._first_contact(result, got):
            return result
        status = got.get(p.STATUS)
        cells = int(self.options.get("cells", 0)) or (status.cells if status else 0)
        sensors = int(self.options.get("sensors", 0)) or (status.sensors if status else 0)
        cells = min(cells, p.MAX_CELLS)
        sensors = min(sensors, p.MAX_SENSORS)

        ask(p.PACK, lambda f: p.decode_pack(f[1]))
        ask(p.CELL_EXTREMES, lambda f: p.decode_cell_extremes(f[1]))
        ask(p.TEMP_EXTREMES, lambda f: p.decode_temp_extremes(f[1]))
        ask(p.MOSFET, lambda f: p.decode_mosfet(f[1]))
        if cells:
            ask(p.CELL_VOLTAGES, lambda f: p.assemble_cells(
                {n: p.decode_cell_frame(fr) for n, fr in f.items()}, cells),
                frames=p.cell_frames_needed(cells))
        else:
            result.errors.append("0x95 cells: skipped, no cell count (0x94 failed or said 0)")
        if sensors:
            ask(p.TEMPERATURES, lambda f: p.assemble_temps(
                {n: p.decode_temp_frame(fr) for n, fr in f.items()}, sensors),
                frames=p.temp_frames_needed(sensors))
        elif status is None:
            result.errors.append("0x96 temperatures: skipped, sensor count unknown (0x94 failed)")
        ask(p.BALANCING, lambda f: p.decode_balancing(f[1]))
        ask(p.FAILURES, lambda f: p.decode_failures(f[1]))
        if self.read_info and time.monotonic() >= self.memory.get("info_due", 0.0):
            self._poll_info(result, got, ask)

        result.points.extend(self._points(got, cells, sensors, now_ns))
        return result

    def _first_contact(self, result: PollResult, got: dict[int, Any]) -> bool:
        """0x94, trying each host address in "auto" mode. False if the BMS is silent."""
        hosts = (self.host,) if self.host is not None else self.host_candidates
        errors: list[str] = []
        for host in hosts:
            result.requests += 1
            try:
                raw = self._read(p.STATUS, host=host)
            except NoAnswerError as err:
                errors.append(f"{err} (host address 0x{host:02X})")
                continue
            got[p.STATUS] = p.decode_status(raw[1])
            result.answered += 1
            if self.host is None:
                self.log.debug("BMS answers host address 0x%02X", host)
                self.host = self.memory["host"] = host
            return True
        result.errors.extend(errors)
        result.errors.append(
            f"BMS silent (asleep, wrong host address or board {self.board}?); "
            "nothing else asked"
        )
        if len(self.host_candidates) > 1:
            self.host = self.memory["host"] = None  # probe both addresses again next time
        return False

    def _poll_info(self, result: PollResult, got: dict[int, Any], ask: Callable[..., bool]
                   ) -> None:
        ok = [
            ask(p.RATED, lambda f: p.decode_rated(f[1])),
            ask(p.BATTERY_INFO, lambda f: p.decode_battery_info(f[1])),
            ask(p.CELL_THRESHOLDS, lambda f: p.decode_cell_thresholds(f[1])),
            ask(p.PACK_THRESHOLDS, lambda f: p.decode_pack_thresholds(f[1])),
        ]
        for text_id in (p.BATTERY_CODE, p.SOFTWARE_VERSION, p.HARDWARE_VERSION):
            ok.append(ask(text_id, lambda f, i=text_id: p.assemble_text(
                dict(p.decode_text_frame(fr, i) for fr in f.values()), i),
                frames=p.TEXT_FRAMES[text_id]))
        if all(ok):
            self.memory["info_due"] = time.monotonic() + self.info_interval_s

    # --- points -------------------------------------------------------------------------------

    def _points(self, got: Mapping[int, Any], cells: int, sensors: int, t: int) -> list[Point]:
        tags = {**self.base_tags, "pack": str(self.board)}
        out: list[Point] = []
        battery: dict[str, FieldValue] = {}
        status_fields: dict[str, FieldValue] = {}

        status: p.Status | None = got.get(p.STATUS)
        pack: p.Pack | None = got.get(p.PACK)
        extremes: p.CellExtremes | None = got.get(p.CELL_EXTREMES)
        temps_x: p.TempExtremes | None = got.get(p.TEMP_EXTREMES)
        mos: p.MosfetStatus | None = got.get(p.MOSFET)
        cell_mv: tuple[int, ...] | None = got.get(p.CELL_VOLTAGES)
        temps: tuple[int, ...] | None = got.get(p.TEMPERATURES)
        balancing: p.Balancing | None = got.get(p.BALANCING)
        failures: p.Failures | None = got.get(p.FAILURES)

        if pack is not None:
            current = pack.current_a(self.invert_current)
            battery.update(
                voltage_v=pack.voltage_v, current_a=current,
                power_w=round(pack.voltage_v * current, 2), soc_pct=pack.soc_pct,
            )
            status_fields.update(current_raw=pack.current_raw,
                                 acquired_voltage_v=pack.acquired_voltage_v)
        if mos is not None:
            battery.update(remaining_ah=mos.remaining_mah / 1000,
                           charging=mos.state_name == "charging")
            status_fields.update(
                state=mos.state_name, charge_mosfet=mos.charge_mosfet,
                discharge_mosfet=mos.discharge_mosfet, heartbeat=mos.heartbeat,
            )
        if status is not None:
            battery["cycles"] = status.cycles
            status_fields.update(
                cells=status.cells, sensors=status.sensors,
                charger_connected=status.charger_connected, load_connected=status.load_connected,
            )
            for i, on in enumerate(status.di, 1):
                status_fields[f"di{i}"] = on
            for i, on in enumerate(status.do, 1):
                status_fields[f"do{i}"] = on
        if cell_mv:
            volts = [mv / 1000 for mv in cell_mv]
            battery.update(
                cell_min_v=min(volts), cell_max_v=max(volts),
                cell_avg_v=round(sum(volts) / len(volts), 4),
                cell_delta_v=round(max(volts) - min(volts), 3),
            )
        elif extremes is not None:
            battery.update(cell_min_v=extremes.min_mv / 1000, cell_max_v=extremes.max_mv / 1000,
                           cell_delta_v=round((extremes.max_mv - extremes.min_mv) / 1000, 3))
        if extremes is not None:
            status_fields.update(cell_max_num=extremes.max_cell, cell_min_num=extremes.min_cell)
        if temps:
            battery.update(temp_min_c=float(min(temps)), temp_max_c=float(max(temps)))
        elif temps_x is not None:
            battery.update(temp_min_c=float(temps_x.min_c), temp_max_c=float(temps_x.max_c))
        if temps_x is not None:
            status_fields.update(temp_max_sensor=temps_x.max_sensor,
                                 temp_min_sensor=temps_x.min_sensor)
        if balancing is not None:
            battery["balancing_cells"] = sum(balancing.cells(cells)) if cells else 0
        if battery:
            out.append(Point("battery", tags, battery, t))

        if cell_mv:
            for n, mv in enumerate(cell_mv, 1):
                fields: dict[str, FieldValue] = {"voltage_v": mv / 1000}
                if balancing is not None:
                    fields["balancing"] = balancing.cell(n)
                out.append(Point("cell", {**tags, "cell": str(n)}, fields, t))
        if temps:
            for n, c in enumerate(temps, 1):
                out.append(Point("temperature", {**tags, "sensor": str(n)},
                                 {"temperature_c": float(c)}, t))
        if failures is not None:
            alarm: dict[str, FieldValue] = dict(failures.flags)
            unknown = failures.unknown
            if unknown:
                self.log.debug("alarm bits the documents call reserved: %s", ", ".join(unknown))
            alarm.update(active_count=len(failures.active) + len(unknown),
                         unknown_count=len(unknown), fault_code=failures.fault_code)
            out.append(Point("alarm", tags, alarm, t))
            status_fields["alarm_bits"] = failures.bits
        if status_fields:
            out.append(Point("daly_status", tags, status_fields, t))
        out.extend(self._info_points(got, tags, t))
        return out

    def _info_points(self, got: Mapping[int, Any], tags: Mapping[str, str], t: int
                     ) -> list[Point]:
        info: dict[str, FieldValue] = {}
        settings: dict[str, FieldValue] = {}
        rated: p.Rated | None = got.get(p.RATED)
        if rated is not None:
            info.update(rated_capacity_ah=rated.capacity_mah / 1000,
                        nominal_cell_voltage_v=rated.nominal_cell_mv / 1000)
        battery_info: p.BatteryInfo | None = got.get(p.BATTERY_INFO)
        if battery_info is not None:
            info["production_date"] = battery_info.production_date
        for data_id, name in ((p.BATTERY_CODE, "battery_code"),
                              (p.SOFTWARE_VERSION, "software_version"),
                              (p.HARDWARE_VERSION, "hardware_version")):
            if data_id in got:
                info[name] = got[data_id]
        for data_id, prefix in ((p.CELL_THRESHOLDS, "cell"), (p.PACK_THRESHOLDS, "pack")):
            th: p.Thresholds | None = got.get(data_id)
            if th is not None:
                settings.update({
                    f"{prefix}_high_l1_v": th.high_l1_v, f"{prefix}_high_l2_v": th.high_l2_v,
                    f"{prefix}_low_l1_v": th.low_l1_v, f"{prefix}_low_l2_v": th.low_l2_v,
                })
        out = []
        if info:
            out.append(Point("daly_info", dict(tags), info, t))
        if settings:
            out.append(Point("daly_settings", dict(tags), settings, t))
        return out

    # --- writes -------------------------------------------------------------------------------

    def _write(self, name: str, value: str) -> Mapping[str, Any]:
        """Send one command (Driver.write has already checked allow_writes)."""
        address = self._address(self._host())
        text = (value or "").strip().lower()
        if name == "set_soc":
            try:
                soc = float(text)
            except ValueError:
                raise WriteRefusedError(f"set_soc needs a percentage 0-100, got {value!r}"
                                        ) from None
            if not 0.0 <= soc <= 100.0:
                raise WriteRefusedError(f"set_soc needs a percentage 0-100, got {value!r}")
            request, data_id = p.set_soc_request(soc, address), p.SET_SOC
        elif name in ("charge_mosfet", "discharge_mosfet"):
            if text in ("on", "1", "true"):
                on = True
            elif text in ("off", "0", "false"):
                on = False
            else:
                raise WriteRefusedError(f"{name} needs on or off, got {value!r}")
            data_id = p.CHARGE_MOSFET if name == "charge_mosfet" else p.DISCHARGE_MOSFET
            request = p.mosfet_request(data_id, on, address)
        elif name == "reset":
            request, data_id = p.reset_request(address), p.RESET
        else:  # pragma: no cover - Driver.write only passes declared names
            raise WriteRefusedError(f"unknown command {name!r}")

        self.log.info("sending %s=%s: %s", name, value, request.hex(" "))
        answer: dict[str, p.Frame] = {}

        def on_frame(frame: p.Frame) -> bool:
            self._check(frame, data_id, request)
            answer["frame"] = frame
            return True

        # a reset must not be repeated blindly; the others are idempotent
        self.conversation.exchange(
            request, self._parser, on_frame, expect_bytes=p.FRAME_LEN,
            label=_label(data_id),
            retries=0 if name == "reset" else None,
        )
        reply = answer["frame"]
        out: dict[str, Any] = {"command": name, "value": value, "reply": reply.raw.hex(" ")}
        if name == "set_soc":
            out["acknowledged"] = reply.data[0] == 1
        elif name.endswith("_mosfet"):
            out["acknowledged"] = reply.data[0] == (1 if on else 0)
            # an acknowledgement is no proof (a BMS in protection acks and refuses)
            mos = p.decode_mosfet(self._read(p.MOSFET)[1])
            out["charge_mosfet"] = mos.charge_mosfet
            out["discharge_mosfet"] = mos.discharge_mosfet
        else:
            out["acknowledged"] = True
        self.log.info("%s=%s answered %s", name, value, out)
        return out
