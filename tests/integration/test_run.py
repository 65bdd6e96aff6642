"""`platereg run` / `make run` as a user runs them: Ctrl-C from a terminal reaches the whole
foreground process group, ports may be taken, the user's own servers get no demo data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil
import pytest

from devtools.embedded import EmbeddedPostgres, free_port
from devtools.screen import TerminalSession
from platereg.security.keys import create_key
from tests.integration.cli_support import gone

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BANNER = "Press Ctrl-C"


def _run_env(tmp_path: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (base or os.environ).items()
           if base is not None or not k.startswith("PLATEREG_")}
    env.update(
        PLATEREG_DATA_DIR=str(tmp_path / "data"),
        PLATEREG_REGISTRY_PORT=str(free_port()),
        PLATEREG_INGEST_PORT=str(free_port()),
        PLATEREG_CONSUMER_METRICS_PORT=str(free_port()),
        PLATEREG_NOTICES_SCHEDULER_PORT=str(free_port()),
        PLATEREG_NOTICES_DISPATCHER_PORT=str(free_port()),
        PLATEREG_SMTP_PORT=str(free_port()),
    )
    return env


def _start(tmp_path: Path, *extra: str, env: dict[str, str] | None = None
           ) -> tuple[subprocess.Popen, Path]:
    """`platereg run` in a new session (as a shell starts a foreground job), its output going
    to a file (a pipe nobody drains would fill up and block the stack's writers)."""
    log_path = tmp_path / f"run-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wiring.cli", "run", *extra],
            env=env or _run_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    return proc, log_path


def _wait_for(proc: subprocess.Popen, read: callable, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        output = read()
        if text in output:
            return output
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {text!r} from `platereg run`:\n{read()[-5000:]}")


def _ctrl_c(proc: subprocess.Popen, log_path: Path, timeout: float = 60) -> str:
    """Ctrl-C as a terminal sends it (SIGINT to the foreground process group); the run's
    output once it has exited 0. A run still going after ``timeout`` fails the test with
    what it was doing: its output, its processes and the end of each service's log."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        report = _still_running(proc, log_path)
        for p in [*psutil.Process(proc.pid).children(recursive=True), proc]:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                p.kill()
        pytest.fail(f"`platereg run` still running {timeout:.0f} s after Ctrl-C\n{report}")
    output = log_path.read_text()
    assert code == 0, output[-5000:]
    return output


def _still_running(proc: subprocess.Popen, log_path: Path) -> str:
    lines = []
    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            lines.append(f"  {p.pid} {p.status()} {' '.join(p.cmdline()[:6])}")
    lines.append(f"--- its output:\n{log_path.read_text()[-3000:]}")
    for service_log in sorted((log_path.parent / "data" / "logs").glob("*.log")):
        lines.append(f"--- {service_log.name}:\n{service_log.read_text(errors='replace')[-1500:]}")
    return "\n".join(lines)


def _descendants(pid: int) -> dict[int, str]:
    return {c.pid: " ".join(c.cmdline()[:4]) for c in psutil.Process(pid).children(recursive=True)}


def _assert_all_gone(pids: dict[int, str]) -> None:
    assert pids, "no child processes"
    for pid, cmd in pids.items():
        assert gone(pid), f"process {pid} ({cmd}) outlived `platereg run`"


def _admin_dsn(output: str, database: str = "postgres") -> str:
    """The embedded server's superuser DSN: the banner masks the password; its file has it."""
    line = next(line for line in output.splitlines() if line.startswith("PostgreSQL (embedded"))
    url = line.split("): ", 1)[1].split()[0]
    password = Path(line.rsplit("superuser password in ", 1)[1].rstrip(")")).read_text().strip()
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(":***@", f":{password}@"),
                                     path=f"/{database}"))


