"""Feedback and scores end to end, on SQLite and Postgres: scores sent over real HTTP and with the
CLI, before and after their trace is stored; bad fields are 400s naming the field; delete; the
``--feedback`` filter, ``stats`` feedback columns and ``eval-candidates`` reading late feedback;
the write token."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections import defaultdict

import pytest

from tests.query_dataset import Dataset, load, make_dataset
from tests.test_query_cli import PG_ADMIN, run
from tests.web_helpers import get_json, request, serve

TOKEN = "read-token-0123456789abcdef"
WRITE_TOKEN = "write-token-0123456789abcdef"


def _postgres_url():
    """A fresh Postgres database (dropped at exit), or None when no server is reachable."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        admin.connect().close()
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Postgres required in CI but unreachable at {PG_ADMIN}: {exc.orig}")
        return admin, None
    name = f"gc_test_feedback_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return admin, sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def dataset() -> Dataset:
    return make_dataset(n_traces=6, seed=5)


@pytest.fixture
def stores(dataset, tmp_path):
    """store name -> (exporter settings, database): the dataset written through the real exporters."""
    admin, url = _postgres_url()
    out = {"sqlite": ({"path": str(tmp_path / "store.db")}, str(tmp_path / "store.db"))}
    if url:
        out["postgres"] = ({"url": url}, url)
    try:
        for name, (settings, _) in out.items():
            load(name, settings, dataset)
        yield out
    finally:
        if url:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def apis(stores):
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(serve(db)) for name, (_, db) in stores.items()}


def test_postgres_is_covered(stores):
    if "postgres" not in stores:
        pytest.skip(f"Postgres not reachable at {PG_ADMIN}: only SQLite was checked")


def post(base: str, document: object, token: str | None = None,
         content_type: str = "application/json") -> tuple[int, dict]:
    status, _, body = request(f"{base}/api/v1/feedback", token, {"Content-Type": content_type},
                              json.dumps(document).encode())
    return status, json.loads(body) if body else {}


