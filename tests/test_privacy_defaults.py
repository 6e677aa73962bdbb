"""The shipped otel-config.yaml, unmodified, keeps the labelled PII corpus out of the database.

A real ``genai-collector run`` subprocess with the repository's ``otel-config.yaml`` (endpoints
and paths from the environment variables it reads); the official OTel SDK sends every corpus
record over gRPC and OTLP/HTTP, its text in several dialects at once.  Then no labelled value is in
any row nor anywhere in the SQLite file's bytes, and clean records are stored unchanged.
"""

from __future__ import annotations

import json
import sqlalchemy as sa

from tests.conftest import REPO, free_port, start_collector
from tests.test_redaction import RECORDS
from tests.test_redaction_e2e import _send


def test_shipped_config_redacts_the_corpus_out_of_the_database(tmp_path):
    db = tmp_path / "genai-collector.db"
    collector = start_collector((REPO / "otel-config.yaml").read_text(), tmp_path, verbatim=True, cwd=tmp_path,
                                env={"GENAI_COLLECTOR_PROMETHEUS_ENDPOINT": f"127.0.0.1:{free_port()}",
                                     "GENAI_COLLECTOR_UI_ENDPOINT": f"127.0.0.1:{free_port()}"})
    try:
        half = len(RECORDS) // 2
        _send(collector.grpc_endpoint, "grpc", RECORDS[:half])
        _send(collector.http_url, "http", RECORDS[half:])
        assert collector.metric("otelcol_processor_redacted_values", processor="redaction") > 0
    finally:
        assert collector.stop() == 0
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, input_messages, content_attributes, events, attributes "
                                    "FROM spans")).all()
    engine.dispose()
    assert len(rows) == len(RECORDS)

    stored = "\n".join(str(tuple(r)) for r in rows)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("genai-collector.db*"))
    values = [p["value"] for r in RECORDS for p in r["pii"]]
    assert [v for v in values if v in stored] == []
    assert [v for v in values if v.encode() in raw] == []
    assert "<EMAIL_ADDRESS>" in stored and "<PHONE_NUMBER>" in stored

    by_name = {r[0]: r for r in rows}
    for record in RECORDS:
        if record["pii"]:
            continue
        _name, messages, content, _events, _attrs = by_name[f"chat {record['id']}"]
        assert json.loads(content)["input.value"] == record["text"]
        assert json.loads(messages)[0]["parts"][0]["content"] == record["text"]


def test_hash_without_a_real_secret_does_not_start():
    """config/examples/redaction.yaml hashes e-mail addresses: without REDACTION_SECRET, or with a
    placeholder, the collector refuses the config instead of hashing with a guessable key."""
    import os
    import subprocess

    from tests.conftest import collector_cmd

    for secret in (None, "change-me", "x" * 40):
        env = {k: v for k, v in os.environ.items() if k != "REDACTION_SECRET"}
        if secret is not None:
            env["REDACTION_SECRET"] = secret
        result = subprocess.run(collector_cmd("validate", "--config", str(REPO / "config/examples/redaction.yaml")),
                                cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode != 0, secret
        assert "processors::redaction::hash_secret" in result.stdout + result.stderr
