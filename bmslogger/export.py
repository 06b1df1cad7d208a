"""`bmslogger export`: a time range of chosen fields, aggregated per interval, as one CSV.

Why it exists: a spreadsheet or a quick pandas session wants one rectangular table (one
row per interval, one column per device/cell and field) rather than the sinks' per-day,
per-measurement files or a database query language. The same selection feeds
`bmslogger plot`.

Shape of the output (UTF-8, ``\\n`` line ends):

* first column ``time_utc``: the start of each interval, RFC 3339 UTC (``...Z``);
  intervals are aligned to the Unix epoch, as InfluxDB's ``GROUP BY time()`` does;
* one column per series and field, named ``<device>[ <tag> <value>...] <measurement>.<field>
  [<unit>]``, e.g. ``house-bank cell 3 cell.voltage_v [V]``; the unit comes from the
  plugin's declared field list;
* a row for *every* interval of the range: an interval without data (an outage, a
  device switched off) is a row of empty cells, never zeros, so gaps stay visible.

Aggregates: ``mean``, ``min``, ``max``, ``last``. Booleans count as 0/1 (the mean is the
share of samples that were true; ``last`` keeps ``true``/``false``); text fields (enums
such as ``charge_state``) have only a ``last``, other aggregates leave them empty.

Sources: the CSV sink's files, InfluxDB (InfluxQL ``/query``: 1.x, and 2.x/3.x through
the v1 compatibility API), or the MySQL sink's tables. Raw samples are read in one-day
chunks and aggregated here, so every source gives identical numbers; a progress bar on
stderr counts the chunks. MySQL columns are read the way the sink made them: the columns
of the ``series_time`` key are the tags, ``tinyint(1)`` is a boolean, and a measurement
without a table simply has no data.

Mistakes are of two kinds. `SelectionError` is a usage mistake (a bad ``--from``/``--to``/
``--interval``/``--aggregate``, a field no plugin declares, a ``--device`` neither in the
configuration nor in the source, a source that is not configured, wrong database
credentials): the CLI prints one line naming the option and exits 2. `ExportError` is a
failure at run time (server unreachable, a query refused, no data in the range): exit 1.
"""

from __future__ import annotations

import calendar
import csv
import glob
import io
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any, Callable, Optional, Tuple

from bmslogger.errors import BmsLoggerError
from bmslogger.options import parse_duration

AGGREGATES = ("mean", "min", "max", "last")
DAY_NS = 86_400 * 10**9
MAX_ROWS = 5_000_000
#: tags every built-in measurement may carry besides device and plugin
KNOWN_TAGS = frozenset({"device", "plugin", "pack", "cell", "sensor", "sink", "task"})

#: (time_ns, measurement, series tags without plugin, field, value)
Sample = Tuple[int, str, Tuple[Tuple[str, str], ...], str, Any]


class ExportError(BmsLoggerError):
    """The source failed while reading (server down, refused a query): exit status 1."""


class SelectionError(ExportError):
    """The command line or configuration asks for something impossible (a bad time, an
    unknown field or device, a source that is not configured): a usage mistake, exit 2.
    The message names the option and what was expected."""


@dataclass(frozen=True)
class Selection:
    """What to export: a half-open time range, an interval, an aggregate, devices, fields."""

    start_ns: int
    end_ns: int
    interval_ns: int
    aggregate: str
    fields: tuple[tuple[str, str], ...]
    devices: tuple[str, ...] = ()

    @property
    def measurements(self) -> list[str]:
        return sorted({m for m, _ in self.fields})

    def fields_of(self, measurement: str) -> list[str]:
        return [f for m, f in self.fields if m == measurement]

    def wants_device(self, device: str) -> bool:
        return not self.devices or device in self.devices


# --- parsing the command line ------------------------------------------------------------------


