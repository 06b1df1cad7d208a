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

Store and forward: with a ``spool_dir`` every sink's queue is a `bmslogger.spool.Spool`
instead of the in-memory `_MemoryQueue` (same five calls). ``submit`` then appends each
point to every sink's segment log under ``<spool_dir>/<sink>/`` and syncs it as the fsync
policy says *before it returns*, so what the poller was told is delivered survives a
crash, a SIGKILL or a power cut; the worker reserves a batch, writes it and only then
commits (moves and persists the sink's cursor). On start a sink's unacknowledged spool is
replayed first, in order. Delivery is at least once: a batch the sink stored just before
the process died is sent again, which each sink makes harmless (InfluxDB overwrites the
same series and time; MySQL has a unique key on tags and time). The bound is then a byte
budget per sink (``spool_max_bytes``): the oldest segment goes first, and its points are
counted, logged and reported exactly like a memory-queue overflow. The newest
``max_queue`` points (at most 10 000) stay in memory too, so a healthy sink never reads
its spool back.

A sink may also raise `PointsRejected` (a `SinkError` naming the points it refused after
storing the rest): only those go to the dead-letter file; the batch counts as written.
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

from bmslogger.errors import BmsLoggerError, PointsRejected, SinkError, SinkUnavailable
from bmslogger.model import Point, SinkConfig
from bmslogger.sink import Sink
from bmslogger.spool import DEFAULT_MAX_BYTES, Spool, SpoolBusy, encode_point

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

    durable = False

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


def _safe_name(sink_name: str) -> str:
    safe = _SAFE_NAME.sub("_", sink_name) or "_"
    return "_" + safe if safe.startswith(".") else safe


def dead_letter_path(dead_letter_dir: str, sink_name: str) -> str:
    """Where the dead letters of one sink go: ``<dir>/<sink name>.jsonl``."""
    return os.path.join(dead_letter_dir, _safe_name(sink_name) + ".jsonl")


def spool_path(spool_dir: str, sink_name: str) -> str:
    """The spool folder of one sink: ``<spool_dir>/<sink name>``."""
    return os.path.join(spool_dir, _safe_name(sink_name))


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
        spool: Spool | None = None,
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
        self.queue: Any = spool if spool is not None else _MemoryQueue(config.max_queue)
        self.durable = spool is not None
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
        self.spool_failed = False
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._retry_after: float | None = None

    # --- called from other threads -------------------------------------------------------

    def submit(self, points: Sequence[Point], payloads: Sequence[bytes] | None = None) -> None:
        if self.durable:
            self._submit_durable(points, payloads)
            return
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

    def _submit_durable(self, points: Sequence[Point], payloads: Sequence[bytes] | None) -> None:
        # the spool locks itself; its disk write must not hold the worker's condition,
        # or a worker busy committing would stall the poller
        try:
            dropped = self.queue.put(points, time.monotonic(), payloads)
        except OSError as err:
            with self.cond:
                self.dropped += len(points)
                first = not self.spool_failed
                self.spool_failed = True
                self.last_error = f"spool write failed: {err}"
            if first:
                log.error(
                    "sink %s: cannot write the spool in %s: %s; points are dropped until "
                    "it works again",
                    self.name,
                    self.queue.directory,
                    err,
                    extra={"sink": self.name},
                )
            self._report_dropped(points, f"spool write failed: {err}")
            return
        with self.cond:
            if self.spool_failed:
                self.spool_failed = False
                log.warning("sink %s: spool writable again", self.name, extra={"sink": self.name})
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
                    "sink %s: spool full (spool_max_bytes=%d), dropping the oldest points "
                    "until it drains",
                    self.name,
                    self.queue.limit,
                    extra={"sink": self.name},
                )
            self._report_dropped(dropped, f"spool full (spool_max_bytes={self.queue.limit})")

    def failing(self) -> bool:
        with self.cond:
            return self.failures > 0

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
        spool = self.queue.stats() if self.durable else {}
        with self.cond:
            return {
                "queued": len(self.queue),
                "in_flight": self.queue.reserved,
                "written": self.written,
                "batches": self.batches,
                "retries": self.retries,
                "dropped": self.dropped,
                "dead_lettered": self.dead_lettered,
                "spool_points": spool.get("spool_points", 0),
                "spool_bytes": spool.get("spool_bytes", 0),
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
        rejected: list[tuple[Point, str]] = []
        try:
            self.sink.write(batch)
        except SinkUnavailable as err:
            self._failed("write", err, retry_after=err.retry_after)
            return False
        except PointsRejected as err:
            rejected = list(err.rejected)
        except SinkError as err:
            self._dead_letter(batch, str(err))
            return True
        except Exception as err:
            self._failed("write", err, bug=True)
            return False
        if rejected:
            self._save_dead_letters(rejected)
        if self.durable:
            self._commit_durable()
        with self.cond:
            if not self.durable:
                self.queue.commit()
            self.written += len(batch) - len(rejected)
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

    def _commit_durable(self) -> None:
        try:
            self.queue.commit()
        except OSError as err:
            # the batch is stored (or dead-lettered) and the spool's memory moved on; only
            # the cursor file is stale, so a restart would send the batch again (harmless)
            log.error("sink %s: cannot save the spool cursor: %s", self.name, err,
                      extra={"sink": self.name})

    def _save_dead_letters(self, rejected: list[tuple[Point, str]]) -> None:
        """Dead-letter the points a sink refused out of a batch it otherwise stored."""
        saved = self._append_dead_letters([(p, e) for p, e in rejected])
        with self.cond:
            if saved:
                self.dead_lettered += len(rejected)
            else:
                self.dropped += len(rejected)
            self.last_error = rejected[-1][1]
        for point, error in rejected:
            self._report_dropped([point], f"rejected by sink: {error}")

    def _append_dead_letters(self, items: list[tuple[Point, str]]) -> bool:
        path = dead_letter_path(self.dead_letter_dir, self.name)
        lines = []
        for p, error in items:
            obj = p.to_json()
            obj["time_ns"] = p.time_ns
            obj["error"] = error
            obj["sink"] = self.name
            lines.append(json.dumps(obj, default=str) + "\n")
        try:
            os.makedirs(self.dead_letter_dir, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(lines))
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            log.error(
                "sink %s: %d points rejected and the dead-letter file %s failed: %s",
                self.name,
                len(items),
                path,
                err,
                extra={"sink": self.name},
            )
            return False
        log.error(
            "sink %s: %d points rejected (%s); saved to %s",
            self.name,
            len(items),
            items[0][1],
            path,
            extra={"sink": self.name},
        )
        return True

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
        if self.durable:
            self._commit_durable()
        with self.cond:
            if not self.durable:
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
        size = self.queue.bytes if self.durable else len(self.queue)
        if self.overflowing and size <= self.queue.limit // 2:
            self.overflowing = False
            log.warning(
                "sink %s: queue or spool drained; %d points were dropped while it was full",
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

    def close_spool(self) -> None:
        if self.durable:
            try:
                self.queue.close()
            except OSError as err:
                log.error("sink %s: closing the spool failed: %s", self.name, err,
                          extra={"sink": self.name})


class Pipeline:
    """Delivers points to every configured sink; see the module docstring.

    Sinks whose config has ``enabled = false`` are left out. `backoff_initial` /
    `backoff_max` (seconds) shape the retry back-off; tests shorten them. With
    `spool_dir`, every sink gets a disk spool (`bmslogger.spool`) bounded by
    `spool_max_bytes` and synced as `spool_fsync` says (``"always"``, ``"never"`` or
    seconds); an existing spool is recovered here and replayed once started.
    """

    def __init__(
        self,
        sinks: Sequence[tuple[SinkConfig, Sink]],
        dead_letter_dir: str,
        on_dropped: Optional[DroppedCallback] = None,
        *,
        backoff_initial: float = BACKOFF_INITIAL_S,
        backoff_max: float = BACKOFF_MAX_S,
        spool_dir: str | None = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_fsync: str | float = "always",
    ) -> None:
        self.dead_letter_dir = dead_letter_dir
        self.spool_dir = spool_dir
        enabled = [(cfg, sink) for cfg, sink in sinks if getattr(cfg, "enabled", True)]
        names = [cfg.name for cfg, _ in enabled]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique, got {names}")
        self._workers = []
        for cfg, sink in enabled:
            spool = None
            if spool_dir is not None:
                try:
                    spool = self._open_spool(cfg, spool_dir, spool_max_bytes, spool_fsync)
                except SpoolBusy as err:
                    log.warning("sink %s: %s; this run keeps its points in memory only",
                                cfg.name, err, extra={"sink": cfg.name})
            self._workers.append(
                _Worker(cfg, sink, dead_letter_dir, on_dropped, backoff_initial, backoff_max,
                        spool)
            )
        self._durable = any(w.durable for w in self._workers)
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._warned_closed = False

    @staticmethod
    def _open_spool(
        cfg: SinkConfig, spool_dir: str, max_bytes: int, fsync: str | float
    ) -> Spool:
        path = spool_path(spool_dir, cfg.name)
        memory = max(2 * int(cfg.batch_size), min(int(cfg.max_queue), 10_000))
        try:
            spool = Spool(path, max_bytes=max_bytes, fsync=fsync, memory_points=memory)
        except SpoolBusy:
            raise
        except OSError as err:
            raise BmsLoggerError(f"sink {cfg.name}: cannot open the spool {path}: {err}") from err
        if len(spool):
            log.info(
                "sink %s: %d points waiting in the spool %s from an earlier run; replaying "
                "them first",
                cfg.name,
                len(spool),
                path,
                extra={"sink": cfg.name},
            )
        return spool

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
        """Queue `points` for every sink. Never waits for a sink; with a spool it
        appends to local disk (and syncs as the fsync policy says) before returning. On
        a full queue or spool the oldest points are dropped and reported."""
        if not points:
            return
        if self._closed and not self._warned_closed:
            self._warned_closed = True
            log.warning("points submitted after the pipeline was closed; they stay unsent")
        points = list(points)
        payloads = [encode_point(p) for p in points] if self._durable else None
        for w in self._workers:
            w.submit(points, payloads)

    def flush(self, timeout: float) -> bool:
        """Write everything queued now, ignoring batch age, and make it durable; wait up
        to `timeout` seconds. True when every sink has written all of it."""
        if not self._started or self._closed:
            return self.unsent() == 0
        deadline = time.monotonic() + max(0.0, timeout)
        for w in self._workers:
            if w.durable:
                w.queue.sync()
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
                w.close_spool()
            return self.unsent() == 0
        # drain until shortly before the deadline, then stop whatever is left, so that
        # workers idle in a back-off still get to close their sinks in time
        grace = min(0.2, max(0.0, timeout) * 0.2)
        for w in self._workers:
            w.request_close()
        for w in self._workers:
            while w.thread is not None and w.thread.is_alive():
                left = deadline - grace - time.monotonic()
                if left <= 0:
                    break
                if w.durable and w.failing():
                    # the points are safe on disk: no reason to wait out the deadline
                    w.request_stop()
                w.thread.join(min(0.1, left))
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
        for w in self._workers:
            if w.thread is None or not w.thread.is_alive():
                w.close_spool()
        left = self.unsent()
        if left and self._durable:
            log.warning("%d points were not written before shutdown; they stay in the spool "
                        "%s and are sent after the next start", left, self.spool_dir)
        elif left:
            log.error("%d points were not written before shutdown", left)
        return left == 0

    def unsent(self) -> int:
        """Points queued or being written, summed over sinks (a point bound for two
        sinks counts twice)."""
        return sum(w.unsent() for w in self._workers)

    def stats(self) -> dict[str, dict[str, int | float | str | None]]:
        """Per sink: queued (incl. in flight), in_flight, written, batches, retries,
        dropped, dead_lettered, spool_points, spool_bytes (0 without a spool),
        last_error, last_success (unix time or None)."""
        return {w.name: w.stats() for w in self._workers}
