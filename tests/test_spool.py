"""The disk spool and the pipeline on top of it: order, recovery after a crash or a torn
write, the byte budget, replay after restart, and at-least-once around a kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslogger.errors import SinkUnavailable
from bmslogger.model import Point, SinkConfig
from bmslogger.options import Options
from bmslogger.pipeline import Pipeline, spool_path
from bmslogger.sink import Sink
from bmslogger.spool import (
    Spool,
    SpoolBusy,
    decode_point,
    decode_points,
    encode_point,
    frame,
    parse_fsync,
    read_records,
)

T0 = 1_700_000_000 * 10**9


def pts(n: int, start: int = 0) -> list[Point]:
    return [
        Point("battery", {"device": "bms1", "plugin": "daly"}, {"seq": i, "v": i / 3}, T0 + i)
        for i in range(start, start + n)
    ]


def seqs(points: Sequence[Point]) -> list[int]:
    return [int(p.fields["seq"]) for p in points]


def drain(sp: Spool, batch: int = 1000) -> list[Point]:
    out: list[Point] = []
    while len(sp):
        got = sp.reserve(batch)
        out.extend(got)
        sp.commit()
    return out


# --- encoding -------------------------------------------------------------------------------

values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
)


@given(
    st.text(min_size=1),
    st.dictionaries(st.text(), st.text(), max_size=4),
    st.dictionaries(st.text(), values, min_size=1, max_size=5),
    st.integers(min_value=0, max_value=2**63 - 1),
)
def test_point_round_trips_exactly(measurement, tags, fields, time_ns):
    p = Point(measurement, tags, fields, time_ns)
    back = decode_point(encode_point(p))
    assert back == p
    for k, v in fields.items():
        assert type(back.fields[k]) is type(v)


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_read_records_never_accepts_garbage_as_a_record(garbage):
    good = frame(b'["m",{},{"a":1},5]')
    records, pos, trailing = read_records(good + garbage)
    assert records[0][1] == b'["m",{},{"a":1},5]'
    assert pos >= len(good)
    # every record parsed out of the garbage carries a matching CRC by construction; a torn
    # tail is reported, never returned
    assert trailing == (pos != len(good) + len(garbage))


@given(st.lists(st.one_of(
    st.builds(lambda m, t: encode_point(Point(m, {"d": m}, {"v": 1.5}, t)),
              st.text(max_size=5), st.integers(min_value=0, max_value=2**62)),
    st.binary(max_size=20),
    st.sampled_from([b"[1],[2", b"]", b"", b'["m",{},{}]', b'[1,{},{},5]', b"[", b"null",
                     b'["m",{},{"a":1},5],["n",{},{"a":2},6', b' ["m",{},{"a":1},5]', b"[3",
                     b'4]', b'"\xff"', '["m",{},{"\u00fc":1},5]'.encode()]),
), max_size=10))
def test_decode_points_equals_one_at_a_time(payloads):
    """The joined parse is only a shortcut: every record comes out as decoding it alone
    would, and a record that is not a point is None, whatever sits next to it."""

    def alone(payload: bytes) -> Point | None:
        try:
            return decode_point(payload)
        except (ValueError, TypeError):
            return None

    assert decode_points(payloads) == [alone(p) for p in payloads]


def test_read_records_stops_at_limit():
    data = b"".join(frame(b'["m",{},{"a":%d},5]' % i) for i in range(5))
    records, pos, trailing = read_records(data, limit=2)
    assert [r[1] for r in records] == [b'["m",{},{"a":0},5]', b'["m",{},{"a":1},5]']
    assert pos == records[-1][0] and not trailing
    assert len(read_records(data, limit=9)[0]) == 5


def test_parse_fsync():
    assert parse_fsync("always") == "always"
    assert parse_fsync("NEVER") == "never"
    assert parse_fsync("2s") == 2.0
    assert parse_fsync("500ms") == 0.5
    assert parse_fsync(0) == "always"
    with pytest.raises(ValueError, match="always"):
        parse_fsync("sometimes")


# --- the spool ------------------------------------------------------------------------------


def test_order_reserve_retry_commit(tmp_path):
    sp = Spool(str(tmp_path / "s"), memory_points=5)
    sp.put(pts(12), time.monotonic())
    assert len(sp) == 12 and sp.waiting() == 12
    first = sp.reserve(4)
    assert seqs(first) == [0, 1, 2, 3]
    assert seqs(sp.reserve(100)) == [0, 1, 2, 3]  # a retry gets the same batch
    assert sp.waiting() == 8
    assert sp.commit() == 4
    # the memory window keeps only the newest 5: the rest comes back from disk, in order
    assert seqs(drain(sp, 3)) == list(range(4, 12))
    assert len(sp) == 0
    sp.close()


def test_survives_reopen_with_cursor(tmp_path):
    sp = Spool(str(tmp_path / "s"))
    sp.put(pts(10), time.monotonic())
    sp.reserve(6)
    sp.commit()
    sp.put(pts(3, start=10), time.monotonic())
    sp.reserve(2)  # reserved but never committed: must come back
    sp.close()
    again = Spool(str(tmp_path / "s"))
    assert len(again) == 7
    back = drain(again)
    assert seqs(back) == list(range(6, 13))
    assert back == pts(7, start=6)


def test_segments_roll_and_are_deleted_once_passed(tmp_path):
    d = tmp_path / "s"
    sp = Spool(str(d), segment_bytes=2000)
    for i in range(20):
        sp.put(pts(5, start=5 * i), time.monotonic())
    segs = sorted(n for n in os.listdir(d) if n.endswith(".seg"))
    assert len(segs) >= 4
    assert seqs(drain(sp, 7)) == list(range(100))
    # only the newest (append target) segment is left
    assert len([n for n in os.listdir(d) if n.endswith(".seg")]) == 1
    assert sp.stats()["spool_points"] == 0


def test_torn_tail_is_cut_and_counted(tmp_path):
    d = tmp_path / "s"
    sp = Spool(str(d))
    sp.put(pts(4), time.monotonic())
    sp.close()
    seg = d / sorted(n for n in os.listdir(d) if n.endswith(".seg"))[-1]
    whole = seg.read_bytes()
    # a record cut in the middle, as a power cut during write leaves it
    half = frame(encode_point(pts(1, start=4)[0]))[:13]
    seg.write_bytes(whole + half)
    again = Spool(str(d))
    assert again.torn_bytes == len(half)
    assert seg.stat().st_size == len(whole)
    assert seqs(drain(again)) == [0, 1, 2, 3]
    again.put(pts(1, start=4), time.monotonic())  # appends continue on a clean tail
    assert seqs(drain(again)) == [4]


def test_flipped_byte_in_last_record_is_cut_not_decoded(tmp_path):
    d = tmp_path / "s"
    sp = Spool(str(d))
    sp.put(pts(3), time.monotonic())
    sp.close()
    seg = d / sorted(n for n in os.listdir(d) if n.endswith(".seg"))[-1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0x01
    seg.write_bytes(bytes(data))
    again = Spool(str(d))
    assert seqs(drain(again)) == [0, 1]
    assert again.torn_bytes > 0


def test_unreadable_cursor_replays_from_oldest(tmp_path):
    d = tmp_path / "s"
    sp = Spool(str(d))
    sp.put(pts(5), time.monotonic())
    sp.reserve(3)
    sp.commit()
    sp.close()
    (d / "cursor").write_text("{garbage")
    again = Spool(str(d))
    assert seqs(drain(again)) == [0, 1, 2, 3, 4]  # at least once: 0-2 come again


def test_budget_drops_oldest_segment_and_reports_it(tmp_path):
    sp = Spool(str(tmp_path / "s"), max_bytes=20_000, segment_bytes=4_000)
    dropped: list[Point] = []
    for i in range(100):
        dropped += sp.put(pts(10, start=10 * i), time.monotonic())
    assert dropped, "the budget must have been hit"
    assert sp.bytes <= 20_000
    assert sp.dropped == len(dropped)
    left = drain(sp)
    # nothing silently lost: dropped + delivered is everything, both in order, oldest dropped
    assert seqs(dropped) + seqs(left) == list(range(1000))


def test_budget_never_drops_the_batch_in_flight(tmp_path):
    sp = Spool(str(tmp_path / "s"), max_bytes=6_000, segment_bytes=1_000)
    sp.put(pts(5), time.monotonic())
    in_flight = sp.reserve(3)
    dropped: list[Point] = []
    for i in range(1, 60):
        dropped += sp.put(pts(5, start=5 * i), time.monotonic())
    assert seqs(sp.reserve(3)) == seqs(in_flight) == [0, 1, 2]
    sp.commit()
    rest = drain(sp)
    assert 0 not in seqs(dropped)
    assert sorted(seqs(in_flight) + seqs(dropped) + seqs(rest)) == list(range(300))
    assert seqs(rest) == sorted(seqs(rest))


def test_second_process_cannot_open_the_same_spool(tmp_path):
    sp = Spool(str(tmp_path / "s"))
    code = textwrap.dedent(f"""
        from bmslogger.spool import Spool, SpoolBusy
        try:
            Spool({str(tmp_path / "s")!r})
        except SpoolBusy:
            print("busy")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "busy", out.stderr
    sp.close()
    Spool(str(tmp_path / "s")).close()  # released with close
    assert SpoolBusy.__mro__[1] is OSError


