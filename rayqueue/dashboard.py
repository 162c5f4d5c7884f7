"""The web dashboard: one page on 127.0.0.1 that shows a queue live and acts on it.

``rayqueue dashboard`` (or :func:`serve` from Python) starts a small HTTP server in the
calling process. The page polls ``/api/snapshot`` every second; the server builds that
answer only from the public client API (``stats``, ``metrics``, ``workers``,
``dead_letters``, ``schedules``), so it shows nothing a script could not see. The task
browser pages through ``/api/tasks`` (``TaskQueue.tasks``: filtered and paged by the
queue actors, never a copy of every task) and opens one task from ``/api/tasks/<id>``
(payload, attempts with their errors, result or failure, timeline). When the queue
or the cluster does not answer, the page says "cluster unreachable" within about
three seconds (each call is bounded by :data:`CALL_TIMEOUT_S`). Actions (retry a dead
task, cancel a queued one, pause and resume) are POSTs that carry a per-server token,
so another site open in the same browser cannot trigger them. ``serve(block=True)``
(``rayqueue dashboard``) stops cleanly on SIGTERM as on Ctrl-C, releasing its port.

The server is hardened for a page that a hostile site may try to reach: requests must
name this server in ``Host`` (and ``Origin``, when sent) exactly; the page cannot be
framed; only GET and POST exist (anything else is a JSON 405); each connection must
send its request within :data:`REQUEST_TIMEOUT_S`; at most :data:`HANDLER_THREADS`
requests are handled at once (more get a 503 at once, not a thread); and every call to
the queue is bounded by :data:`CALL_TIMEOUT_S`, so a queue or cluster that is gone
answers 503 in about that time instead of piling up threads.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import ray
from loguru import logger

from rayqueue.calls import retry_cap
from rayqueue.client import TaskQueue
from rayqueue.errors import (
    InvalidArgumentError,
    QueueUnavailableError,
    RayQueueError,
    TaskNotFoundError,
)
from rayqueue.logging import traceback_of

#: Dead letters and failures the page lists.
LIST_LIMIT = 20
#: Schedules the page lists.
SCHEDULE_LIMIT = 100
#: Rows of a task browser page.
PAGE_ROWS = 50
#: Requests handled at once; a connection beyond them gets a 503 and is closed.
HANDLER_THREADS = 16
#: Seconds a connection may take to send each part of its request (idle ones are cut).
REQUEST_TIMEOUT_S = 5.0
#: Calls to the queue running at once (a queue that does not answer holds them).
CALL_THREADS = 4
#: Seconds a request waits for the queue before it answers 503.
CALL_TIMEOUT_S = 2.0
#: Headers on every answer: the page may not be framed (clickjacking) or sniffed.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
#: The methods the dashboard answers.
ALLOWED = "GET, POST"
#: Host names that reach a loopback-bound server.
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def snapshot(queue: TaskQueue[Any]) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data."""
    stats = queue.stats()
    metrics = queue.metrics()
    workers = queue.workers()
    dead = queue.dead_letters(LIST_LIMIT)
    return {
        "queue": queue.name,
        "taken_at": metrics.taken_at,
        "paused": stats.paused,
        "closed": stats.closed,
        "journal_failing": stats.journal_failing,
        "storage_full": stats.storage_full,
        "size": stats.size,
        "by_state": stats.by_state,
        "throttled": stats.throttled,
        "ready_by_priority": stats.ready_by_priority,
        "counts": metrics.counts,
        "enqueued": metrics.enqueued,
        "rates": metrics.rates,
        "success_ratio": metrics.success_ratio,
        "pools": [p.model_dump() for p in metrics.pools],
        "workers": [{**w.model_dump(), "activity": w.activity} for w in workers],
        "dead": [{"id": d.id, "task": d.task_name, "reason": d.reason,
                  "error_type": d.error_type, "error": (d.error_message or "")[:300],
                  "attempts": d.attempts, "finished_at": d.finished_at} for d in dead],
        "failures": [f.model_dump() for f in metrics.recent_failures[:LIST_LIMIT]],
        "schedules": [{**s.model_dump(), "paused": s.paused}
                      for s in queue.schedules()[:SCHEDULE_LIMIT]],
    }


