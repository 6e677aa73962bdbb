"""genai_session: explicit ids, inferred sessions by user activity, stability across restarts and
instances, late spans.  State goes to a real SQLite file (and a real Postgres when available)."""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.model import GenAI
from collector.telemetry import Telemetry
from config.schema import build
from processors import PROCESSORS
from processors.genai_session import SessionConfig, SessionProcessor, session_id_for
from tests.span_helpers import MINUTE_NS, T0, batch, context, span, trace_id


def make(raw: dict | None = None, telemetry: Telemetry | None = None) -> SessionProcessor:
    config, errors = build(SessionConfig, raw or {})
    assert not errors, errors
    factory = PROCESSORS.get("genai_session")
    return factory.create(config, context("genai_session", telemetry))


@pytest.fixture
def store(tmp_path) -> dict:
    return {"state": {"path": str(tmp_path / "sessions.db")}}


def session_of(s) -> tuple[str | None, str | None]:
    return s.attributes.get("gen_ai.conversation.id"), s.attributes.get("session.source")


# -- explicit ids ---------------------------------------------------------------------------------


def test_explicit_ids_follow_the_precedence(store):
    p = make(store)
    both = span(session__id="from-session-id", langfuse__session__id="from-langfuse")
    only_traceloop = span(traceloop__association__properties__session_id="tl-1")
    canonical = span(gen_ai__conversation__id="conv-1", session__id="other")
    p.process(batch(both, only_traceloop, canonical))
    assert session_of(both) == ("from-session-id", "explicit")
    assert session_of(only_traceloop) == ("tl-1", "explicit")
    assert session_of(canonical) == ("conv-1", "explicit")
    assert both.genai.session_id == "from-session-id"


def test_precedence_is_configurable(store):
    p = make({**store, "session_attributes": ["langfuse.session.id", "session.id"]})
    s = span(session__id="a", langfuse__session__id="b")
    p.process(batch(s))
    assert session_of(s) == ("b", "explicit")


def test_every_span_of_a_trace_gets_the_trace_session_within_and_across_batches(store):
    p = make(store)
    tid = trace_id()
    child_first = span(tid, name="http GET")            # arrives before the span with the id
    root = span(tid, session__id="conv-7", user__id="alice")
    p.process(batch(child_first, root))
    assert session_of(child_first) == ("conv-7", "explicit")
    later = span(tid, name="tool call")
    p.process(batch(later))
    assert session_of(later) == ("conv-7", "explicit")
    # a plain HTTP span is annotated but not turned into an LLM call; it still gets the trace's user
    assert child_first.genai is None and later.genai is None
    assert root.genai.user_id == "alice"


def test_existing_canonical_fields_are_read_when_attributes_are_absent(store):
    p = make(store)
    s = span(gen_ai__operation__name="chat")
    s.genai = GenAI(operation="chat", session_id="from-normalize", user_id="bob")
    p.process(batch(s))
    assert session_of(s) == ("from-normalize", "explicit")
    assert s.genai.user_id == "bob"


def test_bad_id_values_are_counted_and_the_batch_survives(store):
    telemetry = Telemetry()
    p = make(store, telemetry)
    listy = span(session__id=["a", "b"], user__id={"x": 1})
    huge = span(session__id="x" * 5000)
    number = span(session__id=12345)
    good = span(session__id="ok")
    surrogate = user_call("bad\udcff", T0)
    nul = user_call("nul\x00user", T0)
    unicode_user = user_call("ユーザー", T0)
    out = p.process(batch(listy, huge, number, good, surrogate, nul, unicode_user))
    assert len(out) == 7
    assert session_of(unicode_user)[1] == "inferred"  # one hostile value does not spoil the batch
    assert session_of(number) == ("12345", "explicit")
    assert session_of(good) == ("ok", "explicit")
    assert session_of(listy) == (None, None) and session_of(huge) == (None, None)
    assert telemetry.value("otelcol_processor_session_invalid_ids", processor="genai_session") == 5


# -- inferred sessions ----------------------------------------------------------------------------


