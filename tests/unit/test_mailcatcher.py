"""The mail catcher keeps every message and logs counts only: no address, no line per
message (aiosmtpd's protocol log wrote about ten per message, the addresses among them)."""

from __future__ import annotations

import asyncio
import signal
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

import platereg.process
from devtools import mailcatcher
from devtools.embedded import free_port
from platereg.logging import configure_logging


class _NoHardExit:
    """Stands for the timer that the first stop signal starts to end a stuck process
    (``os._exit(1)`` after the grace period): in a test it would end pytest."""

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        self.daemon = True

    def start(self) -> None:
        pass


async def test_messages_are_kept_and_only_counted_in_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(mailcatcher, "COUNT_EVERY", 0.2)
    monkeypatch.setattr(platereg.process.threading, "Timer", _NoHardExit)
    configure_logging("console", "DEBUG")
    port = free_port()
    server = asyncio.create_task(mailcatcher.serve("127.0.0.1", port, tmp_path / "mail"))
    for _ in range(50):
        try:
            await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.1)
    for n in range(3):
        message = EmailMessage()
        message["From"] = "notices@platereg.localhost"
        message["To"] = f"owner{n}@example.org"
        message["Subject"] = "Your plate"
        message.set_content("Renew it.")
        await aiosmtplib.send(message, hostname="127.0.0.1", port=port)
    await asyncio.sleep(0.6)
    signal.raise_signal(signal.SIGTERM)                    # how make run stops it
    assert await asyncio.wait_for(server, 10) == 0
    kept = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(kept) == 3 and "owner2@example.org" in kept[-1].read_text()
    log = capsys.readouterr().err
    assert "example.org" not in log and "platereg.localhost" not in log, log
    counts = [line for line in log.splitlines() if "mail caught" in line]
    assert len(counts) == 1 and "messages=3" in counts[0] and "total=3" in counts[0], log
