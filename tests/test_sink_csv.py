"""The CSV sink on real files in a temporary folder: exact content, daily files, new
columns, restarts, crash leftovers, hostile text and write failures."""

from __future__ import annotations

import csv
import logging
import os
import re
import resource
import signal
import tempfile
import time
from calendar import timegm
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslogger.errors import SinkError, SinkUnavailable
from bmslogger.model import Point, SinkConfig
from bmslogger.options import resolve_options
from bmslogger.pipeline import Pipeline
from bmslogger.sinks import csvfile
from bmslogger.sinks.csvfile import SINK_TYPE, CsvSink, unescape_text

TAGS = {"device": "bms1", "plugin": "daly"}


def ns(stamp: str) -> int:
    """``2024-03-01T12:00:00`` (UTC) in nanoseconds."""
    return timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) * 1_000_000_000


def make_sink(tmp_path, **options) -> CsvSink:
    opts = resolve_options(SINK_TYPE.options, {"directory": str(tmp_path / "data"), **options})
    sink = CsvSink(SinkConfig(name="csv", plugin="csv", options=opts))
    sink.open()
    return sink


def read_text(path) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def read_rows(path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def battery_file(tmp_path, day: str = "2024-03-01"):
    return tmp_path / "data" / "battery" / f"battery-{day}.csv"


def test_registration_and_options():
    assert csvfile.register_sink_types() == [SINK_TYPE]
    assert SINK_TYPE.name == "csv"
    assert SINK_TYPE.load_sink() is CsvSink
    defaults = resolve_options(SINK_TYPE.options, {})
    assert dict(defaults) == {"directory": "data", "timezone": "utc", "fsync": "batch"}
    assert "[sinks.csv]" in SINK_TYPE.sample_config


def test_content_and_exact_header(tmp_path):
    sink = make_sink(tmp_path)
    t = ns("2024-03-01T12:00:00")
    sink.write(
        [
            Point(
                "battery",
                {"pack": "1", "plugin": "daly", "device": "bms1"},
                {
                    "voltage_v": 53.2,
                    "current_a": -12.5,
                    "cycles": 17,
                    "charging": False,
                    "soc_pct": 80.0,
                    "state": "float",
                },
                t + 123_456_789,
            ),
            Point(
                "battery",
                {"device": "bms1", "plugin": "daly", "pack": "1"},
                {"voltage_v": 0.1 + 0.2, "cycles": -3, "charging": True},
                t + 5 * 10**9,
            ),
        ]
    )
    sink.close()
    assert read_text(battery_file(tmp_path)) == (
        "time,device,plugin,pack,charging,current_a,cycles,soc_pct,state,voltage_v\n"
        '2024-03-01T12:00:00.123456Z,"bms1","daly","1",false,-12.5,17,80.0,"float",53.2\n'
        '2024-03-01T12:00:05.000000Z,"bms1","daly","1",true,,-3,,,0.30000000000000004\n'
    )


def test_day_rollover_writes_two_files(tmp_path):
    sink = make_sink(tmp_path)
    sink.write(
        [
            Point("battery", TAGS, {"voltage_v": 1.0}, ns("2024-03-01T23:59:59")),
            Point("battery", TAGS, {"voltage_v": 2.0}, ns("2024-03-02T00:00:01")),
        ]
    )
    sink.close()
    first = read_rows(battery_file(tmp_path, "2024-03-01"))
    second = read_rows(battery_file(tmp_path, "2024-03-02"))
    assert first == [
        ["time", "device", "plugin", "voltage_v"],
        ["2024-03-01T23:59:59.000000Z", "bms1", "daly", "1.0"],
    ]
    assert second[1] == ["2024-03-02T00:00:01.000000Z", "bms1", "daly", "2.0"]


def test_local_timezone_sets_day_boundary(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "Pacific/Auckland")
    time.tzset()
    try:
        sink = make_sink(tmp_path, timezone="local")
        # 20:00 UTC on 1 January is already 2 January in New Zealand (UTC+13 in summer)
        sink.write([Point("battery", TAGS, {"voltage_v": 1.0}, ns("2024-01-01T20:00:00"))])
        sink.close()
    finally:
        monkeypatch.undo()
        time.tzset()
    rows = read_rows(battery_file(tmp_path, "2024-01-02"))
    assert rows[1][0] == "2024-01-01T20:00:00.000000Z"  # the time column stays UTC
    assert not battery_file(tmp_path, "2024-01-01").exists()


def test_new_columns_appended_and_old_rows_padded(tmp_path):
    sink = make_sink(tmp_path)
    t = ns("2024-03-01T00:00:00")
    sink.write([Point("battery", TAGS, {"voltage_v": 1.5}, t)])
    sink.write([Point("battery", TAGS, {"voltage_v": 1.25}, t + 1)])
    sink.write(
        [Point("battery", {**TAGS, "pack": "2"}, {"voltage_v": 1.0, "current_a": 2.0}, t + 2)]
    )
    # a point without the new columns still lines up
    sink.write([Point("battery", TAGS, {"voltage_v": 3.0}, t + 3)])
    sink.close()
    assert read_text(battery_file(tmp_path)) == (
        "time,device,plugin,voltage_v,pack,current_a\n"
        '2024-03-01T00:00:00.000000Z,"bms1","daly",1.5,,\n'
        '2024-03-01T00:00:00.000000Z,"bms1","daly",1.25,,\n'
        '2024-03-01T00:00:00.000000Z,"bms1","daly",1.0,"2",2.0\n'
        '2024-03-01T00:00:00.000000Z,"bms1","daly",3.0,,\n'
    )
    assert sink.files_rewritten == 1
    leftovers = [n for n in os.listdir(battery_file(tmp_path).parent) if ".tmp" in n]
    assert leftovers == []


def test_restart_appends_with_same_header(tmp_path):
    t = ns("2024-03-01T08:00:00")
    first = make_sink(tmp_path)
    first.write([Point("battery", TAGS, {"voltage_v": 1.0, "soc_pct": 50.0}, t)])
    first.close()
    second = make_sink(tmp_path)
    # fields in another order and one missing: columns come from the file's header
    second.write([Point("battery", TAGS, {"soc_pct": 51.0}, t + 10**9)])
    second.close()
    assert read_rows(battery_file(tmp_path)) == [
        ["time", "device", "plugin", "soc_pct", "voltage_v"],
        ["2024-03-01T08:00:00.000000Z", "bms1", "daly", "50.0", "1.0"],
        ["2024-03-01T08:00:01.000000Z", "bms1", "daly", "51.0", ""],
    ]


def test_existing_header_order_is_kept(tmp_path):
    path = battery_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'time,voltage_v,plugin,device\n2024-03-01T00:00:00.000000Z,1.0,"x","y"\n')
    sink = make_sink(tmp_path)
    sink.write([Point("battery", TAGS, {"voltage_v": 2.0}, ns("2024-03-01T00:00:01"))])
    sink.close()
    assert read_rows(path)[-1] == ["2024-03-01T00:00:01.000000Z", "2.0", "daly", "bms1"]


