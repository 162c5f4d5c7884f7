"""Hostile HTTP at the dashboard (issue 14, build 8): hypothesis writes raw requests on a
socket (methods, request targets, versions, Host, Origin, token, Content-Length and
bodies of every kind, oversized lines and header counts) to a dashboard serving a real
queue.

For each request: an answer comes (no hang; a read deadline), it is never a 5xx, every
4xx is JSON with an ``error``, a request refused changes nothing in the queue, and the
server then serves a good snapshot, and a good task enqueued after it runs with its
result. A slow client that never finishes its request is
cut off while others are served.

``RAYQUEUE_HOSTILE_EXAMPLES`` sets the examples per test (default 20; x4 here: 80
requests in a few seconds; 1,000 -> 4,000 requests in a few minutes)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rayqueue
from rayqueue import PoolConfig
from rayqueue.dashboard import REQUEST_TIMEOUT_S, Dashboard, serve
from tests.integration.probe_tasks import Manual, Probe

PER_TEST = int(os.environ.get("RAYQUEUE_HOSTILE_EXAMPLES", "20"))
EXAMPLES = settings(max_examples=4 * PER_TEST, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
#: How long a read may wait for the answer: a hang guard far above any honest answer.
READ_S = 3 * REQUEST_TIMEOUT_S
STATUSES: Counter[int] = Counter()
#: good tasks run after the hostile requests
GOOD = [0]


class Site:
    def __init__(self, q: rayqueue.TaskQueue[Any], dash: Dashboard) -> None:
        self.q = q
        self.dash = dash
        self.port = dash.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.token: str = dash.server.RequestHandlerClass.token  # type: ignore[attr-defined]
        self.resident = ""


@pytest.fixture(scope="module")
def site(ray_cluster: dict[str, Any],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    path = tmp_path_factory.mktemp("hostile-http") / "http.sqlite"
    q = rayqueue.init(f"hhttp-{uuid.uuid4().hex[:6]}", journal=str(path),
                      pools=[PoolConfig(min_workers=1, max_workers=1)])
    dash = serve(q, port=0)
    s = Site(q, dash)
    s.resident = q.enqueue(Manual(name="resident"), wait=True).id
    yield s
    print(f"\nhostile HTTP suite: {STATUSES.total()} requests, statuses "
          f"{dict(sorted(STATUSES.items()))}; {GOOD[0]} good tasks after them all done")
    dash.stop()
    q.shutdown(timeout=10)


def exchange(port: int, raw: bytes, read_s: float = READ_S) -> tuple[int, dict[str, str],
                                                                     bytes]:
    """Send ``raw``, read the whole answer (the server closes: Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_s) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before taking it all (a 431)
        end = time.monotonic() + read_s
        data = b""
        while time.monotonic() < end:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break  # (after its answer: it closed with our bytes unread)
            if not chunk:
                break
            data += chunk
        else:
            raise AssertionError(f"no end of answer within {read_s} s")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), f"not an HTTP answer: {data[:300]!r}"
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, body


def good_snapshot(site: Site) -> dict[str, Any]:
    raw = f"GET /api/snapshot HTTP/1.1\r\nHost: {site.host}\r\nConnection: close\r\n\r\n"
    status, _, body = exchange(site.port, raw.encode())
    assert status == 200, body[:300]
    snap: dict[str, Any] = json.loads(body)
    assert snap["queue"] == site.q.name
    return snap


methods = st.one_of(st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS",
                                     "TRACE", "PATCH", "CONNECT", "get", "G\x00T", "",
                                     "GET GET", "M" * 5000]),
                    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                            min_size=1, max_size=10))
ids = st.one_of(st.sampled_from(["x", "%00", "%ff%fe", "%2e%2e%2f%2e%2e", "..", "%ud800",
                                 "a%40b", "%", "%%", "nightly@1", "%0d%0aSet-Cookie:x"]),
                st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                        max_size=30))
targets = st.one_of(
    st.sampled_from(["/", "/index.html", "/api/snapshot", "/api/pause", "/api/resume",
                     "*", "", "//", "/api//snapshot", "/api/snapshot?x=%zz&&=", "/?" + "q" * 5000,
                     "http://evil.example/api/pause", "/api/snapshot#frag", "/%2e%2e/%2e%2e",
                     "/api/tasks//cancel", "/api/tasks/a/b/cancel", "/\x00", "/\x7f",
                     "/" + "a" * 70_000]),
    st.builds(lambda i, a: f"/api/tasks/{i}/{a}", ids,
              st.sampled_from(["cancel", "retry", "nuke", ""])),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=255), max_size=40))
#: the task browser's listing, each filter often hostile (raw or %-encoded)
query_values = st.one_of(
    ids, st.sampled_from(["ready", "dead", "bogus", "-1", "101", "1e3", "9" * 5000, "nan",
                          "%E2%98%83", "%00", "a&b", "=", "", "0x10"]))
listings = st.builds(
    lambda pairs: "/api/tasks?" + "&".join(f"{k}={v}" for k, v in pairs),
    st.lists(st.tuples(st.sampled_from(["state", "type", "priority", "id", "after", "limit",
                                        "x", ""]), query_values), max_size=4))
versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1x",
                            "http/1.1", "HTTP/1.1 extra", "HTTP/9999999999999999999.1"])


