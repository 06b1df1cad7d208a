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
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from bmslogger.model import DeviceConfig, DeviceType, Point, PollResult, PortSettings, SinkType
    from bmslogger.transport import Transport

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


# --- detection: the probe a device type may offer -------------------------------------------
#
# Not a pluggy hook: a probe belongs to one device type, so it is named by that type's
# ``DeviceType.probe`` (``"module:function"``, imported only when ``bmslogger detect`` runs,
# like the driver). It is specified here with the hooks so a plugin author finds every
# contract in one place.


class Probe(Protocol):
    """``probe(transport, settings) -> dict | None``: is this plugin's device on the line?

    ``bmslogger detect`` calls it with the port lock held and the line open at `settings`
    (the type's `PortSettings` with the baud rate being tried). The probe must be cheap and
    harmless:

    * one short *read* request (a status or identity query), no retries, using the
      plugin's own codec and driver, with the driver's usual wire-time deadline, so a
      silent port costs one deadline;
    * never a command that changes the device (no settings, no MOSFETs, no logins);
    * only a frame whose checksum and shape are right counts as proof; bytes of another
      protocol are no answer.

    :returns: None when nothing (of this type) answered; otherwise the options to put in
        the device's config table to talk to what answered (``{"board": 1}``; ``{}`` when
        the defaults do). Keys starting with ``_`` are shown to the user, not configured:
        ``_about`` is a one-line description of what answered ("16 cells, 2 sensors").
        Device-level errors (`bmslogger.errors.BmsLoggerError`) may propagate: they mean
        "not found here".

    Several units on one bus: a probe decorated with
    ``bmslogger.detect.bus_probe(option, addresses)`` also accepts ``address=N`` and asks
    the unit at that address (answering with ``{option: N, ...}``); ``detect --scan-bus``
    then calls it for every address of the range and proposes one device per answer.
    Without the decorator a probe is only ever called as ``probe(transport, settings)``.
    """

    def __call__(self, transport: Transport, settings: PortSettings) -> dict[str, Any] | None:
        ...
