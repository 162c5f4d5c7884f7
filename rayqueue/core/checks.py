"""Checks of what enters the queue, run before it joins a batch.

The queue actor commits the changes of many callers together (group commit), and the
client's sender sends many callers' enqueues in one call: a value the journal cannot
store (a lone surrogate in an id, a name that is ``None``) would fail the whole batch,
other callers' good work included. So every field the journal needs is checked here,
once in the client (so the caller hears of it at once) and again in the queue (which
trusts no client), and refused with :class:`~rayqueue.errors.InvalidTaskError`.
"""

from __future__ import annotations

from typing import Any

from rayqueue.core.record import Limit, NewTask, Step
from rayqueue.core.retry import RetryPolicy, finite
from rayqueue.errors import (
    InvalidArgumentTypeError,
    InvalidLimitError,
    InvalidTaskError,
    InvalidWorkflowError,
)

#: Longest task id, task name and pool name, in characters.
MAX_TASK_ID = 256
MAX_NAME = 200
#: Task headers: most entries, longest name and value (characters), largest total
#: (UTF-8 bytes of names and values). Enough for W3C trace context, baggage and ids.
MAX_HEADERS = 64
MAX_HEADER_NAME = 128
MAX_HEADER_VALUE = 4_096
MAX_HEADERS_BYTES = 16_384


def check_text(value: object, what: str, limit: int) -> str:
    """``value`` as a non-empty str of at most ``limit`` chars, valid UTF-8 (no lone
    surrogates) and without control characters; else :class:`InvalidTaskError`."""
    if not isinstance(value, str):
        raise InvalidTaskError(f"{what} must be a str, got {type(value).__name__}")
    if not value or len(value) > limit:
        raise InvalidTaskError(f"{what} must be 1 to {limit} characters, got {len(value)}")
    utf8(value, what)
    if not value.isprintable():
        raise InvalidTaskError(f"{what} must not hold control characters: {value[:80]!r}")
    return value


def utf8(value: str, what: str) -> int:
    """The UTF-8 size of ``value``; :class:`InvalidTaskError` if it has none (a lone
    surrogate, which no journal or wire format can carry)."""
    if value.isascii():  # (a flag of the str, read in O(1): JSON text mostly is)
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise InvalidTaskError(f"{what} is not valid text ({err.reason} at index "
                               f"{err.start})") from None


def check_new_task(new: NewTask) -> None:
    """Everything the journal needs of ``new`` (priority, times and size are checked
    where they are used)."""
    if not isinstance(new, NewTask):
        raise InvalidTaskError(f"expected a NewTask, got {type(new).__name__}")
    check_text(new.task_name, "task name", MAX_NAME)
    check_text(new.pool, "pool name", MAX_NAME)
    if new.task_id is not None:
        check_text(new.task_id, "task id", MAX_TASK_ID)
    if not isinstance(new.payload, str):
        raise InvalidTaskError(f"payload must be JSON text, got {type(new.payload).__name__}")
    utf8(new.payload, "payload")
    if not isinstance(new.retry, RetryPolicy):
        raise InvalidTaskError(f"retry must be a RetryPolicy, got {type(new.retry).__name__}")
    if new.timeout is not None and not _positive(new.timeout):
        raise InvalidTaskError(f"timeout must be finite seconds > 0, got {new.timeout!r}")
    if new.headers is not None:
        check_headers(new.headers)
    if new.limit is not None:
        check_limit(new.limit)
    if new.step is not None:
        check_step(new.step)


#: Most parents one step may wait for (a chord's callback waits for every member).
MAX_PARENTS = 1_000


