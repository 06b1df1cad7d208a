"""Thread-safe counters a driver or sink bumps, read by self-metrics and `once`/`read`.

Counters live outside drivers so a driver rebuilt after a re-plug keeps its history, and
so the scheduler can turn them into ``bmslogger`` points without knowing any protocol.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Counters:
    """Named monotonic counts, e.g. ``checksum``, ``timeout``, ``port_busy``.

    Also holds `memory`: what a driver learns about its device that must outlive one
    poll (the runtime builds a new driver for every poll, on a freshly opened port), such
    as which host address answered or when slow-changing values are next due. Only the
    polls of one device touch it, and they never overlap, so it needs no lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.memory: dict[str, Any] = {}

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def __repr__(self) -> str:
        return f"Counters({self.snapshot()!r})"
