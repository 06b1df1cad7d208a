"""MySQL / MariaDB sink: one table per measurement, created and widened on first use.

Driver: PyMySQL. It is pure Python (installs on a 32-bit Raspberry Pi without a compiler
or a platform wheel), small, talks to MySQL 5.7/8 and MariaDB alike, and its
``executemany`` turns a parameterised ``INSERT ... VALUES`` into one multi-row statement,
which is what makes batches fast. mysql-connector-python (what the EMUS seed used) is
several times larger and its pure-Python mode is slower, with nothing here needing it.

Schema, per measurement (table name = measurement, quoted, so any name works):

* ``time DATETIME(6)`` in UTC (microseconds; the session runs at ``+00:00``),
* one ``VARCHAR(100)`` column per tag, ``NOT NULL DEFAULT ''`` so a missing tag is ``''``
  and the unique key below stays exact (``device`` always exists),
* one column per field, typed by the value: ``DOUBLE`` (float), ``BIGINT`` (int),
  ``BOOLEAN`` (bool), ``TEXT`` (str); NULL where a point lacks the field,
* ``UNIQUE KEY series_time (device, <other tags sorted>, time)`` and
  ``KEY device_time (device, time)``.

A new tag or field is added with ``ALTER TABLE`` when it first appears (a new tag also
rebuilds the unique key). Rows are written with parameterised, batched
``INSERT ... ON DUPLICATE KEY UPDATE``: text travels as parameters, never inside the SQL,
so a device called ``x'); DROP TABLE battery; --`` is stored as exactly that text, and a
replayed point (the pipeline delivers at least once) overwrites its own row instead of
adding a second one. Names are quoted with backticks (a backtick doubled); a name longer
than MySQL's 64 characters, a tag value over 100 characters or a value the column cannot
hold exactly (strict SQL mode) refuses that point alone (`PointsRejected`, dead letter).

Connection trouble (refused, server gone away, lost during a query, too many
connections, deadlock or lock wait timeout) raises `SinkUnavailable`; the connection is
dropped and made again at the next write, so the sink reconnects after a server restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from bmslogger import hookimpl
from bmslogger.errors import PointsRejected, SinkError, SinkUnavailable
from bmslogger.model import Point, SinkConfig, SinkType
from bmslogger.options import Option
from bmslogger.sink import Sink

SAMPLE_CONFIG = """\
[sinks.mysql]
host = "localhost"
port = 3306
database = "bmslogger"
user = "bmslogger"
password_file = "/etc/bmslogger/mysql-password"
"""

SINK_TYPE = SinkType(
    name="mysql",
    title="MySQL or MariaDB, one table per measurement (PyMySQL)",
    options=(
        Option("host", "str", "localhost", help="server host name or address"),
        Option("port", "int", 3306, help="TCP port", min=1, max=65535),
        Option("unix_socket", "str", "", help="socket path instead of host/port"),
        Option("database", "str", "bmslogger", help="database (schema); must exist"),
        Option("user", "str", "bmslogger", help="user name"),
        Option("password", "str", "", help="password", secret=True),
        Option("table_prefix", "str", "", help="prefix of every table name"),
        Option("timeout", "duration", 10.0, help="connect, read and write timeout"),
        Option("ssl_ca", "str", "", help="CA file: use TLS and check the server"),
        Option("ssl_cert", "str", "", help="client certificate file"),
        Option("ssl_key", "str", "", help="client key file"),
    ),
    sink="bmslogger.sinks.mysql:MySQLSink",
    sample_config=SAMPLE_CONFIG,
)


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [SINK_TYPE]


TAG_LENGTH = 100
NAME_LENGTH = 64
#: server errors that mean "try again later"; anything else from the server is permanent
_RETRY_CODES = frozenset((
    1040, 1053, 1152, 1158, 1159, 1160, 1161, 1205, 1213, 2002, 2003, 2006, 2013, 2055,
    1927, 1290, 1836,
))
_EPOCH = datetime(1970, 1, 1)


def quote(name: str) -> str:
    """A MySQL identifier in backticks, a backtick inside doubled."""
    return "`" + name.replace("`", "``") + "`"


def sql_type(value: Any) -> str:
    """The column type a field value needs."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return "DOUBLE"
    return "TEXT"


