"""CSV sink: one file per measurement per day, with columns that never move.

Files go to ``<directory>/<measurement>/<measurement>-YYYY-MM-DD.csv`` (the day in UTC,
or in local time with ``timezone = "local"``; the ``time`` column is always UTC), so a day
of one kind of data opens directly in a spreadsheet or in ``pandas.read_csv``.

Format (UTF-8 without BOM, one header row, records end with ``\\n``):

* Columns: ``time`` (RFC 3339 UTC with microseconds), then the tags (``device`` and
  ``plugin`` first, the others sorted), then the fields sorted. Once a column is in a
  file it never moves; a tag or field seen for the first time is appended at the end
  by rewriting that file once (temp file + ``os.replace``), padding older rows with
  empty cells. A cell is empty when a point lacks that tag or field.
* Units: the header is exactly the tag and field names, and field names carry their
  unit by bmslogger's data model (``voltage_v``, ``current_a``, ``soc_pct``,
  ``temperature_c``, ``energy_wh``). That is the one way to show units that pandas and
  spreadsheets both read cleanly: a second "units" row would be read as data and turn
  every column into text, and decorated cells such as ``voltage [V]`` break
  ``df.voltage_v`` and repeat what the name already says. So there is no extra units
  option.
* Values: floats in Python's shortest round-trip form (``3.3``, ``-0.25``, ``1e-07``,
  ``nan``), integers as integers, booleans as ``true``/``false``, all unquoted; strings
  (tag values and text fields) always in double quotes with ``"`` doubled, so the text
  ``"123"`` stays apart from the number ``123`` in the file. A missing value is an
  empty, unquoted cell; an empty string is ``""``.
* Formula injection: a string that starts with ``=``, ``+``, ``-``, ``@``, tab, carriage
  return, or ``'`` is written with one ``'`` in front (``"'=SUM(A1)"``), so no spreadsheet
  runs it as a formula. To get the exact original back, strip one leading ``'`` from
  text cells (`unescape_text`); quoting ``'`` itself keeps that unambiguous. Numbers
  are not text and keep their minus sign.

Restarts and crashes: when a file is first used, its header is read back and reused, and
a partial last record left by a crash (no final newline, an open quote, or trailing NUL
bytes) is cut off, counted in `CsvSink.partial_records_cut` and logged; appends then
continue. A failed write (disk full, permissions) truncates every file it touched back
to where it was and raises `SinkUnavailable` naming the path, so the pipeline's retry
never duplicates rows.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from bmslogger import hookimpl
from bmslogger.errors import SinkError, SinkUnavailable
from bmslogger.model import FieldValue, Point, SinkConfig, SinkType, rfc3339
from bmslogger.options import Option
from bmslogger.sink import Sink

SAMPLE_CONFIG = """\
[sinks.csv]
# folder for <measurement>/<measurement>-YYYY-MM-DD.csv files
directory = "data"
# which calendar day a point's file belongs to: "utc" or "local" (the time column is UTC)
timezone = "utc"
# "always": fsync after every row; "batch": after every batch; "never": leave it to the OS
fsync = "batch"
"""

SINK_TYPE = SinkType(
    name="csv",
    title="CSV files, one per measurement per day",
    options=(
        Option("directory", "path", "data",
               help="Folder the measurement folders go in; relative to the config file."),
        Option(
            "timezone",
            "choice",
            "utc",
            help="Day boundary of the daily files: utc or local. Times stay UTC.",
            choices=("utc", "local"),
        ),
        Option(
            "fsync",
            "choice",
            "batch",
            help="When data is forced to disk: always (every row), batch, or never.",
            choices=("always", "batch", "never"),
        ),
    ),
    sink="bmslogger.sinks.csvfile:CsvSink",
    sample_config=SAMPLE_CONFIG,
)


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [SINK_TYPE]


#: The prefix that keeps spreadsheets from running text as a formula.
TEXT_PREFIX = "'"
_PREFIXED = ("=", "+", "-", "@", "\t", "\r", TEXT_PREFIX)
_FIRST_TAGS = ("device", "plugin")
_UNSAFE_PATH = re.compile(r"[^A-Za-z0-9_.-]")
_NEEDS_QUOTES = re.compile(r'[",\r\n]|^\s|\s$')
#: Open append handles kept between batches (one per measurement and day: five devices
#: write some 40); older ones are closed and reopened on demand. A batch may touch more:
#: they are only closed after it has been synced.
MAX_OPEN_FILES = 64


def escape_text(text: str) -> str:
    """Text as stored in a cell: with `TEXT_PREFIX` in front when it could start a
    spreadsheet formula (or starts with the prefix itself)."""
    return TEXT_PREFIX + text if text.startswith(_PREFIXED) else text


def unescape_text(cell: str) -> str:
    """The original text of a text cell read back with `csv.reader`."""
    return cell[1:] if cell.startswith(TEXT_PREFIX) else cell


def format_value(value: FieldValue) -> str:
    """One cell, ready for the file: numbers raw, text escaped and quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return '"' + escape_text(str(value)).replace('"', '""') + '"'


