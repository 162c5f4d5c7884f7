"""The web dashboard: one page on 127.0.0.1 that shows a queue live and acts on it.

``rayqueue dashboard`` (or :func:`serve` from Python) starts a small HTTP server in the
calling process. The page polls ``/api/snapshot`` every second; the server builds that
answer only from the public client API (``stats``, ``metrics``, ``workers``,
``dead_letters``), so it shows nothing a script could not see. Actions (retry a dead
task, cancel a queued one, pause and resume) are POSTs that carry a per-server token,
so another site open in the same browser cannot trigger them.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from loguru import logger

from rayqueue.client import TaskQueue
from rayqueue.errors import RayQueueError

#: Dead letters and failures the page lists.
LIST_LIMIT = 20


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
        "size": stats.size,
        "by_state": stats.by_state,
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
    }


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
    """
    token = secrets.token_urlsafe(16)
    page = (resources.files("rayqueue") / "static" / "dashboard.html").read_text()
    page = page.replace("{{TOKEN}}", token).replace("{{QUEUE}}", html.escape(queue.name))
    handler = type("Handler", (_Handler,), {"queue": queue, "token": token,
                                            "page": page.encode()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    url = f"http://{host}:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, name="rayqueue-dashboard",
                              daemon=True)
    dashboard = Dashboard(server, thread, url)
    logger.info("dashboard of queue {} at {}", queue.name, url, action="dashboard_started")
    if block:
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return dashboard
    thread.start()
    return dashboard


class _Handler(BaseHTTPRequestHandler):
    queue: TaskQueue[Any]
    token: str
    page: bytes

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("dashboard: {}", format % args, action="dashboard_request")

    def _trusted(self) -> bool:
        """Only this server's own origin: a page of another site whose host name was
        rebound to 127.0.0.1 (DNS rebinding) carries its own name in Host."""
        host = self.headers.get("Host", "")
        port = self.server.server_address[1]  # type: ignore[index]
        ok = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
        origin = self.headers.get("Origin")
        if host not in ok or (origin is not None and origin.split("//")[-1] not in ok):
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
            self._json(HTTPStatus.OK, self._call(snapshot, self.queue))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})

    def do_POST(self) -> None:
        if not self._trusted():
            return
        if not secrets.compare_digest(self.headers.get("X-RQ-Token", ""), self.token):
            self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong token"})
            return
        parts = self._parts()
        q = self.queue
        if parts in (["api", "pause"], ["api", "resume"]):
            self._json(HTTPStatus.OK, self._call(_switch, q, parts[1]))
        elif len(parts) == 4 and parts[:2] == ["api", "tasks"] and parts[3] == "retry":
            self._json(HTTPStatus.OK, self._call(
                lambda: {"message": f"task {parts[2]} is {q.retry_dead(parts[2]).state}"}))
        elif len(parts) == 4 and parts[:2] == ["api", "tasks"] and parts[3] == "cancel":
            self._json(HTTPStatus.OK, self._call(
                lambda: {"message": f"task {parts[2]} is {q.cancel(parts[2])}"}))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no action {self.path}"})

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (RayQueueError, ValueError) as err:
            return _Failed(f"{type(err).__name__}: {err}")

    def _json(self, status: HTTPStatus, body: Any) -> None:
        if isinstance(body, _Failed):
            status, body = HTTPStatus.CONFLICT, {"error": body.message}
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def _switch(queue: TaskQueue[Any], action: str) -> dict[str, str]:
    if action == "pause":
        queue.pause()
    else:
        queue.resume()
    return {"message": f"queue {queue.name} {action}d"}


@dataclass
class _Failed:
    message: str
