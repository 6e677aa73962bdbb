"""Admission before decoding: a receiver reserves a request's encoded bytes, then hands the spans over."""

from __future__ import annotations

import pytest

from collector.component import Overloaded
from collector.pipeline import Fanout
from test_pipeline import RecordingExporter, make_batch, pipeline


def test_reservation_counts_until_export_and_refuses_beyond_the_limit():
    exporter = RecordingExporter()
    exporter.gate.clear()  # hold the first batch inside the exporter
    p = pipeline([exporter], limit=1500)
    fanout = Fanout([p])
    with fanout.reserve(1000) as first:
        with pytest.raises(Overloaded):  # 1000 + 1000 > 1500, before anything is decoded
            fanout.reserve(1000)
        tickets = fanout.submit(make_batch(2, nbytes=1000), first)
    assert p._in_flight_bytes == 1000  # handed to the pipeline, not given back by the with block
    exporter.gate.set()
    tickets[0].wait(5)
    assert p._in_flight_bytes == 0 and exporter.batches == [["s0", "s1"]]
    p.drain(0)


def test_unused_reservation_is_given_back():
    p = pipeline([RecordingExporter()], limit=1500)
    fanout = Fanout([p])
    with pytest.raises(ValueError):
        with fanout.reserve(1200):
            raise ValueError("undecodable request")
    assert p._in_flight_bytes == 0
    with fanout.reserve(1200):  # room again
        pass
    p.drain(0)


def test_all_pipelines_reserve_or_none_do():
    small, big = pipeline([RecordingExporter()], limit=500, name="traces/a"), pipeline([RecordingExporter()], name="traces/b")
    small.admit(400, 0)  # something already in flight in the small pipeline
    with pytest.raises(Overloaded):
        Fanout([big, small]).reserve(300)
    assert big._in_flight_bytes == 0  # released when the second pipeline refused
    small.release(400)
    for p in (small, big):
        p.drain(0)

