"""``platereg run`` / ``make run``: the whole stack on one machine.

Checks the listening ports, starts the embedded PostgreSQL and broker (unless
PLATEREG_DATABASE_URL / PLATEREG_KAFKA_BOOTSTRAP_SERVERS are set), migrates,
registers its producers of plates.events (unless PLATEREG_PRODUCER_NAME is set),
creates topics, starts every service as a child process, loads demo data and a
demo key (only when everything is embedded, or with ``--demo``), prints URLs,
and stops everything on Ctrl-C, SIGTERM or when a service dies.

Processes and signals: the servers and the services each run in a session of
their own, so a terminal's Ctrl-C (SIGINT to the foreground process group)
reaches this process only; it then stops the services first (SIGTERM, once)
and the servers after them. When it has a controlling terminal it also makes
its own process group the terminal's foreground group, so that a ``make``
above it does not see the Ctrl-C either and exits with this process's status.
Every child has a parent-death signal: a ``kill -9`` of this process takes
them all down.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devtools import runlogs
from devtools.embedded import EmbeddedError, EmbeddedKafka, EmbeddedPostgres, _die_with_parent
from platereg.logging import get_logger
from platereg.settings import ENV_PREFIX, ConfigError, Settings, load_settings

log = get_logger(__name__)


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]                      # arguments to `platereg`
    url: Callable[[Settings], str] | None = None
    ports: tuple[str, ...] = ()                # Settings fields of the ports it listens on
    role: str | None = None                    # its database role (platereg.security.roles)


# Every long-running process of the stack. Service packages add theirs here.
SERVICES: list[Service] = [
    # The registry consumer also relays the status/DLQ outboxes and runs the expiry sweep.
    Service("registry-consumer", ("consume", "registry"),
            lambda s: f"http://{s.host}:{s.consumer_metrics_port}/metrics",
            ports=("consumer_metrics_port",), role="consumer"),
    Service("ingest-api", ("serve", "ingest"), url=lambda s: f"http://{s.host}:{s.ingest_port}/docs",
            ports=("ingest_port",), role="ingest_api"),
    Service("registry-api", ("serve", "registry"),
            url=lambda s: f"http://{s.host}:{s.registry_port}/docs", ports=("registry_port",),
            role="registry_api"),
    # Removes personal data past its retention every hour, with the purge role.
    Service("purge", ("purge", "--every", "3600"), role="purge"),
    # Notices: the scheduler (and notices outbox relay), the dispatcher, and a local
    # mail catcher keeping e-mail notices as .eml files in PLATEREG_DATA_DIR/mail.
    Service("notices-scheduler", ("notices", "schedule"),
            lambda s: f"http://{s.host}:{s.notices_scheduler_port}/metrics",
            ports=("notices_scheduler_port",), role="notices_scheduler"),
    Service("notices-dispatcher", ("notices", "dispatch"),
            lambda s: f"http://{s.host}:{s.notices_dispatcher_port}/metrics",
            ports=("notices_dispatcher_port",), role="notices_dispatcher"),
    Service("mail-catcher", ("notices", "mail-catcher"), ports=("smtp_port",)),
]


# Commands run once after the services are up, to load demo data.
DEMO_LOADERS: list[tuple[str, ...]] = [
    # About 3,000 events: a year of life of 1,500 plates ending now (so expiries
    # spread over the coming months), with a few late, duplicate and invalid ones.
    ("simulate", "--to", "kafka", "--plates", "1500", "--late-share", "0.02",
     "--duplicate-share", "0.01", "--invalid-share", "0.005", "--no-progress"),
]

#: The demo ingest key may publish only events whose source starts with this (a
#: registry office: the default source policy lets it issue, renew, transfer...).
DEMO_INGEST_SOURCE = "/registry/demo/"

def embedded_login(role: str) -> str:
    """The login of a database role on the embedded PostgreSQL (a new password on every
    start)."""
    return f"app_{role}"


class StackError(RuntimeError):
    """The stack cannot start or went down: one line for the user."""


def _variable(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def check_ports(settings: Settings) -> None:
    """Raise :class:`StackError` naming the port and its variable if one cannot be listened on."""
    seen: dict[int, str] = {}
    for service in SERVICES:
        for field in service.ports:
            port = getattr(settings, field)
            if port == 0:
                continue
            if port in seen:
                raise StackError(f"{_variable(field)} and {seen[port]} are both {port}; "
                                 "give each its own port")
            seen[port] = _variable(field)
            try:
                infos = socket.getaddrinfo(settings.host, port, type=socket.SOCK_STREAM,
                                           flags=socket.AI_PASSIVE)
                family, kind, proto, _, address = infos[0]
                with socket.socket(family, kind, proto) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn
                    sock.bind(address)
                    sock.listen()
            except OSError as exc:
                raise StackError(
                    f"port {port} on {settings.host} ({service.name}) is not available "
                    f"({exc.strerror or exc}); set {_variable(field)} to a free port"
                ) from None


def _wait_healthy(settings: Settings, children: list[tuple[Service, subprocess.Popen]],
                  timeout: float = 60.0) -> None:
    """Wait until every service with a URL answers /healthz; raise if a service exits."""
    import urllib.request

    deadline = time.monotonic() + timeout
    pending = [service for service, _ in children if service.url is not None]
    while pending:
        for service, proc in children:
            if proc.poll() is not None:
                raise StackError(f"service {service.name} exited with code {proc.returncode} "
                                 "during start-up; stopping")
        parts = urlsplit(pending[0].url(settings))  # type: ignore[misc]
        try:
            with urllib.request.urlopen(f"{parts.scheme}://{parts.netloc}/healthz",  # noqa: S310
                                        timeout=1) as response:
                if response.status == 200:
                    pending.pop(0)
                    continue
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise StackError(f"service {pending[0].name} did not answer /healthz within "
                             f"{timeout:.0f} s; stopping")
        time.sleep(0.2)


def _first_answer(settings: Settings, answer: Callable[[Any], Awaitable[str | None]],
                  timeout: float) -> str | None:
    """``answer(conn)`` on one connection, asked every 0.5 s until it gives a value or
    ``timeout`` seconds pass (None then)."""
    import asyncpg

    async def poll() -> str | None:
        conn = await asyncpg.connect(settings.dsn())
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                value = await answer(conn)
                if value:
                    return value
                await asyncio.sleep(0.5)
            return None
        finally:
            await conn.close()

    return asyncio.run(poll())


def _sample_plate(settings: Settings, timeout: float = 15.0) -> str | None:
    """A plate the consumer has folded already, to show a working lookup."""

    async def pick(conn: Any) -> str | None:
        row = await conn.fetchrow("SELECT jurisdiction, plate FROM plates"
                                  " WHERE issued ORDER BY plate_key LIMIT 1")
        return f"{row['jurisdiction']}/{row['plate']}" if row else None

    return _first_answer(settings, pick, timeout)


def _demo_owner_link(settings: Settings, timeout: float = 15.0) -> str | None:
    """A one-time owner page link for a demo owner with an e-mail address."""
    from platereg.security.owner_links import mint_sign_in_link

    async def mint(conn: Any) -> str | None:
        owner_id = await conn.fetchval(
            "SELECT owner_id FROM plates WHERE issued AND owner ? 'email'"
            " AND owner->>'email' IS NOT NULL ORDER BY plate_key LIMIT 1")
        if not owner_id:
            return None
        return await mint_sign_in_link(conn, settings.owner_page_url, owner_id)

    return _first_answer(settings, mint, timeout)


def owner_env(settings: Settings, demo: bool = True) -> dict[str, str]:
    """The owner page's settings for the services: PLATEREG_OWNER_PAGE_URL on this
    stack's registry port unless set, and PLATEREG_OWNER_TOKEN_KEYS: the user's; else,
    with the embedded servers (``demo``), a development key generated once into the data
    dir (``owner-token.key``, readable by the user only); else (the user's own servers,
    where nothing is written into the data dir) one for this run."""
    env = {}
    if _variable("owner_page_url") not in os.environ:
        env[_variable("owner_page_url")] = (f"http://{settings.host}:{settings.registry_port}"
                                            "/owner/")
    if settings.owner_token_keys:
        return env
    if not demo:
        return {**env, _variable("owner_token_keys"): secrets.token_urlsafe(32)}
    path = settings.data_dir / "owner-token.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return {**env, _variable("owner_token_keys"): path.read_text().strip()}


def cursor_env(settings: Settings, demo: bool) -> dict[str, str]:
    """PLATEREG_CURSOR_SECRET for the services: the user's; else, with the embedded servers,
    a development one generated once into the data dir (cursors survive restarts); else
    (the user's own servers, where nothing is written into the data dir) one for this run."""
    if settings.cursor_secret is not None:
        return {}
    secret = settings.cursor_key().decode() if demo else secrets.token_hex(32)
    return {_variable("cursor_secret"): secret}


#: ``make run``'s own producers of plates.events (contract section 2, "Signed
#: producers"): the ingest API signs as the first, the demo data loader as the second.
#: Both may speak for every source: the ingest API checks each key's prefixes itself, and
#: the source policy applies to everything.
RUN_PRODUCERS = ("make-run-ingest", "make-run-demo")


def _producer_secret(settings: Settings, name: str, keep: bool) -> str:
    """The secret of one of :data:`RUN_PRODUCERS`: with the embedded servers (``keep``),
    generated once into the data dir (``producer-NAME.secret``, readable by the user
    only), so events still unread in the broker pass after a restart; else one for this
    run."""
    from schemas.signing import new_secret

    if not keep:
        return new_secret()
    path = settings.data_dir / f"producer-{name}.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_secret() + "\n")
    return path.read_text().strip()


def producer_env(settings: Settings, demo: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(the services' env, the demo loaders' env): PLATEREG_PRODUCER_NAME and _SECRET of
    :data:`RUN_PRODUCERS`, each registered (or given this secret) in the database; none
    when the user set their own producer."""
    from platereg.security.producer_store import ensure
    from schemas.signing import ProducerError

    if settings.producer_name is not None and settings.producer_secret is not None:
        return {}, {}
    envs = []
    for name in RUN_PRODUCERS:
        secret = _producer_secret(settings, name, demo)

        async def register(name: str = name, secret: str = secret) -> None:
            import asyncpg

            conn = await asyncpg.connect(settings.for_role("operator").dsn())  # as the CLI
            try:
                await ensure(conn, name, ["/"], secret)
            finally:
                await conn.close()

        try:
            asyncio.run(register())
        except ProducerError as exc:
            raise StackError(f"cannot register make run's producer: {exc}") from None
        envs.append({_variable("producer_name"): name, _variable("producer_secret"): secret})
    kept = f"secrets in {settings.data_dir.resolve()}" if demo else "secrets for this run"
    print(f"producers: {RUN_PRODUCERS[0]} (the ingest API), {RUN_PRODUCERS[1]} (demo data); "
          f"{kept}")
    return envs[0], envs[1]


def _platereg(*args: str) -> list[str]:
    return [sys.executable, "-m", "wiring.cli", *args]


def _spawn(argv: list[str], env: dict[str, str], log: str | None = None,
           logs: Path | None = None, *, keep_stdout: bool = False) -> subprocess.Popen:
    """A child in its own session (no terminal signal reaches it) that dies with us; with
    ``log``, its output goes to ``logs/<log>.log`` (:mod:`devtools.runlogs`), not to the
    terminal (``keep_stdout``: only its standard error)."""
    if log is None or logs is None:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                start_new_session=True,
                                preexec_fn=lambda: _die_with_parent(signal.SIGTERM))
    with runlogs.open_for_run(logs, log) as out:   # the child keeps its own descriptor
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=None if keep_stdout else out, stderr=out,
                                start_new_session=True,
                                preexec_fn=lambda: _die_with_parent(signal.SIGTERM))


def _migrate(dsn: str, settings: Settings) -> None:
    """Apply the migrations (and the grants and retention settings); a database that
    refuses is one line, not a traceback."""
    import psycopg

    from platereg.db import migrate
    from platereg.retention import retention_days

    try:
        applied = migrate(dsn, retention_days(settings))
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise StackError(f"cannot migrate the database ({type(exc).__name__}: {first}); "
                         "PLATEREG_MIGRATE_DATABASE_URL (or PLATEREG_DATABASE_URL) must "
                         "reach it as the schema's owner") from None
    print(f"migrations: {len(applied)} applied")


def _ensure_topics(settings: Settings) -> None:
    """Create the topics (retrying for 30 s); brokers that stay away are one line."""
    from aiokafka.errors import KafkaError

    from platereg.kafka import ensure_topics

    try:
        created = asyncio.run(ensure_topics(settings))
    except (KafkaError, OSError, TimeoutError) as exc:
        raise StackError(f"cannot create the topics on {settings.bootstrap()} "
                         f"({type(exc).__name__}); check PLATEREG_KAFKA_BOOTSTRAP_SERVERS"
                         ) from None
    print(f"topics: {len(created)} created")


def _embedded_postgres(settings: Settings, stack: ExitStack) -> dict[str, str]:
    """Start it, migrate as its superuser and give each database role a login with a new
    password. The variables returned are this process's: the superuser as
    PLATEREG_DATABASE_URL (migrations, demo data) and each role's URL; a service is given
    only its own (:func:`service_env`)."""
    from platereg.security.roles import ROLES, ensure_roles

    pg = EmbeddedPostgres(settings.data_dir.resolve() / "postgres", durable=True)
    admin = pg.start()
    stack.callback(pg.stop)
    print(f"PostgreSQL (embedded, data in {pg.data_dir}): {pg.dsn(password='***')}"  # noqa: S106
          f" (superuser password in {pg.password_path})")
    _migrate(admin, settings)
    logins = {name: pg.dsn(user=embedded_login(name), password=secrets.token_urlsafe(24))
              for name in ROLES}
    ensure_roles(admin, logins)
    return {"PLATEREG_DATABASE_URL": admin, "PLATEREG_MIGRATE_DATABASE_URL": admin,
            **{_variable(ROLES[name].setting): dsn for name, dsn in logins.items()}}


def service_env(env: Mapping[str, str], role: str | None) -> dict[str, str]:
    """The environment of a child process: ``env`` without any database URL but the one of
    its own ``role`` (as PLATEREG_DATABASE_URL: the role's URL, else the common one); a
    child with no role gets none. No service sees the superuser's or another role's."""
    out = {k: v for k, v in env.items()
           if not (k.startswith(ENV_PREFIX) and k.endswith("_DATABASE_URL"))}
    if role is not None:
        dsn = env.get(_variable(f"{role}_database_url")) or env.get("PLATEREG_DATABASE_URL")
        if dsn:
            out["PLATEREG_DATABASE_URL"] = dsn
    return out


def _start_servers(settings: Settings, stack: ExitStack) -> dict[str, str]:
    """Embedded servers where no URL is set; the variables that point the services at them.
    The broker starts in a thread of its own while PostgreSQL starts and migrates: a JVM's
    start is the longest part of a start, and the two are independent."""
    from concurrent.futures import ThreadPoolExecutor

    env: dict[str, str] = {}
    start_broker = None if settings.kafka_bootstrap_servers else _embedded_kafka(settings)
    broker = None
    if start_broker is not None:
        # The thread lives until the broker is stopped: a child's parent-death signal
        # (devtools.embedded._die_with_parent) comes when the thread that started it ends.
        pool = ThreadPoolExecutor(1, thread_name_prefix="broker")
        stack.callback(pool.shutdown)
        broker = pool.submit(start_broker, stack.enter_context(ExitStack()))
    try:
        if settings.database_url is None:
            env.update(_embedded_postgres(settings, stack))
        else:
            _migrate(settings.migrate_dsn(), settings)
    except BaseException:
        if broker is not None:               # wait for it: started or not, the stack stops it
            broker.exception()
        raise
    if broker is not None:
        broker_env, line = broker.result()
        print(line)
        env.update(broker_env)
    return env


def _embedded_kafka(settings: Settings
                    ) -> Callable[[ExitStack], tuple[dict[str, str], str]]:
    """What starts the broker (in a thread: it says nothing, it returns its line): Apache
    Kafka from its jars, its log kept in the data directory, where a JDK 17+ is present;
    else the embedded Tansu broker (memory only, no idempotent producers). The check and
    the jars' install (which may print its downloads) run here, before."""
    from devtools.apache_kafka import KafkaCluster, KafkaUnavailable, install, java_problem

    problem = java_problem()
    if problem is None:
        try:
            install(quiet=False)
        except KafkaUnavailable as exc:
            problem = str(exc)

    def tansu(stack: ExitStack) -> tuple[dict[str, str], str]:
        server = EmbeddedKafka(settings.data_dir.resolve())
        bootstrap = server.start()
        stack.callback(server.stop)
        return ({"PLATEREG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                 "PLATEREG_KAFKA_IDEMPOTENCE": "false"},
                f"Kafka-protocol broker: embedded Tansu, memory only, because {problem}: "
                f"{bootstrap}")

    def apache_kafka(stack: ExitStack) -> tuple[dict[str, str], str]:
        kafka = KafkaCluster(settings.data_dir.resolve() / "kafka", heap_mb=512)
        bootstrap = kafka.start()
        stack.callback(kafka.stop)
        return ({"PLATEREG_KAFKA_BOOTSTRAP_SERVERS": bootstrap},
                f"{kafka.describe()}, data in {kafka.base_dir}: {bootstrap}")

    return apache_kafka if problem is None else tansu


def _stop_children(children: list[tuple[Service, subprocess.Popen]], timeout: float = 15,
                   patience: float = 5) -> None:
    """SIGTERM to every service; after ``patience`` seconds, name those still stopping;
    after ``timeout``, SIGKILL them (and say so)."""
    for _, proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    named = False
    while (left := [(s, p) for s, p in children if p.poll() is None]):
        waited = time.monotonic() - start
        if waited >= timeout:
            for service, proc in left:
                proc.kill()
                proc.wait(5)
                print(f"{service.name} did not stop in {timeout:.0f} s; killed", file=sys.stderr)
            return
        if waited >= patience and not named:
            named = True
            print("waiting for " + ", ".join(s.name for s, _ in left) + " to stop...",
                  file=sys.stderr, flush=True)
        time.sleep(0.1)


@contextlib.contextmanager
def _foreground_terminal() -> Iterator[None]:
    """Make our process group the terminal's foreground group while we run (see module doc)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        yield  # no controlling terminal
        return
    previous = None
    try:
        if os.tcgetpgrp(fd) == os.getpgrp() != os.getpid():  # foreground, not group leader
            previous = os.getpgrp()
            os.setpgid(0, 0)
            _set_foreground(fd, os.getpid())
            # Ctrl-Z would stop us while `make` waits for ever: it does nothing here.
            signal.signal(signal.SIGTSTP, signal.SIG_IGN)
    except OSError:
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(OSError):
                _set_foreground(fd, previous)
        os.close(fd)


def _set_foreground(fd: int, pgrp: int) -> None:
    # A process outside the foreground group gets SIGTTOU for this unless it blocks it.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(fd, pgrp)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_stack(settings: Settings, *, demo: bool | None = None,
              status_every: float = 30.0) -> int:
    """Run until Ctrl-C/SIGTERM (exit 0) or a failure (one line on stderr, exit 1).
    ``status_every``: seconds between status lines when stdout is not a terminal (0: none;
    a terminal gets the live status block)."""
    if demo is None:  # demo data and key only where they cannot land in the user's servers
        demo = settings.database_url is None and not settings.kafka_bootstrap_servers
    try:
        check_ports(settings)
    except StackError as exc:
        print(f"platereg: {exc}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    with _foreground_terminal():
        code = _run(settings, demo, status_every)
    print("stopped", file=sys.stderr)
    return code


def _run(settings: Settings, demo: bool, status_every: float) -> int:
    children: list[tuple[Service, subprocess.Popen]] = []
    logs = runlogs.logs_dir(settings.data_dir)
    with ExitStack() as stack:
        try:
            env = {**os.environ, **_start_servers(settings, stack)}
            env.update(owner_env(settings, demo))
            env.update(cursor_env(settings, demo))
            os.environ.update(env)
            settings = load_settings()
            services_producer, demo_producer = producer_env(settings, demo)
            env.update(services_producer)
            _ensure_topics(settings)
            stack.callback(_stop_children, children)
            # the demo data goes to Kafka while the services start
            loading = (_start_demo_load(settings, {**env, **demo_producer}, stack, logs)
                       if demo else None)
            for service in SERVICES:
                children.append((service, _spawn(_platereg(*service.argv),
                                                 service_env(env, service.role),
                                                 service.name, logs)))
            _wait_healthy(settings, children)
            if demo:
                _load_demo(settings, stack, loading)
            else:
                _banner(settings, None)
            _watch(settings, children, logs, status_every)
        except KeyboardInterrupt:
            return 0
        except (StackError, EmbeddedError, ConfigError) as exc:
            print(f"platereg: {exc}", file=sys.stderr)
            _show_the_dead(children, logs)
            return 1
        finally:
            # A second Ctrl-C (or SIGTERM) must not interrupt the clean-up half-way.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            print("\nstopping...", file=sys.stderr)
    raise AssertionError("unreachable")


def _show_the_dead(children: list[tuple[Service, subprocess.Popen]], logs: Path,
                   lines: int = 15) -> None:
    """The end of the log of each service that exited (the terminal has only the one
    line saying so)."""
    for service, proc in children:
        if proc.poll() is None:
            continue
        path = runlogs.log_path(logs, service.name)
        try:
            with open(path, "rb") as f:
                tail = b"".join(runlogs.last_lines(f, lines)).decode(errors="replace")
        except OSError:
            continue
        print(f"--- the last lines of {path} (platereg logs {service.name}):\n{tail}"
              f"---", file=sys.stderr)


def _check_children(children: list[tuple[Service, subprocess.Popen]]) -> None:
    for service, proc in children:
        if proc.poll() is not None:
            raise StackError(f"service {service.name} exited with code {proc.returncode}; "
                             "stopping")


def _watch(settings: Settings, children: list[tuple[Service, subprocess.Popen]], logs: Path,
           every: float) -> None:
    """Until a service exits (:class:`StackError`) or Ctrl-C: in a terminal the status
    block redrawn in place every second, else a status line every ``every`` seconds."""
    from rich.console import Console

    from devtools.status import StatusBoard

    metrics = {s.name: s.url(settings) for s, _ in children
               if s.url is not None and s.url(settings).endswith("/metrics")}
    board = StatusBoard(metrics, logs, [s.name for s, _ in children])
    console = Console()
    if console.is_terminal:
        _watch_live(children, board, console)
    while True:
        deadline = time.monotonic() + every if every > 0 else math.inf
        while time.monotonic() < deadline:
            _check_children(children)
            time.sleep(0.5)
        from devtools.status import status_line

        print(status_line(board.read()), flush=True)


def _watch_live(children: list[tuple[Service, subprocess.Popen]], board: Any,
                console: Any) -> None:
    """rich's Live: one block under the banner, redrawn in place (nothing else is printed
    while it runs: the services write to their log files)."""
    from rich.live import Live
    from rich.text import Text

    from devtools.status import status_block

    command = cli_name()

    def render() -> Text:
        lines = status_block(board.read(), min(console.width, 80), command)
        return Text("\n".join(lines), no_wrap=True, overflow="crop")

    with Live(render(), console=console, auto_refresh=False, redirect_stdout=False,
              redirect_stderr=False) as live:
        while True:
            for _ in range(2):
                _check_children(children)
                time.sleep(0.5)
            live.update(render(), refresh=True)


def _revoke_demo_keys(revoke: Callable[[], None]) -> None:
    try:
        revoke()
        print("demo keys revoked", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - the stop goes on; say what is left
        print(f"platereg: could not revoke this run's demo keys ({type(exc).__name__}); "
              "revoke them with `platereg keys list` / `platereg keys revoke`", file=sys.stderr)


#: What ``platereg run`` keeps in its data directory; ``--reset`` deletes only a directory
#: holding nothing else.
DATA_DIR_ENTRIES = {"postgres", "kafka", "mail", "logs", "demo-loaded",
                    "owner-token.key", "cursor-secret", "tansu.log", "demo.txt"}


def _made_by_run(name: str) -> bool:
    return (name in DATA_DIR_ENTRIES or name.startswith(".cursor-secret.")
            or (name.startswith("producer-") and name.endswith(".secret"))
            or (name.startswith("notices-") and name.endswith(".pdf")))


def reset_data_dir(settings: Settings) -> None:
    """Delete the data directory of ``platereg run`` (``--reset``), refusing one that holds
    anything ``platereg run`` did not put there."""
    import shutil

    data = settings.data_dir.resolve()
    if not data.exists():
        return
    strangers = sorted(p.name for p in data.iterdir() if not _made_by_run(p.name))
    if strangers:
        raise StackError(f"--reset: {data} holds files platereg run did not make "
                         f"({', '.join(strangers[:5])}); delete it yourself if you mean it")
    shutil.rmtree(data)
    print(f"reset: deleted {data}", file=sys.stderr)


def demo_marker(settings: Settings) -> Path:
    """Present once the demo data of this data directory is loaded (it is loaded once)."""
    return settings.data_dir.resolve() / "demo-loaded"


def _start_demo_load(settings: Settings, env: dict[str, str], stack: ExitStack,
                     logs: Path) -> Future[None] | None:
    """The demo data loaders, one after the other in a thread, on the first start of the
    data directory only (None after); the one still going is stopped with the run."""
    from concurrent.futures import ThreadPoolExecutor

    if demo_marker(settings).exists():
        return None
    running: list[tuple[Service, subprocess.Popen]] = []
    stack.callback(_stop_children, running)

    def load() -> None:
        for loader in DEMO_LOADERS:
            proc = _spawn(_platereg(*loader), service_env(env, None), "demo-load", logs,
                          keep_stdout=True)
            running[:] = [(Service("demo-load", loader), proc)]
            if proc.wait() != 0:
                raise StackError(f"loading the demo data failed (exit {proc.returncode}; "
                                 "platereg logs demo-load)")

    # The thread lives until the run stops (a parent-death signal follows the thread).
    pool = ThreadPoolExecutor(1, thread_name_prefix="demo-load")
    stack.callback(pool.shutdown, wait=False)
    return pool.submit(load)


def _load_demo(settings: Settings, stack: ExitStack, loading: Future[None] | None) -> None:
    """This run's demo keys (revoked when the run stops: shown once, used for one run),
    the end of the demo data load, then the banner."""
    from platereg.security.keys import create_key, revoke_key

    operator = settings.for_role("operator").dsn()   # as `platereg keys` would

    async def demo_keys() -> list[tuple[str, str]]:
        import asyncpg

        conn = await asyncpg.connect(operator)
        try:
            return [await create_key(conn, role="operator", name="make-run demo"),
                    await create_key(conn, role="ingest", name="make-run demo office",
                                     sources=[DEMO_INGEST_SOURCE])]
        finally:
            await conn.close()

    async def revoke(key_ids: list[str]) -> None:
        import asyncpg

        conn = await asyncpg.connect(operator)
        try:
            for key_id in key_ids:
                await revoke_key(conn, key_id)
        finally:
            await conn.close()

    (operator_id, key), (ingest_id, ingest_key) = asyncio.run(demo_keys())
    stack.callback(_revoke_demo_keys, lambda: asyncio.run(revoke([operator_id, ingest_id])))
    if loading is not None:
        loading.result()
        demo_marker(settings).write_text("loaded by platereg run\n")
    access = DemoAccess(key, ingest_key, _sample_plate(settings), _demo_owner_link(settings))
    stack.callback(demo_file(settings).unlink, missing_ok=True)
    _banner(settings, access)


@dataclass(frozen=True)
class DemoAccess:
    """What a run's banner hands out: its demo keys, a plate to look up, an owner link."""

    key: str
    ingest_key: str
    sample: str | None = None          # "JURISDICTION/PLATE" the consumer has folded
    owner_link: str | None = None


def demo_file(settings: Settings) -> Path:
    """This run's keys and curl commands (``platereg demo``), deleted when the run stops."""
    return settings.data_dir.resolve() / "demo.txt"


def _shown(path: Path | str) -> str:
    """A path as short as it reads well: relative to the working directory if under it."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cli_name() -> str:
    """``platereg`` as the user can type it: the name where the PATH finds this very script
    (an activated virtual environment), else its path (``.venv/bin/platereg`` after
    ``make run``)."""
    me = Path(sys.argv[0])
    if me.name != "platereg":          # python -m wiring.cli
        return "platereg"
    found = shutil.which("platereg")
    if found and Path(found).resolve() == me.resolve():
        return "platereg"
    return _shown(me.absolute())


def banner_lines(settings: Settings, demo: DemoAccess | None,
                 command: str = "platereg") -> list[str]:
    """What stays on the screen above the status block: the addresses, the demo keys and
    owner link, and where the rest is (``command``: how to type ``platereg``). At most 17
    lines, each within 80 columns with ports of 5 digits, but the second (it names the
    data directory)."""
    lines = ["", f"Plate Registry is running; data and logs in "
                 f"{_shown(settings.data_dir.resolve())}"]
    urls = [(s.name, s.url(settings)) for s in SERVICES if s.url is not None]
    for name, url in sorted(urls, key=lambda u: not u[1].endswith("/docs")):  # APIs first
        lines.append(f"  {name:<19} {url}")
    lines.append(f"  {'mail-catcher':<19} SMTP port {settings.smtp_port}, "
                 "each e-mail notice a file in mail/")
    if demo is None:
        lines += ["No demo data or key (your own servers, or --no-demo); make a key with:",
                  "  platereg keys create --role operator --name me"]
    else:
        lines += ["Demo operator API key (shown once, revoked at Ctrl-C):", f"  {demo.key}",
                  f"Demo ingest API key for sources {DEMO_INGEST_SOURCE}* (shown once):",
                  f"  {demo.ingest_key}"]
        if demo.owner_link:
            lines += ["Owner page of a demo owner (one-time sign-in link, 14 days):",
                      f" {demo.owner_link}"]
        lines.append(f"Try the keys: {command} demo (prints curl commands)")
    lines.append(f"Logs: {command} logs [SERVICE] [-f]")
    return [*lines, "Press Ctrl-C to stop."]


def demo_text(settings: Settings, demo: DemoAccess) -> str:
    """The content of :func:`demo_file`: the keys and curl commands that work verbatim."""
    base = f"http://{settings.host}:{settings.registry_port}"
    ingest = f"http://{settings.host}:{settings.ingest_port}"
    auth = f"-H 'Authorization: Bearer {demo.key}'"
    lines = ["# Plate Registry demo: this run's keys (revoked when `make run` stops)",
             f"# Demo operator API key: {demo.key}",
             f"# Demo ingest API key for sources {DEMO_INGEST_SOURCE}*: {demo.ingest_key}",
             f"# Registry API: {base}/docs   Ingest API: {ingest}/docs", "",
             "# The hotlist: plates flagged stolen, suspended or expired",
             f"curl {auth} '{base}/v1/hotlist?purpose=testing&limit=5'"]
    if demo.sample:  # plates travel in POST bodies, never in URLs
        jurisdiction, _, plate = demo.sample.partition("/")
        body = json.dumps({"jurisdiction": jurisdiction, "plate": plate, "purpose": "testing"})
        lines += ["", "# Look up a plate (audited: every read names its purpose)",
                  f"curl {auth} -H 'Content-Type: application/json' -d '{body}' "
                  f"{base}/v1/plates/query"]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    event = json.dumps({
        "specversion": "1.0", "id": f"demo-issue-{now:%Y%m%d%H%M%S}",
        "source": f"{DEMO_INGEST_SOURCE}office-1", "type": "plate.issued",
        "time": now.isoformat().replace("+00:00", "Z"), "subject": "CA-ON/DEMO 01",
        "data": {"plate_class": "passenger",
                 "expires_on": (now.date() + dt.timedelta(days=365)).isoformat(),
                 "vehicle": {"vin": "1HGCM82633A004352", "make": "Honda", "model": "Civic",
                             "year": 2019, "colour": "blue"},
                 "owner": {"owner_id": "demo-owner-1", "name": "Alex Demo",
                           "email": "alex@example.org", "language": "en"}}})
    lines += ["", "# Send an event as a registry office (the ingest key)",
              f"curl -H 'Authorization: Bearer {demo.ingest_key}' "
              f"-H 'Content-Type: application/json' -d '{event}' {ingest}/v1/events"]
    if demo.owner_link:
        lines += ["", "# A demo owner's page (one-time sign-in link, 14 days)",
                  demo.owner_link]
    return "\n".join(lines) + "\n"


def _banner(settings: Settings, demo: DemoAccess | None) -> None:
    if demo is not None:
        path = demo_file(settings)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(demo_text(settings, demo))
    print("\n".join(banner_lines(settings, demo, cli_name())), flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_stack(load_settings()))