# --- the pipeline with a spool -------------------------------------------------------------


def cfg(name: str = "s", batch_size: int = 100, interval: float = 0.0) -> SinkConfig:
    return SinkConfig(name=name, plugin="test", options=Options({}), batch_size=batch_size,
                      flush_interval_s=interval, max_queue=1000)


class Recorder(Sink):
    def __init__(self, config: SinkConfig, down: bool = False) -> None:
        super().__init__(config)
        self.down = threading.Event()
        if down:
            self.down.set()
        self.points: list[Point] = []

    def write(self, points: Sequence[Point]) -> None:
        if self.down.is_set():
            raise SinkUnavailable("down")
        self.points.extend(points)


FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}


def test_outage_then_restart_replays_in_order(tmp_path):
    spool = str(tmp_path / "spool")
    sink = Recorder(cfg(), down=True)
    p = Pipeline([(sink.config, sink)], str(tmp_path / "dead"), spool_dir=spool, **FAST)
    p.start()
    for i in range(10):
        p.submit(pts(10, start=10 * i))
    assert p.stats()["s"]["spool_points"] == 100
    assert p.stats()["s"]["spool_bytes"] > 0
    t0 = time.monotonic()
    assert p.close(5) is False  # the sink is down: close does not wait for the deadline
    assert time.monotonic() - t0 < 2
    assert p.unsent() == 100

    sink2 = Recorder(cfg())
    p2 = Pipeline([(sink2.config, sink2)], str(tmp_path / "dead"), spool_dir=spool, **FAST)
    assert p2.unsent() == 100
    p2.start()
    p2.submit(pts(5, start=100))
    assert p2.flush(5) is True
    assert seqs(sink2.points) == list(range(105))
    assert p2.close(2) is True
    assert os.listdir(spool_path(spool, "s"))


