"""Which Ray cluster to attach to: found, never guessed, never started.

``connect``, ``queues`` and the CLI attach to a running cluster. Without an address (or
``RAY_ADDRESS``) they look for the Ray clusters running on this machine, as Ray's own
``ray._private.services.find_gcs_addresses`` does (each node's raylet process names its
cluster's GCS in ``--gcs-address``): none is an error that says how to start one;
several is an error that lists them, where Ray would pick the latest ``ray start`` (or
any) and a ``retry`` could act on another cluster's queue of the same name.

This module imports neither Ray nor the client, so the CLI can refuse quickly.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from rayqueue import settings
from rayqueue.errors import AmbiguousClusterError, ClusterNotFoundError

#: How long a quick check of a ``host:port`` waits for the GCS to accept a connection.
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class LocalCluster:
    """A Ray cluster with a node on this machine."""

    #: its GCS address, ``host:port`` (what ``address=`` takes)
    address: str
    #: the node's session directory (under the cluster's temp dir), if the raylet says
    session_dir: str | None = None


def _flag(args: list[str], name: str) -> str | None:
    """The value of ``--name=value`` in a command line (Ray's raylet passes them so)."""
    for arg in args:
        for part in arg.split(" "):  # a command line rewritten by setproctitle is one string
            if part.startswith(f"{name}="):
                value = part.split("=", 1)[1]
                if value and value != "None":
                    return value
    return None


def _command_lines() -> list[list[str]] | None:
    """Every process's command line, read from ``/proc`` (None where there is none)."""
    proc = Path("/proc")
    if not (proc / "self" / "cmdline").exists():
        return None
    lines = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:  # gone meanwhile, or not ours to read
                continue
            lines.append(raw.decode(errors="replace").rstrip("\0").split("\0"))
    return lines


def local_clusters() -> list[LocalCluster]:
    """The Ray clusters with a raylet running on this machine, by GCS address."""
    lines = _command_lines()
    if lines is None:  # no /proc (macOS): Ray's own search, with its bundled psutil
        from ray._private.services import find_gcs_addresses

        return [LocalCluster(a) for a in sorted(find_gcs_addresses())]
    found: dict[str, LocalCluster] = {}
    for cmdline in lines:
        if not cmdline or not cmdline[0].split(" ")[0].endswith("raylet"):
            continue
        address = _flag(cmdline, "--gcs-address")
        if address is not None and address not in found:
            found[address] = LocalCluster(address, _flag(cmdline, "--session_dir"))
    return sorted(found.values(), key=lambda c: c.address)


def _split(address: str) -> tuple[str, int] | None:
    """``host:port`` of a plain GCS address (None for ``ray://`` and other forms)."""
    if "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def reachable(address: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether something accepts connections at ``address`` (True when it cannot tell:
    a ``ray://`` address is for Ray to judge)."""
    parts = _split(address)
    if parts is None:
        return True
    try:
        with socket.create_connection(parts, timeout=timeout):
            return True
    except OSError:
        return False


def resolve(address: str | None) -> str:
    """The address of the cluster to attach to, never a new one.

    ``address`` (or ``RAY_ADDRESS``) if given, checked to answer when it is
    ``host:port``; else the one Ray cluster running on this machine.

    Raises:
        ClusterNotFoundError: nothing answers at the address, or no cluster runs here.
        AmbiguousClusterError: several clusters run here and nothing chose one.
    """
    if address in (None, "", "auto"):
        address = settings.ray_address()
        if address == "auto":
            address = None
    if address is not None:
        if address == "local":
            raise ClusterNotFoundError(address, "'local' means a new cluster of this "
                                       "process; rayqueue.init starts one, connect attaches")
        if not reachable(address):
            raise ClusterNotFoundError(address, "nothing accepts connections there")
        return address
    clusters = local_clusters()
    if not clusters:
        raise ClusterNotFoundError(None)
    if len(clusters) > 1:
        raise AmbiguousClusterError([c.address for c in clusters],
                                    [f"session {c.session_dir}" if c.session_dir else ""
                                     for c in clusters])
    return clusters[0].address
