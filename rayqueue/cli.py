"""The ``rayqueue`` command: look at a queue and act on it from a shell.

Thin by design: parse, call the client library, print a table. It attaches to a running
Ray cluster (``--address``, else ``RAY_ADDRESS``, else the one cluster running on this
machine: with several it refuses and lists them) and to an existing queue; it never
starts either, except ``rayqueue demo``. ``rayqueue reshard`` and ``rayqueue journal``
work on the journal files alone. Ray and the client are imported only by the commands
that need them, so ``--help`` and refusals answer at once.

Exit codes: 0 done; 1 the operation failed (the message says why); 2 bad usage;
3 no Ray cluster (or several and none chosen) or no such queue.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from rich.console import Console

EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3


class _LazyConsole:
    """rich's console, made on first use: ``--help`` and refusals do not import rich."""

    _console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            #: Piped output is not cut to 80 columns: ids must survive a grep.
            self._console = Console(width=None if sys.stdout.isatty() else 200)
        return getattr(self._console, name)


console = _LazyConsole()


#: ``ray.init`` keywords of the CLI: no worker output, no "Connected to Ray" lines.
_RAY_INIT: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}


def _connect(args: argparse.Namespace, queue: bool = True) -> Any:
    """Attach to the queue (``queue=False``: to the cluster only; returns None)."""
    import rayqueue
    from rayqueue.errors import QueueUnavailableError, RayQueueError

    try:
        if not queue:
            from rayqueue import bootstrap

            bootstrap._attach(args.address, _RAY_INIT)
            return None
        return rayqueue.connect(args.queue, address=args.address, ray_init=_RAY_INIT)
    except QueueUnavailableError as err:
        raise _Exit(EXIT_UNAVAILABLE, str(err)) from None
    except RayQueueError:
        raise
    except (ConnectionError, ValueError, RuntimeError, OSError) as err:
        # ray.init's answers to an address it cannot use or reach
        raise _Exit(EXIT_UNAVAILABLE, f"no Ray cluster at {args.address!r} ({err}); start "
                    "one (`ray start --head`) or pass --address") from None


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def cmd_status(args: argparse.Namespace) -> None:
    q = _connect(args)
    stats, metrics, workers = q.stats(), q.metrics(), q.workers()
    flags = [f for f, on in (("paused", stats.paused), ("closed", stats.closed),
                             (f"{q.shards} shards", q.shards > 1)) if on]
    console.print(f"[bold]queue {q.name}[/bold]: {stats.size} unfinished"
                  + (f" ({', '.join(flags)})" if flags else ""))
    _table("tasks by state", ["state", "tasks"], sorted(stats.by_state.items()))
    _table("ready by pool and priority", ["pool", "priority", "ready"],
           [(pool, prio, n) for pool, by in stats.ready_by_priority.items()
            for prio, n in sorted(by.items(), reverse=True)])
    _table("workers", ["pool", "worker", "node", "state", "tasks"],
           [(w.pool, w.id, (w.node_id or "")[:8], w.activity, w.tasks) for w in workers])
    _table(f"finished per second (last {metrics.window_s:.0f} s)", ["outcome", "rate"],
           [(k, f"{v:.1f}") for k, v in sorted(metrics.rates.items())])


def cmd_ls(args: argparse.Namespace) -> None:
    _connect(args, queue=False)
    from rayqueue import registry

    _table("queues", ["queue", "shards", "journal", "created", "running"],
           [(e.name, e.shards, e.journal or "(memory, or not registered)",
             "" if e.created is None else
             dt.datetime.fromtimestamp(e.created).isoformat(" ", "seconds"),
             "yes" if e.running else "no")
            for e in registry.entries()])


def cmd_enqueue(args: argparse.Namespace) -> None:
    for module in args.imports:
        try:
            importlib.import_module(module)
        except (ImportError, ValueError, TypeError) as err:  # (also "", ".relative")
            raise _Exit(EXIT_USAGE, f"--import {module!r}: {err}") from None
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as err:
        raise _Exit(EXIT_USAGE, f"the payload is not JSON: {err}") from None
    except RecursionError:
        raise _Exit(EXIT_USAGE, "the payload is nested too deeply to read") from None
    q = _connect(args)
    from rayqueue import codebook

    codebook.resolve(q.name, args.task)  # a class shipped by any client counts too
    handle = q.enqueue_payload(args.task, payload, priority=args.priority, delay=args.delay,
                               wait=True)  # the id printed is of a task in the journal
    console.print(handle.id)
    if args.wait is not None:
        value = handle.result(timeout=args.wait)
        from pydantic import BaseModel

        if isinstance(value, BaseModel):  # a typed result: print it as its JSON
            value = value.model_dump(mode="json")
        console.print_json(json.dumps(value, default=str))


