"""Scheduling: device polls on the monotonic clock, cron tasks on APScheduler.

Polls are intervals ("every 10 s"), so `PollTicker` drives them from `time.monotonic`,
which never jumps. A Raspberry Pi without a real-time clock boots at the time it saved at
shutdown and is stepped by NTP minutes later, sometimes by hours and sometimes backwards;
APScheduler computes due times from wall-clock datetimes, so a backwards step would leave
every interval job "due in an hour" and the logger silent meanwhile. Cron tasks (the
TriStar daily values at 23:58 local time) are about the time of day, so they stay with
APScheduler's `CronTrigger`, where wall time is the point.

A poll never overlaps itself: a tick that finds the device's previous poll still running
is skipped (counted and logged once), and the next tick keeps the schedule's phase, so a
slow poll delays nothing but itself. Devices on different ports poll in parallel;
devices sharing a port take turns through the port lock (`bmslogger.runtime`). Polls
start at once, so a fresh start logs immediately. A self-metrics job reports each sink's
queue and counters every minute on the same ticker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SINK_METRICS_INTERVAL_S = 60.0


@dataclass
class TickJob:
    """One job on the ticker: `run` every `interval_s` seconds, the first time
    `first_after_s` after start."""

    name: str
    interval_s: float
    run: Callable[[], Any]
    first_after_s: float = 0.0
    #: monotonic time of the next tick
    due: float = 0.0
    future: Future | None = field(default=None, repr=False)
    started: int = 0
    #: ticks that found the previous run still going
    skipped: int = 0


class PollTicker:
    """Runs `TickJob`s on the monotonic clock in a thread pool; see the module docstring.

    `clock` and `wait` are injectable so tests can step time by hand; in service they are
    `time.monotonic` and the stop event's wait (which also measures monotonic time)."""

    def __init__(
        self,
        jobs: Sequence[TickJob],
        workers: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs = list(jobs)
        self.clock = clock
        # one worker per job: a job has at most one run in flight, so none ever queues
        self._pool = ThreadPoolExecutor(
            workers or max(1, min(64, len(self.jobs))), thread_name_prefix="poll"
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        now = self.clock()
        for job in self.jobs:
            job.due = now + job.first_after_s
        self._thread = threading.Thread(target=self._loop, name="poll-ticker", daemon=True)
        self._thread.start()

    def tick(self) -> float:
        """Start every job that is due; returns seconds until the next one is."""
        now = self.clock()
        for job in self.jobs:
            if job.due > now:
                continue
            if job.future is not None and not job.future.done():
                job.skipped += 1
                (log.warning if job.skipped == 1 else log.debug)(
                    "%s is still running after its interval (%.3g s); tick skipped "
                    "(further skips are logged at debug level)", job.name, job.interval_s)
            else:
                job.started += 1
                job.future = self._pool.submit(self._run, job)
            # the next tick on the schedule's phase, past any ticks missed meanwhile
            behind = math.floor((now - job.due) / job.interval_s) + 1
            job.due += behind * job.interval_s
        if not self.jobs:
            return 3600.0
        return max(0.0, min(job.due for job in self.jobs) - self.clock())

    @staticmethod
    def _run(job: TickJob) -> None:
        try:
            job.run()
        except Exception:  # a failing job must not end its schedule
            log.exception("%s failed", job.name)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.tick())

    def shutdown(self, wait: bool = True) -> None:
        """Start nothing more; with `wait`, return when the runs in hand have finished."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._pool.shutdown(wait=wait)


class Schedules:
    """What `LoggerService.run` starts and stops: the ticker, and APScheduler when some
    device has a cron task."""

    def __init__(self, ticker: PollTicker, cron: Any) -> None:
        self.ticker = ticker
        self.cron = cron

    def start(self) -> None:
        self.ticker.start()
        if self.cron is not None:
            self.cron.start()

    def get_job(self, job_id: str) -> Any:
        """The APScheduler job of a cron task (``task:DEVICE:TASK``), or None."""
        return self.cron.get_job(job_id) if self.cron is not None else None

    def shutdown(self, wait: bool = True) -> None:
        if self.cron is not None:
            self.cron.shutdown(wait=wait)
        self.ticker.shutdown(wait=wait)


def _timezone(name: str) -> Any:
    if not name or name == "local":
        from tzlocal import get_localzone

        return get_localzone()
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def build_ticker(service: Any) -> PollTicker:
    """One job per enabled device poll, plus the per-minute sink metrics."""
    jobs = [
        TickJob(f"poll {p.device.name}", float(p.device.interval_s),
                lambda p=p: service.poll_and_submit(p))
        for p in service.pollers
    ]
    jobs.append(TickJob("sink metrics", SINK_METRICS_INTERVAL_S,
                        lambda: service.pipeline.submit(service.sink_metrics()),
                        first_after_s=SINK_METRICS_INTERVAL_S))
    return PollTicker(jobs)


def build_cron(service: Any, settings: Any) -> Any:
    """A BackgroundScheduler (not started) with every device's cron tasks, or None when
    no device has one."""
    tasks = [
        (poller, name, cron)
        for poller in service.pollers
        for name, cron in poller.device.tasks.items()
        # device.tasks holds the enabled tasks with their cron (the config fills in the
        # plugin's defaults and drops those set to "off")
        if cron and name in {t.name for t in poller.dtype.tasks}
    ]
    if not tasks:
        return None
    from apscheduler.executors.pool import ThreadPoolExecutor as CronPool
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    tz = _timezone(getattr(settings, "timezone", "local"))
    scheduler = BackgroundScheduler(
        executors={"default": CronPool(max(2, min(16, len(tasks))))}, timezone=tz
    )
    for poller, name, cron in tasks:
        scheduler.add_job(
            service.poll_and_submit,
            CronTrigger.from_crontab(cron, timezone=tz),
            args=[poller, name],
            id=f"task:{poller.device.name}:{name}",
            name=f"{name} {poller.device.name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=300,
        )
    return scheduler


def build_scheduler(service: Any, settings: Any) -> Schedules:
    """Everything `run` schedules (not started): polls and metrics on the monotonic
    ticker, cron tasks on APScheduler."""
    return Schedules(build_ticker(service), build_cron(service, settings))
