"""Clock sanity for machines without a real-time clock (a Raspberry Pi at boot).

Such a machine starts with the time it saved at shutdown (fake-hwclock) or 1970, and jumps
to the right time when NTP answers, minutes later. Points taken before are stamped wrong.
`ClockCheck` notices both: a *jump* is the wall clock moving against the monotonic clock
(which never jumps) by more than `JUMP_S` between two looks; *unsynchronised* is the
kernel's own verdict (``adjtimex`` returning TIME_ERROR, set until a time daemon has
disciplined the clock). A jump is logged once, and the points of each device's first poll
after it are tagged ``clock="jumped"``. Points taken while the kernel says unsynchronised
are tagged ``clock="unsynced"`` when tagging is on (``[logger] tag_unsynced_clock``; off by
default because containers and CI machines never synchronise, see the README), and the
state is logged on start and when it changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from bmslogger.model import Point

log = logging.getLogger(__name__)

#: wall-against-monotonic movement that counts as a jump (NTP slews far less than this)
JUMP_S = 2.0
_TIME_ERROR = 5
_libc: object = None


def clock_synchronized() -> bool | None:
    """The kernel's view: True synchronised, False not (yet), None unknown (not Linux).

    ``adjtimex`` with ``modes = 0`` only reads; its result is the clock state."""
    global _libc
    try:
        if _libc is None:
            name = ctypes.util.find_library("c")
            _libc = ctypes.CDLL(name, use_errno=True) if name else False
        if not _libc:
            return None
        buf = ctypes.create_string_buffer(512)  # struct timex (about 208 bytes), modes = 0
        state = _libc.adjtimex(buf)  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


class ClockCheck:
    """Shared by every poller of one logger; thread-safe."""

    def __init__(
        self,
        tag_unsynced: bool = False,
        synced: Callable[[], bool | None] = clock_synchronized,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        jump_s: float = JUMP_S,
    ) -> None:
        self.tag_unsynced = tag_unsynced
        self.synced_fn = synced
        self.wall = wall
        self.mono = mono
        self.jump_s = jump_s
        self._lock = threading.Lock()
        self._offset = wall() - mono()
        self._jumps = 0  # jumps seen so far
        self._seen: dict[str, int] = {}  # device → jumps already marked on its points
        self.synced: bool | None = synced()
        if self.synced is False:
            log.info("the system clock is not synchronised yet (no NTP answer?): point "
                        "times may be wrong until it is%s",
                        "; those points are tagged clock=unsynced" if self.tag_unsynced else "")

    def look(self) -> None:
        """Compare the clocks now; log a jump or a change of the synchronised state."""
        with self._lock:
            offset = self.wall() - self.mono()
            moved = offset - self._offset
            if abs(moved) > self.jump_s:
                self._jumps += 1
                log.warning("the wall clock jumped by %+.1f s (time set or synchronised); "
                            "points around it are tagged clock=jumped", moved)
            self._offset = offset
            synced = self.synced_fn()
            if synced != self.synced and synced is not None:
                if synced:
                    log.info("the system clock is synchronised now")
                else:
                    log.warning("the system clock lost synchronisation")
            self.synced = synced

    def mark(self, device: str, points: Sequence[Point]) -> list[Point]:
        """Look at the clocks, and tag `points` of `device` if taken around a jump or
        (with tagging on) while unsynchronised."""
        self.look()
        with self._lock:
            jumped = self._seen.get(device, 0) < self._jumps
            self._seen[device] = self._jumps
            unsynced = self.tag_unsynced and self.synced is False
        if not (jumped or unsynced):
            return list(points)
        value = "jumped" if jumped else "unsynced"
        return [replace(p, tags={**p.tags, "clock": value}) for p in points]
