"""influxdb sink against real servers: Debian's InfluxDB 1.x (version = 1, read back with
InfluxQL) and VictoriaMetrics (version = 2 through influxdb-client's /api/v2/write).
HTTP status sorting is checked against a small loopback HTTP server that answers with
chosen statuses."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator

import pytest

from bmslogger.errors import PointsRejected, SinkError, SinkUnavailable
from bmslogger.model import Point, SinkConfig
from bmslogger.options import resolve_options
from bmslogger.sinks.influxdb import SINK_TYPE, InfluxSink

T0 = 1_750_000_000 * 10**9
HOSTILE = [
    "a,b", "a b", "a=b", "x'); DROP TABLE battery; --", 'q"q', "back\\slash", "ünï 🔋",
    "=SUM(A1)", "",
]


def make(**options) -> InfluxSink:
    return InfluxSink(SinkConfig("influx", "influxdb", resolve_options(SINK_TYPE.options, options)))


def db_name() -> str:
    return "t" + uuid.uuid4().hex[:10]


def battery(n: int, device: str = "bms1", start: int = 0, step_ns: int = 10**9) -> list[Point]:
    return [
        Point("battery", {"device": device, "plugin": "daly"},
              {"voltage_v": 52.1 + i / 1000, "cycles": i, "charging": i % 2 == 0,
               "state": f"s{i}"}, T0 + (start + i) * step_ns)
        for i in range(n)
    ]


# --- version 1 against InfluxDB 1.x --------------------------------------------------------


@pytest.mark.servers
@pytest.mark.parametrize("gzip", [False, True])
def test_v1_batch_round_trips_exactly(influx1_server, gzip):
    db = db_name()
    sink = make(version=1, url=influx1_server.url, database=db, create_database=True, gzip=gzip)
    sink.open()
    sent = battery(500)
    sink.write(sent)
    assert sink.requests == 1  # one batch, one request
    rows = influx1_server.rows(db, "battery")
    assert len(rows) == 500
    for p, r in zip(sent, rows):
        assert r["time"] == p.time_ns
        assert r["device"] == "bms1" and r["plugin"] == "daly"
        assert r["voltage_v"] == p.fields["voltage_v"]  # float64 exact
        assert r["cycles"] == p.fields["cycles"] and r["charging"] == p.fields["charging"]
        assert r["state"] == p.fields["state"]
    sink.close()


@pytest.mark.servers
def test_v1_replay_is_idempotent_and_precision_applies(influx1_server):
    db = db_name()
    sink = make(version=1, url=influx1_server.url, database=db, create_database=True,
                precision="s")
    sink.open()
    sent = battery(20, step_ns=10**9 + 123_456)
    sink.write(sent)
    sink.write(sent)  # the pipeline may deliver a batch twice
    rows = influx1_server.rows(db, "battery")
    assert len(rows) == 20
    assert [r["time"] for r in rows] == [p.time_ns // 10**9 * 10**9 for p in sent]


@pytest.mark.servers
def test_v1_bad_point_is_isolated_rest_is_stored(influx1_server):
    db = db_name()
    sink = make(version=1, url=influx1_server.url, database=db, create_database=True)
    sink.open()
    sink.write(battery(1))
    bad = Point("battery", {"device": "bms1", "plugin": "daly"}, {"voltage_v": "oops"}, T0 + 50)
    batch = battery(10, start=100)
    with pytest.raises(PointsRejected) as info:
        sink.write([*batch[:4], bad, *batch[4:]])
    assert [p for p, _ in info.value.rejected] == [bad]
    assert "field type conflict" in info.value.rejected[0][1]
    rows = influx1_server.rows(db, "battery")
    assert len(rows) == 11


@pytest.mark.servers
def test_v1_large_batch_goes_in_overlapped_chunks_and_isolates_a_bad_point(influx1_server):
    """A replay-sized batch is sent as several requests, serialised while the previous
    one is on its way; a bad point in the middle still costs only itself."""
    db = db_name()
    sink = make(version=1, url=influx1_server.url, database=db, create_database=True)
    sink.open()
    sink.write(battery(1))
    batch = battery(4500, start=10)
    bad = Point("battery", {"device": "bms1", "plugin": "daly"}, {"voltage_v": "oops"}, T0 + 5)
    before = sink.requests
    with pytest.raises(PointsRejected) as info:
        sink.write([*batch[:2500], bad, *batch[2500:]])
    assert [p for p, _ in info.value.rejected] == [bad]
    assert sink.requests - before >= 5  # five chunks, plus the halving around the bad one
    rows = influx1_server.rows(db, "battery")
    assert len(rows) == 4501
    assert [r["cycles"] for r in rows[1:]] == [p.fields["cycles"] for p in batch]
    sink.close()


@pytest.mark.servers
def test_v1_hostile_text_round_trips_or_is_refused(influx1_server):
    db = db_name()
    sink = make(version=1, url=influx1_server.url, database=db, create_database=True)
    sink.open()
    sent = [
        Point("inject", {"device": "d", "label": text or "empty"}, {"text": text, "n": i},
              T0 + i)
        for i, text in enumerate(HOSTILE)
    ]
    impossible = [
        Point("inject", {"device": "new\nline"}, {"n": 100}, T0 + 100),
        Point("inject", {"device": "trailing\\"}, {"n": 101}, T0 + 101),
        Point("inject", {"device": "tab\tx"}, {"n": 102}, T0 + 102),
    ]
    with pytest.raises(PointsRejected) as info:
        sink.write(sent + impossible)
    assert [p for p, _ in info.value.rejected] == impossible
    rows = influx1_server.rows(db, "inject")
    assert [(r["label"], r["text"], r["n"]) for r in rows] == [
        (t or "empty", t, i) for i, t in enumerate(HOSTILE)
    ]
    # string fields carry newlines, tabs and trailing backslashes exactly
    multi = Point("inject", {"device": "d", "label": "multi"},
                  {"text": 'line1\nline2\t"x"\\', "n": 999}, T0 + 999)
    sink.write([multi])
    row = next(r for r in influx1_server.rows(db, "inject") if r["n"] == 999)
    assert row["text"] == 'line1\nline2\t"x"\\'


@pytest.mark.servers
def test_v1_non_finite_only_point_is_refused(influx1_server):
    db = db_name()
    sink = make(version=1, url=influx1_server.url, database=db, create_database=True)
    nan_point = Point("battery", {"device": "d"}, {"v": float("nan")}, T0)
    with pytest.raises(PointsRejected, match="NaN"):
        sink.write([nan_point, *battery(2)])
    assert len(influx1_server.rows(db, "battery")) == 2


@pytest.mark.servers
def test_v1_server_down_is_retry_later_and_recovers(private_influx1_server):
    server = private_influx1_server
    db = db_name()
    sink = make(version=1, url=server.url, database=db, create_database=True, timeout="2s")
    sink.open()
    server.stop()
    with pytest.raises(SinkUnavailable, match="connection"):
        sink.write(battery(3))
    server.start()
    sink.write(battery(3))
    assert len(server.rows(db, "battery")) == 3


# --- version 2 through influxdb-client against VictoriaMetrics ------------------------------


@pytest.mark.servers
def test_v2_batch_round_trips(victoria_server):
    device = "v2-" + uuid.uuid4().hex[:8]
    sink = make(version=2, url=victoria_server.url, org="home", bucket="battery", token="t")
    sink.open()
    sent = [
        Point("battery", {"device": device, "plugin": "daly", "label": HOSTILE[i % 8]},
              {"voltage_v": 52.0 + i / 7, "cycles": i}, T0 + i * 10**6)
        for i in range(400)
    ]
    sink.write(sent)
    sink.write(sent[:50])  # replayed: same series and time, stored once
    series = victoria_server.export(f'{{__name__="battery_voltage_v",device="{device}"}}')
    by_label = {s["metric"]["label"]: s for s in series}
    assert set(by_label) == set(HOSTILE[:8])
    got = sorted((t, v) for s in series for t, v in zip(s["timestamps"], s["values"]))
    # VictoriaMetrics keeps 12 significant digits (InfluxDB 1.x above is exact)
    assert [t for t, _ in got] == [p.time_ns // 10**6 for p in sent]
    assert [v for _, v in got] == pytest.approx([p.fields["voltage_v"] for p in sent], rel=1e-11)
    cycles = victoria_server.export(f'{{__name__="battery_cycles",device="{device}"}}')
    assert sum(len(s["values"]) for s in cycles) == 400
    sink.close()


@pytest.mark.servers
@pytest.mark.parametrize("gzip", [True])
def test_v2_gzip(victoria_server, gzip):
    device = "gz-" + uuid.uuid4().hex[:8]
    sink = make(version=2, url=victoria_server.url, bucket="b", org="o", gzip=gzip)
    sink.open()
    sink.write([Point("m", {"device": device}, {"x": 1.25}, T0)])
    series = victoria_server.export(f'{{__name__="m_x",device="{device}"}}')
    assert series[0]["values"] == [1.25]


@pytest.mark.servers
def test_v2_server_down_and_back(private_victoria_server):
    server = private_victoria_server
    sink = make(version=2, url=server.url, bucket="b", org="o", timeout="2s")
    sink.open()
    server.stop()
    with pytest.raises(SinkUnavailable, match="connection"):
        sink.write(battery(2))
    server.start()
    sink.write(battery(2))
    assert len(server.export('{__name__="battery_cycles"}')[0]["values"]) == 2


def test_v2_needs_a_bucket():
    with pytest.raises(SinkError, match="bucket"):
        make(version=2, url="http://127.0.0.1:1").open()


# --- status sorting against a loopback HTTP server ----------------------------------------


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 204
    headers_out: dict = {}
    body = b""
    seen: list = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        data = self.rfile.read(length)
        type(self).seen.append((self.path, dict(self.headers), data))
        status = type(self).status
        if callable(status):
            status = status(data)
        self.send_response(status)
        for k, v in type(self).headers_out.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(type(self).body)))
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def answer() -> Iterator[type[_Answer]]:
    handler = type("Handler", (_Answer,), {"seen": [], "headers_out": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("version", [1, 2])
def test_429_retry_after_is_honoured(answer, version):
    answer.status = 429
    answer.headers_out = {"Retry-After": "17"}
    answer.body = b'{"error":"slow down"}'
    sink = make(version=version, url=answer.url, bucket="b", org="o", database="d")
    with pytest.raises(SinkUnavailable) as info:
        sink.write(battery(3))
    assert info.value.retry_after == 17.0
    assert "429" in str(info.value)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("status", [500, 503, 401])
def test_server_errors_are_retry_later(answer, version, status):
    answer.status = status
    sink = make(version=version, url=answer.url, bucket="b", org="o", database="d")
    with pytest.raises(SinkUnavailable, match=str(status)):
        sink.write(battery(2))


def test_400_isolates_the_bad_line_by_halving(answer):
    answer.status = lambda body: 400 if b"cycles=3i" in body else 204
    answer.body = b'{"error":"bad point"}'
    sink = make(version=1, url=answer.url, database="d", username="u", password="p")
    sent = battery(8)
    with pytest.raises(PointsRejected) as info:
        sink.write(sent)
    assert [p for p, _ in info.value.rejected] == [sent[3]]
    assert "bad point" in info.value.rejected[0][1]
    # 1 + 2 + 2 + 2 requests: log2(8) levels of halving around one bad line
    assert len(answer.seen) == 7
    path, headers, _ = answer.seen[0]
    assert "u=" not in path and "p=" not in path  # credentials never in the URL
    assert headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize("precision", ["ns", "us", "ms", "s"])
def test_series_key_cache_gives_exactly_influxdb_clients_line(precision, monkeypatch):
    """The fast path keeps each series' escaped key; its lines must equal what
    influxdb_client.Point produces for every hostile name, value and type."""
    import bmslogger.sinks.influxdb as module

    points = [Point("battery" + h, {"device": h or "x", "tag": h},
                    {"v": 1.0, "f" + h: h, "i": 3, "b": True, "nan": float("nan"), "g": 2.5e-7},
                    T0 + 123_456_789) for h in HOSTILE]
    points.append(Point("m", {}, {"x": float("inf")}, 5))
    fast = make(precision=precision)
    lines = [fast.to_line(p) for p in points]
    assert fast._keys  # the cache was used
    monkeypatch.setattr(module, "_SERIALISERS", None)  # influxdb_client.Point per point
    slow = make(precision=precision)
    assert lines == [slow.to_line(p) for p in points]
    assert lines[-1] == ""


def test_serialise_rejects_and_keeps_exactly_like_the_point_path(monkeypatch):
    """The cached series check must refuse the same points, for the same reasons, as the
    per-point check, including a bad tag seen again after its series was cached."""
    import bmslogger.sinks.influxdb as module

    points = [
        Point("battery", {"device": "ok"}, {"v": 1.0}, T0),
        Point("battery", {"device": "new\nline"}, {"v": 1.0}, T0),
        Point("battery", {"device": "new\nline"}, {"v": 2.0}, T0 + 1),  # cached series
        Point("battery", {"device": "trail\\"}, {"v": 1.0}, T0),
        Point("battery", {"device": "ok"}, {"tab\tname": 1.0}, T0),
        Point("battery", {"device": "ok"}, {"tab\tname": 1.0, "v": 3.0}, T0 + 2),
        Point("battery", {"device": "ok"}, {"nan": float("nan")}, T0),
        Point("cell\r", {"device": "ok"}, {"v": 1.0}, T0),
        Point("battery", {"device": "ok"}, {"s": "new\nline in a string is fine"}, T0 + 3),
    ]
    fast = make()
    result = fast._serialise(points)
    monkeypatch.setattr(module, "_SERIALISERS", None)
    assert result == make()._serialise(points)
    lines, rejected = result
    assert [p.time_ns - T0 for p, _ in lines] == [0, 3]
    assert len(rejected) == 7
    assert all("cannot carry" in why for _, why in rejected[:5])
    assert "NaN" in rejected[5][1]
