"""Rules of the package's shape that import-linter cannot state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import rayqueue

PACKAGE = Path(rayqueue.__file__).parent
#: the one module that reads the environment (tests' switches live in rayqueue.testing)
ALLOWED = {PACKAGE / "settings.py"}


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in ALLOWED and "testing" not in path.relative_to(PACKAGE).parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"os\.environ|getenv\(", line)
    ]
    assert readers == [], "read the environment through rayqueue.settings"


def test_actor_classes_are_made_remote_once_per_process() -> None:
    """``ray.remote(SomeActor)`` anew for every actor made Ray export (and disassemble)
    the class again each time; rayqueue.actors.remote_class makes each once."""
    makers = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "actors" / "__init__.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"ray\.remote\(\s*[A-Z]\w*Actor\b|ray\.remote\(concurrency_groups", line)
    ]
    assert makers == [], "make actor classes remote with rayqueue.actors.remote_class"


def test_remote_class_is_made_once_per_class(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from rayqueue.actors import remote_class

    made: list[object] = []

    def remote(*args: object, **kwargs: object) -> object:
        made.append(args or kwargs)
        return (lambda cls: ("remote", cls)) if kwargs else ("remote", args[0])

    class OneActor:
        pass

    class GroupedActor:
        pass

    monkeypatch.setattr(ray, "remote", remote)
    first = remote_class(OneActor)
    assert remote_class(OneActor) is first and first == ("remote", OneActor)
    grouped = remote_class(GroupedActor, (("control", 8),))
    assert remote_class(GroupedActor, (("control", 8),)) is grouped
    assert grouped == ("remote", GroupedActor)
    assert made == [(OneActor,), {"concurrency_groups": {"control": 8}}]
