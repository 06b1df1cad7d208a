"""The stdout sink: JSON lines exactly as Point.to_json(), and InfluxDB line protocol from
influxdb-client, checked against the escaping rules of the line protocol spec."""

from __future__ import annotations

import io
import json
import math
import os
import sys

import pytest

from bmslogger.errors import SinkError, SinkUnavailable
from bmslogger.model import Point, SinkConfig
from bmslogger.options import resolve_options
from bmslogger.sinks import stdout as stdout_module
from bmslogger.sinks.stdout import SINK_TYPE, StdoutSink

T = 1_700_000_000_123_456_789


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def make_sink(fmt: str = "json", stream=None) -> StdoutSink:
    opts = resolve_options(SINK_TYPE.options, {"format": fmt})
    sink = StdoutSink(SinkConfig(name="out", plugin="stdout", options=opts), stream=stream)
    sink.open()
    return sink


# --- a line protocol reader written from the spec, to check the client's output ------------


class _Reader:
    """A line protocol reader written from the spec, to check the client's output.

    Measurement names escape ``,`` and space; tag keys, tag values and field keys escape
    ``,``, ``=`` and space; string field values are double-quoted and escape ``"`` and
    ``\\``; integers end in ``i``; booleans are true/false; other numbers are floats.
    """

    def __init__(self, line: str) -> None:
        self.s = line
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def token(self, stops: str, escapable: str) -> str:
        out = ""
        while self.i < len(self.s) and self.s[self.i] not in stops:
            ch = self.s[self.i]
            if ch == "\\" and self.i + 1 < len(self.s) and self.s[self.i + 1] in escapable:
                out += self.s[self.i + 1]
                self.i += 2
            else:
                out += ch
                self.i += 1
        return out

    def expect(self, ch: str) -> None:
        assert self.peek() == ch, (self.s, self.i, ch)
        self.i += 1

    def string(self) -> str:
        self.expect('"')
        out = self.token('"', '"\\')
        self.expect('"')
        return out

    def parse(self) -> Point:
        measurement = self.token(", ", ", ")
        tags = {}
        while self.peek() == ",":
            self.i += 1
            key = self.token("=", ",= ")
            self.expect("=")
            tags[key] = self.token(", ", ",= ")
        self.expect(" ")
        fields: dict = {}
        while True:
            key = self.token("=", ",= ")
            self.expect("=")
            if self.peek() == '"':
                fields[key] = self.string()
            else:
                raw = self.token(", ", "")
                if raw.endswith("i"):
                    fields[key] = int(raw[:-1])
                elif raw in ("true", "false"):
                    fields[key] = raw == "true"
                else:
                    fields[key] = float(raw)
            if self.peek() == ",":
                self.i += 1
                continue
            break
        self.expect(" ")
        stamp = int(self.token("", ""))
        return Point(measurement, tags, fields, stamp)


def parse_line(line: str) -> Point:
    return _Reader(line).parse()


# --- json -----------------------------------------------------------------------------------


def test_registration():
    assert stdout_module.register_sink_types() == [SINK_TYPE]
    assert SINK_TYPE.load_sink() is StdoutSink
    assert dict(resolve_options(SINK_TYPE.options, {})) == {"format": "json"}
    assert "[sinks.stdout]" in SINK_TYPE.sample_config


def test_json_lines_are_point_to_json():
    stream = CountingStream()
    sink = make_sink("json", stream)
    points = [
        Point(
            "battery", {"device": "bms 1", "plugin": "daly"}, {"voltage_v": 53.2, "cycles": 7}, T
        ),
        Point("alarm", {"device": "bms1"}, {"over_voltage": True, "state": 'a "b"'}, T + 1),
    ]
    sink.write(points)
    text = stream.getvalue()
    assert text.endswith("\n") and text.count("\n") == 2
    assert [json.loads(line) for line in text.splitlines()] == [p.to_json() for p in points]
    assert stream.flushes == 1  # one flush per batch
    sink.write(points[:1])
    assert stream.flushes == 2


