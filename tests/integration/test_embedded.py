"""The embedded servers start, serve, and never outlive their owner."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.integration.cli_support import gone

pytestmark = pytest.mark.integration

OWNER_SCRIPT = textwrap.dedent(
    """
    import sys, time, warnings
    warnings.simplefilter("ignore")
    from pathlib import Path
    from devtools.embedded import EmbeddedKafka, EmbeddedPostgres
    base = Path(sys.argv[1]); mode = sys.argv[2]
    pg = EmbeddedPostgres(base / "pg", durable=False); pg.start()
    kafka = EmbeddedKafka(base); kafka.start()
    print("PIDS", pg.proc.pid, kafka.proc.pid, flush=True)
    try:
        if mode == "raise":
            raise RuntimeError("boom")
        if mode == "exit":
            pass
        else:
            time.sleep(600)
    finally:
        if mode != "sleep":
            kafka.stop(); pg.stop()
    """
)


def _owner(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(tmp_path), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    for line in proc.stdout:
        if line.startswith("PIDS "):
            break
    else:
        pytest.fail("owner did not start: " + proc.stderr.read())
    pg_pid, kafka_pid = (int(x) for x in line.split()[1:])
    return proc, pg_pid, kafka_pid


@pytest.mark.parametrize("mode", ["exit", "raise"])
def test_servers_stop_on_exit_and_exception(tmp_path: Path, mode: str) -> None:
    proc, pg_pid, kafka_pid = _owner(tmp_path, mode)
    proc.wait(60)
    assert gone(pg_pid) and gone(kafka_pid)


def test_servers_die_with_a_killed_owner(tmp_path: Path) -> None:
    proc, pg_pid, kafka_pid = _owner(tmp_path, "sleep")
    assert psutil.pid_exists(pg_pid) and psutil.pid_exists(kafka_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert gone(pg_pid), "postgres outlived its owner"
    assert gone(kafka_pid), "tansu outlived its owner"


def test_postgres_requires_the_password_over_tcp_and_its_socket(tmp_path: Path) -> None:
    import asyncio

    import asyncpg

    from devtools.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path / "pg", durable=False)
    dsn = pg.start()
    try:
        assert oct(pg.password_path.stat().st_mode & 0o777) == "0o600"

        async def check() -> None:
            conn = await asyncpg.connect(dsn)
            assert await conn.fetchval("SELECT current_user") == "postgres"
            await conn.close()
            for host in ("127.0.0.1", str(pg.data_dir)):  # TCP, then the Unix socket
                with pytest.raises(asyncpg.InvalidPasswordError):
                    await asyncpg.connect(user="postgres", host=host, port=pg.port,
                                          database="postgres", password="wrong")

        asyncio.run(check())
    finally:
        pg.stop()


def test_a_trust_data_directory_is_converted_to_passwords(tmp_path: Path) -> None:
    """A data directory made before passwords (initdb --auth=trust) requires one afterwards."""
    import asyncio

    import asyncpg

    from devtools.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path / "pg", durable=False)
    pg.data_dir.mkdir(mode=0o700)
    pg.pgdata.mkdir()
    subprocess.run([pg._bin("initdb"), "-D", str(pg.pgdata), "--auth=trust", "-U", "postgres"],
                   check=True, capture_output=True, **pg._run_as())
    dsn = pg.start()
    try:
        async def check() -> None:
            await (await asyncpg.connect(dsn)).close()
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(user="postgres", host="127.0.0.1", port=pg.port,
                                      database="postgres", password="")

        asyncio.run(check())
    finally:
        pg.stop()


KAFKA_OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from devtools.apache_kafka import KafkaCluster
    kafka = KafkaCluster(Path(sys.argv[1]), nodes=2)
    kafka.start()
    print("PIDS", *[n.proc.pid for n in kafka.nodes], flush=True)
    time.sleep(600)
    """
)


def test_apache_kafka_nodes_die_with_a_killed_owner(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KAFKA_OWNER, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = next((line for line in proc.stdout if line.startswith("PIDS ")), None)
    assert line, proc.stderr.read()
    pids = [int(pid) for pid in line.split()[1:]]
    assert len(pids) == 2 and all(psutil.pid_exists(pid) for pid in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert all(gone(pid) for pid in pids), "a Kafka node outlived its owner"


def test_apache_kafka_keeps_its_log_across_a_restart_and_a_crash(tmp_path: Path) -> None:
    """Records acknowledged with acks=all are there after a controlled stop and after a
    SIGKILL of the node, on the same address; the log file says what the node did."""
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from devtools.apache_kafka import KafkaCluster
    from platereg.settings import Settings
    from tests.integration.kafka_support import read_topic

    kafka = KafkaCluster(tmp_path)
    bootstrap = kafka.start()
    settings = Settings(kafka_bootstrap_servers=bootstrap)

    async def produce(values: list[bytes]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait("kept", value)
        finally:
            await producer.stop()

    async def setup() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("kept", 2, 1)])
        finally:
            await admin.close()

    async def values() -> list[bytes]:
        return sorted(r.value for r in await read_topic(settings, "kept"))

    try:
        asyncio.run(setup())
        asyncio.run(produce([b"before-stop-1", b"before-stop-2"]))
        kafka.stop()
        assert not kafka.running
        kafka.start()
        assert kafka.bootstrap == bootstrap
        asyncio.run(produce([b"before-kill"]))
        kafka.kill_node(1)
        kafka.start_node(1)
        assert asyncio.run(values()) == [b"before-kill", b"before-stop-1", b"before-stop-2"]
        assert "Kafka Server started" in kafka.nodes[0].log_path.read_text()
    finally:
        kafka.stop()
