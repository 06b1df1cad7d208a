"""MQTT sink against a real Mosquitto: payloads, Home Assistant discovery checked against
HA's rules, the last will of a killed logger, and nothing lost across a broker restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace

import pytest

pytest.importorskip("paho.mqtt.client")
import paho.mqtt.client as mqtt

from bmslogger.errors import SinkUnavailable
from bmslogger.manager import build_registry, get_plugin_manager
from bmslogger.model import DeviceConfig, Point, SinkConfig
from bmslogger.options import resolve_options
from bmslogger.pipeline import Pipeline
from bmslogger.runtime import DevicePoller
from bmslogger.sinks import mqtt as mqtt_sink

pytestmark = pytest.mark.servers

T0 = 1_763_780_000_000_000_000

# --- Home Assistant's MQTT discovery rules (facts from its documentation) ---------------------
HA_UNITS = {
    "voltage": {"V", "mV", "µV", "kV", "MV"},
    "current": {"A", "mA"},
    "power": {"W", "kW", "mW", "MW", "GW", "TW", "BTU/h"},
    "energy": {"Wh", "kWh", "MWh", "mWh", "GWh", "TWh", "J", "kJ", "MJ", "GJ", "cal", "kcal",
               "Mcal", "Gcal"},
    "battery": {"%"},
    "temperature": {"°C", "°F", "K"},
    "duration": {"d", "h", "min", "s", "ms", "µs"},
    "distance": {"km", "m", "cm", "mm", "mi", "nmi", "yd", "in", "ft"},
    "speed": {"km/h", "m/s", "mph", "ft/s", "kn", "mm/s", "mm/h", "mm/d", "in/d", "in/h",
              "in/s", "Beaufort"},
}
HA_BINARY_CLASSES = {"problem", "battery_charging", None}
HA_STATE_CLASSES = {"measurement", "total", "total_increasing"}
SENSOR_KEYS = {"name", "unique_id", "device", "availability_topic",
               "payload_available", "payload_not_available", "qos", "state_topic",
               "value_template", "device_class", "state_class", "unit_of_measurement"}
BINARY_KEYS = SENSOR_KEYS - {"state_class", "unit_of_measurement"} | {"payload_on",
                                                                      "payload_off"}


def ha_problems(topic: str, config: dict) -> list[str]:
    """What Home Assistant would refuse or mis-read in one discovery message."""
    out = []
    parts = topic.split("/")
    if not (len(parts) == 5 and parts[-1] == "config"
            and parts[1] in ("sensor", "binary_sensor")
            and all(mqtt_sink.safe_id(x) == x for x in parts[2:4])):
        out.append(f"topic {topic} is not <prefix>/<component>/<node_id>/<object_id>/config")
    component = parts[1] if len(parts) > 1 else ""
    allowed = SENSOR_KEYS if component == "sensor" else BINARY_KEYS
    out += [f"unknown key {k}" for k in set(config) - allowed]
    for key in ("state_topic", "unique_id", "name", "availability_topic"):
        if not config.get(key):
            out.append(f"missing {key}")
    device = config.get("device", {})
    if not device.get("identifiers"):
        out.append("device without identifiers")
    cls, unit, state = (config.get("device_class"), config.get("unit_of_measurement"),
                        config.get("state_class"))
    if component == "binary_sensor":
        if cls not in HA_BINARY_CLASSES:
            out.append(f"binary_sensor device class {cls}")
    else:
        if cls is not None and unit not in HA_UNITS.get(cls, ()):
            out.append(f"device class {cls} with unit {unit!r}")
        if state is not None and state not in HA_STATE_CLASSES:
            out.append(f"state class {state}")
        if cls == "energy" and state == "measurement":
            out.append("energy with state class measurement")
    return out


# --- helpers ------------------------------------------------------------------------------------


class Subscriber:
    """A test-side MQTT client that records every message (and reconnects by itself)."""

    def __init__(self, server, topics=("#",), client_id: str = "", persistent: bool = False):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.topics = topics
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.3)
        self.subscribed = threading.Event()
        self.client.connect(server.host, server.port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_connect(self, client, userdata, flags, reason, properties=None):
        for t in self.topics:
            client.subscribe(t, qos=1)
        self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; {len(self.messages)} messages seen"
                self.cond.wait(left)

    def last(self, topic: str) -> bytes | None:
        with self.cond:
            found = [p for t, p, _ in self.messages if t == topic]
        return found[-1] if found else None

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def make_sink(server, name: str = "mqtt", **options) -> mqtt_sink.MqttSink:
    options.setdefault("host", server.host)
    options.setdefault("port", server.port)
    options.setdefault("client_id", "test-logger")
    options.setdefault("timeout", 5.0)
    options.setdefault("reconnect_min", 0.1)
    options.setdefault("reconnect_max", 0.5)
    opts = resolve_options(mqtt_sink.SINK_TYPE.options, options)
    return mqtt_sink.MqttSink(SinkConfig(name=name, plugin="mqtt", options=opts,
                                         batch_size=50, flush_interval_s=0.05))


def simulated_points(plugin: str, tmp_path) -> list[Point]:
    """One real poll of the plugin's simulator (plus a daily task where there is one)."""
    registry = build_registry()
    dtype = registry.devices[plugin]
    device = DeviceConfig(name=f"sim-{plugin}", plugin=plugin, port=f"sim://{plugin}",
                          interval_s=10.0, port_settings=dtype.port_defaults,
                          options=resolve_options(dtype.options, {}))
    poller = DevicePoller(device, dtype, str(tmp_path / "locks"))
    points = list(poller.run().points)
    for task in dtype.tasks:
        points += poller.run(task.name).points
    return [p for p in points if p.measurement != "bmslogger"]