def user_call(user: str, at_ns: int, service: str = "chat-api", tid: bytes | None = None,
              duration_ms: float = 1000, **attrs):
    return span(tid, service=service, start=at_ns, duration_ms=duration_ms, user__id=user,
                gen_ai__operation__name="chat", **attrs)


def test_gap_of_29_minutes_continues_a_session_and_31_minutes_starts_a_new_one(store):
    p = make(store)
    first = user_call("alice", T0)
    end_first = first.end_time_unix_nano
    second = user_call("alice", end_first + 29 * MINUTE_NS)
    third = user_call("alice", second.end_time_unix_nano + 31 * MINUTE_NS)
    for s in (first, second, third):  # one batch each, as requests arrive
        p.process(batch(s))
    assert session_of(first)[1] == "inferred"
    assert session_of(first)[0] == session_of(second)[0]
    assert session_of(third)[0] != session_of(first)[0]
    assert first.genai.session_id == session_of(first)[0] and first.genai.user_id == "alice"
    # ids are reproducible: the hash of service, user and first activity
    assert session_of(first)[0] == session_id_for("chat-api", "alice", T0)


def test_the_timeout_is_configurable(store):
    p = make({**store, "inactivity_timeout": "5m"})
    a = user_call("u", T0)
    b = user_call("u", a.end_time_unix_nano + 6 * MINUTE_NS)
    p.process(batch(a, b))
    assert session_of(a)[0] != session_of(b)[0]


def test_sessions_are_per_user_and_per_service(store):
    p = make(store)
    a = user_call("alice", T0)
    b = user_call("bob", T0 + MINUTE_NS)
    c = user_call("alice", T0 + 2 * MINUTE_NS, service="search-api")
    d = span(start=T0, enduser__id="alice", gen_ai__operation__name="chat")  # other user attribute
    p.process(batch(a, b, c, d))
    assert len({session_of(x)[0] for x in (a, b, c)}) == 3
    assert session_of(d)[0] == session_of(a)[0]


def test_spans_without_user_or_session_are_left_alone(store):
    p = make(store)
    s = span(name="GET /health")
    p.process(batch(s))
    assert session_of(s) == (None, None) and s.genai is None


def test_inference_can_be_disabled(store):
    p = make({**store, "infer": False})
    s = user_call("alice", T0)
    p.process(batch(s))
    assert session_of(s) == (None, None)
    assert s.genai.user_id == "alice"


def test_a_restart_does_not_split_a_session(store):
    first = make(store)
    a = user_call("alice", T0)
    tid = trace_id()
    b = user_call("alice", T0 + 10 * MINUTE_NS, tid=tid)
    first.process(batch(a, b))
    first.shutdown()

    second = make(store)  # a new process: nothing in memory, same store
    c = user_call("alice", T0 + 20 * MINUTE_NS)
    late_child = span(tid, name="tool call", start=T0 + 10 * MINUTE_NS)
    second.process(batch(c, late_child))
    assert session_of(c)[0] == session_of(a)[0]
    assert session_of(late_child) == (session_of(b)[0], "inferred")


def test_two_instances_sharing_a_store_agree(store):
    one, two = make(store), make(store)
    calls = [user_call("alice", T0 + i * 5 * MINUTE_NS) for i in range(6)]
    for i, call in enumerate(calls):  # requests load-balanced across two collectors
        (one if i % 2 == 0 else two).process(batch(call))
    assert len({session_of(c)[0] for c in calls}) == 1