def parse_time(text: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch from ``now``, ``-24h`` (before now), ``2026-11-22``
    (midnight UTC) or an RFC 3339 time (``2026-11-22T10:00:00Z``; no zone means UTC)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    t = text.strip()
    if t == "now":
        return now_ns
    if t.startswith("-"):
        try:
            return now_ns - int(parse_duration(t[1:]) * 1e9)
        except ValueError as err:
            raise SelectionError(f"bad relative time {text!r}: {err}") from None
    try:
        dt = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        raise SelectionError(f"bad time {text!r}: expected now, -24h, 2026-11-22 or "
                             "2026-11-22T10:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    seconds = calendar.timegm(dt.utctimetuple())
    return seconds * 10**9 + dt.microsecond * 1000


def parse_fields(specs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``voltage_v`` (in ``battery``) or ``measurement.field``; comma lists allowed."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            m, _, f = part.rpartition(".")
            m = m or "battery"
            if not re.fullmatch(r"[A-Za-z0-9_]+", m) or not re.fullmatch(r"[A-Za-z0-9_]+", f):
                raise SelectionError(f"--field: bad name {part!r}: expected FIELD (in "
                                     "battery) or MEASUREMENT.FIELD, letters, digits and _")
            if (m, f) not in out:
                out.append((m, f))
    if not out:
        raise SelectionError("--field: name at least one field (--field voltage_v or "
                             "--field cell.voltage_v)")
    return tuple(out)


def make_selection(start: str, end: str, interval: str, aggregate: str,
                   fields: Sequence[str], devices: Sequence[str] = (),
                   now_ns: int | None = None) -> Selection:
    """Check and convert the command line's words into a `Selection`; every mistake is a
    `SelectionError` naming the option."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    times = []
    for option, text in (("--from", start), ("--to", end)):
        try:
            times.append(parse_time(text, now_ns))
        except SelectionError as err:
            raise SelectionError(f"{option}: {err}") from None
    start_ns, end_ns = times
    if end_ns <= start_ns:
        raise SelectionError(f"--to: the range is empty: --to {end} is not after --from {start}")
    try:
        interval_ns = int(parse_duration(interval) * 1e9)
    except ValueError as err:
        raise SelectionError(f"--interval: bad duration {interval!r}: {err}") from None
    if interval_ns <= 0:
        raise SelectionError(f"--interval: expected a duration longer than zero, such as 1m, "
                             f"not {interval!r}")
    if aggregate not in AGGREGATES:
        raise SelectionError(f"--aggregate: expected one of {', '.join(AGGREGATES)}, "
                             f"not {aggregate!r}")
    rows = (end_ns - start_ns) // interval_ns + 1
    if rows > MAX_ROWS:
        raise SelectionError(f"--interval: {rows} rows: choose a longer --interval or a "
                             f"shorter range (at most {MAX_ROWS})")
    devs = tuple(dict.fromkeys(d.strip() for spec in devices for d in spec.split(",")
                               if d.strip()))
    return Selection(start_ns, end_ns, interval_ns, aggregate, parse_fields(fields), devs)


def check_fields(sel: Selection, declared: dict[str, set[str]]) -> None:
    """Refuse a field no installed plugin (nor the logger itself) declares: a typo would
    otherwise read the whole range and end in "no data"."""
    import difflib

    for m, f in sel.fields:
        if m not in declared:
            near = difflib.get_close_matches(m, sorted(declared), 3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise SelectionError(f"--field {m}.{f}: no measurement {m!r} is declared by an "
                                 f"installed plugin{hint}")
        if f not in declared[m] and not _declared_pattern(m, f):
            near = difflib.get_close_matches(f, sorted(declared[m]), 3)
            hint = (f"did you mean {', '.join(near)}?" if near else
                    f"see bmslogger describe PLUGIN for the fields of {m}")
            raise SelectionError(f"--field {m}.{f}: {m} has no field {f!r} ({hint})")


def _declared_pattern(measurement: str, name: str) -> bool:
    """Fields declared by prefix (the logger's ``errors_<kind>`` counters)."""
    if measurement != "bmslogger":
        return False
    from bmslogger.selfmetrics import is_declared

    return is_declared(name)


# --- progress ----------------------------------------------------------------------------------


class Progress:
    """A one-line bar on stderr, redrawn at most ten times a second; silent when off."""

    def __init__(self, total: int, label: str, enabled: bool,
                 stream: IO[str] | None = None) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self._drawn = 0.0

    def step(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= 0.1 or self.done == self.total):
            self._drawn = now
            width = 30
            filled = int(width * self.done / self.total)
            pct = 100 * self.done // self.total
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                              f"{pct:3d}% ({self.done}/{self.total})")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def day_chunks(sel: Selection) -> list[tuple[int, int]]:
    """The range cut at UTC midnights: the unit of reading and of progress."""
    out = []
    t = sel.start_ns
    while t < sel.end_ns:
        nxt = min(sel.end_ns, (t // DAY_NS + 1) * DAY_NS)
        out.append((t, nxt))
        t = nxt
    return out


# --- sources -----------------------------------------------------------------------------------


def _value(text: str) -> Any:
    """A CSV sink cell back to a value: empty = missing; numbers, true/false, else text."""
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _rfc3339_ns(text: str) -> int:
    t = text[:-1] if text.endswith("Z") else text
    dt = datetime.fromisoformat(t).replace(tzinfo=timezone.utc)
    return calendar.timegm(dt.utctimetuple()) * 10**9 + dt.microsecond * 1000


def _series(tags: dict[str, str]) -> tuple[tuple[str, str], ...]:
    dev = tags.get("device", "")
    order = {"pack": 0, "cell": 1, "sensor": 2}  # outer to inner: pack 2 cell 7
    rest = sorted(((k, v) for k, v in tags.items() if k not in ("device", "plugin") and v != ""),
                  key=lambda kv: (order.get(kv[0], 3), kv[0]))
    return (("device", dev), *rest)


def csv_samples(directory: str, sel: Selection, declared: dict[str, set[str]],
                progress: Progress | None = None,
                seen_devices: set[str] | None = None) -> Iterator[Sample]:
    """Samples from the CSV sink's ``<dir>/<m>/<m>-YYYY-MM-DD.csv`` files in the range.

    Files are chosen by the day in their name, one day wider on each side because the
    sink may name days in local time; rows are then filtered by their UTC time. Every
    device met in the range goes into `seen_devices`, so a misspelt ``--device`` can be
    told from one that was merely silent.
    """
    if not os.path.isdir(directory):
        raise SelectionError(f"--directory: no CSV folder {directory!r} (expected the csv "
                             "sink's directory, holding one folder per measurement)")
    first = time.strftime("%Y-%m-%d", time.gmtime(sel.start_ns // 10**9 - 86_400))
    last = time.strftime("%Y-%m-%d", time.gmtime(sel.end_ns // 10**9 + 86_400))
    files: list[tuple[str, str]] = []
    for m in sel.measurements:
        for path in sorted(glob.glob(os.path.join(glob.escape(directory), m, f"{m}-*.csv"))):
            day = os.path.basename(path)[len(m) + 1:-4]
            if first <= day <= last:
                files.append((m, path))
    if progress is not None:
        progress.total = max(1, len(files))
    for m, path in files:
        try:
            yield from _csv_file_samples(m, path, sel, declared, seen_devices)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise ExportError(f"cannot read {path}: {err}") from None
        if progress is not None:
            progress.step()


def _csv_file_samples(m: str, path: str, sel: Selection, declared: dict[str, set[str]],
                      seen_devices: set[str] | None) -> Iterator[Sample]:
    """The samples of one CSV sink file (see `csv_samples`)."""
    wanted = set(sel.fields_of(m))
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or header[0] != "time":
            raise ExportError(f"{path}: not a bmslogger CSV file (no time column)")
        known = declared.get(m)
        tag_idx = [i for i, c in enumerate(header[1:], 1)
                   if (c in KNOWN_TAGS or (known is not None and c not in known))
                   and c not in wanted]
        field_idx = [(i, c) for i, c in enumerate(header) if c in wanted]
        dev_idx = header.index("device") if "device" in header else None
        for row in reader:
            if len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            try:
                t = _rfc3339_ns(row[0])
            except ValueError:
                continue  # a damaged row is skipped, never turned into a value
            if not sel.start_ns <= t < sel.end_ns:
                continue
            if seen_devices is not None and dev_idx is not None:
                seen_devices.add(row[dev_idx])
            if not field_idx:
                continue
            tags = {header[i]: row[i] for i in tag_idx}
            if not sel.wants_device(tags.get("device", "")):
                continue
            key = _series(tags)
            for i, name in field_idx:
                if row[i] != "":
                    yield t, m, key, name, _value(row[i])


def _q(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class InfluxServer:
    """Where and how to ask an InfluxDB (InfluxQL ``/query``)."""

    url: str
    database: str
    username: str = ""
    password: str = ""
    token: str = ""
    timeout: float = 60.0

    def query(self, q: str) -> list[dict]:
        """The ``results`` of one query; a server that cannot be reached or that refuses
        is an `ExportError` (exit 1), never a traceback."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        elif self.username:
            import base64

            cred = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {cred}"
        body = urllib.parse.urlencode({"db": self.database, "q": q, "epoch": "ns"}).encode()
        req = urllib.request.Request(self.url.rstrip("/") + "/query", data=body,
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                answer = json.load(r)
        except urllib.error.HTTPError as err:
            raise ExportError(f"InfluxDB at {self.url} answered {err.code}: "
                              f"{err.read()[:200].decode('utf-8', 'replace')}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise ExportError(f"cannot reach InfluxDB at {self.url}: {err}") from None
        results = answer.get("results", []) if isinstance(answer, dict) else []
        for result in results:
            if "error" in result:
                raise ExportError(f"InfluxDB at {self.url}: {result['error']}")
        return results


def influx_samples(url: str, database: str, sel: Selection, *, username: str = "",
                   password: str = "", token: str = "", timeout: float = 60.0,
                   progress: Progress | None = None) -> Iterator[Sample]:
    """Samples from InfluxDB's InfluxQL ``/query`` (1.x; 2.x/3.x v1 compatibility API).

    One query per measurement and UTC day, raw values with every tag (``GROUP BY *``).
    """
    server = InfluxServer(url, database, username, password, token, timeout)
    chunks = day_chunks(sel)
    if progress is not None:
        progress.total = max(1, len(chunks) * len(sel.measurements))
    dev = ""
    if sel.devices:
        dev = " AND (" + " OR ".join(f'"device" = {_lit(d)}' for d in sel.devices) + ")"
    for m in sel.measurements:
        cols = ", ".join(_q(f) for f in sel.fields_of(m))
        for a, b in chunks:
            q = (f"SELECT {cols} FROM {_q(m)} WHERE time >= {a} AND time < {b}{dev} "
                 "GROUP BY *")
            for result in server.query(q):
                for series in result.get("series", []):
                    key = _series(series.get("tags") or {})
                    columns = series["columns"]
                    for row in series["values"]:
                        t = int(row[0])
                        for name, v in zip(columns[1:], row[1:]):
                            if v is not None:
                                yield t, m, key, name, v
            if progress is not None:
                progress.step()


def influx_devices(server: InfluxServer, sel: Selection) -> set[str]:
    """Every ``device`` tag value the selected measurements ever had."""
    out: set[str] = set()
    for m in sel.measurements:
        for result in server.query(f'SHOW TAG VALUES FROM {_q(m)} WITH KEY = "device"'):
            for series in result.get("series", []):
                out.update(str(row[1]) for row in series.get("values", []))
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) \
        else str(value)


def _mysql_layout(cur: Any, table: str) -> tuple[list[str], dict[str, str]] | None:
    """(tag columns, field column -> kind) of one of the sink's tables, None if it does
    not exist. Tags are the columns of the ``series_time`` key (what the sink made them);
    ``tinyint(1)`` is how MySQL stores a BOOLEAN, and is read back as one."""
    cur.execute(
        "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (table,))
    columns = [(_text(c), _text(t).lower()) for c, t in cur.fetchall()]
    if not columns:
        return None
    cur.execute(
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = "
        "DATABASE() AND TABLE_NAME = %s AND INDEX_NAME = 'series_time' ORDER BY SEQ_IN_INDEX",
        (table,))
    tags = [c for c in (_text(r[0]) for r in cur.fetchall()) if c != "time"]
    if not tags:  # a table made by hand: VARCHAR columns are the tags, as the sink makes them
        tags = [c for c, t in columns if c != "time" and t.startswith("varchar")]
    kinds = {c: ("bool" if t.startswith("tinyint(1)") else "value")
             for c, t in columns if c != "time" and c not in tags}
    return tags, kinds


def _mysql_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _ns_of(dt: datetime) -> int:
    return calendar.timegm(dt.timetuple()) * 10**9 + dt.microsecond * 1000


def _mysql_value(kind: str, v: Any) -> Any:
    if kind == "bool":
        return bool(v)
    if isinstance(v, (bytes, bytearray)):
        return _text(v)
    if not isinstance(v, (int, float, str)):  # DECIMAL in a table made by hand
        return float(v)
    return v


class MySQLError(ExportError):
    """A query failed; `code` is the server's error number (0 when unknown)."""

    def __init__(self, message: str, code: int = 0) -> None:
        self.code = code
        super().__init__(message)


#: access denied, unknown database: the settings are wrong, not the server down
_MYSQL_SETTINGS_CODES = frozenset((1044, 1045, 1049))


def mysql_error(err: Exception, where: str) -> ExportError:
    """A PyMySQL error as one line: wrong settings are a `SelectionError` (exit 2), the
    rest (refused, gone away, timeouts) an `ExportError` (exit 1)."""
    code = err.args[0] if err.args and isinstance(err.args[0], int) else 0
    text = err.args[1] if len(err.args) > 1 else str(err)
    if code in _MYSQL_SETTINGS_CODES:
        return SelectionError(f"--source mysql: MySQL at {where} refused the settings of "
                              f"[sinks.mysql] (error {code}: {text}); expected the user, "
                              "password and database the sink writes with")
    if code in (2002, 2003, 2005, 2006, 2013):
        return MySQLError(f"cannot reach MySQL at {where}: error {code}: {text}", code)
    return MySQLError(f"MySQL at {where}: error {code}: {text}", code)


def mysql_samples(connect: Callable[[], Any], sel: Selection, table_prefix: str = "",
                  progress: Progress | None = None, where: str = "the server"
                  ) -> Iterator[Sample]:
    """Samples from the MySQL sink's tables (one per measurement, ``time`` in UTC).

    A measurement without a table has no data (the sink makes tables on first use).
    """
    import pymysql

    chunks = day_chunks(sel)
    if progress is not None:
        progress.total = max(1, len(chunks) * len(sel.measurements))
    conn = connect()
    try:
        with conn.cursor() as cur:
            for m in sel.measurements:
                layout = _mysql_layout(cur, table_prefix + m)
                tags, kinds = layout if layout is not None else ([], {})
                wanted = [f for f in sel.fields_of(m) if f in kinds]
                table = _mysql_quote(table_prefix + m)
                names = ", ".join(_mysql_quote(c) for c in tags + wanted)
                for a, b in chunks:
                    if progress is not None:
                        progress.step()
                    if not wanted:
                        continue
                    sql = (f"SELECT `time`, {names} FROM {table} WHERE `time` >= %s "
                           "AND `time` < %s")
                    args: list[Any] = [_utc(a), _utc(b)]
                    if sel.devices:
                        sql += " AND `device` IN (" + ", ".join(["%s"] * len(sel.devices)) + ")"
                        args += list(sel.devices)
                    cur.execute(sql + " ORDER BY `time`", args)
                    for row in cur.fetchall():
                        t = _ns_of(row[0])
                        key = _series({k: _text(v) for k, v in zip(tags, row[1:1 + len(tags)])})
                        for name, v in zip(wanted, row[1 + len(tags):]):
                            if v is not None:
                                yield t, m, key, name, _mysql_value(kinds[name], v)
    except pymysql.MySQLError as err:
        raise mysql_error(err, where) from None
    except OSError as err:
        raise MySQLError(f"MySQL at {where}: connection lost: {err}") from None
    finally:
        try:
            conn.close()
        except Exception:  # closing a connection the server already dropped
            pass


def mysql_devices(connect: Callable[[], Any], sel: Selection, table_prefix: str = "",
                  where: str = "the server") -> set[str]:
    """Every device the selected measurements' tables hold (the ``device_time`` index
    makes this a short scan)."""
    import pymysql

    out: set[str] = set()
    conn = connect()
    try:
        with conn.cursor() as cur:
            for m in sel.measurements:
                if _mysql_layout(cur, table_prefix + m) is None:
                    continue
                cur.execute(f"SELECT DISTINCT `device` FROM {_mysql_quote(table_prefix + m)}")
                out.update(_text(r[0]) for r in cur.fetchall())
    except pymysql.MySQLError as err:
        raise mysql_error(err, where) from None
    finally:
        try:
            conn.close()
        except Exception:
            pass
    return out


def _utc(ns: int) -> datetime:
    s, rest = divmod(ns, 10**9)
    return datetime.fromtimestamp(s, tz=timezone.utc).replace(
        microsecond=rest // 1000, tzinfo=None)


# --- aggregation -------------------------------------------------------------------------------


@dataclass
class Table:
    """The aggregated result: columns (series, measurement, field) and one cell per bucket."""

    sel: Selection
    units: dict[tuple[str, str], str] = field(default_factory=dict)
    cells: dict[tuple, dict[int, list]] = field(default_factory=dict)

    def add(self, t: int, measurement: str, series: tuple, name: str, value: Any) -> None:
        agg = self.sel.aggregate
        if isinstance(value, str) and agg != "last":
            return
        if isinstance(value, float) and not math.isfinite(value) and agg != "last":
            return
        bucket = (t // self.sel.interval_ns) * self.sel.interval_ns
        col = self.cells.setdefault((series, measurement, name), {})
        state = col.get(bucket)
        if state is None:
            col[bucket] = [t, value, 1, (float(value) if agg == "mean" else None)]
            return
        if agg == "last":
            if t >= state[0]:
                state[0], state[1] = t, value
        elif agg == "mean":
            state[2] += 1
            state[3] += float(value)
        elif agg == "min":
            if value < state[1]:
                state[1] = value
        elif value > state[1]:
            state[1] = value

    def columns(self) -> list[tuple]:
        """Columns in a stable order: field order as asked, then series (numbers sorted
        as numbers, so cell 10 follows cell 9)."""
        order = {mf: i for i, mf in enumerate(self.sel.fields)}

        def key(col: tuple) -> tuple:
            series, m, f = col
            nat = [(k, (0, int(v), "") if v.isdigit() else (1, 0, v)) for k, v in series]
            return (order.get((m, f), 99), nat)

        return sorted(self.cells, key=key)

    def label(self, col: tuple) -> str:
        series, m, f = col
        parts = [series[0][1]] + [f"{k} {v}" for k, v in series[1:]]
        unit = self.units.get((m, f), "")
        return " ".join(parts) + f" {m}.{f}" + (f" [{unit}]" if unit else "")

    def value(self, col: tuple, bucket: int) -> Any:
        state = self.cells[col].get(bucket)
        if state is None:
            return None
        if self.sel.aggregate == "mean":
            v = state[3] / state[2]
            return v
        return state[1]

    def buckets(self) -> range:
        first = (self.sel.start_ns // self.sel.interval_ns) * self.sel.interval_ns
        return range(first, self.sel.end_ns, self.sel.interval_ns)


def aggregate(samples: Iterable[Sample], sel: Selection,
              units: dict[tuple[str, str], str] | None = None) -> Table:
    """Fold raw samples into per-interval values; only what was seen becomes a column."""
    table = Table(sel, dict(units or {}))
    for t, m, series, name, value in samples:
        table.add(t, m, series, name, value)
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def iso(ns: int) -> str:
    """RFC 3339 UTC, with microseconds only when the time has them (integer arithmetic:
    a float of nanoseconds since 1970 cannot hold a microsecond exactly)."""
    seconds, rest = divmod(ns, 10**9)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return base + "Z" if rest == 0 else base + f".{rest // 1000:06d}Z"


def write_csv(table: Table, out: IO[str]) -> int:
    """Write the table; returns the number of data rows (every interval, gaps included)."""
    cols = table.columns()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["time_utc"] + [table.label(c) for c in cols])
    rows = 0
    for b in table.buckets():
        w.writerow([iso(b)] + [_cell(table.value(c, b)) for c in cols])
        rows += 1
    return rows


def units_from_registry() -> tuple[dict[tuple[str, str], str], dict[str, set[str]]]:
    """Units and declared fields per measurement, from every installed device plugin and
    the logger's own ``bmslogger`` measurement (`bmslogger.selfmetrics`)."""
    from bmslogger import selfmetrics
    from bmslogger.manager import build_registry

    units: dict[tuple[str, str], str] = {}
    declared: dict[str, set[str]] = {}
    specs = [s for dtype in build_registry().devices.values() for s in dtype.load_fields()]
    for spec in specs + list(selfmetrics.FIELDS):
        declared.setdefault(spec.measurement, set()).add(spec.field)
        if spec.unit:
            units.setdefault((spec.measurement, spec.field), spec.unit)
    return units, declared


def to_csv_text(table: Table) -> str:
    buf = io.StringIO()
    write_csv(table, buf)
    return buf.getvalue()


SourceFn = Callable[[Selection, Optional[Progress]], Iterator[Sample]]


# --- the command -------------------------------------------------------------------------------


@dataclass
class Source:
    """Where `export` reads: the sample stream, and the devices the source knows of (asked
    only when a ``--device`` gave nothing, to tell a typo from a silent device)."""

    name: str
    read: Callable[[Selection, Optional[Progress]], Iterator[Sample]]
    devices: Callable[[Selection], set]


def load_export_config(args: Any) -> Any:
    """The configuration `export` takes sink settings and device names from: ``-c FILE``
    (its errors are the user's to fix), else the usual search, else none."""
    from bmslogger.config import load_config
    from bmslogger.manager import build_registry

    try:
        return load_config(getattr(args, "config", None), build_registry(),
                           need_devices=False)
    except BmsLoggerError:
        if getattr(args, "config", None):
            raise
        return None


def _sink_options(config: Any, plugin: str) -> dict[str, Any] | None:
    """Options of the config's first sink of this plugin; None when there is none."""
    for sc in getattr(config, "sinks", ()) or ():
        if sc.plugin == plugin:
            return dict(sc.options)
    return None


def _config_name(config: Any) -> str:
    return str(getattr(config, "file", "") or "the configuration")


def open_source(args: Any, declared: dict[str, set[str]], config: Any = None) -> Source:
    """The source `--source` names, with settings from the command line first and the
    configuration's sink second (so `export` reads where `run` writes)."""
    source = args.source
    opts = _sink_options(config, source)
    if source == "csv":
        directory = str(args.directory or (opts or {}).get("directory") or "data")
        seen: set[str] = set()
        return Source("csv", lambda sel, progress: csv_samples(directory, sel, declared,
                                                                 progress, seen),
                      lambda sel: seen)
    if source == "influxdb":
        o = opts or {}
        version = int(o.get("version", 1 if o.get("database") else 2) or 2)
        url = args.url or o.get("url") or "http://localhost:8086"
        if version == 1:
            database = args.database or o.get("database") or "bmslogger"
            user, password = o.get("username", ""), o.get("password", "")
            token = ""
        else:
            database = args.database or o.get("bucket") or "bmslogger"
            user = password = ""
            token = o.get("token", "")
        user = args.username or user
        password = args.password if args.password is not None else password
        token = args.token or token
        server = InfluxServer(str(url), str(database), str(user or ""), str(password or ""),
                              str(token or ""))
        return Source("influxdb", lambda sel, progress: influx_samples(
            server.url, server.database, sel, username=server.username,
            password=server.password, token=server.token, progress=progress),
            lambda sel: influx_devices(server, sel))
    if source == "mysql":
        return _mysql_source(opts, config)
    raise SelectionError(f"--source: expected csv, influxdb or mysql, not {source!r}")


def _mysql_source(opts: dict[str, Any] | None, config: Any) -> Source:
    if opts is None:
        raise SelectionError(f"--source mysql: {_config_name(config)} has no [sinks.mysql] "
                             "table; expected -c FILE naming one (host, port, database, "
                             "user, password), as the logger that writes the data uses")
    try:
        import pymysql
    except ImportError:
        raise SelectionError("--source mysql needs PyMySQL: pip install "
                             "'bmslogger[mysql]'") from None
    timeout = float(opts.get("timeout") or 10.0)
    kw: dict[str, Any] = dict(
        user=str(opts.get("user", "bmslogger")), password=str(opts.get("password", "")),
        database=str(opts.get("database", "bmslogger")), charset="utf8mb4",
        connect_timeout=timeout, read_timeout=max(timeout, 60.0), write_timeout=timeout,
        init_command="SET time_zone = '+00:00'")
    if opts.get("unix_socket"):
        kw["unix_socket"] = str(opts["unix_socket"])
        where = str(opts["unix_socket"])
    else:
        kw["host"] = str(opts.get("host", "localhost"))
        kw["port"] = int(opts.get("port", 3306))
        where = f"{kw['host']}:{kw['port']}"
    ssl = {k: str(opts[o]) for k, o in (("ca", "ssl_ca"), ("cert", "ssl_cert"),
                                         ("key", "ssl_key")) if opts.get(o)}
    if ssl:
        kw["ssl"] = ssl
    prefix = str(opts.get("table_prefix", ""))

    def connect() -> Any:
        try:
            return pymysql.connect(**kw)
        except pymysql.MySQLError as err:
            raise mysql_error(err, where) from None
        except OSError as err:
            raise MySQLError(f"cannot reach MySQL at {where}: {err}") from None

    return Source("mysql",
                  lambda sel, progress: mysql_samples(connect, sel, prefix, progress, where),
                  lambda sel: mysql_devices(connect, sel, prefix, where))


def samples_for_args(args: Any, sel: Selection, declared: dict[str, set[str]],
                     progress: Progress | None) -> Iterator[Sample]:
    """The sample stream `--source` names (see `open_source`)."""
    return open_source(args, declared, load_export_config(args)).read(sel, progress)


def selection_from_args(args: Any) -> Selection:
    return make_selection(args.start, args.end, args.interval, args.aggregate,
                          args.field or [], args.device or [])


def _check_devices(table: Table, source: Source, config: Any) -> None:
    """A ``--device`` that gave nothing must at least exist somewhere: in the
    configuration or in the source. Otherwise it is a typo, and says so."""
    got = {series[0][1] for series, _, _ in table.cells}
    missing = [d for d in table.sel.devices if d not in got]
    if not missing:
        return
    configured = {d.name for d in getattr(config, "devices", ()) or ()}
    missing = [d for d in missing if d not in configured]
    if not missing:
        return
    known = source.devices(table.sel)
    missing = [d for d in missing if d not in known]
    if missing:
        names = sorted(configured | known)
        raise SelectionError(
            f"--device {missing[0]}: no such device in {_config_name(config)} or in the "
            f"{source.name} data of these measurements (expected one of: "
            f"{', '.join(names) if names else 'none'})")


def build_table(args: Any) -> Table:
    """Read and aggregate what the command line selects; the bar shows when stderr is a
    terminal (or --progress), never with --no-progress.

    Usage mistakes raise `SelectionError` before anything is read where they can (times,
    interval, aggregate, fields, the source's settings); a device name is checked once
    the data shows it missing.
    """
    sel = selection_from_args(args)
    units, declared = units_from_registry()
    check_fields(sel, declared)
    config = load_export_config(args)
    source = open_source(args, declared, config)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = Progress(1, f"reading {args.source}", bool(show))
    try:
        table = aggregate(source.read(sel, progress), sel, units)
    finally:
        progress.finish()
    _check_devices(table, source, config)
    if not table.cells:
        raise ExportError("no data for this selection (check --from/--to, --device, --field)")
    return table
