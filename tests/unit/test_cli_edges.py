"""The command line's errors: one line on stderr and the documented exit code (issue 14,
item 11). ``rayqueue.connect`` is replaced by a stub, so no test reaches a Ray cluster
(``--address`` is the exception: a process of its own, where Ray refuses the address
before connecting)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import rayqueue
from rayqueue.cli import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, main
from rayqueue.errors import RayQueueError


class StubQueue:
    name = "stub"
    shards = 1

    def __init__(self) -> None:
        self.calls: list[str] = []

    def stats(self) -> Any:
        raise RayQueueError("first line\nsecond line [/bold] [red]not markup[/red]")

    def dead_letters(self, limit: int) -> list[Any]:
        self.calls.append(f"dead_letters({limit})")
        return []

    def resize_pool(self, name: str, low: int, high: int) -> None:
        self.calls.append(f"resize_pool({name}, {low}, {high})")

    def pools(self) -> list[Any]:
        return [SimpleNamespace(name="default", workers=0, min_workers=0, max_workers=4,
                                desired=0, ready=0, leased=0, deaths=0, infeasible=None)]


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubQueue]:
    queue = StubQueue()
    monkeypatch.setattr(rayqueue, "connect", lambda *args, **kwargs: queue)
    yield queue


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The exit code and stderr of ``rayqueue *argv``; stderr must be one line."""
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else EXIT_FAILED
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("port", ["-1", "0", "65536", "99999", "abc", "1e3"])
def test_dashboard_port_out_of_range_is_usage(capsys: pytest.CaptureFixture[str],
                                              stub: StubQueue, port: str) -> None:
    code, err = run(capsys, "dashboard", "--port", port)
    assert code == EXIT_USAGE and "port" in err


def test_dashboard_on_an_unknown_host_is_one_line(capsys: pytest.CaptureFixture[str],
                                                  stub: StubQueue) -> None:
    code, err = run(capsys, "dashboard", "--host", "bogus.invalid", "--port", "8400")
    assert code == EXIT_FAILED and "bogus.invalid" in err


def test_dashboard_on_a_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str],
                                                stub: StubQueue) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, err = run(capsys, "dashboard", "--port", port)
    assert code == EXIT_FAILED and port in err


def test_an_address_ray_cannot_use_is_exit_3() -> None:
    # Its own process, as a user runs it: in this one, a Ray that another test started
    # would be used whatever --address says (ray.init is skipped once initialised).
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "rayqueue.cli", "--address",
                           "not an address", "status"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == EXIT_UNAVAILABLE and "not an address" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback


@pytest.mark.parametrize("bounds", [("abc", "2"), ("0", "x"), ("0", str(10**30)),
                                    ("-1", "2"), ("3", "1"), ("0", "0")])
def test_pool_resize_bounds_are_checked_before_connecting(
        capsys: pytest.CaptureFixture[str], stub: StubQueue, bounds: tuple[str, str]) -> None:
    code, err = run(capsys, "pools", "--resize", "default", *bounds)
    assert code == EXIT_USAGE and "--resize" in err
    assert stub.calls == []


def test_a_good_resize_goes_through(capsys: pytest.CaptureFixture[str],
                                    stub: StubQueue) -> None:
    assert main(["pools", "--resize", "default", "0", "3"]) == 0
    assert stub.calls == ["resize_pool(default, 0, 3)"]


@pytest.mark.parametrize("limit", ["-1", str(10**30), "nan", "x"])
def test_dead_limit_is_a_bounded_count(capsys: pytest.CaptureFixture[str], stub: StubQueue,
                                       limit: str) -> None:
    code, err = run(capsys, "dead", "--limit", limit)
    assert code == EXIT_USAGE and "--limit" in err
    assert stub.calls == []


@pytest.mark.parametrize("option", ["--delay", "--wait"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1e400"])
def test_enqueue_seconds_are_finite_and_not_negative(
        capsys: pytest.CaptureFixture[str], stub: StubQueue, option: str, value: str) -> None:
    code, err = run(capsys, "enqueue", "t", "{}", option, value)
    assert code == EXIT_USAGE and option in err


def test_a_payload_nested_2000_deep_is_one_line(capsys: pytest.CaptureFixture[str],
                                                stub: StubQueue) -> None:
    payload = json.dumps({"x": 1})
    for _ in range(2000):
        payload = f'{{"x": {payload}}}'
    code, err = run(capsys, "enqueue", "some.task", payload)
    assert code == EXIT_USAGE and "nested" in err


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "x" * 65])
def test_a_bad_queue_name_is_usage(capsys: pytest.CaptureFixture[str], stub: StubQueue,
                                   name: str) -> None:
    code, err = run(capsys, "-q", name, "status")
    assert code == EXIT_USAGE and "queue name" in err


def test_library_errors_are_one_literal_line(capsys: pytest.CaptureFixture[str],
                                             stub: StubQueue) -> None:
    code, err = run(capsys, "status")
    assert code == EXIT_FAILED
    assert "first line second line [/bold] [red]not markup[/red]" in err


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "frobnicate")
    assert code == EXIT_USAGE and "frobnicate" in err
