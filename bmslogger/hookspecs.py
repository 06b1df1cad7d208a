"""Hook specifications: everything a bmslogger plugin can contribute, documented here.

Built-in devices and sinks implement these exactly as a third-party package does, and
are found the same way: through the ``bmslogger`` entry-point group. A plugin is a module
with functions marked ``@bmslogger.hookimpl`` whose names match the specs below; it may
implement any subset, and may accept fewer arguments than a spec offers (pluggy passes
only the ones asked for).

A third-party device package needs one line in its ``pyproject.toml``::

    [project.entry-points.bmslogger]
    mydevice = "mypackage.mydevice"

Hooks are called with keyword arguments only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from bmslogger.model import DeviceConfig, DeviceType, Point, PollResult, SinkType

hookspec = pluggy.HookspecMarker("bmslogger")


# --- what plugins contribute --------------------------------------------------------------


@hookspec
def register_device_types() -> Sequence[DeviceType]:
    """Return the device types this plugin provides.

    Called once, before the configuration is checked, so ``[[devices.<name>]]`` tables
    can be validated against each type's declared options. Type names are unique across
    all plugins; two plugins registering one name is a `PluginError`.

    :returns: a sequence of `bmslogger.model.DeviceType`.
    """


@hookspec
def register_sink_types() -> Sequence[SinkType]:
    """Return the sink types this plugin provides.

    Called once, before the configuration is checked, so ``[sinks.<name>]`` tables can
    be validated. Names are unique across all plugins.

    :returns: a sequence of `bmslogger.model.SinkType`.
    """


# --- events --------------------------------------------------------------------------------


@hookspec
def poll_finished(device: DeviceConfig, result: PollResult, task: str) -> None:
    """Observe one finished poll or task of one device, after its points were queued.

    For alerting and displays, not for writing data (write a sink for that). Must return
    quickly: it runs in the polling thread.

    :param device: the device's validated configuration.
    :param result: the points read and what failed.
    :param task: ``"poll"`` for the regular poll, otherwise the `TaskSpec` name.
    """


@hookspec
def device_availability_changed(device: DeviceConfig, available: bool, reason: str) -> None:
    """Observe a device becoming unavailable (no answer, port gone) or coming back.

    Called only on transitions, never on every failed poll.

    :param device: the device's validated configuration.
    :param available: the new state.
    :param reason: why it became unavailable, or ``""`` when it recovered.
    """


@hookspec
def points_dropped(sink: str, points: Sequence[Point], reason: str) -> None:
    """Observe points a sink could never write (dead-lettered or dropped on overflow).

    :param sink: the sink's name.
    :param points: the points that were not written.
    :param reason: why.
    """
