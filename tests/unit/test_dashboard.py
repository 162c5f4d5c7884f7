"""The dashboard's HTTP edge over raw sockets, against a stub queue (issue 14, item 12).

The server is the real one; the queue is a stub with the public client methods the
dashboard calls, so a queue that hangs or is gone can be played without Ray.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from rayqueue.dashboard import (
    CALL_THREADS,
    HANDLER_THREADS,
    Dashboard,
    serve,
)
from rayqueue.errors import InvalidArgumentError, QueueUnavailableError

#: The issue's bound on an answer when the queue is gone.
ANSWER_BOUND_S = 3.0


class StubQueue:
    """The client methods the dashboard uses. ``mode``: ``ok``, ``hang`` (calls block
    until the test ends) or ``gone`` (calls raise QueueUnavailableError)."""

    name = "stub"

    def __init__(self) -> None:
        self.mode = "ok"
        self.paused = False
        self.storage_full = False
        self.release = threading.Event()

    def _call(self) -> None:
        if self.mode == "hang":
            self.release.wait(60)
            raise QueueUnavailableError("released at the end of the test")
        if self.mode == "gone":
            raise QueueUnavailableError("the queue's actor is unreachable")

    def stats(self) -> Any:
        self._call()
        return SimpleNamespace(paused=self.paused, closed=False, size=0, by_state={},
                               ready_by_priority={}, journal_failing=self.storage_full,
                               storage_full=self.storage_full, throttled=0)

    def metrics(self) -> Any:
        self._call()
        return SimpleNamespace(taken_at=0.0, counts={}, enqueued={}, rates={},
                               success_ratio=None, pools=[], recent_failures=[])

    def workers(self) -> list[Any]:
        self._call()
        return []

    def dead_letters(self, limit: int) -> list[Any]:
        self._call()
        return []

    def schedules(self) -> list[Any]:
        self._call()
        return []

    def tasks(self, **query: Any) -> Any:
        self._call()
        return SimpleNamespace(tasks=[], next=None)

    def pause(self) -> None:
        self._call()
        self.paused = True

    def resume(self) -> None:
        self._call()
        self.paused = False

    def cancel(self, task_id: str) -> str:
        self._call()
        return "cancelled"

    def retry_dead(self, task_id: str) -> Any:
        self._call()
        return SimpleNamespace(state="ready")


@dataclass
class Served:
    queue: StubQueue
    dash: Dashboard
    port: int
    token: str


@pytest.fixture
def served() -> Iterator[Served]:
    queue = StubQueue()
    dash = serve(queue, port=0)  # type: ignore[arg-type]
    token = dash.server.RequestHandlerClass.token  # type: ignore[attr-defined]
    try:
        yield Served(queue, dash, dash.server.server_address[1], token)
    finally:
        queue.release.set()
        dash.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(port: int, raw: bytes, timeout: float = 10.0) -> Reply:
    """Send ``raw`` bytes as one request; read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    if not reply:
        raise ConnectionError("the server closed the connection without an answer")
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    return Reply(int(status_line.split()[1]), headers, body)


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            *, raw_headers: bytes = b"") -> Reply:
    head = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    text = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return send(port, text.encode("latin-1") + raw_headers + b"\r\n")


def test_a_non_ascii_token_is_refused_not_dropped(served: Served) -> None:
    reply = request(served.port, "POST", "/api/pause",
                    raw_headers="X-RQ-Token: jeton-é-☃\r\n".encode())
    assert reply.status == 403 and "token" in reply.json()["error"]
    assert not served.queue.paused


def test_the_right_token_acts(served: Served) -> None:
    reply = request(served.port, "POST", "/api/pause", {"X-RQ-Token": served.token})
    assert reply.status == 200 and served.queue.paused


@pytest.mark.parametrize("origin", [
    "http://evil.com//127.0.0.1:{port}",
    "http://evil.com/?x=//127.0.0.1:{port}",
    "http://evil.com#//127.0.0.1:{port}",
    "http://127.0.0.1:{port}@evil.com",
    "http://user@127.0.0.1:{port}",
    "https://127.0.0.1:{port}",
    "http://127.0.0.1:{other}",
    "http://127.0.0.1",
    "http://127.0.0.1:{port}.evil.com",
    "http://127.0.0.1:{port}/",
    "null",
    "",
])
def test_a_foreign_origin_is_refused_even_with_the_token(served: Served, origin: str) -> None:
    origin = origin.format(port=served.port, other=served.port + 1)
    reply = request(served.port, "POST", "/api/pause",
                    {"X-RQ-Token": served.token, "Origin": origin})
    assert reply.status == 403, origin
    assert not served.queue.paused


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_dashboards_own_origin_is_accepted(served: Served, host: str) -> None:
    reply = request(served.port, "POST", "/api/pause",
                    {"X-RQ-Token": served.token, "Origin": f"http://{host}:{served.port}"})
    assert reply.status == 200 and served.queue.paused


