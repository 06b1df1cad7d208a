"""Capture files: one real device session on disk, and a simulator that replays it.

A bug report that says "my BMS shows 0 V" is answered fastest with the bytes the BMS sent.
``bmslogger doctor --raw DEVICE --save FILE`` writes them here; ``bmslogger replay FILE``
serves them again on a pseudo-terminal or TCP port, so a driver can be debugged, and a
test written, without the battery. The replay knows nothing of any protocol: it answers
a request it has seen byte for byte with the answer recorded after it.

The file is JSON lines, so it can be read, diffed and trimmed in a text editor:

* line 1, the header::

    {"format": "bmslogger-capture", "version": 1, "bmslogger": "0.1.0",
     "time": "2026-11-22T07:10:00.000000Z", "device": "bank", "plugin": "daly",
     "port": "/dev/ttyUSB0", "settings": {"baudrate": 9600, "bytesize": 8, "parity": "N",
     "stopbits": 1, "turnaround_s": 0.05}, "options": {"board": 1, ...}, "polls": 2}

* then one line per direction change, in order; ``t`` is seconds since the capture began
  (monotonic clock), ``hex`` the bytes::

    {"dir": "tx", "t": 0.0012, "hex": "a5 40 90 08 00 00 00 00 00 00 00 00 7d"}
    {"dir": "rx", "t": 0.0573, "hex": "a5 01 90 08 ..."}

  ``"stale": true`` marks bytes the driver threw away before a request (a late answer);
  ``"masked": true`` marks bytes where a secret was overwritten (see below).

* after each poll, what the driver made of it (time stamps left out)::

    {"poll": 1, "t": 0.61, "requests": 9, "answered": 9, "errors": [],
     "points": [{"measurement": "battery", "tags": {...}, "fields": {...}}, ...]}

Secrets: option values the plugin declares secret (``Option(secret=True)``, the EMUS
password) are shown as ``***`` in the header, and wherever their text (UTF-8) appears in
the bytes it is overwritten with ``*`` (0x2a). A secret sent in another encoding (binary,
hashed) cannot be found and stays in the file. A masked request no longer matches what
the driver sends, so the replay answers it with silence.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bmslogger.errors import BmsLoggerError
from bmslogger.model import PortSettings, rfc3339
from bmslogger.options import Options, resolve_options
from bmslogger.simulator import COMMON_OPTIONS, Simulator, Transmission

FORMAT = "bmslogger-capture"
VERSION = 1


class CaptureError(BmsLoggerError):
    """A capture file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Record:
    """Bytes that went one way: ``dir`` is "tx" (host to device) or "rx"."""

    dir: str
    t: float
    data: bytes
    stale: bool = False
    masked: bool = False


@dataclass
class Capture:
    """A capture file in memory: its header, the byte records, and each poll's outcome."""

    header: dict[str, Any]
    records: list[Record] = field(default_factory=list)
    polls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def settings(self) -> PortSettings:
        return PortSettings(**self.header["settings"])

    def exchanges(self) -> list[tuple[bytes, bytes, float]]:
        """(request, answer, seconds from the request's start to the answer's first byte)
        in recorded order. A request followed by another request got no answer (b"");
        answer bytes before the first request and stale bytes belong to no exchange."""
        out: list[tuple[bytes, bytes, float]] = []
        t_request = 0.0
        for rec in self.records:
            if rec.stale:
                continue
            if rec.dir == "tx":
                out.append((rec.data, b"", 0.0))
                t_request = rec.t
            elif out:
                request, answer, delay = out[-1]
                if not answer:
                    delay = max(0.0, rec.t - t_request)
                out[-1] = (request, answer + rec.data, delay)
        return out


# --- writing ------------------------------------------------------------------------------


def secret_values(options: Options) -> list[bytes]:
    """The UTF-8 text of every non-empty option the plugin declared secret."""
    shown = options.masked()
    return [str(v).encode("utf-8") for k, v in options.items()
            if shown.get(k) == "***" and v not in ("", None, "***")]


def mask(data: bytes, secrets: Iterable[bytes]) -> tuple[bytes, bool]:
    """`data` with every secret overwritten by as many ``*``; and whether one was found."""
    out = data
    for secret in secrets:
        if secret:
            out = out.replace(secret, b"*" * len(secret))
    return out, out != data


def point_json(point: Any) -> dict[str, Any]:
    """A point without its time stamp: what must come out the same in a replay."""
    return {"measurement": point.measurement, "tags": dict(point.tags),
            "fields": dict(point.fields)}


