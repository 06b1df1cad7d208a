"""Tests of bmslogger.config: every key checked, every issue reported at once, secrets kept.

Plugins are declared here (a fake registry with its own DeviceType/SinkType), so these tests
do not depend on the option lists of the real Daly plugin or CSV sink, which change on their
own. One test at the end checks the shipped configs against the real registry.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import pluggy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslogger import config as config_module
from bmslogger.config import (
    EMBEDDED_NAME,
    ConfigSource,
    LoggerConfig,
    LoggerSettings,
    describe_config,
    find_config,
    load_config,
    parse_config,
)
from bmslogger.errors import ConfigError
from bmslogger.manager import Registry, build_registry
from bmslogger.model import DeviceType, PortSettings, SinkType, TaskSpec
from bmslogger.options import Option

REPO = Path(__file__).resolve().parent.parent
# modules that do not exist: validation importing any of them would fail loudly
MISSING = "bmslogger_test_config_never_imported"


def _device_type(name: str, options: tuple[Option, ...], **kw) -> DeviceType:
    return DeviceType(
        name=name,
        title=name.title(),
        options=options,
        port_defaults=kw.pop("port_defaults", PortSettings()),
        driver=f"{MISSING}.{name}.driver:Driver",
        simulator=f"{MISSING}.{name}.simulator:Simulator",
        fields=f"{MISSING}.{name}.fields:FIELDS",
        **kw,
    )


def make_registry() -> Registry:
    """Three device types (addressed, addressed with a task, unaddressed), three sinks."""
    daly = _device_type(
        "daly",
        (
            Option("board", "int", 1, min=1, max=16),
            Option("cells", "int", 16, min=1, max=48),
            Option("invert_current", "bool", False),
            Option("password", "str", "", secret=True),
        ),
        address_option="board",
    )
    tristar = _device_type(
        "tristar",
        (Option("unit", "int", 1, min=1, max=247),),
        port_defaults=PortSettings(baudrate=9600, parity="N", stopbits=2, turnaround_s=0.02),
        tasks=(TaskSpec("daily", "58 23 * * *", "daily values"),),
        address_option="unit",
    )
    emus = _device_type("emus", (Option("broadcast", "bool", True),))
    sinks = {
        "csv": SinkType("csv", "CSV", (Option("directory", "str", "data"),), f"{MISSING}:Csv"),
        "influxdb": SinkType(
            "influxdb",
            "InfluxDB",
            (
                Option("url", "str"),
                Option("token", "str", "", secret=True),
                Option("database", "str", "bms"),
            ),
            f"{MISSING}:Influx",
        ),
        "stdout": SinkType("stdout", "stdout", (), f"{MISSING}:Stdout"),
    }
    return Registry(
        pm=pluggy.PluginManager("bmslogger"),
        devices={"daly": daly, "tristar": tristar, "emus": emus},
        sinks=sinks,
        sources={},
    )


@pytest.fixture
def registry() -> Registry:
    return make_registry()


MINIMAL = """
[[devices.daly]]
name = "house"
port = "/dev/ttyUSB0"

[sinks.csv]
"""


def issues_of(
    text: str, registry: Registry, file: str = "logger.toml", **kw
) -> list[tuple[str, str]]:
    """(key path, message) of every issue; fails the test if the text is valid."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, file, registry, **kw)
    assert all(i.file == file for i in info.value.issues)
    return [(i.path, i.message) for i in info.value.issues]


def paths_of(text: str, registry: Registry, **kw) -> list[str]:
    return [p for p, _ in issues_of(text, registry, **kw)]


# --- a valid config and its defaults --------------------------------------------------------------


def test_minimal_config_gets_defaults(registry, tmp_path):
    cfg = parse_config(MINIMAL, str(tmp_path / "logger.toml"), registry)
    assert isinstance(cfg, LoggerConfig)
    assert cfg.file == str(tmp_path / "logger.toml")
    s = cfg.settings
    assert s.interval_s == 30.0
    assert s.lock_timeout_s == 10.0
    assert s.log_level == "info"
    assert s.log_file == ""
    assert s.timezone == "local"
    assert s.base_dir == str(tmp_path)
    assert s.state_dir == str(tmp_path / "data" / "state")
    assert s.spool_dir == str(tmp_path / "data" / "spool")
    (dev,) = cfg.devices
    assert (dev.name, dev.plugin, dev.port) == ("house", "daly", "/dev/ttyUSB0")
    assert dev.interval_s == 30.0
    assert dev.port_settings == PortSettings()
    assert dict(dev.options) == {"board": 1, "cells": 16, "invert_current": False,
                                 "password": ""}
    assert dev.lock_timeout_s == 10.0
    assert dev.timeout_s is None
    assert dev.retries == 2
    assert dev.enabled is True
    assert dict(dev.tasks) == {}
    (sink,) = cfg.sinks
    assert (sink.name, sink.plugin, dict(sink.options)) == ("csv", "csv", {"directory": "data"})
    assert (sink.batch_size, sink.flush_interval_s, sink.max_queue, sink.enabled) == (
        1000, 5.0, 100_000, True)
    assert cfg.device("house") is dev
    with pytest.raises(KeyError, match="configured: house"):
        cfg.device("nope")


