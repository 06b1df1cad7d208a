"""MQTT sink (paho-mqtt), with Home Assistant discovery and a ThingsBoard preset.

Why MQTT: it is what home-automation systems listen to. Points are published either one
value per topic (``payload = "value"``, the default: ``bmslogger/house-bank/cell/pack_1/
cell_3/voltage_v`` carries ``3.312``) or one JSON document per point (``payload = "json"``,
the shape of `Point.to_json` plus ``ts`` in milliseconds).

Delivery: `write` publishes the whole batch and waits until the broker has acknowledged
every message (QoS 1 PUBACK, QoS 2 PUBCOMP; QoS 0 only until the bytes left) within
``timeout``; otherwise it raises `SinkUnavailable` and the pipeline keeps the batch in its
spool and sends it again later. paho's network thread reconnects by itself with an
exponential back-off (``reconnect_min`` doubling to ``reconnect_max``); while it is away
`write` refuses at once, so nothing piles up inside the client. A message that was in
flight when the connection dropped may arrive twice (at least once, like every sink).

Home Assistant (``discovery = true``, the default): before the first value of a series
(device, measurement, tags, field) the sink publishes a retained config message under
``<discovery_prefix>/<sensor|binary_sensor>/<device>/<object_id>/config`` with a unique
id, the device (name, model and manufacturer from the plugin, serial number once the
device reports one), device class, state class and unit where Home Assistant has them,
and an availability topic. That topic is the client's last will: the broker publishes
``offline`` (retained) when the logger dies without saying goodbye; the sink publishes
``online`` on every connect and ``offline`` on a clean close. Per-cell, per-pack and
per-sensor entities belong to their device (``Pack 1 Cell 3 voltage``). When Home
Assistant announces a restart (``online`` on ``<discovery_prefix>/status``) every config
is published again.

ThingsBoard (``preset = "thingsboard"``): publishes to ``v1/devices/me/telemetry`` with
the device access token (``token``) as the MQTT user name, payloads
``[{"ts": <ms>, "values": {"<device>.<measurement>[.<tag>_<value>...].<field>": v}}]``
cut below ThingsBoard's 64 KiB message limit; no discovery.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any

from bmslogger import hookimpl
from bmslogger.errors import SinkError, SinkUnavailable
from bmslogger.model import FieldSpec, Point, SinkConfig, SinkType
from bmslogger.options import Option
from bmslogger.sink import Sink
from bmslogger.tls import TLS_OPTIONS, TlsSettings

SAMPLE_CONFIG = """\
[sinks.mqtt]
host = "localhost"
port = 1883                 # 8883 with tls = true
# tls = true
# ca_cert = "/etc/ssl/certs/ca-certificates.crt"
username = "bmslogger"
password_file = "/etc/bmslogger/mqtt-password"
qos = 1
retain = true
payload = "value"           # "value": one value per topic; "json": one document per point
topic = "bmslogger/{device}/{measurement}{tags}/{field}"
json_topic = "bmslogger/{device}/{measurement}{tags}"
discovery = true            # Home Assistant MQTT discovery
discovery_prefix = "homeassistant"
# preset = "thingsboard"    # with token = "<device access token>"
"""

#: ThingsBoard refuses MQTT messages above 64 KiB by default; stay clearly below.
THINGSBOARD_MAX_BYTES = 60_000
THINGSBOARD_TOPIC = "v1/devices/me/telemetry"

SINK_TYPE = SinkType(
    name="mqtt",
    title="MQTT broker (paho-mqtt), Home Assistant discovery, ThingsBoard preset",
    options=(
        Option("host", "str", "localhost", help="broker host name or address"),
        Option("port", "int", 0, help="broker port; 0 = 1883, or 8883 with tls", min=0,
               max=65535),
        Option("tls", "bool", False, help="connect with TLS"),
        *TLS_OPTIONS,
        Option("username", "str", "", help="MQTT user name"),
        Option("password", "str", "", help="MQTT password", secret=True),
        Option("client_id", "str", "", help='client id; "" = bmslogger-<host name>'),
        Option("qos", "int", 1, help="QoS of state messages", min=0, max=2),
        Option("retain", "bool", True, help="retain state messages"),
        Option("payload", "choice", "value", help="value: one value per topic; "
               "json: one document per point", choices=("value", "json")),
        Option("topic", "str", "bmslogger/{device}/{measurement}{tags}/{field}",
               help="topic of one value; {device} {plugin} {measurement} {field} {tags} "
                    "and any tag name such as {pack}"),
        Option("json_topic", "str", "bmslogger/{device}/{measurement}{tags}",
               help="topic of one JSON point (payload = json)"),
        Option("availability_topic", "str", "bmslogger/{client_id}/availability",
               help="online/offline of this logger (last will)"),
        Option("discovery", "bool", True, help="publish Home Assistant discovery configs"),
        Option("discovery_prefix", "str", "homeassistant",
               help="Home Assistant's discovery prefix"),
        Option("preset", "choice", "none", help="thingsboard: ThingsBoard telemetry",
               choices=("none", "thingsboard")),
        Option("token", "str", "", help="ThingsBoard device access token", secret=True),
        Option("keepalive", "duration", 60.0, help="MQTT keep-alive", min=5),
        Option("timeout", "duration", 10.0, help="connect and acknowledgement timeout",
               min=0.1),
        Option("reconnect_min", "duration", 1.0, help="first reconnect delay", min=0.1),
        Option("reconnect_max", "duration", 60.0, help="longest reconnect delay", min=0.1),
    ),
    sink="bmslogger.sinks.mqtt:MqttSink",
    sample_config=SAMPLE_CONFIG,
)


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [SINK_TYPE]


# --- Home Assistant vocabulary ---------------------------------------------------------------
# (device class, unit Home Assistant expects) per bmslogger display unit; units without a
# Home Assistant device class keep their text and get no class.
_UNIT_CLASS: dict[str, tuple[str, str]] = {
    "V": ("voltage", "V"),
    "A": ("current", "A"),
    "W": ("power", "W"),
    "kW": ("power", "kW"),
    "Wh": ("energy", "Wh"),
    "kWh": ("energy", "kWh"),
    "°C": ("temperature", "°C"),
    "s": ("duration", "s"),
    "h": ("duration", "h"),
    "days": ("duration", "d"),
    "km": ("distance", "km"),
    "km/h": ("speed", "km/h"),
}
# the unit a field name's suffix stands for, when the plugin declares none
_SUFFIX_UNIT = {"v": "V", "a": "A", "w": "W", "wh": "Wh", "kwh": "kWh", "c": "°C",
                "pct": "%", "ah": "Ah", "s": "s", "h": "h", "km": "km", "kmh": "km/h"}
_TOTAL_INCREASING = frozenset(("cycles",))
_TAG_ORDER = ("pack", "cell", "sensor")
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
_COMPACT = (",", ":")


def safe_id(text: str) -> str:
    """Topic-level and id-safe form of a name (Home Assistant allows [A-Za-z0-9_-])."""
    return _SAFE.sub("_", text).strip("_") or "_"


def _extra_tags(point: Point) -> list[tuple[str, str]]:
    """The tags that tell series of one device apart (pack, cell, sensor, ...), in order."""
    extra = [(k, str(v)) for k, v in point.tags.items() if k not in ("device", "plugin")]
    rank = {k: i for i, k in enumerate(_TAG_ORDER)}
    return sorted(extra, key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def _tags_path(point: Point) -> str:
    return "".join(f"/{safe_id(k)}_{safe_id(v)}" for k, v in _extra_tags(point))


def render_topic(template: str, point: Point, field: str = "", **extra: str) -> str:
    """Fill a topic template from a point; unknown placeholders are a `SinkError`."""
    values = {k: safe_id(str(v)) for k, v in point.tags.items()}
    values.update(device=safe_id(point.tags.get("device", "")),
                  plugin=safe_id(point.tags.get("plugin", "")),
                  measurement=safe_id(point.measurement), field=safe_id(field),
                  tags=_tags_path(point))
    values.update(extra)
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as err:
        raise SinkError(f"topic template {template!r}: no value for {err}") from None


def value_text(value: Any) -> str | None:
    """One value as an MQTT payload: numbers in shortest form, booleans as true/false,
    text as is; None for NaN and infinities (nothing a subscriber could parse)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return None if not math.isfinite(value) else repr(value)
    return str(value)


