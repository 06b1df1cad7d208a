"""Port locks: exclusion between threads and real processes, crash safety, and the proof
that two processes sharing one real pty never interleave a request while they lock."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from bmslogger.errors import PortBusyError, TransportError
from bmslogger.locking import PortLock, lock_holder, lock_path
from bmslogger.model import PortSettings
from bmslogger.options import resolve_options
from bmslogger.simline import serve_pty
from bmslogger.simulator import Simulator, Transmission

HOLDER = """
import sys, time
from bmslogger.locking import PortLock
with PortLock(sys.argv[1], sys.argv[2], 5):
    print("LOCKED", flush=True)
    time.sleep(60)
"""


@contextlib.contextmanager
def holder_process(identity: str, lock_dir: str):
    """A real process holding the lock until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, identity, lock_dir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        line = proc.stdout.readline()
        assert line == b"LOCKED\n", proc.stderr.read().decode()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_acquire_writes_pid_release_truncates_and_keeps_file(tmp_path):
    lock_dir = str(tmp_path / "locks" / "nested")  # created on demand
    path = lock_path("ttyUSB0", lock_dir)
    assert path == os.path.join(lock_dir, "LCK..ttyUSB0")
    assert lock_holder("ttyUSB0", lock_dir) is None  # no file yet
    with PortLock("ttyUSB0", lock_dir, 1.0) as lock:
        assert lock.held
        assert read(path) == b"%10d\n" % os.getpid()
        assert len(read(path)) == 11
        assert lock_holder("ttyUSB0", lock_dir) == os.getpid()
        assert 0 <= lock.waited_s < 0.1
    assert not lock.held
    assert os.path.exists(path) and read(path) == b""
    assert lock_holder("ttyUSB0", lock_dir) is None
    with lock:  # one object, many conversations
        assert read(path) == b"%10d\n" % os.getpid()


def test_timeout_names_the_port_and_the_holder_pid(tmp_path):
    lock_dir = str(tmp_path)
    with holder_process("ttyUSB1", lock_dir) as proc:
        assert lock_holder("ttyUSB1", lock_dir) == proc.pid
        lock = PortLock("ttyUSB1", lock_dir, 0.3)
        started = time.monotonic()
        with pytest.raises(PortBusyError) as err:
            lock.acquire()
        elapsed = time.monotonic() - started
        assert err.value.holder_pid == proc.pid
        assert "ttyUSB1" in str(err.value) and f"pid {proc.pid}" in str(err.value)
        assert err.value.kind == "port_busy"
        assert 0.3 <= elapsed < 0.8
        assert lock.waited_s >= 0.3 and not lock.held


def test_a_sigkilled_holder_never_blocks(tmp_path):
    lock_dir = str(tmp_path)
    with holder_process("ttyUSB2", lock_dir) as proc:
        with pytest.raises(PortBusyError):
            PortLock("ttyUSB2", lock_dir, 0.05).acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    path = lock_path("ttyUSB2", lock_dir)
    assert read(path) == b"%10d\n" % proc.pid  # the dead holder's pid is still written...
    assert lock_holder("ttyUSB2", lock_dir) is None  # ...but the kernel dropped its lock
    with PortLock("ttyUSB2", lock_dir, 1.0) as lock:
        assert lock.waited_s < 0.1
        assert read(path) == b"%10d\n" % os.getpid()


def test_threads_exclude_each_other_even_sharing_one_object(tmp_path):
    lock_dir = str(tmp_path)
    shared = PortLock("ttyS0", lock_dir, 10.0)
    inside = []
    most = [0]
    guard = threading.Lock()

    def worker(use_shared: bool) -> None:
        for _ in range(15):
            lock = shared if use_shared else PortLock("ttyS0", lock_dir, 10.0)
            with lock:
                with guard:
                    inside.append(1)
                    most[0] = max(most[0], len(inside))
                time.sleep(0.002)
                with guard:
                    inside.pop()

    threads = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most[0] == 1