def value_topic(p: Point, field: str) -> str:
    return mqtt_sink.render_topic("bmslogger/{device}/{measurement}{tags}/{field}", p, field)


# --- tests ----------------------------------------------------------------------------------------


def test_registered_through_a_plugin_manager():
    pm = get_plugin_manager(autoload=False)
    pm.register(mqtt_sink, name="mqtt")
    assert build_registry(pm).sinks["mqtt"] is mqtt_sink.SINK_TYPE


@pytest.mark.parametrize("plugin", sorted(build_registry().devices))
def test_every_point_and_a_valid_discovery_config_per_field(mosquitto_server, tmp_path,
                                                            plugin):
    points = simulated_points(plugin, tmp_path)
    assert points, f"the {plugin} simulator gave no points"
    sub = Subscriber(mosquitto_server)
    sink = make_sink(mosquitto_server)
    try:
        sink.open()
        sink.write(points)
        expected: dict[str, list[bytes]] = {}
        for p in points:
            for f, v in p.fields.items():
                if mqtt_sink.value_text(v) is not None:
                    expected.setdefault(value_topic(p, f), []).append(
                        mqtt_sink.value_text(v).encode())

        def received(messages) -> dict[str, list[bytes]]:
            out: dict[str, list[bytes]] = {}
            for t, payload, _ in messages:
                if t in expected:
                    out.setdefault(t, []).append(payload)
            return out

        # every value, in order per topic (one series may come twice in a poll)
        sub.wait_for(lambda m: sum(map(len, received(m).values()))
                     >= sum(map(len, expected.values())))
        assert received(sub.messages) == expected
        configs = {t: json.loads(p) for t, p, _ in sub.messages
                   if t.startswith("homeassistant/")}
        by_state = {c["state_topic"]: (t, c) for t, c in configs.items()}
        problems = {}
        for p in points:
            for field, value in p.fields.items():
                if mqtt_sink.value_text(value) is None:
                    continue
                topic, config = by_state[value_topic(p, field)]
                assert topic.split("/")[1] == (
                    "binary_sensor" if isinstance(value, bool) else "sensor")
                found = ha_problems(topic, config)
                if found:
                    problems[topic] = found
        assert not problems
        unique = [c["unique_id"] for c in configs.values()]
        assert len(unique) == len(set(unique))
        device = next(iter(configs.values()))["device"]
        assert device["identifiers"] == [f"bmslogger_sim-{plugin}"]
        assert device["manufacturer"] and device["model"]
        serials = {p.fields["serial"] for p in points
                   if p.measurement.endswith("_info") and "serial" in p.fields}
        if serials:
            # the republished configs carry the serial number the device reported
            latest = {}
            for t, payload, _ in sub.messages:
                if t.startswith("homeassistant/"):
                    latest[t] = json.loads(payload)
            assert {c["device"].get("serial_number") for c in latest.values()} == serials
        assert sink.published == sum(1 for p in points for v in p.fields.values()
                                     if mqtt_sink.value_text(v) is not None)
        # retained, so a Home Assistant started later still finds every config
        late = Subscriber(mosquitto_server, topics=("homeassistant/#",))
        try:
            late.wait_for(lambda m: {t for t, _, _ in m} >= configs.keys())
            assert all(r for _, _, r in late.messages)
        finally:
            late.close()
    finally:
        sink.close()
        sub.close()


