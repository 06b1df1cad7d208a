"""Value types that cross layers: points, port settings, plugin descriptions, poll results.

Everything here is plain data. Plugin descriptions (`DeviceType`, `SinkType`) name their
heavy parts (driver, simulator, sink class) as ``"module:attribute"`` strings that are
imported only when used, so listing plugins or checking a config never imports pyserial,
a database client or a codec that is not configured.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Union

from bmslogger.options import Option, Options

FieldValue = Union[float, int, bool, str]


def load_attr(spec: str) -> Any:
    """Import ``"package.module:Name"`` and return the attribute."""
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def rfc3339(time_ns: int) -> str:
    """UTC RFC 3339 with microseconds, e.g. ``2026-11-22T02:14:22.123456Z``."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    dt = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // 1000:06d}Z"


@dataclass(frozen=True)
class Point:
    """One time-series point: the unit every layer after the driver deals in.

    Field names carry their unit (``voltage_v``); a field keeps one Python type forever
    (float for measured values, int for counts, bool for flags, str for enums).
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int

    def to_json(self) -> dict[str, Any]:
        """The ``read --format json`` and stdout shape: measurement, tags, fields, time."""
        return {
            "measurement": self.measurement,
            "tags": dict(self.tags),
            "fields": dict(self.fields),
            "time": rfc3339(self.time_ns),
        }


@dataclass(frozen=True)
class PortSettings:
    """How to talk on the line: serial framing, plus the device's answer latency.

    `turnaround_s` is the typical time from the end of a request to the first answer
    byte. Drivers add it to the wire time when computing deadlines; simulators wait it
    before answering so timing is realistic.
    """

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    turnaround_s: float = 0.05

    @property
    def bits_per_char(self) -> float:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    def wire_time(self, nbytes: int) -> float:
        """Seconds `nbytes` take on the wire at this baud rate."""
        return nbytes * self.bits_per_char / self.baudrate


@dataclass(frozen=True)
class FieldSpec:
    """One field a device plugin emits, for READMEs, `describe`, and schema tests.

    type is ``float``, ``int``, ``bool`` or ``str``; unit is a display unit ("V", "%").
    """

    measurement: str
    field: str
    type: str
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """An extra scheduled job a device plugin offers besides its regular poll.

    TriStar logs daily values at 23:58: ``TaskSpec("daily", "58 23 * * *", ...)``. The
    user may change the cron expression per device (``tasks = { daily = "0 0 * * *" }``).
    """

    name: str
    default_cron: str
    description: str = ""


@dataclass(frozen=True)
class WriteSpec:
    """A command that changes the device. Refused unless the device allows writes."""

    name: str
    value: str
    description: str
    needs_confirmation: bool = False
    #: the value may be a secret (a password): logs and the audit log show ``***``
    secret_value: bool = False
    #: optional, for `describe`: the value's unit and the range the device accepts
    unit: str = ""
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class DeviceType:
    """What a device plugin contributes through `register_device_types`.

    driver / simulator / fields are ``"module:attribute"`` strings imported on first use.
    `address_option` names the option that tells devices apart on one shared bus, so
    the config check can refuse two devices claiming the same address on one port.
    """

    name: str
    title: str
    options: tuple[Option, ...]
    port_defaults: PortSettings
    driver: str
    simulator: str
    fields: str
    tasks: tuple[TaskSpec, ...] = ()
    writes: tuple[WriteSpec, ...] = ()
    address_option: str | None = None
    sample_config: str = ""
    readme: str = ""
    #: ``"module:function"`` of the plugin's probe for ``bmslogger detect`` ("" = none);
    #: the contract is documented in `bmslogger.hookspecs` (``probe``)
    probe: str = ""

    def load_driver(self) -> Any:
        return load_attr(self.driver)

    def load_probe(self) -> Any:
        """The probe function, or None when the plugin offers none."""
        return load_attr(self.probe) if self.probe else None

    def load_simulator(self) -> Any:
        return load_attr(self.simulator)

    def load_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(load_attr(self.fields))


@dataclass(frozen=True)
class SinkType:
    """What a sink plugin contributes through `register_sink_types`."""

    name: str
    title: str
    options: tuple[Option, ...]
    sink: str
    sample_config: str = ""

    def load_sink(self) -> Any:
        return load_attr(self.sink)


@dataclass(frozen=True)
class DeviceConfig:
    """One validated device table from logger.toml (or one `read` on the command line)."""

    name: str
    plugin: str
    port: str
    interval_s: float
    port_settings: PortSettings
    options: Options
    tasks: Mapping[str, str] = field(default_factory=dict)
    lock_timeout_s: float = 10.0
    timeout_s: float | None = None
    retries: int = 2
    enabled: bool = True
    #: JSON-lines file every write command is appended to ("" = no audit file)
    audit_log: str = ""


@dataclass(frozen=True)
class SinkConfig:
    """One validated sink table from logger.toml."""

    name: str
    plugin: str
    options: Options
    batch_size: int = 1000
    flush_interval_s: float = 5.0
    max_queue: int = 100_000
    enabled: bool = True


@dataclass
class PollResult:
    """What one poll (or task) produced: its points, and how much of it worked.

    requests counts the questions the driver asked; answered those that got a valid
    answer. `errors` holds one line per failed part. A poll that keeps what was read
    returns points *and* errors.
    """

    points: list[Point] = field(default_factory=list)
    requests: int = 0
    answered: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.requests > 0 and self.answered == self.requests and not self.errors

    @property
    def silent(self) -> bool:
        return self.answered == 0