def test_every_common_key_is_applied(registry, tmp_path):
    text = """
[logger]
interval = "1m"
lock_timeout = "3s"
log_level = "DEBUG"
log_file = "logs/bms.log"
timezone = "Europe/Berlin"
state_dir = "/var/lib/bmslogger"
spool_dir = "spool"

[[devices.tristar]]
name = "mppt"
port = "/dev/ttyUSB3"
interval = "10s"
enabled = false
timeout = "750ms"
retries = 5
lock_timeout = "30s"
baudrate = 19200
bytesize = 7
parity = "E"
stopbits = 1
turnaround = "100ms"
unit = 7
tasks = { daily = "0 0 * * *" }

[[devices.daly]]
name = "bank"
port = "/dev/ttyUSB4"

[[sinks.csv]]
name = "archive"
enabled = false
batch_size = 10
flush_interval = "2m"
max_queue = 50
[[sinks.csv]]
directory = "/srv/csv"
"""
    cfg = parse_config(text, str(tmp_path / "conf.toml"), registry)
    s = cfg.settings
    assert (s.interval_s, s.lock_timeout_s, s.log_level, s.timezone) == (
        60.0, 3.0, "debug", "Europe/Berlin")
    assert s.log_file == str(tmp_path / "logs" / "bms.log")
    assert s.state_dir == "/var/lib/bmslogger"
    assert s.spool_dir == str(tmp_path / "spool")
    mppt, bank = cfg.devices
    assert mppt.interval_s == 10.0 and mppt.enabled is False
    assert (mppt.timeout_s, mppt.retries, mppt.lock_timeout_s) == (0.75, 5, 30.0)
    assert mppt.port_settings == PortSettings(19200, 7, "E", 1, 0.1)
    assert dict(mppt.options) == {"unit": 7}
    assert dict(mppt.tasks) == {"daily": "0 0 * * *"}
    # the device without an interval takes the [logger] one; its lock wait too
    assert (bank.interval_s, bank.lock_timeout_s) == (60.0, 3.0)
    archive, csv = cfg.sinks
    assert (archive.name, archive.enabled, archive.batch_size, archive.flush_interval_s,
            archive.max_queue) == ("archive", False, 10, 120.0, 50)
    assert (csv.name, csv.options["directory"]) == ("csv", "/srv/csv")


def test_single_table_device_form_and_its_key_paths(registry):
    text = '[devices.daly]\nname = "one"\nport = "/dev/ttyS0"\nboard = 0\n[sinks.csv]\n'
    assert issues_of(text, registry) == [
        ("devices.daly.board", "expected an integer from 1 to 16, got 0 (int)")]
    cfg = parse_config(text.replace("board = 0", "board = 16"), "x.toml", registry)
    assert cfg.devices[0].options["board"] == 16


# --- every problem at once ------------------------------------------------------------------------


