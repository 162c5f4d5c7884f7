"""PaymentTask: charge a customer's card, retried on transient gateway errors."""

from __future__ import annotations

import time
import zlib
from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel, Field

from rayqueue import Priority, RetryPolicy, Task
from rayqueue.task import current


class GatewayTimeoutError(Exception):
    """The payment gateway did not answer in time; safe to retry (idempotency key)."""


class CardDeclinedError(Exception):
    """The card was declined; retrying will not help."""


class PaymentReceipt(BaseModel):
    """A successful charge."""

    order_id: str
    amount: Decimal
    currency: str
    transaction_id: str
    attempt_note: str = ""


class PaymentTask(Task[PaymentReceipt]):
    """Charge ``amount`` for ``order_id``. Runs before reports and most notifications.

    ``transient_failures`` makes the simulated gateway time out on that many first
    attempts (the demo's way to show retries); ``decline`` makes it refuse the card.
    """

    task_name: ClassVar[str] = "shop.payment"
    priority: ClassVar[int] = Priority.HIGH
    retry: ClassVar[RetryPolicy] = RetryPolicy(
        max_attempts=4,
        base_delay=0.2,
        factor=2.0,
        max_delay=5.0,
        retry_on=(GatewayTimeoutError,),
        dont_retry_on=(CardDeclinedError,),
    )
    timeout: ClassVar[float | None] = 30.0

    order_id: str = Field(min_length=1, max_length=64)
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    transient_failures: int = Field(default=0, ge=0, le=10)
    decline: bool = False

    def execute(self) -> PaymentReceipt:
        """Charge the card through the (simulated) gateway."""
        if self.decline:
            raise CardDeclinedError(f"card for order {self.order_id} was declined")
        ctx = current()
        attempt = ctx.attempt if ctx is not None else 1
        if attempt <= self.transient_failures:
            raise GatewayTimeoutError(f"gateway timed out charging order {self.order_id}")
        txn = zlib.crc32(f"{self.order_id}:{self.amount}".encode())
        return PaymentReceipt(
            order_id=self.order_id, amount=self.amount, currency=self.currency,
            transaction_id=f"txn-{txn:08x}",
        )


class GatewayCharge(Task[PaymentReceipt]):
    """A charge through a gateway with a quota: at most 20 starts a second across every
    worker (the gateway's rate limit), and one charge at a time per customer (so two of a
    customer's charges never race on the same balance). Tasks over a limit wait ready,
    never failed; customers take turns."""

    task_name: ClassVar[str] = "shop.gateway_charge"
    priority: ClassVar[int] = Priority.HIGH
    rate_limit: ClassVar[str | None] = "20/s"
    concurrency_limit: ClassVar[int | None] = 1
    concurrency_key: ClassVar[str | None] = "customer_id"

    customer_id: int = Field(ge=0)
    order_id: str = Field(min_length=1, max_length=64)
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)

    def execute(self) -> PaymentReceipt:
        """Charge through the (simulated) gateway, which takes a few milliseconds."""
        time.sleep(0.02)
        txn = zlib.crc32(f"{self.customer_id}:{self.order_id}".encode())
        return PaymentReceipt(order_id=self.order_id, amount=self.amount, currency="EUR",
                              transaction_id=f"txn-{txn:08x}")
