"""stdout sink: points as lines on standard output, for pipes, cron jobs and debugging.

``format = "json"`` writes one JSON object per point, exactly `Point.to_json()`
(measurement, tags, fields, RFC 3339 UTC time), ready for ``jq``. ``format = "line"``
writes InfluxDB line protocol with nanosecond timestamps, so the output can be piped to
``influx write`` or Telegraf. The line protocol comes from influxdb-client's own point
serialisation (escaping of spaces, commas, ``=`` and quotes, the ``i`` suffix of
integers) rather than escaping written here; the client is imported only when this
format is used, and is installed with ``pip install bmslogger[influxdb]``.

Line protocol has no way to write a field that is not a finite number, and a point
needs at least one field: non-finite float fields are left out by the client, and a
point left without fields is skipped with a warning.

Each batch is written as one string and the stream is flushed after it, so a reader on
the other end of a pipe sees whole lines as soon as a batch is out.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from bmslogger import hookimpl
from bmslogger.errors import SinkError, SinkUnavailable
from bmslogger.model import Point, SinkConfig, SinkType
from bmslogger.options import Option
from bmslogger.sink import Sink

SAMPLE_CONFIG = """\
[sinks.stdout]
# "json": one JSON object per point; "line": InfluxDB line protocol (needs bmslogger[influxdb])
format = "json"
"""

SINK_TYPE = SinkType(
    name="stdout",
    title="Standard output, as JSON lines or InfluxDB line protocol",
    options=(
        Option(
            "format",
            "choice",
            "json",
            help="json: one Point.to_json() object per line; line: InfluxDB line protocol.",
            choices=("json", "line"),
        ),
    ),
    sink="bmslogger.sinks.stdout:StdoutSink",
    sample_config=SAMPLE_CONFIG,
)


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [SINK_TYPE]


def to_json_line(point: Point) -> str:
    """One point as a JSON line (without the newline)."""
    return json.dumps(point.to_json())


class StdoutSink(Sink):
    """Writes each batch to `stream` (``sys.stdout`` unless given, for tests)."""

    def __init__(self, config: SinkConfig, stream: TextIO | None = None) -> None:
        super().__init__(config)
        self.format = self.options.get("format", "json")
        self._stream = stream
        self._lp: Any = None  # (influxdb_client.Point, WritePrecision) once opened
        self.skipped = 0

    @property
    def stream(self) -> TextIO:
        # looked up per write so a test's or the CLI's replaced sys.stdout is used
        return self._stream if self._stream is not None else sys.stdout

    def open(self) -> None:
        if self.format == "line" and self._lp is None:
            try:
                from influxdb_client import Point as LinePoint
                from influxdb_client import WritePrecision
            except ImportError as err:
                raise SinkError(
                    "the stdout sink's line format needs influxdb-client: "
                    "pip install 'bmslogger[influxdb]'"
                ) from err
            self._lp = (LinePoint, WritePrecision.NS)

    def to_line_protocol(self, point: Point) -> str:
        """One point as InfluxDB line protocol, by influxdb-client's serialiser; ``""``
        when the point has no field line protocol can carry."""
        if self._lp is None:
            self.open()
        line_point, precision = self._lp
        lp = line_point(point.measurement)
        for key, value in point.tags.items():
            lp.tag(key, value)
        for key, value in point.fields.items():
            lp.field(key, value)
        lp.time(point.time_ns, precision)
        return lp.to_line_protocol()

    def write(self, points: Sequence[Point]) -> None:
        lines = []
        for p in points:
            if self.format == "line":
                line = self.to_line_protocol(p)
                if not line:
                    self.skipped += 1
                    self.log.warning(
                        "sink %s: point %r at %d has no field line protocol can carry; skipped",
                        self.config.name,
                        p.measurement,
                        p.time_ns,
                    )
                    continue
            else:
                line = to_json_line(p)
            lines.append(line + "\n")
        if not lines:
            return
        stream = self.stream
        try:
            stream.write("".join(lines))
            stream.flush()
        except UnicodeEncodeError as err:
            # the whole text is encoded before anything is written, so nothing went out
            raise SinkError(
                f"standard output ({getattr(stream, 'encoding', '?')}) cannot show this "
                f"batch: {err}; run with PYTHONIOENCODING=utf-8"
            ) from err
        except (OSError, ValueError) as err:  # ValueError: write to a closed stream
            raise SinkUnavailable(f"cannot write to standard output: {err}") from err

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError) as err:
            raise SinkUnavailable(f"cannot flush standard output: {err}") from err
