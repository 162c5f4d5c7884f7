"""Task types of the workflow tests (pickled by value to the workers). Each run notes
``start <name>`` in the file at ``path``, so a test counts how often each step ran."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from rayqueue import RetryPolicy, Task


def note(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


class Charged(BaseModel):
    order_id: str
    cents: int


class Charge(Task[Charged]):
    task_name: ClassVar[str] = "wf-it.charge"
    order_id: str
    cents: int
    path: str

    def execute(self) -> Charged:
        note(self.path, "start charge")
        return Charged(order_id=self.order_id, cents=self.cents)


class AddTax(Task[Charged]):
    """The middle step: takes the charge as validated data (a Charged, not a dict)."""

    task_name: ClassVar[str] = "wf-it.add_tax"
    charged: Charged
    percent: int
    path: str
    #: wait for this file before returning ("" = do not wait): the queue is killed
    #: meanwhile
    gate: str = ""

    def execute(self) -> Charged:
        assert isinstance(self.charged, Charged)
        note(self.path, "start add_tax")
        deadline = time.monotonic() + 60
        while self.gate and not Path(self.gate).exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # a task that waits for its test's signal
        return Charged(order_id=self.charged.order_id,
                       cents=self.charged.cents * (100 + self.percent) // 100)


class Receipt(Task[str]):
    task_name: ClassVar[str] = "wf-it.receipt"
    charged: Charged
    email: str
    path: str

    def execute(self) -> str:
        note(self.path, "start receipt")
        return f"{self.email}: {self.charged.order_id} {self.charged.cents}"


class Declined(Task[Charged]):
    """Fails every attempt (two, quickly)."""

    task_name: ClassVar[str] = "wf-it.declined"
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=2, base_delay=0.05, jitter=False)
    charged: Charged
    path: str

    def execute(self) -> Charged:
        note(self.path, "start declined")
        raise ValueError("card declined")


class Square(Task[int]):
    task_name: ClassVar[str] = "wf-it.square"
    i: int

    def execute(self) -> int:
        return self.i * self.i


class Total(Task[int]):
    task_name: ClassVar[str] = "wf-it.total"
    squares: list[int]
    path: str

    def execute(self) -> int:
        note(self.path, f"start total {len(self.squares)}")
        return sum(self.squares)
