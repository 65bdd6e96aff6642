"""The strict JSON body reader of both APIs (platereg.http.read_json): the body as the
ASGI server hands it over, in one message or several, and a client that goes away."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from starlette.requests import ClientDisconnect, Request

from platereg.http import ProblemError, read_json


def _request(messages: Iterable[dict]) -> Request:
    pending = list(messages)

    async def receive() -> dict:
        return pending.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"content-type", b"application/json")]}
    return Request(scope, receive)


def _chunk(body: bytes, more: bool) -> dict:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_body_in_one_message() -> None:
    assert await read_json(_request([_chunk(b'{"a": 1}', False)])) == (
        "application/json", {"a": 1})


async def test_a_body_in_several_messages_is_joined_in_order() -> None:
    parts = [b'{"plate":', b' "ABC', b'123"', b"}"]
    messages = [_chunk(p, True) for p in parts[:-1]] + [_chunk(parts[-1], False)]
    assert (await read_json(_request(messages)))[1] == {"plate": "ABC123"}


async def test_a_last_message_without_a_body_ends_it() -> None:
    messages = [_chunk(b"[1, 2]", True), {"type": "http.request"}]
    assert (await read_json(_request(messages)))[1] == [1, 2]


async def test_an_empty_body_is_a_400_problem() -> None:
    with pytest.raises(ProblemError) as caught:
        await read_json(_request([_chunk(b"", False)]))
    assert caught.value.status == 400


async def test_a_client_gone_mid_body_is_a_disconnect_not_a_partial_body() -> None:
    with pytest.raises(ClientDisconnect):
        await read_json(_request([_chunk(b'{"a":', True), {"type": "http.disconnect"}]))