class Recorder:
    """Collects a session for `write_capture`: fed like `bmslogger.doctor.HexLog`
    (``recorder("TX", data)``) and told when each poll ended (`poll_done`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.records: list[Record] = []
        self.polls: list[dict[str, Any]] = []

    def __call__(self, direction: str, data: bytes) -> None:
        now = round(self.clock() - self.start, 6)
        kind = "tx" if direction == "TX" else "rx"
        stale = direction not in ("TX", "RX")  # "RX (discarded)"
        last = self.records[-1] if self.records else None
        # a request is one write; an answer arrives in chunks, kept as one record
        if last is not None and kind == "rx" and last.dir == "rx" and last.stale == stale:
            self.records[-1] = replace(last, data=last.data + bytes(data))
            return
        self.records.append(Record(kind, now, bytes(data), stale=stale))

    def poll_done(self, result: Any) -> None:
        self.polls.append({
            "poll": len(self.polls) + 1,
            "t": round(self.clock() - self.start, 6),
            "requests": result.requests,
            "answered": result.answered,
            "errors": list(result.errors),
            "points": [point_json(p) for p in result.points],
        })


def capture_header(device: Any, polls: int) -> dict[str, Any]:
    """The header line for `device` (a `DeviceConfig`), secrets shown as ``***``."""
    from bmslogger import __version__

    s = device.port_settings
    return {
        "format": FORMAT, "version": VERSION, "bmslogger": __version__,
        "time": rfc3339(time.time_ns()), "device": device.name, "plugin": device.plugin,
        "port": device.port,
        "settings": {"baudrate": s.baudrate, "bytesize": s.bytesize, "parity": s.parity,
                     "stopbits": s.stopbits, "turnaround_s": s.turnaround_s},
        "options": device.options.masked(), "polls": polls,
    }


def write_capture(path: str, device: Any, recorder: Recorder) -> None:
    """Write what `recorder` holds as a capture file, secrets masked.

    Raises CaptureError if the file cannot be written."""
    secrets = secret_values(device.options)
    lines = [capture_header(device, len(recorder.polls))]
    polls = iter(recorder.polls)
    pending = next(polls, None)
    for rec in recorder.records:
        while pending is not None and pending["t"] < rec.t:
            lines.append(pending)
            pending = next(polls, None)
        data, masked = mask(rec.data, secrets)
        line: dict[str, Any] = {"dir": rec.dir, "t": rec.t, "hex": data.hex(" ")}
        if rec.stale:
            line["stale"] = True
        if masked:
            line["masked"] = True
        lines.append(line)
    if pending is not None:
        lines.append(pending)
    lines.extend(polls)
    try:
        with open(path, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line, default=str) + "\n")
    except OSError as err:
        raise CaptureError(f"cannot write {path}: {err.strerror or err}") from None


# --- reading ------------------------------------------------------------------------------


def _number(value: Any, what: str, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < low:
        raise ValueError(f"{what} must be a number >= {low:g}, got {value!r}")
    return float(value)


def _check_settings(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError("header: settings must be an object")
    s = {"baudrate": raw.get("baudrate", 9600), "bytesize": raw.get("bytesize", 8),
         "parity": raw.get("parity", "N"), "stopbits": raw.get("stopbits", 1),
         "turnaround_s": raw.get("turnaround_s", 0.05)}
    if isinstance(s["baudrate"], bool) or not isinstance(s["baudrate"], int) \
            or s["baudrate"] <= 0:
        raise ValueError(f"header: baudrate must be a positive integer, got {s['baudrate']!r}")
    if s["bytesize"] not in (5, 6, 7, 8) or isinstance(s["bytesize"], bool):
        raise ValueError(f"header: bytesize must be 5 to 8, got {s['bytesize']!r}")
    if s["parity"] not in ("N", "E", "O", "M", "S"):
        raise ValueError(f"header: parity must be one of N E O M S, got {s['parity']!r}")
    if s["stopbits"] not in (1, 1.5, 2) or isinstance(s["stopbits"], bool):
        raise ValueError(f"header: stopbits must be 1, 1.5 or 2, got {s['stopbits']!r}")
    s["turnaround_s"] = _number(s["turnaround_s"], "header: turnaround_s")
    return s


def _check_header(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"not a capture file (the first line must be a header with "
                         f"\"format\": \"{FORMAT}\")")
    if obj.get("version") != VERSION:
        raise ValueError(f"capture format version {obj.get('version')!r} is not supported "
                         f"(this bmslogger reads version {VERSION})")
    if not isinstance(obj.get("plugin", ""), str):
        raise ValueError("header: plugin must be a string")
    return {**obj, "settings": _check_settings(obj.get("settings", {}))}


def _record(obj: Any) -> Record:
    direction = obj.get("dir")
    if direction not in ("tx", "rx"):
        raise ValueError(f"dir must be \"tx\" or \"rx\", got {direction!r}")
    t = _number(obj.get("t"), "t")
    text = obj.get("hex")
    if not isinstance(text, str):
        raise ValueError("hex must be a string of hex bytes")
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"hex is not hex bytes: {text[:40]!r}") from None
    return Record(direction, t, data, stale=bool(obj.get("stale", False)),
                  masked=bool(obj.get("masked", False)))


def parse_capture(lines: Iterable[str], name: str = "capture") -> Capture:
    """Read a capture from its lines. Raises CaptureError naming `name` and the line."""
    capture: Capture | None = None
    number = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            try:
                obj = json.loads(line)
            except ValueError as err:
                raise ValueError(f"not JSON ({err})") from None
            if capture is None:
                capture = Capture(_check_header(obj))
            elif not isinstance(obj, dict):
                raise ValueError("expected an object")
            elif "dir" in obj:
                capture.records.append(_record(obj))
            elif "poll" in obj:
                capture.polls.append(obj)
            # anything else: a later format's addition, skipped
        except (ValueError, TypeError, RecursionError) as err:
            raise CaptureError(f"{name} line {number}: {err}") from None
    if capture is None:
        raise CaptureError(f"{name}: empty file, not a capture")
    if not any(r.dir == "tx" for r in capture.records):
        raise CaptureError(f"{name}: holds no request (no \"tx\" line), nothing to replay")
    return capture


def load_capture(path: str) -> Capture:
    """Read the capture file at `path`. Raises CaptureError (never a traceback)."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse_capture(f, path)
    except OSError as err:
        raise CaptureError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise CaptureError(f"{path}: not UTF-8 text ({err.reason})") from None


