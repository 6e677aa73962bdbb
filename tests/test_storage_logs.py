"""Log records in the stores: the logs table, replays stored once, GenAI content joined to its span
whatever the order of arrival, evaluation results kept against their span, and retention.

Real SQLite files and a real Postgres (``backend`` fixture), through the registered exporters.
"""

from __future__ import annotations

import json
import time

import pytest

from collector.model import GenAI
from exporters.storage.retention import Retention
from exporters.storage.config import RetentionPolicy
from tests.log_helpers import choice, details, evaluation, log, logs_batch, message
from tests.storage_helpers import backend, make_exporter, pg_admin, pg_url, query, span  # noqa: F401

T, S = 7, 3  # trace 7, span 3
TRACE, SPAN = (7).to_bytes(16, "big").hex(), (3).to_bytes(8, "big").hex()

PROMPT = [{"role": "user", "parts": [{"type": "text", "content": "capital of France?"}]}]
ANSWER = [{"role": "assistant", "parts": [{"type": "text", "content": "Paris."}], "finish_reason": "stop"}]
SYSTEM = [{"type": "text", "content": "be terse"}]


def call(with_content: bool = False):
    """A GenAI call span as genai_normalize leaves it (content only when sent on the span)."""
    g = GenAI(provider="openai", operation="chat", request_model="gpt-4o", response_model="gpt-4o-2024",
              input_tokens=10, output_tokens=2)
    if with_content:
        g.input_messages, g.output_messages = PROMPT, ANSWER
    return span(T, S, genai=g, name="chat gpt-4o")


def transcript(exporter) -> dict:
    rows = query(exporter, "SELECT input_messages, output_messages, system_instructions FROM spans "
                           "WHERE trace_id = :t AND span_id = :s", t=TRACE, s=SPAN)
    assert len(rows) == 1
    return {k: (json.loads(v) if isinstance(v, str) else v)
            for k, v in zip(("input", "output", "system"), rows[0])}


def export_spans(exporter, *spans) -> None:
    from collector.model import SpanBatch

    exporter.export(SpanBatch(list(spans)))


@pytest.fixture
def exporter(backend):
    exp = make_exporter(backend)
    yield exp
    exp.shutdown()


@pytest.mark.parametrize("structured", [True, False], ids=["structured", "json-strings"])
@pytest.mark.parametrize("order", ["record-first", "span-first"])
def test_operation_details_record_becomes_the_calls_transcript(exporter, order, structured):
    record = details(T, S, PROMPT, ANSWER, SYSTEM, as_json=not structured)
    if order == "record-first":
        exporter.export(logs_batch(record))
        export_spans(exporter, call())
    else:
        export_spans(exporter, call())
        exporter.export(logs_batch(record))
    assert transcript(exporter) == {"input": PROMPT, "output": ANSWER, "system": SYSTEM}
    assert query(exporter, "SELECT kind, event_name, content_purged FROM logs") == [
        ("content", "gen_ai.client.inference.operation.details", 0)]


def test_span_content_is_kept_and_never_doubled_by_the_same_content_as_a_record(exporter):
    """SPAN_AND_EVENT: the span carries the messages and a record repeats them."""
    exporter.export(logs_batch(details(T, S, PROMPT, ANSWER)))
    export_spans(exporter, call(with_content=True))
    exporter.export(logs_batch(details(T, S, PROMPT, ANSWER, time_s=1001.0)))
    assert transcript(exporter) == {"input": PROMPT, "output": ANSWER, "system": None}
    assert query(exporter, "SELECT content_from_logs FROM spans") == [(0,)]


def _per_message_records():
    return [message(T, S, "gen_ai.system.message", {"content": "be terse"}, time_s=1000.1),
            message(T, S, "gen_ai.user.message", {"content": "capital of France?"}, time_s=1000.2),
            choice(T, S, "Paris.", time_s=1000.9)]


EXPECTED_PER_MESSAGE = {
    "input": [{"role": "system", "parts": [{"type": "text", "content": "be terse"}]}, *PROMPT],
    "output": ANSWER, "system": None,
}


def test_per_message_events_before_and_after_the_span_in_separate_requests(exporter):
    system, user, answer = _per_message_records()
    exporter.export(logs_batch(user))
    export_spans(exporter, call())
    exporter.export(logs_batch(answer))
    exporter.export(logs_batch(system))
    assert transcript(exporter) == EXPECTED_PER_MESSAGE


def test_replays_of_records_and_spans_never_duplicate_messages(exporter):
    records = _per_message_records()
    for _ in range(3):
        exporter.export(logs_batch(*records))
        export_spans(exporter, call())
    exporter.export(logs_batch(*reversed(records)))  # same records, another order
    assert transcript(exporter) == EXPECTED_PER_MESSAGE
    assert query(exporter, "SELECT COUNT(*) FROM logs") == [(3,)]


def test_a_record_after_a_restart_joins_the_span_stored_before(backend):
    first = make_exporter(backend)
    export_spans(first, call())
    first.shutdown()
    second = make_exporter(backend)
    try:
        second.export(logs_batch(*_per_message_records()))
        assert transcript(second) == EXPECTED_PER_MESSAGE
    finally:
        second.shutdown()


