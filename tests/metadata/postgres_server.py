"""A throwaway PostgreSQL for the metadata tests, started once per test process.

initdb refuses to run as root, so as root the cluster belongs to an unprivileged
user (`nobody`) and every server binary runs through `runuser -u nobody --`. The
cluster lives in a temporary directory (socket there too), listens on a free
loopback port, trusts local connections, and skips fsync: it is thrown away.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.servers import free_port

SUPERUSER = "strata"
_RUN_AS = "nobody"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL binaries, psycopg or an unprivileged user are missing."""


def _binaries() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, postgres) not found; apt-get install postgresql-15")


class PostgresServer:
    def __init__(self) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise PostgresUnavailable("psycopg is not installed") from exc
        self.bin = _binaries()
        self.prefix: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="strata-pg-"))
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root without runuser to drop privileges for initdb")
            try:
                user = pwd.getpwnam(_RUN_AS)
            except KeyError as exc:
                raise PostgresUnavailable(f"no unprivileged user {_RUN_AS!r} to own the cluster") from exc
            os.chmod(self.dir, 0o700)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", _RUN_AS, "--"]
        self.data = self.dir / "data"
        self.port = free_port()
        self.log = self.dir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self.prefix, *args], capture_output=True, cwd=self.dir, timeout=120)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed: {result.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> PostgresServer:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=log,
            cwd=self.dir,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise PostgresUnavailable(f"postgres exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(
                        f"postgres did not accept connections: {self.log.read_text()[-2000:]}"
                    ) from exc
                time.sleep(0.1)

    def dsn(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """A fresh, empty PostgreSQL database; returns its DSN."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown; runuser passes it on to the server's session.
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


_server: PostgresServer | None = None
_failure: str | None = None


def shared_postgres() -> PostgresServer:
    """The process-wide throwaway server, started on first use; PostgresUnavailable if it cannot run."""
    global _server, _failure
    if _failure is not None:
        raise PostgresUnavailable(_failure)
    if _server is None:
        try:
            server = PostgresServer()
            _server = server.start()
        except PostgresUnavailable as exc:
            _failure = str(exc)
            raise
        atexit.register(server.stop)
    return _server
