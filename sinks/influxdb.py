"""InfluxDB sink: one plugin, two protocol flavours, line protocol from influxdb-client.

``version = 2`` (default) writes through influxdb-client's synchronous write API with
``url``, ``org``, ``bucket`` and ``token``: InfluxDB 2.x, 3.x, Cloud, and 1.8+ through its
compatibility API (bucket ``db/rp``, token ``user:password``). ``version = 1`` posts to
InfluxDB 1.x's ``/write`` (``database``, ``retention_policy``, ``username``/``password``
sent as HTTP basic auth, never in the URL), which is what 32-bit Raspberry Pi installs
run. Both build every line with influxdb-client's `Point` serialisation; nothing here
escapes text by hand.

One batch is one request (gzip optional). Failures are sorted for the pipeline:

* retry later (`SinkUnavailable`): connection refused or reset, timeouts, 5xx, 429 and
  503 (with the server's ``Retry-After`` as the back-off hint), 401/403/404 (a token or a
  database that may be fixed while the spool keeps the data);
* never (400, 413 for one point, 422): the batch is split in halves and each half written
  again until the refused points are isolated; those go to the dead-letter file
  (`PointsRejected`), the rest is stored. Rewriting a point is harmless: InfluxDB
  overwrites the same measurement, tag set, field and time, so the whole sink is
  idempotent and the pipeline's at-least-once replay never duplicates data.

Points line protocol cannot carry exactly are refused before sending, with the reason:
a tag key or value, field key or measurement with a newline, carriage return or tab (the
servers store the escape sequence, not the character) or ending in a backslash (it would
escape the separator after it), and points whose every field is NaN or infinite.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Sequence
from typing import Any

from bmslogger import hookimpl
from bmslogger.errors import PointsRejected, SinkError, SinkUnavailable
from bmslogger.model import Point, SinkConfig, SinkType
from bmslogger.options import Option
from bmslogger.sink import Sink
from bmslogger.tls import TLS_OPTIONS, TlsSettings

SAMPLE_CONFIG = """\
[sinks.influxdb]
# 2: InfluxDB 2.x/3.x/Cloud (and 1.8+ compatibility API); 1: InfluxDB 1.x /write
version = 2
url = "http://localhost:8086"
org = "home"
bucket = "battery"
token_file = "/etc/bmslogger/influx-token"
# version = 1 uses these instead:
# database = "bmslogger"
# retention_policy = ""
# username = "bmslogger"
# password_file = "/etc/bmslogger/influx-password"
precision = "ns"
gzip = false
timeout = "10s"
"""

PRECISIONS = ("ns", "us", "ms", "s")
_DIVISOR = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_V1_PRECISION = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
_RETRY_STATUS = frozenset((401, 403, 404, 408, 429, 500, 502, 503, 504))
_NEVER_STATUS = frozenset((400, 413, 422))
_BAD_TEXT = re.compile(r"[\n\r\t]|\\\Z")
#: points per request when a large batch (a spool replay) is sent in overlapped chunks
_CHUNK = 1000

SINK_TYPE = SinkType(
    name="influxdb",
    title="InfluxDB 1.x (/write) or 2.x/3.x/Cloud (influxdb-client)",
    options=(
        Option("version", "choice", 2, help="2: influxdb-client write API; 1: InfluxDB 1.x",
               choices=(1, 2)),
        Option("url", "str", "http://localhost:8086", help="server URL, http:// or https://"),
        Option("org", "str", "", help="version 2: organisation"),
        Option("bucket", "str", "", help="version 2: bucket (db/rp on 1.8+)"),
        Option("token", "str", "", help="version 2: API token", secret=True),
        Option("database", "str", "bmslogger", help="version 1: database"),
        Option("retention_policy", "str", "", help="version 1: retention policy; "
               "empty = the database's default"),
        Option("username", "str", "", help="version 1: user (HTTP basic auth)"),
        Option("password", "str", "", help="version 1: password", secret=True),
        Option("create_database", "bool", False,
               help="version 1: CREATE DATABASE on open (needs admin rights)"),
        Option("precision", "choice", "ns", help="timestamp precision written",
               choices=PRECISIONS),
        Option("gzip", "bool", False, help="compress request bodies"),
        Option("timeout", "duration", 10.0, help="connect and read timeout per request"),
        *TLS_OPTIONS,
    ),
    sink="bmslogger.sinks.influxdb:InfluxSink",
    sample_config=SAMPLE_CONFIG,
)


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [SINK_TYPE]


def _line_problem(point: Point) -> str | None:
    """Why line protocol cannot carry `point` exactly, or None."""
    for text in (point.measurement, *point.tags, *point.tags.values(), *point.fields):
        problem = _text_problem(str(text))
        if problem:
            return problem
    return None


def _text_problem(text: str) -> str | None:
    """Why line protocol cannot carry `text` as a name or tag value exactly, or None."""
    if _BAD_TEXT.search(text):
        return (f"line protocol cannot carry {text!r} exactly (newline, carriage return "
                "or tab, or a trailing backslash in a name or tag value)")
    return None


class _Retry(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Refused(Exception):
    """The server refused this request's content (400/413/422)."""


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            import time as _time

            return max(0.0, parsedate_to_datetime(value).timestamp() - _time.time())
        except (TypeError, ValueError):
            return None


