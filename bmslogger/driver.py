"""The base every device driver extends: one device's conversation over one transport.

A driver knows which requests to send, in what order, how long to wait for each answer
(wire time at the line's baud rate plus the device's turnaround, never a fixed sleep),
when to retry, and how decoded values become `Point`s. It knows nothing about sinks or
scheduling and never logs above DEBUG: the scheduler decides what a failure is worth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from bmslogger.audit import audit
from bmslogger.conversation import Conversation
from bmslogger.errors import WriteRefusedError
from bmslogger.logs import named_logger
from bmslogger.model import DeviceConfig, PollResult, WriteSpec
from bmslogger.stats import Counters
from bmslogger.transport import Transport


class Driver:
    """Subclass per device family; implement `poll` and, where the plugin has them,
    `run_task` and `_write`.

    `clock` returns wall time in nanoseconds (for point timestamps); tests may replace it.
    """

    #: Commands that change the device; listed here and in the DeviceType.
    WRITES: tuple[WriteSpec, ...] = ()

    def __init__(
        self,
        device: DeviceConfig,
        transport: Transport,
        counters: Counters | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.device = device
        self.options = device.options
        self.transport = transport
        self.counters = counters if counters is not None else Counters()
        #: state that outlives this driver instance (see `Counters.memory`)
        self.memory = self.counters.memory
        self.clock = clock
        self.log = named_logger(type(self).__module__, device.name)
        self.setup()

    def setup(self) -> None:
        """Read the plugin's options into attributes and check what the table cannot.

        Called at the end of `__init__`, when ``device``, ``options``, ``transport``,
        ``counters``, ``memory``, ``clock`` and ``log`` are set, so a plugin overrides this
        instead of repeating the constructor's signature. Raise `ConfigError` for an option
        combination that cannot work."""

    def conversation_for_line(self, **settings: Any) -> Conversation:
        """A `Conversation` on this driver's line with the device's ``timeout`` and
        ``retries``; `settings` adds or overrides `Conversation` arguments (a first-byte
        margin, a late-answer window, ``retries=0`` for a driver that retries itself)."""
        kwargs: dict[str, Any] = {"timeout_s": self.device.timeout_s,
                                  "retries": self.device.retries}
        kwargs.update(settings)
        return Conversation(self.transport, self.counters, self.log, **kwargs)

    @property
    def base_tags(self) -> dict[str, str]:
        """Tags every point of this device carries."""
        return {"device": self.device.name, "plugin": self.device.plugin}

    def poll(self) -> PollResult:
        """Read everything the logger records on every interval. Keep what was read when a
        part fails: return the points with the failures listed in `errors`."""
        raise NotImplementedError

    def run_task(self, task: str) -> PollResult:
        """Run an extra scheduled task (`TaskSpec`) by name."""
        raise KeyError(f"{self.device.plugin} has no task {task!r}")

    def write(
        self, name: str, value: str, confirmed: bool = False, dry_run: bool = False
    ) -> Mapping[str, Any]:
        """Send a command that changes the device, after every guard.

        Refused (nothing sent) unless the device's options say ``allow_writes = true``,
        the command is one the plugin declares, and a command that needs confirmation got
        it. With `dry_run`, nothing is sent: the plugin's `_plan_write` says what would be.
        Every write that was sent, and every refusal after the guards, is appended to the
        audit log (`DeviceConfig.audit_log`). Returns what the device answered.
        """
        spec = next((w for w in self.WRITES if w.name == name), None)
        if spec is None:
            known = ", ".join(w.name for w in self.WRITES) or "none"
            raise WriteRefusedError(
                f"{self.device.plugin} has no command {name!r} (commands: {known})"
            )
        if dry_run:
            return {"dry_run": True, **self._plan_write(name, value)}
        if not self.options.get("allow_writes", False):
            raise WriteRefusedError(
                f"refusing {name!r} on {self.device.name}: writes change the device and are "
                "off; set allow_writes = true for this device (or --option allow_writes=true)"
            )
        if spec.needs_confirmation and not confirmed:
            raise WriteRefusedError(f"{name!r} needs --confirm: {spec.description}")
        shown = "***" if spec.secret_value and value else value
        self.log.info("write %s=%s", name, shown)
        try:
            answer = self._write(name, value)
        except Exception as err:
            audit(self.device, name, shown, {"error": str(err)}, self.clock())
            raise
        audit(self.device, name, shown, answer, self.clock())
        return answer

    def _write(self, name: str, value: str) -> Mapping[str, Any]:
        """Send command `name` with `value`; return what the device answered (and, where
        the plugin reads it back, ``old``/``new`` values). Only `write` calls this."""
        raise NotImplementedError

    def _plan_write(self, name: str, value: str) -> Mapping[str, Any]:
        """For ``--dry-run``: check `value` and return what would be sent (e.g.
        ``{"frame": "..."}``) without touching the line."""
        raise WriteRefusedError(f"{self.device.plugin} cannot show a dry run of {name!r}")