def sql_time(time_ns: int) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` UTC for a DATETIME(6) column."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    dt = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S") + f".{rest // 1000:06d}"


class _Table:
    def __init__(self, name: str, tags: list[str], fields: dict[str, str]) -> None:
        self.name = name
        self.tags = tags  # device first, then the others in key order
        self.fields = fields  # name -> SQL type


class MySQLSink(Sink):
    """Writes batches to MySQL/MariaDB; see the module docstring."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        self._conn: Any = None
        self._tables: dict[str, _Table] = {}
        self.reconnects = 0
        self.statements = 0

    # --- connection --------------------------------------------------------------------

    def open(self) -> None:
        self._connect()

    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        try:
            import pymysql
        except ImportError as err:
            raise SinkError("the mysql sink needs PyMySQL: pip install 'bmslogger[mysql]'") \
                from err
        o = self.options
        timeout = float(o.get("timeout", 10.0))
        ssl = None
        if o.get("ssl_ca") or o.get("ssl_cert"):
            ssl = {k: v for k, v in (("ca", o.get("ssl_ca")), ("cert", o.get("ssl_cert")),
                                     ("key", o.get("ssl_key"))) if v}
        try:
            conn = pymysql.connect(
                host=str(o.get("host", "localhost")),
                port=int(o.get("port", 3306)),
                unix_socket=str(o.get("unix_socket", "")) or None,
                user=str(o.get("user", "bmslogger")),
                password=str(o.get("password", "")),
                database=str(o.get("database", "bmslogger")),
                charset="utf8mb4",
                autocommit=False,
                connect_timeout=timeout,
                read_timeout=timeout,
                write_timeout=timeout,
                ssl=ssl,
                init_command="SET time_zone = '+00:00', "
                             "sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
            )
        except pymysql.err.OperationalError as err:
            raise self._translate(err) from None
        except pymysql.err.MySQLError as err:
            raise SinkUnavailable(f"cannot connect to MySQL: {err}") from None
        if self._tables:
            self.reconnects += 1
        self._conn = conn
        self._tables.clear()  # the server may have changed while we were away
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self) -> None:
        self._drop_connection()

    def _translate(self, err: Exception) -> Exception:
        code = err.args[0] if err.args and isinstance(err.args[0], int) else 0
        text = err.args[1] if len(err.args) > 1 else str(err)
        if code in _RETRY_CODES or code == 0 or code >= 2000:
            self._drop_connection()
            return SinkUnavailable(f"MySQL error {code}: {text}")
        return SinkError(f"MySQL error {code}: {text}")

    # --- schema --------------------------------------------------------------------------

    def table_name(self, measurement: str) -> str:
        return str(self.options.get("table_prefix", "")) + measurement

    def _load_table(self, cur: Any, name: str) -> _Table | None:
        cur.execute(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (name,),
        )
        rows = cur.fetchall()
        if not rows:
            return None
        cur.execute(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = "
            "DATABASE() AND TABLE_NAME = %s AND INDEX_NAME = 'series_time' ORDER BY SEQ_IN_INDEX",
            (name,),
        )
        keyed = [r[0] for r in cur.fetchall() if r[0] != "time"]
        tags = keyed or ["device"]
        fields: dict[str, str] = {}
        for col, data_type, col_type in rows:
            if col == "time" or col in tags:
                continue
            dt = str(data_type).lower()
            fields[col] = ("BOOLEAN" if str(col_type).lower().startswith("tinyint(1)")
                           else {"double": "DOUBLE", "bigint": "BIGINT"}.get(dt, "TEXT"))
        return _Table(name, tags, fields)

    def _ensure_table(self, cur: Any, measurement: str, points: Sequence[Point]) -> _Table:
        name = self.table_name(measurement)
        table = self._tables.get(name) or self._load_table(cur, name)
        tags: list[str] = []
        fields: dict[str, str] = {}
        for p in points:
            for t in p.tags:
                if t not in tags:
                    tags.append(t)
            for f, v in p.fields.items():
                fields.setdefault(f, sql_type(v))
        if table is None:
            table = self._create(cur, name, tags, fields)
        else:
            table = self._widen(cur, table, tags, fields)
        self._tables[name] = table
        return table

    def _create(self, cur: Any, name: str, tags: list[str], fields: dict[str, str]) -> _Table:
        ordered = ["device", *sorted(t for t in tags if t != "device")]
        cols = ["`time` DATETIME(6) NOT NULL"]
        cols += [f"{quote(t)} VARCHAR({TAG_LENGTH}) NOT NULL DEFAULT ''" for t in ordered]
        cols += [f"{quote(f)} {typ} NULL" for f, typ in fields.items() if f not in ordered]
        key = ", ".join(quote(t) for t in ordered)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {quote(name)} ({', '.join(cols)}, "
            f"UNIQUE KEY series_time ({key}, `time`), KEY device_time (`device`, `time`)) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )
        self.log.info("sink %s: created table %s", self.config.name, name)
        return self._load_table(cur, name) or _Table(name, ordered, dict(fields))

    def _widen(self, cur: Any, table: _Table, tags: list[str], fields: dict[str, str]) -> _Table:
        new_tags = [t for t in tags if t not in table.tags]
        new_fields = {f: t for f, t in fields.items()
                      if f not in table.fields and f not in table.tags and f not in new_tags}
        if not new_tags and not new_fields:
            return table
        parts = [f"ADD COLUMN {quote(t)} VARCHAR({TAG_LENGTH}) NOT NULL DEFAULT ''"
                 for t in new_tags]
        parts += [f"ADD COLUMN {quote(f)} {typ} NULL" for f, typ in new_fields.items()]
        if new_tags:
            ordered = ["device", *sorted(t for t in table.tags + new_tags if t != "device")]
            key = ", ".join(quote(t) for t in ordered)
            parts += ["DROP INDEX series_time", f"ADD UNIQUE KEY series_time ({key}, `time`)"]
        cur.execute(f"ALTER TABLE {quote(table.name)} {', '.join(parts)}")
        self.log.info("sink %s: table %s gained %s", self.config.name, table.name,
                      ", ".join(new_tags + list(new_fields)))
        return self._load_table(cur, table.name) or table

    # --- writing -------------------------------------------------------------------------

    def _problem(self, p: Point, table: _Table | None = None) -> str | None:
        name = self.table_name(p.measurement)
        for n in (name, *p.tags, *p.fields):
            if not n or len(n) > NAME_LENGTH or n.endswith(" ") or "\x00" in n:
                return f"{n!r} cannot be a MySQL table or column name (1-{NAME_LENGTH} " \
                       "characters, no trailing space or NUL)"
        if not p.fields:
            return "a point without fields has nothing to store"
        if "time" in p.tags or "time" in p.fields or set(p.tags) & set(p.fields):
            return "a tag and a field (or the time column) share a name"
        for k, v in p.tags.items():
            if len(str(v)) > TAG_LENGTH:
                return f"tag {k} is longer than {TAG_LENGTH} characters"
        if table is not None:
            for f, v in p.fields.items():
                have = table.fields.get(f)
                if have is not None and not _fits(have, v):
                    return (f"field {f} is {sql_type(v)} here but column {table.name}.{f} is "
                            f"{have}")
        return None

    def write(self, points: Sequence[Point]) -> None:
        rejected: list[tuple[Point, str]] = []
        good: list[Point] = []
        for p in points:
            problem = self._problem(p)
            if problem:
                rejected.append((p, problem))
            else:
                good.append(p)
        by_table: dict[str, list[Point]] = {}
        for p in good:
            by_table.setdefault(p.measurement, []).append(p)
        conn = self._connect()
        import pymysql

        try:
            with conn.cursor() as cur:
                for measurement, group in by_table.items():
                    table = self._ensure_table(cur, measurement, group)
                    fits = []
                    for p in group:
                        problem = self._problem(p, table)
                        if problem:
                            rejected.append((p, problem))
                        else:
                            fits.append(p)
                    rejected.extend(self._insert_isolating(cur, table, fits))
            conn.commit()
        except pymysql.err.MySQLError as err:
            try:
                if self._conn is not None:
                    conn.rollback()
            except pymysql.err.MySQLError:
                pass
            raise self._translate(err) from None
        except (OSError, pymysql.err.InterfaceError) as err:
            self._drop_connection()
            raise SinkUnavailable(f"MySQL connection lost: {err}") from None
        if rejected:
            raise PointsRejected(rejected)

    def _insert_isolating(self, cur: Any, table: _Table, points: list[Point]
                          ) -> list[tuple[Point, str]]:
        """Insert; when the server refuses a row, split the group until the refused rows
        are alone (inside the transaction: a failed statement changes nothing)."""
        import pymysql

        if not points:
            return []
        try:
            self._insert(cur, table, points)
            return []
        except (pymysql.err.DataError, pymysql.err.IntegrityError,
                pymysql.err.ProgrammingError) as err:
            if isinstance(self._translate_no_drop(err), SinkUnavailable):
                raise
            if len(points) == 1:
                return [(points[0], f"MySQL refused the row: {err.args[-1]}")]
            half = len(points) // 2
            return (self._insert_isolating(cur, table, points[:half])
                    + self._insert_isolating(cur, table, points[half:]))

    @staticmethod
    def _translate_no_drop(err: Exception) -> Exception:
        code = err.args[0] if err.args and isinstance(err.args[0], int) else 0
        return SinkUnavailable("") if code in _RETRY_CODES else SinkError("")

    def _insert(self, cur: Any, table: _Table, points: list[Point]) -> None:
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Point]] = {}
        for p in points:
            groups.setdefault((tuple(p.tags), tuple(p.fields)), []).append(p)
        for (_, field_names), group in groups.items():
            fields = list(dict.fromkeys(field_names))
            cols = ["time", *table.tags, *fields]
            placeholders = ", ".join(["%s"] * len(cols))
            update = ", ".join(f"{quote(f)} = VALUES({quote(f)})" for f in fields)
            sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in cols)}) "
                   f"VALUES ({placeholders}) ON DUPLICATE KEY UPDATE {update}")
            tags = table.tags
            rows = [
                (sql_time(p.time_ns), *(str(p.tags.get(t, "")) for t in tags),
                 *(p.fields[f] for f in fields))
                for p in group
            ]
            cur.executemany(sql, rows)
            self.statements += 1


def _fits(column_type: str, value: Any) -> bool:
    kind = sql_type(value)
    if column_type == kind:
        return True
    # numbers widen as MySQL stores them exactly: bool into BIGINT/DOUBLE, int into DOUBLE
    # only while exact; text never goes into a numeric column, nor numbers into TEXT
    if column_type == "DOUBLE" and kind in ("BIGINT", "BOOLEAN"):
        return abs(int(value)) < 2**53
    return column_type == "BIGINT" and kind == "BOOLEAN"
