"""Delivery pipeline: every sink gets its own bounded queue and worker thread.

The scheduler hands each poll's points to `Pipeline.submit`, which only appends them to
one queue per sink and returns; it never waits for I/O. A worker thread per sink opens
its sink, cuts the queue into batches (``batch_size`` points, or whatever is queued once
the oldest waiting point is ``flush_interval_s`` old), writes them, and sorts failures:

* `SinkUnavailable` (and any unexpected exception, which is a bug and logged with its
  traceback once per failure episode): the batch stays at the head of the queue and is
  retried, in order, after an exponential back-off with jitter that honours the sink's
  ``retry_after`` hint. A flush or close request wakes the back-off at once, so shutdown
  never waits for a back-off to run out.
* `SinkError`: the batch can never be written; it is appended to
  ``<dead_letter_dir>/<sink>.jsonl`` (see `read_dead_letters`), counted, reported
  through ``on_dropped`` (the ``points_dropped`` hook), and the worker goes on.

A slow, hanging or failing sink therefore delays only itself. Each queue holds at most
``max_queue`` points; on overflow the oldest points that are not being written right now
are dropped, counted, reported through ``on_dropped``, and logged once per overflow
episode (the episode ends when the queue has drained to half its bound).

Where the disk spool goes: the queue is the small `_MemoryQueue` class, used only
through ``put`` / ``reserve`` / ``commit`` / ``__len__`` / ``waiting`` /
``oldest_waiting_since``. A batch is *reserved* (peeked) while it is written and
*committed* (removed) only after the sink stored it or it was dead-lettered, so a
durable spool can replace the class one-for-one: ``put`` appends to an append-only
segment file per sink under the spool folder (fsynced per submit), ``reserve`` reads
from a persisted read cursor, and ``commit`` advances and fsyncs the cursor and deletes
segments it has passed. A crash, a SIGKILL or a database outage of days then loses
nothing: on start the worker replays from the cursor, in order. The overflow bound
becomes a byte budget on disk instead of a point count in memory.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Callable, Optional

from bmslogger.errors import SinkError, SinkUnavailable
from bmslogger.model import Point, SinkConfig
from bmslogger.sink import Sink

log = logging.getLogger(__name__)

DroppedCallback = Callable[[str, Sequence[Point], str], None]

#: Default back-off: the first retry after about 0.5 s, doubling up to one minute.
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 60.0
#: A server's Retry-After is honoured up to this long.
RETRY_AFTER_MAX_S = 3600.0


class _MemoryQueue:
    """Bounded FIFO of points for one sink, with a reserved head (the batch in flight).

    Only the worker reserves and commits; `put` may come from any thread. The owner
    holds the lock around every call.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, int(limit))
        self._items: deque[tuple[float, Point]] = deque()
        self._reserved = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def reserved(self) -> int:
        return self._reserved

    def waiting(self) -> int:
        """Points queued and not yet part of a batch in flight."""
        return len(self._items) - self._reserved

    def oldest_waiting_since(self) -> float | None:
        """Monotonic arrival time of the oldest waiting point, or None."""
        if len(self._items) > self._reserved:
            return self._items[self._reserved][0]
        return None

    def put(self, points: Sequence[Point], now: float) -> list[Point]:
        """Append `points`; return the points dropped to stay within the limit (oldest
        first, never those of the batch in flight)."""
        self._items.extend((now, p) for p in points)
        dropped: list[Point] = []
        excess = len(self._items) - self.limit
        while excess > 0 and len(self._items) > self._reserved:
            # deleting next to the reserved head is cheap: the head is at most one batch
            dropped.append(self._items[self._reserved][1])
            del self._items[self._reserved]
            excess -= 1
        return dropped

    def reserve(self, n: int) -> list[Point]:
        """The batch in flight: the reserved head, or the next `n` points if none."""
        if self._reserved == 0:
            self._reserved = min(n, len(self._items))
        return [self._items[i][1] for i in range(self._reserved)]

    def commit(self) -> int:
        """Remove the batch in flight (written or dead-lettered); return its size."""
        n = self._reserved
        for _ in range(n):
            self._items.popleft()
        self._reserved = 0
        return n


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def dead_letter_path(dead_letter_dir: str, sink_name: str) -> str:
    """Where the dead letters of one sink go: ``<dir>/<sink name>.jsonl``."""
    safe = _SAFE_NAME.sub("_", sink_name) or "_"
    if safe.startswith("."):
        safe = "_" + safe
    return os.path.join(dead_letter_dir, safe + ".jsonl")


