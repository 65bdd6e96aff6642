"""The services as a deployment runs them: ``platereg`` processes, each logging in as
its own principal on the SASL_SSL listener with the production ACLs applied
(``kafka_acls``), moving events end to end, so the grants are shown sufficient. And
a service whose topic is missing, or whose principal the broker refuses, stops at
once with a message saying what to do (never a retry loop against a refusal)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from api_helpers import bearer, role_keys
from ingest_support import issued, renewed
from notices_support import smtp_catcher, wait_until

from devtools.embedded import free_port, stop_process
from platereg.kafka import make_producer
from platereg.settings import Settings
from schemas import topics
from tests.broker import AclBroker
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.integration


def principal_env(kafka_acls: AclBroker, principal: str | None,
                  **extra: str) -> dict[str, str]:
    """This process's environment (the test's database) with ``principal``'s login (None:
    the super user's plaintext listener, as ``make run`` connects)."""
    login = kafka_acls.env(principal) if principal else {
        "PLATEREG_KAFKA_BOOTSTRAP_SERVERS": kafka_acls.plaintext}
    return {**os.environ, **login, "PLATEREG_LOG_LEVEL": "INFO", **extra}


@contextlib.asynccontextmanager
async def serving(principal: str, args: list[str], port: int, kafka_acls: AclBroker,
                  log_path: Path) -> AsyncIterator[str]:
    """``platereg ARGS`` as ``principal`` until its /readyz answers 200 (PostgreSQL and the
    broker reached with that login); SIGTERM at the end, which it must obey with 0."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "wiring.cli", *args],
                                env=principal_env(kafka_acls, principal),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        assert proc.poll() is None, f"{args} exited:\n{log_path.read_text()[-3000:]}"
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"{url}/readyz")).status_code == 200
        return False

    try:
        await wait_until(ready, timeout=60, what=f"{principal}: {' '.join(args)} ready")
        yield url
    finally:
        code = stop_process(proc, signal.SIGTERM, 30)
        assert code in (None, 0), f"{args}: exit {code}\n{log_path.read_text()[-3000:]}"


def platereg_as(kafka_acls: AclBroker, principal: str | None, *args: str,
                **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wiring.cli", *args], capture_output=True,
                          text=True, timeout=60, env=principal_env(kafka_acls, principal,
                                                                   **extra))


async def test_the_services_move_events_end_to_end_as_their_own_principals(
        kafka_acls: AclBroker, settings: Settings, pool: asyncpg.Pool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    plate = f"CA-ON/ACL{uuid.uuid4().hex[:5].upper()}"
    keys = await role_keys(pool)
    with smtp_catcher() as mail:
        monkeypatch.setenv("PLATEREG_SMTP_PORT", str(mail.port))
        ports = {name: free_port() for name in ("consumer", "ingest", "scheduler",
                                                "dispatcher", "registry")}
        async with contextlib.AsyncExitStack() as stack:
            for principal, args, port in (
                    ("platereg-registry", ["consume", "registry", "--parse-workers", "0",
                                           "--metrics-port"], ports["consumer"]),
                    ("platereg-ingest", ["serve", "ingest", "--port"], ports["ingest"]),
                    ("platereg-notices-scheduler", ["notices", "schedule", "--every", "1",
                                                    "--metrics-port"], ports["scheduler"]),
                    ("platereg-notices-dispatcher", ["notices", "dispatch", "--metrics-port"],
                     ports["dispatcher"]),
                    ("platereg-registry-api", ["serve", "registry", "--port"],
                     ports["registry"])):
                await stack.enter_async_context(serving(
                    principal, [*args, str(port)], port, kafka_acls,
                    tmp_path / f"{principal}.log"))
            await _post_events(f"http://127.0.0.1:{ports['ingest']}", keys["ingest"], plate)
            bad_key = await _produce_as_a_direct_producer(kafka_acls)
            await wait_until(lambda: pool.fetchval("SELECT 1 FROM plates WHERE plate_key = $1",
                                                   plate), timeout=60, what="the plate stored")
            await _check_status_relayed(kafka_acls, plate)
            await wait_until(lambda: [m for m in mail.messages if "renew" in
                                      str(m["Subject"]).lower()], timeout=60,
                             what="the renewal notice e-mailed by the dispatcher")
            await _replay_as_the_operator(kafka_acls, pool, bad_key)
    done = platereg_as(kafka_acls, "platereg-admin", "topics")
    assert (done.returncode, done.stdout.strip()) == (0, "all topics exist"), done.stderr


async def _post_events(ingest: str, key: str, plate: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{ingest}/v1/events", headers=bearer(key),
                                     json=[issued(plate), renewed(plate)])
    assert response.status_code == 202, response.text


async def _produce_as_a_direct_producer(kafka_acls: AclBroker) -> bytes:
    """An event no registry accepts, from producer-police straight to plates.events."""
    key = f"CA-ON/BAD{uuid.uuid4().hex[:6]}".encode()
    settings = kafka_acls.settings("producer-police")
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topics.EVENTS), b'{"specversion": "1.0"',
                                     key=key)
    finally:
        await producer.stop()
    return key


async def _check_status_relayed(kafka_acls: AclBroker, plate: str) -> None:
    """The consumer's relay published the plate's status change (read as the super user)."""
    from platereg.settings import load_settings

    super_user = load_settings(kafka_bootstrap_servers=kafka_acls.plaintext,
                               topic_prefix=kafka_acls.prefix)

    async def published() -> bool:
        records = await read_topic(super_user, super_user.topic(topics.STATUS))
        return any(r.key == plate.encode() for r in records)

    await wait_until(published, timeout=60, what="the status change on plates.status")


async def _replay_as_the_operator(kafka_acls: AclBroker, pool: asyncpg.Pool,
                                  key: bytes) -> None:
    """The consumer dead-lettered the direct producer's bad event (its DLQ relay
    published it); the operator replays it to plates.events."""
    row = await wait_until(lambda: pool.fetchrow(
        "SELECT id FROM dlq_messages WHERE key = $1 AND published_at IS NOT NULL", key),
        timeout=60, what="the bad event dead-lettered and relayed")
    done = await asyncio.to_thread(platereg_as, kafka_acls, "platereg-operator", "dlq",
                                   "replay", str(row["id"]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("replayed 1 message(s)")


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("principal,args,extra,says", [
    (None, ["notices", "dispatch", "--metrics-port", "0"], {"PLATEREG_TOPIC_PREFIX": "no."},
     "topic 'no.plates.notices' does not exist: create the topics with `platereg topics`"),
    ("platereg-notices-dispatcher", ["notices", "dispatch", "--metrics-port", "0"],
     {"PLATEREG_TOPIC_PREFIX": "no."},
     "'platereg-notices-dispatcher' may not describe topic 'no.plates.notices': grant it"),
    ("platereg-notices-scheduler", ["consume", "registry", "--metrics-port", "0"], {},
     "'platereg-notices-scheduler' may not describe topic 'acl.plates.events'"),
    ("platereg-registry", ["consume", "registry", "--metrics-port", "0"],
     {"PLATEREG_CONSUMER_GROUP": "acl.someone-else"},
     "'platereg-registry' is refused reading topic 'acl.plates.events' in group "
     "'acl.someone-else'"),
    ("platereg-registry", ["topics"], {},
     "'platereg-registry' may not create topic 'acl.plates.notices'"),
], ids=["topic-missing", "topic-not-granted", "topic-refused", "group-refused",
        "create-refused"])
def test_a_service_the_broker_refuses_stops_at_once_saying_why(
        kafka_acls: AclBroker, settings: Settings, principal: str | None, args: list[str],
        extra: dict[str, str], says: str) -> None:
    done = platereg_as(kafka_acls, principal, *args, **extra)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr
    # every retry writes a line ("...; retrying"): a refusal is final, never retried
    assert "retrying" not in done.stderr, f"a refusal was retried:\n{done.stderr}"

