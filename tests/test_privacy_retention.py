"""Retention removes content under every content key of every dialect, wherever it is stored
(columns, attributes, events, the full-text index), and it is gone from the SQLite file's bytes
(secure_delete, FTS merge, WAL checkpoint); model, tokens and cost stay."""

from __future__ import annotations

from pathlib import Path

from collector.model import Event
from exporters.storage.retention import Retention
from processors.genai_content import CONTENT_KEY_FAMILIES
from storage_helpers import (backend, batch, export_received_at, hexid, llm, make_exporter, pg_admin,  # noqa: F401
                             pg_url, query, span)

DAY = 86400.0


def marker(i: int) -> str:
    return f"zqxcontent{i:04d}marker"


def content_spans(trace: int, base: int, start_s: float):
    """Spans of one trace with a distinct marker under every content key (family and sub-key), in
    content events and in the canonical messages; returns them and the markers.  One family per
    span keeps each row inside one database page, so a marker is never split across pages."""
    spans_, markers = [], []
    for i, family in enumerate(CONTENT_KEY_FAMILIES):
        attrs = {"http.method": "POST", "gen_ai.request.model": "gpt-4o"}
        for j, key in enumerate((family, f"{family}.0.content")):
            m = marker(base + 2 * i + j)
            attrs[key] = f"please keep {m} private"
            markers.append(m)
        spans_.append(span(trace, trace * 1000 + i, start_s=start_s, attributes=attrs))
    events = [Event("gen_ai.user.message", int(start_s * 1e9), {"content": marker(base + 900), "role": "user"}),
              Event("gen_ai.client.inference.operation.details", int(start_s * 1e9),
                    {"gen_ai.input.messages": marker(base + 901), "gen_ai.request.model": "gpt-4o"})]
    markers += [marker(base + 900), marker(base + 901), marker(base + 902), marker(base + 903)]
    call = span(trace, trace * 1000 + 999, start_s=start_s, attributes={"http.method": "POST"},
                genai=llm(prompt=f"question {marker(base + 902)}", answer=f"answer {marker(base + 903)}"))
    call.events = events
    return spans_ + [call], markers


def file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def test_content_ttl_and_ttl_remove_every_dialects_content_from_rows_and_file(backend):
    exporter = make_exporter(backend, content_ttl="30d", ttl="365d", full_text_search=True)
    old, old_markers = content_spans(1, 0, 400 * DAY)          # content older than 30 days
    expired, expired_markers = content_spans(2, 1000, 10 * DAY)  # older than 365 days: deleted
    fresh, fresh_markers = content_spans(3, 2000, 490 * DAY)
    for start_s, spans_ in ((400 * DAY, old), (10 * DAY, expired), (490 * DAY, fresh)):
        export_received_at(exporter, start_s, *spans_)  # retention counts from receipt
    if backend["type"] == "sqlite":
        exporter.store.sqlite_maintenance()  # the content is in the file itself, not only in the WAL
        assert all(m.encode() in file_bytes(Path(backend["path"])) for m in old_markers + expired_markers)

    report = Retention(exporter.store, exporter.retention.policy, clock=lambda: 500 * DAY).run_once()
    assert (report.purged_spans, report.deleted_spans) == (len(old) + len(expired), len(expired))

    rows = query(exporter, "SELECT trace_id, * FROM spans ORDER BY span_id")
    assert len(rows) == len(old) + len(fresh)
    dumped_old = str([r for r in rows if r[0] == hexid(1, 16)])
    dumped_fresh = str([r for r in rows if r[0] == hexid(3, 16)])
    assert [m for m in old_markers if m in dumped_old] == []
    assert all(m in dumped_fresh for m in fresh_markers)
    calls = query(exporter, "SELECT trace_id, model, input_tokens, output_tokens, cost_usd, content_purged "
                            "FROM spans WHERE model IS NOT NULL ORDER BY trace_id")
    assert calls == [(hexid(1, 16), "gpt-4o-2024", 100, 20, 0.01, 1), (hexid(3, 16), "gpt-4o-2024", 100, 20, 0.01, 0)]
    assert dumped_old.count("POST") == len(old)  # metadata attributes stay

    if backend["type"] == "sqlite":
        raw = file_bytes(Path(backend["path"]))
        assert [m for m in old_markers + expired_markers if m.encode() in raw] == []
        assert all(m.encode() in raw for m in fresh_markers)
    exporter.shutdown()


def test_rows_stored_before_a_key_was_content_lose_it_at_content_ttl(tmp_path):
    """A row whose ``attributes`` still hold a content key (written before the dialect's key joined
    the definition) is scrubbed too."""
    db = tmp_path / "old.db"
    exporter = make_exporter({"type": "sqlite", "path": str(db)}, content_ttl="30d")
    export_received_at(exporter, 1000, span(1, 1, start_s=1000, genai=llm(), attributes={"http.method": "GET"}))
    with exporter.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE spans SET attributes = json_set(attributes, '$.\"ai.response.text\"', ?)",
                             (marker(7),))
    Retention(exporter.store, exporter.retention.policy, clock=lambda: 1000 + 45 * DAY).run_once()
    assert query(exporter, "SELECT attributes FROM spans") == [('{"http.method":"GET"}',)]
    assert marker(7).encode() not in file_bytes(db)
    exporter.shutdown()


