"""The poll ticker: polls run on the monotonic clock, never overlap themselves, keep their
phase after a slow poll, and ignore the wall clock entirely."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bmslogger.config import parse_config
from bmslogger.manager import build_registry
from bmslogger.runtime import LoggerService
from bmslogger.scheduler import PollTicker, TickJob, build_scheduler


class Clock:
    """A monotonic clock the test steps by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_done(job: TickJob) -> None:
    assert job.future is not None
    job.future.result(5)


def test_jobs_start_at_once_then_every_interval_on_phase() -> None:
    clock = Clock()
    runs: list[float] = []
    job = TickJob("poll a", 10.0, lambda: runs.append(clock.now))
    later = TickJob("metrics", 60.0, lambda: runs.append(-clock.now), first_after_s=60.0)
    ticker = PollTicker([job, later], clock=clock)
    for j in (job, later):
        j.due = clock.now + j.first_after_s  # what start() does, without its thread
    assert ticker.tick() == pytest.approx(10.0)
    wait_done(job)
    assert runs == [1000.0]
    clock.now = 1003.0
    assert ticker.tick() == pytest.approx(7.0)  # not due: nothing runs
    clock.now = 1010.5
    assert ticker.tick() == pytest.approx(9.5)  # next on the phase: 1020, not 1020.5
    wait_done(job)
    assert runs == [1000.0, 1010.5]
    clock.now = 1060.0
    ticker.tick()
    wait_done(job)
    wait_done(later)
    assert sorted(runs[2:]) == [-1060.0, 1060.0]
    assert job.due == 1070.0 and later.due == 1120.0
    ticker.shutdown()


def test_a_poll_still_running_at_its_tick_is_skipped_not_stacked(caplog) -> None:
    clock = Clock()
    release = threading.Event()
    started: list[float] = []

    def slow() -> None:
        started.append(clock.now)
        release.wait(5)

    job = TickJob("poll slow", 10.0, slow)
    ticker = PollTicker([job], clock=clock)
    job.due = clock.now
    ticker.tick()
    for t in (1010.0, 1020.0, 1030.0):  # three ticks while the first poll hangs
        clock.now = t
        ticker.tick()
    assert job.started == 1 and job.skipped == 3
    assert sum("still running" in r.message for r in caplog.records
               if r.levelname == "WARNING") == 1  # logged once, not every tick
    release.set()
    wait_done(job)
    clock.now = 1035.0
    ticker.tick()  # between ticks: nothing
    assert job.started == 1
    clock.now = 1040.0
    ticker.tick()
    wait_done(job)
    assert started == [1000.0, 1040.0]
    ticker.shutdown()


def test_after_a_long_gap_missed_ticks_collapse_into_one_run() -> None:
    clock = Clock()
    runs: list[float] = []
    job = TickJob("poll a", 10.0, lambda: runs.append(clock.now))
    ticker = PollTicker([job], clock=clock)
    job.due = clock.now
    ticker.tick()
    wait_done(job)
    clock.now = 1095.0  # the machine was suspended for 95 s
    ticker.tick()
    wait_done(job)
    assert runs == [1000.0, 1095.0]
    assert job.due == 1100.0
    ticker.shutdown()


def test_a_failing_job_keeps_its_schedule(caplog) -> None:
    clock = Clock()
    calls: list[float] = []

    def boom() -> None:
        calls.append(clock.now)
        raise RuntimeError("driver bug")

    job = TickJob("poll bad", 1.0, boom)
    ticker = PollTicker([job], clock=clock)
    job.due = clock.now
    for t in (1000.0, 1001.0, 1002.0):
        clock.now = t
        ticker.tick()
        wait_done(job)
    assert calls == [1000.0, 1001.0, 1002.0]
    assert any("poll bad failed" in r.message for r in caplog.records)
    ticker.shutdown()


def test_polls_go_on_when_the_wall_clock_steps_back_an_hour(tmp_path: Path, monkeypatch) -> None:
    """A Pi's clock stepped back by NTP (here: `time.time` and `time.time_ns` an hour
    back): the logger keeps polling at its rate, because the ticker reads only the
    monotonic clock."""
    registry = build_registry()
    config = parse_config(
        f'[logger]\nstate_dir = "{tmp_path}/state"\nspool_dir = "{tmp_path}/spool"\n'
        f'lock_dir = "{tmp_path}/locks"\n'
        '[[devices.daly]]\nname = "d"\n'
        'port = "sim://daly?cells=4&sensors=1&baudrate=115200&turnaround=0.005"\n'
        'baudrate = 115200\ninterval = "200ms"\n[sinks.csv]\n'
        f'directory = "{tmp_path}/csv"\n', str(tmp_path / "logger.toml"), registry)
    service = LoggerService(config, registry)
    schedules = build_scheduler(service, config.settings)
    assert schedules.cron is None  # no cron task configured: APScheduler is not even built
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop, 5.0), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and service.polls_done.get("d") is None:
            time.sleep(0.02)  # waiting for another thread's first poll
        real_time, real_time_ns = time.time, time.time_ns
        monkeypatch.setattr(time, "time", lambda: real_time() - 3600)
        monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() - 3600 * 10**9)
        polls = service.pollers[0].state.polls
        time.sleep(1.5)
        # 200 ms interval: about 7 polls in 1.5 s; allow for a slow machine
        assert service.pollers[0].state.polls - polls >= 4
    finally:
        stop.set()
        runner.join(20)
    assert not runner.is_alive()