def test_records_of_spans_not_stored_wait_without_touching_other_spans(exporter):
    export_spans(exporter, span(T, 9, genai=GenAI(operation="chat", request_model="m")))
    exporter.export(logs_batch(details(T, S, PROMPT, ANSWER)))
    rows = query(exporter, "SELECT span_id, input_messages, content_from_logs FROM spans")
    assert rows == [((9).to_bytes(8, "big").hex(), None, 0)]
    export_spans(exporter, call())
    assert transcript(exporter)["input"] == PROMPT


def test_every_field_of_a_plain_log_record_is_stored(exporter):
    record = log(T, S, body={"msg": "retrying", "attempt": 2}, severity=13, severity_text="WARN",
                 attributes={"http.status_code": 429, "event.name": "app.retry"}, time_s=1000.5)
    exporter.export(logs_batch(record, log(0, 0, body="no span here", time_s=0)))
    rows = query(exporter, "SELECT kind, event_name, severity_number, severity_text, trace_id, span_id, "
                           "time_unix_nano, body, attributes, service_name, scope_name FROM logs ORDER BY id")
    kind, name, sev, sev_text, trace_id, span_id, t, body, attrs, service, scope = rows[0]
    assert (kind, name, sev, sev_text, trace_id, span_id, t) == ("log", "app.retry", 13, "WARN", TRACE, SPAN,
                                                                 1000_500_000_000)
    body = json.loads(body) if isinstance(body, str) else body
    attrs = json.loads(attrs) if isinstance(attrs, str) else attrs
    assert body == {"msg": "retrying", "attempt": 2}
    assert attrs == {"http.status_code": 429, "event.name": "app.retry"}
    assert (service, scope) == ("shop", "test")
    assert rows[1][4:7] == (None, None, None)  # no span ids, no time: kept, unjoined
    stamped = query(exporter, "SELECT timestamp_unix_nano FROM logs ORDER BY id")[1][0]
    assert abs(stamped - time.time_ns()) < 600e9


def test_evaluation_results_are_kept_against_their_span(exporter):
    from collector.query import queries
    from collector.query.store import open_store

    export_spans(exporter, call())
    exporter.export(logs_batch(evaluation(T, S, "relevance", 0.83, "relevant", "answers the question")))
    url = exporter.store.engine.url.render_as_string(hide_password=False)
    store = open_store(url, "/nonexistent.yaml")
    try:
        evals = queries.get_trace_logs(store, TRACE)["evaluations"]
    finally:
        store.close()
    assert evals == [{"span_id": SPAN, "name": "relevance", "score_value": 0.83, "score_label": "relevant",
                      "explanation": "answers the question", "response_id": None,
                      "time": "1970-01-01T00:16:40.000000Z"}]


def test_content_ttl_purges_record_content_and_ttl_deletes_records(exporter):
    exporter.export(logs_batch(details(T, S, PROMPT, ANSWER), *_per_message_records(),
                                    log(T, S, body="kept until ttl")))
    export_spans(exporter, call())
    store = exporter.store
    an_hour_later = time.time() + 3600  # retention counts from when the collector received them
    Retention(store, RetentionPolicy(content_ttl=60), clock=lambda: an_hour_later).run_once()
    rows = query(exporter, "SELECT kind, body IS NULL, content IS NULL, content_purged FROM logs ORDER BY id")
    assert rows == [("content", True, True, 1)] * 4 + [("log", False, True, 1)]
    assert transcript(exporter) == {"input": None, "output": None, "system": None}
    # a late record of the purged call must not bring its content back
    exporter.export(logs_batch(choice(T, S, "late", time_s=1000.95)))
    assert transcript(exporter)["output"] is None
    report = Retention(store, RetentionPolicy(ttl=60), clock=lambda: an_hour_later).run_once()
    assert report.deleted_logs == 6
    assert query(exporter, "SELECT COUNT(*) FROM logs") == [(0,)]


def test_concurrent_writers_of_spans_and_their_records_always_meet(pg_url):
    """Two collectors on one Postgres, one writing the calls, the other their records, at the same
    moments: the advisory lock orders each pair, so no call is left without its transcript."""
    import threading

    from collector.model import SpanBatch

    spans_writer, logs_writer = make_exporter({"type": "postgres", "url": pg_url}), \
        make_exporter({"type": "postgres", "url": pg_url})
    calls = [span(100 + i, 1, genai=GenAI(operation="chat", request_model="m")) for i in range(300)]
    records = [details(100 + i, 1, PROMPT, ANSWER) for i in range(300)]
    errors: list[BaseException] = []

    def write(exporter, batches) -> None:
        try:
            for b in batches:
                exporter.export(b)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(spans_writer, [SpanBatch(calls[i:i + 10])
                                                                   for i in range(0, 300, 10)])),
               threading.Thread(target=write, args=(logs_writer, [logs_batch(*records[i:i + 10])
                                                                  for i in range(0, 300, 10)]))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert query(spans_writer, "SELECT COUNT(*) FROM spans WHERE input_messages IS NULL "
                                   "OR output_messages IS NULL") == [(0,)]
        assert query(spans_writer, "SELECT COUNT(*) FROM logs") == [(300,)]
    finally:
        spans_writer.shutdown()
        logs_writer.shutdown()
