"""``bmslogger detect``: which device answers on which serial port, as config to paste.

Every port (those given, or every serial port this machine has) is tried with every
device type's probe (`bmslogger.hookspecs.Probe`: one harmless read request per protocol
and baud rate), each under the port's lock, so a running daemon's polls are never mixed
with probe bytes. The first probe that gets a valid answer wins the port. Ports are
probed in parallel (they are separate lines); the probes of one port run in turn. A port
that cannot be used (it will not open, or another program holds its lock past
`PROBE_LOCK_TIMEOUT_S`) is given up at once with the reason, not tried once per protocol.

Several units on one RS-485 bus (REC BMS 1Q at addresses 1..16, Daly boards, TriStars
behind one adapter) are found with a bus scan (``--scan-bus``), off by default: most
installations have one device per adapter, and a scan asks up to 15 more addresses per
port, each costing a silent unit's full wire-time deadline (0.1-0.35 s). A probe takes
part when it is marked with `bus_probe` (the config option the address goes in, and
the addresses a unit can have); the scan then asks that plugin's other addresses at the
baud rate it answered at, and, when nothing answered at the first addresses, scans each
such plugin from the start of the range. PACE is deliberately not a bus probe: its master
answers for every pack of its group.

What was found is kept per port in ``<state_dir>/detect-cache.json``, and the next run
tries that plugin, baud rate and bus address first, so re-detecting a known installation
costs one request per port instead of one per protocol. Results are printed as ``[[devices.X]]``
tables naming the port by its stable form (``usb:VID:PID[:SERIAL]`` or the by-id link,
`bmslogger.ports`), which ``--write-config`` appends to a config file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from bmslogger.errors import BmsLoggerError, TransportError
from bmslogger.model import DeviceConfig, DeviceType, PortSettings
from bmslogger.options import resolve_options

log = logging.getLogger(__name__)

CACHE_FILE = "detect-cache.json"
#: how long a probe waits for the port lock: a daemon's poll is usually over by then
PROBE_LOCK_TIMEOUT_S = 5.0

F = TypeVar("F", bound=Callable[..., Any])


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


# --- units on a shared bus ------------------------------------------------------------------

#: addresses ``--scan-bus`` asks when no ``--addresses`` are given: every address the
#: REC BMS 1Q and Daly board numbers allow, and the low TriStar unit ids people use
DEFAULT_SCAN = tuple(range(1, 17))


@dataclass(frozen=True)
class Addressing:
    """How a probe reaches one unit of several on a shared bus: the config option the
    address goes in, every address a unit can have, and the one the plain probe asks."""

    option: str
    addresses: range
    default: int = 1


def bus_probe(option: str, addresses: range, default: int = 1) -> Callable[[F], F]:
    """Mark a `Probe` that accepts ``address=N`` (ask unit N instead of `default`).

    ``bmslogger detect --scan-bus`` then asks the other `addresses` of a port too, and
    proposes one device per answering unit with ``option = N``. A probe without the mark
    is only ever called as ``probe(transport, settings)``, so third-party probes written
    before this keep working."""
    def mark(function: F) -> F:
        function.addressing = Addressing(option, addresses, default)  # type: ignore[attr-defined]
        return function

    return mark


def addressing(dtype: DeviceType) -> Addressing | None:
    """The `Addressing` of the type's probe, or None when it talks to one unit per line."""
    probe = dtype.load_probe()
    found = getattr(probe, "addressing", None)
    return found if isinstance(found, Addressing) else None


