"""Stored content matches the documented ``max_content_bytes`` (issue 17.8).

A 15 MiB string was stored cut at 256 KiB instead of the documented 1 MiB; a span with 200,000
attributes got its ``attributes`` column as a JSON *string* of a truncated dump.  Both go through
a real HTTP request into a real SQLite file.
"""

from __future__ import annotations

import json

from exporters.storage.rows import TRUNCATED_KEY
from exporters.storage.store import sqlite_url
from tests.hostile.data_support import config, http_export, parse_response, rows, span_request

MIB = 1 << 20


def test_a_15_mib_string_keeps_max_content_bytes(collector_factory, tmp_path):
    path = tmp_path / "spans.db"
    c = collector_factory(config("sqlite", {"path": str(path)}))
    status, _, raw = http_export(c.http_url, span_request(
        {"trace": 1, "span": 1, "attrs": {"input.value": "p" * (15 * MIB)}}).SerializeToString())
    assert status == 200 and not parse_response(raw).partial_success.rejected_spans
    (content,) = rows(sqlite_url(path), "SELECT content_attributes FROM spans")[0]
    assert len(content.encode()) <= MIB
    text = json.loads(content)["input.value"]
    assert text.startswith("ppp") and text.endswith("bytes]") and "…[truncated " in text
    assert len(text) > MIB - 1024  # the documented 1 MiB, not a quarter of it
    assert c.metric("otelcol_exporter_storage_truncated_values") == 1


def test_200000_attributes_are_stored_as_a_json_object_with_a_marker(collector_factory, tmp_path):
    path = tmp_path / "spans.db"
    c = collector_factory(config("sqlite", {"path": str(path)}))
    attrs = {f"attribute.{i:06d}": f"value {i}" for i in range(200_000)}
    status, _, raw = http_export(c.http_url, span_request({"trace": 1, "span": 1, "attrs": attrs}).SerializeToString())
    assert status == 200, raw
    (stored,) = rows(sqlite_url(path), "SELECT attributes FROM spans")[0]
    assert len(stored.encode()) <= MIB
    kept = json.loads(stored)
    assert isinstance(kept, dict)
    marker = kept.pop(TRUNCATED_KEY)
    assert marker.endswith(f"of 200000 entries dropped to fit max_content_bytes")
    assert int(marker.split()[0]) == 200_000 - len(kept)
    assert len(kept) > 10_000 and all(attrs[k] == v for k, v in kept.items())
    # A query on a kept key works on the column (it is an object, not a string).
    assert rows(sqlite_url(path), "SELECT json_extract(attributes, '$.\"attribute.000000\"') FROM spans") == [
        ("value 0",)]