def test_known_units_map_to_classes_home_assistant_accepts():
    cases = {
        ("voltage_v", 3.3, "V"): ("voltage", "V", "measurement"),
        ("soc_pct", 55.0, "%"): ("battery", "%", "measurement"),
        ("soh_pct", 99.0, "%"): (None, "%", "measurement"),
        ("whc_daily_wh", 10.0, "Wh"): ("energy", "Wh", "total"),
        ("etmr_eqcalendar_days", 3, "days"): ("duration", "d", "measurement"),
        ("cycles", 12, ""): (None, None, "total_increasing"),
        ("internal_resistance_ohm", 0.001, "Ω"): (None, "Ω", "measurement"),
        ("state", "charging", ""): (None, None, None),
    }
    for (field, value, unit), (cls, ha_unit, state) in cases.items():
        spec = mqtt_sink.FieldSpec("m", field, type(value).__name__, unit)
        e = mqtt_sink.ha_entity(field, value, spec, "battery")
        assert (e.get("device_class"), e.get("unit_of_measurement"), e.get("state_class")) \
            == (cls, ha_unit, state), field
    assert mqtt_sink.ha_entity("cell_volt_high_l1", True, None, "alarm") == {
        "component": "binary_sensor", "device_class": "problem"}


def test_json_payload_per_point_and_template(mosquitto_server):
    p = Point("cell", {"device": "bank", "plugin": "daly", "pack": "1", "cell": "3"},
              {"voltage_v": 3.301, "balancing": True}, T0 + 123_456_789)
    sub = Subscriber(mosquitto_server)
    sink = make_sink(mosquitto_server, payload="json")
    try:
        sink.write([p])
        topic = "bmslogger/bank/cell/pack_1/cell_3"
        sub.wait_for(lambda m: any(t == topic for t, _, _ in m))
        doc = json.loads(sub.last(topic))
        assert doc == {"measurement": "cell", "time": "2025-11-22T02:53:20.123456Z",
                       "ts": T0 // 1_000_000 + 123,
                       "tags": {"device": "bank", "plugin": "daly", "pack": "1", "cell": "3"},
                       "fields": {"voltage_v": 3.301, "balancing": True}}
        config = json.loads(sub.last(
            "homeassistant/sensor/bank/cell_pack_1_cell_3_voltage_v/config"))
        assert config["state_topic"] == topic
        assert config["value_template"] == '{{ value_json.fields["voltage_v"] }}'
        assert config["name"] == "Pack 1 Cell 3 voltage"
        assert config["device"]["manufacturer"] == "Daly"
        binary = json.loads(sub.last(
            "homeassistant/binary_sensor/bank/cell_pack_1_cell_3_balancing/config"))
        assert binary["value_template"] == \
            "{{ 'true' if value_json.fields[\"balancing\"] else 'false' }}"
        assert (binary["payload_on"], binary["payload_off"]) == ("true", "false")
    finally:
        sink.close()
        sub.close()


def test_configs_published_again_when_home_assistant_restarts(mosquitto_server):
    p = Point("battery", {"device": "bank", "plugin": "daly"},
              {"voltage_v": 53.1, "soc_pct": 80.0}, T0)
    sink = make_sink(mosquitto_server)
    sub = Subscriber(mosquitto_server, topics=("homeassistant/sensor/#",))
    try:
        sink.write([p])
        sub.wait_for(lambda m: len(m) >= 2)
        sink.write([replace(p, time_ns=T0 + 1)])  # known series: no new config
        time.sleep(0.2)
        assert len(sub.messages) == 2
        sub.client.publish("homeassistant/status", "online", qos=1)
        sub.wait_for(lambda m: len(m) >= 4)
        assert sorted(t for t, _, _ in sub.messages[2:]) == sorted(
            t for t, _, _ in sub.messages[:2])
    finally:
        sink.close()
        sub.close()


