"""systemd integration: readiness, a watchdog that is petted only on progress, the unit file.

``Type=notify`` services tell systemd they are ready, and with ``WatchdogSec=`` must send
``WATCHDOG=1`` more often than that, or systemd kills and restarts them. The messages are
datagrams on the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (``@name`` means the abstract
namespace); that protocol is a few lines of stdlib, so no dependency is needed, and
outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.

A watchdog petted by a timer thread only proves the timer runs. `Watchdog` pets only while
the logger makes progress: polls keep finishing (a failed poll still counts: the device is
down, not the logger), and every sink with points waiting has moved within `sink_stall_s`
(written a batch, or at least failed and scheduled a retry). A sink whose ``write`` hangs
forever, or a poll thread stuck in a driver, stops the petting and systemd restarts the
service; a database that is merely down does not (its retries are progress, its points
wait in the spool).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

UNIT_NAME = "bmslogger.service"
#: counters that move whenever a sink worker finishes an attempt, good or bad
#: Default for `Watchdog.sink_stall_s` (``[logger] sink_stall``): well above the pipeline's
#: longest retry back-off (60 s) plus a slow write.
SINK_STALL_S = 180.0
_SINK_PROGRESS = ("written", "batches", "retries", "dropped", "dead_lettered")


def sd_notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `message` ("READY=1", "WATCHDOG=1\\nSTATUS=...") to systemd.

    Returns False (and does nothing) outside systemd; never raises: a logger must not
    stop because its supervisor's socket went away."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
        return True
    except OSError as err:
        log.debug("sd_notify %r failed: %s", message, err)
        return False


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pets (half of ``WatchdogSec``), or None when no watchdog is set for
    this process (``$WATCHDOG_PID`` names another one)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6


def _without_numbers(complaint: str) -> str:
    """A complaint without its growing durations, to log each new one once."""
    return re.sub(r"\d+ s\b", "", complaint)


class Watchdog:
    """Readiness and progress-gated watchdog pets for one `LoggerService`.

    `service` needs ``pollers`` (with ``device.name`` and ``device.interval_s``),
    ``polls_running`` ((device, task) → monotonic start), ``polls_done`` (device →
    monotonic end of its last poll) and ``pipeline.stats()``; ``config.settings`` supplies
    ``poll_stall_s`` and ``sink_stall_s`` when the arguments do not. Call `ready` once
    polling is set up, `tick` often (the run loop does every second), `stopping` on the way
    out.

    Progress is judged per device: one driver hung in its poll stops the pets even while
    every other device polls happily, because its data is lost all the same.
    """

    def __init__(
        self,
        service: Any,
        env: Mapping[str, str] | None = None,
        sink_stall_s: float | None = None,
        poll_stall_s: float | None = None,
        notify: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.env = dict(os.environ if env is None else env)
        self.interval = watchdog_interval(self.env)
        self.notify = notify or (lambda message: sd_notify(message, self.env))
        self.clock = clock
        settings = getattr(getattr(service, "config", None), "settings", None)
        #: how long a sink with points waiting may show no attempt at all
        self.sink_stall_s = (sink_stall_s if sink_stall_s is not None
                             else getattr(settings, "sink_stall_s", SINK_STALL_S))
        #: a fixed poll stall limit, or None for three intervals of each device (>= 60 s)
        self.poll_stall_s = (poll_stall_s if poll_stall_s is not None
                             else getattr(settings, "poll_stall_s", None))
        self.started = clock()
        self._next_pet = self.started
        self._sinks: dict[str, tuple[tuple[Any, ...], float]] = {}
        self._complaint = ""
        self.pets = 0

    def poll_stall_for(self, interval_s: float) -> float:
        """How long a device polled every `interval_s` may go without finishing a poll."""
        if self.poll_stall_s is not None:
            return self.poll_stall_s
        return max(60.0, 3 * float(interval_s))

    def ready(self) -> None:
        """Tell systemd the logger is up (after the scheduler started)."""
        self.notify(f"READY=1\nSTATUS=logging {len(getattr(self.service, 'pollers', []))} "
                    "device(s)\nMAINPID=" + str(os.getpid()))

    def stopping(self) -> None:
        self.notify("STOPPING=1\nSTATUS=flushing sinks")

    def problems(self) -> list[str]:
        """Why the logger is not making progress now (empty: healthy)."""
        now = self.clock()
        out = []
        running = dict(getattr(self.service, "polls_running", {}))
        done = getattr(self.service, "polls_done", {})
        limits = {p.device.name: self.poll_stall_for(p.device.interval_s)
                  for p in getattr(self.service, "pollers", [])}
        for (device, task), since in sorted(running.items()):
            busy = now - since
            if busy > limits.get(device, self.poll_stall_for(0)):
                what = "poll" if task == "poll" else f"task {task}"
                out.append(f"{what} of {device} running for {busy:.0f} s")
        for device, limit in limits.items():
            quiet = now - max(done.get(device, self.started), self.started)
            if quiet > limit and (device, "poll") not in running:
                out.append(f"no poll of {device} finished for {quiet:.0f} s")
        for name, stats in self.service.pipeline.stats().items():
            marks = tuple(stats.get(k) for k in _SINK_PROGRESS)
            backlog = int(stats.get("queued") or 0) + int(stats.get("in_flight") or 0)
            seen = self._sinks.get(name)
            if seen is None or seen[0] != marks or not backlog:
                self._sinks[name] = (marks, now)
                continue
            stalled = now - seen[1]
            if stalled > self.sink_stall_s:
                out.append(f"sink {name} has {backlog} point(s) waiting and has not moved "
                           f"for {stalled:.0f} s")
        return out

    def tick(self) -> bool:
        """Pet the watchdog if one is due and the logger made progress; True if petted."""
        if self.interval is None:
            return False
        now = self.clock()
        if now < self._next_pet:
            return False
        self._next_pet = now + self.interval
        problems = self.problems()
        if problems:
            complaint = "; ".join(problems)
            if _without_numbers(complaint) != _without_numbers(self._complaint):
                log.error("not petting the systemd watchdog (the service will be restarted "
                          "if this lasts): %s", complaint)
            self._complaint = complaint
            self.notify(f"STATUS=stalled: {complaint}")
            return False
        if self._complaint:
            log.info("progress again; petting the systemd watchdog")
            self._complaint = ""
        self.pets += 1
        self.notify("WATCHDOG=1")
        return True


# --- the unit file ------------------------------------------------------------------------

#: The unit ``install-service`` writes; ``contrib/systemd/bmslogger.service`` is this with
#: the defaults below filled in (a test keeps the two equal).
UNIT_TEMPLATE = """\
# bmslogger as a system service. Written by `bmslogger install-service`; see the README,
# "Running unattended". Exit status 2 means a configuration error: restarting cannot fix
# that, so systemd does not retry it (fix the file, then `systemctl restart bmslogger`).
[Unit]
Description=bmslogger: battery management system and charge controller logger
Wants=network-online.target time-sync.target
After=network-online.target time-sync.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=@EXEC@ run -c @CONFIG@
User=@USER@
Group=@USER@
SupplementaryGroups=dialout
# /var/lib/bmslogger, owned by the service user: set state_dir and spool_dir there
StateDirectory=bmslogger
WorkingDirectory=@STATE_DIR@
# The run loop pets the watchdog only while polls finish and sinks move (a hung driver or
# a sink stuck in a write stops it), so a hung logger is killed and restarted.
WatchdogSec=120
Restart=on-failure
RestartSec=10
RestartPreventExitStatus=2
# time to finish the poll in hand and flush every sink
TimeoutStopSec=90
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths=@STATE_DIR@ /run/lock

