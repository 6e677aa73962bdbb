"""What every listener needs against slow, stalled and idle clients: deadlines and bounded servers.

* :data:`DEADLINES` runs actions at deadlines from one thread (a heap), so arming a deadline per
  request costs a heap push, not a thread or a timer.  The OTLP receiver uses it for the whole-
  request read deadline of HTTP (headers and body together, not per read, so a client sending a
  byte every 10 s is cut off all the same) and for the time a gRPC call may take to deliver its
  message.
* :class:`BoundedHTTPServer` is ``ThreadingHTTPServer`` with a real listen backlog (the standard
  library's is 5), a cap on connections handled at once (each is a thread: beyond the cap a new
  connection is closed at once instead of costing one more) and daemon threads.  Handlers set
  ``timeout`` (the idle timeout: how long a connection may stay silent), so an idle connection
  holds its thread for a bounded time.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Callable

__all__ = ["DEADLINES", "Deadline", "Deadlines", "BoundedHTTPServer", "LISTEN_BACKLOG", "shut_reading",
           "harden_started_server"]

LISTEN_BACKLOG = 128  # connections the kernel queues before accept (Linux caps it at somaxconn)


class Deadline:
    """One armed deadline; ``cancel()`` before it fires makes it a no-op.  ``expired`` says whether
    the action ran (a handler uses it to tell "the client was too slow" from "the client left")."""

    __slots__ = ("when", "action", "cancelled", "expired", "_owner")

    def __init__(self, when: float, action: Callable[[], None], owner: "Deadlines") -> None:
        self.when = when
        self.action: Callable[[], None] | None = action
        self.cancelled = False
        self.expired = False
        self._owner = owner

    def cancel(self) -> None:
        """Never run the action (unless it already started: then ``expired`` is True).  Drops it
        at once: it may hold a gRPC call, whose stream grpcio keeps open (counted against
        max_concurrent_streams) while anything references it."""
        self._owner.cancel(self)


class Deadlines:
    """Runs each armed action once its deadline passes, from a single daemon thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._cancelled = 0

    def cancel(self, deadline: Deadline) -> None:
        """See :meth:`Deadline.cancel`.  Most deadlines are cancelled (the request arrived in
        time): they are dropped from the heap in bulk once they are most of it, so it holds about
        as many entries as requests in flight."""
        with self._cond:
            if deadline.cancelled or deadline.expired:
                return
            deadline.cancelled = True
            deadline.action = None
            self._cancelled += 1
            if self._cancelled > 1024 and self._cancelled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def arm(self, seconds: float, action: Callable[[], None]) -> Deadline:
        deadline = Deadline(time.monotonic() + seconds, action, self)
        with self._cond:
            heapq.heappush(self._heap, (deadline.when, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._cond.notify()
        return deadline

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, deadline = heapq.heappop(self._heap)
                if deadline.cancelled:
                    self._cancelled -= 1
                    continue
                deadline.expired = True
                action, deadline.action = deadline.action, None
            try:
                action()
            except Exception:  # noqa: BLE001 - e.g. the socket closed meanwhile; nothing to undo
                pass


DEADLINES = Deadlines()


def shut_reading(sock: socket.socket) -> None:
    """End every read on ``sock`` now (a blocked ``recv`` returns EOF) while replies can still be
    sent.  Called on the raw socket even for TLS: ``SSLSocket.shutdown`` would unwrap TLS."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RD)
    except OSError:
        pass


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server whose threads, backlog and refused connections are bounded.

    ``max_connections`` connections are served at once; one more is closed on accept (and
    counted in ``refused_connections``): its client sees a reset and retries, while the threads
    already serving are not slowed down by one more.
    """

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address, handler, max_connections: int = 256) -> None:
        self._connections = threading.BoundedSemaphore(max_connections)
        self.refused_connections = 0
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._connections.acquire(blocking=False):
            self.refused_connections += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()


def harden_started_server(server, idle_timeout: float) -> None:
    """Idle timeout and backlog for a ``socketserver`` someone else built and started (e.g.
    ``prometheus_client.start_http_server``, whose connections otherwise hold a thread forever
    and whose backlog is 5).  A connection silent for ``idle_timeout`` is closed quietly."""
    base = server.RequestHandlerClass

    class Handler(base):
        timeout = idle_timeout

        def handle(self) -> None:
            try:
                super().handle()
            except (TimeoutError, ConnectionError):
                self.close_connection = True

    Handler.__name__ = f"Idle{base.__name__}"
    server.RequestHandlerClass = Handler
    server.socket.listen(LISTEN_BACKLOG)  # listen() again only resizes the queue
