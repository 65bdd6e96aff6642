"""The real ``platereg`` console script of the running venv, as a user runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

T = TypeVar("T")

#: The entry point pip installed next to this interpreter (``.venv/bin/platereg``).
PLATEREG = str(Path(sys.executable).with_name("platereg"))


def platereg(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
             input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``platereg ARGS`` to completion with this process's environment (plus ``env``)."""
    return subprocess.run([PLATEREG, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, input=input)


def popen(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.Popen:
    """Start ``platereg ARGS`` in its own process group (a terminal's Ctrl-C reaches it all)."""
    return subprocess.Popen([PLATEREG, *args], env={**os.environ, **(env or {})},
                            start_new_session=True, **kwargs)  # type: ignore[call-overload]


async def eventually(check: Callable[[], Awaitable[T]], message: str, *,
                     timeout: float = 30, procs: Sequence[subprocess.Popen] = ()) -> T:
    """Await ``check()`` until it returns something truthy (that is returned); fail with
    ``message`` after ``timeout`` seconds, or at once if one of ``procs`` has exited."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        for proc in procs:
            assert proc.poll() is None, f"{message}: process exited ({proc.returncode})"
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.1)


async def http_status(url: str) -> int | None:
    """The status of GET ``url``, or None when nothing answers."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            return (await client.get(url)).status_code
    except httpx.TransportError:
        return None


def gone(pid: int, timeout: float = 30) -> bool:
    """Whether process ``pid`` exits (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False
