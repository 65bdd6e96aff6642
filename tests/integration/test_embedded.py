"""The embedded servers start, serve, and never outlive their owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from platereg.embedded import free_port

pytestmark = pytest.mark.integration

OWNER_SCRIPT = textwrap.dedent(
    """
    import sys, time, warnings
    warnings.simplefilter("ignore")
    from pathlib import Path
    from platereg.embedded import EmbeddedKafka, EmbeddedPostgres
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


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("mode", ["exit", "raise"])
def test_servers_stop_on_exit_and_exception(tmp_path: Path, mode: str) -> None:
    proc, pg_pid, kafka_pid = _owner(tmp_path, mode)
    proc.wait(60)
    assert _gone(pg_pid) and _gone(kafka_pid)


def test_servers_die_with_a_killed_owner(tmp_path: Path) -> None:
    proc, pg_pid, kafka_pid = _owner(tmp_path, "sleep")
    assert psutil.pid_exists(pg_pid) and psutil.pid_exists(kafka_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert _gone(pg_pid), "postgres outlived its owner"
    assert _gone(kafka_pid), "tansu outlived its owner"


def _run_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEREG_")}
    env.update(
        PLATEREG_DATA_DIR=str(tmp_path / "data"),
        PLATEREG_REGISTRY_PORT=str(free_port()),
        PLATEREG_INGEST_PORT=str(free_port()),
        PLATEREG_CONSUMER_METRICS_PORT=str(free_port()),
    )
    return env


def _start_run(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """Start `platereg run`, its output going to a file (a pipe nobody drains would
    fill up and block the stack's writers), and wait for its banner."""
    log_path = tmp_path / f"run-{time.monotonic_ns()}.log"
    log = open(log_path, "w")  # noqa: SIM115 - the child writes to it until it ends
    proc = subprocess.Popen(
        [sys.executable, "-m", "platereg.cli", "run", *extra], env=_run_env(tmp_path),
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    log.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        lines = log_path.read_text().splitlines(keepends=True)
        if any("Press Ctrl-C" in line for line in lines):
            return proc, lines
        time.sleep(0.2)
    proc.kill()
    pytest.fail("platereg run did not come up:\n" + log_path.read_text()[-5000:])


def _stack_pids(proc: subprocess.Popen) -> dict[int, str]:
    return {c.pid: " ".join(c.cmdline()[:6]) for c in
            psutil.Process(proc.pid).children(recursive=True)}


def test_make_run_starts_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc, lines = _start_run(tmp_path, "--no-demo")
    output = "".join(lines)
    assert "Demo operator API key" in output
    pids = _stack_pids(proc)
    assert pids, "no child processes"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    for pid, cmd in pids.items():
        assert _gone(pid), f"process {pid} ({cmd}) outlived `platereg run`"


def test_make_run_children_die_when_it_is_killed(tmp_path: Path) -> None:
    proc, _ = _start_run(tmp_path, "--no-demo")
    pids = _stack_pids(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    for pid, cmd in pids.items():
        assert _gone(pid), f"process {pid} ({cmd}) outlived a killed `platereg run`"


def test_make_run_keeps_the_database_across_restarts(tmp_path: Path) -> None:
    import asyncio

    import asyncpg

    proc, lines = _start_run(tmp_path, "--no-demo")
    dsn = next(line.split(": ", 1)[1].strip() for line in lines if line.startswith("PostgreSQL"))

    async def count_keys(dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT count(*) FROM api_keys")
        finally:
            await conn.close()

    assert asyncio.run(count_keys(dsn)) == 1
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    proc, lines = _start_run(tmp_path, "--no-demo")
    dsn = next(line.split(": ", 1)[1].strip() for line in lines if line.startswith("PostgreSQL"))
    try:
        assert asyncio.run(count_keys(dsn)) == 2  # the first run's key survived
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