def cmd_dead(args: argparse.Namespace) -> None:
    dead = _connect(args).dead_letters(args.limit)
    _table("dead letters", ["id", "task", "reason", "attempts", "error"],
           [(d.id, d.task_name, d.reason, d.attempts,
             f"{d.error_type}: {(d.error_message or '')[:80]}") for d in dead])


def cmd_schedules(args: argparse.Namespace) -> None:
    q = _connect(args)
    if args.resume:
        for schedule_id in args.resume:
            console.print(f"{schedule_id}: resumed, next run "
                          f"{_local(q.resume_schedule(schedule_id).next_run)}")
        return
    _table("schedules", ["id", "task", "trigger", "next run", "last run", "runs", "paused"],
           [(s.id, s.task_name, s.trigger, _local(s.next_run), _local(s.last_run), s.runs,
             s.paused_reason or "") for s in q.schedules()])


def cmd_tasks(args: argparse.Namespace) -> None:
    page = _connect(args).tasks(state=args.state or None, type=args.type,
                                priority=args.priority, id_prefix=args.id,
                                limit=args.limit, after=args.after)
    _table("tasks (newest first)", ["id", "task", "state", "priority", "attempts",
                                    "enqueued", "error"],
           [(t.id, t.task_name, t.state, t.priority, t.attempts, _local(t.created_at),
             f"{t.error_type}: {(t.error_message or '')[:60]}" if t.error_type else None)
            for t in page.tasks])
    if page.next is not None:
        console.print(f"older tasks: --after {page.next}", markup=False, highlight=False)


