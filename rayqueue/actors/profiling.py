"""An on-demand CPU profile of an actor's event loop (pyinstrument, a dev dependency).

``make bench`` profiles the queue actor during W1 and saves the HTML report, so the
next person sees where the time goes without attaching a profiler by hand.
"""

from __future__ import annotations

from typing import Any


class LoopProfiler:
    """Starts and stops one pyinstrument profile of the calling thread."""

    def __init__(self) -> None:
        self._profiler: Any = None

    def start(self, interval: float = 0.0005) -> None:
        """Start sampling the thread this is called from (an actor's event loop)."""
        try:
            from pyinstrument import Profiler
        except ImportError as err:
            raise RuntimeError("profiling needs pyinstrument: pip install pyinstrument") from err
        if self._profiler is None:
            self._profiler = Profiler(interval=interval, async_mode="disabled")
            self._profiler.start()

    def stop(self) -> dict[str, str]:
        """Stop; returns the report as ``html`` and as ``text`` (empty if none ran)."""
        if self._profiler is None:
            return {"html": "", "text": ""}
        profiler, self._profiler = self._profiler, None
        profiler.stop()
        return {"html": profiler.output_html(),
                "text": profiler.output_text(unicode=False, color=False, show_all=False)}
