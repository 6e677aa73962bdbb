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
* Corruption tolerant: every record carries a magic, its length, its seq and two CRC32s (header,
  payload).  A damaged record costs only itself: the reader resynchronises on the next record
  whose header checks out (found by its magic), and because each header names its seq the exact
  seqs lost are known.  Every loss -- a damaged record, a run of garbage, a segment file deleted
  or unreadable -- is logged with the seqs and counted in ``corrupt_records``, and the lost seqs
  count as acked, so the watermark moves on and segments are still freed.  At open only bytes
  after the last valid record of the tail segment (a torn write) are cut off; good records after
  damage are kept.
* One process at a time: the directory is locked (``flock`` on ``<directory>/lock``, released by
  the kernel even on ``kill -9``); a second opener gets an ``OSError`` that says so.
* An fsync that fails makes every later ``append`` raise ``OSError`` (the kernel may have dropped
  the unsynced pages, so nothing more is acknowledged); reopening recovers what is on disk.
* ``disk_bytes`` stays under ``max_bytes``: an append that would exceed it raises ``QueueFull``
  (callers turn that into backpressure).  A segment file is deleted once all its records are acked.

Layout: ``<directory>/<first seq, 20 digits>.seg`` files, each an 8-byte file header
(``GCDQ`` + format 2) then records ``[u32 magic][u32 length][u64 seq][u32 crc32(payload)]
[u32 crc32(the 20 header bytes before)][payload]``, and a ``checkpoint`` file holding the acked
watermark (written atomically by rename, at most every ``checkpoint_interval`` seconds, whenever
a segment is deleted, and at close).

Format 1 (before 2026-12: no file header, records ``[u32 length][u32 crc32][payload]``) is
migrated at open: each old segment is rewritten in format 2 (same seqs) into a temporary file,
fsync'd and renamed over the old one.  A damaged format-1 record loses the rest of its segment
(format 1 cannot resynchronise); that loss is logged and counted like any other.
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

_HEADER = struct.Struct("<IIQII")  # magic, length, seq, crc32(payload), crc32(header[:20])
_MAGIC = 0x51444347  # b"GCDQ" little-endian: what a resync searches for
_MAGIC_BYTES = struct.pack("<I", _MAGIC)
_FILE_HEADER = b"GCDQ\x02\x00\r\n"  # format 2; format 1 files start with a record length
_V1_HEADER = struct.Struct("<II")
_CHECKPOINT = struct.Struct("<QI")
_SUFFIX = ".seg"
_MAX_RECORD = 1 << 30
_SCAN_CHUNK = 1 << 20


class QueueFull(Exception):
    """The queue holds ``max_bytes`` already; retry after consumers caught up."""


@dataclass(frozen=True)
class Record:
    seq: int
    payload: bytes


def _record_header(seq: int, length: int, payload_crc: int) -> bytes:
    head = struct.pack("<IIQI", _MAGIC, length, seq, payload_crc)
    return head + struct.pack("<I", zlib.crc32(head))


def _encode(seq: int, payload: bytes) -> bytes:
    return _record_header(seq, len(payload), zlib.crc32(payload)) + payload


def _is_v1(path: str) -> bool:
    """A format-1 segment: no format-2 file header, and a valid format-1 record at offset 0."""
    with open(path, "rb") as f:
        head = f.read(len(_FILE_HEADER))
        if head == _FILE_HEADER or len(head) < _V1_HEADER.size:
            return False
        length, crc = _V1_HEADER.unpack(head)
        payload = f.read(length) if 0 < length <= _MAX_RECORD else b""
    return len(payload) == length > 0 and zlib.crc32(payload, zlib.crc32(head[:4])) == crc


@dataclass(frozen=True)
class _Entry:
    """A record whose header checked out; ``payload`` None when the payload's checksum did not."""

    seq: int
    payload: bytes | None
    start: int
    end: int  # offset just past the record


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


def _read_entry(fd: int, offset: int, file_size: int) -> _Entry | None:
    """The record at ``offset``, or None when no valid record header starts there."""
    if offset + _HEADER.size > file_size:
        return None
    header = os.pread(fd, _HEADER.size, offset)
    if len(header) < _HEADER.size:
        return None
    magic, length, seq, crc, header_crc = _HEADER.unpack(header)
    if magic != _MAGIC or zlib.crc32(header[:-4]) != header_crc:
        return None
    end = offset + _HEADER.size + length
    if length == 0 or length > _MAX_RECORD or end > file_size:
        return None
    payload = os.pread(fd, length, offset + _HEADER.size)
    return _Entry(seq, payload if len(payload) == length and zlib.crc32(payload) == crc else None, offset, end)