def hosts(site: Site) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.sampled_from([
        site.host, f"localhost:{site.port}", f"[::1]:{site.port}", "127.0.0.1",
        f"evil.example:{site.port}", f"127.0.0.1:{site.port}.evil", "", " " + site.host,
        f"127.0.0.1:{site.port}\x00", "h" * 70_000, f"127.0.0.1:{site.port + 1}"]))


def origins(site: Site) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.sampled_from([
        f"http://{site.host}", f"http://evil.com//{site.host}", f"https://{site.host}",
        "null", "", f"http://{site.host}/", f"http://user@{site.host}",
        f"http://127.0.0.1:{site.port}99", "http://[::1", f"http://{site.host}:1",
        "http://127.0.0.1:99999"]))


@EXAMPLES
@given(data=st.data())
def test_any_request_gets_an_answer_never_a_5xx(site: Site, data: st.DataObject) -> None:
    # Each part is often right, so that many requests get past the first check.
    method = data.draw(st.sampled_from(["GET", "POST"]) | methods, label="method")
    target = data.draw(st.sampled_from(["/api/snapshot", "/api/pause", "/api/resume",
                                        "/api/tasks/x/cancel"]) | listings | targets,
                       label="target")
    version = data.draw(st.just("HTTP/1.1") | versions, label="version")
    headers: list[tuple[str, str]] = []
    host = data.draw(st.just(site.host) | hosts(site), label="host")
    if host is not None:
        headers.append(("Host", host))
    origin = data.draw(origins(site), label="origin")
    if origin is not None:
        headers.append(("Origin", origin))
    token = data.draw(st.one_of(st.just(site.token), st.none(), st.sampled_from(
        ["", "wrong", site.token + "x", site.token.upper(), "tøken", "\u2603" * 9, "t" * 9000])),
        label="token")
    if token is not None:
        headers.append(("X-RQ-Token", token))
    body = data.draw(st.one_of(st.just(b""), st.binary(max_size=64), st.sampled_from(
        [b"{", b"null", b'{"id": "\xff"}', b"[" * 5000, b'{"a": NaN}', b"\x00" * 64])),
        label="body")
    length = data.draw(st.one_of(st.none(), st.just(str(len(body))), st.sampled_from(
        ["-1", "abc", "99999999999999999999", "1e3", "", str(len(body) + 10)])),
        label="content-length")
    if length is not None:
        headers.append(("Content-Length", length))
    extra = data.draw(st.sampled_from([0, 0, 3, 150]), label="extra headers")
    headers += [(f"X-Junk-{i}", "j" * 10) for i in range(extra)]
    headers.append(("Connection", "close"))
    request_line = " ".join(p for p in (method, target, version) if p)
    raw = (request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n")
    wire = raw.encode("utf-8", "surrogateescape") + body

    before = site.q.stats()
    status, answer_headers, answer = exchange(site.port, wire)
    STATUSES[status] += 1
    # 505 is the one answer of the 5xx kind a request can earn: a version not spoken.
    assert status < 500 or status == 505, (status, answer[:300], wire[:300])
    if status >= 400 and method != "HEAD":  # (an answer to HEAD has no body)
        assert answer_headers.get("content-type") == "application/json", answer_headers
        assert "error" in json.loads(answer), answer[:300]
    if status >= 400 or method == "GET":
        assert site.q.stats() == before, (status, wire[:300])
    else:
        if site.q.stats().paused:  # a valid POST of the token holder: undo it
            site.q.resume()
    assert site.q.get(site.resident).state == "ready"  # (a cancel of it is refused: 200
    good_snapshot(site)  # must not happen without the token, and ids here are others)
    # The queue still works: a good task enqueued after it runs, with its result.
    GOOD[0] += 1
    assert site.q.enqueue(Probe(value=GOOD[0])).result(timeout=30) == GOOD[0]


def test_a_slow_client_is_cut_off_and_others_are_served(site: Site) -> None:
    """Slowloris: connections that send part of a request and stall are closed after
    REQUEST_TIMEOUT_S; while they hang, good requests are answered at once."""
    slow = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", site.port), timeout=READ_S)
        sock.sendall(f"GET /api/snapshot HTTP/1.1\r\nHost: {site.host}\r\nX-Slow: ".encode())
        slow.append(sock)
    try:
        good_snapshot(site)  # not held up by the stalled ones
        closed = threading.Event()

        def wait_closed() -> None:
            for sock in slow:
                try:
                    data = sock.recv(65536)  # a 408 answer or EOF: either way cut off
                    while data:
                        data = sock.recv(65536)
                except ConnectionResetError:
                    pass
            closed.set()

        reader = threading.Thread(target=wait_closed, daemon=True)
        reader.start()
        assert closed.wait(READ_S), "a stalled connection was never cut off"
    finally:
        for sock in slow:
            sock.close()
    good_snapshot(site)


def test_more_idle_connections_than_handlers_get_a_503_not_a_thread(site: Site) -> None:
    from rayqueue.dashboard import HANDLER_THREADS

    idle = [socket.create_connection(("127.0.0.1", site.port), timeout=READ_S)
            for _ in range(HANDLER_THREADS + 4)]
    try:
        # The ones past the handlers are answered 503 at once, as JSON, and closed.
        extra = idle[-1]
        data = b""
        while chunk := extra.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.0 503"), data[:200]
        assert "error" in json.loads(data.partition(b"\r\n\r\n")[2])
    finally:
        for sock in idle:
            sock.close()
    # Once the idle ones are gone, the server answers again.
    deadline = time.monotonic() + READ_S
    while True:
        try:
            good_snapshot(site)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