[Install]
WantedBy=multi-user.target
"""

DEFAULTS = {"executable": "/usr/local/bin/bmslogger", "config": "/etc/bmslogger/logger.toml",
            "user": "bmslogger", "state_dir": "/var/lib/bmslogger"}


def render_unit(executable: str = DEFAULTS["executable"], config: str = DEFAULTS["config"],
                user: str = DEFAULTS["user"], state_dir: str = DEFAULTS["state_dir"]) -> str:
    """The unit with this installation's program, config file, user and state folder."""
    text = UNIT_TEMPLATE
    for key, value in (("@EXEC@", executable), ("@CONFIG@", config), ("@USER@", user),
                       ("@STATE_DIR@", state_dir)):
        if any(c in value for c in "\n\"'\\") or not value:
            raise ValueError(f"cannot put {value!r} in a unit file")
        text = text.replace(key, value)
    return text


def install_unit(path: str, text: str, force: bool = False) -> None:
    """Write the unit to `path` (refusing to replace a different one unless `force`)."""
    if os.path.exists(path) and not force:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
        raise FileExistsError(f"{path} exists and differs; use --force to replace it")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def next_steps(path: str, user: str, config: str, state_dir: str) -> str:
    """What the administrator still has to do (needs root; never done silently)."""
    return f"""wrote {path}. As root, then:
  useradd --system --user-group --groups dialout --home-dir {state_dir} \\
      --shell /usr/sbin/nologin {user}
  # in {config}: state_dir = "{state_dir}/state" and spool_dir = "{state_dir}/spool"
  systemctl daemon-reload && systemctl enable --now {os.path.basename(path)}
  systemctl status {os.path.basename(path)}; journalctl -u {os.path.basename(path)} -f"""
