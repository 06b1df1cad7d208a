"""The delivery pipeline against small in-module sinks: batching, retry, isolation,
overflow, dead letters and shutdown. Intervals are short so the file runs in seconds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import pytest

from bmslogger.errors import SinkError, SinkUnavailable
from bmslogger.model import Point, SinkConfig
from bmslogger.options import Options
from bmslogger.pipeline import Pipeline, _MemoryQueue, dead_letter_path, read_dead_letters
from bmslogger.sink import Sink

T0 = 1_700_000_000 * 10**9
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}


def cfg(name: str = "s", batch_size: int = 1000, interval: float = 10.0, max_queue: int = 1000):
    return SinkConfig(
        name=name,
        plugin="test",
        options=Options({}),
        batch_size=batch_size,
        flush_interval_s=interval,
        max_queue=max_queue,
    )


def pts(n: int, start: int = 0) -> list[Point]:
    return [
        Point("battery", {"device": "bms1", "plugin": "daly"}, {"seq": i}, T0 + i)
        for i in range(start, start + n)
    ]


def seqs(points: Sequence[Point]) -> list[int]:
    return [int(p.fields["seq"]) for p in points]


class RecordingSink(Sink):
    """Stores every batch; `fail_writes` SinkUnavailable first, with `retry_after`."""

    def __init__(
        self,
        config: SinkConfig,
        fail_writes: int = 0,
        retry_after: float | None = None,
        fail_opens: int = 0,
        bug_writes: int = 0,
        reject: int | None = None,
    ) -> None:
        super().__init__(config)
        self.cond = threading.Condition()
        self.batches: list[list[Point]] = []
        self.attempts: list[float] = []
        self.fail_writes = fail_writes
        self.retry_after = retry_after
        self.fail_opens = fail_opens
        self.bug_writes = bug_writes
        self.reject = reject
        self.opened = 0
        self.closed = 0
        self.flushed = 0

    def open(self) -> None:
        if self.fail_opens:
            self.fail_opens -= 1
            raise SinkUnavailable("server not up yet")
        self.opened += 1

    def write(self, points: Sequence[Point]) -> None:
        with self.cond:
            self.attempts.append(time.monotonic())
        if self.bug_writes:
            self.bug_writes -= 1
            raise RuntimeError("oops in sink")
        if self.fail_writes:
            self.fail_writes -= 1
            raise SinkUnavailable("connection refused", retry_after=self.retry_after)
        if self.reject is not None and self.reject in seqs(points):
            raise SinkError(f"field type conflict at seq {self.reject}")
        with self.cond:
            self.batches.append(list(points))
            self.cond.notify_all()

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        self.closed += 1

    @property
    def points(self) -> list[Point]:
        with self.cond:
            return [p for b in self.batches for p in b]

    def wait_points(self, n: int, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: sum(map(len, self.batches)) >= n, timeout)


class HangingSink(Sink):
    """A write that blocks until released, like a server that stopped answering."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.written: list[Point] = []
        self.closed = False

    def write(self, points: Sequence[Point]) -> None:
        self.entered.set()
        self.release.wait(10)
        self.written.extend(points)

    def close(self) -> None:
        self.closed = True


