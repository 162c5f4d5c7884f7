"""What Ray's own messages cost on this machine: the floor under rayqueue's idle latency.

    python -m bench.ray_floor [--n 300]

rayqueue's idle path crosses four actor messages: enqueue (producer to queue actor),
the reply to a waiting claim (queue actor to worker), the outcome (worker to queue
actor, riding on its next claim) and the reply to a waiting ``result()`` (queue actor
to producer). This measures the same kinds of message with nothing of rayqueue around
them, on a private local Ray, so the latency figures can be read against them: medians,
in milliseconds, one-way legs timed with ``time.monotonic()`` (one clock for every
process on Linux). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import ray


class _Receiver:
    """An async actor, as the queue actor is."""

    def __init__(self) -> None:
        self._parked: asyncio.Future[None] | None = None

    async def call(self, blob: bytes = b"") -> float:
        return time.monotonic()

    async def park(self) -> float:
        """A call that waits (a long-poll claim, a ``result()``) until ``fire``."""
        self._parked = asyncio.get_running_loop().create_future()
        await self._parked
        return time.monotonic()

    async def fire(self) -> float:
        assert self._parked is not None
        self._parked.set_result(None)
        return time.monotonic()


class _Caller:
    """An async actor calling another, as a worker calls the queue actor."""

    async def calls(self, to: Any, n: int) -> list[tuple[float, float]]:
        out = []
        for _ in range(n):
            t0 = time.monotonic()
            there = await to.call.remote(b"x" * 300)
            out.append((there - t0, time.monotonic() - t0))
        return out

    async def parked(self, to: Any, n: int) -> list[float]:
        out = []
        for _ in range(n):
            ref = to.park.remote()
            await asyncio.sleep(0.02)  # the call is parked by then
            await to.fire.remote()
            resumed = await ref
            out.append(time.monotonic() - resumed)
        return out


Receiver: Any = ray.remote(_Receiver)
Caller: Any = ray.remote(_Caller)


def _ms(values: list[float]) -> str:
    return f"{1e3 * statistics.median(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    n = parser.parse_args().n
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             _system_config={"enable_worker_prestart": False})
    try:
        receiver = Receiver.options(max_concurrency=1_000).remote()
        caller = Caller.remote()
        ray.get(receiver.call.remote())
        ray.get(caller.calls.remote(receiver, 20))
        legs = []
        for _ in range(n):
            t0 = time.monotonic()
            there = ray.get(receiver.call.remote(b"x" * 300))
            legs.append((there - t0, time.monotonic() - t0))
        print(f"driver -> async actor: one way {_ms([a for a, _ in legs])} ms, "
              f"round trip {_ms([b for _, b in legs])} ms")
        legs = ray.get(caller.calls.remote(receiver, n))
        print(f"async actor -> async actor: one way {_ms([a for a, _ in legs])} ms, "
              f"round trip {_ms([b for _, b in legs])} ms")
        back = []
        for _ in range(max(20, n // 3)):
            ref = receiver.park.remote()
            time.sleep(0.02)  # the call is parked by then
            ray.get(receiver.fire.remote())
            resumed = ray.get(ref)
            back.append(time.monotonic() - resumed)
        print(f"reply to a parked call, to a blocked driver: {_ms(back)} ms")
        back = ray.get(caller.parked.remote(receiver, max(20, n // 3)))
        print(f"reply to a parked call, to an async actor: {_ms(back)} ms")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
