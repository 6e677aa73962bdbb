"""The receiver's intake journal: acknowledge once a request is fsync'd, feed the pipelines after.

With ``storage: {directory: ...}`` on the ``otlp`` receiver, a valid request is appended to a
:class:`collector.diskqueue.DiskQueue` (group-commit fsync shared by concurrent requests) and the
client gets its ``OK`` as soon as that append is durable.  A feeder thread then hands the records,
in order, to the pipelines; an acker thread marks a record consumed once every pipeline has
completed it (the same tickets the direct path waits on, so "completed" still means every durable
exporter committed).  What was journaled but not completed when the process died -- including on
``kill -9`` -- is fed again at the next start.  Re-delivery is at-least-once: the storage
exporters upsert by (trace_id, span_id), so a replayed span is stored once.

Decoded spans of fresh requests are kept in memory (up to ``memory_cache`` bytes of encoded
size) so the feeder does not decode twice; beyond that, and on replay, it decodes from disk.  So
the journal can buffer far more than memory while an exporter is down, up to ``max_size``, after
which requests are refused with backpressure.

Records of every signal share the journal (a tag byte says which signal and encoding).  The
consumer must offer ``submit(batch) -> [Ticket]`` (``collector.pipeline.Router`` does, sending a
batch to its signal's pipelines): the feeder hands over without waiting, and the acker waits on
the tickets in order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from collector.component import ComponentContext, Overloaded, PermanentError
from collector.diskqueue import DiskQueue, QueueFull
from collector.model import Batch, SpanBatch
from config.schema import ByteSize, setting

__all__ = ["StorageConfig", "IntakeJournal"]

_WAIT_FOR_CACHE = 1.0  # longest the feeder waits for a fresh request to register its decoded spans


@dataclass
class StorageConfig:
    directory: str = setting(doc="intake journal directory (created if missing); one collector per directory")
    max_size: ByteSize = setting(1 << 30, min=1 << 20, doc="disk cap of the journal; requests get "
                                                           "RESOURCE_EXHAUSTED / 429 when it is full. At least "
                                                           "twice the largest request a protocol accepts")
    memory_cache: ByteSize = setting(32 << 20, min=0, doc="encoded bytes of fresh requests kept decoded "
                                                          "in memory so the feeder skips decoding them again")


class IntakeJournal:
    def __init__(self, cfg: StorageConfig, ctx: ComponentContext, decode) -> None:
        """``decode(tag, body) -> Batch`` rebuilds the valid items of a journaled request."""
        self.cfg = cfg
        self.log = ctx.logger
        self.decode = decode
        try:
            self.queue = DiskQueue(cfg.directory, max_bytes=cfg.max_size)
        except OSError as exc:
            raise OSError(f"storage directory {cfg.directory!r}: {exc.strerror or exc}") from None
        self._replay_below = self.queue.next_seq  # records below were journaled by a previous run
        self._cache: dict[int, Batch | None] = {}
        self._cache_bytes = 0
        self._fed_seq = -1  # the last seq the feeder looked up
        self._cache_cond = threading.Condition()
        self._pending: deque[tuple[int, list, int]] = deque()
        self._pending_cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.consumer = None
        self.replayed = ctx.counter("journal_replayed_items",
                                    "Spans, log records and metric points fed again from the journal after a restart.")
        self.dropped = ctx.counter("journal_dropped_items",
                                   "Journaled items an exporter refused for good (logged, not retried).")
        ctx.gauge("journal_bytes", "Bytes of intake journal files on disk.", lambda: self.queue.disk_bytes)
        ctx.gauge("journal_damaged_requests", "Journaled requests lost to damage on disk (a bad checksum, "
                  "garbage, a missing segment); each loss is logged with its seqs.",
                  lambda: self.queue.corrupt_records)
        ctx.gauge("journal_pending_requests", "Journaled requests not yet completed by the pipelines.",
                  lambda: self.queue.pending)
        if self.queue.pending:
            self.log.info("intake journal %s: %d request(s) from the previous run will be fed again",
                          cfg.directory, self.queue.pending)

    # -- intake (request threads) -----------------------------------------------------------------

    def append(self, tag: bytes, body: bytes, batch: Batch, timeout: float | None) -> None:
        """Return once the request is durable; raise Overloaded when full, TimeoutError if fsync lags."""
        try:
            seq = self.queue.append(tag + body, timeout=timeout)
        except QueueFull as exc:
            raise Overloaded(str(exc), retry_after=1.0) from None
        except OSError as exc:  # disk error: the client should retry, maybe elsewhere
            self.log.error("intake journal: append failed: %s", exc)
            raise TimeoutError(f"intake journal write failed: {exc.strerror or exc}") from None
        with self._cache_cond:
            if seq <= self._fed_seq:
                return  # the feeder gave up waiting and decoded it from disk already
            keep = self._cache_bytes + batch.nbytes <= self.cfg.memory_cache
            self._cache[seq] = batch if keep else None
            self._cache_bytes += batch.nbytes if keep else 0
            self._cache_cond.notify_all()

    # -- feeding (background threads) ---------------------------------------------------------------

    def start(self, consumer) -> None:
        self.consumer = consumer
        for target, name in ((self._feed, "journal-feeder"), (self._ack, "journal-acker")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _take_cached(self, seq: int) -> Batch | None:
        """The decoded batch a request thread registered for ``seq``, if any (waits briefly for it)."""
        deadline = time.monotonic() + _WAIT_FOR_CACHE
        with self._cache_cond:
            while seq not in self._cache and seq >= self._replay_below:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    break
                self._cache_cond.wait(remaining)
            self._fed_seq = seq  # a registration arriving after this is not waited for: dropped
            batch = self._cache.pop(seq, None)
            if batch is not None:
                self._cache_bytes -= batch.nbytes
            return batch

    def _feed(self) -> None:
        while not self._stop.is_set():
            record = self.queue.read(timeout=0.2)
            if record is None:
                continue
            batch = self._take_cached(record.seq)
            if batch is None:
                batch = self._decode(record.payload)
                if record.seq < self._replay_below:
                    self.replayed.add(len(batch))
            if not len(batch):
                self.queue.ack(record.seq)
                continue
            tickets = self._submit(batch)
            if tickets is None:
                return  # stopping: the record stays in the journal for the next start
            with self._pending_cond:
                self._pending.append((record.seq, tickets, len(batch)))
                self._pending_cond.notify_all()

    def _decode(self, payload: bytes) -> Batch:
        try:
            return self.decode(payload[:1], payload[1:])
        except Exception as exc:  # noqa: BLE001 - a record we cannot decode must not stop the feeder
            self.log.error("intake journal: dropping an undecodable record: %s", exc)
            return SpanBatch([], 0)

    def _submit(self, batch: Batch):
        """Hand the batch to the pipelines, waiting out admission refusals; None when stopping."""
        while not self._stop.is_set():
            try:
                return self.consumer.submit(batch)
            except Overloaded as exc:
                self._stop.wait(min(exc.retry_after, 0.5))
            except PermanentError as exc:  # e.g. its signal's pipeline was removed from the config
                self.dropped.add(len(batch))
                self.log.error("intake journal: dropping %d %s: %s", len(batch), batch.unit, exc)
                return []
        return None

    def _ack(self) -> None:
        while True:
            with self._pending_cond:
                while not self._pending:
                    if self._stop.is_set():
                        return
                    self._pending_cond.wait(0.2)
                seq, tickets, count = self._pending[0]
            if self._wait_tickets(tickets, count):
                self.queue.ack(seq)
            with self._pending_cond:
                self._pending.popleft()
                self._pending_cond.notify_all()

    def _wait_tickets(self, tickets: list, count: int) -> bool:
        """True when the record is done with (committed, or refused for good and logged)."""
        for ticket in tickets:
            try:
                ticket.wait(None)
            except PermanentError as exc:
                self.dropped.add(count)
                self.log.error("intake journal: %d items refused for good by an exporter: %s", count, exc)
            except Exception:  # noqa: BLE001 - e.g. Overloaded at a cut-short shutdown: replay next start
                return False
        return True

    # -- shutdown -------------------------------------------------------------------------------------

    def shutdown(self, timeout: float) -> None:
        """Stop feeding, wait (up to ``timeout``) for what the pipelines hold, checkpoint, close."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        feeder, acker = self._threads or (None, None)
        if feeder is not None:
            feeder.join(max(0.0, deadline - time.monotonic()))  # no new submissions after this
        with self._pending_cond:
            while self._pending and time.monotonic() < deadline:
                self._pending_cond.wait(max(0.0, min(0.2, deadline - time.monotonic())))
            left = len(self._pending)
        if acker is not None:
            acker.join(max(0.0, deadline - time.monotonic()))
        if left:
            self.log.warning("intake journal: %d request(s) still in the pipelines at shutdown; "
                             "they will be fed again at the next start", left)
        self.queue.close()