def _format_name(name: str) -> str:
    text = escape_text(name)
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _safe_path_part(name: str) -> str:
    safe = _UNSAFE_PATH.sub("_", name) or "_"
    return "_" + safe if safe.startswith(".") else safe


def _record_ends(data: bytes) -> Iterator[int]:
    """Offsets just after each whole record: a newline outside quotes. Every quote we
    write comes in pairs within one cell, so an even count means "outside"."""
    pos = 0
    quotes = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl == -1:
            return
        quotes += data.count(b'"', pos, nl)
        if quotes % 2 == 0:
            yield nl + 1
            quotes = 0
        pos = nl + 1


def _order_new_columns(have: set[str], points: Sequence[Point]) -> list[str]:
    tags: set[str] = set()
    fields: set[str] = set()
    for p in points:
        if have.issuperset(p.tags) and have.issuperset(p.fields):
            continue  # the usual case: nothing new
        tags.update(k for k in p.tags if k not in have)
        fields.update(k for k in p.fields if k not in have)
    fields -= tags
    first = [t for t in _FIRST_TAGS if t in tags]
    return first + sorted(tags - set(first)) + sorted(fields)


class _CsvFile:
    """What the sink knows of one daily file: its columns and its append handle."""

    def __init__(self, path: str, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        self.index = {name: i for i, name in enumerate(columns)}
        self.handle: Any = None

    def set_columns(self, columns: list[str]) -> None:
        self.columns = columns
        self.index = {name: i for i, name in enumerate(columns)}

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            try:
                handle.close()
            except OSError:
                pass


class CsvSink(Sink):
    """Appends points to daily CSV files; see the module docstring for the format."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        opts = self.options
        self.directory = os.path.expanduser(str(opts.get("directory", "data")))
        self.local_days = opts.get("timezone", "utc") == "local"
        self.fsync_mode = opts.get("fsync", "batch")
        self._files: OrderedDict[str, _CsvFile] = OrderedDict()
        self._path_cache: dict[tuple[str, int], str] = {}
        self.partial_records_cut = 0
        self.rows_written = 0
        self.files_rewritten = 0

    # --- Sink interface ------------------------------------------------------------------

    def open(self) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as err:
            raise _unavailable(self.directory, err) from err

    def write(self, points: Sequence[Point]) -> None:
        for p in points:
            _check_point(p)
        groups: dict[str, list[Point]] = {}
        for p in points:
            groups.setdefault(self.path_for(p), []).append(p)
        touched: dict[str, int] = {}
        current = self.directory
        try:
            for path, group in groups.items():
                current = path
                state = self._file(path)
                new = _order_new_columns(set(state.index), group)
                if new:
                    self._add_columns(state, new)
                handle = self._handle(state)
                touched.setdefault(path, handle.tell())
                self._append(state, handle, group)
            if self.fsync_mode == "batch":
                for path in touched:
                    current = path
                    handle = self._files[path].handle
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as err:
            self._roll_back(touched)
            raise _unavailable(current, err) from err
        except SinkError:
            self._roll_back(touched)
            raise
        self.rows_written += len(points)
        self._close_least_used()

    def flush(self) -> None:
        if self.fsync_mode == "never":
            return
        for state in self._files.values():
            if state.handle is not None:
                try:
                    state.handle.flush()
                    os.fsync(state.handle.fileno())
                except OSError as err:
                    raise _unavailable(state.path, err) from err

    def close(self) -> None:
        for state in self._files.values():
            state.close()
        self._files.clear()

    # --- files -----------------------------------------------------------------------------

    def path_for(self, point: Point) -> str:
        """The daily file a point belongs in."""
        seconds = point.time_ns // 1_000_000_000
        # every time zone's offset is a multiple of 15 minutes, so all seconds of one
        # quarter hour fall on the same local day; UTC days are cached whole
        slot = seconds // 900 if self.local_days else seconds // 86400
        key = (point.measurement, slot)
        path = self._path_cache.get(key)
        if path is None:
            tm = time.localtime(seconds) if self.local_days else time.gmtime(seconds)
            name = _safe_path_part(point.measurement)
            day = time.strftime("%Y-%m-%d", tm)
            path = os.path.join(self.directory, name, f"{name}-{day}.csv")
            if len(self._path_cache) > 4096:
                self._path_cache.clear()
            self._path_cache[key] = path
        return path

    def _file(self, path: str) -> _CsvFile:
        state = self._files.get(path)
        if state is not None:
            self._files.move_to_end(path)
            return state
        state = self._load(path)
        self._files[path] = state
        return state

    def _close_least_used(self) -> None:
        """Close the handles used longest ago beyond MAX_OPEN_FILES. Called between
        batches only: a file closed inside one would miss the batch's fsync."""
        while len(self._files) > MAX_OPEN_FILES:
            _, old = self._files.popitem(last=False)
            old.close()

    def _load(self, path: str) -> _CsvFile:
        """Read an existing file's header back and cut a partial last record; or create
        the folder for a new file."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return _CsvFile(path, [])
        ends = list(_record_ends(data))
        complete = ends[-1] if ends else 0
        if complete < len(data):
            self.partial_records_cut += 1
            self.log.warning(
                "sink %s: %s ends with a partial record (%d bytes, left by a crash); cut off",
                self.config.name,
                path,
                len(data) - complete,
            )
            os.truncate(path, complete)
        if not ends:
            return _CsvFile(path, [])
        columns = _parse_header(path, data[: ends[0]])
        return _CsvFile(path, columns)

    def _handle(self, state: _CsvFile) -> Any:
        if state.handle is None:
            state.handle = open(state.path, "ab")  # noqa: SIM115 - kept open across batches
        return state.handle

    def _add_columns(self, state: _CsvFile, new: list[str]) -> None:
        """Append columns: a new file gets its header; an existing one is rewritten once
        with the new names in its header and empty cells on every older row."""
        state.close()
        if not state.columns:
            columns = ["time", *new]
            header = (",".join(_format_name(c) for c in columns) + "\n").encode("utf-8")
            self._replace(state.path, [header])
            state.set_columns(columns)
            return
        with open(state.path, "rb") as f:
            data = f.read()
        pad = b"," * len(new)
        names = ",".join(_format_name(c) for c in new).encode("utf-8")
        chunks: list[bytes] = []
        start = 0
        for n, end in enumerate(_record_ends(data)):
            record = data[start:end]
            start = end
            eol = b"\r\n" if record.endswith(b"\r\n") else b"\n"
            body = record[: -len(eol)]
            chunks.append(body + b"," + names + eol if n == 0 else body + pad + eol)
        self._replace(state.path, chunks)
        self.files_rewritten += 1
        state.set_columns(state.columns + new)

    def _replace(self, path: str, chunks: list[bytes]) -> None:
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.writelines(chunks)
                f.flush()
                if self.fsync_mode != "never":
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if self.fsync_mode != "never":
            _fsync_dir(os.path.dirname(path))

    def _append(self, state: _CsvFile, handle: Any, points: Sequence[Point]) -> None:
        width = len(state.columns)
        index = state.index
        rows = []
        # a poll's points share one time stamp and a handful of tag values: format each
        # once per batch (this is most of the sink's cost)
        tag_cells: dict[str, str] = {}
        last_ns, last_time = None, ""
        for p in points:
            cells = [""] * width
            if p.time_ns != last_ns:
                last_ns, last_time = p.time_ns, rfc3339(p.time_ns)
            cells[0] = last_time
            for key, value in p.tags.items():
                cell = tag_cells.get(value)
                if cell is None:
                    cell = tag_cells[value] = format_value(str(value))
                cells[index[key]] = cell
            for key, value in p.fields.items():
                kind = type(value)
                if kind is float:
                    cells[index[key]] = repr(value)
                elif kind is bool:
                    cells[index[key]] = "true" if value else "false"
                else:
                    cells[index[key]] = format_value(value)
            rows.append((",".join(cells) + "\n").encode("utf-8", "backslashreplace"))
        if self.fsync_mode == "always":
            for row in rows:
                handle.write(row)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            handle.write(b"".join(rows))
            handle.flush()

    def _roll_back(self, touched: dict[str, int]) -> None:
        """Truncate every file this batch touched back to its size before the batch, so
        the retry writes each row once."""
        for path, offset in touched.items():
            state = self._files.pop(path, None)
            if state is not None:
                state.close()
            try:
                os.truncate(path, offset)
            except OSError as err:
                self.log.error(
                    "sink %s: could not undo a partial write to %s: %s",
                    self.config.name,
                    path,
                    err,
                )
        # files whose columns changed in this batch are re-read on the next write
        for path in list(self._files):
            if self._files[path].handle is None:
                del self._files[path]


def _check_point(p: Point) -> None:
    if "time" not in p.tags and "time" not in p.fields and p.tags.keys().isdisjoint(p.fields):
        return
    clash = set(p.tags) & set(p.fields)
    if clash or "time" in p.tags or "time" in p.fields:
        names = sorted(clash | ({"time"} & (set(p.tags) | set(p.fields))))
        raise SinkError(
            f"point {p.measurement!r} at {rfc3339(p.time_ns)} uses {', '.join(names)} "
            "as a column name twice (tag and field, or the time column)"
        )


def _parse_header(path: str, record: bytes) -> list[str]:
    try:
        row = next(csv.reader(io.StringIO(record.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, StopIteration, csv.Error):
        row = []
    columns = [unescape_text(c) for c in row]
    if not columns or columns[0] != "time" or len(set(columns)) != len(columns):
        raise SinkError(
            f"{path} is not a bmslogger CSV file (its header does not start with 'time'); "
            "move it away"
        )
    return columns


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unavailable(path: str, err: OSError) -> SinkUnavailable:
    reason = err.strerror or str(err)
    return SinkUnavailable(f"cannot write {path}: {reason}")
