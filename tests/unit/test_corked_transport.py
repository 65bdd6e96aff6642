"""``platereg.http_server.CorkedTransport``: the writes of one loop turn leave as one send,
in order; close and write_eof send what is buffered first, abort drops it, a big answer
is not held back."""

from __future__ import annotations

import asyncio
from typing import Any

from platereg.http_server import FLUSH_BYTES, CorkedTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def write_eof(self) -> None:
        self.calls.append(("eof", None))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_writes_of_one_turn_are_one_send() -> None:
    raw = RecordingTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    corked.write(bytearray(b"body"))
    assert raw.calls == []
    await asyncio.sleep(0)
    assert raw.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]
    corked.writelines([b"a", b"b"])
    await asyncio.sleep(0)
    assert raw.calls[-1] == ("write", b"ab")
    assert corked.get_extra_info("peername") == "info:peername"   # the rest is the transport's


async def test_close_and_eof_send_first_abort_drops() -> None:
    raw = RecordingTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"x")
    corked.write_eof()
    corked.write(b"y")
    corked.close()
    await asyncio.sleep(0)
    assert raw.calls == [("write", b"x"), ("eof", None), ("write", b"y"), ("close", None)]
    raw2 = RecordingTransport()
    corked2 = CorkedTransport(raw2, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked2.write(b"lost")
    corked2.abort()
    await asyncio.sleep(0)
    assert raw2.calls == [("abort", None)]


async def test_a_big_answer_is_sent_at_once() -> None:
    raw = RecordingTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"h")
    corked.write(b"b" * FLUSH_BYTES)
    assert raw.calls == [("write", b"h" + b"b" * FLUSH_BYTES)]
    await asyncio.sleep(0)
    assert len(raw.calls) == 1