def _json_safe(fields: Any) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in fields.items()}


def point_document(point: Point) -> dict[str, Any]:
    """The JSON payload of one point: `Point.to_json` plus ``ts`` (epoch milliseconds);
    NaN and infinities become null."""
    doc = point.to_json()
    doc["fields"] = _json_safe(point.fields)
    doc["ts"] = point.time_ns // 1_000_000
    return doc


def ha_entity(field: str, value: Any, spec: FieldSpec | None, measurement: str) -> dict[str, Any]:
    """Component and the class/unit keys Home Assistant accepts for one field."""
    if isinstance(value, bool):
        out: dict[str, Any] = {"component": "binary_sensor"}
        if measurement == "alarm" or measurement.endswith("_alarm"):
            out["device_class"] = "problem"
        elif field == "charging":
            out["device_class"] = "battery_charging"
        return out
    out = {"component": "sensor"}
    if isinstance(value, str):
        return out  # text: Home Assistant refuses a unit or state class on it
    unit = spec.unit if spec is not None else _SUFFIX_UNIT.get(field.rsplit("_", 1)[-1], "")
    if unit in _UNIT_CLASS:
        out["device_class"], out["unit_of_measurement"] = _UNIT_CLASS[unit]
    elif unit == "%" and field.startswith("soc"):
        out["device_class"], out["unit_of_measurement"] = "battery", "%"
    elif unit:
        out["unit_of_measurement"] = unit
    if out.get("device_class") == "energy":
        out["state_class"] = "total"
    elif field in _TOTAL_INCREASING:
        out["state_class"] = "total_increasing"
    else:
        out["state_class"] = "measurement"
    return out


