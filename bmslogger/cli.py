"""The ``bmslogger`` command: argument parsing and exit codes, nothing else.

Heavy imports happen inside each command, so ``bmslogger --help`` starts fast on a
Raspberry Pi. Every expected failure ends as one line on stderr and a documented exit
status; only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from bmslogger import __version__


class ExitCode(IntEnum):
    """Exit statuses, stable for scripts and systemd (``RestartPreventExitStatus=2``)."""

    OK = 0
    #: run/once: a device failed or points stayed unsent; read: part of the poll failed
    FAILURE = 1
    #: bad usage or configuration; nothing was opened
    USAGE = 2
    #: read: the device never answered
    NO_ANSWER = 3
    #: a bug; the traceback was printed
    INTERNAL = 70


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE",
                   help="logger.toml to use (default: $BMSLOGGER_CONFIG, ./logger.toml, "
                        "/etc/bmslogger/logger.toml, then the embedded simulated default)")


def _add_device_args(p: argparse.ArgumentParser, with_format: bool = True) -> None:
    p.add_argument("plugin", help="device plugin name (see list-plugins)")
    p.add_argument("--port", required=True,
                   help="device path, usb:VID:PID[:SERIAL], socket://HOST:PORT, "
                        "rfc2217://HOST:PORT or sim://PLUGIN?key=value")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="a plugin option (see describe PLUGIN), or one of baudrate, "
                        "timeout, retries, turnaround; repeatable")
    p.add_argument("--name", help="device name in tags (default: the plugin name)")
    p.add_argument("--lock-dir", help="port lock folder (default: as the logger uses)")


def _add_export_selection(p: argparse.ArgumentParser) -> None:
    """The selection `export` and `plot` share: range, interval, aggregate, devices, fields."""
    _add_config(p)
    # --source and --aggregate are checked by bmslogger.export, not by choices=: a wrong
    # value then ends as the one-line message and exit 2 every export mistake gives
    p.add_argument("--source", default="csv", metavar="{csv,influxdb,mysql}",
                   help="where to read: the CSV sink's files (default), InfluxDB or MySQL; "
                        "settings not given come from the configuration's sink")
    p.add_argument("--from", dest="start", default="-24h",
                   help="start: now, -24h, 2026-11-22 or 2026-11-22T10:00:00Z (UTC; default -24h)")
    p.add_argument("--to", dest="end", default="now", help="end, exclusive (default now)")
    p.add_argument("--interval", default="1m", help="aggregation interval (default 1m)")
    p.add_argument("--aggregate", default="mean", metavar="{mean,min,max,last}",
                   help="per interval: mean (booleans: share true), min, max or last "
                        "(default mean)")
    p.add_argument("--device", action="append", default=[], metavar="NAME",
                   help="a device (repeatable or comma list; default all)")
    p.add_argument("--field", action="append", default=[], metavar="[MEASUREMENT.]FIELD",
                   help="e.g. voltage_v (battery) or cell.voltage_v; repeatable")
    p.add_argument("--directory", help="csv: the sink's folder (default: from the config)")
    p.add_argument("--url", help="influxdb: server URL")
    p.add_argument("--database", help="influxdb: database (1.x) or DBRP-mapped bucket")
    p.add_argument("--username", help="influxdb: user (basic auth)")
    p.add_argument("--password", help="influxdb: password")
    p.add_argument("--token", help="influxdb 2.x/3.x: API token")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")


def _add_export_commands(sub: Any) -> None:
    p = sub.add_parser("export", help="a time range of fields, aggregated per interval, "
                                      "to one CSV (units in the header, UTC, gaps empty)")
    _add_export_selection(p)
    p.add_argument("-o", "--output", help="CSV file to write (default stdout)")

    p = sub.add_parser("plot", help="the same selection as export, drawn to a PNG "
                                    "(needs matplotlib: pip install 'bmslogger[plot]')")
    _add_export_selection(p)
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--title", help="plot title (default: the fields and the range)")
    p.add_argument("--xlabel", default="time (UTC)", help="x axis label")
    p.add_argument("--ylabel", help="y axis label (default: the field names with units)")
    p.add_argument("--date-format", default="",
                   help="strftime format of the time axis, e.g. %%d.%%m %%H:%%M "
                        "(default: concise labels that fit the range)")
    p.add_argument("--style", default="default", help="matplotlib style, e.g. ggplot")
    p.add_argument("--tight", action=argparse.BooleanOptionalAction, default=True,
                   help="tight layout (default on)")
    p.add_argument("--log", action="store_true", help="logarithmic y axis")
    p.add_argument("--marker", default="", help="point marker, e.g. . or o (default none)")
    p.add_argument("--size", default="12x6", help="figure size in inches, WxH")
    p.add_argument("--dpi", type=int, default=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmslogger",
        description="Headless data logger for battery management systems and solar "
                    "charge controllers.",
    )
    parser.add_argument("--version", action="version", version=f"bmslogger {__version__}")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="override [logger] log_level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="log on schedule until stopped (SIGTERM/SIGINT)")
    _add_config(p)

    p = sub.add_parser("once", help="poll every device once, flush, exit (cron mode); "
                                    "exit 1 if a device failed or a point stayed unsent")
    _add_config(p)

    p = sub.add_parser("read", help="one poll of one device without a config file; "
                                    "prints its points")
    _add_device_args(p)
    p.add_argument("--format", choices=["json", "table"], default="json")
    p.add_argument("--check", action="store_true",
                   help="Nagios plugin output and exit codes (0 OK, 1 WARNING, 2 CRITICAL, "
                        "3 UNKNOWN)")
    p.add_argument("--warning", action="append", default=[], metavar="FIELD=RANGE",
                   help="with --check: e.g. soc_pct=20: or battery.cell_delta_v=~:0.05")
    p.add_argument("--critical", action="append", default=[], metavar="FIELD=RANGE",
                   help="with --check: e.g. soc_pct=10:")

    p = sub.add_parser("set", help="send a command that changes a device (needs "
                                   "--option allow_writes=true)")
    _add_device_args(p)
    p.add_argument("command_name", metavar="NAME", help="the command (see describe PLUGIN)")
    p.add_argument("value", metavar="VALUE", nargs="?", default="",
                   help="its value, e.g. 80 or on")
    p.add_argument("--confirm", action="store_true", help="confirm a destructive command")
    p.add_argument("--dry-run", action="store_true",
                   help="check the value and print what would be sent; send nothing")

    p = sub.add_parser("describe", help="a plugin's options, commands and every field")
    p.add_argument("plugin")
    p.add_argument("--format", choices=["text", "json"], default="text")

    p = sub.add_parser("list-plugins", help="installed device and sink plugins")
    p.add_argument("--format", choices=["text", "json"], default="text")

    p = sub.add_parser("list-ports", help="serial ports with by-id names and USB ids")
    p.add_argument("--format", choices=["text", "json"], default="text")

    p = sub.add_parser("check-config", help="check a configuration, open nothing")
    _add_config(p)

    p = sub.add_parser("status", help="what the running daemon is doing (from the status "
                                      "file it rewrites every few seconds)")
    _add_config(p)
    p.add_argument("--format", choices=["text", "json"], default="text")

    p = sub.add_parser("simulate", help="serve a device simulator on a new pseudo-terminal "
                                        "(or TCP port) paced like the real line")
    p.add_argument("plugin")
    p.add_argument("--tcp", type=int, metavar="PORT", help="serve on 127.0.0.1:PORT instead")
    p.add_argument("--host", default="127.0.0.1", help="with --tcp: address to listen on")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="simulator option (cells=16, fault=checksum, fault_rate=0.05, ...)")
    p.add_argument("--bus", metavar="LIST",
                   help="several units on one line at these addresses (1,3,7 or 1-4): "
                        "Daly boards, REC addresses, TriStar units; try detect --scan-bus")
    # --- running unattended: detect, doctor, install-service, watch ---
    p = sub.add_parser("detect", help="probe serial ports for every known device and print "
                                      "the config tables to paste")
    _add_config(p)
    p.add_argument("ports", nargs="*", metavar="PORT",
                   help="ports to probe (default: every serial port of this machine)")
    p.add_argument("--plugin", action="append", default=[],
                   help="probe only this device type; repeatable")
    p.add_argument("--baudrate", action="append", type=int, default=[], metavar="N",
                   help="also try this baud rate (each plugin's default is always tried)")
    p.add_argument("--write-config", metavar="FILE",
                   help="append the tables found to this config file")
    p.add_argument("--no-cache", action="store_true",
                   help="ignore what the last detect found (it is still updated)")
    p.add_argument("--scan-bus", action="store_true",
                   help="several units on one RS-485 bus: also ask every other address "
                        "(Daly board, REC address, TriStar unit; default 1-16) and propose "
                        "each unit that answers")
    p.add_argument("--addresses", metavar="LIST",
                   help="with --scan-bus (implies it): the addresses to ask, e.g. 1-16 "
                        "or 1,3,5-8")
    p.add_argument("--format", choices=["text", "json"], default="text")
    _add_export_commands(sub)
    p = sub.add_parser("install-service", help="write the systemd unit (Type=notify, "
                                               "watchdog, restart on failure)")
    p.add_argument("--path", metavar="FILE",
                   help="unit file to write (default /etc/systemd/system/bmslogger.service)")
    p.add_argument("--prefix", metavar="DIR",
                   help="write under DIR/etc/systemd/system instead (packaging, tests)")
    p.add_argument("--config-file", default="/etc/bmslogger/logger.toml", metavar="FILE",
                   help="the config the service runs with")
    p.add_argument("--user", default="bmslogger", help="service user (in group dialout)")
    p.add_argument("--state-dir", default="/var/lib/bmslogger", metavar="DIR")
    p.add_argument("--exec", dest="executable", metavar="PATH",
                   help="the bmslogger program (default: the one on PATH)")
    p.add_argument("--force", action="store_true", help="replace a different unit file")
    p = sub.add_parser("doctor", help="ports, permissions, lock holders, and whether every "
                                      "configured device answers")
    _add_config(p)
    p.add_argument("--raw", metavar="DEVICE",
                   help="poll this configured device once and print every byte in hex")
    p.add_argument("--save", metavar="FILE",
                   help="with --raw: also write the session as a capture file for "
                        "bmslogger replay (secrets masked)")
    p.add_argument("--polls", type=int, default=1, metavar="N",
                   help="with --raw: poll N times in a row (default 1)")
    p.add_argument("--no-poll", action="store_true", help="check ports only, poll nothing")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p = sub.add_parser("replay", help="serve a capture file (doctor --raw --save) on a new "
                                      "pseudo-terminal (or TCP port): the recorded device, "
                                      "answering as it did")
    p.add_argument("file", metavar="FILE", help="capture file written by doctor --save")
    p.add_argument("--tcp", type=int, metavar="PORT", help="serve on 127.0.0.1:PORT instead")
    p.add_argument("--host", default="127.0.0.1", help="with --tcp: address to listen on")
    p.add_argument("--timing", action="store_true",
                   help="answer after the recorded delays, not the line's turnaround")
    p = sub.add_parser("watch", help="live view of every device's values, from the running "
                                     "daemon's status file")
    _add_config(p)
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="redraw at least this often (default 1)")
    p.add_argument("--count", type=int, metavar="N", help="draw N screens, then exit")
    return parser


def _join_relative_times(argv: Sequence[str]) -> list[str]:
    """``--from -2h`` as ``--from=-2h`` (and ``--interval -5m``, which export then refuses
    in one line): argparse would take ``-2h`` for an option."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        if items[i] in ("--from", "--to", "--interval") and i + 1 < len(items) \
                and items[i + 1].startswith("-"):
            out.append(f"{items[i]}={items[i + 1]}")
            i += 2
            continue
        out.append(items[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_relative_times(sys.argv[1:] if argv is None else argv))
    if not args.command:
        parser.print_help()
        return ExitCode.USAGE
    from bmslogger import commands
    from bmslogger.errors import BmsLoggerError, ConfigError, PluginError

    try:
        return int(getattr(commands, "cmd_" + args.command.replace("-", "_"))(args))
    except ConfigError as err:
        print("configuration error" + ("s:" if len(err.issues) > 1 else ":"), file=sys.stderr)
        for issue in err.issues:
            print(f"  {issue}", file=sys.stderr)
        return ExitCode.USAGE
    except PluginError as err:
        print(f"plugin error: {err}", file=sys.stderr)
        return ExitCode.USAGE
    except commands.UsageError as err:
        print(f"bmslogger {args.command}: {err}", file=sys.stderr)
        return ExitCode.USAGE
    except BmsLoggerError as err:
        print(f"bmslogger {args.command}: {err}", file=sys.stderr)
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `bmslogger describe daly | head`: the reader left; that is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()
