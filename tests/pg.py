"""A real PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` in a temp directory,
listening on 127.0.0.1 and a free port, for the whole session.

Debian's ``postgresql`` package (``.ci/run`` installs it) puts the binaries in
``/usr/lib/postgresql/<version>/bin``. ``initdb`` refuses to run as root, so as root the
server runs as user ``postgres``, in a private mount namespace where ``/dev/null`` is a
world-writable file (here ``/dev/null`` is writable by root only; see
/work/shared/NOTES.md). Without the package or psycopg the tests skip with the reason,
and with ``RAYQUEUE_REQUIRE_REAL_PARTS=1`` (CI) that skip fails the run
(``tests/skips.py``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    ctl = shutil.which("pg_ctl")
    return Path(ctl).parent if ctl else None


class PgServer:
    """One running server; ``url`` connects to its ``postgres`` database as ``rq``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="rq-pg-", dir="/tmp"))
        self.port = free_port()
        self.url = f"postgresql://rq@127.0.0.1:{self.port}/postgres"
        self.root = os.geteuid() == 0
        if self.root:
            shutil.chown(self.dir, "postgres")
            null = self.dir / "null"
            null.touch()
            null.chmod(0o666)
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "rq",
                  "--no-sync")
        self.ctl("start")

    def _run(self, tool: str, *args: str) -> None:
        command = shlex.join([str(self.bindir / tool), *args])
        if self.root:
            command = (f"mount --bind {shlex.quote(str(self.dir / 'null'))} /dev/null && "
                       f"runuser -u postgres -- {command}")
            argv = ["unshare", "-m", "sh", "-c", command]
        else:
            argv = ["sh", "-c", command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): "
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def ctl(self, action: str) -> None:
        """``pg_ctl start``, ``stop`` or ``restart`` (fast mode, waiting for it)."""
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200")
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l",
                  str(self.dir / "log"), "-m", "fast", "-w", "-t", "60", action)

    def close(self) -> None:
        try:
            self.ctl("stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the session, stopped at its end."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install "
                        "'rayqueue[postgres]'")
    bindir = _bin_dir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (initdb, pg_ctl): apt-get install postgresql")
    try:
        server = PgServer(bindir)
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"PostgreSQL could not be started here: {err}")
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of the session's server."""
    return pg_server.url


def unique_queue() -> str:
    """A queue name no other test uses (each queue is a schema of its own)."""
    return f"t{uuid.uuid4().hex[:12]}"


class CutProxy:
    """A TCP proxy to the server that, when armed, cuts one connection at a chosen
    point of a commit: ``"before"`` drops the client's ``COMMIT`` (the server never
    gets it: the transaction rolls back), ``"after"`` drops the server's answer to it
    (the transaction is committed, the client never hears so)."""

    _COMMIT_QUERY = b"Q\x00\x00\x00\x0bCOMMIT\x00"
    _COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"

    def __init__(self, port: int) -> None:
        import threading

        self._target = port
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self.armed: str | None = None
        self.cuts = 0
        #: refuse every new connection (the server looks down) once a cut happened
        self.down_after_cut = False
        self.down = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self) -> str:
        return f"postgresql://rq@127.0.0.1:{self.port}/postgres"

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self._target))
            for src, dst, marker, when in ((client, server, self._COMMIT_QUERY, "before"),
                                           (server, client, self._COMMIT_DONE, "after")):
                threading.Thread(target=self._pipe, args=(src, dst, marker, when, client,
                                                          server), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, marker: bytes, when: str,
              client: socket.socket, server: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    cut = self.armed == when and marker in data
                    if cut:
                        self.armed, self.cuts = None, self.cuts + 1
                        self.down = self.down_after_cut
                if cut:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