def test_five_mistakes_give_five_issues_with_file_and_key_path(registry):
    text = """
[logger]
interval = "fast"

[[devices.daly]]
name = "a"
port = "/dev/ttyUSB0"
bord = 2

[[devices.daly]]
name = "b"
port = "/dev/ttyUSB1"
board = 17

[[devices.dummy]]
name = "c"

[sinks.csv]
batch_size = "many"
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/bmslogger/logger.toml", registry)
    issues = info.value.issues
    assert [i.path for i in issues] == [
        "logger.interval",
        "devices.daly[0].bord",
        "devices.daly[1].board",
        "devices.dummy",
        "sinks.csv.batch_size",
    ]
    assert {i.file for i in issues} == {"/etc/bmslogger/logger.toml"}
    text_out = str(info.value)
    assert text_out.count("\n") == 4
    assert text_out.splitlines()[2] == (
        "/etc/bmslogger/logger.toml: devices.daly[1].board: "
        "expected an integer from 1 to 16, got 17 (int)")
    messages = dict((i.path, i.message) for i in issues)
    assert messages["logger.interval"].startswith("expected a duration such as")
    assert "did you mean 'board'?" in messages["devices.daly[0].bord"]
    assert "installed: daly, emus, tristar" in messages["devices.dummy"]
    assert messages["sinks.csv.batch_size"] == "expected an integer, got 'many' (str)"


def test_unknown_top_level_and_logger_keys(registry):
    text = 'interval = "5s"\n[loggers]\n[logger]\nlog_lvl = "info"\n' + MINIMAL
    found = issues_of(text, registry)
    assert [p for p, _ in found] == ["interval", "loggers", "logger.log_lvl"]
    assert "interval belongs in the [logger] table" in found[0][1]
    assert "did you mean 'logger'?" in found[1][1]
    assert "did you mean 'log_level'?" in found[2][1]
    assert "interval, lock_dir, lock_timeout" in found[2][1]


def test_unknown_sink_type_lists_installed_ones(registry):
    text = MINIMAL + "[sinks.influx]\nurl = 'x'\n"
    assert issues_of(text, registry) == [
        ("sinks.influx", "unknown sink type 'influx' (did you mean 'influxdb'?); "
                         "installed: csv, influxdb, stdout")]


def test_an_unknown_type_is_reported_once_not_per_table(registry):
    text = MINIMAL + '[[devices.pace]]\nname="a"\n[[devices.pace]]\nname="b"\n'
    assert paths_of(text, registry) == ["devices.pace"]


@pytest.mark.parametrize(
    ("line", "path", "expected"),
    [
        ("name = 5", "devices.daly[0].name", "expected a string, got 5 (int)"),
        ('port = ["/dev/ttyUSB0"]', "devices.daly[0].port", "expected a string"),
        ('enabled = "yes"', "devices.daly[0].enabled", "expected true or false"),
        ("retries = -1", "devices.daly[0].retries", "expected an integer from 0 to 100"),
        ("cells = 1.5", "devices.daly[0].cells", "expected an integer, got 1.5 (float)"),
        ("invert_current = 1", "devices.daly[0].invert_current", "expected true or false"),
        ("baudrate = 10", "devices.daly[0].baudrate", "from 50 to 4000000"),
        ("bytesize = 9", "devices.daly[0].bytesize", "expected one of 5, 6, 7, 8"),
        ('parity = "X"', "devices.daly[0].parity", "expected one of 'N', 'E', 'O', 'M', 'S'"),
        ("stopbits = true", "devices.daly[0].stopbits", "expected one of 1, 1.5, 2"),
        ('turnaround = "20s"', "devices.daly[0].turnaround", "of at most 10"),
        ('timeout = "0s"', "devices.daly[0].timeout", "above zero"),
        ('name = "bad name"', "devices.daly[0].name", "letters, digits"),
        ('tasks = "daily"', "devices.daly[0].tasks.daily", "unknown task"),
    ],
)
def test_wrong_types_and_ranges_in_a_device(registry, line, path, expected):
    base = '[[devices.daly]]\nname = "house"\nport = "/dev/ttyUSB0"\n'
    key = line.split(" =")[0]
    table = "\n".join(x for x in base.splitlines() if not x.startswith(key + " "))
    text = f"{table}\n{line}\n[sinks.csv]\n"
    if key == "tasks":  # a string where a table belongs
        found = issues_of(text, registry)
        assert found == [("devices.daly[0].tasks",
                          'expected a table such as { daily = "58 23 * * *" } '
                          "(tasks of daly: none)")]
        return
    ((got_path, message),) = issues_of(text, registry)
    assert got_path == path
    assert expected in message


def test_missing_name_and_port(registry):
    found = issues_of("[[devices.daly]]\nboard = 2\n[sinks.stdout]\n", registry)
    assert found == [
        ("devices.daly[0].name", "missing; expected a string"),
        ("devices.daly[0].port", f"missing; expected {config_module._PORT_EXPECTED}"),
    ]


def test_wrong_shapes_of_tables(registry):
    assert issues_of('logger = 5\n' + MINIMAL, registry) == [
        ("logger", "expected a table: [logger]")]
    assert issues_of('devices = 5\n[sinks.csv]\n', registry) == [
        ("devices", "expected tables such as [[devices.<type>]]")]
    assert issues_of('[devices]\ndaly = "x"\n[sinks.csv]\n', registry) == [
        ("devices.daly", "expected a table [devices.daly] or an array of tables "
                         "[[devices.daly]]")]


# --- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [('"30s"', 30.0), ('"5m"', 300.0), ('"500ms"', 0.5), ('"1h"', 3600.0), ("2", 2.0),
     ("0.25", 0.25), ('"1.5s"', 1.5), ('"1d"', 86400.0)],
)
def test_durations(registry, value, seconds):
    cfg = parse_config(f"[logger]\ninterval = {value}\n{MINIMAL}", "x.toml", registry)
    assert cfg.settings.interval_s == seconds
    assert cfg.devices[0].interval_s == seconds


@pytest.mark.parametrize("value", ['"5x"', '"fast"', "true", '"-1s"', '"s"', "[1]"])
def test_bad_durations(registry, value):
    ((path, message),) = issues_of(f"[logger]\ninterval = {value}\n{MINIMAL}", registry)
    assert path == "logger.interval"
    assert "duration" in message


@pytest.mark.parametrize("value", ['"0s"', "0", '"0ms"'])
def test_interval_must_be_above_zero(registry, value):
    text = f'[[devices.daly]]\nname = "a"\nport = "/dev/x"\ninterval = {value}\n[sinks.csv]\n'
    assert issues_of(text, registry) == [
        ("devices.daly[0].interval", 'expected a duration above zero such as "30s", got 0 s')]
    assert paths_of(f"[logger]\ninterval = {value}\n{MINIMAL}", registry) == ["logger.interval"]


# --- names, buses ---------------------------------------------------------------------------------


def test_duplicate_device_names_across_types(registry):
    text = """
