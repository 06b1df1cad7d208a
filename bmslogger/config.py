"""Reading logger.toml: one pass that checks every key and reports every problem at once.

The configuration is the only place a user talks to the logger before it runs for months
unattended, so a mistake must be caught by ``check-config`` (and at start-up) with the file,
the key path in TOML terms (``devices.daly[1].board``) and what was expected, never later as
a traceback from a driver. Validation reads plugin declarations only (`DeviceType.options`,
`SinkType.options`): it imports no driver, simulator or sink, opens no port and connects to
no server.

Shape::

    [logger]                    # optional; every key has a default
    interval = "30s"
    [[devices.daly]]            # an array of tables per device type (one table also works)
    name = "house-bank"
    port = "/dev/ttyUSB0"
    board = 1                   # the plugin's own options
    [sinks.csv]                 # a table, or [[sinks.csv]] for several of one type
    directory = "data"

Secrets: any string may contain ``${VAR}`` (taken from the environment), and a plugin option
``x`` may be given as ``x_file = "/path"`` (the file's stripped contents). Values of options
declared secret, values read from files and values that came from the environment are never
echoed in error messages; secret and file-supplied values are masked in reprs and summaries.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bmslogger.errors import ConfigError, ConfigIssue
from bmslogger.model import DeviceConfig, DeviceType, SinkConfig, SinkType
from bmslogger.options import Option, OptionProblems, Options, resolve_options
from bmslogger.transport import parse_usb

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from bmslogger.manager import Registry

#: Environment variable naming the config file; checked before ./logger.toml.
ENV_VAR = "BMSLOGGER_CONFIG"
#: Looked up in the current directory.
LOCAL_CONFIG = "logger.toml"
#: The system-wide config of a packaged install.
SYSTEM_CONFIG = "/etc/bmslogger/logger.toml"
#: How messages name the config that ships inside the package.
EMBEDDED_NAME = "<embedded bmslogger/default.toml>"
#: Shared by every program on a Linux machine (FHS); see `LoggerSettings` for the fallback.
DEFAULT_LOCK_DIR = "/run/lock"

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOML_POS_RE = re.compile(r"\(at line (\d+), column (\d+)\)")
#: URL schemes pyserial's serial_for_url understands, plus the core's own sim:// and serial://.
_PORT_SCHEMES = (
    "alt", "cp2110", "hwgrep", "loop", "rfc2217", "serial", "sim", "socket", "spy",
    # opened by the driver itself (bmslogger.transport.DIRECT_SCHEMES): Modbus TCP units
    "modbus-tcp",
)
_PORT_EXPECTED = (
    "a device path (/dev/ttyUSB0, /dev/serial/by-id/...), usb:VID:PID[:SERIAL], "
    "socket://host:port, rfc2217://host:port, modbus-tcp://host[:port] or "
    "sim://PLUGIN?key=value"
)
_SECRET_HIDDEN = "the value is not shown because it is secret"


# --- declarations of the core keys ------------------------------------------------------
# Declared as Options so the same code that checks plugin tables checks these, and so
# documentation can be generated from them.

LOGGER_OPTIONS: tuple[Option, ...] = (
    Option("interval", "duration", 30.0, "time between polls of a device that sets none"),
    Option("lock_dir", "str", DEFAULT_LOCK_DIR, "folder of the per-port lock files"),
    Option("lock_timeout", "duration", 10.0, "longest wait for a port another program holds"),
    Option("state_dir", "str", "data/state", "folder for state kept across restarts"),
    Option("spool_dir", "str", "data/spool", "folder where points wait while a sink is down"),
    Option("spool_max_mb", "int", 512, "disk budget of each sink's spool in MiB; the oldest "
           "points go first when it is full", min=1),
    Option("spool_fsync", "str", "always", 'when spooled points are forced to disk: "always" '
           '(before a poll is acknowledged), a duration such as "2s" (at most that much is '
           'lost on a power cut) or "never"'),
    Option("log_level", "choice", "info", choices=("debug", "info", "warning", "error")),
    Option("log_file", "str", "", 'log file; "" logs to stderr (the journal under systemd)'),
    Option("timezone", "str", "local", 'time zone of cron tasks: "local" or an IANA name'),
    Option("tag_unsynced_clock", "bool", False, 'tag points taken while the kernel says the '
           'clock is not synchronised with clock = "unsynced"'),
    Option("poll_stall", "duration", None, "under systemd, a poll running this long stops "
           "the watchdog pets (the service is restarted); default three intervals of the "
           "device, at least 60 s"),
    Option("sink_stall", "duration", 180.0, "under systemd, a sink with points waiting "
           "that makes no attempt for this long stops the watchdog pets"),
)

_PORT_OPTION = Option("port", "str", help=_PORT_EXPECTED)

DEVICE_OPTIONS: tuple[Option, ...] = (
    Option("name", "str", help="unique name; the `device` tag of every point"),
    _PORT_OPTION,
    Option("interval", "duration", None, "time between polls; default [logger] interval"),
    Option("enabled", "bool", True, "false keeps the table but never polls the device"),
    Option("timeout", "duration", None, "answer deadline; default from wire time"),
    Option("retries", "int", 2, "extra attempts per request", min=0, max=100),
    Option("lock_timeout", "duration", None, "default [logger] lock_timeout"),
    Option("baudrate", "int", None, "line speed; default the plugin's", min=50, max=4_000_000),
    Option("bytesize", "choice", None, choices=(5, 6, 7, 8)),
    Option("parity", "choice", None, choices=("N", "E", "O", "M", "S")),
    Option("stopbits", "choice", None, choices=(1, 1.5, 2)),
    Option("turnaround", "duration", None, "device answer latency; default the plugin's",
           max=10.0),
)
#: Besides DEVICE_OPTIONS, a device table may hold `tasks` (a table of cron expressions).
DEVICE_TASKS_KEY = "tasks"

SINK_OPTIONS: tuple[Option, ...] = (
    Option("name", "str", None, "unique name; default the sink type"),
    Option("enabled", "bool", True, "false keeps the table but writes nothing"),
    Option("batch_size", "int", 1000, "most points per write", min=1, max=1_000_000),
    Option("flush_interval", "duration", 5.0, "longest a point waits for its batch"),
    Option("max_queue", "int", 100_000, "points held in memory before spooling", min=1),
)

_TOP_LEVEL = ("devices", "logger", "sinks")


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggerSettings:
    """The ``[logger]`` table, with relative paths made absolute.

    Paths are resolved against the config file's folder (the embedded default resolves
    against the current directory), so a daemon started from ``/`` and a cron job started
    from ``$HOME`` with the same file use the same folders.

    Lock folder: the port locks only work if every program that may touch a port (the
    daemon, a cron ``once``, a ``read`` typed by hand) takes its lock file in the *same*
    folder. The default, ``/run/lock``, is shared by the whole machine. Where it does not
    exist or this user cannot write it, the locks go to ``<state_dir>/locks`` instead: a
    folder of this installation (and so, in practice, of the user running it) that is the
    same for every program using this config file. It is deliberately not keyed by user id,
    process or temp folder, which would hand each program a private folder and let two of
    them interleave bytes on one line. The choice depends on who runs the program, so a
    root daemon (``/run/lock``) and a non-root cron job (fallback) could still end up apart:
    `lock_dir_note` says when the fallback was taken, the CLI logs it, and the cure is to
    set ``lock_dir`` explicitly to a folder every such user can write. A ``lock_dir`` set in
    the file is never replaced.
    """

    interval_s: float = 30.0
    lock_dir: str = DEFAULT_LOCK_DIR
    lock_dir_note: str = ""
    lock_timeout_s: float = 10.0
    state_dir: str = "data/state"
    spool_dir: str = "data/spool"
    spool_max_bytes: int = 512 * 1024 * 1024
    spool_fsync: str | float = "always"
    log_level: str = "info"
    log_file: str = ""
    timezone: str = "local"
    tag_unsynced_clock: bool = False
    poll_stall_s: float | None = None
    sink_stall_s: float = 180.0
    base_dir: str = ""


@dataclass(frozen=True)
class LoggerConfig:
    """A whole validated configuration. Disabled devices and sinks are kept (with
    ``enabled=False``) so ``check-config`` can list them; the runner skips them."""

    file: str
    settings: LoggerSettings
    devices: tuple[DeviceConfig, ...]
    sinks: tuple[SinkConfig, ...]

    def device(self, name: str) -> DeviceConfig:
        """The device called `name`; KeyError naming the configured ones otherwise."""
        for dev in self.devices:
            if dev.name == name:
                return dev
        known = ", ".join(d.name for d in self.devices) or "none"
        raise KeyError(f"no device {name!r} in {self.file} (configured: {known})")


@dataclass(frozen=True)
class ConfigSource:
    """Which configuration was chosen, and why, so the CLI can say so in its first line.

    `path` is None for the embedded default; `origin` is ``"--config"``,
    ``"$BMSLOGGER_CONFIG"``, ``"./logger.toml"``, ``"/etc/bmslogger/logger.toml"`` or
    ``"embedded default"``.
    """

    file: str
    origin: str
    path: str | None

    @property
    def base_dir(self) -> str:
        """The folder relative paths in this config are resolved against."""
        return os.path.dirname(self.path) if self.path else os.getcwd()

    def read_text(self) -> str:
        """The TOML text; ConfigError if it cannot be read as UTF-8."""
        if self.path is None:
            from importlib import resources

            return resources.files("bmslogger").joinpath("default.toml").read_text("utf-8")
        try:
            with open(self.path, encoding="utf-8") as fh:
                return fh.read()
        except UnicodeDecodeError as err:
            raise _one_issue(self.file, "", f"is not UTF-8 text ({err.reason})") from None
        except OSError as err:
            raise _one_issue(self.file, "", f"cannot read: {err.strerror or err}") from None


def _one_issue(file: str, path: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(file, path, message)])


def find_config(path: str | None = None) -> ConfigSource:
    """Choose the configuration: `path` if given, else ``$BMSLOGGER_CONFIG``, else
    ``./logger.toml``, else ``/etc/bmslogger/logger.toml``, else the embedded default.

    A file named explicitly (argument or environment) that does not exist is a
    ConfigError rather than a silent fall-through: the user meant that file.
    """
    explicit: list[tuple[str, str]] = []
    if path is not None:
        explicit.append((path, "--config"))
    elif os.environ.get(ENV_VAR):
        explicit.append((os.environ[ENV_VAR], "$" + ENV_VAR))
    for candidate, origin in explicit:
        full = os.path.abspath(os.path.expanduser(candidate))
        if not os.path.exists(full):
            raise _one_issue(full, "", f"no such file (named by {origin})")
        if os.path.isdir(full):
            raise _one_issue(full, "", f"is a folder, not a file (named by {origin})")
        return ConfigSource(full, origin, full)
    for candidate, origin in ((LOCAL_CONFIG, "./" + LOCAL_CONFIG), (SYSTEM_CONFIG, SYSTEM_CONFIG)):
        full = os.path.abspath(candidate)
        if os.path.isfile(full):
            return ConfigSource(full, origin, full)
    return ConfigSource(EMBEDDED_NAME, "embedded default", None)


def load_config(
    path: str | None, registry: Registry, *, need_devices: bool = True
) -> LoggerConfig:
    """Find (see `find_config`), read and validate the configuration; ConfigError with
    every issue if anything is wrong. `need_devices=False` accepts a file without devices
    (for `export`, which only reads a sink's settings)."""
    source = find_config(path)
    return parse_config(source.read_text(), source.file, registry, base_dir=source.base_dir,
                        need_devices=need_devices)


def parse_config(
    text: str, file: str, registry: Registry, *, base_dir: str | None = None,
    need_devices: bool = True,
) -> LoggerConfig:
    """Validate TOML `text` against the core schema and the registry's plugin declarations.

    `file` names the text in messages. Relative paths resolve against `base_dir`, by default
    the folder of `file` (or the current directory when `file` is a ``<name>``). Raises
    ConfigError carrying every issue found.
    """
    if base_dir is None:
        base_dir = os.getcwd() if file.startswith("<") else os.path.dirname(os.path.abspath(file))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _one_issue(file, "", _toml_error(err)) from None
    return _Checker(file, base_dir, registry, need_devices).run(data)


def _toml_error(err: Exception) -> str:
    text = str(err)
    line = getattr(err, "lineno", None)
    col = getattr(err, "colno", None)
    m = _TOML_POS_RE.search(text)
    if line is None and m:
        line, col = int(m.group(1)), int(m.group(2))
    reason = getattr(err, "msg", None) or _TOML_POS_RE.sub("", text).strip()
    where = f" at line {line}, column {col}" if line is not None else ""
    return f"invalid TOML{where}: {reason}"


# --- the checker ----------------------------------------------------------------------------


def _key(path: str, key: str) -> str:
    """``path.key`` with `key` quoted the TOML way when it is not a bare key."""
    part = key if _BARE_KEY_RE.match(key) else json.dumps(key)
    return f"{path}.{part}" if path else part


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fmt_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


@dataclass
class _Table:
    """One table on its way through the checks: values after ``${VAR}`` and ``*_file``."""

    path: str
    values: dict[str, Any]
    hidden: set[str] = field(default_factory=set)  # never echo these values in messages
    from_file: set[str] = field(default_factory=set)  # mask these in reprs too
    failed: set[str] = field(default_factory=set)  # already reported; suppress "missing"


@dataclass
class _Device:
    config: DeviceConfig
    path: str
    address_path: str | None


class _Checker:
    """Walks the parsed TOML once, collecting issues instead of stopping at the first."""

    def __init__(
        self, file: str, base_dir: str, registry: Registry, need_devices: bool = True
    ) -> None:
        self.file = file
        self.need_devices = need_devices
        self.base_dir = base_dir
        self.registry = registry
        self.issues: list[ConfigIssue] = []
        # (name, key path) of every device and sink table with a usable name, valid or not,
        # so a duplicate is reported even when one of the pair has other mistakes
        self.names: dict[str, list[tuple[str, str]]] = {"device": [], "sink": []}

    def issue(self, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, path, message))

    # -- whole file -------------------------------------------------------------------

    def run(self, data: dict[str, Any]) -> LoggerConfig:
        for key in data:
            if key not in _TOP_LEVEL:
                logger_key = difflib.get_close_matches(key, [o.name for o in LOGGER_OPTIONS], 1)
                hint = (f" ({logger_key[0]} belongs in the [logger] table)" if logger_key
                        else _suggest(key, _TOP_LEVEL))
                self.issue(_key("", key), "unknown top-level key; expected only [logger], "
                           f"[[devices.<type>]] and [sinks.<type>] tables{hint}")
        settings = self.logger(data.get("logger", {}))
        devices = self.devices(data.get("devices", {}), settings)
        sinks = self.sinks(data.get("sinks", {}))
        if self.issues:
            raise ConfigError(self.issues)
        return LoggerConfig(self.file, settings, tuple(d.config for d in devices), tuple(sinks))

    # -- helpers shared by every table -------------------------------------------------------

    def expand(self, value: Any, path: str, used: list[str]) -> tuple[Any, bool]:
        """``${VAR}`` substituted in every string inside `value`; (value, ok)."""
        if isinstance(value, str):
            missing = [n for n in _ENV_RE.findall(value) if n not in os.environ]
            for name in dict.fromkeys(missing):
                self.issue(path, f"environment variable {name} is not set")
            if missing:
                return value, False
            used.extend(_ENV_RE.findall(value))
            return _ENV_RE.sub(lambda m: os.environ[m.group(1)], value), True
        if isinstance(value, list):
            results = [self.expand(v, f"{path}[{i}]", used) for i, v in enumerate(value)]
            return [v for v, _ in results], all(ok for _, ok in results)
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            ok = True
            for k, v in value.items():
                out[k], good = self.expand(v, _key(path, k), used)
                ok = ok and good
            return out, ok
        return value, True

    def prepare(self, raw: dict[str, Any], path: str, declared: set[str]) -> _Table:
        """Substitute ``${VAR}``, then turn ``x_file`` keys into ``x`` values."""
        table = _Table(path, {})
        for key, value in raw.items():
            used: list[str] = []
            value, ok = self.expand(value, _key(path, key), used)
            if used:
                table.hidden.add(key)
            if not ok:
                table.failed.add(key)
                continue
            base = key[: -len("_file")]
            if key.endswith("_file") and key not in declared and base in declared:
                self.read_secret_file(table, key, base, value, raw)
            else:
                table.values[key] = value
        return table

    def read_secret_file(
        self, table: _Table, key: str, base: str, value: Any, raw: Mapping[str, Any]
    ) -> None:
        kpath = _key(table.path, key)
        table.failed.add(base)
        if base in raw:
            self.issue(kpath, f"give either {base} or {key}, not both")
            return
        if not isinstance(value, str) or not value:
            self.issue(kpath, f"expected the path of a file holding {base}")
            return
        file_path = self.path(value)
        try:
            with open(file_path, encoding="utf-8") as fh:
                content = fh.read().strip()
        except UnicodeDecodeError:
            self.issue(kpath, f"{file_path} is not UTF-8 text")
            return
        except OSError as err:
            self.issue(kpath, f"cannot read {file_path}: {err.strerror or err}")
            return
        if not content:
            self.issue(kpath, f"{file_path} is empty")
            return
        table.values[base] = content
        table.hidden.add(base)
        table.from_file.add(base)
        table.failed.discard(base)

    def resolve(
        self, declared: tuple[Option, ...], table: _Table, keys: Iterable[str] | None = None,
        known: Iterable[str] = (), kind: str = "",
    ) -> Options:
        """`resolve_options` on the part of `table` named by `keys`, issues with paths."""
        raw = table.values if keys is None else {k: table.values[k] for k in keys}
        problems = OptionProblems()
        opts = resolve_options(declared, raw, problems=problems)
        by_name = {o.name: o for o in declared}
        all_known = sorted(set(known) | set(by_name))
        for key, message in problems.items:
            opt = by_name.get(key)
            if opt is None:
                message = (f"unknown key{_suggest(key, all_known)}; {kind} accepts: "
                           + ", ".join(all_known))
            elif message.startswith("missing"):
                if key in table.failed:
                    continue
                if opt is _PORT_OPTION:
                    message = f"missing; expected {_PORT_EXPECTED}"
            elif key in table.hidden or opt.secret:
                message = f"expected {opt.expected()}; {_SECRET_HIDDEN}"
            self.issue(_key(table.path, key), message)
        # a key that failed keeps a placeholder so later checks can go on; the result is
        # thrown away anyway because an issue was recorded
        values = {o.name: None if o.required else o.default for o in declared}
        values.update(opts)
        for o in declared:  # plugin paths are relative to the config file, like [logger]'s
            if o.kind == "path" and isinstance(values.get(o.name), str) and values[o.name]:
                values[o.name] = self.path(values[o.name])
        secret = {o.name for o in declared if o.secret} | (table.from_file & set(by_name))
        return Options(values, secret=secret)

    def path(self, value: str) -> str:
        """`value` as an absolute path, relative ones against the config's folder."""
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(value)))

    def positive(self, table: _Table, key: str, value: float | None) -> bool:
        if value is not None and value <= 0 and key not in table.failed:
            self.issue(_key(table.path, key),
                       f'expected a duration above zero such as "30s", got {value:g} s')
            return False
        return True

    # -- [logger] --------------------------------------------------------------------------

    def logger(self, raw: Any) -> LoggerSettings:
        if not isinstance(raw, dict):
            self.issue("logger", "expected a table: [logger]")
            raw = {}
        if isinstance(raw.get("log_level"), str):
            raw = {**raw, "log_level": raw["log_level"].lower()}
        table = self.prepare(raw, "logger", {o.name for o in LOGGER_OPTIONS})
        opts = self.resolve(LOGGER_OPTIONS, table, kind="[logger]")
        interval = opts["interval"]
        if not self.positive(table, "interval", interval):
            interval = LoggerSettings.interval_s
        poll_stall = opts["poll_stall"]
        if not self.positive(table, "poll_stall", poll_stall):
            poll_stall = None
        sink_stall = opts["sink_stall"]
        if not self.positive(table, "sink_stall", sink_stall):
            sink_stall = LoggerSettings.sink_stall_s
        tz = opts["timezone"]
        if tz != "local" and "timezone" not in table.failed:
            self.check_timezone(tz)
        state_dir = self.folder("state_dir", opts["state_dir"])
        spool_fsync: str | float = "always"
        if "spool_fsync" not in table.failed:
            from bmslogger.spool import parse_fsync

            try:
                spool_fsync = parse_fsync(opts["spool_fsync"])
            except ValueError as err:
                self.issue("logger.spool_fsync", str(err))
        if "lock_dir" in table.values:
            lock_dir, note = self.folder("lock_dir", opts["lock_dir"]), ""
        else:
            lock_dir, note = default_lock_dir(state_dir)
        return LoggerSettings(
            interval_s=interval,
            lock_dir=lock_dir,
            lock_dir_note=note,
            lock_timeout_s=opts["lock_timeout"],
            state_dir=state_dir,
            spool_dir=self.folder("spool_dir", opts["spool_dir"]),
            spool_max_bytes=int(opts["spool_max_mb"]) * 1024 * 1024,
            spool_fsync=spool_fsync,
            log_level=opts["log_level"],
            log_file=self.path(opts["log_file"]) if opts["log_file"] else "",
            timezone=tz,
            tag_unsynced_clock=bool(opts["tag_unsynced_clock"]),
            poll_stall_s=poll_stall,
            sink_stall_s=sink_stall,
            base_dir=self.base_dir,
        )

    def folder(self, key: str, value: str) -> str:
        """`value` made absolute; an issue if something other than a folder is there.
        Missing folders are fine: they are created when first needed."""
        full = self.path(value)
        if os.path.exists(full) and not os.path.isdir(full):
            self.issue(_key("logger", key), f"{full} exists and is not a folder")
        return full

    def check_timezone(self, name: str) -> None:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.issue("logger.timezone",
                       f'expected "local" or an IANA time zone such as "Europe/Berlin", '
                       f"got {name!r}")

    # -- devices --------------------------------------------------------------------------

    def entries(self, raw: Any, section: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(type, path, table) for every ``[section.type]`` or ``[[section.type]]`` table."""
        if not isinstance(raw, dict):
            self.issue(section, f"expected tables such as [[{section}.<type>]]")
            return []
        out = []
        for type_name, value in raw.items():
            tpath = _key(section, type_name)
            if isinstance(value, dict):
                out.append((type_name, tpath, value))
            elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
                out.extend((type_name, f"{tpath}[{i}]", v) for i, v in enumerate(value))
            else:
                self.issue(tpath, f"expected a table [{tpath}] or an array of tables "
                                  f"[[{tpath}]]")
        return out

    def unknown_type(self, path: str, kind: str, name: str, installed: Iterable[str]) -> None:
        names = sorted(installed)
        self.issue(path, f"unknown {kind} type {name!r}{_suggest(name, names)}; installed: "
                         + (", ".join(names) or "none"))

    def devices(self, raw: Any, settings: LoggerSettings) -> list[_Device]:
        shape_issues = len(self.issues)
        entries = self.entries(raw, "devices")
        shape_ok = len(self.issues) == shape_issues
        found: list[_Device] = []
        reported: set[str] = set()
        for type_name, path, table in entries:
            dtype = self.registry.devices.get(type_name)
            if dtype is None:
                if type_name not in reported:
                    reported.add(type_name)
                    self.unknown_type(path.split("[")[0], "device", type_name,
                                      self.registry.devices)
                continue
            dev = self.device(dtype, path, table, settings)
            if dev is not None:
                found.append(dev)
        if not entries and shape_ok and self.need_devices:
            types = ", ".join(sorted(self.registry.devices)) or "none"
            example = next(iter(sorted(self.registry.devices)), "<type>")
            self.issue("devices", "no devices configured; add a table such as "
                       f'[[devices.{example}]] with name = "bms" and port = "/dev/ttyUSB0" '
                       f"(installed device types: {types})")
        elif found and self.need_devices and not any(d.config.enabled for d in found):
            self.issue("devices", "every device has enabled = false; nothing would be polled")
        self.check_names("device")
        self.check_buses(found)
        return found

    def device(
        self, dtype: DeviceType, path: str, raw: dict[str, Any], settings: LoggerSettings
    ) -> _Device | None:
        common = {o.name for o in DEVICE_OPTIONS}
        own = {o.name for o in dtype.options}
        before = len(self.issues)
        table = self.prepare(raw, path, common | own | {DEVICE_TASKS_KEY})
        tasks_raw = table.values.pop(DEVICE_TASKS_KEY, None)
        base = self.resolve(DEVICE_OPTIONS, table, [k for k in table.values if k in common])
        opts = self.resolve(dtype.options, table, [k for k in table.values if k not in common],
                            known=common | {DEVICE_TASKS_KEY}, kind=f"a {dtype.name} device")
        name, port = base["name"], base["port"]
        if name is not None:
            self.check_name(_key(path, "name"), name, "device")
        if port is not None:
            problem = self.port_problem(port, dtype)
            if problem:
                self.issue(_key(path, "port"), problem)
        interval = base["interval"]
        self.positive(table, "interval", interval)
        self.positive(table, "timeout", base["timeout"])
        tasks = self.tasks(dtype, _key(path, DEVICE_TASKS_KEY), tasks_raw)
        if len(self.issues) > before:
            return None
        port_settings = dtype.port_defaults
        for key, attr in (("baudrate", "baudrate"), ("bytesize", "bytesize"),
                          ("parity", "parity"), ("stopbits", "stopbits"),
                          ("turnaround", "turnaround_s")):
            if base[key] is not None:
                port_settings = replace(port_settings, **{attr: base[key]})
        lock_timeout = base["lock_timeout"]
        config = DeviceConfig(
            name=name,
            plugin=dtype.name,
            port=port,
            interval_s=interval if interval is not None else settings.interval_s,
            port_settings=port_settings,
            options=opts,
            tasks=tasks,
            lock_timeout_s=lock_timeout if lock_timeout is not None else settings.lock_timeout_s,
            timeout_s=base["timeout"],
            retries=base["retries"],
            enabled=base["enabled"],
            audit_log=os.path.join(settings.state_dir, "audit.log"),
        )
        address = _key(path, dtype.address_option) if dtype.address_option else None
        return _Device(config, path, address)

    def port_problem(self, port: str, dtype: DeviceType) -> str | None:
        """Why `port` cannot name a line, or None. Only the spelling is checked: an adapter
        that is unplugged now may be back by the time the logger polls."""
        if not port.strip():
            return f"expected {_PORT_EXPECTED}, got an empty string"
        if port.startswith("usb:"):
            if parse_usb(port) is None:
                return f"expected usb:VID:PID or usb:VID:PID:SERIAL with 4-digit hex ids, " \
                       f"got {port!r}"
            return None
        if "://" not in port:
            return None
        scheme, _, rest = port.partition("://")
        if scheme not in _PORT_SCHEMES:
            return (f"unknown port scheme {scheme + '://'!r}{_suggest(scheme, _PORT_SCHEMES)}; "
                    f"expected {_PORT_EXPECTED}")
        if scheme in ("socket", "rfc2217"):
            host, sep, number = rest.split("?", 1)[0].rpartition(":")
            if not sep or not host or not number.isdigit() or not 0 < int(number) < 65536:
                return f"expected {scheme}://host:port with a port from 1 to 65535, got {port!r}"
        if scheme == "modbus-tcp":
            host, sep, number = rest.split("?", 1)[0].rstrip("/").rpartition(":")
            if not sep:
                host, number = number, "502"
            if not host or not number.isdigit() or not 0 < int(number) < 65536:
                return ("expected modbus-tcp://host or modbus-tcp://host:port with a port "
                        f"from 1 to 65535, got {port!r}")
        if scheme == "sim":
            plugin = rest.split("?", 1)[0].strip("/")
            if plugin not in self.registry.devices:
                installed = ", ".join(sorted(self.registry.devices)) or "none"
                hint = _suggest(plugin, self.registry.devices)
                return f"sim://{plugin} is no installed device type{hint}; installed: {installed}"
            if plugin != dtype.name:
                return (f"sim://{plugin} simulates a {plugin} device, but this table "
                        f"configures a {dtype.name} device; use sim://{dtype.name}")
        return None

    def tasks(self, dtype: DeviceType, path: str, raw: Any) -> dict[str, str]:
        """Every task the plugin offers with its cron expression, minus those set to "off"."""
        crons = {t.name: t.default_cron for t in dtype.tasks}
        if raw is None:
            return crons
        offered = ", ".join(sorted(crons)) or "none"
        if not isinstance(raw, dict):
            self.issue(path, f'expected a table such as {{ daily = "58 23 * * *" }} '
                             f"(tasks of {dtype.name}: {offered})")
            return crons
        for name, cron in raw.items():
            tpath = _key(path, name)
            if name not in crons:
                self.issue(tpath, f"unknown task{_suggest(name, crons)}; tasks of {dtype.name}: "
                                  f"{offered}")
            elif not isinstance(cron, str):
                self.issue(tpath, 'expected a cron expression such as "58 23 * * *" or "off"')
            elif cron.strip().lower() == "off":
                del crons[name]
            else:
                problem = _cron_problem(cron)
                if problem:
                    self.issue(tpath, f'expected a cron expression such as "58 23 * * *" '
                                      f"(minute hour day month weekday) or \"off\": {problem}")
                else:
                    crons[name] = cron.strip()
        return crons

    def check_names(self, kind: str) -> None:
        first: dict[str, str] = {}
        for name, path in self.names[kind]:
            if name in first:
                self.issue(path, f"duplicate {kind} name {name!r} (also used at {first[name]}); "
                                 f"every {kind} needs its own name")
            else:
                first[name] = path

    def check_name(self, path: str, name: str, kind: str) -> None:
        if _NAME_RE.match(name):
            self.names[kind].append((name, path))
        else:
            self.issue(path, f"expected letters, digits, '_', '.' or '-' only, got {name!r}")

    def check_buses(self, devices: list[_Device]) -> None:
        """Refuse two enabled devices answering to one address on one line: their answers
        would collide on the wire, and the data of one would be filed under the other."""
        by_port: dict[str, list[_Device]] = {}
        for dev in devices:
            if dev.config.enabled:
                by_port.setdefault(_port_identity(dev.config.port), []).append(dev)
        for group in by_port.values():
            for i, dev in enumerate(group):
                for other in group[:i]:
                    problem = self.clash(dev, other)
                    if problem:
                        self.issue(*problem)
                        break

    def clash(self, dev: _Device, other: _Device) -> tuple[str, str] | None:
        a, b = dev.config, other.config
        a_type, b_type = self.registry.devices[a.plugin], self.registry.devices[b.plugin]
        shared = f"device {a.name!r} shares port {a.port!r} with device {b.name!r} ({other.path})"
        for t in (a_type, b_type):
            if t.address_option is None:
                return (_key(dev.path, "port"),
                        f"{shared}, but {t.name} devices have no bus address, so each needs "
                        "a port of its own")
        if a.plugin == b.plugin and dev.address_path:
            key = a_type.address_option
            value = a.options[key]
            if value == b.options[key]:
                return (dev.address_path,
                        f"{shared}, and both answer to {key} = {value!r}; give each device on "
                        f"one bus its own {key}")
        return None

    # -- sinks ------------------------------------------------------------------------------

    def sinks(self, raw: Any) -> list[SinkConfig]:
        shape_issues = len(self.issues)
        entries = self.entries(raw, "sinks")
        shape_ok = len(self.issues) == shape_issues
        found: list[tuple[SinkConfig, str]] = []
        reported: set[str] = set()
        for type_name, path, table in entries:
            stype = self.registry.sinks.get(type_name)
            if stype is None:
                if type_name not in reported:
                    reported.add(type_name)
                    self.unknown_type(path.split("[")[0], "sink", type_name,
                                      self.registry.sinks)
                continue
            sink = self.sink(stype, path, table)
            if sink is not None:
                found.append((sink, path))
        if not entries and shape_ok and self.need_devices:
            types = ", ".join(sorted(self.registry.sinks)) or "none"
            example = "csv" if "csv" in self.registry.sinks else next(
                iter(sorted(self.registry.sinks)), "<type>")
            self.issue("sinks", f"no sinks configured, so readings would go nowhere; add a "
                                f"table such as [sinks.{example}] (installed sink types: {types})")
        elif found and not any(s.enabled for s, _ in found):
            self.issue("sinks", "every sink has enabled = false; readings would go nowhere")
        self.check_names("sink")
        return [s for s, _ in found]

    def sink(self, stype: SinkType, path: str, raw: dict[str, Any]) -> SinkConfig | None:
        common = {o.name for o in SINK_OPTIONS}
        before = len(self.issues)
        table = self.prepare(raw, path, common | {o.name for o in stype.options})
        base = self.resolve(SINK_OPTIONS, table, [k for k in table.values if k in common])
        opts = self.resolve(stype.options, table, [k for k in table.values if k not in common],
                            known=common, kind=f"a {stype.name} sink")
        name = base["name"] if base["name"] is not None else stype.name
        if "name" not in table.failed:
            self.check_name(_key(path, "name"), name, "sink")
        self.positive(table, "flush_interval", base["flush_interval"])
        if base["max_queue"] < base["batch_size"]:
            self.issue(_key(path, "max_queue"),
                       f"expected at least batch_size ({base['batch_size']}), "
                       f"got {base['max_queue']}")
        if len(self.issues) > before:
            return None
        return SinkConfig(
            name=name,
            plugin=stype.name,
            options=opts,
            batch_size=base["batch_size"],
            flush_interval_s=base["flush_interval"],
            max_queue=base["max_queue"],
            enabled=base["enabled"],
        )


def default_lock_dir(state_dir: str) -> tuple[str, str]:
    """(lock folder, note) when the config sets no lock_dir; see `LoggerSettings`."""
    default = DEFAULT_LOCK_DIR
    if os.path.isdir(default) and os.access(default, os.W_OK | os.X_OK):
        return default, ""
    fallback = os.path.join(state_dir, "locks")
    why = "does not exist" if not os.path.isdir(default) else "is not writable by this user"
    note = (f"{default} {why}, so port locks go to {fallback}; programs sharing a port "
            "must use the same folder: set [logger] lock_dir if they run as other users")
    return fallback, note


def _cron_problem(cron: str) -> str | None:
    # imported here: APScheduler is only needed when a config actually has tasks
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(cron, timezone=datetime.timezone.utc)
    except ValueError as err:
        return str(err)
    return None


def _port_identity(port: str) -> str:
    """One spelling per line: symlinks such as /dev/serial/by-id/... resolved, URL schemes
    and hosts lower-cased. Ports that do not exist now are compared as written."""
    if port.startswith("usb:"):
        return port.lower()
    if "://" in port:
        scheme, _, rest = port.partition("://")
        if scheme.lower() in ("socket", "rfc2217", "modbus-tcp"):
            rest = rest.lower()
        return f"{scheme.lower()}://{rest}"
    if os.path.exists(port):
        return os.path.realpath(port)
    return port


# --- summary ---------------------------------------------------------------------------------


def _fmt_options(opts: Options) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in opts.masked().items())


def describe_config(cfg: LoggerConfig) -> str:
    """What ``check-config`` prints: where the settings came from, every device with its
    plugin, port and interval, every sink. Secret values are shown as ``***``."""
    s = cfg.settings
    lines = [
        f"config: {cfg.file}",
        f"logger: interval {_fmt_duration(s.interval_s)}, log level {s.log_level}, "
        f"log to {s.log_file or 'stderr'}, timezone {s.timezone}",
        f"  lock dir {s.lock_dir} (wait up to {_fmt_duration(s.lock_timeout_s)}), "
        f"state dir {s.state_dir}, spool dir {s.spool_dir}",
        f"  spool up to {s.spool_max_bytes // (1024 * 1024)} MiB per sink, fsync "
        f"{s.spool_fsync if isinstance(s.spool_fsync, str) else _fmt_duration(s.spool_fsync)}",
        "  systemd watchdog: a poll stalls after "
        + (_fmt_duration(s.poll_stall_s) if s.poll_stall_s else "three intervals (>= 60s)")
        + f", a sink after {_fmt_duration(s.sink_stall_s)}; points before clock sync "
        + ("tagged" if s.tag_unsynced_clock else "not tagged"),
    ]
    if s.lock_dir_note:
        lines.append(f"  note: {s.lock_dir_note}")
    lines.append(f"devices ({len(cfg.devices)}):")
    for d in cfg.devices:
        state = "" if d.enabled else " [disabled]"
        p = d.port_settings
        lines.append(f"  {d.name}: {d.plugin} on {d.port}, every {_fmt_duration(d.interval_s)}"
                     f"{state}")
        lines.append(f"    line {p.baudrate} {p.bytesize}{p.parity}{p.stopbits:g}, retries "
                     f"{d.retries}" + (f", timeout {_fmt_duration(d.timeout_s)}"
                                       if d.timeout_s is not None else ""))
        if d.tasks:
            lines.append("    tasks: " + ", ".join(f"{k} at {v!r}" for k, v in d.tasks.items()))
        if d.options:
            lines.append(f"    options: {_fmt_options(d.options)}")
    lines.append(f"sinks ({len(cfg.sinks)}):")
    for k in cfg.sinks:
        state = "" if k.enabled else " [disabled]"
        lines.append(f"  {k.name}: {k.plugin}, batches of up to {k.batch_size} every "
                     f"{_fmt_duration(k.flush_interval_s)}, queue {k.max_queue}{state}")
        if k.options:
            lines.append(f"    options: {_fmt_options(k.options)}")
    return "\n".join(lines)
