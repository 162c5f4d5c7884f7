"""Typed, durable workflows: chains, groups and chords of tasks, enqueued as one unit.

    charge = rayqueue.chain(ChargeCard(order_id="o-1", cents=1250))     # Chain[Receipt]
    flow = charge.then(SendReceipt, receipt=charge.output, email="a@example.com")
    handle = queue.enqueue(flow)              # TaskHandle of the last step's result

    images = rayqueue.group(Resize(url=u) for u in urls)           # Group[Thumbnail]
    gallery = images.then(BuildGallery, thumbnails=images.outputs)  # a chord
    queue.enqueue(images).result()            # list[Thumbnail]

A step after another names the payload field that receives the previous step's result
by passing the placeholder ``<chain>.output`` (or ``<group>.outputs``, a list) as that
field's value. The placeholder is typed as the previous result (``R`` or ``list[R]``),
so mypy checks it against the field's declared type like any other argument: a chain
whose types do not fit is a type error. At runtime the step's payload is stored without
that field; when the step is leased, the queue hands the worker the parents' results
(JSON, as stored) and the worker puts them in the field before pydantic validates the
task, so the result arrives as validated data, never a pickle.

The queue keeps the workflow in its journal: each step is a task that waits
(``pending``) until its parents succeed, becomes ready in the same commit as the last
parent's success, and is cancelled (reason and error naming the failed step) when a
parent dies or is cancelled. A chord's callback runs once, when every member succeeded.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Generic, ParamSpec, TypeVar, cast

from pydantic import BaseModel, ValidationError, create_model

from rayqueue.core.checks import check_new_task, check_step
from rayqueue.core.record import NewTask, Step
from rayqueue.errors import InvalidPayloadError, InvalidWorkflowError
from rayqueue.task import Task, limit_for, to_new_task

P = ParamSpec("P")
R = TypeVar("R")
R2 = TypeVar("R2")

#: Most steps one workflow may have (a chord's callback waits for every member, and the
#: queue checks its parents when each member ends).
MAX_STEPS = 1_000

__all__ = ["Chain", "Group", "MAX_STEPS", "chain", "group"]


@dataclass(frozen=True, eq=False)
class Node:
    """One step as built: a whole task, or a class and a payload without ``feed``."""

    task_class: type[Task[Any]]
    #: the task (first steps, group members and steps that take no input)
    task: Task[Any] | None
    #: the payload as JSON text without the input field (steps that take one)
    payload: str | None
    #: nodes this step waits for (by position in the workflow)
    parents: tuple[int, ...] = ()
    feed: str | None = None
    gather: bool = False
    #: the validated fields but ``feed`` (for a concurrency key), when ``task`` is None
    values: BaseModel | None = None


class _Output:
    """The placeholder ``.output`` / ``.outputs`` returns: stands for the results of
    the steps it was taken from until the workflow runs."""

    __slots__ = ("gather", "tail")

    def __init__(self, tail: tuple[int, ...], gather: bool) -> None:
        self.tail = tail
        self.gather = gather

    def __repr__(self) -> str:
        return "<the previous step's result>"


class _Flow:
    """What chains and groups share: their steps, in enqueue order."""

    __slots__ = ("_nodes", "_outputs", "_tail")

    def __init__(self, nodes: tuple[Node, ...], tail: tuple[int, ...]) -> None:
        self._nodes = nodes
        self._tail = tail
        #: placeholders handed out by this object (``then`` accepts only these)
        self._outputs: list[_Output] = []

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The steps, parents before children."""
        return self._nodes

    def _placeholder(self, gather: bool) -> Any:
        out = _Output(self._tail, gather)
        self._outputs.append(out)
        return out

    def _then(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
              gather: bool) -> Chain[Any]:
        if len(self._nodes) >= MAX_STEPS:
            raise InvalidWorkflowError(f"a workflow has at most {MAX_STEPS} steps")
        if isinstance(task, Task):
            if args or kwargs:
                raise InvalidWorkflowError("then(task) takes a task, or a task class and "
                                           "its fields by name, not both")
            node = Node(type(task), task, None, self._tail)
            return Chain((*self._nodes, node), (len(self._nodes),))
        cls = _task_class(task)
        if args:
            raise InvalidWorkflowError(f"give {cls.__name__}'s fields by name "
                                       f"(then({cls.__name__}, field=...)), not by position")
        feeds = [name for name, value in kwargs.items() if isinstance(value, _Output)]
        if len(feeds) > 1:
            raise InvalidWorkflowError(f"the previous result goes to one field, not "
                                       f"{len(feeds)} ({', '.join(feeds)})")
        if not feeds:
            node = Node(cls, _build(cls, kwargs), None, self._tail)
            return Chain((*self._nodes, node), (len(self._nodes),))
        feed = feeds[0]
        marker = kwargs[feed]
        if not any(marker is out for out in self._outputs):
            raise InvalidWorkflowError(
                f"{feed}= must be the .output (or a group's .outputs) of the workflow "
                "you continue, not of another one")
        if marker.gather != gather:
            raise InvalidWorkflowError("a group's result is .outputs (a list); a chain's "
                                       "is .output")
        if feed not in cls.model_fields:
            raise InvalidWorkflowError(f"{cls.__name__} has no field {feed!r} for the "
                                       f"previous result (fields: "
                                       f"{', '.join(cls.model_fields) or 'none'})")
        _check_fits(self._nodes, self._tail, cls, feed, gather)
        rest = {k: v for k, v in kwargs.items() if k != feed}
        try:
            partial = _partial_model(cls, feed).model_validate(rest)
        except ValidationError as err:
            raise InvalidPayloadError(cls.task_name, str(err)) from err
        node = Node(cls, None, partial.model_dump_json(), self._tail, feed, gather,
                    values=partial)
        return Chain((*self._nodes, node), (len(self._nodes),))


