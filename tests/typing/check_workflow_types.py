"""Checked by mypy (not run): a workflow step names the field that takes the previous
step's result by passing ``.output`` (``.outputs`` for a group), typed as that result,
so a chain whose types do not fit is a type error. A wrong line carries a
``type: ignore`` for the error mypy must report (strict mode flags an unused one, so if
mypy stopped rejecting it, this file would fail)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from typing_extensions import assert_type

import rayqueue
from rayqueue import Chain, Group, GroupHandle, Task, TaskHandle, function_task


class Receipt(BaseModel):
    order_id: str
    cents: int


class Invoice(BaseModel):
    number: int


class ChargeCard(Task[Receipt]):
    order_id: str
    cents: int

    def execute(self) -> Receipt:
        return Receipt(order_id=self.order_id, cents=self.cents)


class SendReceipt(Task[bool]):
    receipt: Receipt
    email: str

    def execute(self) -> bool:
        return True


class FileInvoice(Task[None]):
    invoice: Invoice

    def execute(self) -> None:
        return None


class Summary(Task[int]):
    receipts: list[Receipt]

    def execute(self) -> int:
        return sum(r.cents for r in self.receipts)


@function_task(name="typing.audit")
def audit(sent: bool, note: str = "") -> str:
    return note


def workflows(queue: rayqueue.TaskQueue[Any]) -> None:
    charge = rayqueue.chain(ChargeCard(order_id="o-1", cents=1250))
    assert_type(charge, Chain[Receipt])
    flow = charge.then(SendReceipt, receipt=charge.output, email="a@example.com")
    assert_type(flow, Chain[bool])
    assert_type(queue.enqueue(flow), TaskHandle[bool])
    audited = flow.then(audit.bind, sent=flow.output, note="ok")
    assert_type(queue.enqueue(audited).result(), str)

    charges = rayqueue.group(ChargeCard(order_id=f"o-{i}", cents=i) for i in range(3))
    assert_type(charges, Group[Receipt])
    assert_type(queue.enqueue(charges), GroupHandle[Receipt])
    assert_type(queue.enqueue(charges).result(), list[Receipt])
    chord = charges.then(Summary, receipts=charges.outputs)
    assert_type(queue.enqueue(chord).result(), int)

    # The rejected cases: a Receipt where an Invoice is declared; one Receipt where a
    # list is declared; a group's list where one Receipt is declared; a field the
    # next task does not have; a workflow with options of a single task.
    charge.then(FileInvoice, invoice=charge.output)  # type: ignore[arg-type]
    charge.then(Summary, receipts=charge.output)  # type: ignore[arg-type]
    charges.then(SendReceipt, receipt=charges.outputs, email="x")  # type: ignore[arg-type]
    charge.then(SendReceipt, receit=charge.output, email="x")  # type: ignore[call-arg]
    queue.enqueue(flow, delay=5)  # type: ignore[call-overload]
