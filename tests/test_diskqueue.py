"""collector/diskqueue.py: durability, order, recovery after crashes, the byte cap, group commit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from collector import diskqueue
from collector.diskqueue import DiskQueue, QueueFull


def drain(q: DiskQueue, ack: bool = True) -> list[bytes]:
    out = []
    while (rec := q.read(timeout=0.05)) is not None:
        out.append(rec.payload)
        if ack:
            q.ack(rec.seq)
    return out


def segments(path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(".seg"))


def test_records_come_back_in_order_and_acked_ones_never_again(tmp_path):
    q = DiskQueue(str(tmp_path))
    seqs = [q.append(f"r{i}".encode()) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    first = q.read(timeout=1)
    second = q.read(timeout=1)
    assert (first.payload, second.payload) == (b"r0", b"r1")
    q.ack(first.seq)
    q.ack(second.seq)
    assert q.pending == 3
    q.close()
    assert q.read(timeout=0.1) is None

    q = DiskQueue(str(tmp_path))
    assert drain(q) == [b"r2", b"r3", b"r4"]
    q.append(b"r5")
    q.close()
    q = DiskQueue(str(tmp_path))
    assert drain(q) == [b"r5"]
    q.close()


def test_unacked_records_are_delivered_again_after_restart(tmp_path):
    q = DiskQueue(str(tmp_path))
    for i in range(3):
        q.append(bytes([65 + i]))
    assert drain(q, ack=False) == [b"A", b"B", b"C"]
    q.close()
    q = DiskQueue(str(tmp_path))
    assert drain(q, ack=False) == [b"A", b"B", b"C"]
    q.close()


def test_out_of_order_acks_advance_the_checkpoint_only_when_contiguous(tmp_path):
    q = DiskQueue(str(tmp_path))
    for payload in (b"a", b"b", b"c"):
        q.append(payload)
    recs = [q.read(timeout=1) for _ in range(3)]
    q.ack(recs[2].seq)
    q.ack(recs[1].seq)
    q.close()
    q = DiskQueue(str(tmp_path))
    assert drain(q, ack=False) == [b"a", b"b", b"c"]  # a was never acked: the watermark stayed
    q.close()
    q = DiskQueue(str(tmp_path))
    recs = [q.read(timeout=1) for _ in range(3)]
    for rec in reversed(recs):
        q.ack(rec.seq)
    q.close()
    q = DiskQueue(str(tmp_path))
    assert drain(q) == []
    q.close()


def test_a_torn_last_record_is_dropped_and_appending_continues(tmp_path):
    q = DiskQueue(str(tmp_path))
    q.append(b"one")
    q.append(b"two")
    q.close()
    seg = tmp_path / segments(tmp_path)[-1]
    whole = seg.read_bytes()
    with open(seg, "ab") as f:  # a crash mid-write: header promises 100 bytes, 5 arrived
        f.write((100).to_bytes(4, "little") + b"\x00\x00\x00\x00" + b"12345")
    q = DiskQueue(str(tmp_path))
    assert seg.read_bytes() == whole
    q.append(b"three")
    assert drain(q) == [b"one", b"two", b"three"]
    q.close()


def test_a_zero_filled_tail_is_not_taken_for_records(tmp_path):
    q = DiskQueue(str(tmp_path))
    q.append(b"x")
    q.close()
    with open(tmp_path / segments(tmp_path)[-1], "ab") as f:
        f.write(bytes(4096))
    q = DiskQueue(str(tmp_path))
    assert drain(q) == [b"x"]
    q.close()


def test_damage_in_an_older_segment_skips_that_segment_only(tmp_path):
    q = DiskQueue(str(tmp_path), max_bytes=10 << 20, segment_bytes=200)
    payloads = [f"record-{i:03d}".encode() * 4 for i in range(30)]
    for p in payloads:
        q.append(p)
    q.close()
    names = segments(tmp_path)
    assert len(names) > 3
    first = tmp_path / names[0]
    data = bytearray(first.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    first.write_bytes(bytes(data))
    q = DiskQueue(str(tmp_path), max_bytes=10 << 20, segment_bytes=200)
    got = drain(q)
    assert q.corrupt_records == 1
    lost = len(payloads) - len(got)
    assert got == payloads[lost:] and 0 < lost < 10
    q.close()


def test_byte_cap_refuses_then_frees_consumed_segments(tmp_path):
    q = DiskQueue(str(tmp_path), max_bytes=64 << 10, segment_bytes=16 << 10)
    payload = b"p" * 1000
    n = 0
    with pytest.raises(QueueFull):
        while True:
            q.append(payload)
            n += 1
    assert q.disk_bytes <= 64 << 10
    assert 55 < n < 66
    assert len(segments(tmp_path)) >= 4
    got = drain(q)
    assert len(got) == n
    assert len(segments(tmp_path)) == 1  # only the segment being written stays
    q.append(payload)  # room again
    q.close()
    q = DiskQueue(str(tmp_path), max_bytes=64 << 10, segment_bytes=16 << 10)
    assert drain(q) == [payload]
    q.close()


def test_concurrent_appends_share_fsyncs(tmp_path, monkeypatch):
    calls = []
    real = os.fsync

    def slow_fsync(fd):
        calls.append(fd)
        time.sleep(0.005)  # like a real disk: appends pile up behind it
        real(fd)

    monkeypatch.setattr(diskqueue.os, "fsync", slow_fsync)
    q = DiskQueue(str(tmp_path))
    calls.clear()
    seqs: list[int] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        for i in range(25):
            seq = q.append(f"{k}-{i}".encode())
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seqs)) == 200
    assert len(calls) < 100, f"{len(calls)} fsyncs for 200 appends: no group commit"
    assert len(drain(q)) == 200
    q.close()


def test_readers_get_only_durable_records_and_wake_on_close(tmp_path):
    q = DiskQueue(str(tmp_path))
    results = []
    reader = threading.Thread(target=lambda: results.append(q.read(timeout=10)))
    reader.start()
    time.sleep(0.05)
    seq = q.append(b"hello")
    reader.join(5)
    assert results[0].seq == seq and results[0].payload == b"hello"
    waiter = threading.Thread(target=lambda: results.append(q.read()))
    waiter.start()
    time.sleep(0.05)
    q.close()
    waiter.join(5)
    assert not waiter.is_alive() and results[1] is None


def test_empty_records_are_refused(tmp_path):
    q = DiskQueue(str(tmp_path))
    with pytest.raises(ValueError):
        q.append(b"")
    q.close()


_CHILD = """
import sys
from collector.diskqueue import DiskQueue
q = DiskQueue(sys.argv[1], segment_bytes=64 << 10)
i = 0
while True:
    q.append(b"%08d" % i + b"x" * (i % 300))
    sys.stdout.write(f"{i}\\n"); sys.stdout.flush()
    i += 1
"""


def test_every_appended_record_survives_kill_9(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    acked = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(acked) > 50, proc.returncode
    q = DiskQueue(str(tmp_path), segment_bytes=64 << 10)
    got = [int(p[:8]) for p in drain(q)]
    assert got[: len(acked)] == acked  # in order, none lost; maybe a few written after the last print
    assert got == list(range(len(got)))
    q.close()


def test_a_directory_is_used_by_one_queue_at_a_time(tmp_path):
    q = DiskQueue(str(tmp_path))
    with pytest.raises(OSError, match="in use"):
        DiskQueue(str(tmp_path))
    q.close()
    DiskQueue(str(tmp_path)).close()


def test_after_a_failed_fsync_nothing_more_is_acknowledged(tmp_path, monkeypatch):
    q = DiskQueue(str(tmp_path))
    q.append(b"before")

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(diskqueue.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output"):
        q.append(b"during")
    monkeypatch.undo()  # the disk "recovers": a retried fsync would succeed, but must not be trusted
    with pytest.raises(OSError, match="unusable"):
        q.append(b"after")
    q.close()
    q = DiskQueue(str(tmp_path))
    assert drain(q)[0] == b"before"
    q.close()
