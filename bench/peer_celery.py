"""The Celery side of the realistic family: the same body (one RPUSH), its normal API."""

from __future__ import annotations

import os
import time

from celery import Celery

from bench.tasks import redis_client

PORT = int(os.environ.get("BENCH_REDIS_PORT", "6379"))
app = Celery("rqbench", broker=f"redis://127.0.0.1:{PORT}/1")
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)


@app.task
def push(key: str, ms: float = 0.0) -> None:
    if ms:
        time.sleep(ms / 1000)
    redis_client(PORT).rpush(key, b"1")
