"""Disk spool: one sink's unacknowledged points in an append-only segment log.

The pipeline (`bmslogger.pipeline`) writes every point a poll produced here *before*
`Pipeline.submit` returns, and removes it only once the sink stored it (or dead-lettered
it). A database outage of days, a SIGKILL or a power cut therefore loses nothing that was
acknowledged to the poller: on the next start the sink's worker replays the spool from its
cursor, in order, before anything newer.

Layout, under ``<spool_dir>/<sink name>/``:

* ``<first seq, 20 digits>.seg``: segments. A record is ``length (4 bytes, big-endian) |
  CRC-32 of the payload (4 bytes) | payload``, the payload one point as compact JSON
  (`encode_point`; ``time_ns`` exact, floats in round-trip form). Records are numbered
  (``seq``) densely from the segment's first seq. A new segment starts once the current
  one reaches ``segment_bytes``.
* ``cursor``: JSON ``{"segment": first seq, "offset": byte, "seq": n}``, the first record
  not yet acknowledged, replaced atomically (temp file + rename) after every acknowledged
  batch. A segment the cursor has passed is deleted.

Power loss: only the tail of the newest segment can be torn (records are only appended
there). On open it is scanned and cut at the first record whose length or CRC is wrong;
the cut is logged and counted in `Spool.torn_bytes`. A lost or unreadable cursor falls
back to the oldest segment, which replays points the sink may already hold; that is the
at-least-once half of the guarantee, and each sink makes a replayed point harmless
(InfluxDB overwrites the same series and time, MySQL has a unique key on tags and time).

Bound: when the segments together exceed ``max_bytes``, the oldest segment is deleted with
whatever unacknowledged points it held (never the batch being written right now); those
points are returned by `put` so the pipeline counts, logs and reports them.

fsync policy (``fsync``): ``"always"`` syncs the segment before `put` returns and the
cursor after every acknowledgement (the default: nothing acknowledged is lost on a power
cut); a number of seconds syncs at most that often (a power cut loses up to that much);
``"never"`` leaves it to the operating system (a crashed process loses nothing, a power
cut may lose the last seconds).

Memory: the newest ``memory_points`` points are also kept in memory, so a healthy sink is
fed without reading its spool back; an older backlog (after a restart or a long outage) is
read from disk in batches.

Thread safety: every public method takes the spool's own lock, so pollers may `put` while
the sink's worker reserves and commits.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from bmslogger.model import Point

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
#: A record longer than this is treated as corruption (a point is a few hundred bytes).
MAX_RECORD_BYTES = 16 * 1024 * 1024
SEGMENT_SUFFIX = ".seg"
CURSOR_FILE = "cursor"
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: Arrival time given to points read back from disk: long ago, so they leave at once.
_BACKLOG_ARRIVAL = float("-inf")

FsyncPolicy = Union[str, float]
LOCK_FILE = "lock"


class SpoolBusy(OSError):
    """Another process (a daemon while a cron ``once`` starts) holds this spool."""


def encode_point(point: Point) -> bytes:
    """One point as a spool payload: ``[measurement, tags, fields, time_ns]`` in JSON.

    JSON keeps the types a sink cares about apart (bool, int, float, str), writes floats
    in shortest round-trip form, and needs no dependency; ``ensure_ascii`` keeps any
    string, even one with lone surrogates, encodable.
    """
    return json.dumps(
        [point.measurement, point.tags, point.fields, point.time_ns], separators=(",", ":")
    ).encode("ascii")


def decode_point(payload: bytes) -> Point:
    """The point `encode_point` wrote."""
    return _as_point(json.loads(payload))


def _as_point(row: object) -> Point:
    m, tags, fields, t = row  # type: ignore[misc]
    if not (isinstance(m, str) and isinstance(tags, dict) and isinstance(fields, dict)):
        raise ValueError("not a spooled point")
    return Point(m, tags, fields, int(t))


def decode_points(payloads: list[bytes]) -> list[Point | None]:
    """The points of many records, None where a record is not a point.

    A replay decodes a day of points, and `json.loads` per record spends more time on its
    own overhead than on parsing. Here the records are joined and each is scanned where it
    starts; a record that does not scan to exactly its own end (or is not ASCII, which
    `encode_point` always is) is decoded alone, so the result is the same as
    `decode_point` per record, only faster."""
    try:
        text = b"".join(payloads).decode("ascii")
    except UnicodeDecodeError:
        text = None
    out: list[Point | None] = []
    pos = 0
    for payload in payloads:
        end = pos + len(payload)
        try:
            row, stop = _scan(text, pos) if text is not None else (None, -1)
        except (ValueError, StopIteration):
            row, stop = None, -1
        try:
            point = _as_point(row) if stop == end else decode_point(payload)
        except (ValueError, TypeError):
            point = None
        out.append(point)
        pos = end
    return out


_scan = json.JSONDecoder().scan_once


def frame(payload: bytes) -> bytes:
    """A record: length, CRC-32, payload."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def parse_fsync(value: object) -> FsyncPolicy:
    """``"always"``, ``"never"``, or seconds (a number or a duration such as ``"2s"``);
    ValueError otherwise."""
    from bmslogger.options import parse_duration

    if isinstance(value, str) and value.strip().lower() in ("always", "never"):
        return value.strip().lower()
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(
            f'expected "always", "never" or a duration such as "1s", got {value!r}'
        ) from None
    return "always" if seconds == 0 else seconds


