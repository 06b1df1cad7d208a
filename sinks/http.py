"""HTTP sink: POST each batch of points to a URL, as JSON or as InfluxDB line protocol.

Why: many collectors (Node-RED, n8n, a small Flask app, Telegraf's http_listener_v2,
VictoriaMetrics, QuestDB) take an HTTP POST, and a URL is the least a user has to set up.
Built on the standard library (`urllib.request`), so it needs no extra package; line
protocol uses influxdb-client's serialisation when ``format = "line"``.

JSON body (``format = "json"``, ``Content-Type: application/json``)::

    {"points": [
      {"measurement": "cell",
       "tags": {"device": "house-bank", "plugin": "daly", "pack": "1", "cell": "3"},
       "fields": {"voltage_v": 3.312, "balancing": false},
       "time": "2026-11-22T02:14:22.123456Z",
       "time_ns": 1795313662123456789}
    ]}

``time`` is RFC 3339 UTC with microseconds, ``time_ns`` the exact epoch nanoseconds;
field values keep their type (number, integer, boolean, string); NaN and infinities,
which JSON cannot carry, are ``null``. Points are in the order they were read.

Headers: ``headers = ["X-Api-Key: ${API_KEY}"]`` (values may come from the environment),
and ``token`` (or ``token_file``) is sent as ``Authorization: Bearer <token>``.

Failures are sorted for the pipeline: connection errors, timeouts, 408, 429, 5xx are
retried ``retries`` times right away (``retry_delay``, doubling), then `SinkUnavailable`
(with the server's ``Retry-After``) so the batch stays in the spool; 401, 403 and 404
(a token or a path that may be fixed) go straight to the spool too. 400, 413 and 422
refuse the content: the batch is split in halves until the refused points are alone;
they go to the dead-letter file and the rest is stored. A batch sent again after a
crash is sent whole: the receiver should treat (measurement, tags, time) as a key.
"""

from __future__ import annotations

import gzip
import json
import math
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any

from bmslogger import hookimpl
from bmslogger.errors import PointsRejected, SinkError, SinkUnavailable
from bmslogger.model import Point, SinkConfig, SinkType, rfc3339
from bmslogger.options import Option
from bmslogger.sink import Sink
from bmslogger.tls import TLS_OPTIONS, TlsSettings

SAMPLE_CONFIG = """\
[sinks.http]
url = "https://collector.example.org/bms"
format = "json"             # or "line" (InfluxDB line protocol)
token_file = "/etc/bmslogger/http-token"   # sent as Authorization: Bearer ...
headers = ["X-Source: bmslogger"]
timeout = "10s"
retries = 2
"""

_RETRY_NOW = frozenset((408, 429, 500, 502, 503, 504))
_REFUSED = frozenset((400, 413, 422))
_BAD_LINE_CHARS = ("\n", "\r", "\t")

SINK_TYPE = SinkType(
    name="http",
    title="HTTP POST of point batches (JSON or line protocol)",
    options=(
        Option("url", "str", help="where batches are POSTed (http:// or https://)"),
        Option("format", "choice", "json", help="json: see the README; line: InfluxDB "
               "line protocol (needs influxdb-client)", choices=("json", "line")),
        Option("headers", "str_list", (), help='extra headers, "Name: value"', secret=True),
        Option("token", "str", "", help="sent as Authorization: Bearer <token>", secret=True),
        Option("precision", "choice", "ns", help="line protocol timestamp precision",
               choices=("ns", "us", "ms", "s")),
        Option("gzip", "bool", False, help="compress request bodies"),
        Option("timeout", "duration", 10.0, help="connect and read timeout", min=0.1),
        Option("retries", "int", 2, help="immediate retries of a failed request", min=0,
               max=10),
        Option("retry_delay", "duration", 0.5, help="first pause between immediate retries"),
        *TLS_OPTIONS,
    ),
    sink="bmslogger.sinks.http:HttpSink",
    sample_config=SAMPLE_CONFIG,
)

_DIVISOR = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [SINK_TYPE]


def point_json(point: Point) -> dict[str, Any]:
    """One point in the documented JSON shape (NaN and infinities as null)."""
    return {
        "measurement": point.measurement,
        "tags": dict(point.tags),
        "fields": {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                   for k, v in point.fields.items()},
        "time": rfc3339(point.time_ns),
        "time_ns": point.time_ns,
    }


