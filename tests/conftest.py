"""Test harness: one real PostgreSQL and one real Apache Kafka per session.

PostgreSQL is the embedded one (``devtools.embedded``) and Kafka the real broker
from Maven Central (``devtools.apache_kafka``), started here, unless
``PLATEREG_DATABASE_URL`` / ``PLATEREG_KAFKA_BOOTSTRAP_SERVERS`` point at
existing ones. Each test gets its own database (a copy of a migrated template)
and its own topic names (a unique prefix), so tests run in any order.

The broker has the production security setup beside its plaintext listener
(see ``tests/broker.py``): a SASL_SSL listener with SCRAM logins for every
principal of ``deploy/kafka/acls`` and the standard authorizer. Most tests use
the plaintext listener, whose anonymous principal is the super user; the
security tests log in as each principal. Without a JDK 17+ the broker tests
fail with one line saying what is missing: never a silent skip.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from devtools.apache_kafka import KafkaCluster
from devtools.embedded import EmbeddedPostgres
from platereg.db import create_database, create_pool, drop_database, migrate, with_database
from platereg.kafka import ensure_topics
from platereg.security import producer_store
from platereg.settings import Settings, load_settings
from tests.broker import (
    AclBroker,
    SecureListener,
    apply_session_acls,
    describe_test_broker,
    start_test_kafka,
)
from tests.integration.consumer_support import TEST_PRODUCER, TEST_PRODUCER_SECRET

warnings.filterwarnings("ignore", module="platformdirs")

TEMPLATE_DB = "platereg_test_template"


@dataclass
class Servers:
    admin_dsn: str
    bootstrap: str
    pg: EmbeddedPostgres | None
    kafka: KafkaCluster | None
    secure: SecureListener | None = None

    def dsn_for(self, database: str) -> str:
        return with_database(self.admin_dsn, database)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"broker: {describe_test_broker()}"]


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("servers")
    pg = kafka = secure = None
    try:
        admin_dsn = os.environ.get("PLATEREG_DATABASE_URL")
        if not admin_dsn:
            pg = EmbeddedPostgres(base / "pg", durable=False)
            admin_dsn = pg.start()
        bootstrap = os.environ.get("PLATEREG_KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            kafka, secure = start_test_kafka(base / "kafka")
            bootstrap = kafka.bootstrap
        yield Servers(admin_dsn=admin_dsn, bootstrap=bootstrap, pg=pg, kafka=kafka,
                      secure=secure)
    finally:
        if kafka is not None:
            kafka.stop()
        if pg is not None:
            pg.stop()


@pytest.fixture(scope="session")
def kafka_acls(servers: Servers) -> AclBroker:
    """The production ACLs (deploy/kafka/acls), applied once per session for the topic and
    group prefix ``acl.``, whose topics this creates; each principal logs in on the
    SASL_SSL listener (``kafka_acls.env(principal)`` / ``.settings(principal)``)."""
    if servers.kafka is None or servers.secure is None:
        message = "needs the suite's own broker (PLATEREG_KAFKA_BOOTSTRAP_SERVERS is set)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return apply_session_acls(servers.kafka.bootstrap, servers.secure)


@pytest.fixture(scope="session")
def embedded(servers: Servers) -> Servers:
    """For tests that stop and start the servers themselves (outages)."""
    if servers.pg is None or servers.kafka is None:
        message = "needs the suite's own servers (PLATEREG_* server URLs are set)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return servers


@pytest.fixture(scope="session")
async def template_db(servers: Servers) -> str:
    """The migrated template of every test database, with the tests' signed producer
    (``TEST_PRODUCER``, every source) registered."""
    await drop_database(servers.admin_dsn, TEMPLATE_DB)
    dsn = await create_database(servers.admin_dsn, TEMPLATE_DB)
    migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await producer_store.add(conn, TEST_PRODUCER, ["/"], TEST_PRODUCER_SECRET)
    finally:
        await conn.close()
    return TEMPLATE_DB


@pytest.fixture
async def database_url(servers: Servers, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield await create_database(servers.admin_dsn, name, template=template_db)
    if servers.pg is not None and not servers.pg.running:
        return  # an outage test left it down; the next fixture use restarts nothing
    await drop_database(servers.admin_dsn, name)


@pytest.fixture
def settings(servers: Servers, database_url: str, monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> Settings:
    """Settings for this test: its own database and topic prefix.

    Also exported as PLATEREG_* variables so subprocesses see the same.
    """
    prefix = f"t{uuid.uuid4().hex[:10]}."
    env = {
        "PLATEREG_DATABASE_URL": database_url,
        "PLATEREG_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap,
        "PLATEREG_TOPIC_PREFIX": prefix,
        "PLATEREG_EVENTS_PARTITIONS": "4",
        "PLATEREG_STATUS_PARTITIONS": "2",
        "PLATEREG_NOTICES_PARTITIONS": "2",
        "PLATEREG_CONSUMER_GROUP": f"registry-{prefix}",
        # what the ingest API, import and simulate sign as (registered in the template)
        "PLATEREG_PRODUCER_NAME": TEST_PRODUCER,
        "PLATEREG_PRODUCER_SECRET": TEST_PRODUCER_SECRET,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


@pytest.fixture
async def topics(settings: Settings) -> Settings:
    """``settings`` with the contract topics created on the broker."""
    await ensure_topics(settings)
    return settings


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


def debian_program(program: str, package: str) -> str:
    """The path of a program from a Debian package (installed when missing and root, as
    the bench does with wrk); skips the test when it cannot be had, fails under CI."""
    from devtools.debian_tools import find_or_install

    path = find_or_install(program, package, who="tests")
    if path is None:
        message = f"{program} missing (Debian package {package}: apt-get install -y {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return debian_program("promtool", "prometheus")


@pytest.fixture(scope="session")
def prometheus_server() -> str:
    """The ``prometheus`` server binary (same Debian package as promtool)."""
    return debian_program("prometheus", "prometheus")


@pytest.fixture(scope="session")
def pdftotext() -> str:
    """poppler's ``pdftotext``: what a PDF says, as text."""
    return debian_program("pdftotext", "poppler-utils")


@pytest.fixture(scope="session")
def npm() -> str:
    """Debian's npm, for the JavaScript tools the tests install into a cache directory."""
    return debian_program("npm", "npm")


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """Debian's docker-compose (v1): its ``config`` checks the compose file without Docker."""
    return debian_program("docker-compose", "docker-compose")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
