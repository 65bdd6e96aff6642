"""create_pool retries while the server restarts: a server shutting down answers a new
connection's SSL request, then closes it (asyncpg: ConnectionDoesNotExistError). The
end-to-end fault test saw an API started at that moment exit instead of waiting."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from platereg.db import create_pool

SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


async def test_a_connection_closed_after_the_ssl_answer_is_retried() -> None:
    tries: list[float] = []

    async def shutting_down(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tries.append(time.monotonic())
        if await reader.read(8) == SSL_REQUEST:
            writer.write(b"N")                 # no SSL; then it goes away
            await writer.drain()
            await reader.read(100)
        writer.close()

    server = await asyncio.start_server(shutting_down, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(asyncpg.ConnectionDoesNotExistError):
            await create_pool(f"postgresql://u:p@127.0.0.1:{port}/d", retry_for=1.0)
    finally:
        server.close()
    assert len(tries) > 1, "gave up at the first closed connection"
    assert tries[-1] - tries[0] >= 0.5
