"""Delivery end to end: the real logger (``bmslogger run`` in a subprocess) polls simulated
Daly BMS over TCP while the real database servers go away and come back, or while the
logger itself is killed with SIGKILL; afterwards every database must hold exactly what
the simulators sent, in order. Plus hostile text through InfluxDB, MySQL and CSV.

The simulators run in this test process behind `serve_tcp`, so the test records every
0x90 (pack) answer a simulator put on the wire; each such answer becomes one ``battery``
point with its voltage, current and SOC, which is what the databases are compared with.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from bmslogger.model import Point, SinkConfig
from bmslogger.options import resolve_options
from bmslogger.pipeline import Pipeline, dead_letter_path, read_dead_letters
from bmslogger.plugins.daly import protocol as dp
from bmslogger.simline import build_simulator, serve_tcp
from bmslogger.sinks.csvfile import SINK_TYPE as CSV_TYPE
from bmslogger.sinks.csvfile import CsvSink, unescape_text
from bmslogger.sinks.influxdb import SINK_TYPE as INFLUX_TYPE
from bmslogger.sinks.influxdb import InfluxSink
from bmslogger.sinks.mysql import SINK_TYPE as MYSQL_TYPE
from bmslogger.sinks.mysql import MySQLSink

DEVICES = ("bms-a", "bms-b")


class RecordingDaly:
    """A Daly simulator on a TCP port that remembers every pack answer it sent."""

    def __init__(self, seed: int) -> None:
        self.sim = build_simulator("daly", {"cells": "4", "sensors": "1", "seed": str(seed),
                                            "period": "20s", "current": "40"})
        self.sent: list[tuple[float, float, float]] = []  # (voltage_v, current_a, soc_pct)
        self.lock = threading.Lock()
        original = self.sim.answer

        def answer(data_id: int) -> bytes | None:
            out = original(data_id)
            if data_id == dp.PACK and out is not None:
                frame = next(e for e in dp.FrameParser().events(out) if isinstance(e, dp.Frame))
                pack = dp.decode_pack(frame)
                with self.lock:
                    self.sent.append((pack.voltage_v, pack.current_a(False), pack.soc_pct))
            return out

        self.sim.answer = answer  # instance attribute: the simulator calls self.answer
        self.server = serve_tcp(self.sim)

    @property
    def url(self) -> str:
        return f"socket://{self.server.address[0]}:{self.server.address[1]}"

    def silence(self, quiet: bool) -> None:
        self.sim.sleep_mode = "silent" if quiet else "none"

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def daly_pair():
    sims = {name: RecordingDaly(seed) for seed, name in enumerate(DEVICES, start=1)}
    yield sims
    for s in sims.values():
        s.close()


def write_config(tmp: Path, sims: dict, sinks: str) -> Path:
    devices = "".join(
        f'[[devices.daly]]\nname = "{name}"\nport = "{sim.url}"\ninterval = "3s"\n'
        f'timeout = "400ms"\nretries = 1\n\n'
        for name, sim in sims.items()
    )
    cfg = tmp / "logger.toml"
    cfg.write_text(
        f'[logger]\ninterval = "3s"\nstate_dir = "{tmp}/state"\nspool_dir = "{tmp}/spool"\n'
        f'lock_dir = "{tmp}/locks"\nlog_level = "info"\nlog_file = "{tmp}/logger.log"\n\n'
        + devices
        + f'[sinks.csv]\ndirectory = "{tmp}/csv"\nflush_interval = "500ms"\n\n'
        + sinks
    )
    return cfg


def start_logger(cfg: Path) -> subprocess.Popen:
    err = open(cfg.parent / "stderr.txt", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "bmslogger", "run", "-c", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=err)
    finally:
        err.close()


def stop_logger(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def logs(tmp: Path) -> str:
    out = ""
    for name in ("stderr.txt", "logger.log"):
        if (tmp / name).exists():
            out += (tmp / name).read_text()[-3000:]
    return out


def sinks_toml(influx, victoria, maria, db: str) -> str:
    return (
        f'[[sinks.influxdb]]\nname = "influx1"\nversion = 1\nurl = "{influx.url}"\n'
        f'database = "{db}"\ncreate_database = true\ntimeout = "2s"\nbatch_size = 200\n'
        'flush_interval = "500ms"\n\n'
        f'[[sinks.influxdb]]\nname = "victoria"\nversion = 2\nurl = "{victoria.url}"\n'
        'org = "home"\nbucket = "battery"\ntimeout = "2s"\nbatch_size = 200\n'
        'flush_interval = "500ms"\n\n'
        f'[sinks.mysql]\nhost = "127.0.0.1"\nport = {maria.port}\nuser = "root"\n'
        f'database = "{db}"\ntimeout = "2s"\nbatch_size = 200\nflush_interval = "500ms"\n'
    )


def check_databases(sims: dict, influx, victoria, maria, db: str, tmp: Path) -> None:
    """Every database holds exactly the pack answers each simulator sent, in order."""
    for name, sim in sims.items():
        sent = sim.sent
        assert len(sent) >= 5, f"{name}: too few polls to mean anything"
        # InfluxDB 1.x: exact floats, ordered by time
        rows = [r for r in influx.rows(db, "battery") if r["device"] == name]
        got = [(r["voltage_v"], r["current_a"], r["soc_pct"]) for r in rows]
        assert got == sent, f"influx1 {name}: {len(got)} points vs {len(sent)} sent"
        times = [r["time"] for r in rows]
        assert times == sorted(times) and len(set(times)) == len(times)
        # MariaDB
        conn = maria.connect(db)
        with conn.cursor() as cur:
            cur.execute("SELECT voltage_v, current_a, soc_pct FROM battery WHERE device = %s "
                        "ORDER BY time", (name,))
            got_sql = [tuple(r) for r in cur.fetchall()]
        conn.close()
        assert got_sql == sent, f"mysql {name}: {len(got_sql)} rows vs {len(sent)} sent"
        # VictoriaMetrics through influxdb-client (12 significant digits kept)
        series = victoria.export(f'{{__name__="battery_voltage_v",device="{name}"}}')
        values = [v for s in series for v in s["values"]]
        assert values == pytest.approx([v for v, _, _ in sent], rel=1e-11)
        # the local reference sink saw the same
        rows_csv = []
        for path in sorted((tmp / "csv" / "battery").glob("*.csv")):
            with open(path, newline="", encoding="utf-8") as f:
                rows_csv += [r for r in csv.DictReader(f) if unescape_text(r["device"]) == name]
        assert [float(r["voltage_v"]) for r in rows_csv] == [v for v, _, _ in sent]


@pytest.mark.servers
@pytest.mark.slow
def test_outage_of_every_server_loses_nothing(
    tmp_path, daly_pair, private_influx1_server, private_victoria_server,
    private_mariadb_server,
):
    influx, victoria, maria = private_influx1_server, private_victoria_server, \
        private_mariadb_server
    db = "outage"
    maria.create_database(db)
    cfg = write_config(tmp_path, daly_pair, sinks_toml(influx, victoria, maria, db))
    proc = start_logger(cfg)
    try:
        wait_for(lambda: all(len(s.sent) >= 2 for s in daly_pair.values()), 20, "first polls")
        for server in (influx, victoria, maria):
            server.stop()
        during = {n: len(s.sent) for n, s in daly_pair.items()}
        time.sleep(8)
        assert all(len(s.sent) >= during[n] + 2 for n, s in daly_pair.items()), \
            "polling must go on while every server is down"
        status = (tmp_path / "state" / "status.json")

        def spooling() -> bool:
            try:
                sinks = json.loads(status.read_text())["sinks"]
            except (OSError, ValueError):
                return False
            return all(sinks[n]["spool_points"] > 0 for n in ("influx1", "victoria", "mysql"))

        wait_for(spooling, 10, "the status file to show the spools filling")
        for server in (influx, victoria, maria):
            server.start()
        time.sleep(5)
        for s in daly_pair.values():
            s.silence(True)  # no new pack answers from here on
        time.sleep(3)
    finally:
        code = stop_logger(proc)
    assert code == 0, logs(tmp_path)
    check_databases(daly_pair, influx, victoria, maria, db, tmp_path)
    log = (tmp_path / "logger.log").read_text()
    assert "will retry" in log and "writing again" in log


@pytest.mark.servers
@pytest.mark.slow
def test_sigkill_while_sinks_are_down_then_replay(
    tmp_path, daly_pair, private_influx1_server, private_victoria_server,
    private_mariadb_server,
):
    influx, victoria, maria = private_influx1_server, private_victoria_server, \
        private_mariadb_server
    db = "crash"
    maria.create_database(db)
    cfg = write_config(tmp_path, daly_pair, sinks_toml(influx, victoria, maria, db))
    proc = start_logger(cfg)
    try:
        wait_for(lambda: all(len(s.sent) >= 2 for s in daly_pair.values()), 20, "first polls")
        for server in (influx, victoria, maria):
            server.stop()
        time.sleep(7)
        for s in daly_pair.values():
            s.silence(True)
        time.sleep(3)  # the poll in hand ends (its points are spooled) before the kill
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    spooled = [p for p in (tmp_path / "spool" / "sinks").rglob("*.seg")]
    assert spooled and sum(p.stat().st_size for p in spooled) > 0
    for server in (influx, victoria, maria):
        server.start()
    for s in daly_pair.values():
        s.silence(False)
    proc = start_logger(cfg)
    try:
        before = {n: len(s.sent) for n, s in daly_pair.items()}
        wait_for(lambda: all(len(s.sent) >= before[n] + 2 for n, s in daly_pair.items()), 20,
                 "new polls")
        for s in daly_pair.values():
            s.silence(True)
        time.sleep(3)
    finally:
        code = stop_logger(proc)
    assert code == 0, logs(tmp_path)
    check_databases(daly_pair, influx, victoria, maria, db, tmp_path)
    assert "waiting in the spool" in (tmp_path / "logger.log").read_text()
    out = subprocess.run([sys.executable, "-m", "bmslogger", "status", "-c", str(cfg),
                          "--format", "json"], capture_output=True, text=True, timeout=60)
    assert '"state": "stopped"' in out.stdout, out.stderr


# --- hostile text through every database -----------------------------------------------------

HOSTILE = ["a,b", "a b", "a=b", "x'); DROP TABLE battery; --", 'q"q', "it's", "back\\slash",
           "=SUM(A1)", "+1", "-2", "@x", "ünï 🔋"]
FIELD_ONLY = ["new\nline", "cr\rlf", "tab\tx", "trail\\", ""]


@pytest.mark.servers
def test_hostile_text_round_trips_through_influxdb_mysql_and_csv(
    tmp_path, influx1_server, mariadb_server,
):
    db = "inj" + uuid.uuid4().hex[:8]
    mariadb_server.create_database(db)
    t0 = 1_760_000_000 * 10**9
    points = [
        Point("battery", {"device": text, "plugin": "daly", "pack": text},
              {"note": text, "n": i}, t0 + i * 10**6)
        for i, text in enumerate(HOSTILE)
    ] + [
        Point("battery", {"device": "d", "plugin": "daly", "pack": "1"},
              {"note": text, "n": 100 + i}, t0 + (100 + i) * 10**6)
        for i, text in enumerate(FIELD_ONLY)
    ]
    newline_tag = Point("battery", {"device": "two\nlines", "plugin": "daly"}, {"n": 999},
                        t0 + 999 * 10**6)

    def cfg(name: str, stype, **opts) -> SinkConfig:
        return SinkConfig(name, stype.name, resolve_options(stype.options, opts), batch_size=100,
                          flush_interval_s=0.1)

    influx_cfg = cfg("influx", INFLUX_TYPE, version=1, url=influx1_server.url, database=db,
                     create_database=True)
    mysql_cfg = cfg("mysql", MYSQL_TYPE, host="127.0.0.1", port=mariadb_server.port,
                    user="root", database=db)
    csv_cfg = cfg("csv", CSV_TYPE, directory=str(tmp_path / "csv"))
    pipe = Pipeline(
        [(influx_cfg, InfluxSink(influx_cfg)), (mysql_cfg, MySQLSink(mysql_cfg)),
         (csv_cfg, CsvSink(csv_cfg))],
        str(tmp_path / "dead"), spool_dir=str(tmp_path / "spool"),
    )
    pipe.start()
    pipe.submit([*points, newline_tag])
    assert pipe.close(20) is True

    expected = sorted(
        [(str(p.tags["device"]), str(p.tags["pack"]), p.fields["note"], p.fields["n"])
         for p in points], key=lambda r: r[3])
    # InfluxDB: a tag with a newline cannot be written exactly and is dead-lettered instead
    rows = influx1_server.rows(db, "battery")
    got = sorted([(r["device"], r["pack"], r["note"], r["n"]) for r in rows], key=lambda r: r[3])
    assert got == expected
    letters = read_dead_letters(dead_letter_path(str(tmp_path / "dead"), "influx"))
    assert [p for p, _ in letters] == [newline_tag]
    assert "cannot carry" in letters[0][1]
    # MySQL: everything, the newline tag included, stored as text
    conn = mariadb_server.connect(db)
    with conn.cursor() as cur:
        cur.execute("SELECT device, pack, note, n FROM battery ORDER BY n")
        got_sql = [tuple(r) for r in cur.fetchall()]
    conn.close()
    assert got_sql == [*expected, ("two\nlines", "", None, 999)]
    # CSV: read back with the csv module and the documented unescape
    with open(next((tmp_path / "csv" / "battery").glob("*.csv")), newline="",
              encoding="utf-8") as f:
        rows_csv = list(csv.DictReader(f))
    got_csv = sorted(
        [(unescape_text(r["device"]), unescape_text(r["pack"]), unescape_text(r["note"]),
          int(r["n"])) for r in rows_csv if r["n"] != "999"], key=lambda r: r[3])
    assert got_csv == expected
    assert os.path.exists(tmp_path / "spool")