def task_page(queue: TaskQueue[Any], query: dict[str, str]) -> dict[str, Any]:
    """A page of the task browser: ``query`` holds ``state``, ``type``, ``priority``,
    ``id`` (a prefix) and ``after`` (the cursor of the page before), each optional."""
    priority = query.get("priority") or None
    if priority is not None:
        try:
            number = int(priority)
        except ValueError:
            raise InvalidArgumentError("priority", f"a whole number, got {priority!r}") from None
    page = queue.tasks(state=query.get("state") or None, type=query.get("type") or None,
                       priority=None if priority is None else number,
                       id_prefix=query.get("id") or None, after=query.get("after") or None,
                       limit=PAGE_ROWS)
    return {"tasks": [{"id": t.id, "task": t.task_name, "state": t.state,
                       "priority": t.priority, "pool": t.pool, "attempts": t.attempts,
                       "created_at": t.created_at, "finished_at": t.finished_at,
                       "error_type": t.error_type} for t in page.tasks],
            "next": page.next}


def task_detail(queue: TaskQueue[Any], task_id: str) -> dict[str, Any]:
    """One task for its view: the whole record, its attempts (the failed ones from its
    history, then the running or last one) and a timeline of what happened when."""
    t = queue.get(task_id)
    attempts: list[dict[str, Any]] = [
        {"number": a.number, "started_at": a.started_at, "ended_at": a.ended_at,
         "outcome": a.outcome, "error": f"{a.error_type}: {a.message}"} for a in t.history]
    numbered = {a.number for a in t.history}
    if t.attempts and t.attempts not in numbered:  # the running, or last, attempt
        outcome = {"leased": "running", "succeeded": "succeeded", "dead": "failed",
                   "cancelled": "cancelled"}.get(t.state, t.state)
        error = (f"{t.error_type}: {t.error_message}" if t.state == "dead" and t.error_type
                 else None)
        attempts.append({"number": t.attempts, "started_at": t.started_at,
                         "ended_at": t.finished_at, "outcome": outcome, "error": error})
    timeline: list[dict[str, Any]] = [{"at": t.created_at, "what": "enqueued"}]
    if t.due_at > t.created_at + 0.001 and not t.history:
        timeline.append({"at": t.due_at, "what": "due"})
    for a in attempts:
        if a["started_at"] is not None:
            timeline.append({"at": a["started_at"], "what": f"attempt {a['number']} started"})
        if a["ended_at"] is not None:
            timeline.append({"at": a["ended_at"],
                             "what": f"attempt {a['number']} {a['outcome']}"})
    if t.terminal and t.finished_at is not None and not any(
            a["ended_at"] == t.finished_at for a in attempts):
        timeline.append({"at": t.finished_at, "what": t.state})
    timeline.sort(key=lambda e: e["at"])
    return {**t.model_dump(exclude={"history"}), "attempt_list": attempts,
            "timeline": timeline, "terminal": t.terminal}


@dataclass
class Dashboard:
    """A running dashboard server; :meth:`stop` shuts it down."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(queue: TaskQueue[Any], port: int = 8400, host: str = "127.0.0.1",
          block: bool = False) -> Dashboard:
    """Serve the dashboard of ``queue`` at ``http://host:port/``.

    ``port=0`` picks a free port (see ``Dashboard.url``). With ``block`` the call serves
    until interrupted; otherwise a daemon thread serves and the call returns at once.
    Keep ``host`` on 127.0.0.1 unless the page must be reached from elsewhere: the
    actions need only the page's token.

    Raises:
        InvalidArgumentError: ``port`` is not an int from 0 to 65535.
        OSError: the address cannot be bound (a host name that does not resolve, a
            port in use).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError("port", f"an int from 0 to 65535, got {port!r}")
    token = secrets.token_urlsafe(16)
    page = (resources.files("rayqueue") / "static" / "dashboard.html").read_text()
    page = page.replace("{{TOKEN}}", token).replace("{{QUEUE}}", html.escape(queue.name))
    handler = type("Handler", (_Handler,), {"queue": queue, "token": token,
                                            "page": page.encode()})
    server = _Server((host, port), handler)
    url = f"http://{host}:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, name="rayqueue-dashboard",
                              daemon=True)
    dashboard = Dashboard(server, thread, url)
    logger.info("dashboard of queue {} at {}", queue.name, url, action="dashboard_started")
    if block:
        # Served from the thread, waited for here: SIGTERM (raised in this thread) and
        # Ctrl-C land in the wait, never between a handler thread's start and the
        # accounting of its slot (a run saw a slot released twice and the process hang).
        with stopped_by_sigterm():
            thread.start()
            try:
                thread.join()
            finally:
                dashboard.stop()
        logger.info("dashboard of queue {} stopped", queue.name, action="dashboard_stopped")
        return dashboard
    thread.start()
    return dashboard


