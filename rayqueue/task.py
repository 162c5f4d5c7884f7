"""Typed tasks: ``Task[R]`` models with ``execute()``, their defaults, and the registry.

A task type is a pydantic model (its fields are the payload) with an ``execute()``
method returning ``R``, plain or ``async``. Subclasses register themselves under a
stable name (``module:QualName`` unless they set ``task_name``). Payloads cross process
boundaries as that name plus JSON, and are validated again on the way in; nothing is
ever pickled into storage.

Example:
    >>> class Receipt(BaseModel):
    ...     charged: int
    >>> class Charge(Task[Receipt]):
    ...     cents: int
    ...     def execute(self) -> Receipt:
    ...         return Receipt(charged=self.cents)
"""

from __future__ import annotations

import inspect
import json
import re
import unicodedata
from collections.abc import Awaitable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Generic, TypeVar, cast

import orjson
from pydantic import BaseModel, ConfigDict, PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from rayqueue.core.checks import check_limit, check_new_task
from rayqueue.core.priority import Priority, validate_priority
from rayqueue.core.record import Limit, NewTask
from rayqueue.core.retry import RetryPolicy, finite
from rayqueue.errors import (
    InvalidArgumentError,
    InvalidLimitError,
    InvalidNameError,
    InvalidPayloadError,
    InvalidResultError,
    InvalidTaskError,
    TaskError,
    UnknownTaskError,
)

R = TypeVar("R")

_REGISTRY: dict[str, type[Task[Any]]] = {}
#: Longest accepted task name.
MAX_TASK_NAME = 200
#: Class-level options of a task type; a payload field of one of these names is an error.
_OPTIONS = frozenset({"task_name", "priority", "retry", "timeout", "pool", "rate_limit",
                      "concurrency_limit", "concurrency_key"})
#: Per task class: (rate a second, concurrency limit, key field), when it has limits.
_LIMITS: dict[type[Any], tuple[float | None, int | None, str | None]] = {}
_RATE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
        "h": 3600.0, "hour": 3600.0}


class Task(BaseModel, Generic[R]):
    """Base class of every task type; ``R`` is the result type.

    Class-level defaults (override in a subclass body):

    Attributes:
        task_name: stable name stored in the journal (default ``module:QualName``).
        priority: default priority (an int in [0, 100]; higher runs first).
        retry: the :class:`RetryPolicy` for failures.
        timeout: seconds one attempt may run before its worker is killed (None = no limit).
        pool: the worker pool that runs this type.
        rate_limit: most starts of this type a second, minute or hour in its pool, as
            ``"50/s"``, ``"300/m"`` or ``"1000/h"`` (None = no limit).
        concurrency_limit: most tasks of this type running at once in its pool (per
            value of ``concurrency_key`` when that is set; None = no limit).
        concurrency_key: the payload field whose value the concurrency limit holds per
            (e.g. ``"customer_id"``); keys also take fair turns in line.
    """

    # NaN and infinities are not JSON: write them as constants so encode_payload sees
    # and rejects them, instead of pydantic's default of silently writing null.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    task_name: ClassVar[str]
    priority: ClassVar[int] = Priority.NORMAL
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    timeout: ClassVar[float | None] = None
    pool: ClassVar[str] = "default"
    rate_limit: ClassVar[str | None] = None
    concurrency_limit: ClassVar[int | None] = None
    concurrency_key: ClassVar[str | None] = None

    def execute(self) -> R | Awaitable[R]:
        """Do the work and return the result (may be ``async def``)."""
        raise NotImplementedError(f"{type(self).__name__} must define execute()")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__pydantic_generic_metadata__["origin"] is not None:
            return  # Task[X] itself, made by subscripting: not a task type
        clash = sorted(set(cls.model_fields) & _OPTIONS)
        if clash:
            raise TaskError(
                f"{cls.__qualname__} declares {', '.join(clash)} as payload field(s); task "
                f"options must be class variables: e.g. `timeout: ClassVar[float | None] = 30`"
            )
        if "task_name" not in cls.__dict__:
            cls.task_name = f"{cls.__module__}:{cls.__qualname__}"
        validate_priority(cls.priority)
        limits = _limits_of(cls)
        if limits is None:
            _LIMITS.pop(cls, None)
        else:
            _LIMITS[cls] = limits
        register(cls)

    @classmethod
    def result_type(cls) -> Any:
        """The declared ``R`` (``Any`` when the class did not parametrize ``Task``)."""
        for klass in cls.__mro__:
            meta = getattr(klass, "__pydantic_generic_metadata__", None)
            if meta and meta["origin"] is Task and meta["args"]:
                return meta["args"][0]
        return Any

    def to_payload(self) -> str:
        """This task's payload as JSON text, checked by validating it back."""
        return encode_payload(self)