@pytest.mark.parametrize(
    "leftover",
    [
        b'2024-03-01T00:00:01.000000Z,"bms1","da',  # cut mid-cell
        b'2024-03-01T00:00:01.000000Z,"bms1","line one\n',  # newline inside an open quote
        b"\x00\x00\x00\x00",  # NUL bytes a crash can leave at the end of a file
    ],
)
def test_partial_last_record_cut_on_restart(tmp_path, caplog, leftover):
    t = ns("2024-03-01T00:00:00")
    first = make_sink(tmp_path)
    first.write([Point("battery", TAGS, {"voltage_v": 1.0}, t)])
    first.close()
    path = battery_file(tmp_path)
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(leftover)
    second = make_sink(tmp_path)
    with caplog.at_level(logging.WARNING):
        second.write([Point("battery", TAGS, {"voltage_v": 2.0}, t + 10**9)])
    second.close()
    assert path.read_bytes() == good + b'2024-03-01T00:00:01.000000Z,"bms1","daly",2.0\n'
    assert second.partial_records_cut == 1
    assert any(
        "partial record" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records
    )


HOSTILE = [
    'say "hi"',
    "a,b,c",
    "line one\nline two",
    "cr\rinside",
    "\r\nstarts with crlf",
    "=SUM(A1:A9)",
    '=HYPERLINK("http://x")',
    "+41 79",
    "-2+3",
    "@cmd",
    "\tindent",
    "'already quoted",
    "",
    " padded ",
    '"',
    "ünï €",
    "-",
]


