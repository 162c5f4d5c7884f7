"""Which cluster ``connect``, ``queues`` and the CLI attach to (issue 16, items 1 and 5),
without Ray: the search of this machine is replaced, and nothing is started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rayqueue import clusters
from rayqueue.cli import EXIT_UNAVAILABLE, main
from rayqueue.clusters import LocalCluster, resolve
from rayqueue.errors import AmbiguousClusterError, ClusterNotFoundError
from rayqueue.registry import redact

REPO = Path(__file__).resolve().parents[2]
RAYLET = ["/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet",
          "--raylet_socket_name=/tmp/x/sockets/raylet", "--gcs-address=10.0.0.5:6379",
          "--session_dir=/tmp/x/session_1"]


@pytest.fixture(autouse=True)
def no_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _here(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    monkeypatch.setattr(clusters, "local_clusters",
                        lambda: [LocalCluster(a, f"/tmp/{i}") for i, a in enumerate(addresses)])


def test_raylets_name_their_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    other = [*RAYLET[:2], "--gcs-address=10.0.0.6:6380"]
    monkeypatch.setattr(clusters, "_command_lines",
                        lambda: [["/usr/bin/python", "--gcs-address=1.2.3.4:1"], RAYLET,
                                 RAYLET, other, [], [" ".join(RAYLET)]])
    assert clusters.local_clusters() == [LocalCluster("10.0.0.5:6379", "/tmp/x/session_1"),
                                         LocalCluster("10.0.0.6:6380", None)]


def test_one_cluster_here_is_the_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _here(monkeypatch, "10.0.0.5:6379")
    assert resolve(None) == resolve("auto") == "10.0.0.5:6379"


def test_several_clusters_here_are_listed_not_guessed(monkeypatch: pytest.MonkeyPatch) -> None:
    _here(monkeypatch, "10.0.0.5:6379", "10.0.0.5:6380")
    with pytest.raises(AmbiguousClusterError) as err:
        resolve(None)
    assert err.value.addresses == ["10.0.0.5:6379", "10.0.0.5:6380"]
    assert "10.0.0.5:6380 (session /tmp/1)" in str(err.value) and "address=" in str(err.value)


def test_no_cluster_here_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _here(monkeypatch)
    with pytest.raises(ClusterNotFoundError, match="ray start --head") as err:
        resolve(None)
    assert err.value.address is None
    with pytest.raises(ClusterNotFoundError, match="connect attaches"):
        resolve("local")  # "start a new one" is init's business, never connect's


def test_an_address_or_ray_address_wins_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    _here(monkeypatch, "10.0.0.5:6379", "10.0.0.5:6380")  # several: no matter, it is chosen
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        up = f"127.0.0.1:{listening.getsockname()[1]}"
        down = f"127.0.0.1:{closed.getsockname()[1]}"
        assert resolve(up) == up
        monkeypatch.setenv("RAY_ADDRESS", up)
        assert resolve(None) == up
        with pytest.raises(ClusterNotFoundError, match="nothing accepts connections"):
            resolve(down)
    assert resolve("ray://head:10001") == "ray://head:10001"  # Ray's to judge


def test_the_cli_refuses_to_guess_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _here(monkeypatch, "10.0.0.5:6379", "10.0.0.5:6380")
    import ray

    # As a process not on Ray yet (under `make test` this one may be, for other tests).
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    for argv in (["-q", "imgs", "status"], ["ls"]):
        assert main(argv) == EXIT_UNAVAILABLE
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert "10.0.0.5:6379" in err and "10.0.0.5:6380" in err and "--address" in err


def test_help_imports_no_ray_pydantic_or_rich() -> None:
    code = ("import sys\nfrom rayqueue.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('ray', 'pydantic', 'rich') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(("journal", "shown"), [
    ("/data/q.sqlite", "/data/q.sqlite"),
    ("postgresql://rq:s3cret@db:5432/q", "postgresql://rq:***@db:5432/q"),
    ("host=db user=rq password=s3cret dbname=q", "host=db user=rq password=*** dbname=q"),
    (None, None),
])
def test_journals_are_listed_without_passwords(journal: str | None, shown: str | None) -> None:
    assert redact(journal) == shown
