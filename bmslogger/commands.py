"""What each ``bmslogger`` sub-command does; `bmslogger.cli` parses and maps exit codes.

Kept apart from the parser so that ``--help`` imports none of this.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bmslogger.cli import ExitCode, print_json
from bmslogger.errors import BmsLoggerError, ConfigError, ConfigIssue
from bmslogger.logs import setup_logging
from bmslogger.manager import Registry, build_registry
from bmslogger.model import DeviceConfig, Point, PortSettings
from bmslogger.options import Option, OptionProblems, parse_key_values, resolve_options

log = logging.getLogger("bmslogger")


class UsageError(BmsLoggerError):
    """The command line is wrong (exit 2)."""


#: keys `read`/`set` accept in --option besides the plugin's own options
LINE_OPTIONS: tuple[Option, ...] = (
    Option("baudrate", "int", 0, "line speed; 0 = the plugin's default", min=0),
    Option("timeout", "duration", 0.0, "answer deadline; 0 = computed from the wire time"),
    Option("retries", "int", 2, "tries after the first failed one", min=0, max=10),
    Option("turnaround", "duration", -1.0, "device answer latency; negative = default"),
)


def _load(args: argparse.Namespace) -> tuple[Any, Registry]:
    from bmslogger.config import load_config

    registry = build_registry()
    config = load_config(getattr(args, "config", None), registry)
    return config, registry


def _setup_logging(args: argparse.Namespace, config: Any = None) -> None:
    settings = getattr(config, "settings", None)
    level = args.log_level or getattr(settings, "log_level", "info")
    setup_logging(level, getattr(settings, "log_file", "") or "")


# --- run / once / check-config -------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from bmslogger.runtime import LoggerService

    config, registry = _load(args)
    _setup_logging(args, config)
    log.info("configuration: %s", config.file)
    service = LoggerService(config, registry)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    unsent = service.run(stop)
    return ExitCode.FAILURE if unsent else ExitCode.OK


def cmd_once(args: argparse.Namespace) -> int:
    from bmslogger.runtime import LoggerService

    config, registry = _load(args)
    _setup_logging(args, config)
    service = LoggerService(config, registry)
    results, unsent = service.once()
    failed = [p.device.name for p, r in zip(service.pollers, results) if not r.complete]
    if failed:
        log.error("incomplete poll: %s", ", ".join(failed))
    if unsent:
        log.error("%d point(s) stayed unsent", unsent)
    return ExitCode.FAILURE if failed or unsent else ExitCode.OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from bmslogger.config import describe_config

    config, _ = _load(args)
    print(describe_config(config))
    print("configuration OK")
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    """Print the daemon's status file; exit 1 unless it is fresh and its pid runs."""
    from bmslogger.status import assess, format_text, read_status, status_path

    config, _ = _load(args)
    path = status_path(config.settings.state_dir)
    try:
        status = assess(read_status(path))
    except FileNotFoundError:
        print(f"no status file {path}: bmslogger run has not run with this config",
              file=sys.stderr)
        return ExitCode.FAILURE
    except (OSError, ValueError) as err:
        raise BmsLoggerError(f"cannot read {path}: {err}") from None
    if args.format == "json":
        print_json(status)
    else:
        print(format_text(status))
    return ExitCode.OK if status["state"] == "running" else ExitCode.FAILURE


# --- read / set -----------------------------------------------------------------------------


