"""The HTTP API over real HTTP, on the query CLI's known dataset in SQLite and Postgres: every
answer equals the CLI's ``--format json`` answer to the same question, bad parameters are 400s
naming the parameter, and auth works (bearer header, session cookie)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import subprocess
import sys
import time
from urllib.parse import urlencode

import pytest

from tests.conftest import REPO, free_port
from tests.query_dataset import HOUR_NS
from tests.test_query_cli import _same, dataset, dbs, iso, postgres_db, query, run, sqlite_db  # noqa: F401
from tests.web_helpers import get_json, request, serve

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def apis(dbs):
    """store name -> base URL of a UI serving it."""
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(serve(db)) for name, db in dbs.items()}


def _cli_argv(params: list[tuple[str, str]]) -> list[str]:
    return [arg for name, value in params for arg in (f"--{name.replace('_', '-')}", value)]


def _api(base: str, path: str, params: list[tuple[str, str]] = ()) -> object:
    status, body = get_json(f"{base}/api/v1/{path}?{urlencode(list(params))}")
    assert status == 200, body
    return body


QUESTIONS = [
    [],
    [("sort", "cost"), ("limit", "5")],
    [("sort", "latency"), ("limit", "4"), ("offset", "4")],
    [("model", "gpt-4o"), ("status", "error")],
    [("provider", "anthropic"), ("min_cost", "0.004")],
    [("user", "u1"), ("min_latency_ms", "3000")],
    [("search", "ÜNÏCODE"), ("limit", "3")],
    [("attr", "tenant.id=acme"), ("attr", "app.feature=search"), ("service", "chatbot")],
    [("session", "s2"), ("sort", "tokens")],
]


@pytest.mark.parametrize("params", QUESTIONS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p) or "all")
@pytest.mark.parametrize("listing", ["traces", "sessions"])
def test_listings_answer_as_the_cli(apis, dbs, listing, params):
    if listing == "sessions" and ("sort", "cost") in params:
        params = [*params, ("sort", "turns")][1:]
    for store, base in apis.items():
        cli = query(dbs, store, listing, *_cli_argv(params))
        page = _api(base, listing, params)
        assert page["items"] == cli, store
    assert all(_same(_api(apis["sqlite"], listing, params)["items"], _api(b, listing, params)["items"])
               for b in apis.values())


def test_paging_walks_every_trace_once(apis, dataset):
    for base in apis.values():
        seen, offset = [], 0
        while offset is not None:
            page = _api(base, "traces", [("limit", "7"), ("offset", str(offset))])
            seen += [t["trace_id"] for t in page["items"]]
            offset = page["next_offset"]
        assert sorted(seen) == sorted({s.trace_id.hex() for s in dataset.spans})


def test_time_window(apis, dbs, dataset):
    params = [("since", iso(dataset.base_ns + 20 * HOUR_NS)), ("until", iso(dataset.base_ns + 70 * HOUR_NS))]
    for store, base in apis.items():
        assert _api(base, "traces", params)["items"] == query(dbs, store, "traces", *_cli_argv(params))


@pytest.mark.parametrize("params", [
    [], [("by", "model,day")], [("by", "attr:tenant.id,model"), ("top", "2")],
    [("by", "user"), ("since", "30d"), ("status", "ok")], [("by", "attr:app.feature"), ("provider", "openai")],
])
def test_stats_answer_as_the_cli(apis, dbs, params):
    for store, base in apis.items():
        assert _same(_api(base, "stats", params), query(dbs, store, "stats", *_cli_argv(params))), store


def test_trace_has_the_cli_spans_plus_raw_data_and_logs(apis, dbs, dataset):
    trace_id = dataset.spans[0].trace_id.hex()
    for store, base in apis.items():
        cli = query(dbs, store, "trace", trace_id)
        detail = _api(base, f"traces/{trace_id}")
        assert detail["trace_id"] == trace_id and detail["logs"] == []
        assert [{k: s[k] for k in cli["spans"][0]} for s in detail["spans"]] == cli["spans"]
        chat = next(s for s in detail["spans"] if s["operation"] == "chat")
        assert chat["attributes"]["app.feature"] in ("search", "chat")
        assert chat["resource_attributes"]["tenant.id"] in ("acme", "globex")
        assert chat["input_messages"][0]["role"] == "user"
        assert _api(base, f"traces/{trace_id[:10]}")["trace_id"] == trace_id  # a unique prefix


def test_calls_are_the_export_records_newest_first(apis, dbs, dataset):
    for store, base in apis.items():
        proc = run("export", "--db", dbs[store], "--model", "gpt-4o-mini")
        exported = [json.loads(line) for line in proc.stdout.splitlines()]
        page = _api(base, "calls", [("model", "gpt-4o-mini"), ("limit", "1000")])
        assert page["items"] == exported[::-1] and exported


def test_session_and_unknowns(apis, dbs):
    for store, base in apis.items():
        assert _api(base, "sessions/s1") == query(dbs, store, "session", "s1")
        assert get_json(f"{base}/api/v1/sessions/nope")[0] == 404
        assert get_json(f"{base}/api/v1/traces/{'0' * 32}")[0] == 404


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_streams_the_cli_output(apis, dbs, fmt):
    for store, base in apis.items():
        status, headers, body = request(f"{base}/api/v1/export?format={fmt}&provider=openai")
        assert status == 200 and "attachment" in headers["content-disposition"]
        proc = run("export", "--db", dbs[store], "--format", fmt, "--provider", "openai")
        assert body.decode() == proc.stdout
    rows = list(csv.DictReader(io.StringIO(body.decode()))) if fmt == "csv" else None
    assert rows is None or rows[0]["provider"] == "openai"


@pytest.mark.parametrize("query_string, name", [
    ("traces?limit=0", "limit"), ("traces?limit=1001", "limit"), ("traces?limit=abc", "limit"),
    ("traces?offset=-1", "offset"), ("traces?sort=colour", "sort"), ("traces?since=yesterday", "since"),
    ("traces?since=2026-01-02&until=2026-01-01", "since"), ("traces?min_cost=-1", "min_cost"),
    ("traces?min_latency_ms=nan", "min_latency_ms"), ("traces?status=meh", "status"),
    ("traces?modle=gpt-4o", "modle"), ("traces?model=a&model=b", "model"), ("traces?attr=novalue", "attr"),
    ("stats?by=colour", "by"), ("stats?by=attr:", "by"), ("stats?top=0", "top"),
    ("export?format=xml", "format"), ("export?all_spans=maybe", "all_spans"),
    ("traces/xyz", "trace_id"), ("traces/abcdef", "trace_id"),  # not hex; an ambiguous prefix
    ("calls?sort=price", "sort"), ("sessions?since=1e99d", "since"),
])
def test_bad_parameters_are_400_naming_them(apis, query_string, name):
    for base in apis.values():
        status, body = get_json(f"{base}/api/v1/{query_string}")
        assert status == 400, body
        assert set(body) == {"error"} and name in body["error"], body


def test_hostile_values_are_only_values(apis):
    for base in apis.values():
        for value in ["x' OR '1'='1", "%", "?", "\x00\x1b[2J", "a" * 5000]:
            status, body = get_json(f"{base}/api/v1/traces?{urlencode({'model': value, 'search': value})}")
            assert status in (200, 400), body  # never a 500
            assert status == 400 or body["items"] == []


def test_openapi_document_lists_every_endpoint_and_parameter(apis):
    doc = _api(apis["sqlite"], "openapi.json")
    paths = doc["paths"]
    for path in ("/api/v1/traces", "/api/v1/traces/{trace_id}", "/api/v1/sessions", "/api/v1/sessions/{session_id}",
                 "/api/v1/stats", "/api/v1/export", "/api/v1/calls"):
        assert path in paths, path
    names = {p["name"] for p in paths["/api/v1/traces"]["get"]["parameters"]}
    assert {"since", "until", "model", "min_cost", "attr", "sort", "limit", "offset"} <= names


def test_pages_carry_a_strict_content_security_policy(apis):
    status, headers, body = request(f"{apis['sqlite']}/calls")
    assert status == 200 and b"<table" in body
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp


def test_foreign_host_names_are_refused_without_a_token(apis):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the API."""
    status, _, _ = request(f"{apis['sqlite']}/api/v1/traces", headers={"Host": "evil.example"})
    assert status == 421


