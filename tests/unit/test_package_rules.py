"""Rules of the package's shape that import-linter cannot state."""

from __future__ import annotations

import re
from pathlib import Path

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