def _device_from_args(args: argparse.Namespace, registry: Registry) -> tuple[DeviceConfig, str]:
    """A DeviceConfig from --port/--option, checked like a config table would be."""
    dtype = registry.device(args.plugin)
    try:
        raw = parse_key_values(args.option)
    except ValueError as err:
        raise UsageError(str(err)) from None
    line_names = {o.name for o in LINE_OPTIONS}
    line_raw = {k: v for k, v in raw.items() if k in line_names}
    plugin_raw = {k: v for k, v in raw.items() if k not in line_names}
    problems = OptionProblems()
    line = resolve_options(LINE_OPTIONS, line_raw, from_text=True, problems=problems)
    opts = resolve_options(dtype.options, plugin_raw, from_text=True, problems=problems)
    if problems:
        raise ConfigError([ConfigIssue("command line", f"--option {k}", m)
                           for k, m in problems.items])
    settings: PortSettings = dtype.port_defaults
    if line.baudrate:
        settings = replace(settings, baudrate=line.baudrate)
    if line.turnaround >= 0:
        settings = replace(settings, turnaround_s=line.turnaround)
    device = DeviceConfig(
        name=args.name or args.plugin,
        plugin=args.plugin,
        port=args.port,
        interval_s=0.0,
        port_settings=settings,
        options=opts,
        timeout_s=line.timeout or None,
        retries=line.retries,
    )
    lock_dir, state_dir = _logger_folders(registry)
    device = replace(device, audit_log=os.path.join(state_dir, "audit.log"))
    return device, args.lock_dir or lock_dir


def _logger_folders(registry: Registry) -> tuple[str, str]:
    """(lock folder, state folder) the logger itself would use, so `read`/`set` and `run`
    share port locks and one audit log."""
    from bmslogger.config import default_lock_dir, load_config

    try:
        settings = load_config(None, registry).settings
        return str(settings.lock_dir), str(settings.state_dir)
    except ConfigError:
        state_dir = os.path.abspath(os.path.join("data", "state"))
        return default_lock_dir(state_dir)[0], state_dir


def cmd_read(args: argparse.Namespace) -> int:
    from bmslogger.nagios import Threshold, evaluate
    from bmslogger.runtime import DevicePoller

    # stderr carries one line per failed request below; availability warnings would repeat it
    setup_logging(args.log_level or "error")
    registry = build_registry()
    device, lock_dir = _device_from_args(args, registry)
    try:
        warning = [Threshold.parse(s) for s in args.warning]
        critical = [Threshold.parse(s) for s in args.critical]
    except ValueError as err:
        raise UsageError(str(err)) from None
    poller = DevicePoller(device, registry.device(device.plugin), lock_dir)
    result = poller.run()
    points = [p for p in result.points if p.measurement != "bmslogger"]
    for error in result.errors:
        print(f"{device.name}: {error}", file=sys.stderr)
    if args.check:
        status, text = evaluate(device.plugin, points, warning, critical, result.silent)
        print(text)
        return status
    if args.format == "json":
        print_json([p.to_json() for p in points])
    else:
        print(_table(points))
    if result.silent:
        return ExitCode.NO_ANSWER
    return ExitCode.OK if result.complete else ExitCode.FAILURE