def test_flock_conflicts_between_threads_of_one_process(tmp_path):
    lock_dir = str(tmp_path)
    shared = PortLock("ttyS1", lock_dir, 1.0)
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with shared:
            taken.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert taken.wait(5)
        for lock in (shared, PortLock("ttyS1", lock_dir, 0.1)):
            lock.timeout_s = 0.1
            with pytest.raises(PortBusyError) as err:
                lock.acquire()
            assert err.value.holder_pid == os.getpid()
    finally:
        release.set()
        t.join(5)


def test_waiter_gets_the_lock_soon_after_release(tmp_path):
    lock_dir = str(tmp_path)
    taken = threading.Event()

    def hold() -> None:
        with PortLock("ttyS2", lock_dir, 1.0):
            taken.set()
            time.sleep(0.1)

    t = threading.Thread(target=hold)
    t.start()
    assert taken.wait(5)
    with PortLock("ttyS2", lock_dir, 2.0) as second:
        # the back-off is capped at 50 ms, so a release is noticed quickly
        assert 0.05 <= second.waited_s < 0.25
    t.join(5)


def test_release_from_a_thread_that_does_not_hold_it_is_a_bug(tmp_path):
    lock = PortLock("ttyS5", str(tmp_path), 1.0)
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()
    with lock:
        errors = []

        def release_elsewhere() -> None:
            try:
                lock.release()
            except RuntimeError as err:
                errors.append(err)

        t = threading.Thread(target=release_elsewhere)
        t.start()
        t.join(5)
        assert len(errors) == 1 and lock.held


def test_same_thread_twice_is_refused(tmp_path):
    lock = PortLock("ttyS3", str(tmp_path), 0.1)
    with lock, pytest.raises(TransportError, match="already held"):
        lock.acquire()


