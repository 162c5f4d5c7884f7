"""Function tasks for the integration test (module-level, as users write them)."""

from __future__ import annotations

import os

from pydantic import BaseModel

from rayqueue import function_task


class Area(BaseModel):
    width: int
    height: int
    area: int
    pid: int


@function_task(name="fn.area")
def area(width: int, height: int = 2) -> Area:
    return Area(width=width, height=height, area=width * height, pid=os.getpid())


@function_task(name="fn.shout")
async def shout(text: str) -> str:
    return text.upper() + "!"
