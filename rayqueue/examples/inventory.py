"""A function task: reserving stock, written as a plain typed function."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from rayqueue.core.priority import Priority
from rayqueue.functions import function_task


class Reservation(BaseModel):
    """Stock held for an order."""

    sku: str
    quantity: int
    reservation_id: str


@function_task(name="shop.reserve_stock", priority=Priority.HIGH)
def reserve_stock(sku: str, quantity: int = 1) -> Reservation:
    """Hold ``quantity`` of ``sku`` (a stand-in for a call to the stock service)."""
    if quantity < 1:
        raise ValueError("quantity must be at least 1")
    digest = hashlib.sha256(f"{sku}:{quantity}".encode()).hexdigest()[:12]
    return Reservation(sku=sku, quantity=quantity, reservation_id=f"res-{digest}")


__all__ = ["Reservation", "reserve_stock"]
