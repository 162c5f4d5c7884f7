"""Processes as the fault tests see them: through /proc, with no Ray call (the faults
under test may have taken Ray's own bookkeeping down)."""

from __future__ import annotations


def state(pid: int) -> str:
    """The process state letter (R, S, T for stopped, Z for a zombie...), or "" once it
    is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (and is not a zombie waiting to be reaped)."""
    return state(pid) not in ("", "Z")