def test_bad_lock_folder_and_identity(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TransportError) as err:
        PortLock("ttyUSB0", str(blocker / "locks"), 0.1).acquire()
    assert str(blocker / "locks") in str(err.value)
    assert "folder" in str(err.value)
    for bad in ("", "a/b", ".."):
        with pytest.raises(TransportError):
            PortLock(bad, str(tmp_path), 0.1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any file")
def test_read_only_lock_file_still_locks(tmp_path):
    path = lock_path("ttyS4", str(tmp_path))
    with open(path, "w"):
        pass
    os.chmod(path, 0o444)
    with PortLock("ttyS4", str(tmp_path), 0.5):
        assert read(path) == b""
        with pytest.raises(PortBusyError):
            PortLock("ttyS4", str(tmp_path), 0.05).acquire()
        assert lock_holder("ttyS4", str(tmp_path)) == 0


# --- two real processes on one real pty ------------------------------------------------------

REQUEST_RE = re.compile(rb"^REQ (\d+) (\d+) a{20} END$")


class RecordingSim(Simulator):
    """Answers ``REQ pid n aaaa... END`` with ``ACK pid n``; remembers every request and
    how many lines were not one whole request (two requests' bytes mixed)."""

    PORT_DEFAULTS = PortSettings(baudrate=115200, turnaround_s=0.005)

    def __init__(self, options, **kw):
        super().__init__(options, **kw)
        self.buffer = b""
        self.valid: list[tuple[int, int]] = []
        self.malformed: list[bytes] = []

    def receive(self, data):
        self.buffer += data
        out = []
        while b"\r" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\r")
            m = REQUEST_RE.match(line)
            if m:
                self.valid.append((int(m.group(1)), int(m.group(2))))
                out.append(Transmission(b"ACK %s %s\r" % (m.group(1), m.group(2)),
                                        self.port_settings.turnaround_s))
            else:
                self.malformed.append(line)
                out.append(Transmission(b"BAD\r", self.port_settings.turnaround_s))
        return out


CLIENT = r"""
import contextlib, json, os, sys, time
from bmslogger.errors import TransportError
from bmslogger.locking import PortLock
from bmslogger.model import PortSettings
from bmslogger.transport import open_transport, port_identity

path, lock_dir, count, use_lock = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
settings = PortSettings(baudrate=115200, turnaround_s=0.005)
identity = port_identity(path)
pid = os.getpid()
print("READY", flush=True)
sys.stdin.readline()
answers = []
for n in range(count):
    lock = PortLock(identity, lock_dir, 30.0) if use_lock else contextlib.nullcontext()
    with lock, open_transport(path, settings) as line:
        line.write(b"REQ %d %d aaaaaaaaaa" % (pid, n))
        print("HALF", flush=True)
        sys.stdin.readline()  # the pause between halves that invites interleaving
        line.write(b"aaaaaaaaaa END\r")
        answer = b""
        deadline = time.monotonic() + 1.0
        try:
            while not answer.endswith(b"\r") and time.monotonic() < deadline:
                answer += line.read(deadline - time.monotonic())
        except TransportError as err:  # two readers on one tty (only without the lock)
            answer += b"<" + str(err).encode() + b">"
    answers.append(answer.decode("latin-1"))
print("DONE " + json.dumps(answers), flush=True)
"""

#: How long the coordinator lets a client pause between its halves when the other client
#: is not pausing too.
GRACE_S = 0.3


def run_two_clients(path: str, lock_dir: str, count: int, use_lock: bool):
    """Two processes run `count` conversations each. Both start together; a client that
    wrote its first half pauses until the other one has too (then both go on), or until
    GRACE_S passed. Without a lock both clients start their first conversation together,
    so their pauses meet and the halves interleave (deterministically, for that first
    conversation at least); with the lock the second client is still waiting for the lock,
    so a pause can only end by GRACE_S."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, path, lock_dir, str(count), "1" if use_lock else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout.readline() == b"READY\n", p.stderr.read().decode()
        for p in procs:
            p.stdin.write(b"GO\n")
            p.stdin.flush()
        paused: dict[subprocess.Popen, float] = {}
        results: dict[int, list[str]] = {}
        most_paused = 0
        deadline = time.monotonic() + 60
        while len(results) < 2:
            assert time.monotonic() < deadline, "clients did not finish"
            running = [p for p in procs if p.pid not in results]
            ready, _, _ = select.select([p.stdout for p in running], [], [], 0.01)
            for p in running:
                if p.stdout not in ready:
                    continue
                line = p.stdout.readline()
                assert line, f"client {p.pid} died: {p.stderr.read().decode()}"
                if line == b"HALF\n":
                    paused[p] = time.monotonic()
                else:
                    assert line.startswith(b"DONE "), line
                    results[p.pid] = json.loads(line[5:])
            most_paused = max(most_paused, len(paused))
            now = time.monotonic()
            if paused and (len(paused) == 2 or min(paused.values()) + GRACE_S <= now):
                for p in paused:
                    p.stdin.write(b"GO\n")
                    p.stdin.flush()
                paused.clear()
        for p in procs:
            assert p.wait(10) == 0, p.stderr.read().decode()
        return results, most_paused
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            for f in (p.stdin, p.stdout, p.stderr):
                f.close()


@pytest.mark.slow
def test_two_processes_with_the_lock_never_interleave(tmp_path):
    sim = RecordingSim(resolve_options(RecordingSim.all_options(), {}))
    count = 4
    with serve_pty(sim) as server:
        results, most_paused = run_two_clients(server.path, str(tmp_path), count, True)
    assert most_paused == 1  # never both between their halves at once
    assert sim.malformed == []
    assert sorted(sim.valid) == sorted((pid, n) for pid in results for n in range(count))
    for pid, answers in results.items():
        assert answers == [f"ACK {pid} {n}\r" for n in range(count)]


@pytest.mark.slow
def test_two_processes_without_the_lock_do_interleave(tmp_path):
    """The control: the same clients without the lock garble the line, so the test above
    would fail if PortLock did not exclude."""
    sim = RecordingSim(resolve_options(RecordingSim.all_options(), {}))
    count = 3
    with serve_pty(sim) as server:
        results, most_paused = run_two_clients(server.path, str(tmp_path), count, False)
    assert most_paused == 2
    assert sorted(len(answers) for answers in results.values()) == [count, count]
    assert sim.malformed
    assert any(re.search(rb"REQ \d+ \d+ a{10}REQ ", line) for line in sim.malformed)
    assert len(sim.valid) < 2 * count