class _Terminated(Exception):
    """SIGTERM arrived (raised in the main thread by the handler below)."""


@contextlib.contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """Within it (in the main thread), SIGTERM ends the block as Ctrl-C would, and
    quietly: the block's own ``finally`` clauses close what it opened, and the caller
    goes on after it (the default would end the process at once, with whatever Ray
    prints on its way out). Enter it before serving, so no SIGTERM finds it missing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except _Terminated:
        logger.info("SIGTERM: the dashboard stops", action="dashboard_sigterm")
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Server(ThreadingHTTPServer):
    """A threading HTTP server with a bound on its handler threads and queue calls."""

    daemon_threads = True
    #: Connections the kernel holds while the accept loop is busy.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(HANDLER_THREADS)
        self.calls = _Calls(CALL_THREADS, CALL_TIMEOUT_S)
        bound = address[0].strip("[]").lower()
        #: host names a request may carry in Host and Origin (with this port)
        self.hosts = _LOOPBACK | ({bound} if bound not in ("", "0.0.0.0", "::") else set())

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _refuse_busy(request: socket.socket) -> None:
    """Answer 503 on a connection no handler thread is free for, without a thread."""
    body = json.dumps({"error": "the dashboard is busy with other connections; try again"})
    head = "".join(f"{k}: {v}\r\n" for k, v in {**SECURITY_HEADERS,
                   "Content-Type": "application/json", "Retry-After": "1",
                   "Content-Length": str(len(body)), "Connection": "close"}.items())
    try:
        request.settimeout(1.0)
        request.sendall(f"HTTP/1.0 503 Service Unavailable\r\n{head}\r\n{body}".encode())
    except OSError:
        pass  # the client went away: nothing to tell it


@dataclass
class _Failed:
    status: HTTPStatus
    message: str


class _Calls:
    """Runs the handlers' calls to the queue on a few daemon threads, each bounded in
    time: a call the queue does not answer keeps its thread, never the request."""

    def __init__(self, threads: int, timeout: float) -> None:
        self._free = threading.BoundedSemaphore(threads)
        self._timeout = timeout

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or a :class:`_Failed` saying why there is no answer."""
        if not self._free.acquire(blocking=False):
            return _Failed(HTTPStatus.SERVICE_UNAVAILABLE,
                           "the queue has not answered earlier calls yet; it may be gone")
        done = threading.Event()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                # Retried for as long as the request waits, not the client's 30 s: a
                # call given up on (a 503) ends with it, and does not go on calling a
                # gone queue from this thread (into a process that may be shutting Ray
                # down meanwhile: Ray then ends the process from this thread).
                with retry_cap(self._timeout):
                    box["value"] = fn(*args)
            except BaseException as err:  # handed to the request below
                box["error"] = err
            finally:
                self._free.release()
                done.set()

        threading.Thread(target=work, name="rayqueue-dashboard-call", daemon=True).start()
        if not done.wait(self._timeout):
            return _Failed(HTTPStatus.SERVICE_UNAVAILABLE,
                           f"the queue did not answer within {self._timeout:g} s; it may "
                           "be restarting or gone")
        err = box.get("error")
        if err is None:
            return box["value"]
        if isinstance(err, QueueUnavailableError | ray.exceptions.RayError | OSError):
            return _Failed(HTTPStatus.SERVICE_UNAVAILABLE,
                           f"the queue cannot be reached: {type(err).__name__}: {err}")
        if isinstance(err, TaskNotFoundError):
            return _Failed(HTTPStatus.NOT_FOUND, str(err))
        if isinstance(err, InvalidArgumentError):
            return _Failed(HTTPStatus.BAD_REQUEST, str(err))
        if isinstance(err, RayQueueError | ValueError):
            return _Failed(HTTPStatus.CONFLICT, f"{type(err).__name__}: {err}")
        logger.error("dashboard call failed: {}\n{}", err, traceback_of(err),
                     action="dashboard_call_failed")
        return _Failed(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}")


