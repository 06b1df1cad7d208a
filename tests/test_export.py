"""`bmslogger export`: a day with an outage, aggregates, units, and the same table from the
CSV sink's files and from a real InfluxDB.

Data is written by the real sinks (CsvSink, InfluxSink v1) and exported by the real
command in a child process, so file layout, header parsing and exit codes are all real.
"""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import sys
import time
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
    assert bad.returncode == 2 and "--from: bad time" in bad.stderr
    assert "Traceback" not in bad.stderr
    empty = export("--directory", str(csv_dir), "--from", "2025-01-01", "--to", "2025-01-02",
                   "--field", "soc_pct", "--no-progress")
    assert empty.returncode == 1 and "no data" in empty.stderr
    missing = export("--directory", str(tmp_path / "nowhere"), "--field", "soc_pct")
    assert missing.returncode == 2 and "--directory: no CSV folder" in missing.stderr


USAGE_MISTAKES = [
    (("--from", "yesterday-ish"), "--from: bad time 'yesterday-ish': expected now, -24h"),
    (("--to", "2026-13-01"), "--to: bad time '2026-13-01'"),
    (("--from", "2026-11-21", "--to", "2026-11-20"), "--to: the range is empty"),
    (("--aggregate", "median"), "--aggregate: expected one of mean, min, max, last, not "
                                "'median'"),
    (("--interval", "soon"), "--interval: bad duration 'soon'"),
    (("--interval", "0s"), "--interval: expected a duration longer than zero"),
    (("--field", "voltag_v"), "--field battery.voltag_v: battery has no field 'voltag_v' "
                              "(did you mean voltage_v?)"),
    (("--field", "batery.voltage_v"), "--field batery.voltage_v: no measurement 'batery'"),
    (("--field", "bad name"), "--field: bad name 'bad name'"),
    (("--device", "bank-c"), "--device bank-c: no such device in "),
    (("--source", "sqlite"), "--source: expected csv, influxdb or mysql, not 'sqlite'"),
    (("--source", "mysql"), "--source mysql: "),
]


@pytest.mark.parametrize("extra,message", USAGE_MISTAKES,
                         ids=[" ".join(a) for a, _ in USAGE_MISTAKES])
def test_usage_mistakes_exit_2_with_one_line_naming_the_option(csv_dir, tmp_path, extra,
                                                               message):
    config = tmp_path / "logger.toml"
    config.write_text('[[devices.daly]]\nname = "bank-a"\nport = "sim://daly"\n\n'
                      f'[sinks.csv]\ndirectory = "{csv_dir}"\n', encoding="utf-8")
    args = ["-c", str(config), "--from", DAY, "--to", "2026-11-21", "--field", "voltage_v",
            "--no-progress", *extra]
    r = export(*args)
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("bmslogger export: " + message), lines[0]


def test_a_known_device_without_data_is_not_a_usage_mistake(csv_dir, tmp_path):
    """bank-b has data elsewhere in the folder; bank-z only in the configuration."""
    config = tmp_path / "logger.toml"
    config.write_text('[[devices.daly]]\nname = "bank-z"\nport = "sim://daly"\n\n'
                      f'[sinks.csv]\ndirectory = "{csv_dir}"\n', encoding="utf-8")
    common = ["-c", str(config), "--from", "2026-11-20T12:00:00Z", "--to",
              "2026-11-20T12:30:00Z", "--field", "voltage_v", "--no-progress"]
    r = export(*common, "--device", "bank-z")
    assert r.returncode == 1 and r.stderr.startswith("bmslogger export: no data"), r.stderr
    r = export(*common[:3], "2026-11-20T11:00:00Z", *common[4:], "--device", "bank-z,bank-a")
    assert r.returncode == 0, r.stderr  # one of two named devices wrote: fine
    assert rows_of(r.stdout)[0] == ["time_utc", "bank-a battery.voltage_v [V]"]
    # the CSV files know the devices of the range read; during the outage that is none
    r = export(*common, "--device", "bank-q")
    assert r.returncode == 2 and r.stderr.rstrip().endswith("(expected one of: bank-z)")
    r = export(*common[:3], "2026-11-20T11:00:00Z", *common[4:], "--device", "bank-q")
    assert r.returncode == 2
    assert r.stderr.rstrip().endswith("(expected one of: bank-a, bank-b, bank-z)"), r.stderr


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
    nosuch = export("--source", "influxdb", "--url", influx1_server.url, "--database", db,
                    *selection, "--device", "bank-c")
    assert nosuch.returncode == 2, nosuch.stderr
    assert "--device bank-c: no such device" in nosuch.stderr and "bank-a, bank-b" in nosuch.stderr
    down = export("--source", "influxdb", "--url", "http://127.0.0.1:9", "--database", db,
                  *selection)
    assert down.returncode == 1 and "cannot reach InfluxDB" in down.stderr
    assert down.stderr.count("\n") == 1