def _table(points: list[Point]) -> str:
    lines: list[str] = []
    for p in points:
        extra = {k: v for k, v in p.tags.items() if k not in ("device", "plugin")}
        head = p.measurement + "".join(f" {k}={v}" for k, v in extra.items())
        lines.append(head)
        for k, v in p.fields.items():
            lines.append(f"    {k:<28} {_show(v)}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def cmd_set(args: argparse.Namespace) -> int:
    from bmslogger.locking import PortLock
    from bmslogger.transport import open_transport, port_identity

    setup_logging(args.log_level or "info")
    registry = build_registry()
    device, lock_dir = _device_from_args(args, registry)
    dtype = registry.device(device.plugin)
    if args.dry_run:
        driver = dtype.load_driver()(device, None)
        print_json(dict(driver.write(args.command_name, args.value, dry_run=True)))
        return ExitCode.OK
    with PortLock(port_identity(device.port), lock_dir, device.lock_timeout_s), \
            open_transport(device.port, device.port_settings) as line:
        driver = dtype.load_driver()(device, line)
        answer = driver.write(args.command_name, args.value, confirmed=args.confirm)
    print_json(dict(answer))
    return ExitCode.OK


# --- plugins, ports, simulator ----------------------------------------------------------------


def cmd_list_plugins(args: argparse.Namespace) -> int:
    registry = build_registry()
    rows = [
        {"kind": kind, "name": name, "title": t.title, "plugin": registry.sources[f"{kind}:{name}"]}
        for kind, types in (("device", registry.devices), ("sink", registry.sinks))
        for name, t in sorted(types.items())
    ]
    if args.format == "json":
        print_json(rows)
        return ExitCode.OK
    for r in rows:
        print(f"{r['kind']:<7} {r['name']:<12} {r['title']}  (from {r['plugin']})")
    return ExitCode.OK


def cmd_describe(args: argparse.Namespace) -> int:
    registry = build_registry()
    if args.plugin in registry.sinks:
        stype = registry.sinks[args.plugin]
        data: dict[str, Any] = {"kind": "sink", "name": stype.name, "title": stype.title,
                                "options": [_opt(o) for o in stype.options]}
    else:
        dtype = registry.device(args.plugin)
        data = {
            "kind": "device", "name": dtype.name, "title": dtype.title,
            "port": {"baudrate": dtype.port_defaults.baudrate,
                     "framing": f"{dtype.port_defaults.bytesize}{dtype.port_defaults.parity}"
                                f"{dtype.port_defaults.stopbits:g}"},
            "options": [_opt(o) for o in dtype.options],
            "commands": [{"name": w.name, "value": w.value, "description": w.description,
                          "settable": True, "unit": w.unit, "min": w.min, "max": w.max,
                          "needs_confirmation": w.needs_confirmation}
                         for w in dtype.writes],
            "tasks": [{"name": t.name, "cron": t.default_cron, "description": t.description}
                      for t in dtype.tasks],
            "fields": [{"measurement": f.measurement, "field": f.field, "type": f.type,
                        "unit": f.unit, "description": f.description}
                       for f in dtype.load_fields()],
        }
    if args.format == "json":
        print_json(data)
        return ExitCode.OK
    print(f"{data['name']}: {data['title']}")
    if "port" in data:
        print(f"  line: {data['port']['baudrate']} baud {data['port']['framing']}")
    print("options:")
    for o in data["options"]:
        print(f"  {o['name']:<18} {o['expected']:<40} default {o['default']!r}  {o['help']}")
    for c in data.get("commands", []):
        limits = [f"unit {c['unit']}"] if c.get("unit") else []
        if c.get("min") is not None or c.get("max") is not None:
            limits.append(f"min {c['min']:g} max {c['max']:g}" if c.get("min") is not None
                          and c.get("max") is not None else f"min {c['min']} max {c['max']}")
        if c.get("needs_confirmation"):
            limits.append("needs --confirm")
        extra = f" [settable; {', '.join(limits)}]" if limits else " [settable]"
        print(f"command {c['name']} {c['value']}: {c['description']}{extra}")
    for t in data.get("tasks", []):
        print(f"task {t['name']} at {t['cron']!r}: {t['description']}")
    current = None
    for f in data.get("fields", []):
        if f["measurement"] != current:
            current = f["measurement"]
            print(f"measurement {current}:")
        print(f"  {f['field']:<26} {f['type']:<6} {f['unit']:<5} {f['description']}")
    return ExitCode.OK


def _opt(o: Option) -> dict[str, Any]:
    return {"name": o.name, "expected": o.expected(), "default": None if o.required else o.default,
            "help": o.help}


def cmd_list_ports(args: argparse.Namespace) -> int:
    from bmslogger.ports import list_serial_ports

    ports = list_serial_ports()
    if args.format == "json":
        print_json([p.to_json() for p in ports])
        return ExitCode.OK
    if not ports:
        print("no serial ports found")
        return ExitCode.OK
    for p in ports:
        ids = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else "-"
        print(f"{p.device:<16} {ids:<10} serial={p.serial_number or '-':<16} "
              f"{p.product or p.description or ''}")
        if p.by_id:
            print(f"    by-id:  {p.by_id}")
        print(f"    config: port = \"{p.stable_url}\"")
    return ExitCode.OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from bmslogger.simline import build_bus, build_simulator

    setup_logging(args.log_level or "warning")
    try:
        raw = parse_key_values(args.option)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.bus:
        from bmslogger.detect import parse_addresses

        try:
            addresses = parse_addresses(args.bus)
        except ValueError as err:
            raise UsageError(f"--bus: {err}") from None
        simulator = build_bus(args.plugin, raw, addresses)
    else:
        simulator = build_simulator(args.plugin, raw)
    units = f" units {args.bus}" if args.bus else ""
    _serve_until_stopped(simulator, args, lambda where: (
        f"{args.plugin} simulator{units} on {where} "
        f"({simulator.port_settings.baudrate} baud); Ctrl-C stops it"))
    return ExitCode.OK


def _serve_until_stopped(simulator: Any, args: argparse.Namespace,
                         describe: Callable[[str], str]) -> None:
    """Serve `simulator` on a new pty (or ``--tcp``) until SIGTERM/SIGINT. The path or URL
    goes first on stdout, alone, so a script can read it; `describe` says the rest on
    stderr."""
    from bmslogger.simline import serve_pty, serve_tcp

    try:
        server = serve_tcp(simulator, args.host, args.tcp) if args.tcp is not None \
            else serve_pty(simulator)
    except OSError as err:  # the TCP port is taken, or no pty is left
        raise BmsLoggerError(f"cannot serve: {err.strerror or err}") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with server:
        where = (f"socket://{server.address[0]}:{server.address[1]}"
                 if args.tcp is not None else server.path)
        print(where, flush=True)
        print(describe(where), file=sys.stderr, flush=True)
        stop.wait()


# --- running unattended: detect ---------------------------------------------------------------


def _folders_for(args: argparse.Namespace, registry: Registry) -> tuple[str, str]:
    """(lock folder, state folder) of the config given with -c, else as `read` finds them."""
    if getattr(args, "config", None):
        from bmslogger.config import default_lock_dir, load_config

        try:
            settings = load_config(args.config, registry).settings
            return str(settings.lock_dir), str(settings.state_dir)
        except ConfigError:
            # a config still without devices (what detect is for): its [logger] folders
            from bmslogger.detect import logger_folders

            folders = logger_folders(args.config)
            if folders is None:
                raise
            lock_dir, state_dir = folders
            return lock_dir or default_lock_dir(state_dir)[0], state_dir
    return _logger_folders(registry)


def cmd_detect(args: argparse.Namespace) -> int:
    """Probe ports for every device type; print (and optionally append) config tables.
    Exit 0 if something answered, 1 if nothing did."""
    from bmslogger.detect import (
        DEFAULT_SCAN,
        append_config,
        config_blocks,
        configured_names,
        detect_ports,
        parse_addresses,
    )

    setup_logging(args.log_level or "warning")
    registry = build_registry()
    unknown = [n for n in args.plugin if n not in registry.devices]
    if unknown:
        raise UsageError(f"unknown device plugin(s) {', '.join(unknown)} "
                         f"(installed: {', '.join(sorted(registry.devices))})")
    scan = None
    if args.addresses is not None:
        try:
            scan = parse_addresses(args.addresses)
        except ValueError as err:
            raise UsageError(f"--addresses: {err}") from None
    elif args.scan_bus:
        scan = DEFAULT_SCAN
    lock_dir, state_dir = _folders_for(args, registry)
    ports = list(args.ports)
    if not ports:
        from bmslogger.ports import list_serial_ports

        ports = [p.device for p in list_serial_ports()]
        if not ports:
            print("no serial ports found (give ports on the command line, e.g. "
                  "socket://host:port)", file=sys.stderr)
            return ExitCode.FAILURE
    results = detect_ports(ports, registry, lock_dir, state_dir, baudrates=args.baudrate,
                           plugins=args.plugin or None, use_cache=not args.no_cache,
                           scan=scan)
    found = [f for r in results for f in r.found]
    taken = configured_names(args.write_config) if args.write_config else set()
    text = config_blocks(found, taken)
    if args.format == "json":
        print_json({"found": [f.to_json() for f in found],
                    "silent": [r.port for r in results if not r.found and not r.problem],
                    "skipped": [{"port": r.port, "problem": r.problem}
                                for r in results if r.problem],
                    "config": text})
    else:
        for r in results:
            if r.problem:
                why = r.problem[len(r.port) + 2:] if r.problem.startswith(f"{r.port}: ") \
                    else r.problem
                print(f"# skipped {r.port}: {why}", file=sys.stderr)
            elif not r.found:
                print(f"# nothing answered on {r.port}", file=sys.stderr)
        if text:
            print(text, end="")
    if args.write_config and found:
        append_config(args.write_config, text)
        print(f"appended {len(found)} device table(s) to {args.write_config}", file=sys.stderr)
    return ExitCode.OK if found else ExitCode.FAILURE


# --- export / plot -------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    """Exit 2 for a usage mistake (bad --from/--to/--interval/--aggregate, unknown field
    or device, a source not configured), 1 when the source fails or holds no data."""
    from bmslogger.export import SelectionError, build_table, write_csv

    try:
        table = build_table(args)
    except SelectionError as err:
        raise UsageError(str(err)) from None
    if args.output:
        tmp = args.output + ".tmp"
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as out:
                rows = write_csv(table, out)
            os.replace(tmp, args.output)
        except OSError as err:
            raise UsageError(f"-o {args.output}: cannot write: {err.strerror or err}") \
                from None
        print(f"{args.output}: {rows} rows, {len(table.cells)} columns", file=sys.stderr)
    else:
        write_csv(table, sys.stdout)
    return ExitCode.OK


def cmd_plot(args: argparse.Namespace) -> int:
    """Exit codes as `export`; the picture's options are checked before data is read."""
    from bmslogger.export import SelectionError, build_table
    from bmslogger.plot import PlotOptions, plot_table

    try:
        options = PlotOptions.from_args(args)
        table = build_table(args)
        try:
            plot_table(table, args.output, options)
        except OSError as err:
            raise UsageError(f"-o {args.output}: cannot write: {err.strerror or err}") \
                from None
    except SelectionError as err:
        raise UsageError(str(err)) from None
    print(f"{args.output}: {len(table.cells)} lines", file=sys.stderr)
    return ExitCode.OK


