"""What the ``otlp`` (gRPC) and ``otlphttp`` exporters share: config, retry policy, sending queue.

The transports differ only in how one encoded ``ExportTraceServiceRequest`` travels and how the
answer maps to "retry" or "give up"; everything else is here, as the OTel Collector's
exporterhelper does it:

* ``retry_on_failure``: exponential backoff (``initial_interval`` x ``multiplier`` up to
  ``max_interval``, +-``randomization_factor``), at least the server's RetryInfo / Retry-After
  hint, for at most ``max_elapsed_time`` (0 = forever); then the data is dropped, logged, counted.
* ``sending_queue``: ``export`` puts the encoded request in a queue and returns; ``num_consumers``
  threads send in the background.  In memory by default; with ``storage: {directory}`` it is a
  :class:`collector.diskqueue.DiskQueue`, so ``export`` returns only once the request is fsync'd
  (the exporter is then ``durable``) and what was not delivered is sent after a restart.
  A full queue is never a silent drop: ``export`` raises :class:`RetryableError`, the pipeline
  holds the batch, its admission limit fills and receivers answer RESOURCE_EXHAUSTED / 429.
* Without a queue ``export`` sends synchronously and raises ``RetryableError`` for the pipeline to
  retry, with the retry policy's delay as the hint, so the pipeline's own retry loop follows
  ``retry_on_failure`` and the outage turns into backpressure, not loss.
"""

from __future__ import annotations

import random
import re
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector.component import ComponentContext, PermanentError, RetryableError
from collector.model import SpanBatch, spans_to_request
from config.files import read_config_file
from config.schema import ByteSize, ConfigError, Duration, setting

__all__ = [
    "TLSConfig", "RetryConfig", "StorageConfig", "SendingQueueConfig", "UpstreamConfig",
    "RetryPolicy", "Sender", "UpstreamExporter", "read_tls_file", "encode_requests",
]

QUEUE_FULL_RETRY_AFTER = 0.5  # seconds the pipeline waits before offering a refused batch again
_COUNT = struct.Struct("<I")  # span count prefixed to each queued request
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


# -- config ------------------------------------------------------------------------------------


@dataclass
class TLSConfig:
    insecure: bool = setting(False, doc="gRPC: plaintext instead of TLS (http:// / https:// in the endpoint win)")
    insecure_skip_verify: bool = setting(False, doc="TLS without verifying the server certificate (HTTP only)")
    ca_file: str = setting("", doc="PEM CA bundle to verify the server; default: the system roots")
    cert_file: str = setting("", doc="PEM client certificate for mutual TLS (with key_file)")
    key_file: str = setting("", doc="PEM client key for mutual TLS (with cert_file)")

    def validate(self) -> list:
        if bool(self.cert_file) != bool(self.key_file):
            return [ConfigError("cert_file" if not self.cert_file else "key_file",
                                "cert_file and key_file must be set together")]
        return []


@dataclass
class RetryConfig:
    enabled: bool = setting(True, doc="retry retryable failures; false: one attempt, then drop and count")
    initial_interval: Duration = setting(5.0, min=0.001, doc="wait before the first retry")
    randomization_factor: float = setting(0.5, min=0.0, max=1.0, doc="each wait varies by +- this share")
    multiplier: float = setting(1.5, min=1.0, max=100.0, doc="each wait is the previous one times this")
    max_interval: Duration = setting(30.0, min=0.001, doc="longest wait between attempts (a server's "
                                     "RetryInfo / Retry-After may ask for longer)")
    max_elapsed_time: Duration = setting(300.0, doc="give up (drop, count) after this long; 0 = retry forever")


@dataclass
class StorageConfig:
    directory: str = setting(pattern=r"^\S(.*\S)?$", doc="where the persistent queue keeps its files")
    max_size: ByteSize = setting(1 << 30, min=64 << 10, doc="byte cap of the queue's files on disk")


