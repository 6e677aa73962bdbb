"""Give freed memory back to the OS after large requests (glibc's ``malloc_trim``).

Python frees a 15 MB request body, and the decoded spans of an admitted one, back to the C
allocator, but glibc keeps most of it: bodies and gRPC's message slices come from per-thread
arenas, and a freed block in the middle of an arena is not returned.  Measured on the hostile
memory bench (``bench/hostile_memory.py``: 48 concurrent 15 MB requests), RSS stayed ~500 MB after
the attack; ``malloc_trim(0)`` (which also releases free pages inside arenas) brought it back
near the baseline.  So the receivers call :func:`after_large_request`, and a daemon thread trims
a few times over the next seconds (the spans of an admitted request are freed only once it is
exported).  A trim walks the heaps (milliseconds) and runs only after large requests, at most once
a second.  Without glibc (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time

__all__ = ["LARGE_REQUEST", "after_large_request", "limit_arenas"]

LARGE_REQUEST = 1 << 20  # bodies at least this large schedule trims
_DELAYS = (1.0, 5.0, 15.0)  # after the request: when the spans it admitted have likely been exported


_M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2  # as MALLOC_ARENA_MAX=2: measured on bench/hostile_memory.py, RSS after the attack
#             ~150 MB above idle instead of ~200, peak a little lower; ingest speed unchanged


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _libc_trim():
    return getattr(_libc(), "malloc_trim", None)


def limit_arenas() -> None:
    """Cap glibc's malloc arenas (one per thread by default, up to 8 per core, each keeping what
    its thread freed) unless the user set ``MALLOC_ARENA_MAX``.  Call before threads start."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, ARENAS)


class _Trimmer:
    def __init__(self) -> None:
        self._trim = _libc_trim()
        self._cond = threading.Condition()
        self._due: list[float] = []
        self._thread: threading.Thread | None = None

    def schedule(self) -> None:
        if self._trim is None:
            return
        now = time.monotonic()
        with self._cond:
            self._due = sorted({round(now + d) for d in _DELAYS} | {round(t) for t in self._due if t > now})
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0] > time.monotonic():
                    self._cond.wait(self._due[0] - time.monotonic() if self._due else None)
                now = time.monotonic()
                self._due = [t for t in self._due if t > now]
            self._trim(0)


_TRIMMER = _Trimmer()


def after_large_request(nbytes: int) -> None:
    """Note a request body of ``nbytes`` that has just been handled or refused."""
    if nbytes >= LARGE_REQUEST:
        _TRIMMER.schedule()