#: Longest progress message kept (longer ones are cut).
MAX_PROGRESS_MESSAGE = 200


class TaskSignals:
    """What a running attempt and its worker tell each other: the worker sets
    ``cancelled``; the task sets ``progress`` (the latest only; the worker sends it on)."""

    __slots__ = ("cancelled", "progress", "sent")

    def __init__(self) -> None:
        self.cancelled = False
        #: the latest (fraction, message) the task reported, and whether it went out
        self.progress: tuple[float, str | None] | None = None
        self.sent = True


@dataclass(frozen=True, slots=True)
class TaskContext:
    """Which execution is running: available inside ``execute()`` via :func:`current`."""

    task_id: str
    attempt: int
    worker: str
    #: the task's headers (given at enqueue, or added by middleware)
    headers: Mapping[str, str] = field(default_factory=dict)
    #: shared with the worker (see :attr:`cancelled` and :meth:`progress`)
    signals: TaskSignals = field(default_factory=TaskSignals, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """Whether someone cancelled this task while it runs (``queue.cancel(id)``).

        A sync task checks it now and then and returns (or raises) when it is set: its
        outcome is dropped, the task is already ``cancelled``. An async task is cancelled
        on the worker's event loop (``asyncio.CancelledError`` at its next ``await``).
        """
        return self.signals.cancelled

    def progress(self, fraction: float, message: str = "") -> None:
        """Say how far the task is: ``fraction`` from 0 to 1, and an optional message
        (cut to 200 characters). Cheap: the worker sends the latest to the queue a few
        times a second at most; ``handle.info().progress`` reads it. Not journaled.

        Raises:
            InvalidArgumentError: ``fraction`` is not a number from 0 to 1, or
                ``message`` is not a str.
        """
        value = finite(fraction)
        if value is None or not 0.0 <= value <= 1.0:
            raise InvalidArgumentError("fraction", f"a number from 0 to 1, got {fraction!r:.80}")
        if not isinstance(message, str):
            raise InvalidArgumentError("message", f"a str, got {type(message).__name__}")
        text = message[:MAX_PROGRESS_MESSAGE].encode("utf-8", "backslashreplace").decode()
        self.signals.progress = (value, text or None)
        self.signals.sent = False


_CURRENT: ContextVar[TaskContext | None] = ContextVar("rayqueue_current_task", default=None)


def current() -> TaskContext | None:
    """The running task's id, attempt number (1-based) and worker; None outside a task.

    Tasks use it to be idempotent across retries (e.g. an idempotency key of
    ``f"{task_id}"``) or to behave differently on a later attempt.
    """
    return _CURRENT.get()


def set_current(ctx: TaskContext | None) -> Token[TaskContext | None]:
    """Set the running task's context (for workers and test harnesses)."""
    return _CURRENT.set(ctx)


def reset_current(token: Token[TaskContext | None]) -> None:
    """Undo :func:`set_current`."""
    _CURRENT.reset(token)


def check_task_name(name: object) -> str:
    """``name`` if it can name a task type in the journal, else :class:`InvalidNameError`.

    A task name is a str of 1 to :data:`MAX_TASK_NAME` characters without control
    characters (NUL, newlines...) or lone surrogates (not valid UTF-8).
    """
    if not isinstance(name, str):
        raise InvalidNameError("task_name", f"a task name is a str, got {name!r}")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs")), None)
    if not name or len(name) > MAX_TASK_NAME or bad is not None:
        why = (f"the character {bad!r} is not allowed" if bad is not None
               else f"it has {len(name)} characters")
        raise InvalidNameError(
            "task_name", f"invalid task name {name[:80]!r}{'...' if len(name) > 80 else ''}: "
            f"{why}; use 1 to {MAX_TASK_NAME} printable characters, e.g. 'shop.payment'")
    return name


def register(cls: type[Task[Any]]) -> None:
    """Register a task class under its ``task_name``.

    Registering a class of the same module and qualified name again replaces the old
    one, so re-running a notebook cell (or reloading a module) works; two classes of
    different modules or names under one task name are an error
    (``payments.Charge`` and ``refunds.Charge`` must not share one).

    Raises:
        InvalidNameError: the class's ``task_name`` is not a valid task name.
        TaskError: another class is registered under that name.
    """
    name = check_task_name(cls.task_name)
    old = _REGISTRY.get(name)
    if old is not None and old is not cls and _identity(old) != _identity(cls):
        raise TaskError(
            f"task name {name!r} is already used by {'.'.join(_identity(old))}, not "
            f"{'.'.join(_identity(cls))}; set a distinct task_name on one of them"
        )
    _REGISTRY[name] = cls


def parse_rate(text: object) -> float:
    """Tasks a second of a rate written ``"N/s"``, ``"N/m"`` or ``"N/h"`` (N > 0).

    Raises:
        InvalidLimitError: anything else.
    """
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    rate = float(match.group(1)) / _PER[match.group(2)] if match else 0.0
    if not rate > 0:
        raise InvalidLimitError(f"rate_limit must look like '50/s', '300/m' or '1000/h' with "
                                f"a number > 0, got {text!r:.80}")
    return rate


def _limits_of(cls: type[Task[Any]]) -> tuple[float | None, int | None, str | None] | None:
    """The checked limits a task class declares (None: none)."""
    rate_text, limit, key = cls.rate_limit, cls.concurrency_limit, cls.concurrency_key
    if rate_text is None and limit is None and key is None:
        return None
    name = cls.__qualname__
    rate = None if rate_text is None else parse_rate(rate_text)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise InvalidLimitError(f"{name}.concurrency_limit must be an int >= 1, got "
                                f"{limit!r:.80}")
    if key is not None:
        if not isinstance(key, str) or key not in cls.model_fields:
            raise InvalidLimitError(f"{name}.concurrency_key must name a payload field of "
                                    f"{name} ({', '.join(cls.model_fields) or 'none'}), "
                                    f"got {key!r:.80}")
        if rate is None and limit is None:
            raise InvalidLimitError(f"{name}.concurrency_key needs a concurrency_limit (or "
                                    "a rate_limit) to hold")
    return rate, limit, key


def limit_of(task: Task[Any]) -> Limit | None:
    """The limits an enqueue of ``task`` carries: its class's, with the key's value
    read from the payload (so the queue never parses payloads)."""
    return limit_for(type(task), task)


def limit_for(cls: type[Task[Any]], values: Any) -> Limit | None:
    """The limits of ``cls`` with the key read from ``values`` (a task, or a model of
    its fields; a key field it lacks counts as ``None``)."""
    spec = _LIMITS.get(cls)
    if spec is None:
        return None
    rate, limit, key_field = spec
    key = None
    if key_field is not None:
        value = getattr(values, key_field, None)
        key = value if isinstance(value, str) else orjson.dumps(
            value, default=str).decode()
    return check_limit(Limit(rate, limit, key))


def _identity(cls: type[Task[Any]]) -> tuple[str, str]:
    """What makes two class objects the same task type: where it is defined."""
    return cls.__module__, cls.__qualname__


def lookup(name: str) -> type[Task[Any]]:
    """The task class registered under ``name``. Raises :class:`UnknownTaskError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownTaskError(name) from None


def registered() -> dict[str, type[Task[Any]]]:
    """A copy of the registry."""
    return dict(_REGISTRY)


def encode_payload(task: Task[Any]) -> str:
    """Serialize ``task`` to JSON and validate it back, so bad values fail here, not later."""
    cls = type(task)
    try:
        text = task.model_dump_json()
        try:
            orjson.loads(text)  # refuses NaN and Infinity, ~5x faster than json.loads
        except orjson.JSONDecodeError:
            json.loads(text, parse_constant=_no_constants)  # raises, naming the constant
            raise
        cls.model_validate_json(text)
    except (PydanticSerializationError, ValidationError, ValueError, TypeError) as err:
        raise InvalidPayloadError(cls.task_name, _culprit(task) + str(err)) from err
    return text


def _culprit(task: Task[Any]) -> str:
    """``field 'x': `` for the first field that does not serialize on its own (or '')."""
    for name in type(task).model_fields:
        try:
            json.loads(task.model_dump_json(include={name}), parse_constant=_no_constants)
        except (PydanticSerializationError, ValueError, TypeError):
            return f"field {name!r}: "
    return ""


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def decode_payload(name: str, payload: str, cls: type[Task[Any]] | None = None,
                   feed: tuple[str, str] | None = None) -> Task[Any]:
    """Rebuild a task from its name and JSON payload, validating it again.

    ``cls`` is the class to use when the caller resolved it already. ``feed`` (a
    workflow step's lease): the payload field and the JSON text of the parents'
    results, put into the payload before it is validated, so the result arrives as
    validated data of the field's type.
    """
    cls = cls or lookup(name)
    if feed is not None:
        payload = with_input(name, payload, *feed)
    try:
        return cls.model_validate_json(payload)
    except ValidationError as err:
        raise InvalidPayloadError(name, str(err)) from err


def with_input(name: str, payload: str, field_name: str, value: str) -> str:
    """``payload`` (a JSON object's text) with ``field_name`` set to the JSON text
    ``value``, spliced as text: nothing is parsed and dumped again."""
    body = payload.rstrip()
    if not body.startswith("{") or not body.endswith("}"):
        raise InvalidPayloadError(name, "a workflow step's payload must be a JSON object")
    head = body[:-1].rstrip()
    sep = "" if head == "{" else ","
    return f"{head}{sep}{json.dumps(field_name)}:{value}}}"


@cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


@cache
def _result_adapter(tp: Any) -> TypeAdapter[Any]:
    """An adapter that writes NaN and infinities as the constants JSON lacks, so that
    :func:`encode_result` sees and refuses them (pydantic's default writes ``null``).
    A model type keeps its own config (a Task's does the same)."""
    try:
        return TypeAdapter(tp, config=ConfigDict(ser_json_inf_nan="constants"))
    except PydanticUserError:
        return TypeAdapter(tp)


def encode_result(cls: type[Task[Any]], value: Any) -> str:
    """A result as JSON text, checked against the class's declared result type; NaN
    and infinities are refused rather than silently stored as ``null``."""
    adapter = _result_adapter(cls.result_type())
    try:
        text = adapter.dump_json(adapter.validate_python(value)).decode()
        if "NaN" in text or "Infinity" in text:
            json.loads(text, parse_constant=_no_constants)  # raises, naming the constant
    except (PydanticSerializationError, ValidationError, ValueError, TypeError) as err:
        raise InvalidResultError(f"the result does not match its type: {err}",
                                 cls.task_name) from err
    return text


def decode_result(cls: type[Task[R]], text: str) -> R:
    """A result read back as the class's declared type ``R``."""
    return cast(R, _adapter(cls.result_type()).validate_json(text))


def to_new_task(
    task: Task[Any],
    *,
    priority: int | None = None,
    run_at: float | None = None,
    delay: float | None = None,
    task_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> NewTask:
    """Turn a task instance into the core's enqueue request, applying class defaults."""
    if not isinstance(task, Task):
        raise TaskError(f"expected a Task instance, got {type(task).__name__}")
    cls = type(task)
    if not hasattr(cls, "task_name"):  # Task itself: no type to run
        raise InvalidTaskError(f"{cls.__name__} is not a task type: define a subclass of "
                               "Task with an execute() and enqueue an instance of it")
    name = cls.task_name
    # Renamed after its definition: check it again (first: a list is no dict key).
    if not isinstance(name, str) or _REGISTRY.get(name) is not cls:
        check_task_name(name)
    new = NewTask(
        task_name=name,
        payload=encode_payload(task),
        priority=validate_priority(cls.priority if priority is None else priority),
        pool=cls.pool,
        run_at=run_at,
        delay=delay,
        task_id=task_id,
        retry=cls.retry,
        timeout=cls.timeout,
        headers=headers or None,
        limit=limit_of(task),
    )
    # Refused here, before it joins other callers' tasks in a batch (the queue checks
    # again: it trusts no client).
    check_new_task(new)
    return new


async def run_task(task: Task[R]) -> R:
    """Execute ``task`` inline, awaiting it if ``execute`` is async (used by tests, demos)."""
    value = task.execute()
    if inspect.isawaitable(value):
        result: R = await value
        return result
    return value