def _client_serialisers() -> tuple[Any, Any, Any, Any] | None:
    """influxdb-client's escaping and field formatting functions, or None if this
    version does not have them (then every point goes through `influxdb_client.Point`)."""
    global _SERIALISERS
    if _SERIALISERS is False:
        try:
            from influxdb_client.client.write import point as lp

            _SERIALISERS = (lp._escape_key, lp._ESCAPE_MEASUREMENT, lp._append_tags,
                            lp._append_fields)
        except (ImportError, AttributeError):
            _SERIALISERS = None
    return _SERIALISERS  # type: ignore[return-value]


_SERIALISERS: Any = False


class InfluxSink(Sink):
    """Writes batches to InfluxDB; see the module docstring."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        o = self.options
        self.version = int(o.get("version", 2))
        self.url = str(o.get("url", "http://localhost:8086")).rstrip("/")
        self.precision = str(o.get("precision", "ns"))
        self.gzip = bool(o.get("gzip", False))
        self.timeout = float(o.get("timeout", 10.0))
        self._lp: Any = None  # (influxdb_client.Point, WritePrecision)
        self._client: Any = None
        self._write_api: Any = None
        self._http: Any = None
        self.requests = 0
        self.rejected = 0
        self._sender: Any = None  # one thread sending chunks of large batches
        self._keys: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, str | None]] = {}
        self._good_fields: set[str] = set()

    # --- connection --------------------------------------------------------------------

    def open(self) -> None:
        try:
            from influxdb_client import Point as LinePoint
            from influxdb_client import WritePrecision
        except ImportError as err:
            raise SinkError(
                "the influxdb sink needs influxdb-client: pip install 'bmslogger[influxdb]'"
            ) from err
        self._lp = (LinePoint, getattr(WritePrecision, self.precision.upper()))
        if self.version == 2:
            self._open_v2()
        else:
            self._open_v1()

    def _open_v2(self) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        o = self.options
        if not o.get("bucket"):
            raise SinkError("influxdb sink (version 2): set bucket (and org, token)")
        tls = TlsSettings.from_options(o)
        self._client = InfluxDBClient(
            url=self.url,
            token=str(o.get("token", "")) or None,
            org=str(o.get("org", "")) or None,
            timeout=int(self.timeout * 1000),
            verify_ssl=tls.verify,
            ssl_ca_cert=tls.ca,
            cert_file=tls.cert,
            cert_key_file=tls.key,
            enable_gzip=self.gzip,
            retries=False,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def _open_v1(self) -> None:
        import urllib3

        tls = TlsSettings.from_options(self.options)
        kwargs: dict[str, Any] = {
            "timeout": urllib3.Timeout(connect=self.timeout, read=self.timeout),
            "retries": False,
            "maxsize": 2,
        }
        if self.url.startswith("https://"):
            kwargs["ssl_context"] = tls.context()
        self._http = urllib3.PoolManager(**kwargs)
        if self.options.get("create_database"):
            db = str(self.options.get("database", "bmslogger"))
            # the name is an InfluxQL identifier: double quotes, with " and \ escaped
            ident = '"' + db.replace("\\", "\\\\").replace('"', '\\"') + '"'
            self._v1_request("/query", {"q": f"CREATE DATABASE {ident}"}, b"")

    def close(self) -> None:
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None
        if self._client is not None:
            try:
                self._client.close()
            except Exception as err:  # closing must never raise into the pipeline
                self.log.debug("closing the influxdb client failed: %s", err)
            self._client = None
            self._write_api = None
        if self._http is not None:
            self._http.clear()
            self._http = None

    # --- serialisation ------------------------------------------------------------------

    def to_line(self, point: Point) -> str:
        """One point as line protocol at the configured precision, by influxdb-client;
        ``""`` when no field is left (NaN and infinities are not representable).

        influxdb-client's own escaping and field formatting do the work either way; the
        fast path only keeps each series' escaped key (measurement and tag set), which a
        poll repeats for every point, instead of building a `Point` per point. A replay of
        a day's spool spends most of its time here."""
        parts = _client_serialisers()
        if parts is not None:
            key = self._series_key(point, parts)[0]
            fields = parts[3](point.fields, {})
            if not fields:
                return ""
            return f"{key}{fields} {point.time_ns // _DIVISOR[self.precision]}"
        if self._lp is None:
            from influxdb_client import Point as LinePoint
            from influxdb_client import WritePrecision

            self._lp = (LinePoint, getattr(WritePrecision, self.precision.upper()))
        line_point, precision = self._lp
        lp = line_point(point.measurement)
        for key, value in point.tags.items():
            lp.tag(key, value)
        for key, value in point.fields.items():
            lp.field(key, value)
        lp.time(point.time_ns // _DIVISOR[self.precision], precision)
        return lp.to_line_protocol()

    # --- writing -------------------------------------------------------------------------

    def write(self, points: Sequence[Point]) -> None:
        if self._write_api is None and self._http is None:
            self.open()
        if len(points) > 2 * _CHUNK:
            rejected = self._write_overlapped(points)
        else:
            lines, rejected = self._serialise(points)
            if lines:
                rejected.extend(self._write_isolating(lines))
        if rejected:
            self.rejected += len(rejected)
            raise PointsRejected(rejected)

    def _series_key(self, point: Point, parts: tuple[Any, ...]) -> tuple[str, str | None]:
        """(escaped measurement and tag set, why line protocol cannot carry them or None),
        cached per series: a poll repeats the same few series for every point."""
        series = (point.measurement, tuple(point.tags.items()))
        known = self._keys.get(series)
        if known is None:
            if len(self._keys) > 100_000:  # bounded, whatever tags a plugin invents
                self._keys.clear()
            escape_key, escape_measurement, append_tags, _ = parts
            problem = None
            for text in (point.measurement, *point.tags, *point.tags.values()):
                problem = problem or _text_problem(str(text))
            known = self._keys[series] = (
                escape_key(point.measurement, escape_measurement) + append_tags(point.tags),
                problem,
            )
        return known

    def _field_problem(self, point: Point) -> str | None:
        """`_text_problem` of the field names, each name checked once per sink."""
        for name in point.fields:
            if name not in self._good_fields:
                problem = _text_problem(str(name))
                if problem:
                    return problem
                if len(self._good_fields) < 100_000:
                    self._good_fields.add(name)
        return None

    def _serialise(
        self, points: Sequence[Point]
    ) -> tuple[list[tuple[Point, str]], list[tuple[Point, str]]]:
        """(point, line) pairs to send, and (point, reason) pairs that cannot be sent."""
        rejected: list[tuple[Point, str]] = []
        lines: list[tuple[Point, str]] = []
        parts = _client_serialisers()
        for p in points:
            if parts is None:
                problem = _line_problem(p)
                line = "" if problem else self.to_line(p)
            else:
                key, problem = self._series_key(p, parts)
                problem = problem or self._field_problem(p)
                fields = "" if problem else parts[3](p.fields, {})
                line = f"{key}{fields} {p.time_ns // _DIVISOR[self.precision]}" if fields else ""
            if problem:
                rejected.append((p, problem))
            elif not line:
                rejected.append((p, "no field InfluxDB can store (NaN or infinite values only)"))
            else:
                lines.append((p, line))
        return lines, rejected

    def _write_overlapped(self, points: Sequence[Point]) -> list[tuple[Point, str]]:
        """A large batch (a spool replay) in chunks: while one chunk is on its way to the
        server, the next is serialised, so the server's time and ours overlap instead of
        adding up. Returns only when every chunk is stored (or raises, and the pipeline
        retries the batch: InfluxDB overwrites what was already stored)."""
        if self._sender is None:
            from concurrent.futures import ThreadPoolExecutor

            self._sender = ThreadPoolExecutor(1, thread_name_prefix=f"influx-{self.config.name}")
        rejected: list[tuple[Point, str]] = []
        pending: Any = None
        for start in range(0, len(points), _CHUNK):
            lines, refused = self._serialise(points[start:start + _CHUNK])
            rejected.extend(refused)
            if pending is not None:
                rejected.extend(pending.result())
                pending = None
            if lines:
                pending = self._sender.submit(self._write_isolating, lines)
        if pending is not None:
            rejected.extend(pending.result())
        return rejected

    def _write_isolating(self, lines: list[tuple[Point, str]]) -> list[tuple[Point, str]]:
        """Write `lines`; on a refused request, split it until the refused points are
        alone. Returns the refused points with the server's reason."""
        try:
            self._send("\n".join(line for _, line in lines))
            return []
        except _Refused as err:
            if len(lines) == 1:
                return [(lines[0][0], str(err))]
            half = len(lines) // 2
            return self._write_isolating(lines[:half]) + self._write_isolating(lines[half:])

    def _send(self, body: str) -> None:
        self.requests += 1
        try:
            if self.version == 2:
                self._send_v2(body)
            else:
                self._send_v1(body)
        except _Retry as err:
            raise SinkUnavailable(f"{self.url}: {err}", retry_after=err.retry_after) from None

    def _send_v2(self, body: str) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        o = self.options
        try:
            self._write_api.write(
                bucket=str(o.get("bucket")),
                org=str(o.get("org", "")) or None,
                record=body,
                write_precision=self._lp[1],
            )
        except ApiException as err:
            self._sort_status(int(err.status or 0), _error_text(err.body) or str(err.reason),
                              err.headers)
        except (HTTPError, OSError) as err:
            raise _Retry(f"connection failed: {_short(err)}") from None

    def _v1_request(self, path: str, params: dict[str, str], body: bytes) -> None:
        from urllib.parse import urlencode

        from urllib3.exceptions import HTTPError

        headers = {"Content-Type": "text/plain; charset=utf-8"}
        user = str(self.options.get("username", ""))
        if user:
            token = f"{user}:{self.options.get('password', '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        if self.gzip and body:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        url = f"{self.url}{path}?{urlencode(params)}"
        try:
            r = self._http.request("POST", url, body=body, headers=headers)
        except (HTTPError, OSError) as err:
            raise _Retry(f"connection failed: {_short(err)}") from None
        if r.status >= 300:
            self._sort_status(r.status, _error_text(r.data), r.headers)

    def _send_v1(self, body: str) -> None:
        params = {"db": str(self.options.get("database", "bmslogger")),
                  "precision": _V1_PRECISION[self.precision]}
        rp = str(self.options.get("retention_policy", ""))
        if rp:
            params["rp"] = rp
        self._v1_request("/write", params, body.encode("utf-8"))

    def _sort_status(self, status: int, text: str, headers: Any) -> None:
        if status in _NEVER_STATUS:
            raise _Refused(f"HTTP {status}: {text}")
        if status in _RETRY_STATUS or status >= 500 or status == 0:
            raise _Retry(f"HTTP {status}: {text}", _retry_after(headers))
        raise _Retry(f"unexpected HTTP {status}: {text}", _retry_after(headers))


def _error_text(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    try:
        obj = json.loads(body)
    except ValueError:
        return str(body).strip()[:500]
    if isinstance(obj, dict):
        return str(obj.get("error") or obj.get("message") or obj)[:500]
    return str(obj)[:500]


def _short(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    return str(reason or err)[:300]
