"""Checks of the arguments of the public client calls, made before any Ray call.

A bad timeout, limit or id list must not reach a Ray actor (where it would come back
as a ``RayTaskError`` of an ``OverflowError``) or Python's arithmetic (a raw
``TypeError``): each is refused here with :class:`~rayqueue.errors.InvalidArgumentError`
(a ``ValueError``) or :class:`~rayqueue.errors.InvalidArgumentTypeError` (also a
``TypeError``), and nothing is changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from rayqueue.errors import InvalidArgumentError, InvalidArgumentTypeError

#: Longest timeout any call takes, in seconds (a year). Python's own waits
#: (``threading``, ``concurrent.futures``) overflow not far above; "no limit" is None
#: where a call documents it.
MAX_TIMEOUT_S = 365 * 24 * 3600.0
#: Largest count a listing call (``dead_letters``) returns.
MAX_LIMIT = 1_000_000


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_timeout(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """``value`` as seconds in [0, :data:`MAX_TIMEOUT_S`] (None passes where it means
    "wait without limit")."""
    if value is None and allow_none:
        return None
    none = " or None to wait without limit" if allow_none else ""
    if not _number(value):
        raise InvalidArgumentTypeError(
            name, f"expected a number of seconds{none}, got {type(value).__name__}")
    assert isinstance(value, (int, float))
    if not (0 <= value <= MAX_TIMEOUT_S) or math.isnan(value):
        raise InvalidArgumentError(
            name, f"{value!r} is not a number of seconds from 0 to {MAX_TIMEOUT_S:.0f}"
            f" (a year){none}")
    return float(value)


def check_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int (not a bool) in [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentTypeError(name, f"expected an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidArgumentError(name, f"{value} is not from {low} to {high}")
    return value


def check_str(name: str, value: object) -> str:
    """``value``, which must be a str (an id or a pool name; its content is the
    queue's to judge)."""
    if not isinstance(value, str):
        raise InvalidArgumentTypeError(name, f"expected a str, got {type(value).__name__}")
    return value


def check_list(name: str, value: object, item: type | tuple[type, ...],
               what: str) -> list[Any]:
    """``value`` (a list, tuple or other iterable; not a str or a dict) as a list whose
    every item is an ``item``; ``what`` names the item in the message."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidArgumentTypeError(
            name, f"expected a list of {what}, got {type(value).__name__}")
    items = list(value)
    for i, x in enumerate(items):
        if not isinstance(x, item):
            raise InvalidArgumentTypeError(
                name, f"item {i} is a {type(x).__name__}, not a {what}")
    return items
