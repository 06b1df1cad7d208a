"""The plugin manager: built-ins and third-party plugins, found one way.

Every plugin, built-in or not, is an entry point in the ``bmslogger`` group; importing
it registers its hook implementations. Plugin modules are light (they describe types and
point at their heavy parts by name), so loading all of them costs little. The factory
returns a fresh manager each call so tests stay isolated.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import pluggy

from bmslogger import hookspecs
from bmslogger.errors import PluginError
from bmslogger.model import DeviceType, SinkType

GROUP = "bmslogger"


def _entry_points() -> list:
    from importlib.metadata import entry_points

    if sys.version_info >= (3, 10):
        return list(entry_points(group=GROUP))
    return list(entry_points().get(GROUP, []))  # pragma: no cover - Python 3.9


@dataclass
class Registry:
    """Device and sink types by name, plus the manager that produced them."""

    pm: pluggy.PluginManager
    devices: dict[str, DeviceType]
    sinks: dict[str, SinkType]
    sources: dict[str, str]

    def device(self, name: str) -> DeviceType:
        try:
            return self.devices[name]
        except KeyError:
            known = ", ".join(sorted(self.devices)) or "none"
            raise PluginError(f"unknown device plugin {name!r} (installed: {known})") from None


def get_plugin_manager(blocked: Iterable[str] = (), autoload: bool = True) -> pluggy.PluginManager:
    """A new manager with every entry point in the ``bmslogger`` group registered.

    blocked: entry-point names not to load. autoload=False (or the environment variable
    ``BMSLOGGER_DISABLE_PLUGIN_AUTOLOAD``) registers nothing, for tests that add plugins
    by hand.
    """
    pm = pluggy.PluginManager("bmslogger")
    pm.add_hookspecs(hookspecs)
    blocked = set(blocked)
    for name in blocked:
        pm.set_blocked(name)
    if autoload and not os.environ.get("BMSLOGGER_DISABLE_PLUGIN_AUTOLOAD"):
        for ep in sorted(_entry_points(), key=lambda e: e.name):
            if ep.name in blocked or pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as err:  # a broken third-party plugin must not hide the cause
                raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {err}") from err
            try:
                pm.register(module, name=ep.name)
            except pluggy.PluginValidationError as err:
                raise PluginError(f"plugin {ep.name!r}: {err}") from err
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise PluginError(str(err)) from err
    return pm


def build_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Collect device and sink types from every registered plugin; refuse duplicates."""
    pm = pm if pm is not None else get_plugin_manager()
    devices: dict[str, DeviceType] = {}
    sinks: dict[str, SinkType] = {}
    sources: dict[str, str] = {}
    for impl in pm.hook.register_device_types.get_hookimpls():
        for dtype in impl.function() or ():
            if dtype.name in devices:
                raise PluginError(
                    f"device type {dtype.name!r} registered by both "
                    f"{sources['device:' + dtype.name]!r} and {impl.plugin_name!r}"
                )
            devices[dtype.name] = dtype
            sources["device:" + dtype.name] = impl.plugin_name
    for impl in pm.hook.register_sink_types.get_hookimpls():
        for stype in impl.function() or ():
            if stype.name in sinks:
                raise PluginError(
                    f"sink type {stype.name!r} registered by both "
                    f"{sources['sink:' + stype.name]!r} and {impl.plugin_name!r}"
                )
            sinks[stype.name] = stype
            sources["sink:" + stype.name] = impl.plugin_name
    return Registry(pm=pm, devices=devices, sinks=sinks, sources=sources)