def test_hostile_strings_round_trip_and_no_formula(tmp_path):
    sink = make_sink(tmp_path)
    t = ns("2024-03-01T00:00:00")
    points = [
        Point("battery", {**TAGS, "note": text}, {"state": text, "current_a": -1.5, "n": -3}, t + i)
        for i, text in enumerate(HOSTILE)
    ]
    sink.write(points)
    sink.close()
    rows = read_rows(battery_file(tmp_path))
    header, body = rows[0], rows[1:]
    assert header == ["time", "device", "plugin", "note", "current_a", "n", "state"]
    assert len(body) == len(HOSTILE)
    for row, text in zip(body, HOSTILE):
        note, current, n, state = row[3], row[4], row[5], row[6]
        assert unescape_text(note) == text
        assert unescape_text(state) == text
        # no text cell can start a formula; numbers keep their sign
        for cell in (note, state):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
        assert current == "-1.5" and n == "-3"
    assert body[5][6] == "'=SUM(A1:A9)"
    assert body[11][6] == "''already quoted"


def test_strings_quoted_numbers_not(tmp_path):
    sink = make_sink(tmp_path)
    t = ns("2024-03-01T00:00:00")
    sink.write([Point("battery", TAGS, {"a": "123", "b": 123, "c": True, "d": 1e-07}, t)])
    sink.close()
    last = read_text(battery_file(tmp_path)).splitlines()[-1]
    assert last == '2024-03-01T00:00:00.000000Z,"bms1","daly","123",123,true,1e-07'


def test_concurrent_measurements(tmp_path):
    sink = make_sink(tmp_path)
    t = ns("2024-03-01T00:00:00")
    batch = []
    for i in range(3):
        batch.append(Point("battery", TAGS, {"voltage_v": 50.0 + i}, t + i))
        for cell in (1, 2):
            batch.append(
                Point("cell", {**TAGS, "pack": "1", "cell": str(cell)}, {"voltage_v": 3.3}, t + i)
            )
        batch.append(
            Point("alarm", TAGS, {"over_voltage": i == 2, "active_count": int(i == 2)}, t + i)
        )
    sink.write(batch[:6])
    sink.write(batch[6:])
    sink.close()
    base = tmp_path / "data"
    battery = read_rows(base / "battery" / "battery-2024-03-01.csv")
    cells = read_rows(base / "cell" / "cell-2024-03-01.csv")
    alarms = read_rows(base / "alarm" / "alarm-2024-03-01.csv")
    assert [r[3] for r in battery[1:]] == ["50.0", "51.0", "52.0"]
    assert cells[0] == ["time", "device", "plugin", "cell", "pack", "voltage_v"]
    assert [r[3] for r in cells[1:]] == ["1", "2"] * 3
    assert alarms[0] == ["time", "device", "plugin", "active_count", "over_voltage"]
    assert [r[3:] for r in alarms[1:]] == [["0", "false"], ["0", "false"], ["1", "true"]]
    assert sink.rows_written == len(batch)


def test_measurement_name_cannot_escape_directory(tmp_path):
    sink = make_sink(tmp_path)
    sink.write([Point("../evil/x", TAGS, {"a": 1}, ns("2024-03-01T00:00:00"))])
    sink.close()
    assert (tmp_path / "data" / "_.._evil_x" / "_.._evil_x-2024-03-01.csv").exists()
    assert not (tmp_path / "evil").exists()


def test_tag_and_field_with_one_name_is_a_sink_error(tmp_path):
    sink = make_sink(tmp_path)
    with pytest.raises(SinkError, match="pack"):
        sink.write([Point("battery", {**TAGS, "pack": "1"}, {"pack": 1}, 0)])
    with pytest.raises(SinkError, match="time"):
        sink.write([Point("battery", TAGS, {"time": 1}, 0)])
    sink.close()


def test_foreign_file_is_a_sink_error(tmp_path):
    path = battery_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("a,b\n1,2\n")
    sink = make_sink(tmp_path)
    with pytest.raises(SinkError, match="not a bmslogger CSV"):
        sink.write([Point("battery", TAGS, {"a": 1}, ns("2024-03-01T00:00:00"))])
    assert path.read_text() == "a,b\n1,2\n"