def _no_framing(reply: Reply) -> bool:
    return (reply.headers.get("x-frame-options") == "DENY"
            and "frame-ancestors 'none'" in reply.headers.get("content-security-policy", ""))


def test_every_answer_forbids_framing(served: Served) -> None:
    port = served.port
    answers = [request(port, "GET", "/"), request(port, "GET", "/api/snapshot"),
               request(port, "GET", "/nope"), request(port, "POST", "/api/pause"),
               request(port, "GET", "/", {"Host": "evil.example"}),
               request(port, "PUT", "/"), send(port, b"garbage\r\n\r\n")]
    assert [a.status for a in answers] == [200, 200, 404, 403, 403, 405, 400]
    assert all(_no_framing(a) for a in answers)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
def test_other_methods_get_a_json_405(served: Served, method: str) -> None:
    reply = request(served.port, method, "/api/pause", {"X-RQ-Token": served.token})
    assert reply.status == 405
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["allow"] == "GET, POST"
    assert method in reply.json()["error"]
    assert not served.queue.paused


def test_head_gets_a_405_without_a_body(served: Served) -> None:
    reply = request(served.port, "HEAD", "/")
    assert reply.status == 405 and reply.body == b"" and _no_framing(reply)


def _timed(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[Reply, float]:
    began = time.monotonic()
    reply = request(port, method, path, headers)
    return reply, time.monotonic() - began


def test_a_hanging_queue_gets_503_within_3_s_and_threads_stay_bounded(
        served: Served) -> None:
    served.queue.mode = "hang"
    token = {"X-RQ-Token": served.token}
    asks = [("GET", "/api/snapshot", {}), ("POST", "/api/pause", token),
            ("POST", "/api/tasks/a/cancel", token)] * 3
    # All at once, more requests than call threads: none waits for the others.
    with ThreadPoolExecutor(len(asks)) as pool:
        answers = list(pool.map(lambda ask: _timed(served.port, *ask), asks))
    for (method, path, _), (reply, took) in zip(asks, answers, strict=True):
        assert reply.status == 503 and "error" in reply.json(), (method, path)
        assert took < ANSWER_BOUND_S, (method, path, took)
    calls = [t for t in threading.enumerate() if t.name == "rayqueue-dashboard-call"]
    assert len(calls) <= CALL_THREADS
    assert request(served.port, "GET", "/").status == 200  # the page itself still loads


def test_a_full_disk_is_in_the_snapshot_and_the_page_shows_it(served: Served) -> None:
    reply = request(served.port, "GET", "/api/snapshot")
    assert reply.status == 200
    assert reply.json()["storage_full"] is False and reply.json()["journal_failing"] is False
    served.queue.storage_full = True
    snap = request(served.port, "GET", "/api/snapshot").json()
    assert snap["storage_full"] is True and snap["journal_failing"] is True
    page = request(served.port, "GET", "/").body.decode()
    # The page has a banner that its render() fills from these two fields.
    assert 'id="journal"' in page and "snap.storage_full" in page
    assert "snap.journal_failing" in page


def test_a_gone_queue_is_503(served: Served) -> None:
    served.queue.mode = "gone"
    reply = request(served.port, "GET", "/api/snapshot")
    assert reply.status == 503 and "unreachable" in reply.json()["error"]


def test_idle_connections_do_not_hold_a_thread_each(served: Served) -> None:
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", served.port), timeout=10)
            for _ in range(300)]
    try:
        # The accept loop takes connections in order: once this one is answered, all
        # 300 idle ones were accepted before it.
        reply = request(served.port, "GET", "/")
        assert reply.status in (200, 503)
        assert threading.active_count() - before <= HANDLER_THREADS + 1
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 15  # the handlers see the closed connections
    while request(served.port, "GET", "/").status != 200:
        assert time.monotonic() < deadline, "the dashboard stayed busy"


@pytest.mark.parametrize("port", [-1, 65536, 99999, True, "8400"])
def test_serve_refuses_a_port_out_of_range(port: object) -> None:
    with pytest.raises(InvalidArgumentError, match="port"):
        serve(StubQueue(), port=port)  # type: ignore[arg-type]


def test_an_explicit_http_0_9_request_gets_a_status_line_and_the_headers(
        served: Served) -> None:
    """Found by the generated suite (tests/integration/test_hostile_http.py): the
    standard library answered ``GET / HTTP/0.9`` with a bare body, no status line, no
    X-Frame-Options or CSP, its errors included."""
    port = served.port
    host = f"Host: 127.0.0.1:{port}\r\n"
    page = send(port, f"GET / HTTP/0.9\r\n{host}\r\n".encode())
    assert page.status == 200 and _no_framing(page)
    junk = "".join(f"X-Junk-{i}: j\r\n" for i in range(150))
    refused = send(port, f"GET / HTTP/0.9\r\n{host}{junk}\r\n".encode())
    assert refused.status == 431 and _no_framing(refused)
    assert "error" in refused.json()