[[devices.daly]]
name = "bank"
port = "/dev/ttyUSB0"
[[devices.tristar]]
name = "bank"
port = "/dev/ttyUSB1"
unit = 999
[sinks.csv]
"""
    found = issues_of(text, registry)
    # the duplicate is found even though the second table has another mistake
    assert ("devices.tristar[0].name",
            "duplicate device name 'bank' (also used at devices.daly[0].name); every device "
            "needs its own name") in found
    assert len(found) == 2


def test_duplicate_sink_names(registry):
    text = MINIMAL.replace("[sinks.csv]", "[[sinks.csv]]\n[[sinks.csv]]\ndirectory = 'b'")
    assert issues_of(text, registry) == [
        ("sinks.csv[1].name", "duplicate sink name 'csv' (also used at sinks.csv[0].name); "
                              "every sink needs its own name")]
    fixed = text.replace("[[sinks.csv]]\ndirectory", "[[sinks.csv]]\nname = 'b'\ndirectory")
    cfg = parse_config(fixed, "x.toml", registry)
    assert [s.name for s in cfg.sinks] == ["csv", "b"]


def _two(first: str, second: str, kind: str = "daly") -> str:
    return (f'[[devices.{kind}]]\nname = "one"\n{first}\n'
            f'[[devices.{kind}]]\nname = "two"\n{second}\n[sinks.csv]\n')


def test_two_boards_on_one_bus_need_different_addresses(registry):
    ok = _two('port = "/dev/ttyUSB0"\nboard = 1', 'port = "/dev/ttyUSB0"\nboard = 2')
    assert [d.options["board"] for d in parse_config(ok, "x.toml", registry).devices] == [1, 2]
    clash = _two('port = "/dev/ttyUSB0"\nboard = 3', 'port = "/dev/ttyUSB0"\nboard = 3')
    assert issues_of(clash, registry) == [
        ("devices.daly[1].board",
         "device 'two' shares port '/dev/ttyUSB0' with device 'one' (devices.daly[0]), and both "
         "answer to board = 3; give each device on one bus its own board")]
    # the default address counts as an address
    clash = _two('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"')
    assert paths_of(clash, registry) == ["devices.daly[1].board"]


def test_one_port_spelt_two_ways_is_one_bus(registry, tmp_path):
    tty = tmp_path / "ttyUSB0"
    tty.write_text("")
    link = tmp_path / "usb-FTDI_FT232R-if00-port0"
    link.symlink_to(tty)
    clash = _two(f'port = "{link}"', f'port = "{tty}"')
    assert paths_of(clash, registry) == ["devices.daly[1].board"]
    bridge = _two('port = "socket://Bridge.local:8899"', 'port = "socket://bridge.local:8899"')
    assert paths_of(bridge, registry) == ["devices.daly[1].board"]
    apart = _two('port = "socket://bridge.local:8899"', 'port = "socket://bridge.local:8900"')
    assert len(parse_config(apart, "x.toml", registry).devices) == 2


def test_a_device_without_bus_address_needs_its_own_port(registry):
    text = _two('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"', kind="emus")
    assert issues_of(text, registry) == [
        ("devices.emus[1].port",
         "device 'two' shares port '/dev/ttyUSB0' with device 'one' (devices.emus[0]), but emus "
         "devices have no bus address, so each needs a port of its own")]
    mixed = ('[[devices.daly]]\nname = "bms"\nport = "/dev/ttyUSB0"\n'
             '[[devices.emus]]\nname = "emus"\nport = "/dev/ttyUSB0"\n[sinks.csv]\n')
    assert paths_of(mixed, registry) == ["devices.emus[0].port"]


def test_different_addressed_types_may_share_a_bus(registry):
    text = ('[[devices.daly]]\nname = "bms"\nport = "/dev/ttyUSB0"\n'
            '[[devices.tristar]]\nname = "mppt"\nport = "/dev/ttyUSB0"\n[sinks.csv]\n')
    assert len(parse_config(text, "x.toml", registry).devices) == 2


def test_a_disabled_device_claims_no_address(registry):
    text = _two('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nenabled = false')
    cfg = parse_config(text, "x.toml", registry)
    assert [d.enabled for d in cfg.devices] == [True, False]


# --- no devices, no sinks -------------------------------------------------------------------------


def test_no_devices_and_no_sinks_are_errors_with_hints(registry):
    assert issues_of("", registry) == [
        ("devices", 'no devices configured; add a table such as [[devices.daly]] with name = '
                    '"bms" and port = "/dev/ttyUSB0" (installed device types: daly, emus, '
                    "tristar)"),
        ("sinks", "no sinks configured, so readings would go nowhere; add a table such as "
                  "[sinks.csv] (installed sink types: csv, influxdb, stdout)"),
    ]


def test_empty_tables_and_arrays_count_as_none(registry):
    found = issues_of("[devices]\ndaly = []\n[sinks]\n", registry)
    assert [p for p, _ in found] == ["devices", "sinks"]
    assert found[0][1].startswith("no devices configured")


def test_everything_disabled_is_an_error(registry):
    text = MINIMAL.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nenabled = false')
    text = text.replace("[sinks.csv]", "[sinks.csv]\nenabled = false")
    assert paths_of(text, registry) == ["devices", "sinks"]


# --- ports ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "port",
    ["/dev/ttyUSB0", "/dev/serial/by-id/usb-FTDI-if00-port0", "COM3", "usb:0403:6001",
     "usb:0403:6001:A10K3XYZ", "socket://192.168.1.50:8899", "rfc2217://bridge:2217",
     "sim://daly?cells=16", "sim://daly", "loop://"],
)
def test_valid_port_spellings(registry, port):
    text = MINIMAL.replace("/dev/ttyUSB0", port)
    assert parse_config(text, "x.toml", registry).devices[0].port == port


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ("", "got an empty string"),
        ("usb:403:6001", "usb:VID:PID or usb:VID:PID:SERIAL with 4-digit hex ids"),
        ("ftp://host", "unknown port scheme 'ftp://'"),
        ("sockett://host:1", "(did you mean 'socket'?)"),
        ("socket://host", "expected socket://host:port with a port from 1 to 65535"),
        ("socket://host:70000", "with a port from 1 to 65535"),
        ("sim://pacee", "sim://pacee is no installed device type; installed: daly, emus"),
        ("sim://tristar?x=1", "sim://tristar simulates a tristar device, but this table "
                              "configures a daly device; use sim://daly"),
    ],
)
def test_bad_ports(registry, port, expected):
    ((path, message),) = issues_of(MINIMAL.replace("/dev/ttyUSB0", port), registry)
    assert path == "devices.daly[0].port"
    assert expected in message


# --- tasks ----------------------------------------------------------------------------------------


def _tristar(tasks: str) -> str:
    return f'[[devices.tristar]]\nname = "mppt"\nport = "/dev/ttyUSB0"\n{tasks}\n[sinks.csv]\n'


def test_tasks_default_override_and_off(registry):
    assert dict(parse_config(_tristar(""), "x", registry).devices[0].tasks) == {
        "daily": "58 23 * * *"}
    changed = parse_config(_tristar('tasks = { daily = "0 0 * * *" }'), "x", registry)
    assert dict(changed.devices[0].tasks) == {"daily": "0 0 * * *"}
    off = parse_config(_tristar('tasks = { daily = "off" }'), "x", registry)
    assert dict(off.devices[0].tasks) == {}


def test_bad_tasks(registry):
    found = issues_of(_tristar('tasks = { daily = "61 23 * * *", weekly = "0 0 * * 0" }'),
                      registry)
    assert [p for p, _ in found] == ["devices.tristar[0].tasks.daily",
                                     "devices.tristar[0].tasks.weekly"]
    assert found[0][1].startswith('expected a cron expression such as "58 23 * * *"')
    assert "61" in found[0][1]
    assert found[1][1] == "unknown task; tasks of tristar: daily"
    assert paths_of(_tristar("tasks = { daily = 5 }"), registry) == [
        "devices.tristar[0].tasks.daily"]
    assert paths_of(_tristar('tasks = { daily = "* * *" }'), registry) == [
        "devices.tristar[0].tasks.daily"]


# --- [logger] -------------------------------------------------------------------------------------


def test_timezone_is_checked(registry):
    ok = parse_config('[logger]\ntimezone = "America/New_York"\n' + MINIMAL, "x", registry)
    assert ok.settings.timezone == "America/New_York"
    for bad in ("Mars/Olympus_Mons", "../etc/passwd", ""):
        assert issues_of(f'[logger]\ntimezone = "{bad}"\n' + MINIMAL, registry) == [
            ("logger.timezone", 'expected "local" or an IANA time zone such as '
                                f'"Europe/Berlin", got {bad!r}')]


def test_log_level_choices(registry):
    cfg = parse_config('[logger]\nlog_level = "Warning"\n' + MINIMAL, "x", registry)
    assert cfg.settings.log_level == "warning"
    assert issues_of('[logger]\nlog_level = "loud"\n' + MINIMAL, registry) == [
        ("logger.log_level",
         "expected one of 'debug', 'info', 'warning', 'error', got 'loud' (str)")]


def test_lock_dir_default_explicit_and_fallback(registry, tmp_path, monkeypatch):
    conf = str(tmp_path / "logger.toml")
    shared = tmp_path / "run-lock"
    shared.mkdir()
    monkeypatch.setattr(config_module, "DEFAULT_LOCK_DIR", str(shared))
    cfg = parse_config(MINIMAL, conf, registry)
    assert (cfg.settings.lock_dir, cfg.settings.lock_dir_note) == (str(shared), "")

    monkeypatch.setattr(config_module, "DEFAULT_LOCK_DIR", str(tmp_path / "absent"))
    cfg = parse_config(MINIMAL, conf, registry)
    # every program using this config falls back to the same folder, whoever starts it
    assert cfg.settings.lock_dir == str(tmp_path / "data" / "state" / "locks")
    assert str(tmp_path / "absent") + " does not exist" in cfg.settings.lock_dir_note
    assert "set [logger] lock_dir" in cfg.settings.lock_dir_note
    other_cwd = tmp_path / "elsewhere"
    other_cwd.mkdir()
    monkeypatch.chdir(other_cwd)
    assert parse_config(MINIMAL, conf, registry).settings.lock_dir == cfg.settings.lock_dir

    # an explicit lock_dir is used as written, even where it does not exist yet
    cfg = parse_config('[logger]\nlock_dir = "locks"\n' + MINIMAL, conf, registry)
    assert (cfg.settings.lock_dir, cfg.settings.lock_dir_note) == (str(tmp_path / "locks"), "")
    (tmp_path / "afile").write_text("x")
    assert issues_of('[logger]\nlock_dir = "afile"\nstate_dir = "afile"\n' + MINIMAL,
                     registry, file=conf) == [
        ("logger.state_dir", f"{tmp_path / 'afile'} exists and is not a folder"),
        ("logger.lock_dir", f"{tmp_path / 'afile'} exists and is not a folder"),
    ]


# --- secrets --------------------------------------------------------------------------------------

SECRET = "s3cr3t-Tok3n-value"


def _influx(extra: str) -> str:
    return ('[[devices.daly]]\nname = "bank"\nport = "/dev/ttyUSB0"\n'
            f'[sinks.influxdb]\nurl = "http://localhost:8086"\n{extra}\n')


def test_env_variables_are_substituted(registry, monkeypatch):
    monkeypatch.setenv("BMS_TEST_TOKEN", SECRET)
    monkeypatch.setenv("BMS_TEST_HOST", "db.local")
    text = _influx('token = "${BMS_TEST_TOKEN}"').replace("localhost", "${BMS_TEST_HOST}")
    cfg = parse_config(text, "x.toml", registry)
    sink = cfg.sinks[0]
    assert sink.options["token"] == SECRET
    assert sink.options["url"] == "http://db.local:8086"
    assert SECRET not in repr(cfg)
    assert SECRET not in describe_config(cfg)
    assert "token='***'" in describe_config(cfg)
    # a lone dollar is not a reference
    cfg = parse_config(_influx('token = "pa$$word${BMS_TEST_HOST}$"'), "x.toml", registry)
    assert cfg.sinks[0].options["token"] == "pa$$worddb.local$"


def test_unset_env_variable_names_variable_and_key_only(registry, monkeypatch):
    monkeypatch.delenv("BMS_TEST_UNSET", raising=False)
    monkeypatch.delenv("BMS_TEST_UNSET2", raising=False)
    text = _influx('token = "${BMS_TEST_UNSET}"').replace(
        'name = "bank"', 'name = "${BMS_TEST_UNSET2}"')
    # no "missing name" on top of the unset variable: one mistake, one issue
    assert issues_of(text, registry) == [
        ("devices.daly[0].name", "environment variable BMS_TEST_UNSET2 is not set"),
        ("sinks.influxdb.token", "environment variable BMS_TEST_UNSET is not set"),
    ]


def test_env_in_nested_values(registry, monkeypatch):
    monkeypatch.setenv("BMS_TEST_CRON", "5 4 * * *")
    cfg = parse_config(_tristar('tasks = { daily = "${BMS_TEST_CRON}" }'), "x", registry)
    assert dict(cfg.devices[0].tasks) == {"daily": "5 4 * * *"}
    monkeypatch.delenv("BMS_TEST_CRON")
    assert paths_of(_tristar('tasks = { daily = "${BMS_TEST_CRON}" }'), registry) == [
        "devices.tristar[0].tasks.daily"]


def test_secret_never_echoed_in_messages(registry, monkeypatch):
    # a secret option with the wrong type
    found = issues_of(_influx("token = 123456789"), registry)
    assert found == [("sinks.influxdb.token",
                      "expected a string; the value is not shown because it is secret")]
    assert "123456789" not in str(found)
    # a value from the environment that fails a non-secret check is not echoed either
    monkeypatch.setenv("BMS_TEST_BOARD", SECRET)
    text = MINIMAL.replace('port = "/dev/ttyUSB0"',
                           'port = "/dev/ttyUSB0"\nboard = "${BMS_TEST_BOARD}"')
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.toml", registry)
    assert SECRET not in str(info.value)
    assert [(i.path, i.message) for i in info.value.issues] == [
        ("devices.daly[0].board",
         "expected an integer from 1 to 16; the value is not shown because it is secret")]


def test_secret_absent_from_error_with_other_mistakes(registry, monkeypatch):
    monkeypatch.setenv("BMS_TEST_TOKEN", SECRET)
    text = _influx('token = "${BMS_TEST_TOKEN}"\ndatabase = 5') + "[logger]\ninterval = 'x'\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.toml", registry)
    assert len(info.value.issues) == 2
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value.issues)


def test_file_keys_supply_secrets(registry, tmp_path):
    (tmp_path / "influx.token").write_text(f"  {SECRET}\n")
    (tmp_path / "url.txt").write_text("http://secret-host:8086\n")
    conf = str(tmp_path / "logger.toml")
    text = _influx('token_file = "influx.token"').replace(
        'url = "http://localhost:8086"', 'url_file = "url.txt"')
    cfg = parse_config(text, conf, registry)
    opts = cfg.sinks[0].options
    assert opts["token"] == SECRET
    assert opts["url"] == "http://secret-host:8086"
    # values read from files are masked even where the option is not declared secret
    assert SECRET not in repr(cfg) and "secret-host" not in repr(cfg)
    assert "url='***'" in describe_config(cfg)
    # absolute paths and ${VAR} in the path work too
    text = _influx(f'token_file = "{tmp_path}/influx.token"')
    assert parse_config(text, conf, registry).sinks[0].options["token"] == SECRET


def test_file_key_problems(registry, tmp_path, monkeypatch):
    conf = str(tmp_path / "logger.toml")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    assert issues_of(_influx('token_file = "nope.token"'), registry, file=conf) == [
        ("sinks.influxdb.token_file",
         f"cannot read {tmp_path / 'nope.token'}: No such file or directory")]
    assert issues_of(_influx('token_file = "empty"'), registry, file=conf) == [
        ("sinks.influxdb.token_file", f"{tmp_path / 'empty'} is empty")]
    assert issues_of(_influx('token_file = "binary"'), registry, file=conf) == [
        ("sinks.influxdb.token_file", f"{tmp_path / 'binary'} is not UTF-8 text")]
    assert issues_of(_influx(f'token = "{SECRET}"\ntoken_file = "empty"'), registry,
                     file=conf) == [("sinks.influxdb.token_file",
                                     "give either token or token_file, not both")]
    assert issues_of(_influx("token_file = 3"), registry, file=conf) == [
        ("sinks.influxdb.token_file", "expected the path of a file holding token")]
    # a _file key whose base is no option stays an unknown key
    assert paths_of(_influx('secret_file = "x"'), registry, file=conf) == [
        "sinks.influxdb.secret_file"]
    monkeypatch.delenv("BMS_TEST_DIR", raising=False)
    assert issues_of(_influx('token_file = "${BMS_TEST_DIR}/t"'), registry, file=conf) == [
        ("sinks.influxdb.token_file", "environment variable BMS_TEST_DIR is not set")]


def test_a_declared_option_ending_in_file_is_taken_literally(registry, tmp_path):
    cfg = parse_config('[logger]\nlog_file = "bms.log"\n' + MINIMAL,
                       str(tmp_path / "l.toml"), registry)
    assert cfg.settings.log_file == str(tmp_path / "bms.log")


# --- TOML syntax ----------------------------------------------------------------------------------


def test_toml_syntax_error_names_file_line_and_column(registry):
    text = '[logger]\ninterval = "5s"\nlog_level = \n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/srv/logger.toml", registry)
    (issue,) = info.value.issues
    assert issue.file == "/srv/logger.toml"
    assert re.fullmatch(r"invalid TOML at line 3, column 13: .+", issue.message), issue.message
    assert str(info.value).startswith("/srv/logger.toml: invalid TOML at line 3, column 13")


# --- finding the file -----------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A current folder, an /etc stand-in and no $BMSLOGGER_CONFIG."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    etc = tmp_path / "etc" / "logger.toml"
    etc.parent.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("BMSLOGGER_CONFIG", raising=False)
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", str(etc))
    return cwd, etc


def test_search_order(places, tmp_path, monkeypatch, registry):
    cwd, etc = places
    assert find_config() == ConfigSource(EMBEDDED_NAME, "embedded default", None)
    etc.write_text(MINIMAL.replace("house", "from-etc"))
    assert find_config() == ConfigSource(str(etc), str(etc), str(etc))
    local = cwd / "logger.toml"
    local.write_text(MINIMAL.replace("house", "from-cwd"))
    assert find_config() == ConfigSource(str(local), "./logger.toml", str(local))
    env = tmp_path / "env.toml"
    env.write_text(MINIMAL.replace("house", "from-env"))
    monkeypatch.setenv("BMSLOGGER_CONFIG", str(env))
    assert find_config() == ConfigSource(str(env), "$BMSLOGGER_CONFIG", str(env))
    given_file = tmp_path / "given.toml"
    given_file.write_text(MINIMAL.replace("house", "given"))
    assert find_config(str(given_file)).origin == "--config"
    # load_config reads what find_config chose
    assert load_config(str(given_file), registry).devices[0].name == "given"
    assert load_config(None, registry).devices[0].name == "from-env"
    monkeypatch.delenv("BMSLOGGER_CONFIG")
    assert load_config(None, registry).devices[0].name == "from-cwd"
    local.unlink()
    assert load_config(None, registry).devices[0].name == "from-etc"


def test_named_file_that_does_not_exist_is_an_error(places, tmp_path, monkeypatch):
    cwd, _ = places
    (cwd / "logger.toml").write_text(MINIMAL)  # must not be used instead
    with pytest.raises(ConfigError) as info:
        find_config(str(tmp_path / "missing.toml"))
    assert str(info.value) == f"{tmp_path / 'missing.toml'}: no such file (named by --config)"
    monkeypatch.setenv("BMSLOGGER_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError) as info:
        find_config()
    assert str(info.value) == (f"{tmp_path / 'gone.toml'}: no such file "
                               "(named by $BMSLOGGER_CONFIG)")
    with pytest.raises(ConfigError, match="is a folder"):
        find_config(str(tmp_path))


def test_unreadable_config_file(places, tmp_path, registry):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[logger]\nlog_file = "\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(bad), registry)
    assert info.value.issues[0].file == str(bad)
    assert "is not UTF-8 text" in str(info.value)


def test_relative_paths_follow_the_config_file_not_the_current_folder(places, tmp_path,
                                                                     registry):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "logger.toml").write_text('[logger]\nspool_dir = "sp"\n' + MINIMAL)
    cfg = load_config(str(conf_dir / "logger.toml"), registry)
    assert cfg.settings.spool_dir == str(conf_dir / "sp")
    assert cfg.settings.base_dir == str(conf_dir)


# --- the shipped configs --------------------------------------------------------------------------


def test_embedded_default_loads(places, registry):
    cwd, _ = places
    cfg = load_config(None, registry)
    assert cfg.file == EMBEDDED_NAME
    assert cfg.settings.base_dir == str(cwd)
    assert cfg.settings.state_dir == str(cwd / "data" / "state")
    assert [(d.name, d.plugin, d.interval_s) for d in cfg.devices] == [
        ("daly-sim", "daly", 5.0), ("daly-sim-2", "daly", 5.0)]
    assert cfg.devices[0].port == "sim://daly?cells=16"
    assert cfg.devices[0].port != cfg.devices[1].port
    assert [(s.name, s.options["directory"]) for s in cfg.sinks] == [("csv", "data")]


def test_repository_logger_toml_loads(registry):
    cfg = load_config(str(REPO / "logger.toml"), registry)
    assert [d.name for d in cfg.devices] == ["daly-sim", "daly-sim-2"]
    assert [s.plugin for s in cfg.sinks] == ["csv"]


def _uncomment_examples(text: str) -> str:
    """Every commented-out table in `text`, from its header to the end of its paragraph."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.splitlines()
        headers = [i for i, line in enumerate(lines) if re.match(r"^# \[\[?[\w.]+\]\]?$", line)]
        start = headers[0] if headers else None
        if start is None:
            continue
        for line in lines[start:]:
            out.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        out.append("")
    return "\n".join(out)