def _confirm(question: str, yes: bool) -> None:
    """Ask ``question`` on the terminal; without one, ``--yes`` must say it."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise _Exit(EXIT_USAGE, f"{question} Pass --yes to confirm (no terminal to ask on)")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise _Exit(EXIT_FAILED, "not confirmed: nothing was changed")


def cmd_purge(args: argparse.Namespace) -> None:
    from rayqueue.core.record import TaskState

    unfinished = [s for s in args.state if not TaskState(s).terminal]
    if unfinished:  # before asking or connecting
        raise _Exit(EXIT_USAGE, f"purge: cannot purge {', '.join(unfinished)} tasks: only "
                    "succeeded, dead and cancelled tasks can be purged")
    q = _connect(args)
    _confirm(f"Remove every {', '.join(args.state)} task of queue {q.name} from the queue "
             "and its journal?", args.yes)
    console.print(f"{q.purge(args.state)} tasks purged", markup=False, highlight=False)


def cmd_delete(args: argparse.Namespace) -> None:
    import rayqueue
    from rayqueue.errors import ClusterNotFoundError, QueueUnavailableError

    _confirm(f"Delete queue {args.name}: its actors (it must be closed or shut down), its "
             f"registry entry and its journal{f' {args.journal}' if args.journal else ''}, "
             "with every task and schedule in it?", args.yes)
    try:
        removed = rayqueue.delete(args.name, journal=args.journal, address=args.address,
                                  ray_init=_RAY_INIT)
    except ClusterNotFoundError as err:
        raise _Exit(EXIT_UNAVAILABLE, str(err)) from None
    except QueueUnavailableError as err:
        raise _Exit(EXIT_UNAVAILABLE, str(err)) from None
    console.print(f"queue {args.name} deleted; journal files removed: "
                  f"{', '.join(removed) if removed else 'none found on this machine'}",
                  markup=False, highlight=False)


def _local(epoch: float | None) -> str:
    return "" if epoch is None else dt.datetime.fromtimestamp(epoch).isoformat(" ", "seconds")


def cmd_retry(args: argparse.Namespace) -> None:
    q = _connect(args)
    for task_id in args.ids:
        console.print(f"{task_id}: {q.retry_dead(task_id).state}")


def cmd_cancel(args: argparse.Namespace) -> None:
    q = _connect(args)
    for task_id in args.ids:
        console.print(f"{task_id}: {q.cancel(task_id, force=args.force)}")


def cmd_get(args: argparse.Namespace) -> None:
    q = _connect(args)
    rows: list[tuple[Any, ...]] = []
    for task_id in args.ids:
        i = q.get(task_id)
        progress = None if i.progress is None else f"{i.progress:.0%}" + (
            f" {i.progress_message}" if i.progress_message else "")
        error = f"{i.error_type}: {(i.error_message or '')[:80]}" if i.error_type else None
        rows.append((i.id, i.task_name, i.state, i.attempts, i.worker, progress,
                     i.reason, error, None if i.workflow is None else (
                         f"{i.workflow}" + (f" after {', '.join(i.parents[:3])}"
                                            f"{'...' if len(i.parents) > 3 else ''}"
                                            if i.parents else ""))))
    columns = ["id", "task", "state", "attempts", "worker", "progress", "reason", "error"]
    if any(r[-1] is not None for r in rows):  # workflow steps: which, and after what
        columns.append("workflow")
    else:
        rows = [r[:-1] for r in rows]
    _table("tasks", columns, rows)


def cmd_pause(args: argparse.Namespace) -> None:
    _connect(args).pause()
    console.print("paused")


def cmd_resume(args: argparse.Namespace) -> None:
    _connect(args).resume()
    console.print("resumed")


def cmd_pools(args: argparse.Namespace) -> None:
    bounds = _pool_bounds(*args.resize) if args.resize else None  # before connecting
    q = _connect(args)
    if bounds is not None:
        try:
            q.resize_pool(args.resize[0], *bounds)
        except ValueError as err:
            raise _Exit(EXIT_FAILED, str(err)) from None
    _table("pools", ["pool", "workers", "bounds", "desired", "ready", "leased", "deaths",
                     "placement"],
           [(p.name, p.workers, f"{p.min_workers}..{p.max_workers}", p.desired, p.ready,
             p.leased, p.deaths, p.infeasible or "ok") for p in q.pools()])


def _pool_bounds(name: str, low: str, high: str) -> tuple[int, int]:
    """``--resize POOL MIN MAX``'s bounds, checked as PoolConfig would."""
    from rayqueue.config import MAX_POOL_WORKERS

    def bound(text: str, least: int) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not least <= value <= MAX_POOL_WORKERS:
            raise _Exit(EXIT_USAGE, f"pools --resize {name}: {text!r} is not a worker count "
                        f"from {least} to {MAX_POOL_WORKERS}")
        return value

    low_n, high_n = bound(low, 0), bound(high, 1)
    if low_n > high_n:
        raise _Exit(EXIT_USAGE, f"pools --resize {name}: MIN ({low_n}) > MAX ({high_n})")
    return low_n, high_n


def cmd_dashboard(args: argparse.Namespace) -> None:
    from rayqueue.dashboard import serve, stopped_by_sigterm

    q = _connect(args)
    with stopped_by_sigterm():  # SIGTERM stops it as Ctrl-C does: port closed, exit 0
        try:
            dashboard = serve(q, port=args.port, host=args.host)
        except OSError as err:  # an unknown host name, a port in use
            raise _Exit(EXIT_FAILED, f"cannot serve the dashboard on {args.host}:{args.port}: "
                        f"{err.strerror or err}") from None
        try:
            console.print(f"serving the dashboard of {q.name} at {dashboard.url} (Ctrl-C or "
                          "SIGTERM stops it)", markup=False, highlight=False)
            dashboard.thread.join()
        finally:
            dashboard.stop()
    console.print("dashboard stopped", markup=False, highlight=False)