def test_default_stream_is_stdout(capsys):
    sink = make_sink("json")
    sink.write([Point("battery", {"device": "x"}, {"v": 1.0}, T)])
    out = capsys.readouterr().out
    assert json.loads(out) == {
        "measurement": "battery",
        "tags": {"device": "x"},
        "fields": {"v": 1.0},
        "time": "2023-11-14T22:13:20.123456Z",
    }


# --- line protocol ----------------------------------------------------------------------------


def test_line_protocol_exact_escaping_and_types():
    stream = io.StringIO()
    sink = make_sink("line", stream)
    point = Point(
        "bat tery,x",
        {"device": "my bms,1=a", "plugin": "daly"},
        {
            "charging": True,
            "cycles": 17,
            "current_a": -1.5,
            "note": 'say "hi" \\ ok',
            "soc_pct": 80.0,
        },
        T,
    )
    sink.write([point])
    assert stream.getvalue() == (
        "bat\\ tery\\,x,device=my\\ bms\\,1\\=a,plugin=daly "
        'charging=true,current_a=-1.5,cycles=17i,note="say \\"hi\\" \\\\ ok",soc_pct=80 '
        "1700000000123456789\n"
    )
    assert parse_line(stream.getvalue().rstrip("\n")) == point


TRICKY = ["a b", "a,b", "a=b", " lead", "trail ", "x=1,y=2 z", "ünï €", 'quote"d', "back\\slash"]


@pytest.mark.parametrize("value", TRICKY)
def test_line_protocol_tricky_values_parse_back(value):
    stream = io.StringIO()
    sink = make_sink("line", stream)
    point = Point(
        f"m {value}",
        {"device": value, f"k {value}": "v"},
        {"text": value, f"f {value}": 1, "n": -42, "ok": False, "v": 0.1},
        T,
    )
    sink.write([point])
    line = stream.getvalue()
    assert line.endswith(" 1700000000123456789\n") and line.count("\n") == 1
    back = parse_line(line.rstrip("\n"))
    assert back.measurement == point.measurement
    assert dict(back.tags) == dict(point.tags)
    assert dict(back.fields) == dict(point.fields)
    assert back.time_ns == T
    # integers typed with the i suffix, booleans bare, floats without a suffix
    assert ",n=-42i," in line and ",ok=false," in line and ",v=0.1 " in line


def test_line_protocol_non_finite_fields():
    stream = io.StringIO()
    sink = make_sink("line", stream)
    sink.write(
        [
            Point("m", {"device": "d"}, {"v": math.nan}, T),  # nothing line protocol can carry
            Point("m", {"device": "d"}, {"v": math.inf, "w": 2.5}, T + 1),
        ]
    )
    assert stream.getvalue() == "m,device=d w=2.5 1700000000123456790\n"
    assert sink.skipped == 1


def test_line_format_without_influxdb_client(monkeypatch):
    monkeypatch.setitem(sys.modules, "influxdb_client", None)  # makes the import fail
    opts = resolve_options(SINK_TYPE.options, {"format": "line"})
    sink = StdoutSink(SinkConfig(name="out", plugin="stdout", options=opts), stream=io.StringIO())
    with pytest.raises(SinkError, match=r"pip install 'bmslogger\[influxdb\]'"):
        sink.open()
    sink.close()


# --- failures ---------------------------------------------------------------------------------


def test_closed_pipe_is_unavailable():
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    stream = os.fdopen(write_fd, "w", encoding="utf-8")
    sink = make_sink("json", stream)
    try:
        with pytest.raises(SinkUnavailable, match="standard output"):
            sink.write([Point("m", {}, {"v": 1.0}, T)])
    finally:
        try:
            stream.close()
        except OSError:
            pass


def test_closed_stream_is_unavailable():
    stream = io.StringIO()
    stream.close()
    sink = make_sink("json", stream)
    with pytest.raises(SinkUnavailable):
        sink.write([Point("m", {}, {"v": 1.0}, T)])


def test_unencodable_text_is_a_sink_error_and_writes_nothing():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    sink = make_sink("line", stream)
    with pytest.raises(SinkError, match="PYTHONIOENCODING"):
        sink.write([Point("m", {"device": "ok"}, {"v": 1.0}, T), Point("µ", {}, {"v": 1.0}, T)])
    stream.flush()
    assert raw.getvalue() == b""