# --- running unattended: install-service ------------------------------------------------------


def cmd_install_service(args: argparse.Namespace) -> int:
    """Write the systemd unit for this installation; print what root must do next."""
    import shutil

    from bmslogger.systemd import UNIT_NAME, install_unit, next_steps, render_unit

    path = args.path or os.path.join(args.prefix or "/", "etc/systemd/system", UNIT_NAME)
    executable = args.executable or shutil.which("bmslogger") or os.path.abspath(sys.argv[0])
    try:
        text = render_unit(os.path.abspath(executable), args.config_file, args.user,
                           args.state_dir)
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        install_unit(path, text, force=args.force)
    except FileExistsError as err:
        raise UsageError(str(err)) from None
    except OSError as err:
        raise BmsLoggerError(f"cannot write {path}: {err.strerror or err} "
                             "(run as root, or give --prefix/--path)") from None
    print(next_steps(path, args.user, args.config_file, args.state_dir))
    return ExitCode.OK


# --- running unattended: doctor -----------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    """Ports, access, lock holders, configured devices; exit 1 if anything needs fixing."""
    from bmslogger.capture import Recorder, write_capture
    from bmslogger.doctor import HexLog, check_device, check_ports, raw_polls
    from bmslogger.runtime import DevicePoller

    setup_logging(args.log_level or "error")
    config, registry = _load(args)
    lock_dir = str(config.settings.lock_dir)
    if args.raw:
        try:
            device = config.device(args.raw)
        except (KeyError, BmsLoggerError):
            names = ", ".join(d.name for d in config.devices) or "none"
            raise UsageError(f"no device {args.raw!r} in {config.file} (devices: {names})") \
                from None
        if args.polls < 1:
            raise UsageError("--polls must be at least 1")
        hexlog = HexLog()
        recorder = Recorder() if args.save else None
        results = []
        try:
            results = raw_polls(device, registry.device(device.plugin), lock_dir, hexlog,
                                args.polls, recorder)
        finally:
            for line in hexlog.lines():
                print(line)
            if recorder is not None and recorder.records:
                # even a failed session is worth a bug report
                write_capture(args.save, device, recorder)
                print(f"capture written to {args.save}", file=sys.stderr)
            elif recorder is not None:
                # modbus-tcp:// drivers own their connection: no bytes pass the tap
                print(f"no bytes seen on the line; {args.save} not written", file=sys.stderr)
        for n, result in enumerate(results, start=1):
            for error in result.errors:
                print(f"error: {error}", file=sys.stderr)
            which = f" poll {n}" if len(results) > 1 else ""
            print(f"{device.name}{which}: {result.answered} of {result.requests} request(s) "
                  f"answered, {len(result.points)} point(s)", file=sys.stderr)
        return ExitCode.OK if all(r.complete for r in results) else ExitCode.FAILURE
    if args.save or args.polls != 1:
        raise UsageError("--save and --polls go with --raw DEVICE")
    ports = check_ports(lock_dir)
    devices = []
    if not args.no_poll:
        for d in config.devices:
            if d.enabled:
                devices.append(check_device(
                    DevicePoller(d, registry.device(d.plugin), lock_dir)))
    bad = [p for p in ports if not p.may_open] + [d for d in devices if not d.get("answers")]
    if args.format == "json":
        print_json({"user": os.getuid(), "groups": os.getgroups(), "lock_dir": lock_dir,
                    "config": config.file, "ports": [p.to_json() for p in ports],
                    "devices": devices})
        return ExitCode.FAILURE if bad else ExitCode.OK
    print(f"config {config.file}; port locks in {lock_dir}")
    print("serial ports:" if ports else "serial ports: none found")
    for p in ports:
        ids = p.usb_id or "-"
        print(f"  {p.device}  usb {ids}  serial {p.serial_number or '-'}  "
              f"{p.description or ''}".rstrip())
        if p.by_id:
            print(f"    by-id: {p.by_id}")
        print(f"    config: port = \"{p.stable_url}\"")
        access = "yes" if p.may_open else f"NO ({p.hint})"
        print(f"    group {p.group}; this user may open it: {access}")
        print("    lock: " + ("free" if p.lock_holder is None else
                              f"held by pid {p.lock_holder or 'unknown'}"))
    if devices:
        print("configured devices:")
    for d in devices:
        state = ("answers" if d.get("complete") else "answers in part") if d.get("answers") \
            else "SILENT"
        print(f"  {d['device']} ({d['plugin']}) on {d['port']}: {state}"
              + (f", {d['answered']}/{d['requests']} requests in {d['seconds']} s"
                 if "requests" in d else ""))
        if d.get("hint"):
            print(f"    {d['hint']}")
        if d.get("lock_holder"):
            print(f"    lock held by pid {d['lock_holder']}")
        for error in d.get("errors", [])[:5]:
            print(f"    {error}")
    return ExitCode.FAILURE if bad else ExitCode.OK


# --- replay --------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    """Serve a capture file's device until Ctrl-C; print the pty path (or URL) first."""
    from bmslogger.capture import CaptureError, ReplaySimulator, load_capture

    setup_logging(args.log_level or "warning")
    try:
        capture = load_capture(args.file)
    except CaptureError as err:
        raise UsageError(str(err)) from None
    simulator = ReplaySimulator(capture, timing=args.timing)
    _serve_until_stopped(simulator, args, lambda where: (
        f"replaying {capture.header.get('plugin') or 'a device'} capture {args.file} "
        f"({len(simulator.answers)} distinct request(s), "
        f"{simulator.port_settings.baudrate} baud) on {where}; Ctrl-C stops it"))
    print(f"{simulator.answered} answer(s) sent, "
          f"{simulator.ignored['unknown request']} unknown request(s) left unanswered",
          file=sys.stderr)
    return ExitCode.OK


# --- running unattended: watch ------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace) -> int:
    """Redraw the daemon's devices and sinks as its status file changes (Ctrl-C ends)."""
    from bmslogger.status import status_path
    from bmslogger.watch import watch

    config, _ = _load(args)
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    watch(status_path(config.settings.state_dir), max(0.1, args.interval), args.count)
    return ExitCode.OK