@dataclass
class SendingQueueConfig:
    enabled: bool = setting(True, doc="false: export sends synchronously and the pipeline retries")
    num_consumers: int = setting(10, min=1, max=256, doc="requests sent concurrently")
    queue_size: ByteSize = setting(1000, min=1, doc="in-memory capacity in `sizer` units (bytes may be "
                                                    "written 64MiB)")
    sizer: Literal["requests", "items", "bytes"] = setting("requests", doc="what queue_size counts: requests, "
                                                           "spans (items) or encoded bytes")
    storage: StorageConfig | None = setting(None, doc="persistent queue on disk: export returns once fsync'd "
                                            "(durable) and what was not sent goes out after a restart")
    drain_timeout: Duration = setting(10.0, doc="at shutdown, keep sending what is queued for this long")


@dataclass
class UpstreamConfig:
    """Keys both exporters take, as the OTel Collector's otlp/otlphttp exporters spell them."""

    endpoint: str = setting("", doc="where to send: host:port or a URL (otlphttp: the base URL, /v1/traces "
                            "is appended)")
    tls: TLSConfig = setting(default_factory=TLSConfig, doc="client TLS settings")
    headers: dict[str, str] = setting(default_factory=dict, doc="sent with every request (e.g. authorization; "
                                      "use ${env:VAR} for secrets)")
    compression: Literal["gzip", "none"] = setting("gzip", doc="request compression")
    timeout: Duration = setting(5.0, min=0.001, doc="deadline of one send attempt")
    max_request_size: ByteSize = setting(4 << 20, min=1024, doc=(
        "larger batches are split into several requests (4 MiB is gRPC's default receive limit)"))
    retry_on_failure: RetryConfig = setting(default_factory=RetryConfig, doc="exponential backoff for "
                                            "retryable failures (as the Collector's exporterhelper)")
    sending_queue: SendingQueueConfig = setting(default_factory=SendingQueueConfig, doc="queue between "
                                                "export and the senders")

    def header_problems(self) -> list:
        """Header names must be HTTP tokens and values one line: caught here, not at the first send."""
        problems = []
        for name, value in self.headers.items():
            if not _HEADER_NAME.fullmatch(name):
                problems.append(ConfigError(f"headers::{name}", "invalid header name"))
            elif any(c in value for c in "\r\n\0"):
                problems.append(ConfigError(f"headers::{name}", "header values must be one line"))
        return problems


def read_tls_file(path: str, key: str) -> bytes:
    """Read a TLS file at start; ValueError naming ``tls::<key>``."""
    return read_config_file(path, f"tls::{key}", ValueError)


# -- retry policy ------------------------------------------------------------------------------


class RetryPolicy:
    """exporterhelper's backoff: when to try again, and when to give up."""

    def __init__(self, cfg: RetryConfig) -> None:
        self.cfg = cfg

    def delay(self, attempt: int, hint: float | None) -> float:
        """Delay before retry number ``attempt + 1``; never shorter than the server's hint."""
        c = self.cfg
        base = min(c.initial_interval * c.multiplier ** min(attempt, 200), c.max_interval)
        jitter = base * c.randomization_factor
        delay = base + random.uniform(-jitter, jitter) if jitter else base
        return max(delay, hint or 0.0)

    def gives_up(self, started: float, delay: float) -> bool:
        c = self.cfg
        if not c.enabled:
            return True
        return c.max_elapsed_time > 0 and time.monotonic() - started + delay > c.max_elapsed_time


# -- transport protocol ------------------------------------------------------------------------


class Sender(Protocol):
    """One transport.  ``send`` raises RetryableError / PermanentError; returns the response."""

    endpoint: str
    timeout: float

    def send(self, payload: bytes) -> ExportTraceServiceResponse | None: ...

    def close(self) -> None: ...