class Chain(_Flow, Generic[R]):
    """Steps that run one after another; ``R`` is the last step's result type.

    Build with :func:`chain` and :meth:`then`; enqueue with ``queue.enqueue(chain)``,
    which returns the ``TaskHandle[R]`` of the last step.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Chain({' -> '.join(n.task_class.__name__ for n in self._nodes)})"

    @property
    def output(self) -> R:
        """The last step's result, to pass as a field of the next step:
        ``c.then(Next, field=c.output)`` (a placeholder, typed ``R`` for mypy)."""
        return cast(R, self._placeholder(False))

    def then(self, task: Callable[P, Task[R2]], /, *args: P.args,
             **kwargs: P.kwargs) -> Chain[R2]:
        """A chain with one more step, run once this chain's last step has succeeded.

        ``then(Next, field=chain.output, other=...)``: ``Next`` gets the last result in
        ``field`` (checked by mypy against the field's type) and the other fields as
        given. ``then(Next, ...)`` without ``.output``: runs after it and gets no
        data. A function task's ``bind`` works in place of a class.

        Raises:
            InvalidWorkflowError: a placeholder of another workflow, a field that the
                class does not have, a result type that does not fit the field.
            InvalidPayloadError: the other fields do not validate.
        """
        return self._then(task, args, kwargs, gather=False)


class Group(_Flow, Generic[R]):
    """Tasks that run side by side (fanned out over the pool); enqueued with
    ``queue.enqueue(group)``, whose handle's ``result()`` is the ``list[R]`` of their
    results, in order. ``group.then(Callback, field=group.outputs)`` is a chord."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Group({len(self._nodes)} tasks)"

    @property
    def outputs(self) -> list[R]:
        """Every member's result, in order, to pass as a field of the callback:
        ``g.then(Summary, reports=g.outputs)`` (a placeholder typed ``list[R]``)."""
        return cast(list[R], self._placeholder(True))

    def then(self, task: Callable[P, Task[R2]], /, *args: P.args,
             **kwargs: P.kwargs) -> Chain[R2]:
        """A chord: a callback run exactly once, when every member has succeeded (one
        member failing for good cancels it). See :meth:`Chain.then`."""
        return self._then(task, args, kwargs, gather=True)


def chain(first: Task[R]) -> Chain[R]:
    """A workflow that starts with ``first``; continue it with :meth:`Chain.then`."""
    if not isinstance(first, Task):
        raise InvalidWorkflowError(f"a chain starts with a Task instance, got "
                                   f"{type(first).__name__}")
    return Chain((Node(type(first), first, None),), (0,))


def group(tasks: Iterable[Task[R]]) -> Group[R]:
    """Tasks to run side by side; :meth:`Group.then` adds a callback (a chord).

    Raises:
        InvalidWorkflowError: no tasks, more than :data:`MAX_STEPS`, or not tasks.
    """
    if isinstance(tasks, Task) or not isinstance(tasks, Iterable):
        got = "one Task" if isinstance(tasks, Task) else type(tasks).__name__
        raise InvalidWorkflowError(f"group() takes an iterable of tasks, got {got}")
    members = list(tasks)
    if not members:
        raise InvalidWorkflowError("a group needs at least one task")
    if len(members) >= MAX_STEPS:
        raise InvalidWorkflowError(f"a group has at most {MAX_STEPS - 1} tasks (with its "
                                   f"callback, {MAX_STEPS} steps), got {len(members)}")
    bad = next((m for m in members if not isinstance(m, Task)), None)
    if bad is not None:
        raise InvalidWorkflowError(f"a group holds Task instances, got {type(bad).__name__}")
    return Group(tuple(Node(type(m), m, None) for m in members), tuple(range(len(members))))


def _task_class(task: Any) -> type[Task[Any]]:
    """The task class ``then`` was given: a Task subclass or a function task's bind."""
    if isinstance(task, type) and issubclass(task, Task) and hasattr(task, "task_name"):
        return task
    owner = getattr(task, "__self__", None)
    cls = getattr(owner, "task_class", None)
    if isinstance(cls, type) and issubclass(cls, Task):
        return cls
    raise InvalidWorkflowError(f"then() takes a Task subclass, a Task instance or a function "
                               f"task's .bind, got {task!r:.80}")


def _build(cls: type[Task[Any]], kwargs: dict[str, Any]) -> Task[Any]:
    try:
        return cls(**kwargs)
    except ValidationError as err:
        raise InvalidPayloadError(cls.task_name, str(err)) from err


@cache
def _partial_model(cls: type[Task[Any]], feed: str) -> type[BaseModel]:
    """A model of ``cls``'s fields but ``feed`` (the class's own field definitions and
    config), to validate and serialize a step's payload before its input exists. The
    class's own validators run on the worker, with the input in place."""
    fields: dict[str, Any] = {name: (info.annotation, info)
                              for name, info in cls.model_fields.items() if name != feed}
    config = {k: v for k, v in cls.model_config.items() if k != "frozen"}
    return create_model(f"{cls.__name__}Without_{feed}", __config__=config,  # type: ignore[call-overload, no-any-return]
                        **fields)


def _check_fits(nodes: tuple[Node, ...], tail: tuple[int, ...], cls: type[Task[Any]],
                feed: str, gather: bool) -> None:
    """Refuse, where plain classes make it certain, a previous result type that the
    field cannot hold (mypy catches these where the code is type-checked)."""
    want: Any = cls.model_fields[feed].annotation
    if gather:
        if typing.get_origin(want) is not list:
            return
        args = typing.get_args(want)
        want = args[0] if args else Any
    for pos in tail:
        got = nodes[pos].task_class.result_type()
        if _model(got) and _model(want) and not issubclass(got, want):
            raise InvalidWorkflowError(
                f"{nodes[pos].task_class.__name__} returns {got.__name__}, which "
                f"{cls.__name__}.{feed} ({want.__name__}{' list' if gather else ''}) "
                "cannot take")


def _model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def to_news(flow: _Flow, workflow_id: str, headers: dict[str, str] | None) -> list[NewTask]:
    """The enqueue requests of ``flow``'s steps, ids ``<workflow_id>@<n>`` (so a sharded
    queue keeps a workflow in one shard: one actor call and one journal write)."""
    nodes = flow.nodes
    ids = [f"{workflow_id}@{i}" for i in range(len(nodes))]
    out = []
    for task_id, node in zip(ids, nodes, strict=True):
        if node.task is not None:
            new = to_new_task(node.task, task_id=task_id, headers=headers)
        else:
            cls = node.task_class
            new = NewTask(task_name=cls.task_name, payload=node.payload or "{}",
                          priority=cls.priority, pool=cls.pool, task_id=task_id,
                          retry=cls.retry, timeout=cls.timeout, headers=headers or None,
                          limit=limit_for(cls, node.values))
        new = replace(new, step=check_step(Step(
            workflow_id, tuple(ids[p] for p in node.parents), node.feed, node.gather)))
        check_new_task(new)
        out.append(new)
    return out
