"""``replay``: stored calls written through the real storage exporter, sent again to a real HTTP
server speaking the chat completions protocol (tests/fake_openai.py), via the CLI (in-process
entry point and a subprocess) and ``POST /api/v1/replay``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.model import GenAI, SpanBatch
from exporters.storage.config import RetentionPolicy
from tests import fake_openai
from tests.fake_openai import FakeOpenAI
from tests.genai_helpers import make_processor
from tests.storage_helpers import hexid, make_exporter, pg_admin, pg_url, span  # noqa: F401
from tests.test_query_cli import run

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-never-printed-0123456789"
TOOLS = [{"type": "function", "name": "get_weather", "description": "weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def _msg(role: str, text: str) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def call(trace: int, *, prompt: str = "What is the capital of France?", answer: str = "Paris, I think.",
         attributes: dict | None = None, inputs: list | None = None, user: str = "alice", **genai):
    g = GenAI(provider="openai", operation="chat", request_model="gpt-4o", response_model="gpt-4o-2024-08-06",
              input_tokens=20, output_tokens=5, cost_usd=0.0001, user_id=user, session_id=f"s{trace}",
              system_instructions=[{"type": "text", "content": "You are terse."}],
              input_messages=inputs or [_msg("user", prompt)],
              output_messages=[_msg("assistant", answer)], **genai)
    return span(trace, 100 + trace, genai=g, name="chat gpt-4o", attributes=attributes)


TOOL_INPUTS = [
    _msg("user", "Weather in Paris?"),
    {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather",
                                     "arguments": {"city": "Paris"}}]},
    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "sunny, 21C"}]},
]


@pytest.fixture
def store(tmp_path) -> str:
    """A SQLite store with: 1 a plain call, 2 a call answering a tool result, 3 a call whose
    model should call a tool, 4 sampled out, 5 redacted by the redaction processor, 6 a trace
    without an LLM call."""
    db = str(tmp_path / "spans.db")
    redacted = call(5, prompt="Mail me at jane.doe@example.com please")
    make_processor("redaction").process(SpanBatch([redacted]))
    assert redacted.attributes.get("redaction.redacted.count")
    spans = [
        call(1, attributes={"gen_ai.request.temperature": 0.2}),
        call(2, inputs=TOOL_INPUTS, answer="It is sunny.", attributes={"gen_ai.tool.definitions": json.dumps(TOOLS)}),
        call(3, prompt="Weather in Lyon?", answer="Let me check.",
             attributes={"gen_ai.tool.definitions": json.dumps(TOOLS)}),
        call(4, attributes={"sampling.content": "stripped"}),
        redacted,
        span(6, 1, name="tool"),
    ]
    spans[3].genai.input_messages = spans[3].genai.output_messages = None  # as content sampling strips
    exporter = make_exporter({"type": "sqlite", "path": db})
    exporter.export(SpanBatch(spans))
    exporter.shutdown()
    return db


@pytest.fixture
def fake(monkeypatch):
    """The fake endpoint, named by the environment as a user would (with a key)."""
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        yield server


def replay(db: str, fake: FakeOpenAI, *args: str) -> subprocess.CompletedProcess:
    return run("replay", "--db", db, *args)


def test_plain_call_is_sent_again_and_compared(store, fake):
    result = replay(store, fake, hexid(1, 16), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    sent = fake.requests[-1]
    assert sent["model"] == "gpt-4o" and sent["temperature"] == 0.2
    assert sent["messages"] == [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "What is the capital of France?"}]
    assert fake.headers[-1]["Authorization"] == f"Bearer {SECRET}"
    assert doc["original"]["answer"] == "Paris, I think." and doc["replay"]["answer"] == fake_openai.ANSWER
    assert "-Paris, I think.\n+The capital of France is Paris." in doc["diff"]
    usage = fake_openai.USAGE
    assert (doc["replay"]["input_tokens"], doc["replay"]["output_tokens"]) == (usage["prompt_tokens"],
                                                                              usage["completion_tokens"])
    assert doc["replay"]["cost_usd"] > 0 and doc["replay"]["latency_ms"] > 0  # priced by genai-prices
    assert doc["original"]["cost_usd"] == pytest.approx(0.0001)
    assert SECRET not in result.stdout + result.stderr


def test_model_system_and_temperature_changes(store, fake):
    result = replay(store, fake, hexid(1, 16), "--model", "gpt-4o-mini", "--system", "Answer in French.",
                    "--temperature", "0.9", "--json")
    assert result.returncode == 0, result.stderr
    sent = fake.requests[-1]
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.9
    assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}
    doc = json.loads(result.stdout)
    assert doc["replay"]["model"] == "gpt-4o-mini" and doc["replay"]["system_changed"]


def test_table_output_shows_both_answers_and_escapes_control_characters(tmp_path, fake):
    db = str(tmp_path / "esc.db")
    exporter = make_exporter({"type": "sqlite", "path": db})
    exporter.export(SpanBatch([call(9, answer="evil \x1b[2J answer")]))
    exporter.shutdown()
    result = replay(db, fake, hexid(9, 16))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "stored answer" in out and "replay answer" in out and fake_openai.ANSWER in out
    assert "\x1b" not in out and "\\x1b[2J" in out
    assert "+The capital of France is Paris." in out and "tok in/out" in out


def test_tool_calls_and_tool_results_are_replayed(store, fake):
    result = replay(store, fake, hexid(2, 16), "--json")
    assert result.returncode == 0, result.stderr
    sent = fake.requests[-1]
    assert sent["tools"] == [{"type": "function", "function": {k: TOOLS[0][k] for k in
                                                                ("name", "description", "parameters")}}]
    assert sent["messages"][1:] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
    ]
    # the model answers text after a tool result; before one it calls the tool
    assert json.loads(result.stdout)["replay"]["answer"] == fake_openai.ANSWER
    result = replay(store, fake, hexid(3, 16), "--json")
    doc = json.loads(result.stdout)
    assert doc["replay"]["finish_reason"] == "tool_calls" and doc["replay"]["tools"] == 1
    part = doc["replay"]["output_messages"][0]["parts"][0]
    assert part["type"] == "tool_call" and part["name"] == "get_weather"
    assert "[tool call get_weather]" in doc["replay"]["answer"]


@pytest.mark.parametrize("trace, kind, words", [
    (4, "sampled", "sampled out"),
    (5, "redacted", "redacted (1 values replaced (EMAIL_ADDRESS))"),
])
def test_refusals_name_the_reason(store, fake, trace, kind, words):
    result = replay(store, fake, hexid(trace, 16))
    assert result.returncode == 3
    assert words in result.stderr and result.stderr.count("\n") == 1 and result.stdout == ""
    assert fake.requests == []  # nothing went out


def test_redacted_content_can_be_replayed_with_placeholders(store, fake):
    result = replay(store, fake, hexid(5, 16), "--allow-redacted", "--json")
    assert result.returncode == 0, result.stderr
    assert "<EMAIL_ADDRESS>" in fake.requests[-1]["messages"][1]["content"]


def test_expired_content_is_refused(store, fake):
    from exporters.storage.retention import Retention

    exporter = make_exporter({"type": "sqlite", "path": store})
    exporter.store.start()
    # retention counts from receipt: run it as if an hour had passed since the fixture stored the spans
    Retention(exporter.store, RetentionPolicy(content_ttl=60.0), clock=lambda: time.time() + 3600).run_once()
    exporter.shutdown()
    result = replay(store, fake, hexid(1, 16))
    assert result.returncode == 3 and "content expired (content_ttl" in result.stderr
    assert fake.requests == []


def test_bad_ids_and_calls(store, fake):
    assert replay(store, fake, "zz").returncode == 2
    missing = replay(store, fake, "ab" * 16)
    assert missing.returncode == 1 and "no trace or span" in missing.stderr
    not_llm = replay(store, fake, hexid(6, 16))
    assert not_llm.returncode == 3 and "has no LLM call" in not_llm.stderr
    by_span = replay(store, fake, hexid(101, 8), "--json")  # a span id alone
    assert by_span.returncode == 0 and json.loads(by_span.stdout)["original"]["trace_id"] == hexid(1, 16)


def test_endpoint_errors_are_one_line_without_the_key(store, fake):
    failing = replay(store, fake, hexid(1, 16), "--model", fake_openai.FAILING_MODEL)
    assert failing.returncode == 1
    assert "answered 500: the model is overloaded" in failing.stderr and SECRET not in failing.stderr
    closed = run("replay", "--db", store, hexid(1, 16), "--base-url", "http://127.0.0.1:9/v1", "--timeout", "5")
    assert closed.returncode == 1 and "cannot reach" in closed.stderr and SECRET not in closed.stderr


def test_record_stores_a_linked_span_in_the_same_store(store, fake):
    result = replay(store, fake, hexid(1, 16), "--record", "--json")
    assert result.returncode == 0, result.stderr
    recorded = json.loads(result.stdout)["recorded"]
    conn = sqlite3.connect(store)
    row = conn.execute("SELECT attributes, links, user_id, session_id, model, output_messages, cost_usd "
                       "FROM spans WHERE span_id = ?", (recorded["span_id"],)).fetchone()
    attrs, links = json.loads(row[0]), json.loads(row[1])
    assert attrs["replay.of"] == hexid(101, 8) and attrs["replay.of.trace_id"] == hexid(1, 16)
    assert links[0]["trace_id"] == hexid(1, 16) and links[0]["span_id"] == hexid(101, 8)
    assert row[2] == "alice" and row[3] is None and row[4] == "gpt-4o-2024-08-06"
    assert fake_openai.ANSWER in row[5] and row[6] > 0
    trace = conn.execute("SELECT span_count, turns, cost_usd FROM traces WHERE trace_id = ?",
                         (recorded["trace_id"],)).fetchone()
    assert trace[:2] == (1, 1) and trace[2] == pytest.approx(row[6])  # rollups kept by the write path
    conn.close()
    shown = run("trace", "--db", store, recorded["trace_id"])
    assert shown.returncode == 0 and fake_openai.ANSWER in shown.stdout


def test_subprocess_never_shows_the_key(store, fake):
    result = subprocess.run([sys.executable, "-m", "collector", "replay", "--db", store, hexid(1, 16),
                             "--api-key-env", "MY_KEY"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "MY_KEY": SECRET,
                                 "OPENAI_BASE_URL": fake.base_url, "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    assert fake.headers[-1]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in result.stdout + result.stderr and fake_openai.ANSWER in result.stdout


def test_content_dropped_by_redaction_is_refused(tmp_path, fake):
    db = str(tmp_path / "dropped.db")
    dropped = call(7, attributes={"app.confidential": "yes"})
    make_processor("redaction", {"drop_content_when": {"app.confidential": "yes"}}).process(SpanBatch([dropped]))
    exporter = make_exporter({"type": "sqlite", "path": db})
    exporter.export(SpanBatch([dropped]))
    exporter.shutdown()
    result = replay(db, fake, hexid(7, 16), "--allow-redacted")  # nothing left to replay, even so
    assert result.returncode == 3 and "redaction.content.dropped" in result.stderr
    assert fake.requests == []


def test_replay_and_record_on_postgres(pg_url, fake):  # noqa: F811
    exporter = make_exporter({"type": "postgres", "url": pg_url})
    exporter.export(SpanBatch([call(1), call(4, attributes={"sampling.content": "stripped"})]))
    exporter.shutdown()
    result = replay(pg_url, fake, hexid(1, 16), "--record", "--json")
    assert result.returncode == 0, result.stderr
    recorded = json.loads(result.stdout)["recorded"]
    shown = run("trace", "--db", pg_url, recorded["trace_id"], "--format", "json")
    span_doc = json.loads(shown.stdout)["spans"][0]
    assert fake_openai.ANSWER in json.dumps(span_doc["output_messages"]) and span_doc["user_id"] == "alice"
    assert replay(pg_url, fake, hexid(4, 16)).returncode == 3
