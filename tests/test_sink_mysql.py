"""mysql sink against a real MariaDB (Debian's mariadb-server on a loopback port): tables
made and widened, exact values, SQL injection stored as text, idempotent replays, refused
rows isolated, reconnect after a server restart."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from bmslogger.errors import PointsRejected, SinkUnavailable
from bmslogger.model import Point, SinkConfig
from bmslogger.options import resolve_options
from bmslogger.sinks.mysql import SINK_TYPE, MySQLSink, quote, sql_time

T0 = 1_750_000_000 * 10**9 + 123_456_000
EVIL = "x'); DROP TABLE battery; --"


def make(server, database: str, **extra) -> MySQLSink:
    opts = {"host": "127.0.0.1", "port": server.port, "user": "root", "database": database,
            "timeout": "3s", **extra}
    return MySQLSink(SinkConfig("mysql", "mysql", resolve_options(SINK_TYPE.options, opts)))


@pytest.fixture
def db(mariadb_server):
    name = "t" + uuid.uuid4().hex[:10]
    mariadb_server.create_database(name)
    return name


def rows(server, database: str, sql: str) -> list[tuple]:
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def battery(n: int, device: str = "bms1", start: int = 0) -> list[Point]:
    return [
        Point("battery", {"device": device, "plugin": "daly"},
              {"voltage_v": 52.1 + i / 7, "cycles": i, "charging": i % 2 == 0,
               "state": f"s{i}"}, T0 + (start + i) * 10**9)
        for i in range(n)
    ]


def test_quote_and_time():
    assert quote("a`b") == "`a``b`"
    assert sql_time(T0) == "2025-06-15 15:06:40.123456"


@pytest.mark.servers
def test_creates_table_with_keys_and_stores_exact_values(mariadb_server, db):
    sink = make(mariadb_server, db)
    sink.open()
    sent = battery(300)
    sink.write(sent)
    got = rows(mariadb_server, db, "SELECT time, device, plugin, voltage_v, cycles, charging, "
                                   "state FROM battery ORDER BY time")
    assert len(got) == 300
    for p, r in zip(sent, got):
        assert r[0] == datetime.fromtimestamp(p.time_ns // 1000 / 1e6, tz=timezone.utc
                                              ).replace(tzinfo=None)
        assert r[1:3] == ("bms1", "daly")
        assert r[3] == p.fields["voltage_v"]  # DOUBLE keeps every bit
        assert r[4] == p.fields["cycles"] and bool(r[5]) is p.fields["charging"]
        assert r[6] == p.fields["state"]
    ddl = rows(mariadb_server, db, "SHOW CREATE TABLE battery")[0][1]
    assert "UNIQUE KEY `series_time` (`device`,`plugin`,`time`)" in ddl
    assert "KEY `device_time` (`device`,`time`)" in ddl
    assert "`voltage_v` double" in ddl and "`cycles` bigint" in ddl
    assert "`charging` tinyint(1)" in ddl and "`state` text" in ddl
    assert sink.statements == 1  # one multi-row statement for one column set
    sink.close()


@pytest.mark.servers
def test_replay_overwrites_instead_of_duplicating(mariadb_server, db):
    sink = make(mariadb_server, db)
    sent = battery(50)
    sink.write(sent)
    sink.write(sent[10:30])
    assert rows(mariadb_server, db, "SELECT COUNT(*) FROM battery")[0][0] == 50


@pytest.mark.servers
def test_new_fields_and_tags_add_columns(mariadb_server, db):
    sink = make(mariadb_server, db)
    sink.write(battery(2))
    sink.write([Point("battery", {"device": "bms1", "plugin": "daly", "pack": "2"},
                      {"voltage_v": 1.5, "soh_pct": 97.0}, T0)])
    got = rows(mariadb_server, db, "SELECT pack, voltage_v, soh_pct FROM battery ORDER BY "
                                   "time, pack")
    assert got == [("", 52.1, None), ("2", 1.5, 97.0), ("", 52.1 + 1 / 7, None)]
    ddl = rows(mariadb_server, db, "SHOW CREATE TABLE battery")[0][1]
    assert "UNIQUE KEY `series_time` (`device`,`pack`,`plugin`,`time`)" in ddl
    # a second logger's view: the sink reloads the schema after a reconnect
    again = make(mariadb_server, db)
    again.write(battery(1, start=10))
    assert rows(mariadb_server, db, "SELECT COUNT(*) FROM battery")[0][0] == 4


@pytest.mark.servers
def test_injection_is_stored_as_text(mariadb_server, db):
    sink = make(mariadb_server, db)
    texts = [EVIL, "a,b", 'q"q', "it's", "new\nline", "tab\t", "back\\", "`tick`", "=1+1",
             "ünï 🔋", ""]
    sent = [Point("battery", {"device": EVIL, "plugin": t}, {"note": t, "n": i}, T0 + i)
            for i, t in enumerate(texts)]
    sink.write(sent)
    got = rows(mariadb_server, db, "SELECT device, plugin, note, n FROM battery ORDER BY n")
    assert got == [(EVIL, t, t, i) for i, t in enumerate(texts)]
    tables = rows(mariadb_server, db, "SHOW TABLES")
    assert tables == [("battery",)]
    # names are identifiers, quoted: a hostile measurement is a table of that name
    sink.write([Point("m`; DROP TABLE battery; --", {"device": "d"}, {"x": 1}, T0)])
    assert sorted(t[0] for t in rows(mariadb_server, db, "SHOW TABLES")) == [
        "battery", "m`; DROP TABLE battery; --"]


@pytest.mark.servers
def test_refused_rows_are_isolated(mariadb_server, db):
    sink = make(mariadb_server, db)
    sink.write(battery(1))
    wrong_type = Point("battery", {"device": "bms1", "plugin": "daly"}, {"voltage_v": "high"},
                       T0 + 500 * 10**9)
    too_long = Point("battery", {"device": "x" * 101, "plugin": "daly"}, {"voltage_v": 1.0}, T0)
    batch = battery(6, start=1)
    with pytest.raises(PointsRejected) as info:
        sink.write([*batch[:3], wrong_type, too_long, *batch[3:]])
    assert {id(p) for p, _ in info.value.rejected} == {id(wrong_type), id(too_long)}
    assert rows(mariadb_server, db, "SELECT COUNT(*) FROM battery")[0][0] == 7


@pytest.mark.servers
def test_int_beyond_double_precision_is_refused(mariadb_server, db):
    sink = make(mariadb_server, db)
    sink.write([Point("m", {"device": "d"}, {"x": 1.5}, T0)])
    # an int too large for DOUBLE's exact range is refused by the sink itself
    big = Point("m", {"device": "d"}, {"x": 2**60}, T0 + 1)
    with pytest.raises(PointsRejected, match=r"column m\.x is DOUBLE"):
        sink.write([big])


@pytest.mark.servers
def test_reconnects_after_server_restart(private_mariadb_server):
    server = private_mariadb_server
    server.create_database("logs")
    sink = make(server, "logs")
    sink.write(battery(3))
    server.stop()
    with pytest.raises(SinkUnavailable):
        sink.write(battery(3, start=3))
    server.start()
    sink.write(battery(3, start=3))
    assert sink.reconnects == 1
    assert rows(server, "logs", "SELECT COUNT(*) FROM battery")[0][0] == 6


def test_connection_refused_is_retry_later():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = MySQLSink(SinkConfig("m", "mysql", resolve_options(
        SINK_TYPE.options, {"host": "127.0.0.1", "port": port, "timeout": "1s"})))
    with pytest.raises(SinkUnavailable, match="2003"):
        sink.write(battery(1))
