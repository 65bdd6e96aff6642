"""Shared pieces of the benchmark harness."""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devtools.embedded import EmbeddedKafka, EmbeddedPostgres
from platereg.db import create_database, migrate, with_database
from platereg.settings import Settings, load_settings


@dataclass
class Figure:
    """One line of the table: a measured value beside its same-run baseline."""

    bench: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    notes: str = ""
    #: "higher" (throughput) or "lower" (latency, memory): which way the ratio improves.
    better: str = "higher"

    @property
    def key(self) -> str:
        """The figure's name in ``bench/baseline.json``."""
        return f"{self.bench}: {self.metric}"

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0) or not self.value:
            return None
        return self.value / self.baseline

    def regressed(self, reference: float | None, tolerance: float = 0.3) -> bool:
        """Whether this run's ratio is more than ``tolerance`` worse than ``reference``."""
        if reference is None or self.ratio is None:
            return False
        if self.better == "lower":
            return self.ratio > reference / (1 - tolerance)
        return self.ratio < reference * (1 - tolerance)

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class BenchContext:
    admin_dsn: str
    bootstrap: str
    work_dir: Path
    quick: bool = False
    _dbs: list[str] = field(default_factory=list)

    def dsn_for(self, database: str) -> str:
        return with_database(self.admin_dsn, database)

    async def fresh_database(self) -> str:
        """A new migrated database; returns its DSN."""
        name = f"bench_{uuid.uuid4().hex[:10]}"
        dsn = await create_database(self.admin_dsn, name)
        migrate(dsn)
        self._dbs.append(name)
        return dsn

    def settings(self, dsn: str, **env: str) -> Settings:
        """Settings for one benchmark (own topic prefix), also exported to os.environ."""
        prefix = f"b{uuid.uuid4().hex[:8]}."
        values = {
            "PLATEREG_DATABASE_URL": dsn,
            "PLATEREG_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "PLATEREG_TOPIC_PREFIX": prefix,
            "PLATEREG_CONSUMER_GROUP": f"bench-{prefix}",
            **env,
        }
        os.environ.update(values)
        return load_settings()


class Servers:
    """Embedded servers for the whole benchmark run (unless PLATEREG_* URLs are set)."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.pg: EmbeddedPostgres | None = None
        self.kafka: EmbeddedKafka | None = None

    def __enter__(self) -> tuple[str, str]:
        dsn = os.environ.get("PLATEREG_DATABASE_URL")
        if not dsn:
            self.pg = EmbeddedPostgres(self.work_dir / "pg", durable=False)
            dsn = self.pg.start()
        bootstrap = os.environ.get("PLATEREG_KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            self.kafka = EmbeddedKafka(self.work_dir)
            bootstrap = self.kafka.start()
        return dsn, bootstrap

    def __exit__(self, *exc: object) -> None:
        if self.kafka:
            self.kafka.stop()
        if self.pg:
            self.pg.stop()


# Runs the `platereg` CLI in-process and prints the process's own peak RSS
# (VmHWM) on stderr as `MAXRSS_KB <n>`. Not ru_maxrss: Linux carries the
# parent's peak into a child through vfork + exec.
RSS_WRAPPER = (
    "import sys\n"
    "from wiring.cli import app\n"
    "code = 0\n"
    "try:\n"
    "    app(sys.argv[1:], prog_name='platereg')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code or 0\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
    "print('MAXRSS_KB', hwm, file=sys.stderr)\n"
    "sys.exit(code)\n"
)
