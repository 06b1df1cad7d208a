"""HTTP sink against a real local HTTP server: the documented JSON body, line protocol,
headers and bearer token, retries and Retry-After, refused points isolated, and nothing
lost while the server is down."""

from __future__ import annotations

import importlib
import json
import time

import pytest

from bmslogger.config import parse_config
from bmslogger.errors import PointsRejected, SinkError, SinkUnavailable
from bmslogger.manager import build_registry, get_plugin_manager
from bmslogger.model import Point, SinkConfig
from bmslogger.options import resolve_options
from bmslogger.pipeline import Pipeline
from bmslogger.sinks import http as http_sink

T0 = 1_763_780_000_123_456_789

CELL = Point("cell", {"device": "bank", "plugin": "daly", "pack": "1", "cell": "3"},
             {"voltage_v": 3.312, "balancing": False}, T0)
BATTERY = Point("battery", {"device": "bank", "plugin": "daly"},
                {"voltage_v": 53.1, "cycles": 12, "soc_pct": float("nan")}, T0 + 1)
STATUS = Point("daly_status", {"device": "bank", "plugin": "daly"},
               {"state": "charging"}, T0 + 2)


def make_sink(url: str, **options) -> http_sink.HttpSink:
    options["url"] = url
    opts = resolve_options(http_sink.SINK_TYPE.options, options)
    return http_sink.HttpSink(SinkConfig(name="http", plugin="http", options=opts,
                                         batch_size=25, flush_interval_s=0.05))


def test_json_body_headers_and_token(http_recorder):
    sink = make_sink(http_recorder.url + "/in", token="s3cret",
                     headers=["X-Source: bench", "X-Api-Key: k1"])
    sink.write([CELL, BATTERY, STATUS])
    (req,) = http_recorder.requests
    assert req["path"] == "/in"
    assert req["headers"]["Authorization"] == "Bearer s3cret"
    assert req["headers"]["X-Api-Key"] == "k1"
    assert req["headers"]["X-Source"] == "bench"
    assert req["headers"]["Content-Type"] == "application/json"
    assert json.loads(req["body"]) == {"points": [
        {"measurement": "cell",
         "tags": {"device": "bank", "plugin": "daly", "pack": "1", "cell": "3"},
         "fields": {"voltage_v": 3.312, "balancing": False},
         "time": "2025-11-22T02:53:20.123456Z", "time_ns": T0},
        {"measurement": "battery", "tags": {"device": "bank", "plugin": "daly"},
         "fields": {"voltage_v": 53.1, "cycles": 12, "soc_pct": None},
         "time": "2025-11-22T02:53:20.123456Z", "time_ns": T0 + 1},
        {"measurement": "daly_status", "tags": {"device": "bank", "plugin": "daly"},
         "fields": {"state": "charging"},
         "time": "2025-11-22T02:53:20.123456Z", "time_ns": T0 + 2},
    ]}
    assert "s3cret" not in repr(sink.options) and "k1" not in repr(sink.options)


def test_line_protocol_and_gzip(http_recorder):
    pytest.importorskip("influxdb_client")
    import gzip

    sink = make_sink(http_recorder.url + "/write", format="line", gzip=True, precision="ms")
    sink.write([CELL, STATUS])
    (req,) = http_recorder.requests
    assert req["headers"]["Content-Encoding"] == "gzip"
    assert gzip.decompress(req["body"]).decode().splitlines() == [
        f"cell,cell=3,device=bank,pack=1,plugin=daly balancing=false,voltage_v=3.312 "
        f"{T0 // 1_000_000}",
        f'daly_status,device=bank,plugin=daly state="charging" {(T0 + 2) // 1_000_000}',
    ]


def test_line_protocol_refuses_what_it_cannot_carry(http_recorder):
    pytest.importorskip("influxdb_client")
    bad = Point("cell", {"device": "ba\nnk"}, {"voltage_v": 3.3}, T0)
    sink = make_sink(http_recorder.url, format="line")
    with pytest.raises(PointsRejected) as info:
        sink.write([CELL, bad])
    assert [p for p, _ in info.value.rejected] == [bad]
    assert len(http_recorder.requests) == 1


