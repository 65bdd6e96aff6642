"""The real ``platereg`` console script of the running venv, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