def check_step(step: object) -> Step:
    """``step`` if the journal can hold it, else :class:`InvalidWorkflowError`."""
    if not isinstance(step, Step):
        raise InvalidWorkflowError(f"step must be a Step, got {type(step).__name__}")
    check_text(step.workflow, "workflow id", MAX_TASK_ID)
    if not isinstance(step.parents, tuple) or len(step.parents) > MAX_PARENTS:
        raise InvalidWorkflowError(f"a step waits for at most {MAX_PARENTS} parents (a tuple "
                                   "of task ids)")
    for parent in step.parents:
        check_text(parent, "parent task id", MAX_TASK_ID)
    if len(set(step.parents)) != len(step.parents):
        raise InvalidWorkflowError("a step names one of its parents twice")
    if step.feed is not None:
        check_text(step.feed, "input field", MAX_NAME)
        if not step.parents:
            raise InvalidWorkflowError(f"input field {step.feed!r} given to a step with no "
                                       "parent to take it from")
    if not isinstance(step.gather, bool):
        raise InvalidWorkflowError("gather must be a bool")
    return step


def check_limit(limit: object) -> Limit:
    """``limit`` if the queue can enforce it, else :class:`InvalidLimitError`: a rate
    (per second) finite and > 0, a concurrency an int >= 1, a key printable text, and at
    least one of rate and concurrency given."""
    if not isinstance(limit, Limit):
        raise InvalidLimitError(f"limit must be a Limit, got {type(limit).__name__}")
    if limit.rate is None and limit.concurrency is None:
        raise InvalidLimitError("a limit needs a rate, a concurrency or both")
    if limit.rate is not None and not _positive(limit.rate):
        raise InvalidLimitError(f"rate must be finite tasks a second > 0, got {limit.rate!r}")
    c = limit.concurrency
    if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
        raise InvalidLimitError(f"concurrency limit must be an int >= 1, got {c!r}")
    if limit.key is not None:
        try:
            check_text(limit.key, "concurrency key value", MAX_TASK_ID)
        except InvalidTaskError as err:
            raise InvalidLimitError(err.detail) from None
    return limit


def check_headers(headers: object) -> dict[str, str]:
    """``headers`` as a dict of str to str within the limits above (names and values
    printable text), else :class:`InvalidTaskError`."""
    if not isinstance(headers, dict):
        raise InvalidTaskError(f"headers must be a dict of str to str, got "
                               f"{type(headers).__name__}")
    if len(headers) > MAX_HEADERS:
        raise InvalidTaskError(f"at most {MAX_HEADERS} headers, got {len(headers)}")
    size = 0
    for name, value in headers.items():
        size += utf8(check_text(name, "header name", MAX_HEADER_NAME), "header name")
        if not isinstance(value, str):
            raise InvalidTaskError(f"header {name!r} must be a str, got "
                                   f"{type(value).__name__}")
        if len(value) > MAX_HEADER_VALUE:
            raise InvalidTaskError(f"header {name!r} is over {MAX_HEADER_VALUE} characters")
        size += utf8(value, f"header {name!r}")
        if not value.isprintable():
            raise InvalidTaskError(f"header {name!r} must not hold control characters")
    if size > MAX_HEADERS_BYTES:
        raise InvalidTaskError(f"headers are {size} bytes; at most {MAX_HEADERS_BYTES}")
    return headers


def _positive(x: Any) -> bool:
    return finite(x) is not None and x > 0


def check_lease_refs(name: str, refs: object) -> list[tuple[str, int]]:
    """``refs`` as (task id, lease token) pairs, checked whole before any is applied.

    Raises:
        InvalidArgumentTypeError: ``refs`` is not a list or tuple of such pairs (the
            first bad item is named); nothing has been changed.
    """
    if not isinstance(refs, (list, tuple)):
        raise InvalidArgumentTypeError(name, "expected a list of (task id, lease token) "
                                             f"pairs, got {type(refs).__name__}")
    out: list[tuple[str, int]] = []
    for item in refs:
        if not (isinstance(item, (tuple, list)) and len(item) == 2
                and isinstance(item[0], str) and type(item[1]) is int):
            raise InvalidArgumentTypeError(name, "expected (task id, lease token) pairs, "
                                                 f"got {item!r:.80}")
        out.append((item[0], item[1]))
    return out