class DownSink(Sink):
    """Always unavailable."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        self.attempts = 0

    def write(self, points: Sequence[Point]) -> None:
        self.attempts += 1
        raise SinkUnavailable("down")


def wait_until(predicate, timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def pipelines():
    made: list[Pipeline] = []
    yield made
    for p in made:
        p.close(2)


def make(pipelines, sinks, tmp_path, on_dropped=None, **kw) -> Pipeline:
    kw = {**FAST, **kw}
    p = Pipeline(
        [(s.config, s) for s in sinks], str(tmp_path / "dead"), on_dropped=on_dropped, **kw
    )
    pipelines.append(p)
    return p


# --- the queue -----------------------------------------------------------------------


def test_memory_queue_reserve_commit_and_drop_oldest_waiting():
    q = _MemoryQueue(4)
    assert q.put(pts(3), now=1.0) == []
    assert seqs(q.reserve(2)) == [0, 1]
    assert seqs(q.reserve(99)) == [0, 1]  # the batch in flight stays the same on retry
    assert q.oldest_waiting_since() == 1.0
    dropped = q.put(pts(3, start=3), now=2.0)
    # 6 points, limit 4: the two oldest *waiting* points go; the batch in flight stays
    assert seqs(dropped) == [2, 3]
    assert len(q) == 4 and q.waiting() == 2
    assert q.commit() == 2
    assert seqs(q.reserve(10)) == [4, 5]


# --- batching ------------------------------------------------------------------------


def test_batches_by_size(pipelines, tmp_path):
    sink = RecordingSink(cfg(batch_size=3, interval=30))
    p = make(pipelines, [sink], tmp_path)
    p.start()
    for point in pts(7):
        p.submit([point])
    assert sink.wait_points(6, timeout=3)
    time.sleep(0.1)  # the seventh point must stay queued: the batch is not full or old
    assert [seqs(b) for b in sink.batches] == [[0, 1, 2], [3, 4, 5]]
    assert p.unsent() == 1
    assert p.flush(3) is True
    assert [seqs(b) for b in sink.batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert p.unsent() == 0
    assert sink.flushed >= 1


def test_batches_by_age(pipelines, tmp_path):
    sink = RecordingSink(cfg(batch_size=1000, interval=0.3))
    p = make(pipelines, [sink], tmp_path)
    p.start()
    t0 = time.monotonic()
    p.submit(pts(2))
    time.sleep(0.1)
    p.submit(pts(1, start=2))
    assert sink.wait_points(3, timeout=3)
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 1.5
    # the age counts from the oldest point, so all three leave in one batch
    assert [seqs(b) for b in sink.batches] == [[0, 1, 2]]


def test_order_kept_across_retries(pipelines, tmp_path):
    sink = RecordingSink(cfg(batch_size=2, interval=0), fail_writes=3)
    p = make(pipelines, [sink], tmp_path)
    p.start()
    p.submit(pts(6))
    assert p.flush(5) is True
    assert seqs(sink.points) == list(range(6))
    assert [seqs(b) for b in sink.batches] == [[0, 1], [2, 3], [4, 5]]
    st = p.stats()["s"]
    assert st["retries"] == 3
    assert st["written"] == 6
    assert st["batches"] == 3


def test_open_retried_while_data_queues(pipelines, tmp_path):
    sink = RecordingSink(cfg(batch_size=1, interval=0), fail_opens=2)
    p = make(pipelines, [sink], tmp_path)
    p.start()
    p.submit(pts(3))
    assert p.flush(5) is True
    assert sink.opened == 1
    assert seqs(sink.points) == [0, 1, 2]
    assert p.stats()["s"]["retries"] == 2


def test_flush_and_close_with_nothing_queued_do_not_wait_for_open(pipelines, tmp_path):
    sink = RecordingSink(cfg(), fail_opens=1000)
    p = make(pipelines, [sink], tmp_path, backoff_initial=30, backoff_max=30)
    p.start()
    t0 = time.monotonic()
    assert p.flush(5) is True
    assert p.close(5) is True
    assert time.monotonic() - t0 < 1.0
    assert sink.opened == 0 and sink.closed == 1


def test_unexpected_exception_logged_once_and_retried(pipelines, tmp_path, caplog):
    sink = RecordingSink(cfg(batch_size=1, interval=0), bug_writes=3)
    p = make(pipelines, [sink], tmp_path)
    with caplog.at_level(logging.DEBUG, logger="bmslogger.pipeline"):
        p.start()
        p.submit(pts(2))
        assert p.flush(5) is True
    assert seqs(sink.points) == [0, 1]
    with_tb = [r for r in caplog.records if r.exc_info and r.levelno == logging.ERROR]
    assert len(with_tb) == 1
    assert "oops in sink" in str(with_tb[0].exc_info[1])
    assert p.stats()["s"]["last_error"] == "RuntimeError: oops in sink"


# --- isolation -----------------------------------------------------------------------


def test_hanging_sink_does_not_delay_another(pipelines, tmp_path):
    hang = HangingSink(cfg("hang", batch_size=1, interval=0))
    good = RecordingSink(cfg("good", batch_size=1, interval=0))
    p = make(pipelines, [hang, good], tmp_path)
    p.start()
    t0 = time.monotonic()
    p.submit(pts(3))
    assert hang.entered.wait(2)
    assert good.wait_points(3, timeout=2)
    assert time.monotonic() - t0 < 1.0
    # submit must not block either while a sink hangs
    t1 = time.monotonic()
    p.submit(pts(100, start=3))
    assert time.monotonic() - t1 < 0.2
    assert p.flush(0.3) is False  # the hanging sink still holds its points
    assert p.stats()["good"]["queued"] == 0
    hang.release.set()
    assert p.close(3) is True
    assert seqs(hang.written) == list(range(103))
    assert hang.closed


def test_failing_sink_does_not_delay_another(pipelines, tmp_path):
    down = DownSink(cfg("down", batch_size=1, interval=0))
    good = RecordingSink(cfg("good", batch_size=1, interval=0))
    p = make(pipelines, [down, good], tmp_path)
    p.start()
    p.submit(pts(5))
    assert good.wait_points(5, timeout=2)
    assert p.stats()["down"]["queued"] == 5
    assert wait_until(lambda: p.stats()["down"]["last_error"] == "down")
    assert down.attempts >= 1


# --- back-off ------------------------------------------------------------------------


def test_backoff_honours_retry_after(pipelines, tmp_path):
    sink = RecordingSink(cfg(batch_size=1, interval=0), fail_writes=1, retry_after=0.4)
    p = make(pipelines, [sink], tmp_path)
    p.start()
    p.submit(pts(1))
    assert sink.wait_points(1, timeout=3)
    first, second = sink.attempts[:2]
    assert second - first >= 0.4
    assert second - first < 1.5


def test_backoff_grows_exponentially_with_cap(tmp_path):
    p = Pipeline([(cfg(), DownSink(cfg()))], str(tmp_path), backoff_initial=0.5, backoff_max=4)
    w = p._workers[0]
    delays = []
    for failures in range(1, 8):
        w.failures = failures
        delays.append(w.backoff_delay())
    bases = [0.5, 1, 2, 4, 4, 4, 4]
    for d, base in zip(delays, bases):
        assert base * 0.5 <= d <= base  # jitter keeps it within half of the step
    p.close(1)


def test_flush_wakes_backoff(pipelines, tmp_path):
    sink = RecordingSink(cfg(batch_size=1, interval=0), fail_writes=1, retry_after=30)
    p = make(pipelines, [sink], tmp_path)
    p.start()
    p.submit(pts(1))
    with sink.cond:
        assert sink.cond.wait_for(lambda: len(sink.attempts) == 1, 2)
    t0 = time.monotonic()
    assert p.flush(5) is True
    assert time.monotonic() - t0 < 1.0  # not the 30 s the server asked for


def test_close_with_deadline_leaves_points_unsent(pipelines, tmp_path):
    down = DownSink(cfg(batch_size=2, interval=0))
    p = make(pipelines, [down], tmp_path, backoff_initial=5, backoff_max=5)
    p.start()
    p.submit(pts(5))
    t0 = time.monotonic()
    assert p.close(0.4) is False
    assert time.monotonic() - t0 < 1.5
    assert p.unsent() == 5
    assert p.stats()["s"]["queued"] == 5


def test_flush_true_and_close_true(pipelines, tmp_path):
    sink = RecordingSink(cfg(batch_size=100, interval=60))
    p = make(pipelines, [sink], tmp_path)
    p.start()
    assert p.flush(1) is True  # nothing queued
    p.submit(pts(4))
    assert p.flush(2) is True  # ignores batch age
    assert seqs(sink.points) == [0, 1, 2, 3]
    p.submit(pts(2, start=4))
    assert p.close(2) is True
    assert seqs(sink.points) == list(range(6))
    assert sink.closed == 1
    assert p.unsent() == 0


# --- overflow ------------------------------------------------------------------------


def test_overflow_drops_oldest_counts_and_logs_once(pipelines, tmp_path, caplog):
    sink = RecordingSink(cfg(batch_size=10, interval=0, max_queue=3))
    dropped: list[tuple[str, list[int], str]] = []
    p = make(
        pipelines, [sink], tmp_path, on_dropped=lambda s, ps, r: dropped.append((s, seqs(ps), r))
    )
    with caplog.at_level(logging.WARNING, logger="bmslogger.pipeline"):
        p.submit(pts(2))  # not started: points wait in the queue
        p.submit(pts(2, start=2))
        p.submit(pts(2, start=4))
    assert [d[1] for d in dropped] == [[0], [1, 2]]
    assert all(d[0] == "s" and "max_queue=3" in d[2] for d in dropped)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "queue full" in errors[0].getMessage()
    assert p.stats()["s"]["dropped"] == 3
    assert p.unsent() == 3
    p.start()
    assert p.flush(2) is True
    assert seqs(sink.points) == [3, 4, 5]


def test_overflow_keeps_batch_in_flight(pipelines, tmp_path):
    hang = HangingSink(cfg(batch_size=2, interval=0, max_queue=4))
    p = make(pipelines, [hang], tmp_path)
    p.start()
    p.submit(pts(2))
    assert hang.entered.wait(2)
    p.submit(pts(4, start=2))  # 6 > 4: drops 2 and 3, not the batch 0, 1 being written
    assert p.stats()["s"]["dropped"] == 2
    hang.release.set()
    assert p.flush(3) is True
    assert seqs(hang.written) == [0, 1, 4, 5]


# --- dead letters --------------------------------------------------------------------


def test_dead_letters_written_and_readable(pipelines, tmp_path):
    sink = RecordingSink(cfg("influx/main", batch_size=1, interval=0), reject=1)
    reports = []
    p = make(pipelines, [sink], tmp_path, on_dropped=lambda s, ps, r: reports.append((s, ps, r)))
    p.start()
    sent = pts(3)
    p.submit(sent)
    assert p.flush(3) is True
    assert seqs(sink.points) == [0, 2]
    path = dead_letter_path(str(tmp_path / "dead"), "influx/main")
    assert path == str(tmp_path / "dead" / "influx_main.jsonl")
    letters = read_dead_letters(path)
    assert letters == [(sent[1], "field type conflict at seq 1")]
    assert reports == [("influx/main", [sent[1]], "rejected by sink: field type conflict at seq 1")]
    st = p.stats()["influx/main"]
    assert st["dead_lettered"] == 1 and st["written"] == 2 and st["dropped"] == 0
    assert st["last_error"] == "field type conflict at seq 1"


# --- lifecycle and stats ---------------------------------------------------------------


def test_close_without_start(tmp_path):
    sink = RecordingSink(cfg())
    p = Pipeline([(sink.config, sink)], str(tmp_path))
    assert p.close(1) is True
    assert sink.opened == 0 and sink.closed == 1
    assert p.close(1) is True  # twice is fine


def test_close_without_start_reports_queued_points(tmp_path):
    sink = RecordingSink(cfg())
    p = Pipeline([(sink.config, sink)], str(tmp_path))
    p.submit(pts(2))
    assert p.flush(1) is False
    assert p.close(1) is False
    assert p.unsent() == 2


def test_stats_values(pipelines, tmp_path):
    sink = RecordingSink(cfg(batch_size=2, interval=0), fail_writes=1)
    p = make(pipelines, [sink], tmp_path)
    before = time.time()
    assert p.stats() == {
        "s": {
            "queued": 0,
            "in_flight": 0,
            "written": 0,
            "batches": 0,
            "retries": 0,
            "dropped": 0,
            "dead_lettered": 0,
            "spool_points": 0,
            "spool_bytes": 0,
            "last_error": None,
            "last_success": None,
        }
    }
    p.start()
    p.submit(pts(4))
    assert p.flush(3) is True
    st = p.stats()["s"]
    assert st["queued"] == 0 and st["in_flight"] == 0
    assert st["written"] == 4 and st["batches"] == 2 and st["retries"] == 1
    assert st["dropped"] == 0 and st["dead_lettered"] == 0
    assert st["last_error"] == "connection refused"
    assert before <= st["last_success"] <= time.time()


def test_duplicate_sink_names_refused(tmp_path):
    a, b = RecordingSink(cfg("x")), RecordingSink(cfg("x"))
    with pytest.raises(ValueError, match="unique"):
        Pipeline([(a.config, a), (b.config, b)], str(tmp_path))


def test_disabled_sinks_left_out(tmp_path):
    on = RecordingSink(cfg("on"))
    off_cfg = SinkConfig(name="off", plugin="test", options=Options({}), enabled=False)
    off = RecordingSink(off_cfg)
    p = Pipeline([(on.config, on), (off_cfg, off)], str(tmp_path), **FAST)
    p.start()
    p.submit(pts(2))
    assert p.close(3) is True
    assert list(p.stats()) == ["on"]
    assert seqs(on.points) == [0, 1] and off.points == [] and off.opened == 0