def test_unusable_directory_is_unavailable_with_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    opts = resolve_options(SINK_TYPE.options, {"directory": str(blocker / "data")})
    sink = CsvSink(SinkConfig(name="csv", plugin="csv", options=opts))
    with pytest.raises(SinkUnavailable, match=re.escape(str(blocker / "data"))):
        sink.open()
    with pytest.raises(SinkUnavailable, match="cannot write"):
        sink.write([Point("battery", TAGS, {"a": 1}, 0)])
    sink.close()


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_disk_full_rolls_back_and_retry_does_not_duplicate(tmp_path, fsync):
    sink = make_sink(tmp_path, fsync=fsync)
    t = ns("2024-03-01T00:00:00")
    sink.write([Point("battery", TAGS, {"v": 1.0}, t)])
    before = battery_file(tmp_path).read_bytes()
    batch = [Point("battery", TAGS, {"v": float(i)}, t + i) for i in range(200)]
    # a file-size limit makes the kernel refuse writes past it, like a full disk
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 500, old_limit[1]))
    try:
        with pytest.raises(SinkUnavailable, match=r"battery-2024-03-01\.csv"):
            sink.write(batch)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert battery_file(tmp_path).read_bytes() == before
    sink.write(batch)
    sink.flush()
    sink.close()
    rows = read_rows(battery_file(tmp_path))
    assert len(rows) == 1 + 1 + 200
    assert [r[3] for r in rows[2:]] == [repr(float(i)) for i in range(200)]


def test_close_without_open_and_twice(tmp_path):
    opts = resolve_options(SINK_TYPE.options, {"directory": str(tmp_path / "never")})
    sink = CsvSink(SinkConfig(name="csv", plugin="csv", options=opts))
    sink.close()
    sink.close()
    assert not (tmp_path / "never").exists()


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(st.characters(exclude_categories=("Cs",))), min_size=1, max_size=5))
def test_any_text_round_trips(texts):
    with tempfile.TemporaryDirectory() as tmp:
        sink = make_sink(Path(tmp))
        t = ns("2024-03-01T00:00:00")
        sink.write([Point("battery", {**TAGS, "tag": x}, {"text": x}, t) for x in texts])
        sink.close()
        rows = read_rows(battery_file(Path(tmp)))
    assert [(unescape_text(r[3]), unescape_text(r[4])) for r in rows[1:]] == [(x, x) for x in texts]


def test_through_the_pipeline(tmp_path):
    sink = CsvSink(
        SinkConfig(
            name="csv",
            plugin="csv",
            options=resolve_options(SINK_TYPE.options, {"directory": str(tmp_path / "data")}),
            batch_size=2,
            flush_interval_s=60,
        )
    )
    pipeline = Pipeline([(sink.config, sink)], str(tmp_path / "dead"))
    pipeline.start()
    t = ns("2024-03-01T00:00:00")
    pipeline.submit([Point("battery", TAGS, {"v": float(i)}, t + i) for i in range(5)])
    assert pipeline.close(5) is True
    rows = read_rows(battery_file(tmp_path))
    assert [r[3] for r in rows[1:]] == ["0.0", "1.0", "2.0", "3.0", "4.0"]


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_a_batch_touching_more_files_than_stay_open_is_written_and_synced(
        tmp_path, monkeypatch, fsync):
    """Found by bench/soak.py: five devices write some 40 measurement files a day; a
    batch touching more files than MAX_OPEN_FILES closed some in the middle of the batch,
    before their fsync, and then failed on them."""
    monkeypatch.setattr(csvfile, "MAX_OPEN_FILES", 4)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(csvfile.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    sink = make_sink(tmp_path, fsync=fsync)
    t = ns("2024-03-01T12:00:00")
    for round_ in range(3):
        sink.write([Point(f"m{i}", TAGS, {"v": float(round_)}, t + round_) for i in range(10)])
    for i in range(10):
        rows = read_rows(tmp_path / "data" / f"m{i}" / f"m{i}-2024-03-01.csv")
        assert [r[-1] for r in rows[1:]] == ["0.0", "1.0", "2.0"]
    assert len(sink._files) == 4  # closed between batches, not during one
    if fsync != "never":
        assert len(synced) >= 30
    sink.close()
