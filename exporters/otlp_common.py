"""What the ``otlp`` (gRPC) and ``otlphttp`` exporters share: config, retry policy, sending queue.

Both send traces, logs and metrics: a batch is re-encoded from the internal model (every field;
metrics are the very messages that arrived) into its signal's ``Export*ServiceRequest``.  The
transports differ only in how one encoded request travels and how the answer maps to "retry" or
"give up"; everything else is here, as the OTel Collector's exporterhelper does it:

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
* One instance may serve traces, logs and metrics pipelines at once: the retry state (first
  failure, attempts, requests of a split batch already queued) is kept per batch object, so a
  batch one pipeline retries is never confused with another pipeline's.
"""

from __future__ import annotations

import random
import re
import struct
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from collector.component import ComponentContext, Exporter, PermanentError, RetryableError
from collector.model import SIGNALS, UNITS, Batch
from collector.otlp import OTLP_SIGNALS
from config.files import read_config_file
from config.schema import ByteSize, ConfigError, Duration, setting

__all__ = [
    "TLSConfig", "RetryConfig", "StorageConfig", "SendingQueueConfig", "UpstreamConfig",
    "RetryPolicy", "Sender", "UpstreamExporter", "read_tls_file", "encode_requests",
]

QUEUE_FULL_RETRY_AFTER = 0.5  # seconds the pipeline waits before offering a refused batch again
_COUNT = struct.Struct("<I")  # item count prefixed to each persisted request, the signal in its top 2 bits
_SIGNAL_SHIFT, _COUNT_MASK = 30, (1 << 30) - 1  # traces are 0 there: queues written before logs/metrics read the same
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
    """One transport.  ``send`` raises RetryableError / PermanentError; returns the signal's
    ``Export*ServiceResponse`` (or None when the upstream sent no body)."""

    endpoint: str
    timeout: float

    def send(self, signal: str, payload: bytes) -> Any: ...

    def close(self) -> None: ...


