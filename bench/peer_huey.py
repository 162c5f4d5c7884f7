"""The Huey side of the realistic family: the same body (one RPUSH), its normal API."""

from __future__ import annotations

import os
import time

from huey import RedisHuey

from bench.tasks import redis_client

PORT = int(os.environ.get("BENCH_REDIS_PORT", "6379"))
huey = RedisHuey("rq-bench", host="127.0.0.1", port=PORT)


@huey.task()
def push(key: str, ms: float = 0.0) -> None:
    if ms:
        time.sleep(ms / 1000)
    redis_client(PORT).rpush(key, b"1")