class _Handler(BaseHTTPRequestHandler):
    queue: TaskQueue[Any]
    token: str
    page: bytes
    server: _Server
    #: per read on the connection: an idle or trickling client is cut off
    timeout = REQUEST_TIMEOUT_S
    #: what a request without a version is answered as: with a status line and the
    #: security headers (HTTP/0.9 answers are a bare body)
    default_request_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("dashboard: {}", format % args, action="dashboard_request")

    def _trusted(self) -> bool:
        """Only this server's own origin: a page of another site whose host name was
        rebound to 127.0.0.1 (DNS rebinding) carries its own name in Host, and a page of
        another site that posts here carries its own Origin."""
        port = self.server.server_address[1]
        hosts = self.server.hosts
        ok = {f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts}
        origin = self.headers.get("Origin")
        if self.headers.get("Host", "") not in ok or (
                origin is not None and not _same_origin(origin, hosts, port)):
            self._json(HTTPStatus.FORBIDDEN, {"error": "requests only from this dashboard"})
            return False
        return True

    def _parts(self) -> list[str]:
        return [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]

    def do_GET(self) -> None:
        if not self._trusted():
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.page, "text/html; charset=utf-8")
        elif path == "/api/snapshot":
            self._json(HTTPStatus.OK, self.server.calls.run(snapshot, self.queue))
        elif path == "/api/tasks":
            query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
            self._json(HTTPStatus.OK, self.server.calls.run(task_page, self.queue, query))
        elif (parts := self._parts())[:2] == ["api", "tasks"] and len(parts) == 3:
            self._json(HTTPStatus.OK, self.server.calls.run(task_detail, self.queue, parts[2]))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})

    def do_POST(self) -> None:
        if not self._trusted():
            return
        # Bytes on both sides: constant time, and any header (non-ASCII too) compares.
        given = self.headers.get("X-RQ-Token", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self.token.encode()):
            self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong token"})
            return
        parts = self._parts()
        q = self.queue
        run = self.server.calls.run
        if parts in (["api", "pause"], ["api", "resume"]):
            self._json(HTTPStatus.OK, run(_switch, q, parts[1]))
        elif len(parts) == 4 and parts[:2] == ["api", "tasks"] and parts[3] == "retry":
            self._json(HTTPStatus.OK, run(
                lambda: {"message": f"task {parts[2]} is {q.retry_dead(parts[2]).state}"}))
        elif len(parts) == 4 and parts[:2] == ["api", "tasks"] and parts[3] == "cancel":
            self._json(HTTPStatus.OK, run(
                lambda: {"message": f"task {parts[2]} is {q.cancel(parts[2])}"}))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no action {self.path}"})

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Every error as JSON with the security headers; a method the dashboard does
        not have is 405 (the standard library says 501, in HTML)."""
        headers = {}
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, headers = HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": ALLOWED}
            message = f"method {self.command} is not allowed here: use {ALLOWED}"
        self.close_connection = True
        self._json(HTTPStatus(code), {"error": message or HTTPStatus(code).phrase},
                   headers)

    def _json(self, status: HTTPStatus, body: Any,
              headers: dict[str, str] | None = None) -> None:
        if isinstance(body, _Failed):
            status, body = body.status, {"error": body.message}
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(self, status: HTTPStatus, body: bytes, kind: str,
              headers: dict[str, str] | None = None) -> None:
        if self.request_version == "HTTP/0.9":
            # The standard library answers an explicit "HTTP/0.9" with a bare body: no
            # status line and none of the security headers. Every answer has them.
            self.request_version = "HTTP/1.0"
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, "Content-Type": kind,
                            "Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _same_origin(origin: str, hosts: frozenset[str] | set[str], port: int) -> bool:
    """Whether ``origin`` is exactly ``http://<one of hosts>:<port>`` (parsed, not
    searched: ``http://evil.com//127.0.0.1:8400`` is evil.com's)."""
    try:
        parts = urlsplit(origin)
        return (parts.scheme == "http" and parts.hostname in hosts and parts.port == port
                and not (parts.username or parts.password or parts.path or parts.query
                         or parts.fragment))
    except ValueError:  # a port that is not a number, or out of range
        return False


def _switch(queue: TaskQueue[Any], action: str) -> dict[str, str]:
    if action == "pause":
        queue.pause()
    else:
        queue.resume()
    return {"message": f"queue {queue.name} {action}d"}
