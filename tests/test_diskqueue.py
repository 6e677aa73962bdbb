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


def test_damage_in_an_older_segment_loses_that_record_only(tmp_path):
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
    assert got == payloads[1:]  # the header of record 0 was hit: the reader resynchronised on record 1
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


def _v1_record(payload: bytes) -> bytes:
    import zlib
    length = len(payload).to_bytes(4, "little")
    return length + zlib.crc32(payload, zlib.crc32(length)).to_bytes(4, "little") + payload


def test_format_1_segments_are_migrated_at_open(tmp_path):
    """Journals written before format 2: rewritten in place with the same seqs, checkpoint kept."""
    (tmp_path / "00000000000000000001.seg").write_bytes(b"".join(_v1_record(b"old-%d" % i) for i in range(5)))
    (tmp_path / "00000000000000000006.seg").write_bytes(b"".join(_v1_record(b"old-%d" % i) for i in range(5, 8)))
    import struct
    import zlib
    body = struct.pack("<Q", 2)  # records 1 and 2 were acked
    (tmp_path / "checkpoint").write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    q = DiskQueue(str(tmp_path))
    assert q.corrupt_records == 0
    q.append(b"new")
    assert drain(q) == [b"old-2", b"old-3", b"old-4", b"old-5", b"old-6", b"old-7", b"new"]
    q.close()
    assert all((tmp_path / n).read_bytes().startswith(diskqueue._FILE_HEADER) for n in segments(tmp_path))


def test_payload_damage_loses_one_record_and_resyncs(tmp_path):
    q = DiskQueue(str(tmp_path), max_bytes=10 << 20, segment_bytes=4096)
    payloads = [f"record-{i:03d}".encode() * 20 for i in range(40)]
    for p in payloads:
        q.append(p)
    q.close()
    names = segments(tmp_path)
    first = tmp_path / names[0]
    data = bytearray(first.read_bytes())
    for k in range(4):  # 4 flipped bytes in the middle of record 2's payload
        data[8 + 2 * (24 + 200) + 24 + 100 + k] ^= 0x5A
    first.write_bytes(bytes(data))
    mid = tmp_path / names[1]
    data = bytearray(mid.read_bytes())
    data[8:8 + 30] = b"\xff" * 30  # the first record's header and part of its payload: garbage
    mid.write_bytes(bytes(data))
    q = DiskQueue(str(tmp_path), max_bytes=10 << 20, segment_bytes=4096)
    got = drain(q)
    assert q.corrupt_records == 2
    lost = [p for p in payloads if p not in got]
    assert len(lost) == 2 and lost[0] == payloads[2]
    assert q.pending == 0 and len(segments(tmp_path)) == 1  # the watermark moved past the losses
    q.close()


def test_damage_in_the_tail_keeps_the_good_records_after_it(tmp_path):
    q = DiskQueue(str(tmp_path))
    for i in range(10):
        q.append(b"tail-%d" % i * 10)
    q.close()
    tail = tmp_path / segments(tmp_path)[-1]
    data = bytearray(tail.read_bytes())
    size = len(data)
    data[8 + 3 * (24 + 60) + 5] ^= 0xFF  # record 3's header
    tail.write_bytes(bytes(data))
    q = DiskQueue(str(tmp_path))
    assert tail.stat().st_size == size  # not truncated: good records follow the damage
    q.append(b"after")
    got = drain(q)
    assert got == [b"tail-%d" % i * 10 for i in range(10) if i != 3] + [b"after"]
    assert q.corrupt_records == 1
    q.close()


def test_a_deleted_segment_is_counted_and_never_blocks_the_watermark(tmp_path):
    q = DiskQueue(str(tmp_path), max_bytes=64 << 10, segment_bytes=4096)
    payloads = [b"%04d" % i * 50 for i in range(60)]
    for p in payloads:
        q.append(p)
    names = segments(tmp_path)
    assert len(names) >= 4
    os.unlink(tmp_path / names[1])  # while running: the reader has not reached it
    got = drain(q)
    assert 0 < q.corrupt_records == len(payloads) - len(got)
    assert q.pending == 0 and segments(tmp_path) == [names[-1]]
    while True:  # the cap is free again: it accepts until full, as a fresh queue would
        try:
            q.append(b"x" * 1000)
        except QueueFull:
            break
    assert len(drain(q)) > 50
    q.close()
    os.unlink(tmp_path / segments(tmp_path)[0]) if len(segments(tmp_path)) > 1 else None
    q = DiskQueue(str(tmp_path), max_bytes=64 << 10, segment_bytes=4096)
    q.append(b"y")
    assert drain(q)[-1] == b"y"
    q.close()