def cli_json(*argv: str) -> object:
    proc = run(*argv, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def calls_of(dataset: Dataset, trace_id: str) -> list:
    return [s for s in dataset.llm if s.trace_id.hex() == trace_id]


# -- before and after its trace --------------------------------------------------------------------

def test_feedback_before_its_trace_is_attached_when_the_trace_arrives(stores, apis, dataset):
    late = make_dataset(n_traces=1, seed=99)  # a trace the store has not seen
    late_trace = late.spans[0].trace_id.hex()
    call = late.llm[0]
    for name, base in apis.items():
        settings, db = stores[name]
        status, score = post(base, {"trace_id": late_trace.upper(), "span_id": call.span_id.hex(), "name": "thumbs",
                                    "value": 0, "comment": "wrong", "author": "u1", "source": "user"})
        assert status == 201, score
        assert score["id"] > 0 and score["trace_id"] == late_trace and score["source"] == "user"
        assert get_json(f"{base}/api/v1/traces/{late_trace}")[0] == 404  # not stored yet
        status, listed = get_json(f"{base}/api/v1/traces/{late_trace}/feedback")
        assert status == 200 and [s["id"] for s in listed["items"]] == [score["id"]]
        assert late_trace not in [t["trace_id"] for t in cli_json("traces", "--db", db, "--feedback", "negative")]
        missing = run("trace", late_trace, "--db", db)
        assert missing.returncode == 1 and "not found (1 score waiting for it)" in missing.stderr

        load(name, settings, late)  # the trace arrives

        status, detail = get_json(f"{base}/api/v1/traces/{late_trace}")
        assert status == 200 and [s["comment"] for s in detail["scores"]] == ["wrong"]
        assert cli_json("trace", late_trace, "--db", db)["scores"] == detail["scores"]
        table = run("trace", late_trace, "--db", db).stdout
        assert "thumbs" in table and "wrong" in table
        assert [t["trace_id"] for t in cli_json("traces", "--db", db, "--feedback", "negative")] == [late_trace]
        assert get_json(f"{base}/api/v1/traces?feedback=negative")[1]["items"][0]["trace_id"] == late_trace


def test_feedback_after_its_trace_with_the_cli(stores, apis, dataset):
    call = dataset.llm[-1]
    trace_id = call.trace_id.hex()
    for name, base in apis.items():
        _, db = stores[name]
        proc = run("feedback", trace_id[:10], "--span", call.span_id.hex(), "--name", "rating", "--value", "0.9",
                   "--label", "good", "--comment", "clear", "--db", db)
        assert proc.returncode == 0, proc.stderr
        assert f"recorded for trace {trace_id} span {call.span_id.hex()}" in proc.stdout
        items = get_json(f"{base}/api/v1/traces/{trace_id}/feedback")[1]["items"]
        assert [(s["name"], s["value"], s["label"], s["source"]) for s in items] == [("rating", 0.9, "good", "api")]
        bad = run("feedback", trace_id, "--name", "rating", "--db", db)
        assert bad.returncode == 2 and "give a value or a label" in bad.stderr
        bad = run("feedback", trace_id, "--span", "nothex", "--name", "x", "--value", "1", "--db", db)
        assert bad.returncode == 2 and "--span: must be 16 hex characters" in bad.stderr
        # a prefix that names no stored trace says so (it used to say "--trace: must be 32 hex")
        bad = run("feedback", "deadbeef", "--name", "thumbs", "--value", "0", "--db", db)
        assert bad.returncode == 2 and "no stored trace id starts with deadbeef" in bad.stderr


# -- bad input, delete, auth -----------------------------------------------------------------------

GOOD = {"trace_id": "ab" * 16, "name": "thumbs", "value": 1}


@pytest.mark.parametrize("change, field", [
    ({"trace_id": None}, "trace_id"), ({"trace_id": "xyz"}, "trace_id"), ({"trace_id": "0" * 32}, "trace_id"),
    ({"trace_id": 12}, "trace_id"), ({"span_id": "abc"}, "span_id"), ({"name": ""}, "name"),
    ({"name": "a\nb"}, "name"), ({"name": 5}, "name"), ({"value": "high"}, "value"), ({"value": True}, "value"),
    ({"value": None}, "value"), ({"value": 1e300}, "value"), ({"label": ["x"]}, "label"),
    ({"comment": "x" * 10_001}, "comment"), ({"comment": "a\x00b"}, "comment"), ({"source": "robot"}, "source"),
    ({"colour": "red"}, "colour"), ({"session_id": 7}, "session_id"), ({"author": {"a": 1}}, "author"),
])
def test_bad_fields_are_400_naming_the_field(apis, change, field):
    document = {k: v for k, v in {**GOOD, **change}.items() if v is not None}  # None: the field left out
    for base in apis.values():
        status, body = post(base, document)
        assert status == 400 and body["error"].startswith(f"{field}: "), body


@pytest.mark.parametrize("body, content_type, status", [
    (b"{not json", "application/json", 400), (b"[1, 2]", "application/json", 400),
    (json.dumps(GOOD).encode(), "text/plain", 415), (b"x" * 70_000, "application/json", 413),
])
def test_bad_bodies_are_refused(apis, body, content_type, status):
    for base in apis.values():
        got, _, answer = request(f"{base}/api/v1/feedback", None, {"Content-Type": content_type}, body)
        assert got == status and json.loads(answer)["error"]


def test_openapi_describes_a_new_score(apis):
    from collector.query.feedback import FIELDS

    document = get_json(f"{next(iter(apis.values()))}/api/v1/openapi.json")[1]
    body = document["paths"]["/api/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert tuple(body["properties"]) == FIELDS and body["required"] == ["trace_id", "name"]
    assert {"get"} <= set(document["paths"]["/api/v1/traces/{trace_id}/feedback"])
    assert {"delete"} <= set(document["paths"]["/api/v1/feedback/{score_id}"])


def test_delete_a_score(apis):
    for base in apis.values():
        status, score = post(base, {**GOOD, "label": "up"})
        assert status == 201
        status, _, _ = request(f"{base}/api/v1/feedback/{score['id']}", method="DELETE")
        assert status == 204
        assert get_json(f"{base}/api/v1/traces/{GOOD['trace_id']}/feedback")[1]["items"] == []
        assert request(f"{base}/api/v1/feedback/{score['id']}", method="DELETE")[0] == 404
        assert request(f"{base}/api/v1/feedback/abc", method="DELETE")[0] == 400
        assert get_json(f"{base}/api/v1/traces/nothex/feedback")[0] == 400


def test_write_token_guards_writes_only(stores):
    from collector.query.store import open_store
    from collector.web.api import StoreSource
    from collector.web.app import create_app
    from collector.web.server import UiServer, allowed_hosts
    from tests.conftest import free_port

    _, db = stores["sqlite"]
    source = StoreSource(lambda: open_store(db, ""))
    server = UiServer(create_app(source, TOKEN, allowed_hosts("127.0.0.1", TOKEN), WRITE_TOKEN),
                      f"127.0.0.1:{free_port()}")
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert post(base, GOOD)[0] == 401
        assert post(base, GOOD, TOKEN)[0] == 403  # the read token reads, it does not write
        status, score = post(base, GOOD, WRITE_TOKEN)
        assert status == 201
        assert get_json(f"{base}/api/v1/traces/{GOOD['trace_id']}/feedback", TOKEN)[1]["items"][0]["id"] == score["id"]
        assert get_json(f"{base}/api/v1/traces/{GOOD['trace_id']}/feedback", WRITE_TOKEN)[0] == 200
        assert request(f"{base}/api/v1/feedback/{score['id']}", TOKEN, method="DELETE")[0] == 403
        assert request(f"{base}/api/v1/feedback/{score['id']}", WRITE_TOKEN, method="DELETE")[0] == 204
    finally:
        server.shutdown()
        source.close()


# -- used where it matters: filters, stats, eval-candidates ----------------------------------------

def _expected_stats(dataset: Dataset, scores: list[tuple[str, str | None, float]]) -> dict[str, tuple[int, float]]:
    """model -> (scores about its calls, each once, mean value) from the scores sent."""
    by_model: dict[str, list[float]] = defaultdict(list)
    for trace_id, span_id, value in scores:
        touched = {s.genai.model for s in calls_of(dataset, trace_id) if span_id in (None, s.span_id.hex())}
        for model in touched:
            by_model[model].append(value)
    return {m: (len(v), sum(v) / len(v)) for m, v in by_model.items()}


def test_filters_stats_and_eval_candidates_read_late_feedback(stores, apis, dataset):
    traces = sorted({s.trace_id.hex() for s in dataset.llm})
    quiet = [s for s in dataset.llm if "feedback" not in s.attributes and s.status_code != 2]
    down = quiet[0]                                              # a call with no feedback attribute
    up_trace = next(t for t in traces if t != down.trace_id.hex())  # a trace-level thumbs up
    sent = [(down.trace_id.hex(), down.span_id.hex(), 0.0), (up_trace, None, 1.0)]
    for name, base in apis.items():
        _, db = stores[name]
        before = cli_json("eval-candidates", "--db", db, "--limit", "1000", "--slow-ms", "1e9", "--expensive-usd", "1e9")
        assert down.span_id.hex() not in [c["span_id"] for c in before["candidates"]]
        assert post(base, {"trace_id": sent[0][0], "span_id": sent[0][1], "name": "thumbs", "value": 0})[0] == 201
        assert post(base, {"trace_id": up_trace, "name": "thumbs", "value": 1, "label": "up"})[0] == 201

        negative = cli_json("traces", "--db", db, "--feedback", "negative")
        assert [t["trace_id"] for t in negative] == [down.trace_id.hex()]
        assert [t["trace_id"] for t in cli_json("traces", "--db", db, "--feedback", "positive")] == [up_trace]
        assert get_json(f"{base}/api/v1/traces?feedback=negative")[1]["items"] == negative
        assert get_json(f"{base}/api/v1/traces?feedback=meh")[0] == 400
        calls = get_json(f"{base}/api/v1/calls?feedback=negative")[1]["items"]
        assert [c["span_id"] for c in calls] == [down.span_id.hex()]
        if down.genai.session_id:
            sessions = cli_json("sessions", "--db", db, "--feedback", "negative")
            assert [s["session_id"] for s in sessions] == [down.genai.session_id]

        stats = cli_json("stats", "--db", db, "--by", "model")
        got = {g["model"]: (g["feedback_count"], g["feedback_mean"]) for g in stats["groups"] if g["feedback_count"]}
        assert got == _expected_stats(dataset, sent)  # means of 0s and 1s are exact
        assert all(g["feedback_mean"] is None for g in stats["groups"] if not g["feedback_count"])
        api_stats = get_json(f"{base}/api/v1/stats?by=model&since=30d")[1]  # the day cache's path
        assert {g["model"]: (g["feedback_count"], g["feedback_mean"]) for g in api_stats["groups"]
                if g["feedback_count"]} == got
        positive = cli_json("stats", "--db", db, "--by", "model", "--feedback", "positive")
        assert sum(g["requests"] for g in positive["groups"]) == len(calls_of(dataset, up_trace))

        after = cli_json("eval-candidates", "--db", db, "--limit", "1000", "--slow-ms", "1e9", "--expensive-usd", "1e9")
        reasons = {c["span_id"]: c["reasons"] for c in after["candidates"]}
        assert reasons[down.span_id.hex()] == ["negative_feedback"]


# -- evaluation results ----------------------------------------------------------------------------

def _write_logs(exporter_type: str, settings: dict, *records) -> None:
    """Log records through the real storage exporter (the one that stores the spans)."""
    import logging

    from collector.component import ComponentContext
    from collector.telemetry import Telemetry
    from config.schema import build
    from exporters import EXPORTERS
    from tests.log_helpers import logs_batch

    factory = EXPORTERS.get(exporter_type)
    config, errors = build(factory.config_class, settings)
    assert not errors, errors
    exporter = factory.create(config, ComponentContext(id=exporter_type, kind="exporter", telemetry=Telemetry(),
                                                       logger=logging.getLogger("test.feedback")))
    try:
        exporter.export(logs_batch(*records))
    finally:
        exporter.shutdown()


def test_evaluation_results_are_scores_with_source_eval(stores, apis, dataset):
    from tests.log_helpers import evaluation

    quiet = [s for s in dataset.llm if "feedback" not in s.attributes and s.status_code != 2]
    judged, praised = quiet[0], quiet[-1]
    records = [evaluation(int.from_bytes(judged.trace_id, "big"), int.from_bytes(judged.span_id, "big"),
                          "relevance", 0.2, "irrelevant", "talks about something else", time_s=2e9),
               evaluation(int.from_bytes(praised.trace_id, "big"), int.from_bytes(praised.span_id, "big"),
                          "correctness", None, "good", time_s=2e9)]
    for name, base in apis.items():
        settings, db = stores[name]
        _write_logs(name, settings, *records)
        items = get_json(f"{base}/api/v1/traces/{judged.trace_id.hex()}/feedback")[1]["items"]
        assert [(s["span_id"], s["name"], s["value"], s["label"], s["comment"], s["source"]) for s in items] == [
            (judged.span_id.hex(), "relevance", 0.2, "irrelevant", "talks about something else", "eval")]
        assert items[0]["id"] < 0  # a log record's: removed with it, not through DELETE
        assert get_json(f"{base}/api/v1/traces/{judged.trace_id.hex()}")[1]["scores"] == items

        assert [t["trace_id"] for t in cli_json("traces", "--db", db, "--feedback", "negative")] == [judged.trace_id.hex()]
        assert [t["trace_id"] for t in cli_json("traces", "--db", db, "--feedback", "positive")] == [praised.trace_id.hex()]
        after = cli_json("eval-candidates", "--db", db, "--limit", "1000", "--slow-ms", "1e9", "--expensive-usd", "1e9")
        assert {c["span_id"]: c["reasons"] for c in after["candidates"]}[judged.span_id.hex()] == ["negative_feedback"]
        groups = cli_json("stats", "--db", db, "--by", "model")["groups"]
        counted = {g["model"]: (g["feedback_count"], g["feedback_mean"]) for g in groups if g["feedback_count"]}
        if judged.genai.model == praised.genai.model:
            assert counted == {judged.genai.model: (2, 0.2)}  # the label-only result has no value
        else:
            assert counted == {judged.genai.model: (1, 0.2), praised.genai.model: (1, None)}


# -- the ui extension of a running collector -------------------------------------------------------

def test_extension_takes_feedback_while_its_collector_writes_spans(collector_factory, tmp_path):
    """SQLite has one writer: scores posted while the collector stores a steady stream of calls
    all land (the write waits out the exporter's batch), behind the extension's write token."""
    import threading

    from tests.conftest import free_port, sdk_tracer_provider
    from tests.test_web_api import UI_CONFIG

    port = free_port()
    token_file = tmp_path / "write-token"
    token_file.write_text(WRITE_TOKEN + "\n")
    config = (UI_CONFIG % port).replace(f"    endpoint: 127.0.0.1:{port}\n", f"    endpoint: 127.0.0.1:{port}\n"
                                        f"    auth:\n      write_token_file: {token_file}\n")
    collector = collector_factory(config)
    provider = sdk_tracer_provider(collector.http_url, protocol="http", service="fb-test")
    tracer = provider.get_tracer("t")
    stop, trace_ids = threading.Event(), []

    def calls() -> None:
        while not stop.is_set():
            with tracer.start_as_current_span("chat gpt-4o") as span:
                span.set_attribute("gen_ai.operation.name", "chat")
                span.set_attribute("gen_ai.request.model", "gpt-4o")
                trace_ids.append(f"{span.get_span_context().trace_id:032x}")

    sender = threading.Thread(target=calls, daemon=True)
    sender.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(trace_ids) < 25 or not get_json(f"{base}/api/v1/calls")[1].get("items")):
            time.sleep(0.2)
        sent_before = len(trace_ids)
        assert post(base, {"trace_id": trace_ids[0], "name": "thumbs", "value": 0})[0] == 403  # reads are open, writes are not
        statuses = [post(base, {"trace_id": trace_ids[i], "name": "thumbs", "value": i % 2}, WRITE_TOKEN)[0]
                    for i in range(25)]
    finally:
        stop.set()
        sender.join(timeout=30)
        provider.shutdown()
    assert statuses == [201] * 25
    assert len(trace_ids) > sent_before  # spans kept flowing meanwhile
    deadline, wanted = time.monotonic() + 30, set(trace_ids[0:25:2])  # the last batch may be in flight
    while True:
        status, scored = get_json(f"{base}/api/v1/traces?feedback=negative&limit=1000")
        if {t["trace_id"] for t in scored["items"]} == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200 and {t["trace_id"] for t in scored["items"]} == wanted