def race_two_instances(config: dict) -> set[str]:
    """Two instances on one store, each fed half of one user's requests, at the same time."""
    instances = [make(config), make(config)]
    spans_by_instance = [[user_call("carol", T0 + (2 * i + k) * MINUTE_NS) for i in range(20)] for k in range(2)]

    def run(p, spans):
        for s in spans:
            p.process(batch(s))

    threads = [threading.Thread(target=run, args=(p, s)) for p, s in zip(instances, spans_by_instance)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in instances:
        p.shutdown()
    return {session_of(s)[0] for spans in spans_by_instance for s in spans}


def test_two_instances_racing_in_threads_do_not_split_a_session(store):
    ids = race_two_instances(store)
    assert len(ids) == 1 and None not in ids, ids


def test_a_late_span_joins_the_session_of_its_time(store):
    p = make(store)
    on_time = user_call("alice", T0 + 10 * MINUTE_NS)
    p.process(batch(on_time))
    early = user_call("alice", T0)  # happened first, arrives later: extends the session backwards
    p.process(batch(early))
    assert session_of(early)[0] == session_of(on_time)[0]
    # the session kept the id it was given; it did not become the hash of the new start
    assert session_of(on_time)[0] == session_id_for("chat-api", "alice", T0 + 10 * MINUTE_NS)


def test_a_late_span_bridging_two_sessions_merges_them(store, tmp_path):
    p = make(store)
    morning_tid = trace_id()
    morning = user_call("alice", T0, tid=morning_tid)
    afternoon_tid = trace_id()
    afternoon = user_call("alice", T0 + 50 * MINUTE_NS, tid=afternoon_tid)
    p.process(batch(morning))
    p.process(batch(afternoon))
    assert session_of(morning)[0] != session_of(afternoon)[0]

    bridge = user_call("alice", T0 + 25 * MINUTE_NS)
    p.process(batch(bridge))
    survivor = session_of(morning)[0]
    assert session_of(bridge)[0] == survivor
    # later spans of the afternoon trace follow the merge, in this instance and in a fresh one
    more = span(afternoon_tid, name="tool call", start=T0 + 51 * MINUTE_NS)
    p.process(batch(more))
    assert session_of(more)[0] == survivor
    fresh = make(store)
    again = span(afternoon_tid, name="tool call", start=T0 + 52 * MINUTE_NS)
    fresh.process(batch(again))
    assert session_of(again)[0] == survivor
    # the merge is recorded for stores that already hold the old id
    with sqlite3.connect(store["state"]["path"]) as db:
        aliases = dict(db.execute("SELECT old_id, new_id FROM gc_session_aliases"))
    assert aliases == {session_of(afternoon)[0]: survivor}


def test_out_of_order_spans_in_one_batch(store):
    p = make(store)
    calls = [user_call("dave", T0 + i * 20 * MINUTE_NS) for i in range(5)]
    p.process(batch(*reversed(calls)))
    assert len({session_of(c)[0] for c in calls}) == 1
    assert session_of(calls[0])[0] == session_id_for("chat-api", "dave", T0)


def test_a_broken_store_does_not_lose_the_batch(store):
    telemetry = Telemetry()
    p = make(store, telemetry)
    p.state.close()  # every state query now fails
    explicit, inferred = span(session__id="x"), user_call("eve", T0)
    out = p.process(batch(explicit, inferred))
    assert len(out) == 2
    assert session_of(explicit) == ("x", "explicit")
    assert session_of(inferred) == (None, None)
    assert telemetry.value("otelcol_processor_session_state_errors", processor="genai_session") == 1
    later = user_call("eve", T0 + MINUTE_NS)  # the next batch reconnects
    p.process(batch(later))
    assert session_of(later)[1] == "inferred"


def test_an_unopenable_store_is_one_clear_startup_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="cannot open the state file"):
        make({"state": {"path": str(tmp_path / "a-file" / "sessions.db")}})


def test_old_state_is_pruned(tmp_path):
    path = str(tmp_path / "s.db")
    now = [T0]
    config, _ = build(SessionConfig, {"state": {"path": path, "trace_ttl": "1h", "session_ttl": "2h"}})
    p = SessionProcessor(config, context("genai_session"), wall_ns=lambda: now[0])
    p.process(batch(user_call("alice", T0)))
    now[0] += 3 * 3600 * 10**9
    p.process(batch(user_call("bob", T0)))
    with sqlite3.connect(path) as db:
        users = [r[0] for r in db.execute("SELECT user_id FROM gc_session_intervals")]
        traces = db.execute("SELECT count(*) FROM gc_session_traces").fetchone()[0]
    assert users == ["bob"] and traces == 1


# -- config ---------------------------------------------------------------------------------------


