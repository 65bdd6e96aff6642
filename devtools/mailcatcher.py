"""A local mail catcher for ``platereg run``: an SMTP server that keeps every
message it receives as an ``.eml`` file (open it with any mail program).

Development only: it accepts mail for anyone and delivers nothing onwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
from pathlib import Path

from aiosmtpd.smtp import SMTP

from platereg.logging import get_logger

log = get_logger(__name__)


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)     # on the first message only
    tmp = path.with_suffix(".part")
    tmp.write_bytes(content)
    os.replace(tmp, path)


class EmlWriter:
    """aiosmtpd handler: each message to ``<dir>/<UTC time>-<n>.eml``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"{stamp}-{next(self.counter):05d}.eml"
        await asyncio.to_thread(_write, path, envelope.original_content or envelope.content)
        log.info("mail caught", file=path.name)
        return "250 Message accepted for delivery"


async def serve(host: str, port: int, directory: Path) -> int:
    """Until SIGTERM/SIGINT (``directory`` is made when the first message comes)."""
    from platereg.process import install_stop_signals

    handler = EmlWriter(directory)
    stop = asyncio.Event()
    install_stop_signals(stop)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="platereg.localhost"),
                                      host, port)
    log.info("mail catcher listening", host=host, port=port)
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
    return 0