async def _lookup_is_audited(admin_dsn: str, registry_url: str) -> None:
    """A lookup through the API (running as the services' role) and its audit row."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        _, key = await create_key(conn, role="enforcement", name="run test")
        async with httpx.AsyncClient(base_url=registry_url) as client:
            r = await client.post("/v1/plates/query", headers={"Authorization": f"Bearer {key}"},
                                  json={"jurisdiction": "CA-ON", "plate": "RUNT1",
                                        "purpose": "testing"})
        assert r.status_code == 404
        deadline = time.monotonic() + 30
        while not await conn.fetchval("SELECT count(*) FROM audit_log WHERE plate = 'RUNT1'"):
            assert time.monotonic() < deadline, "the lookup was not audited"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


def test_ctrl_c_to_the_process_group_stops_services_then_servers(tmp_path: Path) -> None:
    env = _run_env(tmp_path)
    proc, log_path = _start(tmp_path, "--no-demo", env=env)
    output = _wait_for(proc, log_path.read_text, BANNER)
    pids = _descendants(proc.pid)
    _assert_each_service_logs_in_as_its_own_role(pids)
    asyncio.run(_lookup_is_audited(_admin_dsn(output),
                                   f"http://127.0.0.1:{env['PLATEREG_REGISTRY_PORT']}"))
    output = _ctrl_c(proc, log_path)
    assert "Traceback" not in output, output[-5000:]
    assert output.rstrip().endswith("stopped")
    _assert_all_gone(pids)
    # PostgreSQL stopped after its clients had gone: it cut no connection.
    pg_log = (tmp_path / "data" / "postgres" / "postgres.log").read_text()
    assert "received fast shutdown request" in pg_log
    assert "terminating connection due to administrator command" not in pg_log


def _assert_each_service_logs_in_as_its_own_role(pids: dict[int, str]) -> None:
    """Every child's environment has at most one database URL, its own role's login, never
    the superuser's; together they are one login per service role."""
    from devtools.runner import SERVICES, embedded_login

    users = set()
    for pid in pids:
        try:
            environ = psutil.Process(pid).environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        urls = {k: v for k, v in environ.items()
                if k.startswith("PLATEREG_") and k.endswith("DATABASE_URL")}
        assert set(urls) <= {"PLATEREG_DATABASE_URL"}, (pids[pid], sorted(urls))
        if urls:
            user = urlsplit(urls["PLATEREG_DATABASE_URL"]).username
            assert user != "postgres", pids[pid]
            users.add(user)
    assert users == {embedded_login(s.role) for s in SERVICES if s.role}



#: How long the terminal test watches `make run`'s screen: a newcomer's first minutes.
SCREEN_SECONDS = float(os.environ.get("PLATEREG_TEST_SCREEN_SECONDS", "180"))


def _banner_rows(screen: list[str]) -> range:
    """The rows of the banner: from its first line to "Press Ctrl-C"."""
    first = next(i for i, line in enumerate(screen) if "Plate Registry is running" in line)
    last = next(i for i, line in enumerate(screen) if BANNER in line)
    return range(first, last + 1)


@pytest.mark.slow
def test_make_run_in_an_80x24_terminal_keeps_the_banner_and_stops_on_ctrl_c(
        tmp_path: Path) -> None:
    """A fresh data directory's `make run` in an 80x24 pseudo-terminal, read as the screen a
    newcomer sees (pyte, a terminal emulator, fed what the terminal receives): the banner
    (the API addresses, both demo keys, the owner link) stays where it was, under it the
    status block redrawn in place, sampled every 15 s for its first three minutes; Ctrl-C
    typed twice (the second during the clean-up) ends it with exit 0, nothing left."""
    env = _run_env(tmp_path)
    # -o: the virtual environment is installed already; never reinstall it under a test.
    session = TerminalSession(["make", "--no-print-directory", "-o", ".venv/.installed-run",
                               "run"], cwd=ROOT, env=env, columns=80, lines=24)
    try:
        session.wait_for(BANNER, timeout=240)
        # the screen once the status block is drawn under the banner (the first drawing
        # may scroll the screen up by the block's height; from then on nothing moves)
        first = session.wait_for("── status ", timeout=30)
        rows = _banner_rows(first)
        banner = "\n".join(first[i] for i in rows)
        for port in (env["PLATEREG_REGISTRY_PORT"], env["PLATEREG_INGEST_PORT"]):
            assert f"http://127.0.0.1:{port}/docs" in banner, banner
        assert len(re.findall(r"^  prk_[\w-]+$", banner, re.MULTILINE)) == 2, banner
        assert re.search(r"^ http://\S+/owner/\?token=\S+$", banner, re.MULTILINE), banner
        pids = _descendants(session.proc.pid)
        deadline, times = time.monotonic() + SCREEN_SECONDS, set()
        while time.monotonic() < deadline:
            time.sleep(15)
            screen = session.display()
            assert [screen[i] for i in rows] == [first[i] for i in rows], session.text()
            status = [line for line in screen[rows[-1] + 1:] if line.startswith("── status ")]
            assert status, f"no status block under the banner:\n{session.text()}"
            times.add(status[0].split()[2])
        assert len(times) > 1, "the status block was not redrawn"
        session.ctrl_c()
        session.wait_for("stopping...", timeout=30)
        session.ctrl_c()
        assert session.wait(60) == 0, session.text()
    finally:
        session.close()
    output = session.raw.decode(errors="replace")
    assert "Traceback" not in output and "make: ***" not in output, output[-5000:]
    assert "stopped" in output
    _assert_all_gone(pids)


