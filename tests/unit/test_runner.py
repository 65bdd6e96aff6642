"""`platereg run`'s start-up checks, and the event loop of every long-running command."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import uvicorn
import uvloop
from typer.testing import CliRunner

from devtools.runner import Service, StackError, _stop_children, _wait_healthy, check_ports
from platereg.settings import Settings
from wiring.cli import app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_services_on_one_port_are_refused_naming_both_variables() -> None:
    port = _free_port()
    settings = Settings(registry_port=port, ingest_port=port, consumer_metrics_port=0)
    with pytest.raises(StackError) as err:
        check_ports(settings)
    assert "PLATEREG_REGISTRY_PORT" in str(err.value) and "PLATEREG_INGEST_PORT" in str(err.value)


def test_free_ports_pass() -> None:
    check_ports(Settings(registry_port=_free_port(), ingest_port=_free_port(),
                         consumer_metrics_port=_free_port(),
                         notices_scheduler_port=_free_port(),
                         notices_dispatcher_port=_free_port(), smtp_port=_free_port()))


def test_a_service_that_dies_at_start_stops_the_wait_with_its_name_and_code() -> None:
    service = Service("dies-at-once", ("x",), url=lambda s: f"http://127.0.0.1:{_free_port()}/")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(30)
    with pytest.raises(StackError, match="dies-at-once exited with code 3"):
        _wait_healthy(Settings(), [(service, proc)], timeout=60)


def test_the_consumer_names_its_taken_metrics_port_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEREG_")}
        env.update(PLATEREG_DATABASE_URL="postgresql://u:p@127.0.0.1:1/none",
                   PLATEREG_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
        done = subprocess.run(
            [sys.executable, "-m", "wiring.cli", "consume", "registry", "--metrics-port",
             str(port)], env={**env, "PLATEREG_CONSUMER_METRICS_PORT": str(port)},
            capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines()
             if line.strip() and "ops server" not in line]
    assert len(lines) == 1, lines
    assert str(port) in lines[0] and "PLATEREG_CONSUMER_METRICS_PORT" in lines[0]


def test_an_unreachable_database_of_your_own_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEREG_")}
    env.update(PLATEREG_DATABASE_URL="postgresql://someone:secret-pw@127.0.0.1:1/none",
               PLATEREG_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
               PLATEREG_REGISTRY_PORT=str(_free_port()), PLATEREG_INGEST_PORT=str(_free_port()),
               PLATEREG_CONSUMER_METRICS_PORT=str(_free_port()),
               PLATEREG_NOTICES_SCHEDULER_PORT=str(_free_port()),
               PLATEREG_NOTICES_DISPATCHER_PORT=str(_free_port()),
               PLATEREG_SMTP_PORT=str(_free_port()))
    done = subprocess.run([sys.executable, "-m", "wiring.cli", "run"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "secret-pw" not in output
    assert "cannot migrate the database" in output and "PLATEREG_MIGRATE_DATABASE_URL" in output


# --------------------------------------------------------------------------- event loops

@pytest.fixture
def loops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[asyncio.AbstractEventLoop]]:
    """Replace the long-running coroutines with one that records the loop running it."""
    seen: list[asyncio.AbstractEventLoop] = []

    async def record(*_args: object, **_kwargs: object) -> int:
        seen.append(asyncio.get_running_loop())
        return 0

    import registry.consumer.service

    monkeypatch.setattr(registry.consumer.service, "serve_registry_consumer", record)
    monkeypatch.setattr(registry.consumer.service, "serve_relays", record)
    monkeypatch.setenv("PLATEREG_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/none")
    monkeypatch.setenv("PLATEREG_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield seen
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("command", [["consume", "registry"], ["consume", "relay"]])
def test_consumers_run_on_uvloop(loops: list, command: list[str]) -> None:
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert len(loops) == 1 and isinstance(loops[0], uvloop.Loop)


def test_purge_every_runs_on_uvloop(monkeypatch: pytest.MonkeyPatch, loops: list) -> None:
    import platereg.retention

    class Conn:
        async def close(self) -> None:
            pass

    async def connect(*_args: object, **_kwargs: object) -> Conn:
        return Conn()

    async def purge(*_args: object, **_kwargs: object) -> list:
        loops.append(asyncio.get_running_loop())
        signal.raise_signal(signal.SIGTERM)  # what stops the process
        return []

    monkeypatch.setattr(platereg.retention.asyncpg, "connect", connect)
    monkeypatch.setattr(platereg.retention, "purge", purge)
    monkeypatch.setenv("PLATEREG_DATABASE_URL", "postgresql://unused@127.0.0.1:1/x")
    result = CliRunner().invoke(app, ["purge", "--every", "60"])
    assert result.exit_code == 0, result.output
    assert len(loops) == 1 and isinstance(loops[0], uvloop.Loop)


@pytest.mark.parametrize("command", [["serve", "registry"], ["serve", "ingest"]])
def test_apis_run_on_uvloop(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    def run(app_: object, **kwargs: object) -> None:
        config = uvicorn.Config(app_, **kwargs)  # what uvicorn.run builds
        factory = config.get_loop_factory()
        assert factory is not None
        loop = factory()
        seen.append(loop)
        loop.close()

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setenv("PLATEREG_DATABASE_URL", "postgresql://unused@127.0.0.1:1/x")
    monkeypatch.setenv("PLATEREG_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("PLATEREG_PRODUCER_NAME", "ingest-api")
    monkeypatch.setenv("PLATEREG_PRODUCER_SECRET", "s" * 43)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1 and isinstance(seen[0], uvloop.Loop)


def test_a_service_is_given_its_own_database_url_only() -> None:
    from devtools.runner import service_env

    env = {"PATH": "/bin", "PLATEREG_DATABASE_URL": "postgresql://postgres:su@h/db",
           "PLATEREG_MIGRATE_DATABASE_URL": "postgresql://postgres:su@h/db",
           "PLATEREG_CONSUMER_DATABASE_URL": "postgresql://app_consumer:c@h/db",
           "PLATEREG_PURGE_DATABASE_URL": "postgresql://app_purge:p@h/db",
           "PLATEREG_KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
    consumer = service_env(env, "consumer")
    assert consumer == {"PATH": "/bin", "PLATEREG_KAFKA_BOOTSTRAP_SERVERS": "k:9092",
                        "PLATEREG_DATABASE_URL": "postgresql://app_consumer:c@h/db"}
    # No URL for the role (the user's own servers): the common one, and no other.
    assert service_env(env, "ingest_api")["PLATEREG_DATABASE_URL"] == env[
        "PLATEREG_DATABASE_URL"]
    assert "PLATEREG_PURGE_DATABASE_URL" not in service_env(env, "ingest_api")
    # A child with no database role (the mail catcher, the demo loader): no URL at all.
    assert not [k for k in service_env(env, None) if k.endswith("DATABASE_URL")]


def test_every_database_service_of_make_run_has_a_role() -> None:
    from devtools.runner import SERVICES
    from platereg.security.roles import ROLES

    roles = {s.name: s.role for s in SERVICES}
    assert roles["mail-catcher"] is None
    assert {r for r in roles.values() if r} == set(ROLES) - {"operator"}


def test_stopping_names_the_services_that_take_long_and_kills_those_that_stay(capsys) -> None:
    """A service that ignores SIGTERM is named while the run waits for it, then killed;
    one that stops at once is not named."""
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)")
    children = [(Service(name, ()), subprocess.Popen([sys.executable, "-c", code],
                                                     stdout=subprocess.PIPE))
                for name, code in (("prompt", "import time; print('ready', flush=True); "
                                              "time.sleep(60)"), ("stubborn", stubborn))]
    for _, proc in children:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    _stop_children(children, timeout=2, patience=0.5)
    err = capsys.readouterr().err
    assert [proc.returncode for _, proc in children] == [-15, -9]
    assert "waiting for stubborn to stop..." in err
    assert "stubborn did not stop in 2 s; killed" in err
    assert "prompt" not in err
