"""Function tasks: a typed function becomes a task type, with no class to write.

    from rayqueue import function_task

    @function_task(name="img.resize", priority=Priority.HIGH)
    def resize(url: str, width: int = 200) -> Thumbnail:
        ...

    handle = resize.enqueue(queue, url=u, width=300)   # TaskHandle[Thumbnail]
    queue.enqueue(resize.bind(u), delay=10)            # bind(): the Task, for options

The function's parameters become the payload's fields (validated by pydantic when bound
and again on the worker), its return annotation the result type, and mypy checks every
call of ``enqueue``/``bind`` against the function's signature (``ParamSpec``). ``async
def`` functions run on the worker's event loop. The generated class is a plain
:class:`~rayqueue.task.Task` subclass (``resize.task_class``), registered under the name
given (default ``module:qualname`` of the function), so workers, journals and the CLI see
no difference.

It is ``function_task`` rather than ``task``: ``rayqueue.task`` is the module of
``Task`` and ``current()``.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Awaitable, Callable
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    get_type_hints,
    overload,
)

from pydantic import ValidationError

from rayqueue.core.retry import RetryPolicy
from rayqueue.errors import InvalidArgumentError, InvalidPayloadError, TaskError
from rayqueue.task import Task

if TYPE_CHECKING:
    from rayqueue.client import TaskQueue
    from rayqueue.handle import TaskHandle

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

__all__ = ["FunctionTask", "function_task"]


class FunctionTask(Generic[P, R]):
    """A task type made from a function; call it to run the function here."""

    def __init__(self, fn: Callable[..., Any], task_class: type[Task[R]]) -> None:
        self.fn = fn
        #: the generated Task subclass (its fields are the function's parameters)
        self.task_class = task_class
        self._signature = inspect.signature(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", "function_task")

    def __repr__(self) -> str:
        return f"FunctionTask({self.task_class.task_name!r})"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function here, now (not through a queue)."""
        return self.fn(*args, **kwargs)

    def bind(self, *args: P.args, **kwargs: P.kwargs) -> Task[R]:
        """The task for these arguments (validated now), for ``queue.enqueue(...)`` with
        options (priority, delay, task_id, headers, ...).

        Raises:
            InvalidArgumentError: the arguments do not fit the function's signature.
            InvalidPayloadError: a value does not validate against its annotation.
        """
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as err:
            raise InvalidArgumentError(self.__name__, str(err)) from None
        try:
            return self.task_class(**bound.arguments)
        except ValidationError as err:
            raise InvalidPayloadError(self.task_class.task_name, str(err)) from None

    def enqueue(self, queue: TaskQueue[Any], /, *args: P.args,
                **kwargs: P.kwargs) -> TaskHandle[R]:
        """Enqueue one run with these arguments; its typed handle."""
        return queue.enqueue(self.bind(*args, **kwargs))


class _Decorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Awaitable[R_co]], /) -> FunctionTask[P, R_co]: ...

    @overload
    def __call__(self, fn: Callable[P, R_co], /) -> FunctionTask[P, R_co]: ...


@overload
def function_task(fn: Callable[P, Awaitable[R]], /) -> FunctionTask[P, R]: ...


@overload
def function_task(fn: Callable[P, R], /) -> FunctionTask[P, R]: ...


@overload
def function_task(*, name: str | None = None, priority: int | None = None,
                  retry: RetryPolicy | None = None, timeout: float | None = None,
                  pool: str | None = None) -> _Decorator: ...


def function_task(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
                  priority: int | None = None, retry: RetryPolicy | None = None,
                  timeout: float | None = None, pool: str | None = None) -> Any:
    """Make a task type of a typed function (see the module's docstring).

    Args:
        name: the task name kept in the journal (default ``module:qualname``); give a
            stable one, as for a class.
        priority, retry, timeout, pool: the class options of :class:`Task`.
    """
    options = {"task_name": name, "priority": priority, "retry": retry,
               "timeout": timeout, "pool": pool}

    def make(fn: Callable[..., Any]) -> FunctionTask[Any, Any]:
        return FunctionTask(fn, _task_class(fn, {k: v for k, v in options.items()
                                                 if v is not None}))

    return make if fn is None else make(fn)


def _task_class(fn: Callable[..., Any], options: dict[str, Any]) -> type[Task[Any]]:
    """A Task subclass whose fields are ``fn``'s parameters and whose execute calls it."""
    if not callable(fn) or isinstance(fn, type):
        raise TaskError(f"function_task takes a function, got {type(fn).__name__}")
    try:
        hints = get_type_hints(fn)
    except Exception as err:  # an annotation that does not resolve
        raise TaskError(f"cannot read the annotations of {fn.__qualname__}: {err}") from None
    result = hints.pop("return", Any)
    options = {"task_name": f"{fn.__module__}:{fn.__qualname__}", **options}
    annotations: dict[str, Any] = {k: ClassVar for k in options}
    defaults: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TaskError(f"{fn.__qualname__}: *args and **kwargs cannot be payload "
                            "fields; name every parameter")
        annotations[param.name] = hints.get(param.name, Any)
        if param.default is not param.empty:
            defaults[param.name] = param.default
    is_async = inspect.iscoroutinefunction(fn)
    names = [n for n in annotations if n not in options]

    async def run_async(self: Task[Any]) -> Any:
        return await fn(**{n: getattr(self, n) for n in names})

    def run_sync(self: Task[Any]) -> Any:
        return fn(**{n: getattr(self, n) for n in names})

    execute: Callable[[Task[Any]], Any] = run_async if is_async else run_sync

    namespace = {"__module__": fn.__module__, "__annotations__": annotations,
                 # Reachable as module.qualname (the decorated name is the FunctionTask,
                 # whose ``task_class`` this is), so cloudpickle ships it by reference
                 # when its module is importable, as any task class: a worker imports
                 # the module and runs the class it defines. (By value, the copy clashed
                 # with the module's own class in the registry once unpickling imported
                 # the module for the result type: the first attempt on each fresh
                 # worker failed.) In a script, a notebook or a function it goes by
                 # value, as classes there do.
                 "__qualname__": f"{fn.__qualname__}.task_class",
                 "__doc__": fn.__doc__, "execute": execute, **options, **defaults}
    return types.new_class(_class_name(fn), (Task[result],), {},  # type: ignore[valid-type]
                           lambda ns: ns.update(namespace))


def _class_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", "task")
    return "".join(part.capitalize() for part in name.split("_")) + "Task"