def cmd_reshard(args: argparse.Namespace) -> None:
    from rayqueue.bootstrap import default_journal
    from rayqueue.storage.layout import reshard, shard_journals

    journal = args.journal or default_journal(args.queue)
    from rayqueue.storage.url import is_postgres_url

    if is_postgres_url(journal):
        raise _Exit(EXIT_USAGE, "reshard works on SQLite journals; a PostgreSQL journal "
                    "cannot be resharded yet (start the queue with the shard count its "
                    "schemas were written with)")
    try:
        done = reshard(journal, args.shards)
    except OSError as err:  # a rename or a directory sync: the message says which file
        raise _Exit(EXIT_FAILED, f"reshard failed: {err}") from None
    _table(f"{journal}: {done.was} -> {done.now} shard(s)", ["journal", "tasks", "schedules"],
           [(f, t, n) for f, t, n in zip(shard_journals(journal, done.now), done.tasks,
                                         done.schedules, strict=True)])
    console.print("old journals kept (delete them once the queue runs well): "
                  + ", ".join(done.kept), highlight=False)
    if done.corrupt:
        console.print(f"{done.corrupt} unreadable task row(s) carried over as dead letters "
                      "(reason corrupt_record), as a restarted queue shows them; the old "
                      "journals keep the rows as they were", highlight=False)
    console.print(f"start the queue with shards={done.now} now", highlight=False)


def cmd_journal(args: argparse.Namespace) -> None:
    from rayqueue.bootstrap import default_journal
    from rayqueue.errors import JournalNotFoundError
    from rayqueue.storage import maintenance

    if (args.file is None) != (args.action == "check"):
        raise _Exit(EXIT_USAGE, f"journal {args.action} takes "
                    + ("no file" if args.action == "check" else "the backup FILE"))
    journal = args.journal or default_journal(args.queue)
    from rayqueue.storage.url import is_postgres_url

    if is_postgres_url(journal):
        _check_postgres(args, journal)
        return
    try:
        if args.action == "check":
            report = maintenance.check(journal)
        elif args.action == "backup":
            report = maintenance.backup(journal, args.file)
            console.print(f"backed up {journal} to {args.file}", highlight=False)
        else:
            kept = maintenance.restore(args.file, journal)
            console.print(f"restored {journal} from {args.file}"
                          + (f"; the files it replaced were moved to {', '.join(kept)}"
                             if kept else ""), highlight=False)
            report = maintenance.check(journal)
    except JournalNotFoundError as err:
        raise _Exit(EXIT_UNAVAILABLE, str(err)) from None
    except OSError as err:
        raise _Exit(EXIT_FAILED, f"journal {args.action} failed: {err}") from None
    side = "none" if report.side_seq is None else f"#{report.side_seq}"
    _table(f"{report.path}: ok", ["", ""], [
        ("journal id", report.journal_id or "(none yet: adopted on the next open)"),
        ("queue", f"{report.queue or '?'}, shard {report.shard} of {report.shards}"),
        ("last commit", f"#{report.seq} (side file: {side})"),
        ("schedules", report.schedules),
        *((f"tasks {state}", n) for state, n in sorted(report.by_state.items())),
        *((f"file {name}", f"{size} bytes") for name, size in report.files.items())])


def _check_postgres(args: argparse.Namespace, url: str) -> None:
    """``rayqueue journal check --journal postgresql://...``: read-only, takes no epoch."""
    from rayqueue.errors import JournalNotFoundError
    from rayqueue.storage.url import redact

    if args.action != "check":
        raise _Exit(EXIT_USAGE, f"journal {args.action} works on SQLite files; back up a "
                    "PostgreSQL journal with pg_dump (--schema 'rayqueue_<queue>*') and "
                    "restore it with pg_restore, with the queue shut down")
    try:
        from rayqueue.storage.postgres import inspect
    except ImportError as err:
        raise _Exit(EXIT_FAILED, f"psycopg cannot be imported ({err}): pip install "
                    "'rayqueue[postgres]'") from None
    try:
        found = inspect(url, args.queue)
    except JournalNotFoundError as err:
        raise _Exit(EXIT_UNAVAILABLE, str(err)) from None
    for shard in found:
        meta = shard.meta
        _table(f"{redact(url)} schema {shard.schema}: ok", ["", ""], [
            ("journal id", meta.get("journal_id", "?")),
            ("queue", f"{meta.get('queue', '?')}, shard {meta.get('shard', '?')} of "
                      f"{meta.get('shards', '?')}"),
            ("schema version", shard.version),
            ("last commit", f"#{shard.seq}"),
            ("owner", f"epoch {shard.epoch} ({shard.owner or 'never opened'})"),
            ("schedules", shard.schedules),
            *((f"tasks {state}", n) for state, n in sorted(shard.by_state.items()))])