def _resync(fd: int, offset: int, file_size: int) -> _Entry | None:
    """The first valid record header after ``offset`` (searched by its magic), or None."""
    pos = offset + 1
    while pos + _HEADER.size <= file_size:
        chunk = os.pread(fd, min(_SCAN_CHUNK, file_size - pos), pos)
        at = chunk.find(_MAGIC_BYTES)
        while at != -1:
            entry = _read_entry(fd, pos + at, file_size)
            if entry is not None:
                return entry
            at = chunk.find(_MAGIC_BYTES, at + 1)
        if len(chunk) < _SCAN_CHUNK:
            return None
        pos += len(chunk) - (len(_MAGIC_BYTES) - 1)  # a magic may straddle two chunks
    return None


def _entries(fd: int, offset: int, file_size: int):
    """``(entry, skipped)`` for every record from ``offset`` on; ``skipped`` is True when garbage
    came before it (the reader counts the seqs that fell in the gap)."""
    while True:
        entry = _read_entry(fd, offset, file_size)
        skipped = entry is None
        if skipped:
            entry = _resync(fd, offset, file_size)
            if entry is None:
                return
        yield entry, skipped
        offset = entry.end


def _migrate_v1(path: str, first: int, sync: bool) -> int:
    """Rewrite a format-1 segment in format 2 (same seqs); returns the records kept.  Records
    after a damaged one are lost (format 1 has no way to find the next record)."""
    with open(path, "rb") as f:
        data = f.read()
    out, offset, seq = [_FILE_HEADER], 0, first
    while offset + _V1_HEADER.size <= len(data):
        length, crc = _V1_HEADER.unpack_from(data, offset)
        payload = data[offset + _V1_HEADER.size: offset + _V1_HEADER.size + length]
        if length == 0 or len(payload) != length or zlib.crc32(payload, zlib.crc32(data[offset:offset + 4])) != crc:
            break
        out.append(_encode(seq, payload))
        offset += _V1_HEADER.size + length
        seq += 1
    if offset < len(data):
        log.error("disk queue: format-1 segment %s is damaged after record %d: %d bytes after it "
                  "cannot be read", path, seq, len(data) - offset)
    tmp = path + ".migrating"
    with open(tmp, "wb") as f:
        f.write(b"".join(out))
        if sync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    return seq - first


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
                if _is_v1(self._path(first)):
                    kept = _migrate_v1(self._path(first), first, self.sync)
                    log.info("disk queue %s: migrated %s to format 2 (%d records)", self.directory, name, kept)
                self._segments.append(first)
                self._sizes[first] = os.path.getsize(self._path(first))
        self._segments.sort()
        self._watermark = self._load_checkpoint()  # every seq <= watermark is acked
        if self._segments:  # a checkpoint older than the oldest segment: those were acked
            self._watermark = max(self._watermark, self._segments[0] - 1)
        if self._segments:
            tail = self._segments[-1]
            self._next_seq, valid_end = self._scan(tail)
            if valid_end < self._sizes[tail]:
                log.warning("disk queue %s: dropping a torn record at the end of %s (%d bytes)",
                            self.directory, _seg_name(tail), self._sizes[tail] - valid_end)
                os.truncate(self._path(tail), valid_end)
                self._sizes[tail] = valid_end
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
        """The seq after the last valid record of a segment, and the offset where that record ends
        (damage before it is kept: the reader skips it; only bytes after it are a torn write)."""
        fd = os.open(self._path(first), os.O_RDONLY)
        try:
            next_seq, end = first, min(len(_FILE_HEADER), self._sizes[first])
            for entry, _ in _entries(fd, len(_FILE_HEADER), self._sizes[first]):
                next_seq, end = entry.seq + 1, entry.end
            return next_seq, end
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
        if os.fstat(self._wfd).st_size == 0:
            os.write(self._wfd, _FILE_HEADER)
        if self.sync:
            _fsync_dir(self.directory)  # the file's name must survive a crash too
        self._wseg = first
        if first not in self._sizes:
            self._segments.append(first)
        self._sizes[first] = os.fstat(self._wfd).st_size

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
        payload_crc = zlib.crc32(payload)  # outside the lock; only the header needs the seq
        size = _HEADER.size + len(payload)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._closed:
                raise QueueFull("the queue is closed")
            self._check_usable()
            if self.disk_bytes + size > self.max_bytes:
                raise QueueFull(f"disk queue {self.directory} is full ({self.disk_bytes} of {self.max_bytes} bytes)")
            if self._sizes[self._wseg] > len(_FILE_HEADER) and self._sizes[self._wseg] + size > self.segment_bytes:
                self._rotate()
            seq = self._next_seq
            written = os.writev(self._wfd, [_record_header(seq, len(payload), payload_crc), payload])
            self._sizes[self._wseg] += written
            if written != size:  # a disk that filled mid-record: the torn tail is cut at the next open
                self._failed = OSError(f"short write ({written} of {size} bytes)")
                self._check_usable()
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
        self._reader_seg, self._reader_seq, self._reader_offset = first, seq, len(_FILE_HEADER)
        try:
            self._reader_fd = os.open(self._path(first), os.O_RDONLY)
        except OSError as exc:
            self._lose_segment(first, exc)
            return
        for entry, _ in _entries(self._reader_fd, len(_FILE_HEADER), self._sizes[first]):
            if entry.seq >= seq:
                self._reader_offset = entry.start
                return
            self._reader_offset = entry.end

    def _lose_segment(self, first: int, exc: OSError) -> None:
        """A segment file that vanished or cannot be opened: its records are lost, not waited for."""
        if first == self._wseg:  # keep writing somewhere that exists
            self._rotate()
        later = [s for s in self._segments if s > first]
        end = later[0] if later else self._written_seq + 1
        self._segments.remove(first)
        del self._sizes[first]
        start, self._reader_seg, self._reader_seq = self._reader_seq, None, max(self._reader_seq, end)
        self._lose(start, end, f"segment {_seg_name(first)} unreadable ({exc.strerror or exc})")

    def _lose(self, start: int, end: int, why: str) -> None:
        """Seqs ``[start, end)`` cannot be read: log and count them, and count them as acked so
        the watermark (and with it the freeing of segments) moves past them."""
        if end <= start:
            return
        self.corrupt_records += end - start
        log.error("disk queue %s: %d record(s) lost (seq %d..%d): %s", self.directory, end - start, start,
                  end - 1, why)
        self._mark_done(range(start, end))

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
        """The record at the reader, or None after skipping what cannot be read (the caller loops)."""
        if self._reader_fd is None or self._reader_seg not in self._sizes:
            self._reader_to(self._reader_seq)
            if self._reader_fd is None:
                return None
        seg, expected = self._reader_seg, self._reader_seq
        for entry, skipped in _entries(self._reader_fd, self._reader_offset, self._sizes[seg]):
            self._reader_offset = entry.end
            if entry.seq < expected:
                continue  # a stale copy (cannot happen with this writer; tolerated)
            self._reader_seq = entry.seq + 1
            self._lose(expected, entry.seq, f"damaged bytes in {_seg_name(seg)}" if skipped
                       else f"records missing from {_seg_name(seg)}")
            if entry.payload is None:
                self._lose(entry.seq, entry.seq + 1, f"payload checksum mismatch in {_seg_name(seg)}")
                return None
            return Record(entry.seq, entry.payload)
        # no readable record left in this segment: whatever seqs it still owed are lost
        later = [s for s in self._segments if s > seg]
        end = later[0] if later else self._written_seq + 1
        self._reader_seq = max(expected, end)
        self._reader_offset = self._sizes[seg]
        self._lose(expected, end, f"damaged or missing records at the end of {_seg_name(seg)}")
        if later:
            self._reader_to(later[0])
        return None

    # -- acknowledging --------------------------------------------------------------------------

    def ack(self, seq: int) -> None:
        """Mark a record consumed; frees whole segments and checkpoints as the watermark advances."""
        with self._cond:
            self._mark_done((seq,))

    def _mark_done(self, seqs) -> None:
        """Acked or lost: advance the watermark over contiguous seqs, free segments, checkpoint.
        Holds the lock."""
        self._acked_above.update(s for s in seqs if s > self._watermark)
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