# --- the MySQL source against a real MariaDB ------------------------------------------------

EVIL = "x'); DROP TABLE battery; --"
#: sorted as export sorts names: "B" < "b" < "x"
DEVICES = ("Bänk 2", "bank-a", EVIL)
M0 = parse_time("2026-11-19T22:00:00Z")  # the range crosses a UTC midnight (two day chunks)
M_RANGE = ("2026-11-19T22:00:00Z", "2026-11-20T04:00:00Z")
M_GAP = range(180, 240)  # 01:00-02:00 on the 20th: no device wrote anything
CELLS = ("1", "2", "10")  # "10" sorts after "2" as a number
STATES = ("bulk", "absorption", "float")


def mysql_points() -> list[Point]:
    """Three devices, one point a minute with microseconds, one minute outside each end of
    the range, an hour's gap; cells for two devices, a charger state for the third."""
    points = []
    for minute in range(-1, 6 * 60 + 1):
        if minute in M_GAP:
            continue
        t = M0 + minute * MIN + 123_456_000
        for d, dev in enumerate(DEVICES):
            points.append(Point("battery", {"device": dev, "plugin": "daly"},
                                {"voltage_v": 48.0 + d + minute / 7, "cycles": minute * 3 + d,
                                 "charging": (minute + d) % 3 == 0}, t))
            if dev == "Bänk 2":
                points.append(Point("charger", {"device": dev, "plugin": "tristar"},
                                    {"charge_state": STATES[minute % 3],
                                     "output_power_w": float(minute % 17)}, t))
                continue
            for c in CELLS:
                points.append(Point("cell", {"device": dev, "plugin": "daly", "pack": "1",
                                             "cell": c},
                                    {"voltage_v": 3.2 + int(c) / 1000 + (minute % 11) / 997},
                                    t))
    return points


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def expected_csv(points: list[Point], aggregate_name: str, interval_s: int,
                 devices: tuple[str, ...] = DEVICES) -> str:
    """The table export must give, computed straight from the points (no export code):
    columns in field order, then device, then cell number; text only has a last."""
    start, end = parse_time(M_RANGE[0]), parse_time(M_RANGE[1])
    step = interval_s * 10**9
    fields = [("battery", "voltage_v", "V"), ("battery", "cycles", ""),
              ("battery", "charging", ""), ("cell", "voltage_v", "V"),
              ("charger", "charge_state", "")]
    columns = []
    for m, f, unit in fields:
        for dev in DEVICES:
            if dev not in devices:
                continue
            if m == "battery":
                columns.append((m, f, unit, dev, None))
            elif m == "cell" and dev != "Bänk 2":
                columns += [(m, f, unit, dev, c) for c in CELLS]
            elif m == "charger" and dev == "Bänk 2" and aggregate_name == "last":
                columns.append((m, f, unit, dev, None))
    header = ["time_utc"]
    for m, f, unit, dev, c in columns:
        where = f"{dev} pack 1 cell {c}" if c else dev
        header.append(f"{where} {m}.{f}" + (f" [{unit}]" if unit else ""))
    values: dict[tuple, list] = {}
    for p in points:
        if not start <= p.time_ns < end or p.tags["device"] not in devices:
            continue
        bucket = p.time_ns // step * step
        for name, v in p.fields.items():
            values.setdefault((p.measurement, name, p.tags["device"], p.tags.get("cell"),
                               bucket), []).append(v)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for bucket in range(start, end, step):
        row = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bucket // 10**9))]
        for m, f, _, dev, c in columns:
            vs = values.get((m, f, dev, c, bucket))
            if not vs:
                row.append("")
            elif aggregate_name == "mean":
                row.append(repr(sum(float(v) for v in vs) / len(vs)))
            else:
                row.append(_fmt({"min": min, "max": max, "last": lambda x: x[-1]}
                                [aggregate_name](vs)))
        w.writerow(row)
    return out.getvalue()


