"""Running polls: one device's poll under its port lock, and the whole logger's lifetime.

`DevicePoller` owns what one poll needs around the driver: resolving the port, taking
the in-process and cross-process port locks, opening the line, building the driver,
turning failures into counted errors instead of exceptions, logging availability changes
once, and adding the ``bmslogger`` self-metrics point. `LoggerService` wires pollers to
the scheduler and the pipeline for ``run``, and runs everything once for ``once``.

The port is opened for each conversation and closed after it. That costs a few
milliseconds, and buys three things: a re-plugged USB adapter is found again at the next
poll, a cron ``once`` can use the port between the daemon's polls, and TCP bridges that
drop idle connections never hold a dead socket.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bmslogger.errors import (
    BmsLoggerError,
    NoAnswerError,
    PortBusyError,
    ProtocolError,
    TransportError,
)
from bmslogger.logs import named_logger
from bmslogger.model import DeviceConfig, DeviceType, Point, PollResult
from bmslogger.stats import Counters

log = logging.getLogger(__name__)

_process_port_locks: dict[str, threading.Lock] = {}
_process_port_locks_guard = threading.Lock()


def _process_lock(identity: str) -> threading.Lock:
    """Threads of one process share a port through this lock before the file lock, so
    they queue in order instead of spinning on flock."""
    with _process_port_locks_guard:
        return _process_port_locks.setdefault(identity, threading.Lock())


@dataclass
class DeviceState:
    """What the logger knows about one device between polls (for status and metrics)."""

    available: bool | None = None
    last_ok_ns: int = 0
    last_error: str = ""
    polls: int = 0
    polls_failed: int = 0
    last_result: PollResult | None = field(default=None, repr=False)
    #: the latest values worth a glance (`bmslogger.watch.summarize`), kept across failures
    values: dict[str, Any] = field(default_factory=dict, repr=False)


class DevicePoller:
    """Polls one device: lock, open, drive, close; never raises for device trouble."""

    def __init__(
        self,
        device: DeviceConfig,
        dtype: DeviceType,
        lock_dir: str,
        hook: Any = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self.lock_dir = lock_dir
        self.hook = hook
        self.clock = clock
        self.counters = Counters()
        self.state = DeviceState()
        self.log = named_logger(__name__, device.name)
        self._driver_class: Any = None
        from bmslogger.quality import PlausibilityCheck

        #: implausible values removed, inconsistent packs counted (see bmslogger.quality)
        self.quality = PlausibilityCheck(self.log)

    def _driver_factory(self) -> Any:
        if self._driver_class is None:
            self._driver_class = self.dtype.load_driver()
        return self._driver_class

    def run(self, task: str = "poll") -> PollResult:
        """One poll (or task): the points read plus a ``bmslogger`` self-metrics point."""
        from bmslogger.locking import PortLock
        from bmslogger.transport import open_transport, port_identity

        started = time.monotonic()
        result = PollResult()
        lock_wait = 0.0
        try:
            identity = port_identity(self.device.port)
            with _process_lock(identity):
                lock = PortLock(identity, self.lock_dir, self.device.lock_timeout_s)
                with lock:
                    lock_wait = lock.waited_s
                    with open_transport(self.device.port, self.device.port_settings) as line:
                        driver = self._driver_factory()(self.device, line, self.counters)
                        result = driver.poll() if task == "poll" else driver.run_task(task)
        except PortBusyError as err:
            self.counters.count(err.kind)
            result.errors.append(str(err))
        except (TransportError, NoAnswerError, ProtocolError) as err:
            self.counters.count(getattr(err, "kind", "transport"))
            result.errors.append(str(err))
        except BmsLoggerError as err:
            self.counters.count("error")
            result.errors.append(str(err))
        except Exception as err:  # a driver bug must not stop the logger: log it once, go on
            self.counters.count("internal")
            self.log.exception("bug while polling (please report): %s", err)
            result.errors.append(f"internal error: {err}")
        if result.points:
            result.points, problems = self.quality.apply(result.points)
            for kind, n in problems.items():
                self.counters.count(kind, n)
        duration = time.monotonic() - started
        self._account(result, duration, lock_wait, task)
        return result

    def _account(self, result: PollResult, duration: float, lock_wait: float, task: str) -> None:
        state = self.state
        state.polls += 1
        state.last_result = result
        if any(p.measurement != "bmslogger" for p in result.points):
            from bmslogger.watch import summarize

            state.values = summarize(result.points)
        ok = result.complete
        if ok:
            state.last_ok_ns = self.clock()
        else:
            state.polls_failed += 1
            state.last_error = "; ".join(result.errors) or "no answer"
        available = not result.silent
        if available != state.available:
            if not available:
                self.log.warning("unavailable: %s", state.last_error)
            elif state.available is False:
                self.log.info("available again")
            if state.available is not None or not available:
                self._hook("device_availability_changed", device=self.device,
                           available=available, reason="" if available else state.last_error)
            state.available = available
        elif result.errors and available:
            self.log.info("partial poll: %s", "; ".join(result.errors))
        fields: dict[str, Any] = {
            "poll_duration_s": float(duration),
            "poll_ok": bool(ok),
            "lock_wait_s": float(lock_wait),
            "requests": int(result.requests),
            "answered": int(result.answered),
            "polls": int(state.polls),
            "polls_failed": int(state.polls_failed),
        }
        from bmslogger.selfmetrics import counter_field

        for kind, count in self.counters.snapshot().items():
            fields[counter_field(kind)] = int(count)
        tags = {"device": self.device.name, "plugin": self.device.plugin}
        if task != "poll":
            tags["task"] = task
        result.points.append(Point("bmslogger", tags, fields, self.clock()))

    def _hook(self, name: str, **kwargs: Any) -> None:
        if self.hook is None:
            return
        try:
            getattr(self.hook, name)(**kwargs)
        except Exception:  # an observer plugin must not break polling
            log.exception("plugin hook %s failed", name)


class LoggerService:
    """The whole logger: pollers, scheduler and pipeline, for ``run`` and ``once``."""

    def __init__(self, config: Any, registry: Any) -> None:
        self.config = config
        self.registry = registry
        settings = config.settings
        hook = registry.pm.hook
        self.pollers = [
            DevicePoller(d, registry.device(d.plugin), settings.lock_dir, hook)
            for d in config.devices
            if d.enabled
        ]
        self.pipeline = self._build_pipeline()
        self._stop = threading.Event()
        self._started = time.time()
        #: monotonic time the last poll or task finished (the systemd watchdog's progress)
        self.last_poll_done: float | None = None
        #: (device, task) → monotonic start of the run in progress
        self.polls_running: dict[tuple[str, str], float] = {}
        #: device → monotonic end of its last finished poll (failed or not)
        self.polls_done: dict[str, float] = {}
        from bmslogger.clockcheck import ClockCheck

        #: wall-clock jumps and an unsynchronised clock, marked on the points
        self.clock_check = ClockCheck(tag_unsynced=settings.tag_unsynced_clock)

    def _build_pipeline(self) -> Any:
        import os

        from bmslogger.pipeline import Pipeline

        sinks = []
        for sc in self.config.sinks:
            if not getattr(sc, "enabled", True):
                continue
            sink_class = self.registry.sinks[sc.plugin].load_sink()
            sinks.append((sc, sink_class(sc)))
        settings = self.config.settings
        dead = os.path.join(settings.spool_dir, "deadletter")
        hook = self.registry.pm.hook

        def dropped(sink: str, points: Sequence[Point], reason: str) -> None:
            try:
                hook.points_dropped(sink=sink, points=list(points), reason=reason)
            except Exception:
                log.exception("plugin hook points_dropped failed")

        return Pipeline(
            sinks,
            dead,
            on_dropped=dropped,
            spool_dir=os.path.join(settings.spool_dir, "sinks"),
            spool_max_bytes=getattr(settings, "spool_max_bytes", 512 * 1024 * 1024),
            spool_fsync=getattr(settings, "spool_fsync", "always"),
        )

    def poll_and_submit(self, poller: DevicePoller, task: str = "poll") -> PollResult:
        key = (poller.device.name, task)
        self.polls_running[key] = time.monotonic()
        try:
            result = poller.run(task)
            result.points = self.clock_check.mark(poller.device.name, result.points)
            self.pipeline.submit(result.points)
        finally:
            del self.polls_running[key]
        self.last_poll_done = time.monotonic()
        if task == "poll":
            self.polls_done[poller.device.name] = self.last_poll_done
        poller._hook("poll_finished", device=poller.device, result=result, task=task)
        return result

    def sink_metrics(self) -> list[Point]:
        """``bmslogger`` points with each sink's counters (queue depth, written, dropped)."""
        now = time.time_ns()
        points = []
        for name, stats in self.pipeline.stats().items():
            fields = {
                k: v for k, v in stats.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None
            }
            points.append(Point("bmslogger", {"sink": name}, fields, now))
        return points

    def status_snapshot(self, stopped: bool = False) -> dict[str, Any]:
        """What `bmslogger status` shows: devices' availability and counters, sinks'
        pipeline stats (the same numbers as the ``bmslogger`` self-metrics)."""
        import os

        from bmslogger.status import STATUS_INTERVAL_S

        devices = {}
        for p in self.pollers:
            st = p.state
            devices[p.device.name] = {
                "plugin": p.device.plugin,
                "available": st.available,
                "last_ok": st.last_ok_ns / 1e9 if st.last_ok_ns else None,
                "last_error": st.last_error,
                "polls": st.polls,
                "polls_failed": st.polls_failed,
                "errors": p.counters.snapshot(),
                "values": st.values,
            }
        return {
            "pid": os.getpid(),
            "started": self._started,
            "updated": time.time(),
            "interval_s": STATUS_INTERVAL_S,
            "stopped": stopped,
            "config": self.config.file,
            "devices": devices,
            "sinks": self.pipeline.stats(),
        }

    def write_status(self, stopped: bool = False) -> None:
        from bmslogger.status import status_path, write_status

        try:
            write_status(status_path(self.config.settings.state_dir),
                         self.status_snapshot(stopped))
        except (OSError, ValueError) as err:
            log.warning("cannot write the status file: %s", err)

    # --- once -----------------------------------------------------------------------------

    def once(self, flush_timeout: float = 60.0) -> tuple[list[PollResult], int]:
        """Poll every device once (different ports in parallel), flush every sink, stop.

        Returns the poll results and the number of points left unsent.
        """
        self.pipeline.start()
        results: list[PollResult] = []
        try:
            workers = max(1, min(8, len(self.pollers)))
            with ThreadPoolExecutor(workers, thread_name_prefix="poll") as pool:
                results = list(pool.map(self.poll_and_submit, self.pollers))
            self.pipeline.submit(self.sink_metrics())
        finally:
            self.pipeline.close(flush_timeout)
        return results, self.pipeline.unsent()

    # --- run ------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, shutdown_timeout: float = 30.0) -> int:
        """Poll on schedule until `stop` is set (SIGTERM/SIGINT in the CLI).

        Finishes the polls in hand, then flushes every sink. Returns the points left
        unsent at exit.
        """
        from bmslogger.scheduler import build_scheduler

        stop = stop if stop is not None else self._stop
        self.pipeline.start()
        scheduler = build_scheduler(self, self.config.settings)
        scheduler.start()
        from bmslogger.systemd import Watchdog

        watchdog = Watchdog(self)
        watchdog.ready()
        log.info(
            "logging %d device(s) to %d sink(s)", len(self.pollers), len(self.config.sinks)
        )
        from bmslogger.status import STATUS_INTERVAL_S

        next_status = 0.0
        status_done = 0.0
        try:
            while True:
                # at least every STATUS_INTERVAL_S, and within a second of a poll landing
                # (for `bmslogger watch`)
                if time.monotonic() >= next_status or (self.last_poll_done or 0.0) > status_done:
                    status_done = time.monotonic()
                    self.write_status()
                    next_status = time.monotonic() + STATUS_INTERVAL_S
                watchdog.tick()
                if stop.wait(1.0):
                    break
        finally:
            log.info("stopping: finishing polls in hand and flushing sinks")
            watchdog.stopping()
            scheduler.shutdown(wait=True)
            self.pipeline.submit(self.sink_metrics())
            self.pipeline.close(shutdown_timeout)
            self.write_status(stopped=True)
        unsent = self.pipeline.unsent()
        if unsent:
            log.error("%d point(s) could not be written before exit", unsent)
        return unsent

    def stop(self) -> None:
        self._stop.set()
