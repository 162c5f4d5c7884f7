"""A free TCP port on 127.0.0.1 for a server a test starts (Prometheus, Ray's agents,
PostgreSQL, Redis). Free when asked: the server binds it a moment later."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now, from the kernel's ephemeral range."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