def _label(point: Point, field: str, spec: FieldSpec | None) -> str:
    words = [f"{k.capitalize()} {v}" for k, v in _extra_tags(point)]
    if point.measurement not in ("battery", "cell", "temperature", "charger"):
        words.insert(0, point.measurement)
    name = field
    if spec is not None and spec.unit and "_" in field:
        name = field.rsplit("_", 1)[0]
    words.append(name.replace("_", " "))
    text = " ".join(words)
    return text[:1].upper() + text[1:]


class _DeviceInfo:
    """What the sink knows about one logged device for Home Assistant's device registry."""

    def __init__(self, name: str, plugin: str, model: str, manufacturer: str,
                 fields: dict[tuple[str, str], FieldSpec]) -> None:
        self.name = name
        self.plugin = plugin
        self.model = model
        self.manufacturer = manufacturer
        self.fields = fields
        self.serial = ""

    def as_ha(self, client_id: str) -> dict[str, Any]:
        info: dict[str, Any] = {
            "identifiers": [f"bmslogger_{safe_id(self.name)}"],
            "name": self.name,
            "model": self.model,
            "manufacturer": self.manufacturer,
        }
        if self.serial:
            info["serial_number"] = self.serial
        return info


def _plugin_facts(plugin: str) -> tuple[str, str, dict[tuple[str, str], FieldSpec]]:
    """(model, manufacturer, declared fields) of a device plugin; blanks if unknown."""
    try:
        from bmslogger.manager import build_registry

        dtype = build_registry().devices[plugin]
        specs = {(f.measurement, f.field): f for f in dtype.load_fields()}
    except Exception:  # an unknown or broken plugin only costs the nicer names
        return plugin, "", {}
    model = dtype.title.split(" (", 1)[0]
    # every bundled plugin's title starts with the maker's name (Daly, EMUS, Morningstar)
    return model, model.split(" ", 1)[0], specs


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho (2.2) drops a socket whose TLS handshake failed without closing it; with a
    broker whose certificate we refuse, every reconnect would leak one until the garbage
    collector runs. Closing it here keeps a months-long run clean."""

    def do_handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().do_handshake(*args, **kwargs)
        except BaseException:
            self.close()
            raise


class MqttSink(Sink):
    """Publishes points to an MQTT broker; see the module docstring."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        o = self.options
        self.preset = str(o.get("preset", "none"))
        self.tls = bool(o.get("tls", False))
        self.host = str(o.get("host", "localhost"))
        self.port = int(o.get("port", 0)) or (8883 if self.tls else 1883)
        self.qos = int(o.get("qos", 1))
        self.retain = bool(o.get("retain", True))
        self.payload = str(o.get("payload", "value"))
        self.timeout = float(o.get("timeout", 10.0))
        self.client_id = str(o.get("client_id", "")) or f"bmslogger-{socket.gethostname()}"
        self.discovery = bool(o.get("discovery", True)) and self.preset == "none"
        self.prefix = str(o.get("discovery_prefix", "homeassistant")).rstrip("/")
        self.availability_topic = str(
            o.get("availability_topic", "bmslogger/{client_id}/availability")
        ).replace("{client_id}", safe_id(self.client_id))
        self._client: Any = None
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._devices: dict[str, _DeviceInfo] = {}
        self._configs: dict[str, tuple[str, dict[str, Any]]] = {}  # topic -> (device, config)
        self.published = 0
        self.discovery_published = 0
        self._refused = False

    # --- connection --------------------------------------------------------------------

    def open(self) -> None:
        if self._client is not None:
            return
        try:
            import paho.mqtt.client as mqtt
        except ImportError as err:
            raise SinkError("the mqtt sink needs paho-mqtt: pip install 'bmslogger[mqtt]'") \
                from err
        o = self.options
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=True, protocol=mqtt.MQTTv311)
        if self.preset == "thingsboard":
            if not o.get("token"):
                raise SinkError("mqtt sink (preset thingsboard): set token (device access token)")
            client.username_pw_set(str(o.get("token")))
        elif o.get("username"):
            client.username_pw_set(str(o.get("username")), str(o.get("password", "")) or None)
        if self.tls:
            ctx = TlsSettings.from_options(o).context()
            ctx.sslsocket_class = _ClosingSSLSocket
            client.tls_set_context(ctx)
        if self.preset == "none":
            client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(float(o.get("reconnect_min", 1.0)),
                                   float(o.get("reconnect_max", 60.0)))
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(self.host, self.port, keepalive=int(o.get("keepalive", 60)))
        client.loop_start()
        if not self._connected.wait(self.timeout):
            raise SinkUnavailable(f"mqtt broker {self.host}:{self.port} not reachable yet "
                                  "(reconnecting in the background)")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            # once per episode: paho retries every reconnect_max seconds for months
            level = logging.DEBUG if self._refused else logging.WARNING
            self.log.log(level, "mqtt broker %s:%d refused the connection: %s",
                         self.host, self.port, reason)
            self._refused = True
            return
        self._refused = False
        self.log.info("connected to mqtt broker %s:%d", self.host, self.port)
        if self.preset == "none":
            client.publish(self.availability_topic, "online", qos=1, retain=True)
        if self.discovery:
            client.subscribe(f"{self.prefix}/status", qos=1)
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
        if self._connected.is_set() and self._client is not None:
            self.log.warning("lost the mqtt broker %s:%d (%s); reconnecting",
                             self.host, self.port, reason)
        self._connected.clear()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == f"{self.prefix}/status" and message.payload == b"online":
            with self._lock:
                configs = list(self._configs.items())
            self.log.info("Home Assistant restarted; publishing %d discovery configs again",
                          len(configs))
            for topic, (_, config) in configs:
                client.publish(topic, json.dumps(config), qos=1, retain=True)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self._connected.is_set() and self.preset == "none":
                info = client.publish(self.availability_topic, "offline", qos=1, retain=True)
                info.wait_for_publish(min(self.timeout, 5.0))
            client.disconnect()
        except Exception as err:  # closing must never raise into the pipeline
            self.log.debug("closing the mqtt client: %s", err)
        finally:
            client.loop_stop()
            self._connected.clear()

    # --- writing -------------------------------------------------------------------------

    def write(self, points: Sequence[Point]) -> None:
        if self._client is None:
            self.open()
        if not self._connected.is_set():
            raise SinkUnavailable(f"mqtt broker {self.host}:{self.port} not connected")
        if self.preset == "thingsboard":
            messages = [(THINGSBOARD_TOPIC, body, False) for body in self._thingsboard(points)]
        else:
            messages = []
            for p in points:
                if self.discovery:
                    messages.extend(self._discovery_for(p))
                messages.extend(self._state_messages(p))
        try:
            self._publish_all(messages)
        except SinkUnavailable:
            # configs of this batch may not have arrived: announce them again with the
            # retry, and let the pipeline's retry be the only copy paho sends
            with self._lock:
                for topic, _, is_config in messages:
                    if is_config:
                        self._configs.pop(topic, None)
            drop = getattr(self._client, "drop_out_messages", None)
            if drop is not None:
                drop()
            raise

    def _publish_all(self, messages: list[tuple[str, str, bool]]) -> None:
        infos = []
        for topic, body, is_config in messages:
            qos = 1 if is_config else self.qos
            retain = True if is_config else self.retain
            infos.append(self._client.publish(topic, body, qos=qos, retain=retain))
        deadline = time.monotonic() + self.timeout + len(infos) * 0.001
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as err:
                raise SinkUnavailable(f"mqtt publish failed: {err}") from None
            if not info.is_published():
                raise SinkUnavailable(
                    f"mqtt broker {self.host}:{self.port} did not acknowledge within "
                    f"{self.timeout:g} s")
        self.published += sum(1 for _, _, c in messages if not c)

    def _state_messages(self, p: Point) -> list[tuple[str, str, bool]]:
        if self.payload == "json":
            topic = render_topic(str(self.options.get("json_topic")), p)
            return [(topic, json.dumps(point_document(p), allow_nan=False), False)]
        template = str(self.options.get("topic"))
        out = []
        for field, value in p.fields.items():
            text = value_text(value)
            if text is not None:
                out.append((render_topic(template, p, field), text, False))
        return out

    # --- Home Assistant discovery ------------------------------------------------------------

    def _device(self, p: Point) -> _DeviceInfo:
        name = str(p.tags.get("device", "bmslogger"))
        dev = self._devices.get(name)
        if dev is None:
            plugin = str(p.tags.get("plugin", ""))
            model, maker, specs = _plugin_facts(plugin)
            dev = self._devices[name] = _DeviceInfo(name, plugin, model, maker, specs)
        return dev

    def _discovery_for(self, p: Point) -> list[tuple[str, str, bool]]:
        """Config messages for the series of `p` not announced yet (all of a device's
        again when its serial number first shows up)."""
        if p.measurement == "bmslogger" and "device" not in p.tags:
            return []
        dev = self._device(p)
        out: list[tuple[str, str, bool]] = []
        serial = p.fields.get("serial") if p.measurement.endswith("_info") else None
        if isinstance(serial, str) and serial and serial != dev.serial:
            dev.serial = serial
            with self._lock:
                for topic, (owner, config) in self._configs.items():
                    if owner == dev.name:
                        config["device"] = dev.as_ha(self.client_id)
                        out.append((topic, json.dumps(config), True))
        for field, value in p.fields.items():
            object_id = safe_id(f"{p.measurement}{_tags_path(p)}_{field}".replace("/", "_"))
            spec = dev.fields.get((p.measurement, field))
            entity = ha_entity(field, value, spec, p.measurement)
            component = entity.pop("component")
            topic = f"{self.prefix}/{component}/{safe_id(dev.name)}/{object_id}/config"
            with self._lock:
                if topic in self._configs:
                    continue
            config = self._config(p, field, value, spec, entity, object_id, dev)
            with self._lock:
                self._configs[topic] = (dev.name, config)
            out.append((topic, json.dumps(config), True))
            self.discovery_published += 1
        return out

    def _config(self, p: Point, field: str, value: Any, spec: FieldSpec | None,
                entity: dict[str, Any], object_id: str, dev: _DeviceInfo) -> dict[str, Any]:
        config: dict[str, Any] = {
            "name": _label(p, field, spec),
            "unique_id": f"bmslogger_{safe_id(dev.name)}_{object_id}",
            "device": dev.as_ha(self.client_id),
            "availability_topic": self.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": self.qos,
            **entity,
        }
        if isinstance(value, bool):
            config["payload_on"], config["payload_off"] = "true", "false"
        if self.payload == "json":
            config["state_topic"] = render_topic(str(self.options.get("json_topic")), p)
            ref = f"value_json.fields[{json.dumps(field)}]"
            config["value_template"] = (
                f"{{{{ 'true' if {ref} else 'false' }}}}" if isinstance(value, bool)
                else f"{{{{ {ref} }}}}"
            )
        else:
            config["state_topic"] = render_topic(str(self.options.get("topic")), p, field)
        return config

    # --- ThingsBoard -----------------------------------------------------------------------

    def _thingsboard(self, points: Sequence[Point]) -> list[str]:
        """Telemetry messages for a batch: points grouped by millisecond, keys
        ``<device>.<measurement>[.<tag>_<value>...].<field>``, each body below 60 kB."""
        by_ts: dict[int, dict[str, Any]] = {}
        for p in points:
            stem = ".".join([str(p.tags.get("device", "")), p.measurement,
                             *(f"{k}_{v}" for k, v in _extra_tags(p))])
            values = by_ts.setdefault(p.time_ns // 1_000_000, {})
            for field, value in _json_safe(p.fields).items():
                if value is not None:
                    values[f"{stem}.{field}"] = value
        bodies: list[str] = []
        chunk: list[dict[str, Any]] = []
        size = 2
        for ts, values in sorted(by_ts.items()):
            entry = {"ts": ts, "values": values}
            n = len(json.dumps(entry, separators=_COMPACT)) + 1
            if chunk and size + n > THINGSBOARD_MAX_BYTES:
                bodies.append(json.dumps(chunk, separators=_COMPACT))
                chunk, size = [], 2
            chunk.append(entry)
            size += n
        if chunk:
            bodies.append(json.dumps(chunk, separators=_COMPACT))
        return bodies
