"""Sink throughput and spool replay, against the cost of serialisation alone, in one run.

    python bench/sinks.py                 # everything (needs influxd, victoria-metrics, mariadbd)
    python bench/sinks.py --quick         # smaller counts

Points are Daly-shaped polls: one ``battery`` point (16 fields), 16 ``cell`` points, 2
``temperature`` points and one ``bmslogger`` self-metrics point per poll (20 points). The
servers are private instances started like the test fixtures (tests/conftest.py) on
loopback ports in temporary folders, and stopped at the end.

Measured (throughputs are the median of three runs; the replay is one run):
* serialisation alone: CSV row formatting, influxdb-client line protocol, PyMySQL escaping;
* each sink's ``write`` of the same points in batches (CSV to a temp folder; InfluxDB 1.x
  and VictoriaMetrics (v2 API) over HTTP; MariaDB);
* the spool: ``submit`` latency per poll with fsync "always" and "never";
* replay: a 24-hour spool of 10 devices polled every 10 s (86 400 polls, 1.7 M points)
  into InfluxDB 1.x through the pipeline after a restart.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bmslogger.model import Point, SinkConfig
from bmslogger.options import resolve_options
from bmslogger.pipeline import Pipeline
from bmslogger.sinks.csvfile import SINK_TYPE as CSV_TYPE
from bmslogger.sinks.csvfile import CsvSink, format_value
from bmslogger.sinks.influxdb import SINK_TYPE as INFLUX_TYPE
from bmslogger.sinks.influxdb import InfluxSink
from bmslogger.sinks.mysql import SINK_TYPE as MYSQL_TYPE
from bmslogger.sinks.mysql import MySQLSink, sql_time
from bmslogger.spool import Spool, encode_point

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_760_000_000 * 10**9


def load_servers():
    spec = importlib.util.spec_from_file_location("bench_servers", ROOT / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def poll_points(device: str, t: int, i: int) -> list[Point]:
    tags = {"device": device, "plugin": "daly", "pack": "1"}
    battery = {f"f{k}_v": 50.0 + (i % 997) / 100 + k for k in range(14)}
    battery.update(cycles=17 + i % 3, charging=i % 2 == 0)
    out = [Point("battery", tags, battery, t)]
    out += [Point("cell", {**tags, "cell": str(c)},
                  {"voltage_v": 3.3 + (i + c) % 50 / 1000, "balancing": False}, t)
            for c in range(1, 17)]
    out += [Point("temperature", {**tags, "sensor": str(s)}, {"temperature_c": 25.0 + s}, t)
            for s in (1, 2)]
    out.append(Point("bmslogger", {"device": device, "plugin": "daly"},
                     {"poll_duration_s": 0.4, "poll_ok": True, "polls": i}, t))
    return out


def make_points(polls: int, devices: int = 10, step_ns: int = 10 * 10**9) -> list[Point]:
    pts: list[Point] = []
    for i in range(polls // devices):
        for d in range(devices):
            pts += poll_points(f"bms{d}", T0 + i * step_ns + d * 1000, i)
    return pts


def sink(stype, sink_class, **opts):
    return sink_class(SinkConfig("bench", stype.name, resolve_options(stype.options, opts)))


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds / 1000:8.1f} k/s"


def timed(fn, repeat: int = 3) -> float:
    """Median seconds of `repeat` runs: one run on a shared 2-CPU machine varies by a
    third from the next (disk flushes, other tenants), the median of three much less."""
    runs = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(i) if fn.__code__.co_argcount else fn()
        runs.append(time.perf_counter() - t)
    return sorted(runs)[len(runs) // 2]


def write_all(s, points: list[Point], batch: int) -> None:
    for i in range(0, len(points), batch):
        s.write(points[i : i + batch])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts")
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()
    polls = 2_000 if args.quick else 10_000
    replay_polls = 8_640 if args.quick else 86_400
    points = make_points(polls)
    n = len(points)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; {n} points "
          f"({polls} polls), batches of {args.batch}")
    cf = load_servers()
    tmp = Path(tempfile.mkdtemp(prefix="bmslogger-bench-"))
    servers = []
    try:
        for sub in ("influx", "vm", "maria"):
            (tmp / sub).mkdir()
        influx = cf.Influx1Server(tmp / "influx", shutil.which("influxd") or "/usr/bin/influxd")
        victoria = cf.VictoriaMetricsServer(tmp / "vm", shutil.which("victoria-metrics")
                                            or "/usr/bin/victoria-metrics")
        maria = cf.MariaDBServer(tmp / "maria", "/usr/sbin/mariadbd",
                                 shutil.which("mariadb-install-db") or "mariadb-install-db")
        for s in (influx, victoria, maria):
            s.start()
            servers.append(s)
        maria.create_database("bench")

        print("\nserialisation alone (one core)")
        csv_ser = timed(lambda: [",".join([*(format_value(str(v)) for v in p.tags.values()),
                                           *(format_value(v) for v in p.fields.values())])
                                 for p in points])
        from influxdb_client import Point as LinePoint

        def client_point(p: Point) -> str:
            lp = LinePoint(p.measurement)
            for key, value in p.tags.items():
                lp.tag(key, value)
            for key, value in p.fields.items():
                lp.field(key, value)
            return lp.time(p.time_ns).to_line_protocol()

        client_ser = timed(lambda: [client_point(p) for p in points])
        lp_sink = sink(INFLUX_TYPE, InfluxSink, version=1, url=influx.url)
        lp_ser = timed(lambda: lp_sink._serialise(points))
        from pymysql.converters import escape_item

        sql_ser = timed(lambda: [[escape_item(v, "utf8mb4") for v in
                                  (sql_time(p.time_ns), *p.tags.values(), *p.fields.values())]
                                 for p in points])
        spool_ser = timed(lambda: [encode_point(p) for p in points])
        print(f"  CSV row formatting          {rate(n, csv_ser)}")
        print(f"  influxdb-client Point → LP  {rate(n, client_ser)}")
        print(f"  influx sink, cached keys    {rate(n, lp_ser)}")
        print(f"  PyMySQL escaping            {rate(n, sql_ser)}")
        print(f"  spool JSON encoding         {rate(n, spool_ser)}")

        print("\nsink.write, same points")
        csv_sink = sink(CSV_TYPE, CsvSink, directory=str(tmp / "csv"), fsync="batch")
        csv_sink.open()
        print(f"  csv                         {rate(n, timed(lambda: write_all(csv_sink, points, args.batch)))}")  # noqa: E501
        csv_sink.close()
        v1 = sink(INFLUX_TYPE, InfluxSink, version=1, url=influx.url, database="bench",
                  create_database=True)
        v1.open()
        print(f"  influxdb v1 (InfluxDB 1.6)  {rate(n, timed(lambda: write_all(v1, points, args.batch)))}")  # noqa: E501
        v1gz = sink(INFLUX_TYPE, InfluxSink, version=1, url=influx.url, database="bench",
                    gzip=True)
        v1gz.open()
        print(f"  influxdb v1, gzip           {rate(n, timed(lambda: write_all(v1gz, points, args.batch)))}")  # noqa: E501
        v2 = sink(INFLUX_TYPE, InfluxSink, version=2, url=victoria.url, bucket="b", org="o")
        v2.open()
        print(f"  influxdb v2 (VictoriaMetr.) {rate(n, timed(lambda: write_all(v2, points, args.batch)))}")  # noqa: E501
        my = sink(MYSQL_TYPE, MySQLSink, host="127.0.0.1", port=maria.port, user="root",
                  database="bench")
        my.open()
        my.write(points[:100])  # tables created outside the timing
        # each run its own time stamps: rows are inserted, not updated as duplicates
        shifted = [[Point(p.measurement, p.tags, p.fields, p.time_ns + (r + 1) * 10**15)
                    for p in points] for r in range(3)]
        print(f"  mysql (MariaDB 10.11)       {rate(n, timed(lambda r: write_all(my, shifted[r], args.batch)))}")  # noqa: E501
        my.close()

        print("\nspool: submit latency per poll (20 points, 1 sink)")
        one = make_points(10, devices=1)[:20]
        for policy in ("always", "never"):
            sp = Spool(str(tmp / f"spool-{policy}"), fsync=policy)
            t = time.perf_counter()
            k = 500
            for _ in range(k):
                sp.put(one, 0.0)
            per = (time.perf_counter() - t) / k
            print(f"  fsync {policy:<6}                {per * 1000:6.2f} ms per poll")
            sp.close()

        print(f"\nreplay: {replay_polls} polls of 10 devices into InfluxDB 1.x")
        day = make_points(replay_polls)
        spool_dir = tmp / "replay"
        cfg = SinkConfig("influx", "influxdb", resolve_options(
            INFLUX_TYPE.options, {"version": 1, "url": influx.url, "database": "replay",
                                  "create_database": True}), batch_size=args.batch)

        class Down(InfluxSink):
            def write(self, pts):
                from bmslogger.errors import SinkUnavailable

                raise SinkUnavailable("down")

        fill = Pipeline([(cfg, Down(cfg))], str(tmp / "dead"), spool_dir=str(spool_dir),
                        spool_fsync="never")
        t = time.perf_counter()
        for i in range(0, len(day), 20):
            fill.submit(day[i : i + 20])
        fill_s = time.perf_counter() - t
        size = fill.stats()["influx"]["spool_bytes"]
        fill.close(1)
        print(f"  spooled {len(day)} points, {size / 1e6:.0f} MB, in {fill_s:.1f} s")
        del day
        target = InfluxSink(cfg)
        pipe = Pipeline([(cfg, target)], str(tmp / "dead"), spool_dir=str(spool_dir))
        t = time.perf_counter()
        pipe.start()
        ok = pipe.flush(600)
        replay_s = time.perf_counter() - t
        written = pipe.stats()["influx"]["written"]
        pipe.close(10)
        print(f"  replayed {written} points in {replay_s:.1f} s ({rate(written, replay_s)}), "
              f"complete: {ok}")
        count = influx.query('SELECT COUNT("voltage_v") FROM "cell"', "replay")
        print(f"  cell points in InfluxDB: {count[0]['values'][0][1]}")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
