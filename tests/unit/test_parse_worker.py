"""What a parse worker of the registry consumer imports (``registry.consumer.parse_worker``).

A worker is a fresh interpreter (``multiprocessing``'s spawn start method) that first runs
the parent's main module as ``__mp_main__`` (``python -m wiring.cli``; the ``platereg``
script imports ``wiring.cli`` too) and then imports the module of its initializer. Both
steps are done here in a fresh interpreter, as multiprocessing does them (``runpy``), and
the modules it then holds are checked: the parse code, and none of the consumer's I/O,
which would only take memory in every worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKER_START = """
import json, runpy, sys
runpy.run_module("wiring.cli", run_name="__mp_main__", alter_sys=True)
import registry.consumer.parse_worker
print(json.dumps(sorted(sys.modules)))
"""

#: Modules a parse worker has no use for (the consumer's Kafka, PostgreSQL, ops server,
#: settings and logging, the notices of the batch hook).
NOT_IN_A_WORKER = (
    "aiokafka", "asyncpg", "uvicorn", "starlette", "prometheus_client", "structlog",
    "pydantic_settings", "platereg.kafka", "platereg.db", "platereg.settings",
    "platereg.process", "platereg.logging", "registry.consumer.loop",
    "registry.consumer.service", "registry.consumer.store", "notifications.events",
)


def _worker_modules() -> set[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", WORKER_START], capture_output=True,
                          text=True, check=True, cwd=ROOT, env=env, timeout=120)
    return set(json.loads(done.stdout))


def test_a_parse_worker_imports_the_parse_code_and_none_of_the_consumers_io() -> None:
    modules = _worker_modules()
    assert "registry.consumer.batch" in modules
    assert "schemas.validation" in modules
    assert sorted(m for m in NOT_IN_A_WORKER if m in modules) == []
