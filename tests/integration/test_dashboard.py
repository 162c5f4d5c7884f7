"""The web dashboard in a real headless Chromium: live numbers, an action, a screenshot.

Needs Debian's chromium (``.ci/run`` installs it) and the playwright package (dev
dependency; its own browser download is never used).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

import rayqueue
from rayqueue import PoolConfig, dashboard, testing
from rayqueue.dashboard import serve
from tests.integration.probe_tasks import Probe
from tests.ray_fixtures import wait_for

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DASHBOARD_HTML = Path(dashboard.__file__).with_name("static") / "dashboard.html"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _missing("Debian's chromium is not installed (apt-get install chromium); "
                    ".ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def test_dashboard_shows_live_numbers_and_acts(make_queue: MakeQueue, browser: Any) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=2, concurrency=4)])
    dead = q.enqueue(Probe(fail_times=9))
    wait_for(lambda: q.get(dead.id).state == "dead", what="a dead letter")
    dash = serve(q, port=0)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda dialog: dialog.accept())  # every action asks first
        page.goto(dash.url)
        page.wait_for_selector("#state.live")
        page.wait_for_selector(f"button.retry[data-id='{dead.id}']")
        assert "RuntimeError" in page.inner_text("#dead")
        # Failures come from the metrics actor, which gets events every 0.5 s: the
        # page may show them one refresh after the dead letter.
        page.wait_for_function(
            "document.querySelector('#failures').innerText.includes('planned failure')")

        # The task browser: find a task that failed once, then succeeded, by the start
        # of its id; open it and see both attempts, the error and the payload.
        flaky = q.enqueue(Probe(value=7, fail_times=1))
        wait_for(lambda: q.get(flaky.id).state == "succeeded", what="the flaky task")
        page.fill("#q-id", flaky.id[:12])
        page.click("#find")
        page.click(f"button.open[data-id='{flaky.id}']")
        page.wait_for_selector("#task.on #task-attempts tr[data-outcome='succeeded']")
        assert page.locator("#task-attempts tbody tr").count() == 2
        assert "planned failure on attempt 1" in page.inner_text(
            "#task-attempts tr[data-outcome='failed']")
        assert '"value": 7' in page.inner_text("#task-payload")
        assert page.inner_text("#task-outcome") == "7"
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#task").screenshot(path=str(ARTIFACTS / "dashboard-task.png"))
        page.click("#task button")  # Close

        # Live numbers: the succeeded total on the page follows tasks as they finish.
        before = int(page.inner_text("#total-succeeded b"))
        q.results(q.enqueue_many([Probe(value=i, sleep_s=0.01) for i in range(200)]),
                  timeout=60)
        page.wait_for_function(
            f"Number(document.querySelector('#total-succeeded b').textContent) >= {before + 200}")
        assert "busy" in page.inner_text("#workers") or "idle" in page.inner_text("#workers")

        # An action: retry the dead task from its row; it leaves the dead letters.
        page.click(f"button.retry[data-id='{dead.id}']")
        page.wait_for_selector("#toast", state="visible")
        wait_for(lambda: q.get(dead.id).state != "dead", what="the retried task")
        page.wait_for_function(
            f"!document.querySelector(\"button.retry[data-id='{dead.id}']\")")

        # A busy queue for the screenshot: a backlog in three priorities, a chart with
        # a few seconds of history, a failure to list.
        q.enqueue(Probe(fail_times=9))
        seen = page.evaluate("samples.length")
        backlog = [q.enqueue_many([Probe(value=i, sleep_s=0.02) for i in range(400)],
                                  priority=prio) for prio in (25, 50, 75)]
        page.wait_for_function(f"samples.length >= {seen + 3} && "
                               "document.querySelector('#ready tbody tr') && "
                               "document.querySelector('#workers td.busy')")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # Pause and resume from the header.
        page.click("#pause")
        page.wait_for_selector("#state.paused")
        assert q.stats().paused
        page.click("#resume")
        page.wait_for_selector("#state.live")
        assert not q.stats().paused
        q.results([h for part in backlog for h in part], timeout=120)
    finally:
        dash.stop()


def test_the_page_says_cluster_unreachable_within_3_s(browser: Any) -> None:
    """Issue 16, item 9: a queue that stops answering shows as a banner (no Ray here:
    the queue is a stub that hangs on demand). Within 3 s by construction: the page asks
    every second, and a call fails after the server's CALL_TIMEOUT_S (2 s, a 503) or the
    page's own 2.5 s deadline, whichever comes first."""
    from tests.unit.test_dashboard import StubQueue

    assert dashboard.CALL_TIMEOUT_S <= 2.0
    assert "async function getJSON(url, ms = 2500)" in DASHBOARD_HTML.read_text()

    stub = StubQueue()
    dash = serve(stub, port=0)  # type: ignore[arg-type]
    try:
        page = browser.new_page()
        page.goto(dash.url)
        page.wait_for_selector("#state.live")
        assert not page.is_visible("#unreachable")
        stub.mode = "hang"
        # The 3 s bound holds by construction (checked below), not by a clock
        # here: a loaded machine may render late. This wait is a hang guard.
        page.wait_for_selector("#unreachable.on", timeout=30_000)
        assert "Cluster unreachable" in page.inner_text("#unreachable")
        stub.mode = "ok"
        stub.release.set()  # the hung calls end: their threads are free again
        page.wait_for_selector("#unreachable:not(.on)", state="attached")
        page.wait_for_selector("#state.live")
    finally:
        stub.release.set()
        dash.stop()