def test_logger_toml_examples_are_valid_when_uncommented(registry, tmp_path, monkeypatch):
    token = tmp_path / "influx.token"
    token.write_text(SECRET + "\n")
    monkeypatch.setenv("INFLUX_TOKEN", SECRET)
    text = (REPO / "logger.toml").read_text()
    examples = _uncomment_examples(text).replace("/etc/bmslogger/influx.token", str(token))
    assert examples.count("[[devices.daly]]") == 5
    cfg = parse_config(text + "\n" + examples, str(tmp_path / "logger.toml"), registry)
    assert [d.name for d in cfg.devices] == [
        "daly-sim", "daly-sim-2", "house-bank", "shed-bank", "rack-1", "rack-2", "garage-bank"]
    assert [d.options["board"] for d in cfg.devices if d.name.startswith("rack")] == [1, 2]
    assert [s.name for s in cfg.sinks] == ["csv", "stdout", "influx-local", "influx-archive"]
    assert [s.options["token"] for s in cfg.sinks[2:]] == [SECRET, SECRET]
    # and the same bus with one board twice is refused
    clash = examples.replace("board = 2", "board = 1")
    assert "devices.daly[5].board" in paths_of(text + "\n" + clash, registry)


def _real_registry_ready() -> bool:
    try:
        real = build_registry()
    except Exception:
        return False
    daly = real.devices.get("daly")
    return bool(daly is not None and daly.options and "csv" in real.sinks)


