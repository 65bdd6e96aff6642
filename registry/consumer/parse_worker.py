"""The registry consumer's parse worker processes: what runs in them, and what they import.

``multiprocessing`` starts a worker (start method ``spawn``) as a fresh interpreter that
imports the main module of the consumer's process first (``wiring.cli``, or the
``platereg`` script that imports it: the command tree only, its commands import what
they need when they run), then this module to run :func:`start`, then
:func:`registry.consumer.batch.parse_compact` with the first batch. So a worker holds the
parse code (the event schemas) and nothing of the consumer's Kafka, PostgreSQL or ops
server; ``tests/unit/test_parse_worker.py`` checks it.
"""

from __future__ import annotations

from platereg.parent_watch import exit_with_parent
from registry.consumer import batch  # noqa: F401 - imported by a worker as it starts


def start(parent_pid: int) -> None:
    """A worker's initializer: exit with the consumer process ``parent_pid``."""
    exit_with_parent(parent_pid)


def ready() -> bool:
    """What the warm-up runs in each worker: it returns once the worker has started (and
    so imported this module and the parse code)."""
    return True
