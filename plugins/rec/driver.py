"""The conversation with one REC BMS 1Q: which instructions each poll asks, and the points.

Every poll asks LCD1 first (pack voltage, current, SOC, SOH, min/max cell): if that gets
no valid answer after every retry, the BMS is treated as silent for this poll and nothing
else is asked. Then CELL, PTEM, BTEM, ERRO and LCD3; RINT every `rint_interval`; identity,
capacity and cycles every `info_interval` (and every setting with `read_settings`). Each
question goes through the shared `bmslogger.conversation.Conversation`: stale input is
discarded, the deadline is the wire time plus the BMS's 350 ms answer window (REC: it
serves RS-485 only outside interrupts and may stay silent while busy), and a silent or
broken answer is sent again (`retries`).

A frame counts only if its CRC and end marker are right, it is addressed to the master
from the configured BMS address, and it has the shape the instruction answers with (a
count frame, then data of the announced length). A lone count frame is a failed attempt.

Writes (`bmslogger set rec NAME VALUE`) are checked against the instruction table's range
before any byte goes out, read the old value, send ``NAME value``, require the answer
``SET``, then read the value back and compare. The poll never writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from bmslogger.driver import Driver
from bmslogger.errors import (
    DeviceReportedError,
    NoAnswerError,
    ProtocolError,
    WriteRefusedError,
)
from bmslogger.model import FieldValue, Point, PollResult

from . import WRITES
from . import protocol as p
from .fields import BATTERY_SETTINGS, SETTING_FIELDS
from .instructions import (
    BLOCK,
    ERROR_NAMES,
    FLOAT_COUNT,
    FLOATS,
    INSTRUCTIONS,
    INT,
    SETTABLE,
    Instruction,
)

#: Asked on every poll, in order (LCD1 first: it decides whether the BMS is there).
POLL_ORDER = ("LCD1", "CELL", "PTEM", "BTEM", "ERRO", "LCD3")
#: Asked every info_interval.
INFO_ORDER = ("*IDN", "SWVR", "HWVR", "REFC", "CAPA", "CYCL")
#: Asked every info_interval with read_settings.
SETTINGS_ORDER = tuple(SETTING_FIELDS)

#: Longest CELL/PTEM/RINT answer the deadline allows for: 16 floats.
_MAX_FLOATS = 16

def _r(value: float) -> float:
    """A float32 from the wire as the 7 significant digits it carries (3.966, not
    3.9660000801086426)."""
    return float(f"{value:.7g}")


def _expect_bytes(ins: Instruction, floats: int) -> int:
    """Answer bytes to allow for in the deadline."""
    frame = p.OVERHEAD
    if ins.shape == BLOCK:
        return frame + 2 + frame + ins.block_len
    if ins.shape == FLOAT_COUNT:
        return frame + 1 + frame + 4
    if ins.shape == FLOATS:
        return frame + 2 + frame + 4 * floats
    return frame + 24


class RecDriver(Driver):
    """Polls one REC BMS 1Q at its address; see the module docstring."""

    WRITES = WRITES

    def setup(self) -> None:
        opts = self.options
        self.address: int = int(opts.get("address", 1))
        self.cells: int = int(opts.get("cells", 0))
        self.sensors: int = int(opts.get("sensors", 0))
        self.invert_current: bool = bool(opts.get("invert_current", False))
        self.rint_interval_s: float = float(opts.get("rint_interval", 300.0))
        self.info_interval_s: float = float(opts.get("info_interval", 3600.0))
        self.read_settings: bool = bool(opts.get("read_settings", False))
        self.writable: tuple[str, ...] = tuple(
            str(n).strip().upper() for n in opts.get("writable", ()))
        # never touch the transport here: a dry run builds the driver without one.
        # A busy 1Q may still answer after its 350 ms window, and REC answers do not name
        # the instruction they answer: a late answer must be drained before the next
        # request, or it would pass for that request's answer (`late_window`).
        self.conversation = self.conversation_for_line(
            late_answer_window_s=float(opts.get("late_window", 0.8)))
        self._parser = p.FrameParser()

    # --- one question -------------------------------------------------------------------------

    def ask(self, name: str, retries: int | None = None) -> Any:
        """Query instruction `name` and return its decoded answer (see `protocol.Answer`).

        Raises NoAnswerError (silent or only broken answers after every retry),
        DeviceReportedError (the BMS answered ERROR...) or TransportError.
        """
        ins = INSTRUCTIONS[p.normalise_name(name)]
        request = p.query(ins.name, self.address)
        answer = p.Answer(ins, self.address)
        self.conversation.exchange(
            request, self._parser, answer.add,
            expect_bytes=_expect_bytes(ins, self.cells or _MAX_FLOATS),
            label=f"{ins.name}?", retries=retries,
        )
        return answer.result()

    # --- the poll -----------------------------------------------------------------------------

    # When each slow group (RINT, info, settings) is next due. Drivers are built afresh for
    # every poll, so the schedule lives in the device's memory, which outlives them.
    def _is_due(self, group: str) -> bool:
        return time.monotonic() >= self.memory.get(f"due:{group}", 0.0)

    def _done(self, group: str, interval: float) -> None:
        self.memory[f"due:{group}"] = time.monotonic() + interval

    def poll(self) -> PollResult:
        """Read everything once; keep what was read when a part fails."""
        result = PollResult()
        now_ns = self.clock()
        got: dict[str, Any] = {}

        silent: list[str] = []

        def ask(name: str) -> bool:
            result.requests += 1
            try:
                got[name] = self.ask(name)
            except NoAnswerError as err:
                result.errors.append(str(err))
                silent.append(name)
                return False
            except ProtocolError as err:  # a whole answer that makes no sense, or ERROR
                self.counters.count(err.kind)
                result.errors.append(f"{name}: {err}")
                return False
            result.answered += 1
            return True

        if not ask("LCD1") and silent:
            result.errors.append(
                f"BMS silent at address {self.address} (busy, wrong address or baud rate, "
                "or A/B swapped?); nothing else asked")
            return result
        for name in POLL_ORDER[1:]:
            ask(name)
        rint_due = self.rint_interval_s <= 0 or self._is_due("rint")
        if rint_due and ask("RINT"):
            self._done("rint", self.rint_interval_s)
        info_due = self.info_interval_s <= 0 or self._is_due("info")
        if info_due and all([ask(name) for name in INFO_ORDER]):
            self._done("info", self.info_interval_s)
        settings_due = self.info_interval_s <= 0 or self._is_due("settings")
        if self.read_settings and settings_due and all([ask(n) for n in SETTINGS_ORDER]):
            self._done("settings", self.info_interval_s)
        result.points.extend(self._points(got, now_ns))
        return result

    # --- points -------------------------------------------------------------------------------

    def _points(self, got: Mapping[str, Any], t: int) -> list[Point]:
        tags = {**self.base_tags, "pack": str(self.address)}
        out: list[Point] = []
        battery: dict[str, FieldValue] = {}
        status: dict[str, FieldValue] = {}

        lcd1 = p.decode_lcd1(got["LCD1"][1]) if "LCD1" in got else None
        cells: tuple[float, ...] = ()
        if "CELL" in got:
            units, values = got["CELL"]
            cells = tuple(_r(v) for v in values)
            if self.cells:
                cells = cells[:self.cells]
            status["bms_units"] = int(units)
        temps: tuple[float, ...] = ()
        if "PTEM" in got:
            temps = tuple(_r(v) for v in got["PTEM"][1])
            if self.sensors:
                temps = temps[:self.sensors]

        if lcd1 is not None:
            voltage = _r(lcd1.pack_v)
            current = _r(-lcd1.current_a if self.invert_current else lcd1.current_a)
            battery.update(
                voltage_v=voltage, current_a=current, power_w=round(voltage * current, 2),
                soc_pct=round(_r(lcd1.soc) * 100, 4), soh_pct=round(_r(lcd1.soh) * 100, 4),
            )
            status.update(lcd1_min_cell_v=_r(lcd1.min_cell_v),
                          lcd1_max_cell_v=_r(lcd1.max_cell_v),
                          lcd1_max_temperature_c=_r(lcd1.max_temp_c))
        if cells:
            battery.update(
                cell_min_v=min(cells), cell_max_v=max(cells),
                cell_avg_v=round(sum(cells) / len(cells), 5),
                cell_delta_v=round(max(cells) - min(cells), 5),
            )
        elif lcd1 is not None:
            lo, hi = _r(lcd1.min_cell_v), _r(lcd1.max_cell_v)
            battery.update(cell_min_v=lo, cell_max_v=hi, cell_delta_v=round(hi - lo, 5))
        if temps:
            battery.update(temp_min_c=min(temps), temp_max_c=max(temps))
        elif lcd1 is not None:
            battery["temp_max_c"] = _r(lcd1.max_temp_c)
        if "CAPA" in got:
            battery[BATTERY_SETTINGS["CAPA"]] = float(got["CAPA"])
        if "CYCL" in got:
            battery[BATTERY_SETTINGS["CYCL"]] = int(got["CYCL"])
        if battery:
            out.append(Point("battery", tags, battery, t))

        for n, v in enumerate(cells, 1):
            out.append(Point("cell", {**tags, "cell": str(n)}, {"voltage_v": v}, t))
        for n, c in enumerate(temps, 1):
            out.append(Point("temperature", {**tags, "sensor": str(n)},
                             {"temperature_c": c}, t))
        if "RINT" in got:
            rint = tuple(_r(v) for v in got["RINT"][1])
            if self.cells:
                rint = rint[:self.cells]
            for n, ohm in enumerate(rint, 1):
                out.append(Point("rec_cell", {**tags, "cell": str(n)},
                                 {"internal_resistance_ohm": ohm}, t))

        if "ERRO" in got:
            err = p.decode_erro(got["ERRO"][1])
            alarm: dict[str, FieldValue] = {
                name: err.present and err.code == n for n, name in ERROR_NAMES.items()
            }
            alarm.update(active_count=1 if err.present else 0, error_code=err.code,
                         error_unit=err.unit, error_location=err.location)
            out.append(Point("alarm", tags, alarm, t))
        if "BTEM" in got:
            values = got["BTEM"][1]
            if values:
                status["bms_temperature_c"] = _r(values[0])
        if "LCD3" in got:
            lcd3 = p.decode_lcd3(got["LCD3"][1])
            status.update(
                min_cell_unit=lcd3.min_cell_unit, min_cell_number=lcd3.min_cell,
                max_cell_unit=lcd3.max_cell_unit, max_cell_number=lcd3.max_cell,
                hottest_sensor_unit=lcd3.hottest_unit,
                hottest_sensor_number=lcd3.hottest_sensor, lcd3_ah=float(lcd3.ah),
            )
        if status:
            out.append(Point("rec_status", tags, status, t))

        info: dict[str, FieldValue] = {}
        for name, key in (("*IDN", "identification"), ("SWVR", "software_version"),
                          ("HWVR", "hardware_version")):
            if name in got:
                info[key] = str(got[name])
        if "REFC" in got:
            info["adc_reference_v"] = float(got["REFC"])
        if info:
            out.append(Point("rec_info", tags, info, t))
        settings: dict[str, FieldValue] = {}
        for name, key in SETTING_FIELDS.items():
            if name in got:
                value = got[name]
                settings[key] = int(value) if SETTABLE[name].shape == INT else float(value)
        if settings:
            out.append(Point("rec_settings", tags, settings, t))
        return out

    # --- writes -------------------------------------------------------------------------------

    def _check_write(self, name: str, value: str) -> tuple[Instruction, float, str]:
        """Everything that can refuse a set without the line: the instruction, the
        allow-list, the number and the manual's range. Returns (instruction, value, text)."""
        ins = SETTABLE.get(name.strip().upper())
        if ins is None:
            raise WriteRefusedError(f"{name!r} is not a settable REC instruction")
        if self.writable and ins.name not in self.writable:
            raise WriteRefusedError(
                f"{ins.name} is not in this device's writable list "
                f"({', '.join(self.writable)}); nothing sent")
        text = (value or "").strip()
        try:
            number = p.parse_number(text)
        except ProtocolError:
            raise WriteRefusedError(
                f"{ins.name} needs a number ({ins.range_text}), got {value!r}; nothing sent"
            ) from None
        assert ins.min is not None and ins.max is not None
        if not ins.min <= number <= ins.max:
            raise WriteRefusedError(
                f"{ins.name} {text} is outside {ins.range_text} (the REC manual's limits "
                f"for {ins.meaning}); nothing sent")
        integer = ins.shape == INT
        try:
            wire = p.format_set_value(number, integer=integer)
        except ValueError as err:
            raise WriteRefusedError(f"{ins.name} {text}: {err}; nothing sent") from None
        return ins, float(int(number)) if integer else number, wire

    def _plan_write(self, name: str, value: str) -> Mapping[str, Any]:
        """For ``--dry-run``: the exact frame a set would send (nothing is sent)."""
        ins, _, wire = self._check_write(name, value)
        frame = p.set_request(ins.name, wire, self.address)
        return {"instruction": ins.name, "text": f"{ins.name} {wire}", "address": self.address,
                "range": ins.range_text, "frame": frame.hex(" ")}

    def _write(self, name: str, value: str) -> Mapping[str, Any]:
        """Set one instruction: range check, old value, ``NAME value``, ``SET``, read-back."""
        ins, number, wire = self._check_write(name, value)
        old = self.ask(ins.name)
        request = p.set_request(ins.name, wire, self.address)
        self.log.info("setting %s from %s to %s: %s", ins.name, old, wire, request.hex(" "))
        reply: dict[str, str] = {}

        def on_frame(frame: p.Frame) -> bool:
            p.check_source(frame, self.address)
            reply["text"] = frame.text
            return True

        self.conversation.exchange(request, self._parser, on_frame,
                                   expect_bytes=p.OVERHEAD + 8, label=f"{ins.name} set")
        answer = reply["text"]
        if answer != "SET":
            raise DeviceReportedError(
                f"{ins.name} {wire}: the BMS answered {answer!r} instead of 'SET'; not "
                f"applied (value stays {old})", answer.encode("ascii", "replace"))
        read_back = self.ask(ins.name)
        new: float | int = int(number) if ins.shape == INT else number
        if not math.isclose(float(read_back), float(new), rel_tol=1e-5, abs_tol=1e-7):
            raise DeviceReportedError(
                f"{ins.name}: answered SET but reads back {read_back} instead of {wire} "
                f"(was {old})")
        out = {"instruction": ins.name, "old": old, "new": new, "read_back": read_back,
               "answer": answer, "verified": True, "frame": request.hex(" ")}
        self.log.info("%s set: %s", ins.name, out)
        return out