def test_availability_online_then_offline_when_the_logger_is_killed(mosquitto_server):
    script = textwrap.dedent(f"""
        import sys, time
        from bmslogger.model import Point, SinkConfig
        from bmslogger.options import resolve_options
        from bmslogger.sinks import mqtt as m
        opts = resolve_options(m.SINK_TYPE.options, dict(
            host="{mosquitto_server.host}", port={mosquitto_server.port},
            client_id="doomed", keepalive=60))
        sink = m.MqttSink(SinkConfig(name="mqtt", plugin="mqtt", options=opts))
        sink.write([Point("battery", {{"device": "bank", "plugin": "daly"}},
                          {{"voltage_v": 53.0}}, {T0})])
        print("ready", flush=True)
        time.sleep(120)
    """)
    sub = Subscriber(mosquitto_server, topics=("bmslogger/doomed/availability",))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        sub.wait_for(lambda m: any(p == b"online" for _, p, _ in m))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        sub.wait_for(lambda m: m[-1][1] == b"offline", timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        sub.close()
    # retained: a subscriber arriving later sees offline too
    late = Subscriber(mosquitto_server, topics=("bmslogger/doomed/availability",))
    try:
        late.wait_for(lambda m: m and m[-1][1] == b"offline", timeout=5)
        assert late.messages[-1][2] is True
    finally:
        late.close()


def test_clean_close_says_offline(mosquitto_server):
    sub = Subscriber(mosquitto_server, topics=("bmslogger/test-logger/availability",))
    sink = make_sink(mosquitto_server)
    try:
        sink.open()
        sub.wait_for(lambda m: m and m[-1][1] == b"online")
        sink.close()
        sub.wait_for(lambda m: m[-1][1] == b"offline")
    finally:
        sink.close()
        sub.close()


def test_no_broker_is_unavailable_not_a_crash():
    class Nowhere:
        host = "127.0.0.1"
        port = 1  # nothing listens on port 1 of loopback here

    sink = make_sink(Nowhere(), timeout=0.3)
    try:
        with pytest.raises(SinkUnavailable):
            sink.open()
        with pytest.raises(SinkUnavailable):
            sink.write([Point("battery", {"device": "b"}, {"voltage_v": 1.0}, T0)])
    finally:
        sink.close()


def test_nothing_lost_across_a_broker_restart(mosquitto_server, tmp_path):
    sub = Subscriber(mosquitto_server, topics=("bmslogger/bank/#",), client_id="watcher",
                     persistent=True)
    sink = make_sink(mosquitto_server, discovery=False, retain=False)
    cfg = sink.config
    pipe = Pipeline([(cfg, sink)], str(tmp_path / "dead"), spool_dir=str(tmp_path / "spool"),
                    backoff_initial=0.05, backoff_max=0.3)
    pipe.start()

    def batch(start: int, n: int) -> list[Point]:
        return [Point("battery", {"device": "bank", "plugin": "daly"},
                      {"voltage_v": 50.0 + i / 1000}, T0 + i) for i in range(start, start + n)]

    def seen() -> set[str]:
        return {p.decode() for t, p, _ in sub.messages if t.endswith("/voltage_v")}

    try:
        pipe.submit(batch(0, 20))
        sub.wait_for(lambda m: len(seen()) >= 20)
        mosquitto_server.stop()
        pipe.submit(batch(20, 30))  # broker away: these wait in the spool
        time.sleep(1.0)
        assert pipe.unsent() >= 30
        mosquitto_server.start()
        pipe.submit(batch(50, 10))
        assert pipe.flush(30)
        want = {repr(50.0 + i / 1000) for i in range(60)}
        sub.wait_for(lambda m: want <= seen(), timeout=30)
        assert pipe.unsent() == 0
    finally:
        pipe.close(10)
        sub.close()


def test_thingsboard_preset(mosquitto_server):
    sub = Subscriber(mosquitto_server, topics=("v1/devices/me/telemetry",))
    sink = make_sink(mosquitto_server, preset="thingsboard", token="A1_TEST_TOKEN")
    points = [
        Point("battery", {"device": "bank", "plugin": "daly"}, {"voltage_v": 53.2}, T0),
        Point("cell", {"device": "bank", "plugin": "daly", "pack": "1", "cell": "2"},
              {"voltage_v": 3.3, "balancing": False}, T0),
        Point("battery", {"device": "bank", "plugin": "daly"}, {"voltage_v": 53.3},
              T0 + 10_000_000_000),
    ]
    try:
        sink.write(points)
        sub.wait_for(lambda m: len(m) >= 1)
        assert json.loads(sub.messages[0][1]) == [
            {"ts": T0 // 1_000_000, "values": {"bank.battery.voltage_v": 53.2,
                                               "bank.cell.pack_1.cell_2.voltage_v": 3.3,
                                               "bank.cell.pack_1.cell_2.balancing": False}},
            {"ts": T0 // 1_000_000 + 10_000, "values": {"bank.battery.voltage_v": 53.3}},
        ]
        assert sink._client._username == b"A1_TEST_TOKEN"
    finally:
        sink.close()
        sub.close()


def test_thingsboard_bodies_stay_below_its_limit():
    sink = mqtt_sink.MqttSink(SinkConfig("tb", "mqtt", resolve_options(
        mqtt_sink.SINK_TYPE.options, {"preset": "thingsboard", "token": "x"})))
    points = [Point("cell", {"device": "bank", "cell": str(i % 16)},
                    {"voltage_v": 3.3 + i / 1e4}, T0 + i * 1_000_000) for i in range(5000)]
    bodies = sink._thingsboard(points)
    assert len(bodies) > 1
    assert all(len(b) <= mqtt_sink.THINGSBOARD_MAX_BYTES for b in bodies)
    entries = [e for b in bodies for e in json.loads(b)]
    assert len(entries) == 5000
    assert [e["ts"] for e in entries] == sorted(e["ts"] for e in entries)


def test_tls_with_user_and_password(mosquitto_server, tmp_path, tls_files):
    import shutil

    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd not installed (package mosquitto)")
    ca, cert, key = tls_files
    pwfile = tmp_path / "passwords"
    subprocess.run([passwd, "-c", "-b", str(pwfile), "logger", "pa55"], check=True)
    mosquitto_server.stop()
    mosquitto_server.configure(listener=(f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"),
                               password_file=str(pwfile))
    mosquitto_server.start()

    received: list[bytes] = []
    got = threading.Event()
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    watcher.tls_set(ca_certs=ca)
    watcher.username_pw_set("logger", "pa55")
    watcher.on_connect = lambda c, u, f, r, p=None: c.subscribe("bmslogger/#", qos=1)
    watcher.on_message = lambda c, u, m: (received.append(m.payload), got.set()) \
        if m.topic.endswith("/voltage_v") else None
    watcher.connect(mosquitto_server.host, mosquitto_server.port)
    watcher.loop_start()
    good = make_sink(mosquitto_server, tls=True, ca_cert=ca, username="logger",
                     password="pa55", discovery=False)
    wrong = make_sink(mosquitto_server, tls=True, ca_cert=ca, username="logger",
                      password="nope", timeout=1.0, client_id="intruder")
    untrusted = make_sink(mosquitto_server, tls=True, username="logger", password="pa55",
                          timeout=1.0, client_id="no-ca")
    try:
        time.sleep(0.3)  # the watcher's subscription
        good.write([Point("battery", {"device": "bank"}, {"voltage_v": 52.5}, T0)])
        assert got.wait(10)
        assert received == [b"52.5"]
        with pytest.raises(SinkUnavailable):
            wrong.open()
        with pytest.raises(SinkUnavailable):
            untrusted.open()  # the test CA is not in the system store
    finally:
        for s in (good, wrong, untrusted):
            s.close()
        watcher.disconnect()
        watcher.loop_stop()


def test_write_waits_for_the_brokers_acknowledgement(mosquitto_server):
    """A frozen broker keeps the TCP connection open but acknowledges nothing: the write
    must say so (the pipeline then keeps the batch) instead of trusting the socket."""
    sub = Subscriber(mosquitto_server, topics=("bmslogger/bank/#",))
    sink = make_sink(mosquitto_server, timeout=1.0, discovery=False, retain=False)
    first = Point("battery", {"device": "bank"}, {"voltage_v": 51.0}, T0)
    second = Point("battery", {"device": "bank"}, {"voltage_v": 52.0}, T0 + 1)
    try:
        sink.write([first])
        os.kill(mosquitto_server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(SinkUnavailable, match="acknowledge"):
                sink.write([second])
            assert time.monotonic() - started < 5
        finally:
            os.kill(mosquitto_server.proc.pid, signal.SIGCONT)
        sink.write([second])  # the retry, once the broker answers again
        sub.wait_for(lambda m: any(p == b"52.0" for _, p, _ in m))
    finally:
        sink.close()
        sub.close()