def test_actions_need_the_pages_token(make_queue: MakeQueue) -> None:
    q = make_queue()
    dash = serve(q, port=0)
    try:
        request = urllib.request.Request(dash.url + "api/pause", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        assert not q.stats().paused
        with urllib.request.urlopen(dash.url + "api/snapshot", timeout=10) as reply:
            snap = json.loads(reply.read())
        assert snap["queue"] == q.name and "by_state" in snap
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(dash.url + "nope", timeout=10)
        assert missing.value.code == 404
        # DNS rebinding: a page of another site reaches 127.0.0.1 under its own name.
        rebound = urllib.request.Request(dash.url + "api/snapshot",
                                         headers={"Host": "evil.example:80"})
        with pytest.raises(urllib.error.HTTPError) as foreign:
            urllib.request.urlopen(rebound, timeout=10)
        assert foreign.value.code == 403
        # Ids are URL-decoded: schedule runs are named <schedule>@<ms>.
        q.pause()
        odd = q.enqueue(Probe(value=1), task_id="nightly@1795000000000")
        token = dash.server.RequestHandlerClass.token  # type: ignore[attr-defined]
        cancel = urllib.request.Request(
            dash.url + "api/tasks/nightly%401795000000000/cancel", method="POST",
            headers={"X-RQ-Token": token})
        with urllib.request.urlopen(cancel, timeout=10) as reply:
            assert "cancelled" in json.loads(reply.read())["message"]
        assert q.get(odd.id).state == "cancelled"
    finally:
        dash.stop()


def test_a_gone_queue_answers_503_within_3_s(make_queue: MakeQueue) -> None:
    """Issue 14, item 12: with the queue actor gone, each poll took ~30 s on a thread."""
    q = make_queue()  # in memory: a killed queue actor stays dead
    dash = serve(q, port=0)
    try:
        ray.kill(testing.actors(q).queue, no_restart=True)
        token = dash.server.RequestHandlerClass.token  # type: ignore[attr-defined]
        for request in (urllib.request.Request(dash.url + "api/snapshot"),
                        urllib.request.Request(dash.url + "api/pause", method="POST",
                                               headers={"X-RQ-Token": token})):
            began = time.monotonic()
            with pytest.raises(urllib.error.HTTPError) as gone:
                urllib.request.urlopen(request, timeout=30)
            assert gone.value.code == 503, request.full_url
            assert "error" in json.loads(gone.value.read())
            assert time.monotonic() - began < 3.0, request.full_url
    finally:
        dash.stop()


def _missing(reason: str) -> None:
    """Skip where the real part is absent (tests/skips.py fails it in CI)."""
    pytest.skip(reason)
