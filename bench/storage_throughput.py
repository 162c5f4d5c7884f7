"""How many tasks a second a QueueCore journals to SQLite, by durability and batch size.

Run with ``python -m bench.storage_throughput [SECONDS]`` (time spent per figure, default
1). Each figure uses a fresh journal in a temp dir: ``enqueue/s`` counts enqueues
(one commit per batch); ``cycle/s`` counts tasks taken through enqueue, claim and ack
(three commits per batch). Prints figures; asserts nothing.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from rayqueue import NewTask, QueueCore
from rayqueue.storage import SQLiteStorage

Durability = Literal["full", "process"]


def _rate(durability: Durability, batch: int, seconds: float,
          step: Callable[[QueueCore, list[NewTask]], None]) -> float:
    """Tasks per second that ``step`` moves, batch after batch, for about ``seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = SQLiteStorage(Path(tmp) / "journal.sqlite", durability=durability)
        core = QueueCore(storage=storage)
        done = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            step(core, [NewTask("bench", f'{{"i":{done + i}}}', 50) for i in range(batch)])
            done += batch
        storage.close()
    return done / elapsed


def _enqueue(core: QueueCore, news: list[NewTask]) -> None:
    core.enqueue_many(news, 0.0)


def _cycle(core: QueueCore, news: list[NewTask]) -> None:
    core.enqueue_many(news, 0.0)
    leases = core.claim("w", len(news), 0.0)
    core.ack_many([(lease.task_id, lease.token, "null") for lease in leases], 0.0)


def main(seconds: float = 1.0) -> None:
    """Print enqueues/s and full cycles/s for each durability and batch size."""
    print(f"{'durability':<12}{'batch':>7}{'enqueue/s':>12}{'cycle/s':>12}")
    for durability in ("full", "process"):
        for batch in (1, 1000):
            enqueues = _rate(durability, batch, seconds, _enqueue)
            cycles = _rate(durability, batch, seconds, _cycle)
            print(f"{durability:<12}{batch:>7}{enqueues:>12,.0f}{cycles:>12,.0f}")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
