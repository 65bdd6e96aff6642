"""`platereg notices dispatch` runs on uvloop, like the other long-running commands."""

from __future__ import annotations

import asyncio
import signal

import pytest
import uvloop
from typer.testing import CliRunner

from wiring.cli import app


def test_the_dispatcher_runs_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    import notifications.service

    seen: list[asyncio.AbstractEventLoop] = []

    async def serve(*_args: object, **_kwargs: object) -> int:
        seen.append(asyncio.get_running_loop())
        return 0

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(notifications.service, "serve_dispatcher", serve)
    monkeypatch.setenv("PLATEREG_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/none")
    monkeypatch.setenv("PLATEREG_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    try:
        result = CliRunner().invoke(app, ["notices", "dispatch"])
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1 and isinstance(seen[0], uvloop.Loop)