def read_dead_letters(path: str) -> list[tuple[Point, str]]:
    """Read a dead-letter file back as ``(point, error)`` pairs, e.g. to replay them.

    Each line is ``Point.to_json()`` plus ``time_ns`` (the exact time; ``time`` keeps only
    microseconds), ``error`` (why the sink refused it) and ``sink``.
    """
    out: list[tuple[Point, str]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            point = Point(
                measurement=obj["measurement"],
                tags=obj["tags"],
                fields=obj["fields"],
                time_ns=int(obj["time_ns"]),
            )
            out.append((point, obj.get("error", "")))
    return out


class _Worker:
    """One sink, its queue, its counters and the thread that writes."""

    def __init__(
        self,
        config: SinkConfig,
        sink: Sink,
        dead_letter_dir: str,
        on_dropped: DroppedCallback | None,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self.config = config
        self.name = config.name
        self.sink = sink
        self.dead_letter_dir = dead_letter_dir
        self.on_dropped = on_dropped
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.batch_size = max(1, int(config.batch_size))
        self.interval = max(0.0, float(config.flush_interval_s))
        self.cond = threading.Condition()
        self.queue = _MemoryQueue(config.max_queue)
        self.thread: threading.Thread | None = None
        self.opened = False
        self.stop_requested = False
        self.close_ticket = 0  # the flush request whose completion ends the worker
        self.finished = False
        # flush requests are numbered; flush_done is the newest one fully served
        self.flush_req = 0
        self.flush_done = 0
        # bumped on every flush or stop request: wakes a back-off early
        self.wake_gen = 0
        self._action_gen = 0
        self.failures = 0  # consecutive failed attempts (open, write or flush)
        self.overflowing = False
        self.overflow_dropped = 0
        self.written = 0
        self.batches = 0
        self.retries = 0
        self.dropped = 0
        self.dead_lettered = 0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._retry_after: float | None = None

    # --- called from other threads -------------------------------------------------------

    def submit(self, points: Sequence[Point]) -> None:
        with self.cond:
            dropped = self.queue.put(points, time.monotonic())
            first = False
            if dropped:
                self.dropped += len(dropped)
                self.overflow_dropped += len(dropped)
                first = not self.overflowing
                self.overflowing = True
            self.cond.notify_all()
        if dropped:
            if first:
                log.error(
                    "sink %s: queue full (max_queue=%d), dropping the oldest points "
                    "until it drains",
                    self.name,
                    self.queue.limit,
                    extra={"sink": self.name},
                )
            self._report_dropped(dropped, f"queue full (max_queue={self.queue.limit})")

    def request_flush(self) -> int:
        with self.cond:
            self.flush_req += 1
            self.wake_gen += 1
            self.cond.notify_all()
            return self.flush_req

    def wait_flushed(self, ticket: int, deadline: float) -> bool:
        with self.cond:
            while True:
                if self.flush_done >= ticket:
                    return True
                if self.finished:
                    return len(self.queue) == 0
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)

    def request_close(self) -> None:
        """Drain (as a flush does), then stop and close the sink."""
        with self.cond:
            self.flush_req += 1
            self.close_ticket = self.flush_req
            self.wake_gen += 1
            self.cond.notify_all()

    def request_stop(self) -> None:
        """Stop after the current attempt, whatever is still queued."""
        with self.cond:
            self.stop_requested = True
            self.wake_gen += 1
            self.cond.notify_all()

    def unsent(self) -> int:
        with self.cond:
            return len(self.queue)

    def stats(self) -> dict[str, int | float | str | None]:
        with self.cond:
            return {
                "queued": len(self.queue),
                "in_flight": self.queue.reserved,
                "written": self.written,
                "batches": self.batches,
                "retries": self.retries,
                "dropped": self.dropped,
                "dead_lettered": self.dead_lettered,
                "last_error": self.last_error,
                "last_success": self.last_success,
            }

    # --- the worker thread --------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._run, name=f"bmslogger-sink-{self.name}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                action, arg = self._next_action()
                if action == "stop":
                    break
                if action == "open":
                    ok = self._attempt("open", self.sink.open)
                    if ok:
                        with self.cond:
                            self.opened = True
                elif action == "write":
                    ok = self._write(arg)
                else:  # "sink_flush": everything asked for is written; make it durable
                    ok = self._attempt("flush", self.sink.flush)
                    if ok:
                        with self.cond:
                            self.flush_done = max(self.flush_done, arg)
                            self.cond.notify_all()
                if not ok:
                    self._backoff()
        finally:
            self._close_sink()
            with self.cond:
                self.finished = True
                self.cond.notify_all()

    def _next_action(self) -> tuple[str, Any]:
        with self.cond:
            # a flush or close requested while the chosen action runs (outside the lock)
            # must cut the back-off after it short, so remember the generation now
            self._action_gen = self.wake_gen
            while True:
                self._action_gen = self.wake_gen
                closed = self.close_ticket and self.flush_done >= self.close_ticket
                if self.stop_requested or closed:
                    return "stop", None
                urgent = self.flush_req > self.flush_done
                if not self.opened:
                    if urgent and not len(self.queue):
                        # never opened and nothing queued: nothing to write or make durable
                        self.flush_done = self.flush_req
                        self.cond.notify_all()
                        continue
                    return "open", None
                if self.queue.reserved:
                    return "write", self.queue.reserve(self.batch_size)
                waiting = self.queue.waiting()
                since = self.queue.oldest_waiting_since()
                now = time.monotonic()
                if waiting and (
                    waiting >= self.batch_size
                    or urgent
                    or (since is not None and now - since >= self.interval)
                ):
                    return "write", self.queue.reserve(self.batch_size)
                if urgent and not len(self.queue):
                    return "sink_flush", self.flush_req
                timeout = None if since is None else max(0.0, since + self.interval - now)
                self.cond.wait(timeout)

    def _write(self, batch: list[Point]) -> bool:
        try:
            self.sink.write(batch)
        except SinkUnavailable as err:
            self._failed("write", err, retry_after=err.retry_after)
            return False
        except SinkError as err:
            self._dead_letter(batch, str(err))
            return True
        except Exception as err:
            self._failed("write", err, bug=True)
            return False
        with self.cond:
            self.queue.commit()
            self.written += len(batch)
            self.batches += 1
            self.last_success = time.time()
            recovered = self.failures
            self.failures = 0
            self._end_overflow_episode_if_drained()
            self.cond.notify_all()
        if recovered:
            log.info(
                "sink %s: writing again after %d failed attempts",
                self.name,
                recovered,
                extra={"sink": self.name},
            )
        return True

    def _attempt(self, what: str, call: Callable[[], None]) -> bool:
        try:
            call()
        except SinkUnavailable as err:
            self._failed(what, err, retry_after=err.retry_after)
            return False
        except SinkError as err:
            # open/flush have no batch to dead-letter; data keeps queueing (and will
            # be kept by the spool) until the cause is fixed
            self._failed(what, err, permanent=True)
            return False
        except Exception as err:
            self._failed(what, err, bug=True)
            return False
        with self.cond:
            recovered = self.failures
            self.failures = 0
        if recovered:
            log.info(
                "sink %s: %s worked after %d failed attempts",
                self.name,
                what,
                recovered,
                extra={"sink": self.name},
            )
        return True

    def _failed(
        self,
        what: str,
        err: BaseException,
        retry_after: float | None = None,
        bug: bool = False,
        permanent: bool = False,
    ) -> None:
        text = f"{type(err).__name__}: {err}" if bug else str(err)
        with self.cond:
            first = self.failures == 0
            self.failures += 1
            self.retries += 1
            self.last_error = text
            self._retry_after = retry_after
        extra = {"sink": self.name}
        if bug and first:
            log.error(
                "sink %s: unexpected error in %s (a bug in the sink); will retry",
                self.name,
                what,
                exc_info=err,
                extra=extra,
            )
        elif first and permanent:
            log.error("sink %s: %s failed: %s; will retry", self.name, what, text, extra=extra)
        elif first:
            log.warning("sink %s: %s failed: %s; will retry", self.name, what, text, extra=extra)
        else:
            log.debug("sink %s: %s failed again: %s", self.name, what, text, extra=extra)

    def backoff_delay(self) -> float:
        """Seconds to wait before the next attempt: exponential with jitter, and never
        shorter than the sink's ``retry_after`` hint."""
        exponent = max(0, self.failures - 1)
        base = min(self.backoff_max, self.backoff_initial * (2 ** min(exponent, 30)))
        delay = base * random.uniform(0.5, 1.0)
        if self._retry_after is not None:
            delay = max(delay, min(float(self._retry_after), RETRY_AFTER_MAX_S))
        return delay

    def _backoff(self) -> None:
        with self.cond:
            delay = self.backoff_delay()
            gen = self._action_gen
            self.cond.wait_for(lambda: self.wake_gen != gen, timeout=delay)

    def _dead_letter(self, batch: list[Point], error: str) -> None:
        path = dead_letter_path(self.dead_letter_dir, self.name)
        lines = []
        for p in batch:
            obj = p.to_json()
            obj["time_ns"] = p.time_ns
            obj["error"] = error
            obj["sink"] = self.name
            lines.append(json.dumps(obj, default=str) + "\n")
        saved = True
        try:
            os.makedirs(self.dead_letter_dir, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(lines))
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            saved = False
            log.error(
                "sink %s: %d points rejected (%s) and the dead-letter file %s failed: %s",
                self.name,
                len(batch),
                error,
                path,
                err,
                extra={"sink": self.name},
            )
        else:
            log.error(
                "sink %s: %d points rejected (%s); saved to %s",
                self.name,
                len(batch),
                error,
                path,
                extra={"sink": self.name},
            )
        with self.cond:
            self.queue.commit()
            if saved:
                self.dead_lettered += len(batch)
            else:
                self.dropped += len(batch)
            self.last_error = error
            self._end_overflow_episode_if_drained()
            self.cond.notify_all()
        reason = f"rejected by sink: {error}"
        if not saved:
            reason += f" (dead-letter file {path} could not be written)"
        self._report_dropped(batch, reason)

    def _end_overflow_episode_if_drained(self) -> None:
        # caller holds the lock
        if self.overflowing and len(self.queue) <= self.queue.limit // 2:
            self.overflowing = False
            log.warning(
                "sink %s: queue drained; %d points were dropped while it was full",
                self.name,
                self.overflow_dropped,
                extra={"sink": self.name},
            )
            self.overflow_dropped = 0

    def _report_dropped(self, points: Sequence[Point], reason: str) -> None:
        if self.on_dropped is None:
            return
        try:
            self.on_dropped(self.name, points, reason)
        except Exception:
            log.exception(
                "sink %s: the points_dropped callback failed", self.name, extra={"sink": self.name}
            )

    def _close_sink(self) -> None:
        try:
            self.sink.close()
        except Exception as err:
            log.warning("sink %s: close failed: %s", self.name, err, extra={"sink": self.name})


class Pipeline:
    """Delivers points to every configured sink; see the module docstring.

    Sinks whose config has ``enabled = false`` are left out. `backoff_initial` /
    `backoff_max` (seconds) shape the retry back-off; tests shorten them.
    """

    def __init__(
        self,
        sinks: Sequence[tuple[SinkConfig, Sink]],
        dead_letter_dir: str,
        on_dropped: Optional[DroppedCallback] = None,
        *,
        backoff_initial: float = BACKOFF_INITIAL_S,
        backoff_max: float = BACKOFF_MAX_S,
    ) -> None:
        self.dead_letter_dir = dead_letter_dir
        self._workers = [
            _Worker(cfg, sink, dead_letter_dir, on_dropped, backoff_initial, backoff_max)
            for cfg, sink in sinks
            if getattr(cfg, "enabled", True)
        ]
        names = [w.name for w in self._workers]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique, got {names}")
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._warned_closed = False

    def start(self) -> None:
        """Start one worker per sink; each opens its sink first (retrying with back-off
        while it raises), so a slow or absent server never blocks the caller."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
        for w in self._workers:
            w.start()

    def submit(self, points: Sequence[Point]) -> None:
        """Queue `points` for every sink. Never waits for I/O; on a full queue the
        oldest points are dropped and reported."""
        if not points:
            return
        if self._closed and not self._warned_closed:
            self._warned_closed = True
            log.warning("points submitted after the pipeline was closed; they stay unsent")
        points = list(points)
        for w in self._workers:
            w.submit(points)

    def flush(self, timeout: float) -> bool:
        """Write everything queued now, ignoring batch age, and make it durable; wait up
        to `timeout` seconds. True when every sink has written all of it."""
        if not self._started or self._closed:
            return self.unsent() == 0
        deadline = time.monotonic() + max(0.0, timeout)
        tickets = [(w, w.request_flush()) for w in self._workers]
        ok = True
        for w, ticket in tickets:
            ok = w.wait_flushed(ticket, deadline) and ok
        return ok

    def close(self, timeout: float) -> bool:
        """Flush, stop the workers and close the sinks, within `timeout` seconds in all.
        True when nothing was left unsent; otherwise what is left stays counted in
        `unsent`."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            was_started = self._started and not self._closed
            self._closed = True
        if not was_started:
            for w in self._workers:
                if not w.finished and w.thread is None:
                    w.finished = True
                    w._close_sink()
            return self.unsent() == 0
        # drain until shortly before the deadline, then stop whatever is left, so that
        # workers idle in a back-off still get to close their sinks in time
        grace = min(0.2, max(0.0, timeout) * 0.2)
        for w in self._workers:
            w.request_close()
        for w in self._workers:
            if w.thread is not None:
                w.thread.join(max(0.0, deadline - grace - time.monotonic()))
        for w in self._workers:
            w.request_stop()
        for w in self._workers:
            if w.thread is not None:
                w.thread.join(max(0.0, deadline - time.monotonic()))
                if w.thread.is_alive():
                    log.error(
                        "sink %s: still busy at shutdown; its sink was not closed",
                        w.name,
                        extra={"sink": w.name},
                    )
        left = self.unsent()
        if left:
            log.error("%d points were not written before shutdown", left)
        return left == 0

    def unsent(self) -> int:
        """Points queued or being written, summed over sinks (a point bound for two
        sinks counts twice)."""
        return sum(w.unsent() for w in self._workers)

    def stats(self) -> dict[str, dict[str, int | float | str | None]]:
        """Per sink: queued (incl. in flight), in_flight, written, batches, retries,
        dropped, dead_lettered, last_error, last_success (unix time or None)."""
        return {w.name: w.stats() for w in self._workers}