def test_5xx_is_retried_then_unavailable_with_retry_after(http_recorder):
    http_recorder.responses = [(503, {"Retry-After": "7"})] * 3
    sink = make_sink(http_recorder.url, retries=2, retry_delay=0.01)
    with pytest.raises(SinkUnavailable) as info:
        sink.write([CELL])
    assert info.value.retry_after == 7.0
    assert "503" in str(info.value)
    assert sink.requests == 3
    assert http_recorder.requests == []
    sink.write([CELL])  # the server is fine again
    assert len(http_recorder.requests) == 1


def test_a_transient_error_is_retried_within_one_write(http_recorder):
    http_recorder.responses = [(502, {})]
    sink = make_sink(http_recorder.url, retries=1, retry_delay=0.01)
    sink.write([CELL])
    assert sink.requests == 2
    assert len(http_recorder.requests) == 1


def test_401_goes_to_the_spool_at_once(http_recorder):
    http_recorder.responses = [(401, {})]
    sink = make_sink(http_recorder.url, retries=3, retry_delay=0.01)
    with pytest.raises(SinkUnavailable, match="401"):
        sink.write([CELL])
    assert sink.requests == 1


def test_refused_points_are_isolated_the_rest_stored(http_recorder):
    http_recorder.judge = lambda body: 422 if b"daly_status" in body else 204
    sink = make_sink(http_recorder.url)
    with pytest.raises(PointsRejected) as info:
        sink.write([CELL, STATUS, BATTERY])
    assert [p for p, _ in info.value.rejected] == [STATUS]
    stored = [d["measurement"] for r in http_recorder.requests
              for d in json.loads(r["body"])["points"]]
    assert stored == ["cell", "battery"]


def test_bad_settings_are_clear_errors():
    with pytest.raises(SinkError, match="url must start"):
        make_sink("ftp://x").open()
    with pytest.raises(SinkError, match=r"headers\[1\]"):
        make_sink("http://127.0.0.1:1", headers=["A: b", "no colon"]).open()


def test_unreachable_server_is_unavailable():
    sink = make_sink("http://127.0.0.1:1/", retries=0, timeout=1)
    with pytest.raises(SinkUnavailable, match="connection failed"):
        sink.write([CELL])


def test_nothing_lost_while_the_server_is_down(http_recorder, tmp_path):
    sink = make_sink(http_recorder.url, retries=0, timeout=1)
    pipe = Pipeline([(sink.config, sink)], str(tmp_path / "dead"),
                    spool_dir=str(tmp_path / "spool"), backoff_initial=0.05, backoff_max=0.3)
    pipe.start()

    def batch(start: int, n: int) -> list[Point]:
        return [Point("battery", {"device": "bank"}, {"voltage_v": float(i)}, T0 + i)
                for i in range(start, start + n)]

    try:
        pipe.submit(batch(0, 30))
        assert pipe.flush(10)
        http_recorder.stop()
        pipe.submit(batch(30, 40))
        time.sleep(0.8)
        assert pipe.unsent() == 40
        http_recorder.start()
        pipe.submit(batch(70, 5))
        assert pipe.flush(20)
    finally:
        pipe.close(10)
    got = [d["time_ns"] - T0 for r in http_recorder.requests
           for d in json.loads(r["body"])["points"]]
    assert sorted(set(got)) == list(range(75))
    assert got == sorted(got)  # in order


def test_token_from_a_file_through_the_config(tmp_path):
    pm = get_plugin_manager(autoload=False)
    pm.register(http_sink, name="http")
    pm.register(importlib.import_module("bmslogger.plugins.daly"), name="daly")
    registry = build_registry(pm)
    (tmp_path / "token").write_text("from-file\n")
    config = parse_config(
        '[[devices.daly]]\nname = "bank"\nport = "sim://daly"\n'
        '[sinks.http]\nurl = "http://127.0.0.1:9/x"\ntoken_file = "token"\n',
        str(tmp_path / "logger.toml"), registry,
    )
    (sink_cfg,) = config.sinks
    assert sink_cfg.options["token"] == "from-file"
    assert "from-file" not in repr(sink_cfg.options)