@dataclass
class _Segment:
    first: int  # seq of its first record
    path: str
    size: int = 0
    count: int = 0  # records in it

    @property
    def end(self) -> int:
        return self.first + self.count


def read_records(
    data: bytes, start: int = 0, limit: int | None = None
) -> tuple[list[tuple[int, bytes]], int, bool]:
    """Parse records from ``data[start:]``, at most `limit` of them: ([(end offset,
    payload)], offset after the last good record, True if something that is not a whole
    valid record follows; False when parsing stopped at `limit`)."""
    out: list[tuple[int, bytes]] = []
    if limit is not None and limit <= 0:
        return out, start, False
    pos = start
    size = len(data)
    hsize = _HEADER.size
    unpack = _HEADER.unpack_from
    crc32 = zlib.crc32
    while pos + hsize <= size:
        length, crc = unpack(data, pos)
        end = pos + hsize + length
        if length > MAX_RECORD_BYTES or end > size:
            return out, pos, True
        payload = data[pos + hsize : end]
        if crc32(payload) != crc:
            return out, pos, True
        out.append((end, payload))
        pos = end
        if limit is not None and len(out) >= limit:
            return out, pos, False
    return out, pos, pos != size


class Spool:
    """The spool of one sink; the pipeline uses it in place of its memory queue through
    ``put`` / ``reserve`` / ``commit`` / ``len`` / ``waiting`` / ``oldest_waiting_since``."""

    durable = True

    def __init__(
        self,
        directory: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        fsync: FsyncPolicy = "always",
        memory_points: int = 10_000,
        segment_bytes: int | None = None,
    ) -> None:
        self.directory = directory
        self.max_bytes = max(1, int(max_bytes))
        self.fsync = parse_fsync(fsync)
        self.memory_points = max(1, int(memory_points))
        if segment_bytes is None:
            segment_bytes = min(16 * 1024 * 1024, max(64 * 1024, self.max_bytes // 8))
        self.segment_bytes = max(1, int(segment_bytes))
        self.limit = self.max_bytes  # named like the memory queue's bound, for messages
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # append handle of the newest segment
        self._dirty = False  # written since the last fsync
        self._last_sync = time.monotonic()
        self._next_seq = 0
        # acknowledged cursor: first unacknowledged seq and its place on disk
        self._ack_seq = 0
        self._ack_pos: tuple[int, int] = (0, 0)  # (segment first seq, offset)
        # memory window of the newest records: (seq, arrival, point, segment, end offset)
        self._mem: deque[tuple[int, float, Point, int, int]] = deque()
        self._reserved: list[Point] = []
        self._reserved_end: tuple[int, int, int] | None = None  # (seq, segment, offset)
        self._skip_to = 0  # after a dropped segment, the ack cursor jumps to here
        self.torn_bytes = 0
        self.dropped = 0
        self.corrupt = 0
        self._open()

    # --- opening and recovery -----------------------------------------------------------

    def _open(self) -> None:
        import fcntl

        os.makedirs(self.directory, exist_ok=True)
        # one writer per spool: a second process appending would interleave records
        self._lock_fd = os.open(os.path.join(self.directory, LOCK_FILE), os.O_RDWR | os.O_CREAT,
                                0o640)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SpoolBusy(f"{self.directory} is in use by another bmslogger process") from None
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        names = sorted(n for n in os.listdir(self.directory) if n.endswith(SEGMENT_SUFFIX))
        self._lock_fd: int | None
        for name in names:
            try:
                first = int(name[: -len(SEGMENT_SUFFIX)])
            except ValueError:
                log.warning("spool %s: ignoring stray file %s", self.directory, name)
                continue
            path = os.path.join(self.directory, name)
            self._segments.append(_Segment(first, path, os.path.getsize(path)))
        # sealed segments: their count follows from the next one's first seq
        for seg, nxt in zip(self._segments, self._segments[1:]):
            seg.count = max(0, nxt.first - seg.first)
        if self._segments:
            self._recover_tail(self._segments[-1])
            self._next_seq = self._segments[-1].end
        cursor = self._read_cursor()
        self._set_cursor_from(cursor)
        if self._segments:
            self._fd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)
        self._delete_passed()

    def _recover_tail(self, seg: _Segment) -> None:
        with open(seg.path, "rb") as f:
            data = f.read()
        records, good, trailing = read_records(data)
        seg.count = len(records)
        if trailing:
            cut = len(data) - good
            self.torn_bytes += cut
            log.warning(
                "spool %s: %s ends with %d bytes that are not a whole record (a write cut "
                "short by a crash or power loss); cut off",
                self.directory,
                os.path.basename(seg.path),
                cut,
            )
            os.truncate(seg.path, good)
            seg.size = good

    def _read_cursor(self) -> dict | None:
        path = os.path.join(self.directory, CURSOR_FILE)
        try:
            with open(path, encoding="ascii") as f:
                cursor = json.load(f)
            return {k: int(cursor[k]) for k in ("segment", "offset", "seq")}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning(
                "spool %s: cursor unreadable (%s); replaying from the oldest segment "
                "(the sink may receive some points twice)",
                self.directory,
                err,
            )
            return None

    def _set_cursor_from(self, cursor: dict | None) -> None:
        if not self._segments:
            seq = cursor["seq"] if cursor else 0
            self._next_seq = max(self._next_seq, seq)
            self._ack_seq = self._next_seq
            self._ack_pos = (self._next_seq, 0)
            return
        oldest = self._segments[0]
        if cursor is None or cursor["segment"] < oldest.first:
            self._ack_seq, self._ack_pos = oldest.first, (oldest.first, 0)
            return
        seg = self._segment(cursor["segment"])
        if seg is None:
            # the cursor's segment is gone: everything before the next one was acked
            later = [s for s in self._segments if s.first > cursor["segment"]]
            target = later[0] if later else None
            if target is None:
                self._ack_seq = self._next_seq
                self._ack_pos = (self._segments[-1].first, self._segments[-1].size)
            else:
                self._ack_seq, self._ack_pos = target.first, (target.first, 0)
            return
        seq = min(max(cursor["seq"], seg.first), seg.end)
        offset = min(cursor["offset"], seg.size)
        self._ack_seq, self._ack_pos = seq, (seg.first, offset)

    def _segment(self, first: int) -> _Segment | None:
        for seg in self._segments:
            if seg.first == first:
                return seg
        return None

    # --- the queue interface ---------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return self._next_seq - self._ack_seq

    @property
    def reserved(self) -> int:
        with self._lock:
            return len(self._reserved)

    def waiting(self) -> int:
        """Points spooled and not part of the batch in flight."""
        with self._lock:
            return self._next_seq - self._ack_seq - len(self._reserved)

    def oldest_waiting_since(self) -> float | None:
        """Monotonic arrival of the oldest waiting point; a backlog read from disk counts
        as arrived long ago, so it is sent in full batches at once."""
        with self._lock:
            first = self._ack_seq + len(self._reserved)
            if first >= self._next_seq:
                return None
            if self._mem and self._mem[0][0] <= first:
                return self._mem[first - self._mem[0][0]][1]
            return _BACKLOG_ARRIVAL

    @property
    def bytes(self) -> int:
        """Bytes of segment files on disk (acknowledged records included until their
        segment is deleted)."""
        with self._lock:
            return sum(s.size for s in self._segments)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "spool_points": self._next_seq - self._ack_seq,
                "spool_bytes": sum(s.size for s in self._segments),
                "spool_segments": len(self._segments),
            }

    def put(
        self, points: Sequence[Point], now: float, payloads: Sequence[bytes] | None = None
    ) -> list[Point]:
        """Append `points` (their encoded `payloads` if the caller has them) and make
        them durable as the fsync policy says; return the points dropped to stay within
        ``max_bytes``. Raises OSError when the disk refuses the write."""
        if not points:
            return []
        if payloads is None:
            payloads = [encode_point(p) for p in points]
        with self._lock:
            seg = self._active_segment()
            records = [frame(pl) for pl in payloads]
            blob = b"".join(records)
            assert self._fd is not None
            written = 0
            try:
                while written < len(blob):
                    written += os.write(self._fd, blob[written:])
            except OSError:
                # a partial record would be cut on the next open; cut it now so the
                # segment stays whole for this process too
                if written:
                    os.truncate(seg.path, seg.size)
                raise
            offset = seg.size
            for seq_off, (p, rec) in enumerate(zip(points, records)):
                offset += len(rec)
                self._mem.append((self._next_seq + seq_off, now, p, seg.first, offset))
            seg.size = offset
            seg.count += len(points)
            self._next_seq += len(points)
            while len(self._mem) > self.memory_points:
                self._mem.popleft()
            self._dirty = True
            self._sync_data(force=False)
            return self._enforce_budget()

    def _active_segment(self) -> _Segment:
        if self._segments and self._segments[-1].size < self.segment_bytes:
            if self._fd is None:  # reopened after close
                self._fd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)
            return self._segments[-1]
        if self._segments:
            # seal the old one: whatever the policy, its data goes to disk once, here
            self._sync_data(force=self.fsync != "never")
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        first = self._next_seq
        path = os.path.join(self.directory, f"{first:020d}{SEGMENT_SUFFIX}")
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        seg = _Segment(first, path)
        self._segments.append(seg)
        if self.fsync != "never":
            _fsync_dir(self.directory)
        return seg

    def _sync_data(self, force: bool) -> None:
        if not self._dirty or self._fd is None:
            return
        policy = self.fsync
        now = time.monotonic()
        if force or policy == "always" or (
            not isinstance(policy, str) and now - self._last_sync >= policy
        ):
            os.fsync(self._fd)
            self._dirty = False
            self._last_sync = now

    def sync(self) -> None:
        """Force written points to disk (shutdown, flush), whatever the policy."""
        with self._lock:
            if self.fsync != "never":
                self._sync_data(force=True)

    def _enforce_budget(self) -> list[Point]:
        dropped: list[Point] = []
        while len(self._segments) > 1 and sum(s.size for s in self._segments) > self.max_bytes:
            seg = self._segments.pop(0)
            keep_from = self._ack_seq + len(self._reserved)
            lost_from = max(seg.first, keep_from)
            if lost_from < seg.end:
                dropped.extend(self._points_of(seg, lost_from))
            self._unlink(seg.path)
            nxt = self._segments[0]
            self._skip_to = max(self._skip_to, nxt.first)
            if not self._reserved:
                self._advance_ack(nxt.first, (nxt.first, 0))
        self.dropped += len(dropped)
        return dropped

    def _points_of(self, seg: _Segment, from_seq: int) -> list[Point]:
        """The points of `seg` from `from_seq` on, for the drop report."""
        if self._mem and self._mem[0][0] <= from_seq:
            return [e[2] for e in self._mem if from_seq <= e[0] < seg.end]
        try:
            with open(seg.path, "rb") as f:
                data = f.read()
        except OSError:
            return []
        records, _, _ = read_records(data)
        out = []
        for i, (_, payload) in enumerate(records):
            if seg.first + i >= from_seq:
                try:
                    out.append(decode_point(payload))
                except (ValueError, TypeError):
                    self.corrupt += 1
        return out

    def reserve(self, n: int) -> list[Point]:
        """The batch in flight: the same points again on a retry, else the next `n`."""
        with self._lock:
            if self._reserved:
                return list(self._reserved)
            if self._ack_seq >= self._next_seq:
                return []
            n = max(1, n)
            if self._mem and self._mem[0][0] <= self._ack_seq:
                start = self._ack_seq - self._mem[0][0]
                entries = [self._mem[i] for i in range(start, min(len(self._mem), start + n))]
                self._reserved = [e[2] for e in entries]
                last = entries[-1]
                self._reserved_end = (last[0] + 1, last[3], last[4])
            else:
                self._read_backlog(n)
            return list(self._reserved)

    def _read_backlog(self, n: int) -> None:
        seg_first, offset = self._ack_pos
        seq = self._ack_seq
        points: list[Point | None] = []
        end: tuple[int, int, int] | None = None
        for seg in list(self._segments):
            if seg.first < seg_first or len(points) >= n:
                continue
            start = offset if seg.first == seg_first else 0
            if seg.first != seg_first:
                seq = seg.first
            want = n - len(points)
            records, trailing, at_end = self._read_chunk(seg, start, want)
            records = records[:want]
            decoded = decode_points([payload for _, payload in records])
            # a CRC-valid record that is not a point: count it, never guess
            self.corrupt += decoded.count(None)
            points.extend(decoded)
            if records:
                seq += len(records)
                end = (seq, seg.first, start + records[-1][0])
            if trailing and at_end and len(records) < want and seq < seg.end:
                # corruption inside a sealed segment: skip the rest of it
                lost = seg.end - seq
                self.corrupt += lost
                log.error(
                    "spool %s: %s is corrupt after seq %d; %d points skipped",
                    self.directory,
                    os.path.basename(seg.path),
                    seq,
                    lost,
                )
                seq = seg.end
                end = (seq, seg.first, seg.size)
        self._reserved = [p for p in points if p is not None]
        self._reserved_end = end
        if not self._reserved and end is not None:
            # only corrupt records: move the cursor past them
            self._reserved_end = None
            self._advance_ack(end[0], (end[1], end[2]))

    def _read_chunk(
        self, seg: _Segment, start: int, want: int
    ) -> tuple[list[tuple[int, bytes]], bool, bool]:
        """Records from `start`: enough for `want` points, read in growing chunks so a
        batch never reads a whole segment. Returns (records, trailing, read to the end)."""
        step = max(64 * 1024, want * 400)
        with open(seg.path, "rb") as f:
            f.seek(start)
            data = f.read(min(step, seg.size - start))
            while True:
                records, _good, trailing = read_records(data, limit=want)
                at_end = start + len(data) >= seg.size
                if len(records) >= want or at_end:
                    return records, trailing, at_end
                more = f.read(min(step, seg.size - start - len(data)))
                if not more:
                    return records, trailing, True
                data += more

    def commit(self) -> int:
        """The batch in flight was stored (or dead-lettered): move the cursor past it,
        persist the cursor, delete segments it passed. Returns the batch size."""
        with self._lock:
            n = len(self._reserved)
            if self._reserved_end is None:
                self._reserved = []
                return n
            seq, seg_first, offset = self._reserved_end
            self._reserved = []
            self._reserved_end = None
            if self._skip_to > seq:
                nxt = self._segment(self._skip_to)
                self._advance_ack(self._skip_to, (self._skip_to, 0) if nxt else (seg_first, offset))
            else:
                self._advance_ack(seq, (seg_first, offset))
            return n

    def _advance_ack(self, seq: int, pos: tuple[int, int]) -> None:
        self._ack_seq = max(self._ack_seq, seq)
        self._ack_pos = pos
        while self._mem and self._mem[0][0] < self._ack_seq:
            self._mem.popleft()
        self._write_cursor()
        self._delete_passed()

    def _write_cursor(self) -> None:
        path = os.path.join(self.directory, CURSOR_FILE)
        tmp = path + ".tmp"
        body = json.dumps(
            {"segment": self._ack_pos[0], "offset": self._ack_pos[1], "seq": self._ack_seq}
        ).encode("ascii")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, body)
            if self.fsync == "always":
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _delete_passed(self) -> None:
        # keep the newest segment (it is the append target) even when fully acked
        while len(self._segments) > 1 and self._segments[0].end <= self._ack_seq:
            seg = self._segments.pop(0)
            self._unlink(seg.path)

    def _unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Sync (unless the policy is never) and release the file handle."""
        with self._lock:
            if self._fd is not None:
                if self.fsync != "never":
                    self._sync_data(force=True)
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