def encode_requests(batch: SpanBatch, limit: int) -> list[tuple[bytes, int]]:
    """Encode ``batch`` as (request bytes, span count) pairs, each under ``limit`` where possible.

    A batch that encodes too large is split in proportion to its size and re-encoded; a single
    span larger than the limit is sent alone (the upstream decides).
    """
    out: list[tuple[bytes, int]] = []
    todo = [batch.spans]
    while todo:
        spans = todo.pop()
        payload = spans_to_request(spans).SerializeToString()
        if len(payload) <= limit or len(spans) == 1:
            out.append((payload, len(spans)))
            continue
        parts = min(len(spans), -(-len(payload) // limit) + 1)
        step = -(-len(spans) // parts)
        todo.extend(reversed([spans[i:i + step] for i in range(0, len(spans), step)]))
    return out


# -- queues ------------------------------------------------------------------------------------


class QueueFull(Exception):
    pass


class _Item:
    __slots__ = ("payload", "spans", "token")

    def __init__(self, payload: bytes, spans: int, token: object = None) -> None:
        self.payload = payload
        self.spans = spans
        self.token = token


class MemoryQueue:
    """A bounded FIFO of encoded requests; the bound counts requests, spans or bytes (``sizer``)."""

    durable = False

    def __init__(self, capacity: int, sizer: str) -> None:
        self.capacity = capacity
        self.sizer = sizer
        self._size_of = {"requests": lambda it: 1, "items": lambda it: it.spans,
                         "bytes": lambda it: len(it.payload)}[sizer]
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition()
        self.size = 0
        self.nbytes = 0
        self._closed = False

    def put(self, payload: bytes, spans: int) -> None:
        """An empty queue takes any request, so an oversized one cannot stall forever."""
        item = _Item(payload, spans)
        need = self._size_of(item)
        with self._cond:
            if self.size and self.size + need > self.capacity:
                raise QueueFull(f"sending queue is full ({self.size} of {self.capacity} {self.sizer})")
            self._items.append(item)
            self.size += need
            self.nbytes += len(payload)
            self._cond.notify()

    def get(self, timeout: float) -> _Item | None:
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            return item

    def ack(self, item: _Item) -> None:
        with self._cond:
            self.size -= self._size_of(item)
            self.nbytes -= len(item.payload)

    def pending(self) -> int:
        return self.size

    def close(self) -> list[_Item]:
        """Stop handing out items; returns what is still queued (lost: counted by the caller)."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return left


class PersistentQueue:
    """The sending queue on a :class:`collector.diskqueue.DiskQueue`; records carry their span count."""

    durable = True

    def __init__(self, cfg: StorageConfig) -> None:
        from collector.diskqueue import DiskQueue

        self.disk = DiskQueue(cfg.directory, max_bytes=cfg.max_size)
        self.capacity = cfg.max_size

    def put(self, payload: bytes, spans: int) -> None:
        """Returns once the record is fsync'd (group commit with concurrent appends)."""
        from collector.diskqueue import QueueFull as DiskFull

        try:
            self.disk.append(_COUNT.pack(spans) + payload)
        except DiskFull as exc:
            raise QueueFull(str(exc)) from None

    def get(self, timeout: float) -> _Item | None:
        record = self.disk.read(timeout=timeout)
        if record is None:
            return None
        (spans,) = _COUNT.unpack_from(record.payload)
        return _Item(record.payload[_COUNT.size:], spans, record.seq)

    def ack(self, item: _Item) -> None:
        self.disk.ack(item.token)

    @property
    def size(self) -> int:
        return self.disk.pending

    @property
    def nbytes(self) -> int:
        return self.disk.disk_bytes

    def pending(self) -> int:
        return self.disk.pending

    def close(self) -> list[_Item]:
        self.disk.close()  # what was not acked is delivered after the next start
        return []


# -- the exporter ------------------------------------------------------------------------------


class _BatchRetry:
    """The batch the pipeline is retrying with us (it offers the same object again), and since when."""

    __slots__ = ("key", "since", "attempts", "done")

    def __init__(self) -> None:
        self.key: int | None = None
        self.since = 0.0
        self.attempts = 0
        self.done = 0  # requests of a split batch already delivered: not sent twice

    def track(self, batch: SpanBatch) -> bool:
        """Start tracking ``batch``; True when it is a new one (not a retry)."""
        if self.key == id(batch):
            return False
        self.key, self.since, self.attempts, self.done = id(batch), time.monotonic(), 0, 0
        return True

    def clear(self) -> None:
        self.key = None


class UpstreamExporter:
    """An exporter over a :class:`Sender`, with the sending queue and retry policy of the config."""

    def __init__(self, cfg: UpstreamConfig, ctx: ComponentContext, sender: Sender) -> None:
        self.sender = sender
        self.log = ctx.logger
        self.id = ctx.id
        self.policy = RetryPolicy(cfg.retry_on_failure)
        q = cfg.sending_queue
        self.max_request_size = cfg.max_request_size
        if q.enabled and q.storage:  # a record must be able to fit once the queue has drained
            self.max_request_size = min(cfg.max_request_size, q.storage.max_size // 4)
        self.drain_timeout = q.drain_timeout
        self._retry = _BatchRetry()
        self._stop = threading.Event()
        self._drain_deadline = float("inf")
        self.delivered = ctx.counter("delivered_spans", "Spans the upstream acknowledged.")
        self.failed = ctx.counter("send_failed_spans", "Spans the exporter failed to deliver for good.")
        self.retries = ctx.counter("retries", "Export attempts that failed with a retryable error.")
        self.rejected = ctx.counter("upstream_rejected_spans",
                                    "Spans the upstream rejected in a partial success response.")
        self.enqueue_failed = ctx.counter("enqueue_failed_spans",
                                          "Spans refused because the sending queue was full (backpressure, "
                                          "not loss: the pipeline holds them and receivers refuse new data).")
        self.queue: MemoryQueue | PersistentQueue | None = None
        if q.enabled:
            self.queue = PersistentQueue(q.storage) if q.storage else MemoryQueue(q.queue_size, q.sizer)
            ctx.gauge("queue_size", "Current size of the sending queue (requests, spans or bytes; "
                      "pending requests for a persistent queue).", lambda: self.queue.size)
            ctx.gauge("queue_capacity", "Capacity of the sending queue (bytes on disk when persistent).",
                      lambda: self.queue.capacity)
            ctx.gauge("queue_bytes", "Encoded bytes in the sending queue (its files when persistent).",
                      lambda: self.queue.nbytes)
        self.durable = bool(self.queue is not None and self.queue.durable)
        self._consumers = [threading.Thread(target=self._consume, name=f"{ctx.id}-sender-{i}", daemon=True)
                           for i in range(q.num_consumers if self.queue is not None else 0)]
        for t in self._consumers:
            t.start()
        where = (f"persistent queue in {q.storage.directory}" if self.durable
                 else "in-memory queue" if self.queue is not None else "no queue")
        self.log.info("exporting to %s (%s)", sender.endpoint, where)

    # -- export (the pipeline's thread) -----------------------------------------------------------

    def export(self, batch: SpanBatch) -> None:
        """Queue (or, without a queue, send) the batch; RetryableError asks the pipeline to offer it again.

        The pipeline offers the *same* batch object again after a RetryableError, which is how a
        retry is told from new data: its first-failure time bounds ``max_elapsed_time``, and the
        requests of a split batch already queued or sent are not repeated.
        """
        if not len(batch):
            return
        new = self._retry.track(batch)
        records = encode_requests(batch, self.max_request_size)
        if self.queue is None:
            self._send_now(records)
        else:
            self._enqueue(records, len(batch), new)
        self._retry.clear()

    def _enqueue(self, records: list[tuple[bytes, int]], spans: int, new: bool) -> None:
        state = self._retry
        for payload, n in records[state.done:]:  # a split batch partly queued resumes where it stopped
            try:
                self.queue.put(payload, n)
            except QueueFull as exc:
                if new:
                    self.enqueue_failed.add(spans)
                    self.log.warning("sending queue full (upstream %s slow or down): holding %d spans; receivers "
                                     "refuse new data until it drains: %s", self.sender.endpoint, spans, exc)
                raise RetryableError(str(exc), retry_after=QUEUE_FULL_RETRY_AFTER) from None
            state.done += 1

    def _send_now(self, records: list[tuple[bytes, int]]) -> None:
        """No queue: deliver now; a retryable failure goes back to the pipeline with our backoff."""
        state = self._retry
        for payload, spans in records[state.done:]:
            try:
                self._send_one(payload, spans)
            except RetryableError as exc:
                delay = self.policy.delay(state.attempts, exc.retry_after)
                state.attempts += 1
                if self.policy.gives_up(state.since, delay):
                    state.clear()
                    raise PermanentError(self._give_up_text(exc, state.attempts)) from None
                raise RetryableError(str(exc), retry_after=delay) from None
            except PermanentError:
                state.clear()
                raise
            state.done += 1

    def _give_up_text(self, exc: Exception, attempts: int) -> str:
        if not self.policy.cfg.enabled:
            return f"{exc} (retry_on_failure is disabled)"
        return f"{exc}; giving up after {attempts} attempts (retry_on_failure::max_elapsed_time reached)"

    def _send_one(self, payload: bytes, spans: int) -> None:
        response = self.sender.send(payload)
        if response is not None and response.HasField("partial_success"):
            ps = response.partial_success
            if ps.rejected_spans:
                self.rejected.add(ps.rejected_spans)
                self.log.warning("upstream %s rejected %d of %d spans: %s", self.sender.endpoint,
                                 ps.rejected_spans, spans, ps.error_message)
            elif ps.error_message:
                self.log.info("upstream %s: %s", self.sender.endpoint, ps.error_message)
        self.delivered.add(spans - (response.partial_success.rejected_spans if response is not None else 0))

    # -- consumers (background threads) ---------------------------------------------------------

    def _consume(self) -> None:
        queue = self.queue
        while True:
            if self._stop.is_set() and (self.durable or time.monotonic() > self._drain_deadline):
                return
            try:
                item = queue.get(timeout=0.2)
                if item is None:
                    if self._stop.is_set():
                        return
                    continue
                if self._deliver(item):
                    queue.ack(item)
            except Exception:  # noqa: BLE001 - a consumer must outlive a disk error; the record stays
                self.log.exception("sending queue consumer: unexpected error; continuing in 1s")
                self._stop.wait(1.0)

    def _deliver(self, item: _Item) -> bool:
        """Send with retries; True once delivered or dropped for good, False when stopped first."""
        started, attempt = time.monotonic(), 0
        while True:
            try:
                self._send_one(item.payload, item.spans)
                return True
            except PermanentError as exc:
                self._drop(item.spans, str(exc))
                return True
            except RetryableError as exc:
                self.retries.add(1)
                delay = self.policy.delay(attempt, exc.retry_after)
                attempt += 1
                if self.policy.gives_up(started, delay):
                    self._drop(item.spans, self._give_up_text(exc, attempt))
                    return True
                self.log.warning("upstream %s: %s; retrying %d spans in %.1fs", self.sender.endpoint, exc,
                                 item.spans, delay)
                if not self._sleep(delay):
                    if self.durable:
                        return False  # stays on disk, sent after the next start
                    self._drop(item.spans, "shutdown: sending_queue::drain_timeout passed")
                    return True
            except Exception as exc:  # noqa: BLE001 - a transport bug must not kill the consumer
                self.log.exception("upstream %s: unexpected error", self.sender.endpoint)
                self._drop(item.spans, f"{type(exc).__name__}: {exc}")
                return True

    def _sleep(self, delay: float) -> bool:
        """Wait ``delay``; False when shutdown says to stop retrying instead."""
        end = time.monotonic() + delay
        while True:
            now = time.monotonic()
            if now >= end:
                return True
            if not self._stop.is_set():
                self._stop.wait(end - now)
            elif self.durable or now >= self._drain_deadline:
                return False
            else:  # draining a memory queue: keep retrying until the deadline
                time.sleep(min(end - now, self._drain_deadline - now, 0.1))

    def _drop(self, spans: int, why: str) -> None:
        self.failed.add(spans)
        self.log.error("dropping %d spans for upstream %s: %s", spans, self.sender.endpoint, why)

    # -- shutdown -------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Drain what is queued for up to ``drain_timeout``; a persistent queue keeps the rest."""
        if self.queue is not None:
            deadline = time.monotonic() + self.drain_timeout
            while self.queue.pending() and time.monotonic() < deadline:
                time.sleep(0.05)
            self._drain_deadline = deadline
            self._stop.set()
            for t in self._consumers:
                # a send in flight at the deadline may take up to the transport timeout to return
                t.join(max(0.0, deadline - time.monotonic()) + self.sender.timeout + 1.0)
            left = self.queue.close()
            lost = sum(it.spans for it in left)
            if lost:
                self._drop(lost, "shutdown: the in-memory queue could not drain in time")
            elif self.durable and self.queue.pending():
                self.log.warning("%d requests stay in the persistent queue for the next start",
                                 self.queue.pending())
        self.sender.close()
