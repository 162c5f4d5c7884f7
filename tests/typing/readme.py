"""Type-check every Python block of the README with mypy --strict (run by `make lint`).

Each ```python block becomes a module of its own in a temporary directory and is
checked with the project's mypy settings. A block that is deliberately not a program
(a fragment) is preceded by ``<!-- not-checked: reason -->``; a block indented
under a list item is dedented first.
"""

from __future__ import annotations

import re
import sys
import tempfile
import textwrap
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- not-checked:[^>]*-->\s*)?```python\n(.*?)```", re.S)


def blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of every checked Python block."""
    out = []
    for match in BLOCK.finditer(text):
        if match.group(1):
            continue
        line = text.count("\n", 0, match.start(2)) + 1
        out.append((line, textwrap.dedent(match.group(2))))
    return out


def main() -> int:
    found = blocks((ROOT / "README.md").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for line, source in found:
            path = Path(tmp) / f"readme_line_{line}.py"
            path.write_text(source)
            files.append(str(path))
        stdout, stderr, status = api.run(
            ["--config-file", str(ROOT / "pyproject.toml"), "--strict", *files])
    print(stdout.replace(tmp + "/", "README.md "), end="")
    print(stderr, end="", file=sys.stderr)
    print(f"checked {len(found)} README block(s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