def mysql_config(folder: Path, port: int, database: str, **extra: str) -> Path:
    """A logger.toml whose [sinks.mysql] names the server; its one device never wrote."""
    lines = ['[[devices.daly]]', 'name = "configured-only"', 'port = "sim://daly"', '',
             '[sinks.mysql]', 'host = "127.0.0.1"', f'port = {port}', 'user = "root"',
             f'database = "{database}"', 'timeout = "5s"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    path = folder / f"logger-{uuid.uuid4().hex[:6]}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mysql_loaded(mariadb_server, tmp_path_factory):
    """The same points through the real MySQL sink and the real CSV sink."""
    from bmslogger.sinks.csvfile import SINK_TYPE as CSV_TYPE
    from bmslogger.sinks.csvfile import CsvSink
    from bmslogger.sinks.mysql import SINK_TYPE, MySQLSink

    points = mysql_points()
    db = "x" + uuid.uuid4().hex[:10]
    mariadb_server.create_database(db)
    sink = MySQLSink(SinkConfig("mysql", "mysql", resolve_options(SINK_TYPE.options, {
        "host": "127.0.0.1", "port": mariadb_server.port, "user": "root", "database": db})))
    sink.open()
    for i in range(0, len(points), 500):  # batches as the pipeline sends them
        sink.write(points[i:i + 500])
    sink.close()
    folder = tmp_path_factory.mktemp("export-mysql")
    csv_sink = CsvSink(SinkConfig("csv", "csv", resolve_options(
        CSV_TYPE.options, {"directory": str(folder / "data")})))
    csv_sink.open()
    csv_sink.write(points)
    csv_sink.close()
    return {"points": points, "db": db, "csv": folder / "data", "folder": folder,
            "config": mysql_config(folder, mariadb_server.port, db)}


M_SELECTION = ("--from", M_RANGE[0], "--to", M_RANGE[1], "--field", "voltage_v,cycles",
               "--field", "charging", "--field", "cell.voltage_v",
               "--field", "charger.charge_state", "--no-progress")


@pytest.mark.servers
@pytest.mark.parametrize("agg", ["mean", "min", "max", "last"])
def test_mysql_source_gives_exactly_the_expected_table(mysql_loaded, agg):
    r = export("--source", "mysql", "-c", str(mysql_loaded["config"]), *M_SELECTION,
               "--interval", "30m", "--aggregate", agg)
    assert r.returncode == 0, r.stderr
    want = expected_csv(mysql_loaded["points"], agg, 1800)
    assert r.stdout == want
    rows = rows_of(r.stdout)
    assert len(rows) == 1 + 12 and rows[7][0] == "2026-11-20T01:00:00Z"
    assert set(rows[7][1:]) == {""} and set(rows[8][1:]) == {""}  # the gap stays empty
    assert all(cell != "" for cell in rows[1][1:])
    # the same points through the CSV sink give the same bytes
    from_csv = export("--directory", str(mysql_loaded["csv"]), *M_SELECTION,
                      "--interval", "30m", "--aggregate", agg)
    assert from_csv.returncode == 0, from_csv.stderr
    assert from_csv.stdout == r.stdout


@pytest.mark.servers
def test_mysql_source_hostile_device_filter_and_odd_interval(mysql_loaded, mariadb_server):
    r = export("--source", "mysql", "-c", str(mysql_loaded["config"]), *M_SELECTION,
               "--interval", "7m", "--aggregate", "last", "--device", EVIL)
    assert r.returncode == 0, r.stderr
    # 7-minute buckets aligned to the epoch: the range starts inside one
    header = rows_of(r.stdout)[0]
    assert header[1] == f"{EVIL} battery.voltage_v [V]" and len(header) == 1 + 3 + 3
    from_csv = export("--directory", str(mysql_loaded["csv"]), *M_SELECTION,
                      "--interval", "7m", "--aggregate", "last", "--device", EVIL)
    assert from_csv.stdout == r.stdout
    conn = mariadb_server.connect(mysql_loaded["db"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM battery WHERE device = %s", (EVIL,))
            (n,), = cur.fetchall()
    finally:
        conn.close()
    assert n == 6 * 60 + 2 - len(M_GAP)  # the table survived the name, every row there


@pytest.mark.servers
def test_mysql_source_usage_and_runtime_failures(mysql_loaded, mariadb_server):
    cfg = str(mysql_loaded["config"])
    sel = ("--from", M_RANGE[0], "--to", M_RANGE[1], "--field", "voltage_v", "--no-progress")
    # a device that is nowhere: a usage mistake naming the devices there are
    r = export("--source", "mysql", "-c", cfg, *sel, "--device", "bank-b")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("bmslogger export: --device bank-b")
    assert "bank-a" in r.stderr and "configured-only" in r.stderr
    # configured but silent in this range: no data, exit 1
    r = export("--source", "mysql", "-c", cfg, *sel, "--device", "configured-only")
    assert r.returncode == 1 and "no data" in r.stderr
    # a measurement the sink never made a table for is empty, not an error
    r = export("--source", "mysql", "-c", cfg, *sel[:-2], "temperature.temperature_c",
               "--no-progress")
    assert r.returncode == 1 and "no data" in r.stderr and "Traceback" not in r.stderr
    folder = mysql_loaded["folder"]
    # wrong settings: exit 2, one line
    for config, text in ((mysql_config(folder, mariadb_server.port, "nosuchdb"), "1049"),
                         (mysql_config(folder, mariadb_server.port, mysql_loaded["db"],
                                       password="wrong"), "1045")):
        r = export("--source", "mysql", "-c", str(config), *sel)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and text in r.stderr and "[sinks.mysql]" in r.stderr
    # the server down (nothing listens on the port): exit 1, one line
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    r = export("--source", "mysql", "-c", str(mysql_config(folder, closed_port, "db")), *sel)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "cannot reach MySQL at 127.0.0.1:" in r.stderr


@pytest.mark.servers
def test_a_config_with_only_the_sink_is_enough_for_export(mysql_loaded, mariadb_server):
    """A desktop that only analyses the data has no devices to configure."""
    path = mysql_loaded["folder"] / "sinks-only.toml"
    path.write_text(f'[sinks.mysql]\nhost = "127.0.0.1"\nport = {mariadb_server.port}\n'
                    f'user = "root"\ndatabase = "{mysql_loaded["db"]}"\n', encoding="utf-8")
    r = export("--source", "mysql", "-c", str(path), *M_SELECTION, "--interval", "30m",
               "--aggregate", "last")
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected_csv(mysql_loaded["points"], "last", 1800)
    # `run` still insists on a device: with nothing to poll it would log nothing
    from bmslogger.config import load_config
    from bmslogger.errors import ConfigError
    from bmslogger.manager import build_registry

    with pytest.raises(ConfigError, match="no devices configured"):
        load_config(str(path), build_registry())
