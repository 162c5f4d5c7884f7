"""Priorities: named levels, the valid range, and the check at the boundary."""

from __future__ import annotations

import math
from enum import IntEnum

from rayqueue.errors import InvalidPriorityError

#: The lowest accepted priority. Higher numbers run first.
PRIORITY_MIN = 0
#: The highest accepted priority.
PRIORITY_MAX = 100


class Priority(IntEnum):
    """Named priority levels; any int in ``[PRIORITY_MIN, PRIORITY_MAX]`` is valid too."""

    LOW = 25
    NORMAL = 50
    HIGH = 75
    CRITICAL = 100


def validate_priority(value: object) -> int:
    """Return ``value`` as an int priority, or raise :class:`InvalidPriorityError`.

    Bools, floats (NaN included), strings and out-of-range ints are rejected: a
    priority is an exact integer so that ordering is never ambiguous.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isnan(value):
            raise InvalidPriorityError("NaN", PRIORITY_MIN, PRIORITY_MAX)
        raise InvalidPriorityError(value, PRIORITY_MIN, PRIORITY_MAX)
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise InvalidPriorityError(value, PRIORITY_MIN, PRIORITY_MAX)
    return int(value)
