"""Checked by mypy (not run): a function task's arguments are checked against the
function's signature, and its result type flows into the handle. A wrong call carries
a ``type: ignore`` for the error mypy must report (strict mode flags an unused one, so
if mypy stopped rejecting it, this file would fail)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from typing_extensions import assert_type

import rayqueue
from rayqueue import Task, TaskHandle, function_task


class Thumbnail(BaseModel):
    url: str
    width: int


@function_task(name="typing.resize")
def resize(url: str, width: int = 200) -> Thumbnail:
    return Thumbnail(url=url, width=width)


@function_task
async def count(words: list[str]) -> int:
    return len(words)


def calls(queue: rayqueue.TaskQueue[Any]) -> None:
    assert_type(resize.enqueue(queue, url="http://x", width=300), TaskHandle[Thumbnail])
    assert_type(resize.enqueue(queue, "http://x"), TaskHandle[Thumbnail])
    assert_type(count.enqueue(queue, ["a", "b"]), TaskHandle[int])
    assert_type(resize.bind("http://x"), Task[Thumbnail])
    assert_type(queue.enqueue(resize.bind("http://x"), delay=10), TaskHandle[Thumbnail])
    resize.enqueue(queue, url="http://x", width="wide")  # type: ignore[arg-type]
    resize.enqueue(queue, url="http://x", height=3)  # type: ignore[call-arg]
    count.enqueue(queue, "not a list")  # type: ignore[arg-type]
