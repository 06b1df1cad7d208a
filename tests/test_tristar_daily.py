"""The TriStar daily task through the real scheduler: a LoggerService with a CSV sink runs
across 23:58 and writes exactly one daily record and one settings record.

The clock is moved, not mocked: the scheduler is given a fixed-offset time zone in which
it is 23:57:58 when the test starts, so APScheduler's own cron trigger for the default
``58 23 * * *`` fires two seconds later, in real time."""

from __future__ import annotations

import csv
import glob
import os
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from bmslogger import scheduler as scheduler_module
from bmslogger.config import parse_config
from bmslogger.manager import build_registry
from bmslogger.runtime import LoggerService
from bmslogger.simline import forget_sim_ports


def zone_where_it_is(hour: int, minute: int, second: float) -> timezone:
    """A fixed-offset zone in which the wall clock shows hour:minute:second right now."""
    now = datetime.now(timezone.utc)
    wanted = timedelta(hours=hour, minutes=minute, seconds=second)
    have = timedelta(hours=now.hour, minutes=now.minute, seconds=now.second,
                     microseconds=now.microsecond)
    offset = (wanted - have) % timedelta(days=1)
    if offset > timedelta(hours=12):
        offset -= timedelta(days=1)
    return timezone(offset)


def config_text(tmp_path: str, tasks: str = "") -> str:
    return f"""
[logger]
state_dir = "{tmp_path}/state"
spool_dir = "{tmp_path}/spool"
lock_dir = "{tmp_path}/locks"

[[devices.tristar]]
name = "mppt"
port = "sim://tristar?start=23:57&drift=false&seed=11"
interval = "1h"
{tasks}

[sinks.csv]
directory = "{tmp_path}/csv"
"""


def rows(tmp_path: str, measurement: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for path in sorted(glob.glob(os.path.join(tmp_path, "csv", measurement, "*.csv"))):
        with open(path, newline="", encoding="utf-8") as f:
            out.extend(csv.DictReader(f))
    return out


@pytest.fixture
def service_factory(tmp_path):
    services: list[tuple[LoggerService, threading.Event, threading.Thread]] = []

    def start(tasks: str = "") -> LoggerService:
        registry = build_registry()
        config = parse_config(config_text(str(tmp_path), tasks), "<test>", registry)
        service = LoggerService(config, registry)
        stop = threading.Event()
        thread = threading.Thread(target=service.run, args=(stop, 10.0), daemon=True)
        services.append((service, stop, thread))
        thread.start()
        return service

    yield start
    for _service, stop, thread in services:
        stop.set()
        thread.join(30)
    forget_sim_ports()


def test_a_run_across_2358_writes_one_daily_and_one_settings_record(
        tmp_path, monkeypatch, service_factory):
    zone = zone_where_it_is(23, 57, 58.0)
    monkeypatch.setattr(scheduler_module, "_timezone", lambda name: zone)
    service_factory()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not rows(str(tmp_path), "tristar_settings"):
        time.sleep(0.2)  # polling a file written by another thread; not a protocol wait
    time.sleep(1.5)  # give a second (wrong) firing the chance to show up
    daily = rows(str(tmp_path), "tristar_daily")
    settings = rows(str(tmp_path), "tristar_settings")
    assert len(daily) == 1 and len(settings) == 1
    assert len(rows(str(tmp_path), "tristar_daily_alarm")) == 1
    assert len(rows(str(tmp_path), "tristar_info")) == 1
    assert len(rows(str(tmp_path), "charger")) == 1  # the one interval poll at start
    assert float(settings[0]["ev_absorp_v"]) == pytest.approx(28.8, abs=0.006)
    assert float(daily[0]["whc_daily_wh"]) > 1000
    fired = datetime.strptime(daily[0]["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).astimezone(zone)
    assert (fired.hour, fired.minute) == (23, 58)


def test_the_daily_cron_is_configurable_and_defaults_to_2358(tmp_path):
    registry = build_registry()
    config = parse_config(config_text(str(tmp_path)), "<test>", registry)
    service = LoggerService(config, registry)
    sched = scheduler_module.build_scheduler(service, config.settings)
    job = sched.get_job("task:mppt:daily")
    zone = job.trigger.timezone  # the logger's timezone setting (local time here)
    noon = datetime(2026, 6, 1, 12, 0, tzinfo=zone)
    assert job.trigger.get_next_fire_time(None, noon).astimezone(zone).strftime(
        "%H:%M") == "23:58"
    config = parse_config(config_text(str(tmp_path), 'tasks = { daily = "5 0 * * *" }'),
                          "<test>", registry)
    sched = scheduler_module.build_scheduler(LoggerService(config, registry), config.settings)
    job = sched.get_job("task:mppt:daily")
    assert job.trigger.get_next_fire_time(None, noon).astimezone(zone).strftime(
        "%H:%M") == "00:05"
    config = parse_config(config_text(str(tmp_path), 'tasks = { daily = "off" }'),
                          "<test>", registry)
    sched = scheduler_module.build_scheduler(LoggerService(config, registry), config.settings)
    assert sched.get_job("task:mppt:daily") is None


def test_config_accepts_modbus_tcp_ports_and_units_on_one_gateway(tmp_path):
    registry = build_registry()
    base = f"""
[logger]
state_dir = "{tmp_path}/state"
[sinks.csv]
directory = "{tmp_path}/csv"
"""
    two_units = base + """
[[devices.tristar]]
name = "a"
port = "modbus-tcp://192.168.1.253"
[[devices.tristar]]
name = "b"
port = "modbus-tcp://192.168.1.253:502"
unit = 2
"""
    config = parse_config(two_units, "<test>", registry)
    assert [d.options["unit"] for d in config.devices] == [1, 2]
    clash = two_units.replace("unit = 2", "unit = 1").replace(":502", "")
    with pytest.raises(Exception, match="unit"):
        parse_config(clash, "<test>", registry)
    with pytest.raises(Exception, match="modbus-tcp://host"):
        parse_config(base + '[[devices.tristar]]\nname = "c"\nport = "modbus-tcp://:99999"\n',
                     "<test>", registry)
