"""Pipelines: admission, batching, processors in order, fan-out to exporters, durable acks.

Each pipeline has two worker threads, one per stage.  Receivers ``submit`` a decoded batch and
get a :class:`Ticket`.  The *process* stage merges whatever has queued up, runs the processors in
order and lets exporters that can do so ``prepare`` the result (the storage exporters build their
rows there); the *export* stage hands it to every exporter and only then completes the tickets.
A receiver that waits on its ticket therefore acknowledges only data that every exporter has
taken durably.  This is the point where we differ from the OTel Collector's ``batch`` processor,
which acknowledges before exporting.

Why two stages: a database write spends most of its time in C without the GIL (SQLite's
``sqlite3_step``, a Postgres round trip), so while batch N is committed, batch N+1 goes through
the processors on the other core.  Group commit holds across the stages: whatever the process
stage finished while an export was running goes out together in the next export (up to
``send_batch_size`` spans), so under load transactions grow by themselves as before.

Memory is bounded by admission: a pipeline refuses (``Overloaded``) a batch when the encoded
bytes admitted but not yet completed would exceed its limit (``memory_limiter.limit_mib``).
Retryable export failures are retried with backoff *inside* the worker, so a database outage
fills the queue, admission starts refusing, and clients see backpressure rather than loss.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from collector.component import Exporter, IntakeProcessor, Overloaded, PermanentError, Processor, RetryableError, Unavailable
from collector.model import SIGNALS, UNITS, Batch
from collector.telemetry import Telemetry

__all__ = ["BatchPolicy", "IntakeSettings", "Pipeline", "Ticket", "Fanout", "Router", "Reservation",
           "ExporterHandle", "DEFAULT_LIMIT_BYTES", "UNITS"]

log = logging.getLogger("genai_collector.pipeline")

DEFAULT_LIMIT_BYTES = 64 * 1024 * 1024
RETRY_INITIAL, RETRY_MAX = 0.05, 5.0
FLUSH_INTERVAL = 0.5
HEALTH_POLL = 0.2  # seconds between health checks of a request waiting for its batch


@dataclass(frozen=True)
class BatchPolicy:
    """How the worker groups queued requests (set by the ``batch`` processor when listed).

    ``timeout`` 0 means group commit: take what has queued, never wait for more.
    """

    send_batch_size: int = 8192
    send_batch_max_size: int = 0
    timeout: float = 0.0


@dataclass(frozen=True)
class IntakeSettings:
    """What the intake processors (``memory_limiter``, ``batch``) set for their pipeline."""

    policy: BatchPolicy = BatchPolicy()
    limit_bytes: int = DEFAULT_LIMIT_BYTES

    @classmethod
    def of(cls, processors: list[tuple[str, Processor]]) -> "IntakeSettings":
        settings = cls()
        for _, p in processors:
            if isinstance(p, IntakeProcessor):
                settings = p.configure(settings)
        return settings


class Ticket:
    """Completion of one submitted batch: set once, with an optional error."""

    __slots__ = ("_event", "error", "count")

    def __init__(self, count: int) -> None:
        self._event = threading.Event()
        self.error: BaseException | None = None
        self.count = count

    def done(self, error: BaseException | None = None) -> None:
        self.error = error
        self._event.set()

    def finished(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for completion; True once completed (with or without error)."""
        return self._event.wait(timeout)

    def wait(self, timeout: float | None = None) -> None:
        if not self._event.wait(timeout):
            raise TimeoutError("the pipeline did not finish the batch in time (it stays queued)")
        if self.error is not None:
            raise self.error