def test_sink_recovers_while_running(tmp_path):
    sink = Recorder(cfg(batch_size=7), down=True)
    p = Pipeline([(sink.config, sink)], str(tmp_path / "dead"), spool_dir=str(tmp_path / "sp"),
                 **FAST)
    p.start()
    for i in range(30):
        p.submit(pts(3, start=3 * i))
    sink.down.clear()
    assert p.flush(5) is True
    assert seqs(sink.points) == list(range(90))
    st_ = p.stats()["s"]
    assert st_["written"] == 90 and st_["spool_points"] == 0 and st_["retries"] >= 1
    p.close(2)


def test_submit_does_not_wait_for_a_hung_sink(tmp_path):
    release = threading.Event()

    class Hung(Sink):
        def write(self, points: Sequence[Point]) -> None:
            release.wait(10)

    hung = Hung(cfg())
    p = Pipeline([(hung.config, hung)], str(tmp_path / "dead"), spool_dir=str(tmp_path / "sp"),
                 **FAST)
    p.start()
    p.submit(pts(5))
    time.sleep(0.1)
    t0 = time.monotonic()
    for i in range(1, 51):
        p.submit(pts(20, start=20 * i))
    per_submit = (time.monotonic() - t0) / 50
    assert per_submit < 0.05  # a local write and fsync, not a wait for the sink
    release.set()
    p.close(3)


def test_spool_full_drops_are_reported(tmp_path):
    sink = Recorder(cfg(), down=True)
    reports: list[tuple[str, int, str]] = []
    p = Pipeline([(sink.config, sink)], str(tmp_path / "dead"),
                 on_dropped=lambda s, ps, r: reports.append((s, len(ps), r)),
                 spool_dir=str(tmp_path / "sp"), spool_max_bytes=200_000, **FAST)
    for i in range(400):
        p.submit(pts(10, start=10 * i))
    st_ = p.stats()["s"]
    assert st_["dropped"] > 0
    assert sum(n for _, n, _ in reports) == st_["dropped"]
    assert all("spool full" in r for _, _, r in reports)
    assert st_["dropped"] + st_["spool_points"] == 4000
    assert st_["spool_bytes"] <= 200_000
    p.close(1)


KILLER = """
import sys, time
from bmslogger.model import Point, SinkConfig
from bmslogger.options import Options
from bmslogger.pipeline import Pipeline
from bmslogger.sink import Sink
from bmslogger.errors import SinkUnavailable

class Down(Sink):
    def write(self, points):
        raise SinkUnavailable("down")

cfg = SinkConfig(name="s", plugin="t", options=Options({}), batch_size=50)
p = Pipeline([(cfg, Down(cfg))], sys.argv[2], spool_dir=sys.argv[1], spool_fsync=sys.argv[3])
p.start()
i = 0
while True:
    p.submit([Point("m", {"device": "d"}, {"seq": i}, 10**18 + i)])
    print(i, flush=True)  # acknowledged: submit returned
    i += 1
"""


@pytest.mark.parametrize("policy", ["always", "never"])
def test_sigkill_loses_nothing_acknowledged(tmp_path, policy):
    """Every point whose submit returned before SIGKILL is replayed after restart."""
    spool = str(tmp_path / "sp")
    proc = subprocess.Popen([sys.executable, "-c", KILLER, spool, str(tmp_path / "dead"),
                             policy], stdout=subprocess.PIPE, text=True)
    acked = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        acked = int(line)
        if acked >= 300:
            break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    sink = Recorder(cfg())
    p = Pipeline([(sink.config, sink)], str(tmp_path / "dead"), spool_dir=spool, **FAST)
    p.start()
    assert p.flush(5) is True
    got = seqs(sink.points)
    assert got[: acked + 1] == list(range(acked + 1))
    assert got == sorted(got)
    p.close(2)


def test_cursor_file_is_json(tmp_path):
    sp = Spool(str(tmp_path / "s"))
    sp.put(pts(3), time.monotonic())
    sp.reserve(2)
    sp.commit()
    cur = json.loads((tmp_path / "s" / "cursor").read_text())
    assert cur["seq"] == 2 and cur["offset"] > 0
    sp.close()
