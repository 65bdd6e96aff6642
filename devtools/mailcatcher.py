"""A local mail catcher for ``platereg run``: an SMTP server that keeps every
message it receives as an ``.eml`` file (open it with any mail program).

Development only: it accepts mail for anyone and delivers nothing onwards.

Its log holds counts only: one line every :data:`COUNT_EVERY` seconds while mail comes
in (how many messages since the last line, and in all). aiosmtpd's own protocol log
(about ten lines per message, the envelope's addresses among them) is kept to its
warnings.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
from pathlib import Path

from aiosmtpd.smtp import SMTP

from platereg.logging import get_logger

log = get_logger(__name__)

#: Seconds between two count lines (none while no mail comes).
COUNT_EVERY = 10.0


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
        self.caught = 0          # in all
        self.reported = 0        # in all at the last count line

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"{stamp}-{next(self.counter):05d}.eml"
        await asyncio.to_thread(_write, path, envelope.original_content or envelope.content)
        self.caught += 1
        return "250 Message accepted for delivery"

    def report(self) -> None:
        """One count line if mail came since the last one."""
        if self.caught != self.reported:
            log.info("mail caught", messages=self.caught - self.reported, total=self.caught)
            self.reported = self.caught


async def _count_lines(handler: EmlWriter, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), COUNT_EVERY)
        handler.report()


async def serve(host: str, port: int, directory: Path) -> int:
    """Until SIGTERM/SIGINT (``directory`` is made when the first message comes)."""
    from platereg.process import install_stop_signals

    logging.getLogger("mail.log").setLevel(logging.WARNING)   # aiosmtpd's protocol log
    handler = EmlWriter(directory)
    stop = asyncio.Event()
    install_stop_signals(stop)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="platereg.localhost"),
                                      host, port)
    log.info("mail catcher listening", host=host, port=port, directory=str(directory))
    counting = asyncio.create_task(_count_lines(handler, stop))
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
        await counting
    return 0