def test_max_size_mb_leaves_no_deleted_content_in_the_file(tmp_path):
    db = tmp_path / "cap.db"
    exporter = make_exporter({"type": "sqlite", "path": str(db)}, max_size_mb=1)
    spans_, markers = [], []
    for t in range(1, 301):
        ss, ms = content_spans(t, t * 10_000, 1000 + t)
        ss[0].attributes["padding"] = "p" * 6000  # 300 x 6 KB: over the 1 MB cap
        spans_ += ss[:1]
        markers.append(ms[0])
    exporter.export(batch(*spans_))
    Retention(exporter.store, exporter.retention.policy).run_once()
    kept = {r[0] for r in query(exporter, "SELECT trace_id FROM traces")}
    assert 0 < len(kept) < 300
    raw = file_bytes(db)
    gone = [m for t, m in enumerate(markers, start=1) if hexid(t, 16) not in kept]
    assert gone and [m for m in gone if m.encode() in raw] == []
    exporter.shutdown()


def test_content_ttl_and_ttl_remove_log_record_content_from_rows_and_file(backend):
    """Log records count from when the collector received them: content of every kind of content
    record (per-message body, operation details, a content key on a plain record) goes."""
    import time

    from tests.log_helpers import details, log, logs_batch, message

    exporter = make_exporter(backend, content_ttl="30d", ttl="365d")
    families = {f: f"please keep {marker(5000 + i)} private" for i, f in enumerate(CONTENT_KEY_FAMILIES)}
    records = [message(1, 1, "gen_ai.user.message", {"content": marker(6001)}),
               details(1, 1, inputs=[{"role": "user", "parts": [{"type": "text", "content": marker(6002)}]}]),
               log(1, 1, body="user asked about invoices", attributes={"service.tier": "gold", **families})]
    markers = [marker(6001), marker(6002)] + [marker(5000 + i) for i in range(len(CONTENT_KEY_FAMILIES))]
    exporter.export(logs_batch(*records))
    rows_before = str(query(exporter, "SELECT * FROM logs"))
    assert all(m in rows_before for m in markers)

    report = Retention(exporter.store, exporter.retention.policy, clock=lambda: time.time() + 31 * DAY).run_once()
    assert report.purged_logs == 3
    rows = str(query(exporter, "SELECT * FROM logs"))
    assert [m for m in markers if m in rows] == [] and "gold" in rows
    if backend["type"] == "sqlite":
        assert [m for m in markers if m.encode() in file_bytes(Path(backend["path"]))] == []
    Retention(exporter.store, exporter.retention.policy, clock=lambda: time.time() + 400 * DAY).run_once()
    assert query(exporter, "SELECT COUNT(*) FROM logs") == [(0,)]
    exporter.shutdown()


def test_retention_removes_feedback_comments_and_the_scores_of_deleted_traces(backend):
    """A score's comment is what a person wrote about a call: ``content_ttl`` removes it (the score
    itself still counts); ``ttl`` deletes scores with their traces and scores that old."""
    from exporters.storage.schema import scores

    exporter = make_exporter(backend, content_ttl="30d", ttl="365d")
    for trace, received in ((1, 400 * DAY), (2, 10 * DAY), (3, 490 * DAY)):
        export_received_at(exporter, received, span(trace, trace * 1000, start_s=received, genai=llm()))
    # a late thumbs-down on trace 2 (deleted by ttl); trace 4 was never stored
    given = {1: 400 * DAY, 2: 495 * DAY, 3: 490 * DAY, 4: 10 * DAY}
    with exporter.store.engine.begin() as conn:
        conn.execute(scores.insert(), [
            {"trace_id": hexid(t, 16), "name": "thumbs", "value": 0.0, "label": "negative", "source": "user",
             "author": f"user-{t}", "comment": f"my number is {marker(7000 + t)}",
             "time_unix_nano": int(s * 1e9)} for t, s in given.items()])
    if backend["type"] == "sqlite":
        exporter.store.sqlite_maintenance()
        assert all(marker(7000 + t).encode() in file_bytes(Path(backend["path"])) for t in given)

    report = Retention(exporter.store, exporter.retention.policy, clock=lambda: 500 * DAY).run_once()
    assert (report.purged_scores, report.deleted_scores) == (2, 2)
    kept = query(exporter, "SELECT trace_id, label, author, comment FROM scores ORDER BY trace_id")
    assert kept == [(hexid(1, 16), "negative", "user-1", None),
                    (hexid(3, 16), "negative", "user-3", f"my number is {marker(7003)}")]
    if backend["type"] == "sqlite":
        raw = file_bytes(Path(backend["path"]))
        assert [t for t in (1, 2, 4) if marker(7000 + t).encode() in raw] == []
        assert marker(7003).encode() in raw
    exporter.shutdown()
