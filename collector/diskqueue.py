"""A durable FIFO of byte records on disk: group-commit fsync, checkpointed reads, a byte cap.

Used by the OTLP receiver's intake journal and by the upstream exporter's persistent sending
queue.  The whole API::

    q = DiskQueue(directory, max_bytes=1 << 30)   # opens (creating) and recovers after a crash
    seq = q.append(payload, timeout=5.0)          # returns once the record is fsync'd; raises
                                                  # QueueFull (cap reached) / TimeoutError
    rec = q.read(timeout=1.0)                     # next unread record (oldest first) or None
    rec.seq, rec.payload
    q.ack(rec.seq)                                # consumed: never delivered again after restart
    q.close()                                     # saves the checkpoint; read() then returns None
    q.disk_bytes, q.pending, q.next_seq           # bytes of segment files; records not yet acked;
                                                  # the seq the next append gets

Guarantees:

* ``append`` returns only after the record is on disk (``os.fsync`` of the segment file, and of
  the directory when a segment is created).  Concurrent appends share one fsync (group commit):
  while one fsync runs, the next appends accumulate and are covered by the following one.
* ``read`` hands out only records that are already durable, in append order, each once per
  process lifetime (several reader threads may share a queue).
* After a restart (clean or ``kill -9``) every record that was not acked is delivered again; a
  record acked may be delivered again only if the process died before the checkpoint was written
  (at-least-once: consumers must be idempotent, as our storage exporters are by upsert).
* Acks may arrive out of order; the checkpoint is the highest seq below which everything is acked.
* Corruption tolerant: every record carries its length and a CRC32.  A torn last record (the
  process died mid-write) is detected at open and cut off; a damaged record elsewhere makes the
  reader skip the rest of that segment (counted in ``corrupt_records``), never crash.
* One process at a time: the directory is locked (``flock`` on ``<directory>/lock``, released by
  the kernel even on ``kill -9``); a second opener gets an ``OSError`` that says so.
* An fsync that fails makes every later ``append`` raise ``OSError`` (the kernel may have dropped
  the unsynced pages, so nothing more is acknowledged); reopening recovers what is on disk.
* ``disk_bytes`` stays under ``max_bytes``: an append that would exceed it raises ``QueueFull``
  (callers turn that into backpressure).  A segment file is deleted once all its records are acked.

Layout: ``<directory>/<first seq, 20 digits>.seg`` files of records
``[u32 length][u32 crc32(length bytes + payload)][payload]`` and a ``checkpoint`` file holding the
acked watermark (written atomically by rename, at most every ``checkpoint_interval`` seconds,
whenever a segment is deleted, and at close).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["DiskQueue", "QueueFull", "Record"]

log = logging.getLogger("genai_collector.diskqueue")

_HEADER = struct.Struct("<II")
_CHECKPOINT = struct.Struct("<QI")
_SUFFIX = ".seg"
_MAX_RECORD = 1 << 30


class QueueFull(Exception):
    """The queue holds ``max_bytes`` already; retry after consumers caught up."""


@dataclass(frozen=True)
class Record:
    seq: int
    payload: bytes


def _crc(length_bytes: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(length_bytes))


def _encode(payload: bytes) -> bytes:
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", _crc(length, payload)) + payload


def _seg_name(first_seq: int) -> str:
    return f"{first_seq:020d}{_SUFFIX}"


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_directory(directory: str) -> int:
    fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(f"disk queue directory {directory} is in use by another process") from None
    return fd


def _read_record(fd: int, offset: int, file_size: int) -> bytes | None:
    """The payload at ``offset``, or None when the bytes there are not one whole valid record."""
    if offset + _HEADER.size > file_size:
        return None
    header = os.pread(fd, _HEADER.size, offset)
    length, crc = _HEADER.unpack(header)
    if length == 0 or length > _MAX_RECORD or offset + _HEADER.size + length > file_size:
        return None
    payload = os.pread(fd, length, offset + _HEADER.size)
    if len(payload) != length or _crc(header[:4], payload) != crc:
        return None
    return payload


class DiskQueue:
    def __init__(self, directory: str, max_bytes: int = 1 << 30, segment_bytes: int | None = None,
                 sync: bool = True, checkpoint_interval: float = 0.2) -> None:
        """Open or create the queue in ``directory`` and recover what a previous run left.

        ``segment_bytes`` (default max_bytes/8, between 64 KiB and 64 MiB) bounds each file, so
        acked data is freed in steps of that size.  ``sync=False`` skips fsync (tests, benchmarks).
        """
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(64 << 10, min(64 << 20, max_bytes // 8))
        self.sync = sync
        self.checkpoint_interval = checkpoint_interval
        self.corrupt_records = 0
        os.makedirs(directory, exist_ok=True)
        self._lock_fd = _lock_directory(directory)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._sizes: dict[int, int] = {}  # segment first seq -> file size
        self._segments: list[int] = []  # sorted first seqs
        self._acked_above: set[int] = set()
        self._last_checkpoint_write = 0.0
        self._syncing = False
        self._failed: OSError | None = None
        self._reader_seg: int | None = None
        self._reader_fd: int | None = None
        self._reader_offset = 0
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- recovery -------------------------------------------------------------------------------

    def _recover(self) -> None:
        for name in os.listdir(self.directory):
            if name.endswith(_SUFFIX) and name[:-len(_SUFFIX)].isdigit():
                first = int(name[:-len(_SUFFIX)])
                self._segments.append(first)
                self._sizes[first] = os.path.getsize(self._path(first))
        self._segments.sort()
        self._watermark = self._load_checkpoint()  # every seq <= watermark is acked
        if self._segments:  # a checkpoint older than the oldest segment: those were acked
            self._watermark = max(self._watermark, self._segments[0] - 1)
        if self._segments:
            tail = self._segments[-1]
            count, valid_end = self._scan(tail)
            if valid_end < self._sizes[tail]:
                log.warning("disk queue %s: dropping a torn record at the end of %s (%d bytes)",
                            self.directory, _seg_name(tail), self._sizes[tail] - valid_end)
                os.truncate(self._path(tail), valid_end)
                self._sizes[tail] = valid_end
            self._next_seq = tail + count
        else:
            self._next_seq = self._watermark + 1
        tail_continues = bool(self._segments) and self._next_seq > self._watermark
        self._next_seq = max(self._next_seq, self._watermark + 1)
        self._synced_seq = self._next_seq - 1
        self._written_seq = self._next_seq - 1
        self._drop_consumed_segments()
        if tail_continues:
            self._open_writer()
        else:  # records numbered from the checkpoint cannot follow the tail segment's own
            self._new_segment()
        self._reader_seq = self._watermark + 1
        self._reader_to(self._reader_seq)

    def _scan(self, first: int) -> tuple[int, int]:
        """Count the valid records of a segment; returns (count, byte offset where they end)."""
        fd = os.open(self._path(first), os.O_RDONLY)
        try:
            size, offset, count = self._sizes[first], 0, 0
            while (payload := _read_record(fd, offset, size)) is not None:
                offset += _HEADER.size + len(payload)
                count += 1
            return count, offset
        finally:
            os.close(fd)

    def _load_checkpoint(self) -> int:
        try:
            with open(os.path.join(self.directory, "checkpoint"), "rb") as f:
                data = f.read()
            seq, crc = _CHECKPOINT.unpack(data)
            if zlib.crc32(data[:8]) == crc:
                return seq
            log.warning("disk queue %s: checkpoint damaged; replaying from the oldest segment", self.directory)
        except FileNotFoundError:
            pass
        except (OSError, struct.error):
            log.warning("disk queue %s: checkpoint unreadable; replaying from the oldest segment", self.directory)
        return (self._segments[0] - 1) if self._segments else 0

    def _save_checkpoint(self) -> None:
        body = struct.pack("<Q", self._watermark)
        tmp = os.path.join(self.directory, "checkpoint.tmp")
        with open(tmp, "wb") as f:
            f.write(body + struct.pack("<I", zlib.crc32(body)))
        os.replace(tmp, os.path.join(self.directory, "checkpoint"))
        self._last_checkpoint_write = time.monotonic()

    def _path(self, first: int) -> str:
        return os.path.join(self.directory, _seg_name(first))

    # -- writing --------------------------------------------------------------------------------

    def _open_writer(self) -> None:
        """Append to the last segment, or start one when there is none or it is full."""
        if self._segments and self._sizes[self._segments[-1]] < self.segment_bytes:
            self._wseg = self._segments[-1]
            self._wfd = os.open(self._path(self._wseg), os.O_WRONLY | os.O_APPEND)
        else:
            self._new_segment()

    def _new_segment(self) -> None:
        first = self._next_seq
        self._wfd = os.open(self._path(first), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.sync:
            _fsync_dir(self.directory)  # the file's name must survive a crash too
        self._wseg = first
        if first not in self._sizes:
            self._segments.append(first)
            self._sizes[first] = 0

    @property
    def disk_bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def next_seq(self) -> int:
        """The seq the next append gets; records below it existed when this was read."""
        return self._next_seq

    @property
    def pending(self) -> int:
        return self._written_seq - self._watermark - len(self._acked_above)

    def append(self, payload: bytes, timeout: float | None = None) -> int:
        """Write one record and return its seq once it is durable (see the module docstring).

        On TimeoutError the record is written and will be delivered, it is just not known to be
        fsync'd yet.
        """
        if not payload:
            raise ValueError("empty records are not allowed")
        if len(payload) > _MAX_RECORD:
            raise ValueError(f"record of {len(payload)} bytes exceeds {_MAX_RECORD}")
        data = _encode(payload)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._closed:
                raise QueueFull("the queue is closed")
            self._check_usable()
            if self.disk_bytes + len(data) > self.max_bytes:
                raise QueueFull(f"disk queue {self.directory} is full ({self.disk_bytes} of {self.max_bytes} bytes)")
            if self._sizes[self._wseg] and self._sizes[self._wseg] + len(data) > self.segment_bytes:
                self._rotate()
            os.write(self._wfd, data)
            self._sizes[self._wseg] += len(data)
            seq = self._next_seq
            self._next_seq += 1
            self._written_seq = seq
            if not self.sync:
                self._synced_seq = seq
                self._cond.notify_all()
                return seq
            self._await_sync(seq, deadline)
        return seq

    def _await_sync(self, seq: int, deadline: float | None) -> None:
        """Group commit: one thread fsyncs for everyone written so far; the others wait. Holds the lock."""
        while self._synced_seq < seq:
            self._check_usable()
            if self._syncing:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("the disk queue did not fsync in time")
                self._cond.wait(remaining)
                continue
            self._syncing = True
            target, fd = self._written_seq, self._wfd
            self._lock.release()
            try:
                self._fsync(fd)
            finally:
                self._lock.acquire()
                self._syncing = False
                self._cond.notify_all()
            self._synced_seq = max(self._synced_seq, target)

    def _fsync(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            # the kernel may have dropped the dirty pages: nothing written since the last good
            # fsync can be trusted (a retried fsync would "succeed"), so refuse until a restart
            self._failed = exc
            raise

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise OSError(f"disk queue {self.directory} unusable after an fsync error: {self._failed}")

    def _rotate(self) -> None:
        """Close the full segment (after an fsync in flight on it finished) and start the next."""
        while self._syncing:
            self._cond.wait()
        if self.sync:
            self._fsync(self._wfd)
        self._synced_seq = self._written_seq
        os.close(self._wfd)
        self._new_segment()
        self._cond.notify_all()

    # -- reading --------------------------------------------------------------------------------

    def _reader_to(self, seq: int) -> None:
        """Position the reader at ``seq`` (or the first record after it that still exists)."""
        if self._reader_fd is not None:
            os.close(self._reader_fd)
            self._reader_fd = None
        i = bisect_right(self._segments, seq) - 1
        if i < 0:
            if not self._segments:
                self._reader_seg, self._reader_seq, self._reader_offset = None, seq, 0
                return
            i, seq = 0, max(seq, self._segments[0])
        first = self._segments[i]
        self._reader_seg, self._reader_seq, self._reader_offset = first, first, 0
        self._reader_fd = os.open(self._path(first), os.O_RDONLY)
        while self._reader_seq < seq and self._next_in_segment() is not None:
            pass

    def _next_in_segment(self) -> bytes | None:
        payload = _read_record(self._reader_fd, self._reader_offset, self._sizes[self._reader_seg])
        if payload is not None:
            self._reader_offset += _HEADER.size + len(payload)
            self._reader_seq += 1
        return payload

    def read(self, timeout: float | None = None) -> Record | None:
        """The next durable record not handed out yet; None on timeout or once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._reader_seq <= self._synced_seq:
                    record = self._read_one()
                    if record is not None:
                        return record
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def _read_one(self) -> Record | None:
        if self._reader_fd is None or self._reader_seg not in self._sizes:
            self._reader_to(self._reader_seq)
        seq = self._reader_seq
        payload = self._next_in_segment()
        if payload is not None:
            return Record(seq, payload)
        later = [s for s in self._segments if s > self._reader_seg]
        if self._reader_offset < self._sizes[self._reader_seg] or not later:
            self.corrupt_records += 1
            log.error("disk queue %s: damaged record %d in %s; skipping the rest of the segment",
                      self.directory, seq, _seg_name(self._reader_seg))
            if not later:  # damage in the segment being written: continue after what is there now
                self._reader_offset = self._sizes[self._reader_seg]
                self._acked_above.update(range(seq, self._written_seq + 1))
                self._reader_seq = self._written_seq + 1
                return None
            self._acked_above.update(range(seq, later[0]))
        if later:
            self._reader_to(later[0])
        return None

    # -- acknowledging --------------------------------------------------------------------------

    def ack(self, seq: int) -> None:
        """Mark a record consumed; frees whole segments and checkpoints as the watermark advances."""
        with self._cond:
            if seq <= self._watermark:
                return
            self._acked_above.add(seq)
            advanced = False
            while self._watermark + 1 in self._acked_above:
                self._acked_above.discard(self._watermark + 1)
                self._watermark += 1
                advanced = True
            if not advanced or self._closed:
                return
            freed = self._drop_consumed_segments()
            if freed or time.monotonic() - self._last_checkpoint_write >= self.checkpoint_interval:
                self._save_checkpoint()

    def _drop_consumed_segments(self) -> bool:
        """Delete segments whose records are all acked (never the one being written)."""
        freed = False
        while len(self._segments) > 1 and self._segments[1] <= self._watermark + 1:
            first = self._segments.pop(0)
            del self._sizes[first]
            if first == self._reader_seg and self._reader_fd is not None:
                os.close(self._reader_fd)
                self._reader_fd = None
            try:
                os.unlink(self._path(first))
            except FileNotFoundError:
                pass
            freed = True
        if freed:
            self._save_checkpoint()  # before a restart could look for the deleted records
        return freed

    def close(self) -> None:
        """Fsync, save the checkpoint and release the files; unacked records wait for the next open."""
        with self._cond:
            if self._closed:
                return
            while self._syncing:
                self._cond.wait()
            self._closed = True
            if self.sync:
                os.fsync(self._wfd)
            os.close(self._wfd)
            if self._reader_fd is not None:
                os.close(self._reader_fd)
                self._reader_fd = None
            self._save_checkpoint()
            os.close(self._lock_fd)  # releases the flock
            self._cond.notify_all()
