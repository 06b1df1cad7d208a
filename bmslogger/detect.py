"""``bmslogger detect``: which device answers on which serial port, as config to paste.

Every port (those given, or every serial port this machine has) is tried with every
device type's probe (`bmslogger.hookspecs.Probe`: one harmless read request per protocol
and baud rate), each under the port's lock, so a running daemon's polls are never mixed
with probe bytes. The first probe that gets a valid answer wins the port. Ports are
probed in parallel (they are separate lines); the probes of one port run in turn.

What was found is kept per port in ``<state_dir>/detect-cache.json``, and the next run
tries that plugin and baud rate first, so re-detecting a known installation costs one
request per port instead of one per protocol. Results are printed as ``[[devices.X]]``
tables naming the port by its stable form (``usb:VID:PID[:SERIAL]`` or the by-id link,
`bmslogger.ports`), which ``--write-config`` appends to a config file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from bmslogger.errors import BmsLoggerError
from bmslogger.model import DeviceConfig, DeviceType, PortSettings
from bmslogger.options import resolve_options

log = logging.getLogger(__name__)

CACHE_FILE = "detect-cache.json"
#: how long a probe waits for the port lock: a daemon's poll is usually over by then
PROBE_LOCK_TIMEOUT_S = 5.0


@dataclass
class Found:
    """A device that answered a probe: where, what, and the options that reached it."""

    port: str
    stable_port: str
    plugin: str
    baudrate: int
    options: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    default_baudrate: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "stable_port": self.stable_port, "plugin": self.plugin,
                "baudrate": self.baudrate, "options": dict(self.options), "about": self.about}


def probe_device_config(dtype: DeviceType, transport: Any, settings: PortSettings,
                        **options: Any) -> DeviceConfig:
    """A `DeviceConfig` for a plugin's probe to build its driver with: no retries, the
    type's defaults for every option not given. For use inside `Probe` functions."""
    url = getattr(transport, "url", "") or "probe"
    return DeviceConfig(
        name=f"probe-{dtype.name}",
        plugin=dtype.name,
        port=url,
        interval_s=0.0,
        port_settings=settings,
        options=resolve_options(dtype.options, options),
        retries=0,
    )


# --- stable port names --------------------------------------------------------------------


def stable_port(port: str, known: Sequence[Any] | None = None) -> str:
    """The name a config should use for `port`: the `bmslogger.ports` stable URL when the
    port is a listed serial port, else the spelling given (a by-id link, a symlink, a URL)."""
    if "://" in port or port.startswith("usb:"):
        return port
    if known is None:
        try:
            from bmslogger.ports import list_serial_ports

            known = list_serial_ports()
        except Exception:  # listing ports is a convenience here, never a failure
            known = []
    real = os.path.realpath(port)
    for info in known:
        if os.path.realpath(info.device) == real:
            return str(info.stable_url)
    return port


# --- the cache ------------------------------------------------------------------------------


def cache_path(state_dir: str) -> str:
    return os.path.join(state_dir, CACHE_FILE)


def load_cache(path: str) -> dict[str, dict[str, Any]]:
    """Port → last result; an unreadable cache is ignored (it only saves time)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) \
        else {}


def save_cache(path: str, cache: Mapping[str, Any]) -> None:
    """Replace the cache atomically; a read-only state folder only costs speed next time."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dict(cache), f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as err:
        log.warning("cannot write the detect cache %s: %s", path, err)


# --- probing --------------------------------------------------------------------------------


def run_probe(dtype: DeviceType, port: str, settings: PortSettings, lock_dir: str,
              lock_timeout_s: float = PROBE_LOCK_TIMEOUT_S) -> dict[str, Any] | None:
    """One probe of `dtype` on `port` at `settings`, under the port lock.

    Returns the probe's options or None (nothing answered, the port cannot be opened, or
    it stayed busy). Never raises for device or line trouble."""
    from bmslogger.locking import PortLock
    from bmslogger.runtime import _process_lock
    from bmslogger.transport import open_transport, port_identity

    probe = dtype.load_probe()
    if probe is None:
        return None
    try:
        identity = port_identity(port)
        with _process_lock(identity), PortLock(identity, lock_dir, lock_timeout_s), \
                open_transport(port, settings) as line:
            answer = probe(line, settings)
    except BmsLoggerError as err:
        log.debug("%s: %s probe at %d baud: %s", port, dtype.name, settings.baudrate, err)
        return None
    if answer is None:
        return None
    return dict(answer)


def _attempts(registry: Any, cached: Mapping[str, Any] | None, baudrates: Sequence[int],
              plugins: Sequence[str] | None) -> list[tuple[DeviceType, int]]:
    """(type, baud rate) in the order to try: the cached hit first, then every type at its
    own default rate, then at each extra rate asked for."""
    types = [t for n, t in sorted(registry.devices.items())
             if t.probe and (not plugins or n in plugins)]
    order: list[tuple[DeviceType, int]] = []
    if cached and cached.get("plugin") in registry.devices:
        dtype = registry.devices[cached["plugin"]]
        if dtype in types:
            order.append((dtype, int(cached.get("baudrate") or dtype.port_defaults.baudrate)))
    for dtype in types:
        for baud in (dtype.port_defaults.baudrate, *baudrates):
            if (dtype, baud) not in order:
                order.append((dtype, baud))
    return order


