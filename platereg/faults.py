"""Crash points for the fault tests: a process kills itself (SIGKILL) at a named point.

A crash test sets ``PLATEREG_TEST_CRASH_AT=<point>[:<n>]`` in the environment of the
process it starts; the process dies by SIGKILL the ``n``-th time (default: the first)
it reaches :func:`crash_point` with that name, exactly as a ``kill -9`` or an OOM kill
would leave it there, and the test then checks what the crash left in the database.
Unset (always, in production) every point is a dictionary lookup that does nothing.
The points (``docs/testing.md``, "Fault hooks"):

* ``offsets.store``: the consumer has written a batch's events, plates, outboxes and
  notices and is about to store the batch's offsets (``RegistrySql.set_offsets``).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

#: The variable a crash test sets; never set in a deployment.
CRASH_ENV = "PLATEREG_TEST_CRASH_AT"

_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """SIGKILL this process if ``PLATEREG_TEST_CRASH_AT`` names this point and this is
    the n-th time it is reached; otherwise nothing."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
