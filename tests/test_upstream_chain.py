"""genai-collector chained in front of an upstream, through real processes and sockets.

collector 1 (the sidecar, persistent sending queue) -> collector 2 (a real OTLP server) ->
a fake upstream that records what arrives (or fails on command).  The outage length is
``UPSTREAM_OUTAGE_SECONDS`` (default 12 s; the issue's 60 s works too, it only takes longer).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from tests.conftest import sdk_tracer_provider
from tests.upstream_support import Collector, FakeUpstream, OtlpClient, make_request

OUTAGE_SECONDS = float(os.environ.get("UPSTREAM_OUTAGE_SECONDS", "12"))
FAST_RETRY = "retry_on_failure: {initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 0}"


@pytest.fixture
def upstream():
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture
def collectors():
    started: list[Collector] = []
    yield started
    for c in started:
        c.stop(signal.SIGKILL)


def sidecar_exporter(transport: str, grpc_port: int, http_port: int, queue_dir: Path,
                     max_size: str = "64MiB", extra: str = "") -> str:
    endpoint = (f'endpoint: "127.0.0.1:{grpc_port}"\n    tls: {{insecure: true}}' if transport == "otlp"
                else f'endpoint: "http://127.0.0.1:{http_port}"')
    return f"""  {transport}:
    {endpoint}
    {FAST_RETRY}
    sending_queue:
      num_consumers: 4
      drain_timeout: 1s
      storage: {{directory: "{queue_dir}", max_size: {max_size}}}
{extra}"""


def sink_exporter(upstream: FakeUpstream) -> str:
    return f"""  otlp:
    endpoint: "{upstream.grpc_endpoint}"
    tls: {{insecure: true}}
    sending_queue: {{enabled: false}}
    {FAST_RETRY}
"""


def send_with_sdk(port: int, n: int) -> set[bytes]:
    """Spans from the official OpenTelemetry SDK and its OTLP/gRPC exporter."""
    provider = sdk_tracer_provider(f"127.0.0.1:{port}", service="sdk-app")
    tracer = provider.get_tracer("chain-test")
    ids = set()
    for i in range(n):
        with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.request.model": "gpt-4o", "i": i}) as s:
            ids.add(s.get_span_context().span_id.to_bytes(8, "big"))
    provider.shutdown()
    return ids


class Load:
    """A client sending requests of ``spans`` spans back to back; each is resent until acknowledged."""

    def __init__(self, port: int, spans: int = 20, pause: float = 0.05) -> None:
        self.client = OtlpClient(port)
        self.spans, self.pause = spans, pause
        self.acked: set[bytes] = set()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                request, ids = make_request(self.spans)
                self.client.send_until_acked(request, time.monotonic() + 120)
                self.acked |= ids
                time.sleep(self.pause)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join(150)
        self.client.close()
        assert self.error is None, self.error


@pytest.mark.parametrize("transport", ["otlp", "otlphttp"])
def test_upstream_down_under_load_then_back_every_span_delivered(tmp_path, upstream, collectors, transport):
    second = Collector(tmp_path, "upstream", sink_exporter(upstream), ["otlp"]).start()
    collectors.append(second)
    first = Collector(tmp_path, "sidecar", sidecar_exporter(transport, second.grpc_port, second.http_port,
                                                           tmp_path / "queue"), [transport]).start()
    collectors.append(first)

    sdk_ids = send_with_sdk(first.grpc_port, 10)
    assert not upstream.wait_for_spans(sdk_ids, timeout=20), "the chain delivers spans from the official SDK"

    with Load(first.grpc_port) as load:
        time.sleep(1)
        second.stop()  # the upstream goes away while the load continues
        outage_started = time.monotonic()
        acked_before = len(load.acked)
        time.sleep(OUTAGE_SECONDS)
        acked_during = len(load.acked) - acked_before
        assert first.metric("otelcol_exporter_retries") > 0
        assert first.metric("otelcol_exporter_queue_size") > 0
        second.start()
        time.sleep(1)
    assert acked_during > 0, "the sidecar keeps accepting while the upstream is down (persistent queue)"
    assert time.monotonic() - outage_started >= OUTAGE_SECONDS
    missing = upstream.wait_for_spans(load.acked, timeout=60)
    assert not missing, f"{len(missing)} of {len(load.acked)} acknowledged spans never arrived"
    assert first.metric("otelcol_exporter_send_failed_spans") == 0
    assert first.metric("otelcol_exporter_enqueue_failed_spans") == 0


@pytest.mark.parametrize("transport,failure,sig", [("otlp", "resource_exhausted", signal.SIGKILL),
                                                   ("otlphttp", "429", signal.SIGTERM)])
def test_sidecar_restarted_during_the_outage_resumes_from_its_persistent_queue(
        tmp_path, upstream, collectors, transport, failure, sig):
    upstream.fail(failure, retry_after=1)  # RetryInfo / Retry-After: the upstream asks to come back later
    exporter = sidecar_exporter(transport, upstream.grpc_port, upstream.http_port, tmp_path / "queue")
    first = Collector(tmp_path, "sidecar", exporter, [transport]).start()
    collectors.append(first)
    client = OtlpClient(first.grpc_port)
    acked: set[bytes] = set()
    for _ in range(20):
        request, ids = make_request(25)
        assert client.send(request) == grpc.StatusCode.OK  # durable: fsync'd in the queue
        acked |= ids
    assert first.metric("otelcol_exporter_queue_size") > 0
    assert first.stop(sig) in (0, 1, -signal.SIGKILL)
    assert not upstream.span_ids
    if sig == signal.SIGTERM:
        assert "stay in the persistent queue for the next start" in first.log.read_text()

    first.start()  # same config, same queue directory
    time.sleep(1.5)
    assert not upstream.span_ids, "still failing: nothing may have been delivered"
    upstream.ok()
    missing = upstream.wait_for_spans(acked, timeout=30)
    assert not missing, f"{len(missing)} of {len(acked)} spans lost across the restart"
    client.close()


def test_queue_byte_cap_refuses_new_data_with_backpressure_and_counts_it(tmp_path, upstream, collectors):
    upstream.fail("unavailable")
    queue_dir = tmp_path / "queue"
    first = Collector(tmp_path, "sidecar",
                      sidecar_exporter("otlp", upstream.grpc_port, 0, queue_dir, max_size="256KiB"), ["otlp"],
                      processors_yaml="  memory_limiter: {limit_mib: 1}", processor_ids=["memory_limiter"]).start()
    collectors.append(first)
    client = OtlpClient(first.grpc_port)
    requests = [make_request(250) for _ in range(40)]  # ~75 KB each
    codes = []
    for request, _ in requests:
        codes.append(client.send(request, timeout=1.0))
        if codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED:
            break
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
    assert first.metric("otelcol_exporter_enqueue_failed_spans") > 0
    assert first.metric("otelcol_receiver_refused_spans") > 0
    assert first.metric("otelcol_exporter_send_failed_spans") == 0, "refused, never dropped"
    disk = sum(p.stat().st_size for p in queue_dir.glob("*.seg"))
    assert 0 < disk <= 256 * 1024

    upstream.ok()  # every request the client was refused is sent again and arrives
    sent = requests[:len(codes)]
    for request, _ in sent:
        client.send_until_acked(request, time.monotonic() + 60)
    want = set().union(*(ids for _, ids in sent))
    missing = upstream.wait_for_spans(want, timeout=30)
    assert not missing, f"{len(missing)} spans lost"
    client.close()