def detect_port(port: str, registry: Any, lock_dir: str,
                cache: Mapping[str, Any] | None = None, baudrates: Sequence[int] = (),
                plugins: Sequence[str] | None = None,
                known: Sequence[Any] | None = None) -> Found | None:
    """The first device type whose probe gets an answer on `port`, or None."""
    stable = stable_port(port, known)
    cached = (cache or {}).get(stable)
    for dtype, baud in _attempts(registry, cached, baudrates, plugins):
        settings = replace(dtype.port_defaults, baudrate=baud)
        started = time.monotonic()
        answer = run_probe(dtype, port, settings, lock_dir)
        log.debug("%s: %s at %d baud: %s (%.3f s)", port, dtype.name, baud,
                  "answered" if answer is not None else "no answer",
                  time.monotonic() - started)
        if answer is None:
            continue
        about = str(answer.pop("_about", ""))
        options = {k: v for k, v in answer.items() if not k.startswith("_")}
        return Found(port=port, stable_port=stable, plugin=dtype.name, baudrate=baud,
                     options=options, about=about,
                     default_baudrate=dtype.port_defaults.baudrate)
    return None


def detect(ports: Iterable[str], registry: Any, lock_dir: str, state_dir: str | None = None,
           baudrates: Sequence[int] = (), plugins: Sequence[str] | None = None,
           use_cache: bool = True) -> list[Found]:
    """Probe every port (in parallel); returns what answered, in the order of `ports`.

    With `state_dir`, the cache there is read first (unless `use_cache` is false) and
    updated with this run's findings (a port where nothing answered is forgotten)."""
    ports = list(dict.fromkeys(ports))
    path = cache_path(state_dir) if state_dir else None
    cache = load_cache(path) if path and use_cache else {}
    try:
        from bmslogger.ports import list_serial_ports

        known: Sequence[Any] = list_serial_ports()
    except Exception:
        known = []
    if not ports:
        return []
    with ThreadPoolExecutor(max(1, min(8, len(ports))), thread_name_prefix="detect") as pool:
        results = list(pool.map(
            lambda port: detect_port(port, registry, lock_dir, cache, baudrates, plugins,
                                     known),
            ports))
    if path:
        updated = dict(load_cache(path))
        for port, found in zip(ports, results):
            key = stable_port(port, known)
            if found is None:
                updated.pop(key, None)
            else:
                updated[key] = {**found.to_json(), "time": time.time()}
        save_cache(path, updated)
    return [f for f in results if f is not None]


# --- config blocks --------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string has JSON's escapes


def config_blocks(found: Sequence[Found], taken: Iterable[str] = ()) -> str:
    """``[[devices.X]]`` tables for everything found, with unique names (``daly-1``...)
    that avoid the names in `taken` (devices already in the target config)."""
    used = set(taken)
    blocks = []
    for f in found:
        n = 1
        while f"{f.plugin}-{n}" in used:
            n += 1
        name = f"{f.plugin}-{n}"
        used.add(name)
        lines = []
        if f.about:
            lines.append(f"# {f.about} (found on {f.port})")
        lines += [f"[[devices.{f.plugin}]]", f"name = {_toml_value(name)}",
                  f"port = {_toml_value(f.stable_port)}"]
        if f.default_baudrate and f.baudrate != f.default_baudrate:
            lines.append(f"baudrate = {f.baudrate}")
        lines += [f"{k} = {_toml_value(v)}" for k, v in f.options.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def _read_toml(path: str) -> dict[str, Any] | None:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, ValueError):
        return None


def logger_folders(path: str) -> tuple[str, str] | None:
    """(lock_dir or "", state_dir) from the ``[logger]`` table of a config that does not
    load yet (no devices), relative paths taken from the file's folder; None if unreadable."""
    data = _read_toml(path)
    if data is None:
        return None
    table = data.get("logger") if isinstance(data.get("logger"), dict) else {}
    base = os.path.dirname(os.path.abspath(path))

    def folder(key: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            return ""
        return os.path.join(base, os.path.expanduser(value))

    return folder("lock_dir", ""), folder("state_dir", "data/state")


def configured_names(path: str) -> set[str]:
    """Device names already in the config file at `path` (empty if none or unreadable)."""
    data = _read_toml(path)
    if data is None:
        return set()
    names = set()
    for tables in (data.get("devices") or {}).values():
        for table in tables if isinstance(tables, list) else ():
            if isinstance(table, dict) and isinstance(table.get("name"), str):
                names.add(table["name"])
    return names


def append_config(path: str, text: str) -> None:
    """Append `text` to the config file, separated by a blank line from what is there."""
    before = ""
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        before = f.read()
    sep = "" if not before else ("\n" if before.endswith("\n") else "\n\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write(sep + "# added by bmslogger detect\n" + text)

