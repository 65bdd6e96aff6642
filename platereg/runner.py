"""``platereg run`` / ``make run``: the whole stack on one machine.

Starts the embedded PostgreSQL and broker (unless PLATEREG_DATABASE_URL /
PLATEREG_KAFKA_BOOTSTRAP_SERVERS are set), migrates, creates topics, starts
every service as a child process, loads demo data, prints URLs and a demo API
key, and stops everything on Ctrl-C (or when a service dies).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from platereg.embedded import EmbeddedKafka, EmbeddedPostgres, _die_with_parent
from platereg.logging import get_logger
from platereg.settings import Settings, load_settings

log = get_logger(__name__)


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]                      # arguments to `platereg`
    url: Callable[[Settings], str] | None = None


# Every long-running process of the stack. Service packages add theirs here.
SERVICES: list[Service] = [
    # The registry consumer also relays the status/DLQ outboxes and runs the expiry sweep.
    Service("registry-consumer", ("consume", "registry"),
            lambda s: f"http://{s.host}:{s.consumer_metrics_port}/metrics"),
    Service("ingest-api", ("serve", "ingest"), url=lambda s: f"http://{s.host}:{s.ingest_port}/docs"),
    Service("registry-api", ("serve", "registry"),
            url=lambda s: f"http://{s.host}:{s.registry_port}/docs"),
]

# Commands run once after the services are up, to load demo data.
DEMO_LOADERS: list[tuple[str, ...]] = [
    # About 3,000 events: a year of life of 1,500 plates ending now (so expiries
    # spread over the coming months), with a few late, duplicate and invalid ones.
    ("simulate", "--to", "kafka", "--plates", "1500", "--late-share", "0.02",
     "--duplicate-share", "0.01", "--invalid-share", "0.005", "--no-progress"),
]


def _wait_healthy(settings: Settings, timeout: float = 60.0) -> None:
    """Wait until every service with a URL answers /healthz (or the timeout passes)."""
    import urllib.request
    from urllib.parse import urlsplit

    deadline = time.monotonic() + timeout
    for service in SERVICES:
        if service.url is None:
            continue
        parts = urlsplit(service.url(settings))
        health = f"{parts.scheme}://{parts.netloc}/healthz"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(health, timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)


def _sample_plate(settings: Settings, timeout: float = 15.0) -> str | None:
    """A plate the consumer has folded already, to show a working lookup."""
    import asyncpg

    async def pick() -> str | None:
        conn = await asyncpg.connect(settings.dsn())
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                row = await conn.fetchrow("SELECT jurisdiction, plate FROM plates"
                                          " WHERE issued ORDER BY plate_key LIMIT 1")
                if row:
                    return f"{row['jurisdiction']}/{row['plate']}"
                await asyncio.sleep(0.5)
            return None
        finally:
            await conn.close()

    return asyncio.run(pick())


def _platereg(*args: str) -> list[str]:
    return [sys.executable, "-m", "platereg.cli", *args]


def _start_servers(settings: Settings, stack: ExitStack) -> dict[str, str]:
    env: dict[str, str] = {}
    data_dir = settings.data_dir.resolve()
    if settings.database_url is None:
        pg = EmbeddedPostgres(data_dir / "postgres", durable=True)
        env["PLATEREG_DATABASE_URL"] = pg.start()
        stack.callback(pg.stop)
        print(f"PostgreSQL (embedded, data in {pg.data_dir}): {env['PLATEREG_DATABASE_URL']}")
    if not settings.kafka_bootstrap_servers:
        kafka = EmbeddedKafka(data_dir)
        env["PLATEREG_KAFKA_BOOTSTRAP_SERVERS"] = kafka.start()
        stack.callback(kafka.stop)
        print(f"Kafka-protocol broker (embedded Tansu, memory only): "
              f"{env['PLATEREG_KAFKA_BOOTSTRAP_SERVERS']}")
    return env


def _stop_children(children: list[tuple[Service, subprocess.Popen]], timeout: float = 15) -> None:
    for _, proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for _, proc in children:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_stack(settings: Settings, *, demo: bool = True) -> int:
    from platereg.db import migrate
    from platereg.kafka import ensure_topics
    from platereg.keys import create_key

    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    children: list[tuple[Service, subprocess.Popen]] = []
    with ExitStack() as stack:
        try:
            env = {**os.environ, **_start_servers(settings, stack)}
            os.environ.update(env)
            settings = load_settings()
            applied = migrate(settings.dsn())
            print(f"migrations: {len(applied)} applied")
            created = asyncio.run(ensure_topics(settings))
            print(f"topics: {len(created)} created")

            async def demo_key() -> str:
                import asyncpg

                conn = await asyncpg.connect(settings.dsn())
                try:
                    return (await create_key(conn, role="operator", name="make-run demo"))[1]
                finally:
                    await conn.close()

            key = asyncio.run(demo_key())
            stack.callback(_stop_children, children)
            for service in SERVICES:
                proc = subprocess.Popen(
                    _platereg(*service.argv), env=env, stdin=subprocess.DEVNULL,
                    preexec_fn=lambda: _die_with_parent(signal.SIGTERM),
                )
                children.append((service, proc))
            _wait_healthy(settings)
            sample = None
            if demo:
                for loader in DEMO_LOADERS:
                    subprocess.run(_platereg(*loader), env=env, check=False)
                sample = _sample_plate(settings)
            print("\nPlate Registry is running:")
            for service in SERVICES:
                print(f"  {service.name:<22} {service.url(settings) if service.url else ''}")
            base = f"http://{settings.host}:{settings.registry_port}"
            print(f"\nDemo operator API key (shown once): {key}")
            print(f"  curl -H 'Authorization: Bearer {key}' {base}/v1/hotlist")
            if sample:
                print(f"  curl -H 'Authorization: Bearer {key}' {base}/v1/plates/{sample}")
            print("Press Ctrl-C to stop.\n")
            sys.stdout.flush()
            while not stop_requested:
                for service, proc in children:
                    if proc.poll() is not None:
                        print(f"service {service.name} exited with code {proc.returncode}; "
                              "stopping", file=sys.stderr)
                        return 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            # A second Ctrl-C must not interrupt the clean-up half-way.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            print("\nstopping...", file=sys.stderr)
    print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_stack(load_settings()))