def parse_headers(lines: Sequence[str]) -> dict[str, str]:
    """``["Name: value", ...]`` into a dict; SinkError naming the bad entry (not its value,
    which may be a key)."""
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c in line for c in "\r\n"):
            raise SinkError(f"http sink: headers[{i}] is not \"Name: value\"")
        out[name.strip()] = value.strip()
    return out


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class _Failed(Exception):
    def __init__(self, message: str, retry_now: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retry_now = retry_now
        self.retry_after = retry_after


class _Refused(Exception):
    """The server refused this body's content."""


class HttpSink(Sink):
    """POSTs batches to a URL; see the module docstring."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        o = self.options
        self.url = str(o.get("url", ""))
        self.format = str(o.get("format", "json"))
        self.timeout = float(o.get("timeout", 10.0))
        self.retries = int(o.get("retries", 2))
        self.retry_delay = float(o.get("retry_delay", 0.5))
        self.gzip = bool(o.get("gzip", False))
        self.precision = str(o.get("precision", "ns"))
        self._headers: dict[str, str] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._lp: Any = None
        self.requests = 0

    def open(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise SinkError(f"http sink: url must start with http:// or https://, "
                            f"got {self.url!r}")
        headers = parse_headers(tuple(self.options.get("headers", ())))
        headers["Content-Type"] = ("application/json" if self.format == "json"
                                   else "text/plain; charset=utf-8")
        if self.options.get("token"):
            headers["Authorization"] = f"Bearer {self.options.get('token')}"
        if self.gzip:
            headers["Content-Encoding"] = "gzip"
        headers.setdefault("User-Agent", "bmslogger")
        if self.url.startswith("https://"):
            self._ssl = TlsSettings.from_options(self.options).context()
        if self.format == "line":
            try:
                from influxdb_client import Point as LinePoint
                from influxdb_client import WritePrecision
            except ImportError as err:
                raise SinkError("format = \"line\" needs influxdb-client: "
                                "pip install 'bmslogger[influxdb]'") from err
            self._lp = (LinePoint, getattr(WritePrecision, self.precision.upper()))
        self._headers = headers

    # --- bodies ----------------------------------------------------------------------------

    def to_line(self, point: Point) -> str:
        """One point as line protocol, ``""`` when no field is left (NaN only)."""
        line_point, precision = self._lp
        lp = line_point(point.measurement)
        for key, value in point.tags.items():
            lp.tag(key, value)
        for key, value in point.fields.items():
            lp.field(key, value)
        lp.time(point.time_ns // _DIVISOR[self.precision], precision)
        return lp.to_line_protocol()

    def _items(self, points: Sequence[Point]) -> tuple[list[tuple[Point, Any]], list]:
        """(point, serialised) pairs, and the points the format cannot carry."""
        items: list[tuple[Point, Any]] = []
        rejected: list[tuple[Point, str]] = []
        for p in points:
            if self.format == "json":
                items.append((p, point_json(p)))
                continue
            texts = [p.measurement, *p.tags, *map(str, p.tags.values()), *p.fields]
            if any(any(c in t for c in _BAD_LINE_CHARS) or t.endswith("\\") for t in texts):
                rejected.append((p, "line protocol cannot carry a newline, carriage return, "
                                    "tab or trailing backslash in a name or tag value"))
                continue
            line = self.to_line(p)
            if line:
                items.append((p, line))
            else:
                rejected.append((p, "no field line protocol can carry (NaN or infinite only)"))
        return items, rejected

    def _body(self, items: list[tuple[Point, Any]]) -> bytes:
        if self.format == "json":
            text = json.dumps({"points": [doc for _, doc in items]}, allow_nan=False,
                              separators=(",", ":"))
        else:
            text = "\n".join(line for _, line in items)
        body = text.encode("utf-8")
        return gzip.compress(body, compresslevel=1) if self.gzip else body

    # --- writing -----------------------------------------------------------------------------

    def write(self, points: Sequence[Point]) -> None:
        if self._headers is None:
            self.open()
        items, rejected = self._items(points)
        if items:
            rejected += self._write_isolating(items)
        if rejected:
            raise PointsRejected(rejected)

    def _write_isolating(self, items: list[tuple[Point, Any]]) -> list[tuple[Point, str]]:
        try:
            self._post(self._body(items))
            return []
        except _Refused as err:
            if len(items) == 1:
                return [(items[0][0], str(err))]
            half = len(items) // 2
            return self._write_isolating(items[:half]) + self._write_isolating(items[half:])

    def _post(self, body: bytes) -> None:
        delay = self.retry_delay
        for attempt in range(self.retries + 1):
            try:
                self._post_once(body)
                return
            except _Failed as err:
                if not err.retry_now or attempt == self.retries:
                    raise SinkUnavailable(f"{self.url}: {err}",
                                          retry_after=err.retry_after) from None
                self.log.debug("POST to %s failed (%s); retrying in %.2f s",
                               self.url, err, delay)
                time.sleep(delay)
                delay *= 2

    def _post_once(self, body: bytes) -> None:
        self.requests += 1
        req = urllib.request.Request(self.url, data=body, headers=dict(self._headers or {}),
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as r:
                r.read()
        except urllib.error.HTTPError as err:
            status = err.code
            text = err.read(500).decode("utf-8", "replace").strip()
            message = f"HTTP {status}" + (f": {text}" if text else "")
            if status in _REFUSED:
                raise _Refused(message) from None
            raise _Failed(message, retry_now=status in _RETRY_NOW or status >= 500,
                          retry_after=_retry_after(err.headers.get("Retry-After"))) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise _Failed(f"connection failed: {reason}", retry_now=True) from None

    def close(self) -> None:
        self._headers = None
