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
stderr counts the chunks.
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
    """The selection or the source is unusable (bad time, no such folder, server refused)."""


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
            raise ExportError(f"bad relative time {text!r}: {err}") from None
    try:
        dt = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        raise ExportError(f"bad time {text!r}: expected now, -24h, 2026-11-22 or "
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
                raise ExportError(f"bad field {part!r}: expected field or measurement.field")
            if (m, f) not in out:
                out.append((m, f))
    if not out:
        raise ExportError("name at least one field (--field voltage_v or cell.voltage_v)")
    return tuple(out)


def make_selection(start: str, end: str, interval: str, aggregate: str,
                   fields: Sequence[str], devices: Sequence[str] = (),
                   now_ns: int | None = None) -> Selection:
    """Check and convert the command line's words into a `Selection`."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    start_ns, end_ns = parse_time(start, now_ns), parse_time(end, now_ns)
    if end_ns <= start_ns:
        raise ExportError(f"the range is empty: --to {end} is not after --from {start}")
    try:
        interval_ns = int(parse_duration(interval) * 1e9)
    except ValueError as err:
        raise ExportError(f"bad --interval: {err}") from None
    if interval_ns <= 0:
        raise ExportError("--interval must be longer than zero")
    if aggregate not in AGGREGATES:
        raise ExportError(f"--aggregate must be one of {', '.join(AGGREGATES)}")
    rows = (end_ns - start_ns) // interval_ns + 1
    if rows > MAX_ROWS:
        raise ExportError(f"{rows} rows: choose a longer --interval or a shorter range "
                          f"(at most {MAX_ROWS})")
    devs = tuple(d for spec in devices for d in spec.split(",") if d)
    return Selection(start_ns, end_ns, interval_ns, aggregate, parse_fields(fields), devs)


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
                progress: Progress | None = None) -> Iterator[Sample]:
    """Samples from the CSV sink's ``<dir>/<m>/<m>-YYYY-MM-DD.csv`` files in the range.

    Files are chosen by the day in their name, one day wider on each side because the
    sink may name days in local time; rows are then filtered by their UTC time.
    """
    if not os.path.isdir(directory):
        raise ExportError(f"no CSV folder {directory!r}")
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
            if not field_idx:
                if progress is not None:
                    progress.step()
                continue
            for row in reader:
                if len(row) < len(header):
                    row = row + [""] * (len(header) - len(row))
                try:
                    t = _rfc3339_ns(row[0])
                except ValueError:
                    continue  # a damaged row is skipped, never turned into a value
                if not sel.start_ns <= t < sel.end_ns:
                    continue
                tags = {header[i]: row[i] for i in tag_idx}
                if not sel.wants_device(tags.get("device", "")):
                    continue
                key = _series(tags)
                for i, name in field_idx:
                    if row[i] != "":
                        yield t, m, key, name, _value(row[i])
        if progress is not None:
            progress.step()


def _q(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influx_samples(url: str, database: str, sel: Selection, *, username: str = "",
                   password: str = "", token: str = "", timeout: float = 60.0,
                   progress: Progress | None = None) -> Iterator[Sample]:
    """Samples from InfluxDB's InfluxQL ``/query`` (1.x; 2.x/3.x v1 compatibility API).

    One query per measurement and UTC day, raw values with every tag (``GROUP BY *``).
    """
    chunks = day_chunks(sel)
    if progress is not None:
        progress.total = max(1, len(chunks) * len(sel.measurements))
    dev = ""
    if sel.devices:
        dev = " AND (" + " OR ".join(f'"device" = {_lit(d)}' for d in sel.devices) + ")"
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    elif username:
        import base64

        cred = base64.b64encode(f"{username}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {cred}"
    for m in sel.measurements:
        cols = ", ".join(_q(f) for f in sel.fields_of(m))
        for a, b in chunks:
            q = (f"SELECT {cols} FROM {_q(m)} WHERE time >= {a} AND time < {b}{dev} "
                 "GROUP BY *")
            body = urllib.parse.urlencode({"db": database, "q": q, "epoch": "ns"}).encode()
            req = urllib.request.Request(url.rstrip("/") + "/query", data=body,
                                         headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    answer = json.load(r)
            except urllib.error.HTTPError as err:
                raise ExportError(f"InfluxDB at {url} answered {err.code}: "
                                  f"{err.read()[:200].decode('utf-8', 'replace')}") from None
            except (urllib.error.URLError, OSError) as err:
                raise ExportError(f"cannot reach InfluxDB at {url}: {err}") from None
            for result in answer.get("results", []):
                if "error" in result:
                    raise ExportError(f"InfluxDB: {result['error']}")
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


def mysql_samples(connect: Callable[[], Any], sel: Selection, table_prefix: str = "",
                  progress: Progress | None = None) -> Iterator[Sample]:
    """Samples from the MySQL sink's tables (one per measurement, ``time`` in UTC)."""
    chunks = day_chunks(sel)
    if progress is not None:
        progress.total = max(1, len(chunks) * len(sel.measurements))
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            for m in sel.measurements:
                table = "`" + (table_prefix + m).replace("`", "``") + "`"
                cur.execute(f"SHOW COLUMNS FROM {table}")
                columns = [r[0] for r in cur.fetchall()]
                wanted = [f for f in sel.fields_of(m) if f in columns]
                tags = [c for c in columns if c in KNOWN_TAGS and c not in wanted]
                for a, b in chunks:
                    if progress is not None:
                        progress.step()
                    if not wanted:
                        continue
                    names = ", ".join("`" + c.replace("`", "``") + "`" for c in tags + wanted)
                    sql = (f"SELECT `time`, {names} FROM {table} WHERE `time` >= %s "
                           "AND `time` < %s")
                    args: list[Any] = [_utc(a), _utc(b)]
                    if sel.devices:
                        sql += " AND `device` IN (" + ", ".join(["%s"] * len(sel.devices)) + ")"
                        args += list(sel.devices)
                    cur.execute(sql + " ORDER BY `time`", args)
                    for row in cur.fetchall():
                        dt = row[0].replace(tzinfo=timezone.utc)
                        t = calendar.timegm(dt.utctimetuple()) * 10**9 + dt.microsecond * 1000
                        key = _series(dict(zip(tags, row[1:1 + len(tags)])))
                        for name, v in zip(wanted, row[1 + len(tags):]):
                            if v is not None:
                                yield t, m, key, name, v
    finally:
        conn.close()


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
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + "Z" if (
        ns % 10**9 == 0) else datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


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
    """Units and declared fields per measurement, from every installed device plugin."""
    from bmslogger.manager import build_registry

    units: dict[tuple[str, str], str] = {}
    declared: dict[str, set[str]] = {}
    for dtype in build_registry().devices.values():
        for spec in dtype.load_fields():
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


def _sink_options(args: Any, plugin: str) -> dict[str, Any]:
    """Options of the config's first sink of this plugin, for settings not given."""
    if not getattr(args, "config", None) and plugin == "csv" and getattr(args, "directory", None):
        return {}
    try:
        from bmslogger.config import load_config
        from bmslogger.manager import build_registry

        config = load_config(getattr(args, "config", None), build_registry())
    except BmsLoggerError:
        if getattr(args, "config", None):
            raise
        return {}
    for sc in config.sinks:
        if sc.plugin == plugin:
            return dict(sc.options)
    return {}


def samples_for_args(args: Any, sel: Selection, declared: dict[str, set[str]],
                     progress: Progress | None) -> Iterator[Sample]:
    """The sample stream `--source` names, with settings from the command line first and
    the configuration's sink second (so `export` reads where `run` writes)."""
    source = args.source
    opts = _sink_options(args, source)
    if source == "csv":
        directory = args.directory or opts.get("directory") or "data"
        return csv_samples(str(directory), sel, declared, progress)
    if source == "influxdb":
        version = int(opts.get("version", 1 if opts.get("database") else 2) or 2)
        url = args.url or opts.get("url") or "http://localhost:8086"
        if version == 1:
            database = args.database or opts.get("database") or "bmslogger"
            user, password = opts.get("username", ""), opts.get("password", "")
            token = ""
        else:
            database = args.database or opts.get("bucket") or "bmslogger"
            user = password = ""
            token = opts.get("token", "")
        user = args.username or user
        password = args.password if args.password is not None else password
        token = args.token or token
        return influx_samples(str(url), str(database), sel, username=str(user or ""),
                              password=str(password or ""), token=str(token or ""),
                              progress=progress)
    if source == "mysql":
        if not opts:
            raise ExportError("--source mysql reads the [sinks.mysql] table of the "
                              "configuration (-c FILE); none found")
        try:
            import pymysql
        except ImportError:
            raise ExportError("--source mysql needs PyMySQL: pip install "
                              "'bmslogger[mysql]'") from None

        def connect() -> Any:
            kw: dict[str, Any] = dict(
                user=str(opts.get("user", "bmslogger")), password=str(opts.get("password", "")),
                database=str(opts.get("database", "bmslogger")), charset="utf8mb4",
                connect_timeout=int(float(opts.get("timeout", 10))))
            if opts.get("unix_socket"):
                kw["unix_socket"] = str(opts["unix_socket"])
            else:
                kw["host"] = str(opts.get("host", "localhost"))
                kw["port"] = int(opts.get("port", 3306))
            try:
                return pymysql.connect(**kw)
            except pymysql.MySQLError as err:
                raise ExportError(f"cannot connect to MySQL: {err}") from None

        return mysql_samples(connect, sel, str(opts.get("table_prefix", "")), progress)
    raise ExportError(f"unknown source {source!r}")


def selection_from_args(args: Any) -> Selection:
    return make_selection(args.start, args.end, args.interval, args.aggregate,
                          args.field or [], args.device or [])


def build_table(args: Any) -> Table:
    """Read and aggregate what the command line selects; the bar shows when stderr is a
    terminal (or --progress), never with --no-progress."""
    sel = selection_from_args(args)
    units, declared = units_from_registry()
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = Progress(1, f"reading {args.source}", bool(show))
    table = aggregate(samples_for_args(args, sel, declared, progress), sel, units)
    progress.finish()
    if not table.cells:
        raise ExportError("no data for this selection (check --from/--to, --device, --field)")
    return table
