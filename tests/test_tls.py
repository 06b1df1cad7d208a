"""TLS for the HTTP-based sinks through the shared `bmslogger.tls` keys: a real HTTPS
server with a throw-away CA; trusted with `ca_cert`, refused without it, accepted with
`verify_tls = false`; certificate paths resolve against the config file's folder."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from bmslogger.config import parse_config
from bmslogger.errors import SinkUnavailable
from bmslogger.manager import build_registry
from bmslogger.model import Point, SinkConfig
from bmslogger.options import resolve_options
from bmslogger.sinks import http as http_sink
from bmslogger.sinks import influxdb as influx_sink
from bmslogger.tls import TLS_OPTIONS, TlsSettings

# openssl makes the certificates: a missing one must fail CI, not skip quietly
pytestmark = pytest.mark.servers

POINT = Point("battery", {"device": "bank", "plugin": "daly"}, {"voltage_v": 53.1},
              1_760_000_000 * 10**9)


def sink(module, cls, **options):
    opts = resolve_options(module.SINK_TYPE.options, options)
    return cls(SinkConfig(name="s", plugin=module.SINK_TYPE.name, options=opts))


@pytest.fixture
def https_recorder(http_recorder, tls_files):
    _ca, cert, key = tls_files
    http_recorder.stop()
    http_recorder.start(tls=(cert, key))
    assert http_recorder.url.startswith("https://")
    return http_recorder


def test_every_network_sink_declares_the_same_tls_keys():
    from bmslogger.sinks import mqtt as mqtt_sink

    names = [o.name for o in TLS_OPTIONS]
    for module in (http_sink, influx_sink, mqtt_sink):
        declared = {o.name: o for o in module.SINK_TYPE.options}
        assert [declared[n] for n in names] == list(TLS_OPTIONS), module.__name__


def test_http_sink_trusts_the_configured_ca_only(https_recorder, tls_files):
    ca, _cert, _key = tls_files
    trusted = sink(http_sink, http_sink.HttpSink, url=https_recorder.url + "/in", ca_cert=ca)
    trusted.open()
    trusted.write([POINT])
    assert len(https_recorder.requests) == 1
    untrusted = sink(http_sink, http_sink.HttpSink, url=https_recorder.url + "/in",
                     retries=0)
    untrusted.open()
    with pytest.raises(SinkUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.write([POINT])
    unchecked = sink(http_sink, http_sink.HttpSink, url=https_recorder.url + "/in",
                     verify_tls=False)
    unchecked.open()
    unchecked.write([POINT])
    assert len(https_recorder.requests) == 2


@pytest.mark.parametrize("version", [1, 2])
def test_influxdb_sink_over_https(https_recorder, tls_files, version):
    ca, _cert, _key = tls_files
    common = {"url": https_recorder.url, "version": version, "bucket": "b", "org": "o",
              "database": "db"}
    good = sink(influx_sink, influx_sink.InfluxSink, ca_cert=ca, **common)
    good.open()
    good.write([POINT])
    (req,) = https_recorder.requests
    assert b"battery,device=bank,plugin=daly voltage_v=53.1" in req["body"]
    bad = sink(influx_sink, influx_sink.InfluxSink, **common)
    bad.open()
    with pytest.raises(SinkUnavailable):
        bad.write([POINT])
    assert len(https_recorder.requests) == 1
    bad.close()
    good.close()


def test_certificate_paths_resolve_against_the_config_folder(tmp_path: Path, tls_files):
    ca, _cert, _key = tls_files
    folder = tmp_path / "etc"
    (folder / "certs").mkdir(parents=True)
    (folder / "certs" / "ca.pem").write_bytes(Path(ca).read_bytes())
    config = parse_config(
        '[[devices.daly]]\nname = "d"\nport = "sim://daly"\n'
        '[sinks.http]\nurl = "https://127.0.0.1:1/in"\nca_cert = "certs/ca.pem"\n',
        str(folder / "logger.toml"), build_registry())
    (http_config,) = config.sinks
    tls = TlsSettings.from_options(http_config.options)
    assert tls.ca == str(folder / "certs" / "ca.pem")
    assert tls.context().verify_mode == ssl.CERT_REQUIRED