def parse_addresses(text: str) -> tuple[int, ...]:
    """``"1-16"``, ``"1,3,5-8"`` → the addresses in order, without repeats.

    Raises ValueError with a message naming the bad part."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        low, dash, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ValueError(f"{part!r} is not an address or a range such as 1-16") from None
        if not 0 <= first <= last <= 255:
            raise ValueError(f"{part!r}: addresses go from 0 to 255, low to high")
        out.extend(range(first, last + 1))
    return tuple(dict.fromkeys(out))


# --- probing --------------------------------------------------------------------------------


@dataclass
class PortResult:
    """What one port gave: the devices that answered (several on a scanned bus), or why
    the port was skipped (it could not be opened, or another program held it)."""

    port: str
    stable_port: str
    found: list[Found] = field(default_factory=list)
    problem: str = ""


def run_probe(dtype: DeviceType, port: str, settings: PortSettings, lock_dir: str,
              lock_timeout_s: float | None = None,
              address: int | None = None) -> dict[str, Any] | None:
    """One probe of `dtype` on `port` at `settings`, under the port lock; with `address`,
    of the unit at that bus address (the probe must be marked with `bus_probe`).

    Returns the probe's options, or None when nothing of this type answered (device and
    protocol errors mean just that). Raises `TransportError` when the line itself is the
    trouble (cannot be opened, another program held its lock too long, it vanished):
    no other probe would do better there."""
    from bmslogger.locking import PortLock
    from bmslogger.runtime import _process_lock
    from bmslogger.transport import open_transport, port_identity

    probe = dtype.load_probe()
    if probe is None:
        return None
    wait = PROBE_LOCK_TIMEOUT_S if lock_timeout_s is None else lock_timeout_s
    extra = {} if address is None else {"address": address}
    try:
        identity = port_identity(port)
        with _process_lock(identity), PortLock(identity, lock_dir, wait), \
                open_transport(port, settings) as line:
            answer = probe(line, settings, **extra)
    except TransportError:
        raise
    except BmsLoggerError as err:
        log.debug("%s: %s probe at %d baud%s: %s", port, dtype.name, settings.baudrate,
                  f", address {address}" if address is not None else "", err)
        return None
    if answer is None:
        return None
    return dict(answer)


def _attempts(registry: Any, cached: Mapping[str, Any] | None, baudrates: Sequence[int],
              plugins: Sequence[str] | None) -> list[tuple[DeviceType, int, int | None]]:
    """(type, baud rate, bus address or None for the probe's own) in the order to try: the
    cached hit first (at its cached address), then every type at its own default rate,
    then at each extra rate asked for."""
    types = [t for n, t in sorted(registry.devices.items())
             if t.probe and (not plugins or n in plugins)]
    order: list[tuple[DeviceType, int, int | None]] = []
    if cached and cached.get("plugin") in registry.devices:
        dtype = registry.devices[cached["plugin"]]
        if dtype in types:
            baud = int(cached.get("baudrate") or dtype.port_defaults.baudrate)
            bus = addressing(dtype)
            options = cached.get("options") if isinstance(cached.get("options"), dict) else {}
            address = options.get(bus.option) if bus else None
            if not (isinstance(address, int) and bus and address in bus.addresses
                    and address != bus.default):
                address = None
            order.append((dtype, baud, address))
    for dtype in types:
        for baud in (dtype.port_defaults.baudrate, *baudrates):
            if not any(t is dtype and b == baud and a is None for t, b, a in order):
                order.append((dtype, baud, None))
    return order


class _Prober:
    """The probes of one port, each logged with its duration; builds `Found`s."""

    def __init__(self, port: str, stable: str, lock_dir: str,
                 lock_timeout_s: float | None) -> None:
        self.port, self.stable = port, stable
        self.lock_dir, self.lock_timeout_s = lock_dir, lock_timeout_s

    def __call__(self, dtype: DeviceType, baud: int, address: int | None = None
                 ) -> Found | None:
        settings = replace(dtype.port_defaults, baudrate=baud)
        started = time.monotonic()
        answer = run_probe(dtype, self.port, settings, self.lock_dir, self.lock_timeout_s,
                           address)
        log.debug("%s: %s at %d baud%s: %s (%.3f s)", self.port, dtype.name, baud,
                  f", address {address}" if address is not None else "",
                  "answered" if answer is not None else "no answer",
                  time.monotonic() - started)
        if answer is None:
            return None
        about = str(answer.pop("_about", ""))
        options = {k: v for k, v in answer.items() if not k.startswith("_")}
        return Found(port=self.port, stable_port=self.stable, plugin=dtype.name,
                     baudrate=baud, options=options, about=about,
                     default_baudrate=dtype.port_defaults.baudrate)


def _address_of(found: Found, bus: Addressing) -> int:
    value = found.options.get(bus.option, bus.default)
    return value if isinstance(value, int) else bus.default


def probe_port(port: str, registry: Any, lock_dir: str,
               cache: Mapping[str, Any] | None = None, baudrates: Sequence[int] = (),
               plugins: Sequence[str] | None = None, known: Sequence[Any] | None = None,
               scan: Sequence[int] | None = None,
               lock_timeout_s: float | None = None) -> PortResult:
    """Everything that answers on `port`.

    Without `scan`: the first device type whose probe answers (at its first address)
    wins the port, one device. With `scan` (bus addresses), a type whose probe is a
    `bus_probe` is also asked at each of those addresses it allows, at the baud rate it
    answered at, and every unit that answers is a device; if nothing answered at the first
    addresses, the bus may start further on, so each such type is scanned at each rate
    until one answers. A silent address is an absent unit, never an error. A line that
    cannot be used ends the port's probing, with the reason in `PortResult.problem`."""
    stable = stable_port(port, known)
    result = PortResult(port, stable)
    cached = (cache or {}).get(stable)
    ask = _Prober(port, stable, lock_dir, lock_timeout_s)
    asked: dict[tuple[str, int], set[int]] = {}  # addresses already asked, per (type, baud)

    def probe(dtype: DeviceType, baud: int, address: int | None) -> Found | None:
        bus = addressing(dtype)
        if bus is not None:
            asked.setdefault((dtype.name, baud), set()).add(
                bus.default if address is None else address)
        return ask(dtype, baud, address)

    try:
        first: Found | None = None
        for dtype, baud, address in _attempts(registry, cached, baudrates, plugins):
            first = probe(dtype, baud, address)
            if first is not None:
                break
        if first is None and scan is not None:
            for dtype, baud, _ in _attempts(registry, None, baudrates, plugins):
                bus = addressing(dtype)
                done = asked.get((dtype.name, baud), set())
                for n in scan if bus is not None else ():
                    if n in bus.addresses and n not in done:
                        first = probe(dtype, baud, n)
                        if first is not None:
                            break
                if first is not None:
                    break
        if first is None:
            return result
        result.found = [first]
        dtype = registry.devices[first.plugin]
        bus = addressing(dtype)
        if scan is not None and bus is not None:
            done = asked.get((dtype.name, first.baudrate), set())
            for n in scan:
                if n in bus.addresses and n not in done:
                    unit = probe(dtype, first.baudrate, n)
                    if unit is not None:
                        result.found.append(unit)
            result.found.sort(key=lambda f: _address_of(f, bus))
    except TransportError as err:
        result.problem = str(err)
        log.debug("%s: skipped: %s", port, err)
    return result


def detect_port(port: str, registry: Any, lock_dir: str,
                cache: Mapping[str, Any] | None = None, baudrates: Sequence[int] = (),
                plugins: Sequence[str] | None = None,
                known: Sequence[Any] | None = None) -> Found | None:
    """The first device type whose probe gets an answer on `port`, or None (also when the
    port cannot be used; `probe_port` says why)."""
    found = probe_port(port, registry, lock_dir, cache, baudrates, plugins, known).found
    return found[0] if found else None


def detect_ports(ports: Iterable[str], registry: Any, lock_dir: str,
                 state_dir: str | None = None, baudrates: Sequence[int] = (),
                 plugins: Sequence[str] | None = None, use_cache: bool = True,
                 scan: Sequence[int] | None = None,
                 lock_timeout_s: float | None = None) -> list[PortResult]:
    """`probe_port` on every port (in parallel: they are separate lines), in the order of
    `ports`.

    With `state_dir`, the cache there is read first (unless `use_cache` is false) and
    updated with this run's findings: a port where nothing answered is forgotten, a
    skipped port keeps what an earlier run found."""
    ports = list(dict.fromkeys(ports))
    path = cache_path(state_dir) if state_dir else None
    cache = load_cache(path) if path and use_cache else {}
    try:
        from bmslogger.ports import list_serial_ports

        known: Sequence[Any] = list_serial_ports()
    except Exception:  # listing ports is a convenience here, never a failure
        known = []
    if not ports:
        return []
    with ThreadPoolExecutor(max(1, min(8, len(ports))), thread_name_prefix="detect") as pool:
        results = list(pool.map(
            lambda port: probe_port(port, registry, lock_dir, cache, baudrates, plugins,
                                    known, scan, lock_timeout_s),
            ports))
    if path:
        updated = dict(load_cache(path))
        for result in results:
            if result.problem:
                continue
            if not result.found:
                updated.pop(result.stable_port, None)
            else:
                updated[result.stable_port] = {**result.found[0].to_json(), "time": time.time()}
        save_cache(path, updated)
    return results


def detect(ports: Iterable[str], registry: Any, lock_dir: str, state_dir: str | None = None,
           baudrates: Sequence[int] = (), plugins: Sequence[str] | None = None,
           use_cache: bool = True, scan: Sequence[int] | None = None,
           lock_timeout_s: float | None = None) -> list[Found]:
    """What answered on `ports` (see `detect_ports`), port by port, units by address."""
    results = detect_ports(ports, registry, lock_dir, state_dir, baudrates, plugins,
                           use_cache, scan, lock_timeout_s)
    return [f for r in results for f in r.found]


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