@pytest.mark.skipif(not _real_registry_ready(),
                    reason="the real Daly plugin (with options) and CSV sink are not installed "
                           "yet; they are written in parallel")
def test_shipped_configs_validate_against_real_plugins(places):
    real = build_registry()
    assert len(load_config(None, real).devices) == 2
    assert len(load_config(str(REPO / "logger.toml"), real).devices) == 2


# --- what validation must never do ----------------------------------------------------------------


def test_validation_imports_no_driver_simulator_or_sink(registry):
    text = MINIMAL + '[[devices.tristar]]\nname = "m"\nport = "/dev/ttyS1"\n[sinks.stdout]\n'
    parse_config(text, "x.toml", registry)
    assert not [m for m in sys.modules if m.startswith(MISSING)]


def test_describe_config(registry, tmp_path):
    text = _tristar('tasks = { daily = "0 0 * * *" }').replace(
        "[sinks.csv]", '[sinks.csv]\n[sinks.influxdb]\nurl = "http://db:8086"\n'
                       f'token = "{SECRET}"\n')
    text += '[[devices.daly]]\nname = "bank"\nport = "/dev/ttyUSB1"\ninterval = "500ms"\n' \
            "enabled = false\n"
    out = describe_config(parse_config(text, str(tmp_path / "l.toml"), registry))
    lines = out.splitlines()
    assert lines[0] == f"config: {tmp_path / 'l.toml'}"
    assert "  mppt: tristar on /dev/ttyUSB0, every 30s" in lines
    assert "  bank: daly on /dev/ttyUSB1, every 500ms [disabled]" in lines
    assert "    line 9600 8N2, retries 2" in lines
    assert "    tasks: daily at '0 0 * * *'" in lines
    assert "  influxdb: influxdb, batches of up to 1000 every 5s, queue 100000" in lines
    assert "    options: url='http://db:8086', token='***', database='bms'" in lines
    assert SECRET not in out
    assert "devices (2):" in lines and "sinks (2):" in lines