@pytest.mark.parametrize("field", ["registry_port", "ingest_port", "consumer_metrics_port"])
def test_a_taken_port_is_named_and_nothing_starts(tmp_path: Path, field: str) -> None:
    variable = f"PLATEREG_{field.upper()}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**_run_env(tmp_path), variable: str(port)}
        proc, log_path = _start(tmp_path, env=env)
        try:
            # It stops before starting anything; the bound is for a loaded machine, where
            # the CLI's imports alone can take seconds (a stack that went on never exits).
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("`platereg run` went on with a taken port:\n" + log_path.read_text())
    assert code != 0
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert str(port) in lines[0] and variable in lines[0]
    assert not (tmp_path / "data").exists()  # no server was started
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if any(str(tmp_path) in arg for arg in p.info["cmdline"] or [])]
    assert not left


async def test_own_servers_get_no_demo_data_and_no_key(settings, tmp_path: Path) -> None:
    env = _run_env(tmp_path, dict(os.environ))  # the test's own database and broker
    proc, log_path = _start(tmp_path, env=env)
    output = await asyncio.to_thread(_wait_for, proc, log_path.read_text, BANNER)
    pids = _descendants(proc.pid)
    await asyncio.to_thread(_ctrl_c, proc, log_path)
    assert "Demo operator API key" not in output and "simulated" not in output
    assert "No demo data or key" in output
    conn = await asyncpg.connect(settings.dsn())
    try:
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 0
        assert await conn.fetchval("SELECT count(*) FROM plate_events") == 0
    finally:
        await conn.close()
    # nothing embedded either: the data directory holds only the services' logs
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["logs"]
    _assert_all_gone(pids)


def test_make_run_children_die_when_it_is_killed(tmp_path: Path) -> None:
    proc, log_path = _start(tmp_path, "--no-demo")
    _wait_for(proc, log_path.read_text, BANNER)
    pids = _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    _assert_all_gone(pids)


def test_make_run_keeps_the_database_across_restarts(tmp_path: Path) -> None:
    async def keys(dsn: str, add: bool) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            if add:
                await create_key(conn, role="operator", name="survives a restart")
            return await conn.fetchval("SELECT count(*) FROM api_keys")
        finally:
            await conn.close()

    proc, log_path = _start(tmp_path, "--no-demo")
    output = _wait_for(proc, log_path.read_text, BANNER)
    assert asyncio.run(keys(_admin_dsn(output), add=True)) == 1
    _ctrl_c(proc, log_path)
    proc, log_path = _start(tmp_path, "--no-demo")
    try:
        output = _wait_for(proc, log_path.read_text, BANNER)
        assert "migrations: 0 applied" in output
        assert asyncio.run(keys(_admin_dsn(output), add=False)) == 1
    finally:
        if proc.poll() is None:   # else the failure above says why it is gone
            _ctrl_c(proc, log_path)


def test_demo_data_is_loaded_once_and_no_demo_key_outlives_its_run(tmp_path: Path) -> None:
    """Two `make run`s of one data directory on Apache Kafka: the demo data comes once, the
    broker keeps its log and the consumer its offsets, each run's demo keys die with it;
    `--reset` starts again from nothing."""
    async def state(dsn: str) -> tuple[int, int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            return (
                await conn.fetchval("SELECT count(*) FROM plate_events"),
                await conn.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL"),
                await conn.fetchval("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"))
        finally:
            await conn.close()

    def one_run(*extra: str) -> tuple[str, tuple[int, int, int]]:
        proc, log_path = _start(tmp_path, "--demo", *extra)
        output = _wait_for(proc, log_path.read_text, BANNER, timeout=240)
        loaded = re.search(r"simulated ([0-9,]+) messages", output)
        deadline = time.monotonic() + 120
        while True:   # until the consumer has read whatever this run's demo load sent
            seen = asyncio.run(state(_admin_dsn(output)))
            if not loaded or seen[2] >= int(loaded.group(1).replace(",", "")):
                break
            assert time.monotonic() < deadline, f"the demo load was not consumed: {seen}"
            time.sleep(0.5)
        return _ctrl_c(proc, log_path), seen

    first, (events, live_keys, offsets) = one_run()
    assert "Apache Kafka" in first and "simulated" in first
    assert events > 1000 and live_keys == 2 and offsets > events
    second, (events_again, live_again, offsets_again) = one_run()
    assert "simulated" not in second, "the demo data was loaded a second time"
    assert (events_again, live_again, offsets_again) == (events, 2, offsets)
    pg = EmbeddedPostgres(tmp_path / "data" / "postgres")   # the run's own, between runs
    try:
        assert asyncio.run(state(pg.start()))[1] == 0, "a demo key outlived its run"
    finally:
        pg.stop()
    third, (events_reset, _, _) = one_run("--reset")
    assert "reset: deleted" in third and "simulated" in third and events_reset > 1000