# --- replaying ----------------------------------------------------------------------------


class ReplaySimulator(Simulator):
    """A device that answers as the captured one did, for any protocol.

    Each request seen byte for byte in the capture gets the answer recorded after it;
    a request recorded several times gets its answers in recorded order, starting over
    when they run out (so the values move as they did). A request that was not recorded
    gets silence and is counted in ``ignored["unknown request"]``, like a device dropping
    a frame it does not understand. With `timing`, answers come after the recorded
    delay instead of the line's turnaround.

    Framing without a protocol: a buffer that starts with a recorded request is that
    request, unless it could still grow into a longer recorded one (then it waits for
    more bytes); bytes that can start no recorded request are dropped as one unknown
    request.
    """

    def __init__(self, capture: Capture, timing: bool = False,
                 options: Options | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capture = capture
        self.timing = timing
        super().__init__(options if options is not None
                         else resolve_options(COMMON_OPTIONS, {}), clock)

    def setup(self) -> None:
        settings = self.capture.settings
        if self.options.get("baudrate"):
            settings = replace(settings, baudrate=int(self.options["baudrate"]))
        if self.options.get("turnaround", -1.0) >= 0:
            settings = replace(settings, turnaround_s=float(self.options["turnaround"]))
        self.port_settings = settings
        self.answers: dict[bytes, list[tuple[bytes, float]]] = {}
        for request, answer, delay in self.capture.exchanges():
            if request:
                self.answers.setdefault(request, []).append((answer, delay))
        self._next: Counter[bytes] = Counter()
        self._requests: Sequence[bytes] = sorted(self.answers, key=len, reverse=True)
        self._buffer = b""
        self.answered = 0

    def receive(self, data: bytes) -> list[Transmission]:
        self._buffer += data
        out: list[Transmission] = []
        while self._buffer:
            buf = self._buffer
            if any(len(r) > len(buf) and r.startswith(buf) for r in self._requests):
                break  # a recorded request still arriving
            request = next((r for r in self._requests if buf.startswith(r)), None)
            if request is None:
                self._buffer = buf[self._resync(buf):]
                self.ignored["unknown request"] += 1
                continue
            self._buffer = buf[len(request):]
            tx = self._answer(request)
            if tx is not None:
                out.append(tx)
        return out

    def _resync(self, buf: bytes) -> int:
        """Where in `buf` a recorded request could begin (len(buf) if nowhere)."""
        for i in range(1, len(buf)):
            rest = buf[i:]
            if any(r.startswith(rest) or rest.startswith(r) for r in self._requests):
                return i
        return len(buf)

    def _answer(self, request: bytes) -> Transmission | None:
        choices = self.answers[request]
        answer, delay = choices[self._next[request] % len(choices)]
        self._next[request] += 1
        if not answer:
            return None  # the device was silent when recorded, too
        self.answered += 1
        if self.timing:
            # recorded from the request's start: take off its own wire time
            delay = max(0.0, delay - self.port_settings.wire_time(len(request)))
        else:
            delay = self.port_settings.turnaround_s
        return Transmission(answer, delay_s=delay)
