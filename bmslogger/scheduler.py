"""APScheduler wiring: one interval job per device, one cron job per device task.

Jobs never overlap themselves (``max_instances=1``, ``coalesce=True``): a poll that runs
long delays the next one instead of stacking up. Devices on different ports run in
parallel in the thread pool; devices sharing a port take turns through the port lock
(`bmslogger.runtime`). Interval jobs start at once, so a fresh start logs immediately.
A self-metrics job reports each sink's queue and counters every minute.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

SINK_METRICS_INTERVAL_S = 60.0


def _timezone(name: str) -> Any:
    if not name or name == "local":
        from tzlocal import get_localzone

        return get_localzone()
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def build_scheduler(service: Any, settings: Any) -> Any:
    """A BackgroundScheduler with every poll, task and metrics job added (not started)."""
    from datetime import datetime

    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    tz = _timezone(getattr(settings, "timezone", "local"))
    ports = {p.device.port for p in service.pollers}
    workers = max(2, min(16, len(ports) + 2))
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(workers)}, timezone=tz
    )
    now = datetime.now(tz)
    for poller in service.pollers:
        device = poller.device
        scheduler.add_job(
            service.poll_and_submit,
            IntervalTrigger(seconds=device.interval_s, timezone=tz),
            args=[poller],
            id=f"poll:{device.name}",
            name=f"poll {device.name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(device.interval_s)),
            next_run_time=now,
        )
        declared = {t.name for t in poller.dtype.tasks}
        # device.tasks holds the enabled tasks with their cron (the config fills in the
        # plugin's defaults and drops those set to "off")
        for task_name, cron in device.tasks.items():
            if task_name not in declared or not cron:
                continue
            scheduler.add_job(
                service.poll_and_submit,
                CronTrigger.from_crontab(cron, timezone=tz),
                args=[poller, task_name],
                id=f"task:{device.name}:{task_name}",
                name=f"{task_name} {device.name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=300,
            )
    scheduler.add_job(
        lambda: service.pipeline.submit(service.sink_metrics()),
        IntervalTrigger(seconds=SINK_METRICS_INTERVAL_S, timezone=tz),
        id="metrics:sinks",
        max_instances=1,
        coalesce=True,
    )
    return scheduler