def test_logger_settings_defaults_match_declarations():
    declared = {o.name: o.default for o in config_module.LOGGER_OPTIONS}
    s = LoggerSettings()
    assert (s.interval_s, s.lock_timeout_s, s.log_level, s.timezone, s.lock_dir) == (
        declared["interval"], declared["lock_timeout"], declared["log_level"],
        declared["timezone"], declared["lock_dir"])
    assert (s.tag_unsynced_clock, s.poll_stall_s, s.sink_stall_s) == (
        declared["tag_unsynced_clock"], declared["poll_stall"], declared["sink_stall"])


def test_watchdog_and_clock_keys(registry):
    cfg = parse_config(f'[logger]\npoll_stall = "5m"\nsink_stall = "90s"\n'
                       f"tag_unsynced_clock = true\n{MINIMAL}", "x.toml", registry)
    assert (cfg.settings.poll_stall_s, cfg.settings.sink_stall_s) == (300.0, 90.0)
    assert cfg.settings.tag_unsynced_clock is True
    assert parse_config(MINIMAL, "x.toml", registry).settings.poll_stall_s is None
    assert sorted(paths_of(f'[logger]\npoll_stall = "0s"\nsink_stall = "soon"\n'
                           f'tag_unsynced_clock = "yes"\n{MINIMAL}', registry)) == [
        "logger.poll_stall", "logger.sink_stall", "logger.tag_unsynced_clock"]


