"""Every field and tag the logger writes to its own ``bmslogger`` measurement.

Why a declaration: device plugins list what they emit as `FieldSpec` tuples, and READMEs,
``describe``, ``export`` (units, checking ``--field``) and the Grafana dashboard test all
read those lists. The logger's health numbers are points too, written by the core rather
than by a plugin, so they are declared here in the same form. The test
``tests/test_selfmetrics.py`` runs a real poll and the pipeline's sink metrics and holds
this list and what is written equal in both directions.

Two kinds of ``bmslogger`` point exist:

* one per device poll (or scheduled task), tagged ``device``, ``plugin`` (and ``task``
  for a task other than the regular poll), written by `bmslogger.runtime.DevicePoller`;
* one per sink each time self-metrics are taken, tagged ``sink``, written by
  `bmslogger.runtime.LoggerService.sink_metrics` from `bmslogger.pipeline` statistics.

Counters of failures are named ``errors_<kind>``, one field per kind seen so far, so
they are declared by prefix (`PATTERNS`), not one by one: a kind appears only once it
has happened (``errors_timeout`` after the first silent poll). The kinds the core and
the built-in drivers count are listed in `ERROR_KINDS` for documentation.
"""

from __future__ import annotations

from bmslogger.model import FieldSpec

MEASUREMENT = "bmslogger"

#: tag -> meaning
TAGS: dict[str, str] = {
    "device": "the device name from logger.toml (per-device points)",
    "plugin": "the device plugin (per-device points)",
    "task": "a scheduled task other than the regular poll, e.g. daily (per-device points)",
    "sink": "the sink name from logger.toml (per-sink points)",
    "clock": "jumped or unsynced when the wall clock could not be trusted at that time",
}

#: fields of the point written after every poll of a device
DEVICE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(MEASUREMENT, "poll_duration_s", "float", "s",
              "wall time of the poll, lock wait and port opening included"),
    FieldSpec(MEASUREMENT, "poll_ok", "bool", "",
              "every request of the poll was answered with a valid frame"),
    FieldSpec(MEASUREMENT, "lock_wait_s", "float", "s",
              "time spent waiting for the port lock before the poll could start"),
    FieldSpec(MEASUREMENT, "requests", "int", "",
              "requests sent during this poll"),
    FieldSpec(MEASUREMENT, "answered", "int", "",
              "requests of this poll answered with a valid frame"),
    FieldSpec(MEASUREMENT, "polls", "int", "",
              "polls of this device since the logger started"),
    FieldSpec(MEASUREMENT, "polls_failed", "int", "",
              "polls since start that were not complete (some request unanswered)"),
    FieldSpec(MEASUREMENT, "request_retries", "int", "",
              "requests sent again after a failed try since start (the poll may still "
              "have succeeded); absent until the first"),
    FieldSpec(MEASUREMENT, "stale_bytes_dropped", "int", "B",
              "bytes found waiting on the line before a request and discarded, since "
              "start; absent until the first"),
)

#: driver counters that are not failures, and the field each is written as (every other
#: counter is a failure kind, written as ``errors_<kind>``)
COUNTER_FIELDS: dict[str, str] = {
    "retry": "request_retries",
    "stale_bytes": "stale_bytes_dropped",
}


def counter_field(kind: str) -> str:
    """The ``bmslogger`` field a driver counter is written as."""
    return COUNTER_FIELDS.get(kind) or f"errors_{kind}"

#: fields of the point written per sink (`LoggerService.sink_metrics`)
SINK_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(MEASUREMENT, "queued", "int", "",
              "points waiting for this sink, the batch being written included"),
    FieldSpec(MEASUREMENT, "in_flight", "int", "",
              "points in the batch being written now"),
    FieldSpec(MEASUREMENT, "written", "int", "",
              "points the sink stored since the logger started"),
    FieldSpec(MEASUREMENT, "batches", "int", "",
              "batches the sink stored since the logger started"),
    FieldSpec(MEASUREMENT, "retries", "int", "",
              "failed write or open attempts that will be tried again"),
    FieldSpec(MEASUREMENT, "dropped", "int", "",
              "points lost: queue or spool full, spool not writable, dead-letter file "
              "not writable"),
    FieldSpec(MEASUREMENT, "dead_lettered", "int", "",
              "points the sink refused for good, saved to the dead-letter file"),
    FieldSpec(MEASUREMENT, "spool_points", "int", "",
              "points in this sink's disk spool (0 without a spool)"),
    FieldSpec(MEASUREMENT, "spool_bytes", "int", "B",
              "size of this sink's disk spool (0 without a spool)"),
    FieldSpec(MEASUREMENT, "last_success", "float", "s",
              "Unix time of the last stored batch; absent until the first one"),
)

#: fields declared by prefix: ``errors_<kind>`` on per-device points
PATTERNS: tuple[FieldSpec, ...] = (
    FieldSpec(MEASUREMENT, "errors_*", "int", "",
              "failures of this device since start, one field per kind (see ERROR_KINDS); "
              "a field appears once its kind has happened"),
)

#: kind -> meaning, for ``errors_<kind>`` (the core's error types and built-in drivers)
ERROR_KINDS: dict[str, str] = {
    "protocol": "an answer that is not a valid frame (other protocol errors)",
    "checksum": "a whole frame with a wrong checksum or CRC",
    "framing": "bytes that cannot be a frame (bad start, impossible length, truncated)",
    "unexpected": "a valid frame that does not answer the request (stale, echo, wrong id)",
    "device_error": "the device answered with an error code",
    "transport": "the line failed (gone mid-read, refused)",
    "port_unavailable": "the port could not be opened (missing, unplugged)",
    "port_busy": "another program held the port lock past lock_timeout",
    "timeout": "the device stayed silent past every retry's deadline",
    "error": "another bmslogger error during the poll",
    "internal": "a bug in a driver (logged with its traceback)",
    "implausible": "a value outside physical limits, removed before writing "
                   "(bmslogger.quality)",
    "inconsistent": "a pack whose cells do not add up to its voltage (bmslogger.quality)",
}

#: every field with a fixed name
FIELDS: tuple[FieldSpec, ...] = DEVICE_FIELDS + SINK_FIELDS


def field_names() -> set[str]:
    """The fixed field names (patterns excluded)."""
    return {f.field for f in FIELDS}


def is_declared(name: str) -> bool:
    """Whether `name` is a declared field, by name or by pattern."""
    if name in field_names():
        return True
    return any(name.startswith(p.field[:-1]) and len(name) > len(p.field) - 1
               for p in PATTERNS if p.field.endswith("*"))


def unit_of(name: str) -> str:
    """The display unit of a field ("" when it has none or is not declared)."""
    for f in FIELDS + PATTERNS:
        if f.field == name:
            return f.unit
    return ""
