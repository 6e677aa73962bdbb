"""collector/netserver.py: deadlines run once and never when cancelled; cancelled ones do not pile up."""

from __future__ import annotations

import threading
import time

from collector.netserver import Deadlines


def test_an_expired_deadline_runs_its_action_once_and_says_so():
    deadlines, fired = Deadlines(), threading.Event()
    deadline = deadlines.arm(0.05, fired.set)
    assert fired.wait(5) and deadline.expired and not deadline.cancelled
    deadline.cancel()  # too late: a no-op
    assert deadline.expired and not deadline.cancelled


def test_a_cancelled_deadline_never_runs_and_lets_go_of_its_action():
    deadlines, fired = Deadlines(), []
    deadline = deadlines.arm(0.05, lambda: fired.append(1))
    deadline.cancel()
    assert deadline.action is None  # a gRPC call it held can be released at once
    later = threading.Event()
    deadlines.arm(0.1, later.set)
    assert later.wait(5) and fired == [] and not deadline.expired


def test_earlier_deadlines_armed_later_still_fire_first():
    deadlines, order = Deadlines(), []
    done = threading.Event()
    deadlines.arm(0.3, lambda: (order.append("late"), done.set()))
    deadlines.arm(0.05, lambda: order.append("early"))
    assert done.wait(5) and order == ["early", "late"]


def test_cancelled_deadlines_are_dropped_in_bulk():
    deadlines = Deadlines()
    for _ in range(5000):
        deadlines.arm(60, lambda: None).cancel()
    assert len(deadlines._heap) < 2100  # compacted whenever cancelled ones are most of it
    started = time.monotonic()
    fired = threading.Event()
    deadlines.arm(0.05, fired.set)
    assert fired.wait(5) and time.monotonic() - started < 5
