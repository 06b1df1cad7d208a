"""`bmslogger export`: a day with an outage, aggregates, units, and the same table from the
CSV sink's files and from a real InfluxDB.

Data is written by the real sinks (CsvSink, InfluxSink v1) and exported by the real
command in a child process, so file layout, header parsing and exit codes are all real.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bmslogger.export import (
    ExportError,
    Progress,
    aggregate,
    make_selection,
    parse_time,
    to_csv_text,
)
from bmslogger.model import Point, SinkConfig
from bmslogger.options import resolve_options

DAY = "2026-11-20"
T0 = parse_time(DAY)
MIN = 60 * 10**9
OUTAGE = range(12 * 60, 13 * 60)  # minutes of the day without data


def day_points() -> list[Point]:
    """A day of two devices, one point a minute, nothing from 12:00 to 13:00."""
    points = []
    for minute in range(24 * 60):
        if minute in OUTAGE:
            continue
        t = T0 + minute * MIN
        for dev, base in (("bank-a", 52.0), ("bank-b", 26.0)):
            points.append(Point("battery", {"device": dev, "plugin": "daly"},
                                {"voltage_v": base + (minute % 10) / 10, "soc_pct": 50.0,
                                 "cycles": minute, "charging": minute % 2 == 0}, t))
            for cell in (1, 2):
                points.append(Point("cell", {"device": dev, "plugin": "daly", "pack": "1",
                                             "cell": str(cell)},
                                    {"voltage_v": 3.2 + cell / 100}, t))
    return points


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory) -> Path:
    from bmslogger.sinks.csvfile import SINK_TYPE, CsvSink

    folder = tmp_path_factory.mktemp("export") / "data"
    sink = CsvSink(SinkConfig(name="csv", plugin="csv",
                              options=resolve_options(SINK_TYPE.options,
                                                      {"directory": str(folder)})))
    sink.open()
    sink.write(day_points())
    sink.close()
    return folder


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmslogger", "export", *args],
                          capture_output=True, text=True, timeout=120)


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_a_day_with_an_hour_outage_shows_empty_rows(csv_dir):
    r = export("--directory", str(csv_dir), "--from", DAY, "--to", "2026-11-21",
               "--interval", "10m", "--aggregate", "mean", "--field", "voltage_v",
               "--field", "cell.voltage_v", "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = rows_of(r.stdout)
    header, data = rows[0], rows[1:]
    assert header == [
        "time_utc",
        "bank-a battery.voltage_v [V]", "bank-b battery.voltage_v [V]",
        "bank-a pack 1 cell 1 cell.voltage_v [V]", "bank-a pack 1 cell 2 cell.voltage_v [V]",
        "bank-b pack 1 cell 1 cell.voltage_v [V]", "bank-b pack 1 cell 2 cell.voltage_v [V]",
    ]
    assert len(data) == 144  # every 10 minutes of the day, the outage included
    assert data[0][0] == "2026-11-20T00:00:00Z" and data[-1][0] == "2026-11-20T23:50:00Z"
    for row in data:
        hour = int(row[0][11:13])
        if hour == 12:
            assert row[1:] == [""] * 6, row  # the gap: empty, never 0
        else:
            # minutes 0..9 of each bucket: voltage base + 0.0 .. 0.9, mean base + 0.45
            assert float(row[1]) == pytest.approx(52.45)
            assert float(row[2]) == pytest.approx(26.45)
            assert float(row[3]) == pytest.approx(3.21)
    assert sum(1 for row in data if row[1] == "") == 6


def test_aggregates_and_booleans(csv_dir):
    common = ["--directory", str(csv_dir), "--from", "2026-11-20T11:00:00Z",
              "--to", "2026-11-20T14:00:00Z", "--interval", "1h", "--device", "bank-a",
              "--field", "voltage_v,cycles,charging", "--no-progress"]
    got = {}
    for agg in ("mean", "min", "max", "last"):
        r = export(*common, "--aggregate", agg)
        assert r.returncode == 0, r.stderr
        got[agg] = rows_of(r.stdout)
    header = got["min"][0]
    assert header == ["time_utc", "bank-a battery.voltage_v [V]", "bank-a battery.cycles",
                      "bank-a battery.charging"]
    assert [r[0][11:16] for r in got["min"][1:]] == ["11:00", "12:00", "13:00"]
    assert got["min"][1][1:] == ["52.0", "660", "false"]
    assert got["max"][1][1:] == ["52.9", "719", "true"]
    assert got["last"][1][1:] == ["52.9", "719", "false"]  # minute 719 is odd
    assert float(got["mean"][1][2]) == pytest.approx(689.5)
    assert float(got["mean"][1][3]) == pytest.approx(0.5)  # share of samples true
    for agg in got:
        assert got[agg][2][1:] == ["", "", ""]  # 12:00-13:00, the outage


def test_output_file_and_clear_errors(csv_dir, tmp_path):
    out = tmp_path / "x.csv"
    r = export("--directory", str(csv_dir), "--from", DAY, "--to", "2026-11-21",
               "--interval", "1h", "--field", "soc_pct", "-o", str(out), "--progress")
    assert r.returncode == 0, r.stderr
    assert len(rows_of(out.read_text())) == 25
    assert "100%" in r.stderr and "[####" in r.stderr  # the progress bar, on stderr
    bad = export("--directory", str(csv_dir), "--from", "yesterday-ish", "--field", "soc_pct")
    assert bad.returncode == 1 and "bad time" in bad.stderr and "Traceback" not in bad.stderr
    empty = export("--directory", str(csv_dir), "--from", "2025-01-01", "--to", "2025-01-02",
                   "--field", "soc_pct", "--no-progress")
    assert empty.returncode == 1 and "no data" in empty.stderr
    missing = export("--directory", str(tmp_path / "nowhere"), "--field", "soc_pct")
    assert missing.returncode == 1 and "no CSV folder" in missing.stderr


def test_selection_checks():
    with pytest.raises(ExportError, match="empty"):
        make_selection("2026-11-21", "2026-11-20", "1m", "mean", ["voltage_v"])
    with pytest.raises(ExportError, match="rows"):
        make_selection("2000-01-01", "2026-01-01", "1s", "mean", ["voltage_v"])
    with pytest.raises(ExportError, match="field"):
        make_selection("-1h", "now", "1m", "mean", [])
    with pytest.raises(ExportError, match="field"):
        make_selection("-1h", "now", "1m", "mean", ["battery.volt age"])
    sel = make_selection("-1h", "now", "1m", "mean", ["cell.voltage_v"], now_ns=T0)
    assert sel.end_ns - sel.start_ns == 3600 * 10**9 and sel.fields == (("cell", "voltage_v"),)
    assert parse_time("2026-11-20T01:00:00+01:00") == T0
    assert parse_time("2026-11-20T00:00:00.5Z") == T0 + 500_000_000


def test_progress_bar_draws_to_its_stream():
    buf = io.StringIO()
    bar = Progress(4, "reading", True, buf)
    for _ in range(4):
        bar.step()
    bar.finish()
    assert buf.getvalue().rstrip().endswith("[" + "#" * 30 + "] 100% (4/4)")
    quiet = io.StringIO()
    Progress(4, "reading", False, quiet).step()
    assert quiet.getvalue() == ""


def test_text_fields_only_have_a_last():
    sel = make_selection("2026-11-20", "2026-11-20T00:02:00Z", "1m", "mean",
                         ["charger.charge_state", "charger.output_power_w"])
    series = (("device", "mppt"),)
    samples = [(T0, "charger", series, "charge_state", "mppt"),
               (T0, "charger", series, "output_power_w", 100.0),
               (T0 + 30 * 10**9, "charger", series, "output_power_w", 200.0)]
    text = to_csv_text(aggregate(samples, sel))
    assert text.splitlines() == ["time_utc,mppt charger.output_power_w",
                                 "2026-11-20T00:00:00Z,150.0", "2026-11-20T00:01:00Z,"]
    sel_last = make_selection("2026-11-20", "2026-11-20T00:01:00Z", "1m", "last",
                              ["charger.charge_state"])
    assert to_csv_text(aggregate(samples[:1], sel_last)).splitlines()[1] == (
        "2026-11-20T00:00:00Z,mppt")


@pytest.mark.servers
def test_influxdb_source_gives_the_same_table_as_the_csv_files(influx1_server, csv_dir):
    from bmslogger.sinks.influxdb import SINK_TYPE, InfluxSink

    db = "e" + uuid.uuid4().hex[:10]
    influx1_server.query(f'CREATE DATABASE "{db}"')
    sink = InfluxSink(SinkConfig("influx", "influxdb", resolve_options(
        SINK_TYPE.options, {"version": 1, "url": influx1_server.url, "database": db})))
    sink.open()
    sink.write(day_points())
    sink.close()
    selection = ["--from", DAY, "--to", "2026-11-21", "--interval", "30m", "--aggregate", "max",
                 "--field", "voltage_v,cycles", "--field", "cell.voltage_v", "--no-progress"]
    from_influx = export("--source", "influxdb", "--url", influx1_server.url,
                         "--database", db, *selection)
    from_csv = export("--directory", str(csv_dir), *selection)
    assert from_influx.returncode == 0, from_influx.stderr
    assert from_csv.returncode == 0, from_csv.stderr
    assert from_influx.stdout == from_csv.stdout
    rows = rows_of(from_influx.stdout)
    assert len(rows) == 49 and rows[25][1:] == [""] * 8  # 12:00 bucket
    down = export("--source", "influxdb", "--url", "http://127.0.0.1:9", "--database", db,
                  *selection)
    assert down.returncode == 1 and "cannot reach InfluxDB" in down.stderr
