"""A queue whose journal lost its main file refuses to start, and leaves the rest alone."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

import rayqueue
from rayqueue import testing
from rayqueue.config import NAMESPACE, actor_name
from tests.integration.probe_tasks import Manual
from tests.ray_fixtures import wait_for


def _gone(name: str) -> bool:
    try:
        ray.get_actor(actor_name(name, "queue"), namespace=NAMESPACE)
    except ValueError:
        return True
    return False


def test_a_journal_without_its_main_file_is_refused_untouched(
        ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    name = f"t-{uuid.uuid4().hex[:8]}"
    queue = rayqueue.init(name, journal=str(path))
    queue.enqueue_many([Manual(name=f"n{i}") for i in range(200)])  # no worker takes them
    assert queue.stats().size == 200
    # The queue dies without a clean shutdown (which would fold the log into the file).
    handles = testing.actors(queue)
    for actor in (handles.pool, *handles.shards):
        ray.kill(actor, no_restart=True)
    wait_for(lambda: _gone(name), what="the queue actor to go")
    path.unlink()
    wal = Path(f"{path}-wal")
    before = wal.read_bytes(), wal.stat().st_mtime_ns
    assert len(before[0]) > 0  # the log still holds the acknowledged tasks
    with pytest.raises(rayqueue.JournalCorruptError, match="main file is missing") as info:
        rayqueue.init(name, journal=str(path))
    assert isinstance(info.value, rayqueue.StorageError)
    assert info.value.path == str(path)
    assert (wal.read_bytes(), wal.stat().st_mtime_ns) == before
    assert not path.exists()


def test_a_full_disk_is_logged_once_per_episode_and_shown_in_stats(
        make_queue: Any, tmp_path: Path) -> None:
    log = tmp_path / "queue.log"
    queue = make_queue(queue_env={"RAYQUEUE_STORAGE_FAULTS": "full=1.0,seed=1",
                                  "RAYQUEUE_LOG_FILE": str(log), "RAYQUEUE_LOG_JSON": "1"})
    for i in range(40):  # each enqueue is one failed commit
        with pytest.raises(rayqueue.StorageFullError):
            queue.enqueue(Manual(name=f"n{i}"), wait=True)
    stats = queue.stats()
    assert stats.storage_full and stats.journal_failing and stats.size == 0
    actions = [json.loads(line)["record"]["extra"].get("action")
               for line in log.read_text().splitlines()]
    assert actions.count("journal_commit_failed") == 1
    assert actions.count("journal_commit_failing") < 10  # reminders, not a line each


def test_a_freed_disk_shows_in_stats_without_a_call(make_queue: Any) -> None:
    """Three commits fail (disk full), then the journal takes writes again: with no
    call coming, stats clear within about a second (the queue probes its journal)."""
    queue = make_queue(queue_env={"RAYQUEUE_STORAGE_FAULTS": "full=1.0,max=3,seed=1"})
    with pytest.raises(rayqueue.StorageFullError):  # the fault happened
        queue.enqueue(Manual(name="n0"), wait=True)
    # Nothing calls from here on: the queue's own probes meet the other two faults,
    # then find the journal taking writes.
    wait_for(lambda: not queue.stats().storage_full, timeout=10.0,
             what="stats to see the space come back")
    assert not queue.stats().journal_failing
    assert queue.enqueue(Manual(name="after"), wait=True).id