def test_config_errors_name_the_key():
    _, errors = build(SessionConfig, {"state": {"path": "a.db", "url": "postgresql://x/y"}})
    assert any("path or url" in str(e) for e in errors)
    _, errors = build(SessionConfig, {"inactivity_timeout": "0s"})
    assert any(e.path == "inactivity_timeout" for e in errors)
    _, errors = build(SessionConfig, {"state": {"url": "mysql://x"}})
    assert any(e.path == "state::url" for e in errors)
    _, errors = build(SessionConfig, {"sesion_attributes": []})
    assert any("unknown key" in str(e) for e in errors)


# -- Postgres -------------------------------------------------------------------------------------


@pytest.fixture
def postgres_url():
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Postgres is required in CI: {exc}")
        pytest.skip(f"no Postgres on 127.0.0.1:5432: {exc}")
    name = f"gc_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def test_postgres_store_survives_restarts_and_is_shared(postgres_url):
    cfg = {"state": {"url": postgres_url}}
    one, two = make(cfg), make(cfg)
    a = user_call("alice", T0)
    one.process(batch(a))
    b = user_call("alice", T0 + 20 * MINUTE_NS)
    two.process(batch(b))
    one.shutdown()
    two.shutdown()
    three = make(cfg)
    c = user_call("alice", T0 + 40 * MINUTE_NS)
    bridge_late = user_call("alice", T0 - 20 * MINUTE_NS)
    three.process(batch(c, bridge_late))
    assert len({session_of(s)[0] for s in (a, b, c, bridge_late)}) == 1
    three.shutdown()


def test_postgres_serializes_two_racing_instances(postgres_url):
    ids = race_two_instances({"state": {"url": postgres_url}})
    assert len(ids) == 1 and None not in ids, ids


def test_the_default_store_is_a_file_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = make({"state": {"trace_ttl": "2h"}})
    p.process(batch(user_call("alice", T0)))
    p.shutdown()
    assert (tmp_path / "genai_sessions.db").exists()


def test_the_memory_cache_is_bounded_and_the_store_answers_beyond_it(store):
    p = make({**store, "cache_size": 10})
    tids = [trace_id() for _ in range(30)]
    p.process(batch(*[span(t, session__id=f"conv-{i}") for i, t in enumerate(tids)]))
    assert len(p.cache) == 10
    first_again = span(tids[0], name="tool call")  # evicted from memory, still in the store
    p.process(batch(first_again))
    assert session_of(first_again) == ("conv-0", "explicit")


def offline_sessions(calls: list[tuple[int, int]], timeout: int) -> list[set[int]]:
    """The partition of calls (start, end) that a gap rule over the whole history gives."""
    order = sorted(range(len(calls)), key=lambda i: calls[i][0])
    groups: list[set[int]] = []
    group_end = None
    for i in order:
        start, end = calls[i]
        if group_end is not None and start - group_end < timeout:
            groups[-1].add(i)
            group_end = max(group_end, end)
        else:
            groups.append({i})
            group_end = end
    return groups


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 5)), min_size=1, max_size=12),
       data=st.data())
def test_any_arrival_order_ends_in_the_same_sessions_as_the_whole_history(tmp_path_factory, calls, data):
    """Online, in any order and batching, across two instances: after merges the sessions are
    exactly those of the gap rule applied to the complete history."""
    path = str(tmp_path_factory.mktemp("prop") / "s.db")
    instances = [make({"state": {"path": path}}), make({"state": {"path": path}})]
    spans = [user_call("u", T0 + start * MINUTE_NS, duration_ms=length * 60_000) for start, length in calls]
    order = data.draw(st.permutations(range(len(spans))))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(spans) - 1)), max_size=8)))
    bounds = [0, *cuts, len(spans)]
    for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
        if a < b:
            instances[n % 2].process(batch(*[spans[i] for i in order[a:b]]))
    final = instances[0].state.traces([s.trace_id for s in spans])
    online: dict[str, set[int]] = {}
    for i, s in enumerate(spans):
        online.setdefault(final[s.trace_id][0], set()).add(i)
    expected = offline_sessions([(s.start_time_unix_nano, s.end_time_unix_nano) for s in spans], 30 * MINUTE_NS)
    assert sorted(map(sorted, online.values())) == sorted(map(sorted, expected))
    for p in instances:
        p.shutdown()