def cmd_demo(args: argparse.Namespace) -> None:
    from rayqueue.examples import demo

    demo.main()


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit code 2, as argparse's)."""

    def error(self, message: str) -> NoReturn:
        _say(f"{self.prog}: {message} (see {self.prog} --help)")
        raise SystemExit(EXIT_USAGE)


def _number(kind: type[int] | type[float], least: float, most: float,
            what: str) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` from ``least`` to ``most``."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            value = None
        if value is None or not least <= value <= most:  # NaN fails both comparisons
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {what} ({least:g} to {most:g})")
        return value
    return parse


def _queue_name(text: str) -> str:
    from rayqueue.config import check_queue_name
    from rayqueue.errors import InvalidNameError

    try:
        return check_queue_name(text)
    except InvalidNameError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _path(text: str) -> str:
    """An argparse type: a path the file system can be given (a command line carries
    no NUL, and its undecodable bytes come back as they were; ``main(argv)`` called from
    Python may hold any str)."""
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file name this system can hold "
                                         f"({err.reason})") from None
    if b"\0" in raw:
        raise argparse.ArgumentTypeError(f"{text!r} holds a NUL byte")
    return text


def _shard_count(text: str) -> int:
    from rayqueue.core.shards import MAX_SHARDS

    value: int = _number(int, 1, MAX_SHARDS, "a shard count")(text)
    return value


#: Argument types of the command line.
PORT = _number(int, 1, 65535, "a port")
LIMIT = _number(int, 0, 100_000, "a count")
SECONDS = _number(float, 0, 365 * 86_400, "a number of seconds")


def parser() -> argparse.ArgumentParser:
    """The command line (also what ``--help`` shows)."""
    p = _Parser(
        prog="rayqueue", description="Look at a rayqueue queue and act on it from a shell.",
        epilog="Exit codes: 0 done, 1 the operation failed, 2 bad usage, 3 no Ray cluster "
               "(or several and no --address) or no such queue.")
    p.add_argument("--queue", "-q", default="default", type=_queue_name,
                   help="queue name (default: default)")
    p.add_argument("--address", default=None,
                   help="the Ray cluster to attach to, HOST:PORT of its GCS or ray://... "
                   "(default: $RAY_ADDRESS, else the one cluster running on this machine; "
                   "with several, it refuses and lists them)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help)
        cmd.set_defaults(fn=fn)
        return cmd

    add("ls", cmd_ls, "list the queues on the cluster (shards, journal, created)")
    add("status", cmd_status, "depth by state and priority, workers, rates")
    e = add("enqueue", cmd_enqueue, "enqueue a task by name with a JSON payload; prints its id")
    e.add_argument("task", help="task name, e.g. shop.payment")
    e.add_argument("payload", help='JSON object, e.g. \'{"order_id": "A-1"}\'')
    e.add_argument("--priority", type=int)
    e.add_argument("--delay", type=SECONDS, help="seconds from now")
    e.add_argument("--import", dest="imports", action="append", default=[],
                   metavar="MODULE", help="import MODULE first (registers its task types)")
    e.add_argument("--wait", type=SECONDS, metavar="SECONDS",
                   help="wait this long for the result and print it")
    s = add("schedules", cmd_schedules, "list periodic schedules (trigger, next and last "
            "run, why paused); --resume ID starts a paused one again")
    s.add_argument("--resume", nargs="+", metavar="ID")
    d = add("dead", cmd_dead, "list dead letters with their errors")
    d.add_argument("--limit", type=LIMIT, default=50)
    states = ["scheduled", "ready", "leased", "failed", "succeeded", "dead", "cancelled"]
    t = add("tasks", cmd_tasks, "list tasks newest first, filtered by state, type, "
            "priority or id prefix, a page at a time")
    t.add_argument("--state", action="append", choices=states, default=[])
    t.add_argument("--type", help="a task name, e.g. shop.payment")
    t.add_argument("--priority", type=_number(int, 0, 100, "a priority"))
    t.add_argument("--id", help="the task id or its beginning")
    t.add_argument("--limit", type=_number(int, 1, 500, "a page size"), default=50)
    t.add_argument("--after", help="the cursor printed under the page before")
    pu = add("purge", cmd_purge, "remove finished tasks (succeeded, dead, cancelled) from "
             "the queue and its journal; asks first")
    pu.add_argument("--state", action="append", choices=states, required=True)
    pu.add_argument("--yes", action="store_true", help="do not ask")
    de = add("delete", cmd_delete, "remove a queue for good: actors (closed or shut down "
             "first), registry entry and journal; asks first")
    de.add_argument("name", type=_queue_name)
    de.add_argument("--journal", type=_path, help="the journal, as given to rayqueue.init "
                    "(default: the registry's, else $RAYQUEUE_HOME/<queue>.sqlite)")
    de.add_argument("--yes", action="store_true", help="do not ask")
    add("retry", cmd_retry, "put dead tasks back in the queue").add_argument("ids", nargs="+")
    c = add("cancel", cmd_cancel, "cancel tasks, waiting or running")
    c.add_argument("ids", nargs="+")
    c.add_argument("--force", action="store_true",
                   help="kill the worker of a running task (as for a timeout)")
    add("get", cmd_get, "show tasks: state, attempts, worker, progress, error").add_argument(
        "ids", nargs="+")
    add("pause", cmd_pause, "stop handing tasks to workers")
    add("resume", cmd_resume, "hand tasks to workers again")
    pools = add("pools", cmd_pools, "show pools; --resize POOL MIN MAX changes bounds")
    pools.add_argument("--resize", nargs=3, metavar=("POOL", "MIN", "MAX"))
    dash = add("dashboard", cmd_dashboard, "serve the web dashboard")
    dash.add_argument("--port", type=PORT, default=8400)
    dash.add_argument("--host", default="127.0.0.1")
    r = add("reshard", cmd_reshard, "with the queue shut down, rewrite its journals for "
            "another shard count (needs no Ray; run it on the journal's node)")
    r.add_argument("--shards", type=_shard_count,
                   required=True, help="the new shard count")
    r.add_argument("--journal", type=_path, help="the base journal, as given to rayqueue.init "
                   "(default: .rayqueue/<queue>.sqlite)")
    j = add("journal", cmd_journal, "check, back up or restore a queue's SQLite journal, "
            "or check a PostgreSQL one (needs no Ray; run it on the journal's node)")
    j.add_argument("action", choices=["check", "backup", "restore"],
                   help="check: integrity, identity and counts, read-only; backup FILE: a "
                   "consistent copy, also while the queue runs; restore FILE: put a backup "
                   "in place (the queue shut down)")
    j.add_argument("file", nargs="?", type=_path, help="the backup file (backup and restore)")
    j.add_argument("--journal", type=_path, help="the journal, as given to rayqueue.init (default: "
                   ".rayqueue/<queue>.sqlite); a postgresql:// URL is checked read-only "
                   "(every shard's schema; no epoch taken)")
    add("demo", cmd_demo, "run the e-commerce demo on a private local Ray")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = parser().parse_args(argv)
    from rayqueue.errors import QueueUnavailableError, RayQueueError

    try:
        args.fn(args)
    except _Exit as err:
        _say(f"rayqueue: {err}")
        return err.code
    except QueueUnavailableError as err:
        _say(f"rayqueue: {err}")
        return EXIT_UNAVAILABLE
    except (RayQueueError, ValueError) as err:
        _say(f"rayqueue: {type(err).__name__}: {err}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except RecursionError:
        _say("rayqueue: the input is nested too deeply to handle")
        return EXIT_FAILED
    except Exception as err:  # a bug or an error no one mapped: still one line
        _say(f"rayqueue: unexpected {type(err).__name__}: {err} (please report it)")
        return EXIT_FAILED
    return 0


def _say(message: str) -> None:
    """One line on stderr, taken literally: errors quote ids and payloads, which may
    hold newlines or brackets that rich would read as markup."""
    print(" ".join(message.split()), file=sys.stderr)


def entry() -> NoReturn:
    """The ``rayqueue`` command as a process: run it, flush its output, and end at once.

    A command that attached to Ray leaves without Ray's disconnect handshake: ``ray.
    shutdown()`` costs 0.3 s here (the core worker's driver shutdown), its exit hook
    0.8 s, for a process that owns nothing on the cluster by then (every call it made
    was answered before its output was printed). The raylet sees the driver's socket
    close and marks its job finished, as for any driver that exits. In-process callers
    use :func:`main`, which leaves Ray as it was."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
