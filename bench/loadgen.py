"""The load-generator process of the ingest benchmark (see ``bench/ingest.py``).

Runs in its own process so its CPU and GIL never mix with the collector's.  It encodes every
request first, sends one warm-up request, reports the mix, waits for "go", and then keeps
``concurrency`` requests in flight from as many threads (the gRPC/HTTP calls release the GIL while
they wait).  A refused request (gRPC RESOURCE_EXHAUSTED / UNAVAILABLE, HTTP 429 / 503) is retried
after the server's RetryInfo / Retry-After, else with exponential backoff, as the OTel SDK
exporters do; its latency runs from the first attempt to the OK.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import tempfile
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from bench import spanmix
from bench.spanmix import MixConfig, encode_requests

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RETRY_GRPC = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
RETRY_HTTP = {429, 502, 503, 504}
BACKOFF_INITIAL, BACKOFF_MAX = 0.1, 5.0
GIVE_UP_AFTER = 300.0  # the SDK's max elapsed retry time


@dataclass
class LoadPlan:
    target: str
    http: bool
    spans: int
    batch: int
    concurrency: int
    rate: float | None
    pii_share: float
    seed: int
    timeout: float = 60.0


class Refused(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class _GrpcSender:
    def __init__(self, target: str, timeout: float) -> None:
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
        self.call = self.channel.unary_unary(METHOD)  # raw bytes in and out
        self.timeout = timeout

    def send(self, body: bytes) -> bytes:
        try:
            return self.call(body, timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() in RETRY_GRPC:
                raise Refused(_retry_info(exc)) from None
            raise RuntimeError(f"{exc.code().name}: {exc.details()}") from None

    def close(self) -> None:
        self.channel.close()


def _retry_info(exc: grpc.RpcError) -> float | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


class _HttpSender:
    """One keep-alive connection per thread, like the SDK's requests session."""

    def __init__(self, target: str, timeout: float) -> None:
        self.host, port = target.rsplit(":", 1)
        self.port, self.timeout = int(port), timeout
        self.local = threading.local()

    def send(self, body: bytes) -> bytes:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            raise Refused(None) from None  # the SDK retries connection errors too
        if resp.status == 200:
            return data
        if resp.status in RETRY_HTTP:
            after = resp.getheader("Retry-After")
            raise Refused(float(after) if after and after.isdigit() else None)
        raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")

    def close(self) -> None:
        pass


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.acked = self.sent = self.refused = self.failed = 0
        self.rejected = 0
        self.errors: list[str] = []
        self.last_ack = 0.0


def _send_with_retry(sender, body: bytes, spans: int, stats: _Stats, rng: random.Random) -> None:
    first = time.monotonic()
    delay = BACKOFF_INITIAL
    while True:
        try:
            raw = sender.send(body)
        except Refused as exc:
            with stats.lock:
                stats.refused += 1
            if time.monotonic() - first > GIVE_UP_AFTER:
                with stats.lock:
                    stats.failed += 1
                    stats.errors.append("gave up retrying")
                return
            time.sleep(exc.retry_after if exc.retry_after is not None else delay * (0.8 + 0.4 * rng.random()))
            delay = min(delay * 2, BACKOFF_MAX)
            continue
        except RuntimeError as exc:
            with stats.lock:
                stats.failed += 1
                stats.errors.append(str(exc))
            return
        now = time.monotonic()
        rejected = ExportTraceServiceResponse.FromString(raw).partial_success.rejected_spans if raw else 0
        with stats.lock:
            stats.latencies.append(now - first)
            stats.acked += spans - rejected
            stats.rejected += rejected
            stats.last_ack = max(stats.last_ack, now)
        return


def _drive(plan: LoadPlan, sender, bodies: list[tuple[bytes, int]]) -> dict[str, Any]:
    stats = _Stats()
    next_index = iter(range(len(bodies)))
    index_lock = threading.Lock()
    start = time.monotonic()
    interval = plan.batch / plan.rate if plan.rate else 0.0

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            with index_lock:
                i = next(next_index, None)
            if i is None:
                return
            if interval:
                wait = start + i * interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            body, n = bodies[i]
            with stats.lock:
                stats.sent += n
            _send_with_retry(sender, body, n, stats, rng)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(plan.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"t_start": start, "t_last_ack": stats.last_ack or time.monotonic(), "sent_spans": stats.sent,
            "acked_spans": stats.acked, "rejected_spans": stats.rejected, "latencies": stats.latencies,
            "refused": stats.refused, "failed": stats.failed, "errors": stats.errors}


CACHE_DIR = Path(tempfile.gettempdir()) / "genai-collector-bench-cache"


def _cached_requests(plan: LoadPlan) -> tuple[list[bytes], dict[str, Any]]:
    """The encoded mix for this plan, from a temp-dir cache: encoding 100k spans takes seconds."""
    cfg = MixConfig(pii_share=plan.pii_share, seed=plan.seed)
    key = hashlib.sha256(repr((plan.spans, plan.batch, cfg, Path(spanmix.__file__).read_bytes())).encode())
    path = CACHE_DIR / f"{key.hexdigest()[:24]}.pickle"
    try:
        with path.open("rb") as fh:
            return pickle.load(fh)
    except (OSError, pickle.PickleError, EOFError):
        pass
    result = encode_requests(plan.spans, plan.batch, cfg)
    CACHE_DIR.mkdir(exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return result


def run_loadgen(plan: LoadPlan, conn) -> None:
    """Process entry point: encode, warm up, report the mix, wait for "go", drive, report."""
    raw, mix = _cached_requests(plan)
    bodies = [(b, min(plan.batch, plan.spans - i * plan.batch)) for i, b in enumerate(raw)]
    warm, _ = encode_requests(50, 50, MixConfig(pii_share=plan.pii_share, seed=plan.seed + 10_000))
    sender = _HttpSender(plan.target, plan.timeout) if plan.http else _GrpcSender(plan.target, plan.timeout)
    deadline = time.monotonic() + 60
    while True:  # the collector may still be starting: retry until the warm-up is acknowledged
        stats = _Stats()
        try:
            _send_with_retry(sender, warm[0], 50, stats, random.Random(0))
        except Exception as exc:  # noqa: BLE001 - grpc may raise before the port is open
            stats.errors.append(str(exc))
        if stats.acked or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    conn.send(mix)
    if conn.recv() != "go":
        return
    result = _drive(plan, sender, bodies)
    sender.close()
    conn.send(result)