# --- fuzz: whatever the text, only ConfigError comes out ------------------------------------------

# hypothesis tests cannot take function-scoped fixtures
_FUZZ_REGISTRY = make_registry()

_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["30s", "5m", "500ms", "0s", "-1s", "/dev/ttyUSB0", "sim://daly",
                     "usb:0403:6001", "socket://h:1", "${HOME}", "${BMS_NOPE}", "off",
                     "58 23 * * *", "Europe/Berlin", "debug"]),
)
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
_keys = st.one_of(
    st.sampled_from([o.name for o in config_module.LOGGER_OPTIONS + config_module.DEVICE_OPTIONS
                     + config_module.SINK_OPTIONS] + ["board", "cells", "password", "tasks",
                                                     "token_file", "url", "directory"]),
    st.text(min_size=1, max_size=8),
)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "0.0"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


@settings(max_examples=150, deadline=None)
@given(
    logger=st.dictionaries(_keys, _values, max_size=4),
    device=st.dictionaries(_keys, _values, max_size=6),
    sink=st.dictionaries(_keys, _values, max_size=4),
    kind=st.sampled_from(["daly", "tristar", "emus", "nope"]),
)
def test_fuzzed_tables_give_config_errors_only(logger, device, sink, kind):
    def table(header: str, values: dict) -> str:
        return header + "\n" + "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in values.items())

    text = (table("[logger]", logger) + table(f"[[devices.{kind}]]", device)
            + table("[[sinks.influxdb]]", sink))
    try:
        cfg = parse_config(text, "fuzz.toml", _FUZZ_REGISTRY, base_dir=os.getcwd())
    except ConfigError as err:
        assert err.issues
        assert all(i.file == "fuzz.toml" for i in err.issues)
    else:
        assert len(cfg.devices) == 1 and len(cfg.sinks) == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_text_gives_config_errors_only(text):
    try:
        parse_config(text, "fuzz.toml", _FUZZ_REGISTRY, base_dir=os.getcwd())
    except ConfigError as err:
        assert err.issues