class ExporterHandle:
    """One exporter instance, shared by every pipeline that lists it; calls are serialised.

    Its counters are per signal (``otelcol_exporter_sent_spans``, ``..._log_records``,
    ``..._metric_points``), as the OTel Collector names them.
    """

    def __init__(self, exporter_id: str, exporter: Exporter, telemetry: Telemetry) -> None:
        self.id = exporter_id
        self.exporter = exporter
        self.durable = exporter.durable
        self.prepares = exporter.prepares
        self.reports_health = exporter.reports_health
        self.lock = threading.Lock()
        self.telemetry = telemetry
        self.retries = telemetry.counter("otelcol_exporter_retries",
                                         "Export attempts that failed with a retryable error.", exporter=exporter_id)
        self._counters: dict[str, tuple] = {}

    def counters(self, unit: str) -> tuple:
        """(sent, failed) counters for ``unit`` (spans, log_records, metric_points)."""
        c = self._counters.get(unit)
        if c is None:
            t = self.telemetry
            c = self._counters[unit] = (
                t.counter(f"otelcol_exporter_sent_{unit}", "Items delivered by the exporter.", exporter=self.id),
                t.counter(f"otelcol_exporter_send_failed_{unit}", "Items the exporter failed to deliver for good.",
                          exporter=self.id))
        return c

    def export(self, batch: Batch) -> None:
        with self.lock:
            self.exporter.export(batch)

    def health(self):
        """The exporter's readiness (see ``Exporter.reports_health``); read without the lock."""
        return self.exporter.health()

    def prepare(self, batch: Batch):
        """Called without the lock (see :class:`collector.component.Exporter`)."""
        return self.exporter.prepare(batch)

    def merge_prepared(self, parts: list):
        return parts[0] if len(parts) == 1 else self.exporter.merge_prepared(parts)

    def export_prepared(self, prepared) -> None:
        with self.lock:
            self.exporter.export_prepared(prepared)


class _Item:
    __slots__ = ("batch", "ticket")

    def __init__(self, batch: Batch, ticket: Ticket | None) -> None:
        self.batch = batch
        self.ticket = ticket


class _Work:
    """A processed batch between the stages: the items (tickets) it completes, the bytes it
    releases, and per exporter what ``prepare`` made of it (None: export the batch itself)."""

    __slots__ = ("items", "batch", "nbytes", "prepared")

    def __init__(self, items: list[_Item], batch: Batch, nbytes: int, prepared: list | None) -> None:
        self.items = items
        self.batch = batch
        self.nbytes = nbytes
        self.prepared = prepared