def encode_requests(batch: Batch, limit: int) -> list[tuple[bytes, int]]:
    """Encode ``batch`` as (request bytes, item count) pairs, each under ``limit`` where possible.

    A batch that encodes too large is split in proportion to its size and re-encoded; a single
    item (span, log record, ResourceMetrics) larger than the limit is sent alone (the upstream
    decides).
    """
    out: list[tuple[bytes, int]] = []
    todo = [batch]
    while todo:
        part = todo.pop()
        payload = part.to_request().SerializeToString()
        items = part.items
        if len(payload) <= limit or len(items) == 1:
            out.append((payload, len(part)))
            continue
        pieces = min(len(items), -(-len(payload) // limit) + 1)
        step = -(-len(items) // pieces)
        todo.extend(reversed([part.with_items(items[i:i + step]) for i in range(0, len(items), step)]))
    return out


# -- queues ------------------------------------------------------------------------------------


class QueueFull(Exception):
    pass


class _Item:
    __slots__ = ("payload", "signal", "count", "token")

    def __init__(self, payload: bytes, signal: str, count: int, token: object = None) -> None:
        self.payload = payload
        self.signal = signal
        self.count = count
        self.token = token


class MemoryQueue:
    """A bounded FIFO of encoded requests; the bound counts requests, items or bytes (``sizer``)."""

    durable = False

    def __init__(self, capacity: int, sizer: str) -> None:
        self.capacity = capacity
        self.sizer = sizer
        self._size_of = {"requests": lambda it: 1, "items": lambda it: it.count,
                         "bytes": lambda it: len(it.payload)}[sizer]
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition()
        self.size = 0
        self.nbytes = 0
        self._closed = False

    def put(self, payload: bytes, signal: str, count: int) -> None:
        """An empty queue takes any request, so an oversized one cannot stall forever."""
        item = _Item(payload, signal, count)
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
    """The sending queue on a :class:`collector.diskqueue.DiskQueue`; records carry their signal and item count."""

    durable = True

    def __init__(self, cfg: StorageConfig) -> None:
        from collector.diskqueue import DiskQueue

        self.disk = DiskQueue(cfg.directory, max_bytes=cfg.max_size)
        self.capacity = cfg.max_size

    def put(self, payload: bytes, signal: str, count: int) -> None:
        """Returns once the record is fsync'd (group commit with concurrent appends)."""
        from collector.diskqueue import QueueFull as DiskFull

        header = SIGNALS.index(signal) << _SIGNAL_SHIFT | min(count, _COUNT_MASK)
        try:
            self.disk.append(_COUNT.pack(header) + payload)
        except DiskFull as exc:
            raise QueueFull(str(exc)) from None

    def get(self, timeout: float) -> _Item | None:
        record = self.disk.read(timeout=timeout)
        if record is None:
            return None
        (header,) = _COUNT.unpack_from(record.payload)
        return _Item(record.payload[_COUNT.size:], SIGNALS[header >> _SIGNAL_SHIFT], header & _COUNT_MASK,
                     record.seq)

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
    """A batch the pipeline is retrying with us (it offers the same object again), and since when."""

    __slots__ = ("since", "attempts", "done")

    def __init__(self) -> None:
        self.since = time.monotonic()
        self.attempts = 0
        self.done = 0  # requests of a split batch already delivered: not sent twice


class _Counters:
    """The exporter's counters for one signal's unit (``delivered_spans``, ``..._log_records``...)."""

    def __init__(self, ctx: ComponentContext, unit: str) -> None:
        self.delivered = ctx.counter(f"delivered_{unit}", "Items the upstream acknowledged.")
        self.failed = ctx.counter(f"send_failed_{unit}", "Items the exporter failed to deliver for good.")
        self.rejected = ctx.counter(f"upstream_rejected_{unit}",
                                    "Items the upstream rejected in a partial success response.")
        self.enqueue_failed = ctx.counter(f"enqueue_failed_{unit}",
                                          "Items refused because the sending queue was full (backpressure, "
                                          "not loss: the pipeline holds them and receivers refuse new data).")


class UpstreamExporter(Exporter):
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
        # Retry state per batch object, dropped with the batch: pipelines of several signals may
        # share this exporter, each retrying its own batch (calls are serialised by the pipeline).
        self._retries: weakref.WeakKeyDictionary[Batch, _BatchRetry] = weakref.WeakKeyDictionary()
        self._stop = threading.Event()
        self._drain_deadline = float("inf")
        self.retries = ctx.counter("retries", "Export attempts that failed with a retryable error.")
        self._counters = {signal: _Counters(ctx, UNITS[signal]) for signal in SIGNALS}
        self.queue: MemoryQueue | PersistentQueue | None = None
        if q.enabled:
            self.queue = PersistentQueue(q.storage) if q.storage else MemoryQueue(q.queue_size, q.sizer)
            ctx.gauge("queue_size", "Current size of the sending queue (requests, items or bytes; "
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

    def export(self, batch: Batch) -> None:
        """Queue (or, without a queue, send) the batch; RetryableError asks the pipeline to offer it again.

        The pipeline offers the *same* batch object again after a RetryableError, which is how a
        retry is told from new data: its first-failure time bounds ``max_elapsed_time``, and the
        requests of a split batch already queued or sent are not repeated.
        """
        if not len(batch):
            return
        state = self._retries.get(batch)
        new = state is None
        if new:
            state = self._retries[batch] = _BatchRetry()
        records = encode_requests(batch, self.max_request_size)
        try:
            if self.queue is None:
                self._send_now(batch.signal, records, state)
            else:
                self._enqueue(batch.signal, records, len(batch), new, state)
        except RetryableError:
            raise  # the pipeline offers this batch again: keep its state
        except BaseException:
            del self._retries[batch]
            raise
        del self._retries[batch]

    def _enqueue(self, signal: str, records: list[tuple[bytes, int]], count: int, new: bool,
                 state: _BatchRetry) -> None:
        for payload, n in records[state.done:]:  # a split batch partly queued resumes where it stopped
            try:
                self.queue.put(payload, signal, n)
            except QueueFull as exc:
                if new:
                    self._counters[signal].enqueue_failed.add(count)
                    self.log.warning("sending queue full (upstream %s slow or down): holding %d %s; receivers "
                                     "refuse new data until it drains: %s", self.sender.endpoint, count,
                                     UNITS[signal], exc)
                raise RetryableError(str(exc), retry_after=QUEUE_FULL_RETRY_AFTER) from None
            state.done += 1

    def _send_now(self, signal: str, records: list[tuple[bytes, int]], state: _BatchRetry) -> None:
        """No queue: deliver now; a retryable failure goes back to the pipeline with our backoff."""
        for payload, count in records[state.done:]:
            try:
                self._send_one(signal, payload, count)
            except RetryableError as exc:
                delay = self.policy.delay(state.attempts, exc.retry_after)
                state.attempts += 1
                if self.policy.gives_up(state.since, delay):
                    raise PermanentError(self._give_up_text(exc, state.attempts)) from None
                raise RetryableError(str(exc), retry_after=delay) from None
            state.done += 1

    def _give_up_text(self, exc: Exception, attempts: int) -> str:
        if not self.policy.cfg.enabled:
            return f"{exc} (retry_on_failure is disabled)"
        return f"{exc}; giving up after {attempts} attempts (retry_on_failure::max_elapsed_time reached)"

    def _send_one(self, signal: str, payload: bytes, count: int) -> None:
        response = self.sender.send(signal, payload)
        counters = self._counters[signal]
        rejected = 0
        if response is not None and response.HasField("partial_success"):
            ps = response.partial_success
            rejected = getattr(ps, OTLP_SIGNALS[signal].rejected_field)
            if rejected:
                counters.rejected.add(rejected)
                self.log.warning("upstream %s rejected %d of %d %s: %s", self.sender.endpoint,
                                 rejected, count, UNITS[signal], ps.error_message)
            elif ps.error_message:
                self.log.info("upstream %s: %s", self.sender.endpoint, ps.error_message)
        counters.delivered.add(count - rejected)

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
                self._send_one(item.signal, item.payload, item.count)
                return True
            except PermanentError as exc:
                self._drop(item.signal, item.count, str(exc))
                return True
            except RetryableError as exc:
                self.retries.add(1)
                delay = self.policy.delay(attempt, exc.retry_after)
                attempt += 1
                if self.policy.gives_up(started, delay):
                    self._drop(item.signal, item.count, self._give_up_text(exc, attempt))
                    return True
                self.log.warning("upstream %s: %s; retrying %d %s in %.1fs", self.sender.endpoint, exc,
                                 item.count, UNITS[item.signal], delay)
                if not self._sleep(delay):
                    if self.durable:
                        return False  # stays on disk, sent after the next start
                    self._drop(item.signal, item.count, "shutdown: sending_queue::drain_timeout passed")
                    return True
            except Exception as exc:  # noqa: BLE001 - a transport bug must not kill the consumer
                self.log.exception("upstream %s: unexpected error", self.sender.endpoint)
                self._drop(item.signal, item.count, f"{type(exc).__name__}: {exc}")
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

    def _drop(self, signal: str, count: int, why: str) -> None:
        self._counters[signal].failed.add(count)
        self.log.error("dropping %d %s for upstream %s: %s", count, UNITS[signal], self.sender.endpoint, why)

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
            for signal in SIGNALS:
                lost = sum(it.count for it in left if it.signal == signal)
                if lost:
                    self._drop(signal, lost, "shutdown: the in-memory queue could not drain in time")
            if not left and self.durable and self.queue.pending():
                self.log.warning("%d requests stay in the persistent queue for the next start",
                                 self.queue.pending())
        self.sender.close()
