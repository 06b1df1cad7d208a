"""One lock per physical serial port, so two programs never interleave bytes on one line.

A daemon polling every 10 s and a ``bmslogger once`` from cron (or two threads of one
daemon whose devices share an RS-485 bus) must take turns: a request written half by one
and half by the other is garbage to the device, and an answer read by the wrong program
is lost to the right one. Every conversation runs inside `PortLock`.

The lock is the kernel's ``flock`` on ``<lock_dir>/LCK..<identity>``. The kernel drops it
when its holder exits, however it exits, so a crashed or SIGKILLed holder never leaves a
stale lock. The file follows the UUCP/FHS convention (name ``LCK..ttyUSB0``, content the
holder's pid as ``"%10d\\n"``) so people and tools see who holds a port; the pid is written
while holding and truncated before unlocking, and the file is never removed (removing a
lock file that another process has just opened is how lock-file races are born).

Each acquisition opens its own descriptor, so two threads of one process exclude each
other as two processes do (``flock`` locks belong to open file descriptions).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time

from bmslogger.errors import PortBusyError, TransportError

#: Back-off between attempts: starts short so a quick conversation ending is noticed
#: at once, grows so a long wait does not spin.
_FIRST_WAIT_S = 0.001
_MAX_WAIT_S = 0.05


def lock_path(identity: str, lock_dir: str) -> str:
    """The lock file of port `identity` (from `bmslogger.transport.port_identity`)."""
    if not identity or "/" in identity or identity in (".", ".."):
        raise TransportError(f"invalid port identity {identity!r} for a lock file name")
    return os.path.join(lock_dir, f"LCK..{identity}")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0)
    except OSError:
        return None
    try:
        pid = int(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return pid if pid > 0 else None


def _open_lock_file(path: str, lock_dir: str) -> tuple[int, bool]:
    """Open (creating) the lock file; returns (fd, writable).

    Falls back to read-only when another user created the file: ``flock`` works on a
    read-only descriptor, only the pid cannot be written then.
    """
    try:
        os.makedirs(lock_dir, exist_ok=True)
    except OSError as err:
        raise TransportError(
            f"cannot create the port lock folder {lock_dir}: {err.strerror or err}"
        ) from err
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664), True
    except OSError as err:
        if err.errno == errno.EACCES and os.path.exists(path):
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC), False
            except OSError:
                pass
        why = err.strerror or str(err)
        raise TransportError(
            f"cannot write port lock {path} in folder {lock_dir}: {why} "
            "(set another lock folder in the config, or give this user write access)"
        ) from err


class PortLock:
    """Exclusive use of one physical port, across processes and threads.

    ``with PortLock("ttyUSB0", "/run/lock", timeout_s=10): ...`` waits up to `timeout_s`
    (retrying with a short growing back-off) and raises `PortBusyError` naming the port
    and the holder's pid if it is still held. `waited_s` is how long the last acquisition
    in this thread took (for self-metrics). One object may be shared by several threads;
    the thread that acquired it releases it. Not re-entrant: taking it twice in one thread
    is refused.
    """

    def __init__(self, identity: str, lock_dir: str, timeout_s: float) -> None:
        self.identity = identity
        self.lock_dir = lock_dir
        self.timeout_s = max(0.0, float(timeout_s))
        self.path = lock_path(identity, lock_dir)
        self._local = threading.local()

    @property
    def waited_s(self) -> float:
        return getattr(self._local, "waited_s", 0.0)

    @property
    def held(self) -> bool:
        """True while the calling thread holds this lock."""
        return getattr(self._local, "fd", None) is not None

    def acquire(self) -> None:
        if self.held:
            raise TransportError(f"port {self.identity}: lock already held by this thread")
        started = time.monotonic()
        deadline = started + self.timeout_s
        fd, writable = _open_lock_file(self.path, self.lock_dir)
        wait = _FIRST_WAIT_S
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                now = time.monotonic()
                if now >= deadline:
                    holder = _read_pid(fd)
                    who = f"pid {holder}" if holder else "another process (pid unknown)"
                    self._local.waited_s = now - started
                    raise PortBusyError(
                        f"port {self.identity} is busy: held by {who} for more than "
                        f"{self.timeout_s:g}s (lock file {self.path})",
                        holder_pid=holder,
                    )
                time.sleep(min(wait, deadline - now))
                wait = min(wait * 2, _MAX_WAIT_S)
        except BaseException:
            os.close(fd)
            raise
        if writable:
            with contextlib.suppress(OSError):  # the lock holds even if the pid can't be shown
                os.ftruncate(fd, 0)
                os.pwrite(fd, b"%10d\n" % os.getpid(), 0)
        self._local.fd = fd
        self._local.writable = writable
        self._local.waited_s = time.monotonic() - started

    def release(self) -> None:
        fd = getattr(self._local, "fd", None)
        if fd is None:
            # like threading.Lock: releasing what this thread does not hold is a bug
            raise RuntimeError(f"port {self.identity}: release of a lock this thread does not hold")
        self._local.fd = None
        try:
            if self._local.writable:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> PortLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PortLock({self.identity!r}, {self.lock_dir!r}, timeout_s={self.timeout_s:g})"


def lock_holder(identity: str, lock_dir: str) -> int | None:
    """The pid holding port `identity` now, or None if it is free.

    0 means held by a process that wrote no pid (it could not write the file, or has just
    taken the lock). For ``bmslogger doctor`` and error messages.
    """
    path = lock_path(identity, lock_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise TransportError(f"cannot read port lock {path}: {err.strerror or err}") from err
    try:
        for _ in range(20):
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                if pid:
                    return pid
                # just locked (pid not written yet) or about to unlock: look again
                time.sleep(0.005)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return 0
    finally:
        os.close(fd)
