"""A real PostgreSQL server for the tests: initdb into a temporary directory, its own
port and socket directory, started and stopped with pg_ctl.

initdb refuses to run as root, so the cluster belongs to the ``postgres`` user (Debian's
``postgresql`` package creates it) and every server command runs through ``runuser``.
Local connections are trusted (the socket directory is private to the test); TCP
connections from the lab's networks need the ``tunhelper`` role's password.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

DB = "tunhelper"
ROLE = "tunhelper"
PASSWORD = "fleet-test-password"  # noqa: S105 - a throwaway cluster's test role


def _bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def missing() -> str | None:
    """Why a server cannot be started here, or None."""
    if _bindir() is None:
        return "PostgreSQL's server (Debian package postgresql)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "the postgres user (Debian package postgresql)"
    if shutil.which("runuser") is None:
        return "runuser (util-linux)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg (pip install -e '.[pg]', or Debian's python3-psycopg)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway cluster. ``listen`` is a comma-separated list of addresses for TCP
    (empty: the Unix socket only)."""

    def __init__(self, listen: str = "", port: int | None = None, netns: str | None = None) -> None:
        self.bindir = _bindir()
        self.listen = listen
        self.netns = netns  # the network namespace the server listens in (a fleet's underlay)
        self.port = port or free_port()
        self.base = tempfile.mkdtemp(prefix="tunhelper-pg-")
        self.data = os.path.join(self.base, "data")
        self.sockets = os.path.join(self.base, "run")
        self.log = os.path.join(self.base, "server.log")
        self.running = False

    def _as_postgres(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        inside = ("ip", "netns", "exec", self.netns) if self.netns else ()
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return subprocess.run(
            [*inside, runuser, "-u", "postgres", "--", *argv],
            check=check,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            cwd="/",
        )

    def start(self) -> PostgresServer:
        pw = pwd.getpwnam("postgres")
        os.chmod(self.base, 0o755)
        os.chown(self.base, pw.pw_uid, pw.pw_gid)
        os.makedirs(self.sockets, mode=0o755)
        os.chown(self.sockets, pw.pw_uid, pw.pw_gid)
        self._as_postgres(
            f"{self.bindir}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        with open(os.path.join(self.data, "pg_hba.conf"), "a") as f:
            f.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(
                f"port = {self.port}\nlisten_addresses = '{self.listen}'\n"
                f"unix_socket_directories = '{self.sockets}'\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\n"
                "shared_buffers = 64MB\n"
            )
        self.resume()
        self.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        self.sql(f"CREATE DATABASE {DB} OWNER {ROLE}")
        return self

    def resume(self) -> None:
        """Start (again) the server of this cluster."""
        self._as_postgres(
            f"{self.bindir}/pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start"
        )
        self.running = True

    def pause(self) -> None:
        """Stop the server, fast (its clients are disconnected); the data stays."""
        self._as_postgres(f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        self.running = False

    def sql(self, statement: str, db: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(
            host=self.sockets, port=self.port, user="postgres", dbname=db, autocommit=True
        ) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def conninfo(self, host: str | None = None) -> str:
        """For the tunhelper role: over the socket, or over TCP to ``host`` with its password."""
        if host is None:
            return f"host={self.sockets} port={self.port} dbname={DB} user={ROLE}"
        return f"host={host} port={self.port} dbname={DB} user={ROLE} password={PASSWORD}"

    def reset(self) -> None:
        """Empty every table tunhelper made (between tests sharing the server)."""
        tables = self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db=DB)
        if tables:
            self.sql("DROP TABLE " + ", ".join(t for (t,) in tables) + " CASCADE", db=DB)

    def stop(self) -> None:
        if self.running:
            self._as_postgres(
                f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop",
                check=False,
            )  # fmt: skip
            self.running = False
        shutil.rmtree(self.base, ignore_errors=True)

    def wait_gone(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while os.path.exists(os.path.join(self.data, "postmaster.pid")):
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not stop")
            time.sleep(0.05)