class Pipeline:
    """One ``service.pipelines`` entry; its signal is the part of its id before ``/``."""

    def __init__(self, name: str, processors: list[tuple[str, Processor]], exporters: list[ExporterHandle],
                 telemetry: Telemetry, policy: BatchPolicy | None = None,
                 limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.name = name
        self.signal = name.partition("/")[0]
        if self.signal not in SIGNALS:
            raise ValueError(f"pipeline {name!r}: unknown signal (expected one of {', '.join(SIGNALS)})")
        unit = self.unit = UNITS[self.signal]
        self.processors = processors
        self.exporters = exporters
        self.policy = policy or BatchPolicy()
        self.limit_bytes = limit_bytes
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._in_flight_bytes = 0
        self._queued = 0
        self._stopping = False
        self._abandon = False
        self._thread: threading.Thread | None = None
        self._export_thread: threading.Thread | None = None
        # process stage -> export stage
        self._out: deque[_Work] = deque()
        self._out_cond = threading.Condition()
        self._out_count = 0
        self._out_closed = False
        self._preparing = [h.prepares for h in exporters]
        self._health_reporters = [h for h in exporters if h.reports_health]
        t = telemetry
        self.refused = t.counter(f"otelcol_pipeline_refused_{unit}",
                                 "Items refused at admission (memory limit reached).", pipeline=name)
        self.failed = t.counter(f"otelcol_pipeline_failed_{unit}",
                                "Items whose processing failed (the client got an error).", pipeline=name)
        t.gauge("otelcol_pipeline_queue_size", "Items waiting for the pipeline worker.",
                lambda: self._queued, pipeline=name)
        t.gauge("otelcol_pipeline_bytes_in_flight", "Encoded bytes admitted and not yet exported.",
                lambda: self._in_flight_bytes, pipeline=name)
        t.gauge("otelcol_pipeline_bytes_limit", "Admission limit in bytes.", lambda: self.limit_bytes, pipeline=name)
        self._proc_counters = [
            (t.counter(f"otelcol_processor_incoming_{unit}", "Items into the processor.", processor=pid, pipeline=name),
             t.counter(f"otelcol_processor_outgoing_{unit}", "Items out of the processor.", processor=pid, pipeline=name),
             t.counter(f"otelcol_processor_dropped_{unit}", "Items the processor dropped.", processor=pid, pipeline=name))
            for pid, _ in processors
        ]
        self._exporter_counters = [h.counters(unit) for h in exporters]
        self._flushers = [(i, p) for i, (_, p) in enumerate(processors) if p.holds_data]

    # -- intake -------------------------------------------------------------------------------

    def admit(self, nbytes: int, count: int) -> None:
        """Reserve room for a batch or raise Overloaded (always admits into an empty pipeline)."""
        with self._cond:
            if self._stopping:
                raise Overloaded("the collector is shutting down", retry_after=5.0)
            down = self.unavailable()
            if down is not None:
                self.refused.add(count)
                raise down
            if self._in_flight_bytes and self._in_flight_bytes + nbytes > self.limit_bytes:
                self.refused.add(count)
                raise Overloaded(f"pipeline {self.name}: memory limit reached "
                                 f"({self._in_flight_bytes + nbytes} > {self.limit_bytes} bytes in flight)")
            self._in_flight_bytes += nbytes

    def unavailable(self) -> Unavailable | None:
        """The refusal to give while an exporter reports it is not ready, else None."""
        for handle in self._health_reporters:
            health = handle.health()
            if not health.ready:
                return Unavailable(f"pipeline {self.name}: exporter {handle.id} not ready: {health.reason}",
                                   retry_after=health.retry_after)
        return None

    def wait(self, ticket: Ticket, deadline: float | None) -> None:
        """Wait for ``ticket`` until ``deadline`` (monotonic); raise :class:`Unavailable` as soon
        as an exporter reports it is not ready (the batch stays queued and is written once it
        recovers: a client retry is stored once, by key), rather than at the deadline."""
        while True:
            remaining = HEALTH_POLL if deadline is None else min(HEALTH_POLL, deadline - time.monotonic())
            if ticket.finished(max(0.0, remaining)):
                return ticket.wait(0)
            down = self.unavailable()
            if down is not None:
                raise down
            if deadline is not None and time.monotonic() >= deadline:
                return ticket.wait(0)

    def release(self, nbytes: int) -> None:
        with self._cond:
            self._in_flight_bytes -= nbytes

    def enqueue(self, batch: Batch) -> Ticket:
        """Queue an admitted batch; the ticket completes once every exporter has it."""
        ticket = Ticket(len(batch))
        with self._cond:
            self._queue.append(_Item(batch, ticket))
            self._queued += len(batch)
            self._cond.notify()
        return ticket

    def submit(self, batch: Batch) -> Ticket:
        self.admit(batch.nbytes, len(batch))
        return self.enqueue(batch)

    # -- worker -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{self.name}", daemon=True)
        self._export_thread = threading.Thread(target=self._run_exports, name=f"pipeline-{self.name}-export",
                                               daemon=True)
        self._thread.start()
        self._export_thread.start()

    def _take(self) -> list[_Item] | None:
        """Block for the next group of items; None when stopping and drained."""
        policy = self.policy
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait(FLUSH_INTERVAL)
                if not self._queue:
                    return []  # idle tick: let the worker flush timed processors
            items = [self._queue.popleft()]
            count = len(items[0].batch)
            deadline = time.monotonic() + policy.timeout
            limit = policy.send_batch_max_size or None
            while count < policy.send_batch_size:
                if self._queue:
                    nxt = len(self._queue[0].batch)
                    if limit is not None and count + nxt > limit:
                        break
                    items.append(self._queue.popleft())
                    count += nxt
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            self._queued -= count
            return items

    def _run(self) -> None:
        """The process stage."""
        last_flush = time.monotonic()
        try:
            while True:
                items = self._take()
                if items is None:
                    break
                if items:
                    self._handle(items)
                del items  # the spans are not held while waiting for the next take
                if self._flushers and time.monotonic() - last_flush >= FLUSH_INTERVAL:
                    last_flush = time.monotonic()
                    self._flush_processors(final=False)
            if self._flushers and not self._abandon:
                self._flush_processors(final=True)
        finally:
            with self._out_cond:
                self._out_closed = True
                self._out_cond.notify_all()

    def _handle(self, items: list[_Item]) -> None:
        batch = type(items[0].batch).merge([it.batch for it in items])
        nbytes = sum(it.batch.nbytes for it in items)
        try:
            out = self._process(batch, 0)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the waiting clients
            self._finish(items, nbytes, len(batch), exc)
            return
        if not len(out):
            self._finish(items, nbytes, 0, None)
            return
        self._hand_off(_Work(items, out, nbytes, self._prepare(out)))

    def _prepare(self, batch: Batch) -> list | None:
        if not any(self._preparing):
            return None
        prepared: list = []
        for handle, preparing in zip(self.exporters, self._preparing):
            part = None
            if preparing:
                try:
                    part = handle.prepare(batch)
                except Exception:  # noqa: BLE001 - export() then meets (and reports) the problem
                    log.debug("exporter %s: prepare failed; exporting the batch as is", handle.id, exc_info=True)
            prepared.append(part)
        return prepared

    def _hand_off(self, work: _Work) -> None:
        """Queue a processed batch for the export stage; waits while a full export is queued."""
        with self._out_cond:
            while self._out_count >= self.policy.send_batch_size and not self._abandon:
                self._out_cond.wait(FLUSH_INTERVAL)
            self._out.append(work)
            self._out_count += len(work.batch)
            self._out_cond.notify_all()

    def _run_exports(self) -> None:
        """The export stage: everything processed while the previous export ran goes out together."""
        policy = self.policy
        limit = policy.send_batch_max_size or None
        while True:
            with self._out_cond:
                while not self._out:
                    if self._out_closed:
                        return
                    self._out_cond.wait()
                group = [self._out.popleft()]
                count = len(group[0].batch)
                while self._out and count < policy.send_batch_size:
                    nxt = len(self._out[0].batch)
                    if limit is not None and count + nxt > limit:
                        break
                    group.append(self._out.popleft())
                    count += nxt
                self._out_count -= count
                self._out_cond.notify_all()
            self._export_group(group)
            del group  # not held (spans, rows) while waiting for the next

    def _export_group(self, group: list[_Work]) -> None:
        items = [it for w in group for it in w.items]
        nbytes = sum(w.nbytes for w in group)
        if len(group) == 1:
            batch, prepared = group[0].batch, group[0].prepared
        else:
            batch = type(group[0].batch).merge([w.batch for w in group])
            prepared = None
            if group[0].prepared is not None:
                prepared = []
                for i, handle in enumerate(self.exporters):
                    parts = [w.prepared[i] for w in group]
                    merged = None
                    if all(part is not None for part in parts):
                        try:
                            merged = handle.merge_prepared(parts)
                        except Exception:  # noqa: BLE001 - export() then meets the problem
                            log.debug("exporter %s: merge failed; exporting the batch as is", handle.id,
                                      exc_info=True)
                    prepared.append(merged)
        error: BaseException | None = None
        try:
            self._export(batch, prepared)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the waiting clients
            error = exc
        self._finish(items, nbytes, sum(len(it.batch) for it in items), error)

    def _finish(self, items: list[_Item], nbytes: int, count: int, exc: BaseException | None) -> None:
        """Release the admitted bytes and complete the tickets (with the client-facing error)."""
        error: BaseException | None = None
        if exc is not None:
            error = exc if isinstance(exc, (PermanentError, Overloaded)) else PermanentError(
                f"pipeline {self.name}: {type(exc).__name__}: {exc}")
            self.failed.add(count)
            if not isinstance(exc, (PermanentError, Overloaded)):
                log.error("pipeline %s: processing failed; %d %s refused", self.name, count, self.unit,
                          exc_info=(type(exc), exc, exc.__traceback__))
        self.release(nbytes)
        for it in items:
            if it.ticket is not None:
                it.ticket.done(error)

    def _process(self, batch: Batch, start: int) -> Batch:
        for i in range(start, len(self.processors)):
            pid, proc = self.processors[i]
            incoming, outgoing, dropped = self._proc_counters[i]
            n_in = len(batch)
            incoming.add(n_in)
            batch = proc.process(batch)
            n_out = len(batch)
            outgoing.add(n_out)
            if n_out < n_in:
                dropped.add(n_in - n_out)
        return batch

    def _flush_processors(self, final: bool) -> None:
        """Items held by a processor (tail sampling) continue through the rest of the chain."""
        for i, proc in self._flushers:
            try:
                released = proc.flush(final=final)
                if released is not None and len(released):
                    out = self._process(released, i + 1)
                    if len(out):
                        self._hand_off(_Work([], out, 0, self._prepare(out)))
            except Exception:  # noqa: BLE001
                log.exception("pipeline %s: flushing processor %s failed", self.name, self.processors[i][0])

    def _export(self, batch: Batch, prepared: list | None = None) -> None:
        if not len(batch):
            return
        pending = list(range(len(self.exporters)))
        delay = RETRY_INITIAL
        attempt = 0
        while pending:
            attempt += 1
            retry: list[int] = []
            hint = None
            for i in pending:
                handle = self.exporters[i]
                sent, failed = self._exporter_counters[i]
                try:
                    part = prepared[i] if prepared is not None else None
                    if part is not None:
                        handle.export_prepared(part)
                    else:
                        handle.export(batch)
                    sent.add(len(batch))
                except RetryableError as exc:
                    handle.retries.add(1)
                    retry.append(i)
                    hint = exc.retry_after if exc.retry_after is not None else hint
                    # Once per batch: an outage is logged by the exporter that reports health, and
                    # the retries of a stuck batch (every 5 s) would repeat it all along.
                    log.log(logging.WARNING if attempt == 1 and not handle.reports_health else logging.DEBUG,
                            "exporter %s: %s; retrying in %.2fs", handle.id, exc, hint or delay)
                except PermanentError as exc:
                    failed.add(len(batch))
                    log.error("exporter %s: dropping %d %s: %s", handle.id, len(batch), self.unit, exc)
                    if handle.durable:
                        raise
                except Exception as exc:  # noqa: BLE001 - a buggy exporter is a permanent failure
                    failed.add(len(batch))
                    log.exception("exporter %s failed; dropping %d %s", handle.id, len(batch), self.unit)
                    if handle.durable:
                        raise PermanentError(f"exporter {handle.id}: {type(exc).__name__}: {exc}") from exc
            pending = retry
            if pending:
                if self._abandon:
                    for i in pending:
                        self._exporter_counters[i][1].add(len(batch))
                    raise Overloaded("shutdown deadline passed before the exporters recovered")
                time.sleep(min(hint or delay, RETRY_MAX))
                delay = min(delay * 2, RETRY_MAX)

    # -- shutdown -----------------------------------------------------------------------------

    def drain(self, deadline: float) -> bool:
        """Finish everything queued (and held) by ``deadline``; True if it all went out."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is None:
            return True
        threads = [t for t in (self._thread, self._export_thread) if t is not None]
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            self._abandon = True  # stop retrying; the workers fail what is left
            with self._out_cond:
                self._out_cond.notify_all()
            for t in threads:
                t.join(2.0)
            return False
        return True

    def shutdown_processors(self) -> None:
        for pid, proc in self.processors:
            try:
                proc.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("processor %s: shutdown failed", pid)


class Reservation:
    """Bytes admitted in every pipeline of a fanout for a request that is not decoded yet.

    A receiver reserves the encoded size *before* decoding (decoded spans take ~3x the encoded
    bytes, so decoding first let every handler thread hold a decoded request that admission had
    not seen) and passes the reservation to ``consume``, which hands it to the pipelines; if the
    request never gets there (undecodable, empty), leaving the ``with`` block gives it back.
    """

    __slots__ = ("fanout", "nbytes", "taken")

    def __init__(self, fanout: "Fanout", nbytes: int) -> None:
        self.fanout = fanout
        self.nbytes = nbytes
        self.taken = False

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc) -> None:
        if not self.taken:
            self.taken = True
            for p in self.fanout.pipelines:
                p.release(self.nbytes)


class Fanout:
    """The :class:`collector.component.Consumer` of one signal for one receiver: every pipeline of
    that signal that lists the receiver.

    With several pipelines each gets its own copy of the batch (processors modify items in
    place), and ``consume`` returns once all of them are done.
    """

    def __init__(self, pipelines: list[Pipeline]) -> None:
        self.pipelines = pipelines

    def reserve(self, nbytes: int) -> Reservation:
        """Admit ``nbytes`` in every pipeline now, or raise Overloaded (see :class:`Reservation`)."""
        self._admit(nbytes, 0)
        return Reservation(self, nbytes)

    def consume(self, batch: Batch, timeout: float | None = None,
                reservation: Reservation | None = None) -> None:
        tickets = self.submit(batch, reservation)
        deadline = None if timeout is None else time.monotonic() + timeout
        for pipeline, ticket in zip(self.pipelines, tickets):
            pipeline.wait(ticket, deadline)

    def submit(self, batch: Batch, reservation: Reservation | None = None) -> list[Ticket]:
        if reservation is None or reservation.taken:
            self._admit(batch.nbytes, len(batch))
        else:
            reservation.taken = True  # the pipelines release it once exported
            if reservation.nbytes != batch.nbytes:
                for p in self.pipelines:
                    p.release(reservation.nbytes - batch.nbytes)
        # copy before the first enqueue: a worker may start modifying items at once
        batches = [batch] + [batch.copy() for _ in self.pipelines[1:]]
        return [p.enqueue(b) for p, b in zip(self.pipelines, batches)]

    def _admit(self, nbytes: int, count: int) -> None:
        admitted: list[Pipeline] = []
        try:
            for p in self.pipelines:
                p.admit(nbytes, count)
                admitted.append(p)
        except Overloaded:
            for p in admitted:
                p.release(nbytes)
            raise


class Router:
    """The :class:`collector.component.Consumers` a receiver is started with: a :class:`Fanout`
    per signal that has a pipeline listing the receiver.

    Data of a signal without one is refused by the receiver; ``unrouted`` counts it
    (``otelcol_receiver_unrouted_requests{signal}``) and logs, once per signal, the config that
    would take it.
    """

    def __init__(self, receiver_id: str, fanouts: dict[str, Fanout], telemetry: Telemetry) -> None:
        self.receiver_id = receiver_id
        self.fanouts = fanouts
        self.telemetry = telemetry
        self._told: set[str] = set()
        self._lock = threading.Lock()

    def get(self, signal: str) -> Fanout | None:
        return self.fanouts.get(signal)

    def submit(self, batch: Batch) -> list[Ticket]:
        """Hand a batch to its signal's pipelines without waiting (the intake journal's feeder)."""
        fanout = self.fanouts.get(batch.signal)
        if fanout is None:  # journaled before a config change removed the pipeline
            raise PermanentError(self.unrouted(batch.signal))
        return fanout.submit(batch)

    def unrouted(self, signal: str) -> str:
        """Count a request of ``signal`` that no pipeline takes; the message for the client."""
        self.telemetry.counter("otelcol_receiver_unrouted_requests",
                               "Requests of a signal no pipeline takes from this receiver (refused).",
                               receiver=self.receiver_id, signal=signal).add(1)
        message = (f"no {signal} pipeline takes data from receiver {self.receiver_id!r}; to accept {signal}, "
                   f"add to the config: service::pipelines::{signal}: {{receivers: [{self.receiver_id}], "
                   f"exporters: [...]}}")
        with self._lock:
            first = signal not in self._told
            self._told.add(signal)
        if first:
            log.warning("receiver %s: refusing %s (counted in otelcol_receiver_unrouted_requests): %s",
                        self.receiver_id, signal, message)
        return message
