"""A task class made by a factory at import time (its qualified name is not reachable
from its module, so cloudpickle ships it by value): for the codebook's test."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from rayqueue import Task


class Counted(BaseModel):
    n: int


def make(name: str) -> type[Task[Counted]]:
    class Made(Task[Counted]):
        task_name: ClassVar[str] = name
        n: int

        def execute(self) -> Counted:
            return Counted(n=self.n)

    return Made


Made = make("unit.factory.made")