# -- auth -----------------------------------------------------------------------------------------

def test_bearer_token_and_session_cookie(sqlite_db):
    with serve(sqlite_db, token=TOKEN) as base:
        assert get_json(f"{base}/api/v1/traces")[0] == 401
        assert get_json(f"{base}/api/v1/traces", token="wrong-token-0123456789")[0] == 401
        assert get_json(f"{base}/api/v1/traces", token=TOKEN)[0] == 200
        status, headers, _ = request(f"{base}/calls?model=gpt-4o")
        assert status == 303 and headers["location"].startswith("/login?next=")
        status, headers, _ = request(f"{base}/login?next=%2Fcalls", data=b"token=nope")
        assert status == 303 and "failed" in headers["location"] and "set-cookie" not in headers
        status, headers, _ = request(f"{base}/login?next=%2F%2Fevil.example", data=f"token={TOKEN}".encode())
        assert status == 303 and headers["location"] == "/calls"  # never a redirect off-site
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie
        value = cookie.split(";")[0]
        assert request(f"{base}/api/v1/traces", headers={"Cookie": value})[0] == 200
        assert request(f"{base}/calls", headers={"Cookie": value})[0] == 200
        assert request(f"{base}/static/common.js")[0] == 200  # assets are public


def _ui_command(*args: str, token_file=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "collector", "ui", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(url: str, proc: subprocess.Popen, token: str | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if request(url, token)[0] in (200, 401):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("ui did not start")


def test_ui_command_serves_a_store_with_a_token_file(sqlite_db, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    proc = _ui_command("--db", sqlite_db, "--listen", f"127.0.0.1:{port}", "--bearer-token-file", str(token_file))
    try:
        _wait_for(f"http://127.0.0.1:{port}/api/v1/stats", proc)
        assert get_json(f"http://127.0.0.1:{port}/api/v1/stats")[0] == 401
        status, body = get_json(f"http://127.0.0.1:{port}/api/v1/stats", token=TOKEN)
        assert status == 200 and body["groups"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("args, message", [
    (["--listen", "0.0.0.0:{port}"], "without a bearer token"),
    (["--listen", "nonsense"], "HOST:PORT"),
    (["--bearer-token-file", "/nonexistent/token"], "cannot read"),
])
def test_ui_command_refuses_bad_setups(sqlite_db, args, message):
    argv = [a.format(port=free_port()) for a in args]
    proc = _ui_command("--db", sqlite_db, *argv)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and message in err, err
    proc = _ui_command("--db", "/nonexistent.db")
    assert proc.communicate(timeout=60)[1].count("not found") == 1 and proc.returncode == 2


UI_CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http_port}
processors:
  batch:
    timeout: 50ms
  genai_normalize:
exporters:
  sqlite:
    path: {tmp}/store.db
extensions:
  ui:
    endpoint: 127.0.0.1:%d
service:
  extensions: [ui]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch, genai_normalize]
      exporters: [sqlite]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
"""


def test_extension_serves_the_store_its_collector_writes(collector_factory):
    from tests.conftest import sdk_tracer_provider

    port = free_port()
    collector = collector_factory(UI_CONFIG % port)
    provider = sdk_tracer_provider(collector.http_url, protocol="http", service="ui-test")
    with provider.get_tracer("t").start_as_current_span("chat gpt-4o") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", "gpt-4o")
        span.set_attribute("gen_ai.usage.input_tokens", 12)
    provider.shutdown()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = get_json(f"http://127.0.0.1:{port}/api/v1/calls")
        if status == 200 and body["items"]:
            break
        time.sleep(0.2)
    assert body["items"][0]["request_model"] == "gpt-4o" and body["items"][0]["service"] == "ui-test"


# -- stats from per-day parts (collector/query/daystats.py) ---------------------------------------

@pytest.mark.parametrize("params", [
    [("since", "30d"), ("by", "day")], [("since", "30d"), ("by", "model,day"), ("top", "3")],
    [("since", "7d"), ("by", "model")], [("since", "4d"), ("until", "1d"), ("by", "provider,hour")],
    [("since", "12h"), ("by", "model")], [("since", "90d"), ("by", "attr:tenant.id"), ("status", "error")],
    [("since", "30d"), ("by", "user"), ("attr", "app.feature=chat")],
])
def test_stats_from_kept_days_answer_as_the_cli_every_time(apis, dbs, params):
    for store, base in apis.items():
        cli = query(dbs, store, "stats", *_cli_argv(params))
        for _ in range(2):  # the second answer comes from the days kept by the first
            assert _same(_api(base, "stats", params), cli), store


def test_a_late_span_in_a_kept_day_is_counted(sqlite_db, dataset, tmp_path):
    """A day's parts are checked against its calls: a span arriving late for a past day (or
    deleted by retention) changes the answer at once."""
    import copy
    import shutil

    from tests.query_dataset import Dataset, load

    db = tmp_path / "store.db"
    shutil.copy(sqlite_db, db)
    params = [("since", "30d"), ("by", "model,day")]
    with serve(str(db)) as base:
        before = _api(base, "stats", params)
        late = copy.deepcopy(next(s for s in dataset.llm if s.start_time_unix_nano < dataset.base_ns + 30 * HOUR_NS))
        late.span_id = b"\x01" * 8
        late.genai.cost_usd = 1.5
        load("sqlite", {"path": str(db)}, Dataset(dataset.base_ns, [late]))
        after = _api(base, "stats", params)
    assert _same(after, json.loads(run("stats", "--db", str(db), "--format", "json", *_cli_argv(params)).stdout))
    assert sum(g["requests"] for g in after["groups"]) == sum(g["requests"] for g in before["groups"]) + 1
    assert sum(g["cost_usd"] for g in after["groups"]) == pytest.approx(
        sum(g["cost_usd"] for g in before["groups"]) + 1.5)


@pytest.mark.parametrize("ui_keys, message", [
    ("endpoint: 0.0.0.0:%d", "refusing to listen on 0.0.0.0 without a bearer token"),
    ("endpoint: 127.0.0.1:%d\n    storage: nope", "'nope' is not a sqlite or postgres exporter"),
    ("endpoint: 127.0.0.1:%d\n    auth:\n      bearer_token: short", "at least 16 characters"),
])
def test_extension_refuses_an_unsafe_or_wrong_setup_at_start(collector_factory, ui_keys, message):
    config = UI_CONFIG.replace("    endpoint: 127.0.0.1:%d", "    " + ui_keys) % free_port()
    collector = collector_factory(config, wait_ready=False)
    assert collector.proc.wait(timeout=90) != 0
    assert message in collector.log()


def test_extension_with_a_token_file(collector_factory, tmp_path):
    token_file = tmp_path / "ui-token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    config = UI_CONFIG.replace("    endpoint: 127.0.0.1:%d", f"    endpoint: 127.0.0.1:{port}\n    auth:\n"
                               f"      bearer_token_file: {token_file}")
    collector_factory(config)
    assert get_json(f"http://127.0.0.1:{port}/api/v1/calls")[0] == 401
    assert get_json(f"http://127.0.0.1:{port}/api/v1/calls", token=TOKEN) == (200, {
        "items": [], "sort": "time", "limit": 20, "offset": 0, "next_offset": None})


def test_query_cli_start_up_does_not_load_the_web_stack():
    """The query commands' answer time includes their start-up: FastAPI and uvicorn (~0.5 s of
    imports) load only for `ui` or a config with the ui extension."""
    code = ("import sys, collector.cli; from collector.cli import build_parser; build_parser(); "
            "import collector.extensions.ui; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'uvicorn', 'starlette', 'pydantic'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
