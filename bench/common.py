"""Shared pieces of the benchmark harness."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devtools.apache_kafka import KafkaCluster
from devtools.embedded import EmbeddedKafka, EmbeddedPostgres
from platereg.db import connection, create_database, migrate, with_database
from platereg.security import producer_store
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


#: The broker label of figures measured on the embedded Tansu broker, for reference.
TANSU = "embedded Tansu"
#: The signed producer of every benchmark database (every source): what the benchmarks'
#: own producers, the ingest API and `platereg import` sign as.
BENCH_PRODUCER = "bench"
BENCH_PRODUCER_SECRET = secrets.token_urlsafe(32)


@dataclass
class BenchContext:
    admin_dsn: str
    bootstrap: str
    work_dir: Path
    quick: bool = False
    #: ``make run``'s fallback broker, started on first use for the reference figures
    #: (None when the broker is the user's own: PLATEREG_KAFKA_BOOTSTRAP_SERVERS).
    reference: Callable[[], str] | None = None
    _dbs: list[str] = field(default_factory=list)

    def dsn_for(self, database: str) -> str:
        return with_database(self.admin_dsn, database)

    async def fresh_database(self) -> str:
        """A new migrated database with the benchmarks' producer; returns its DSN."""
        name = f"bench_{uuid.uuid4().hex[:10]}"
        dsn = await create_database(self.admin_dsn, name)
        migrate(dsn)
        async with connection(dsn) as conn:
            await producer_store.add(conn, BENCH_PRODUCER, ["/"], BENCH_PRODUCER_SECRET)
        self._dbs.append(name)
        return dsn

    def settings(self, dsn: str, *, broker: str = "", **env: str) -> Settings:
        """Settings for one benchmark (own topic prefix), also exported to os.environ;
        ``broker=TANSU``: on the embedded Tansu broker (reference figures)."""
        prefix = f"b{uuid.uuid4().hex[:8]}."
        if broker == TANSU:
            assert self.reference is not None
            env = {"PLATEREG_KAFKA_IDEMPOTENCE": "false", **env}
        values = {
            "PLATEREG_DATABASE_URL": dsn,
            "PLATEREG_KAFKA_BOOTSTRAP_SERVERS": (self.reference() if broker == TANSU
                                                 else self.bootstrap),
            "PLATEREG_KAFKA_IDEMPOTENCE": "true",
            "PLATEREG_TOPIC_PREFIX": prefix,
            "PLATEREG_CONSUMER_GROUP": f"bench-{prefix}",
            "PLATEREG_PRODUCER_NAME": BENCH_PRODUCER,
            "PLATEREG_PRODUCER_SECRET": BENCH_PRODUCER_SECRET,
            **env,
        }
        os.environ.update(values)
        return load_settings()


class Servers:
    """The servers of the whole benchmark run: PostgreSQL and Apache Kafka, embedded unless
    PLATEREG_* URLs are set, and ``make run``'s fallback broker (Tansu) for the reference
    figures, started when a benchmark first asks for it."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.pg: EmbeddedPostgres | None = None
        self.kafka: KafkaCluster | None = None
        self.tansu: EmbeddedKafka | None = None
        self.broker = ""

    def __enter__(self) -> tuple[str, str]:
        dsn = os.environ.get("PLATEREG_DATABASE_URL")
        if not dsn:
            self.pg = EmbeddedPostgres(self.work_dir / "pg", durable=False)
            dsn = self.pg.start()
        bootstrap = os.environ.get("PLATEREG_KAFKA_BOOTSTRAP_SERVERS")
        self.broker = f"the broker at {bootstrap}"
        if not bootstrap:
            self.kafka = KafkaCluster(self.work_dir / "kafka", heap_mb=1024)
            bootstrap = self.kafka.start()
            self.broker = self.kafka.describe()
        return dsn, bootstrap

    def reference(self) -> Callable[[], str] | None:
        """Starts Tansu on first call; None when the broker is the user's own."""
        if self.kafka is None:
            return None

        def bootstrap() -> str:
            if self.tansu is None:
                self.tansu = EmbeddedKafka(self.work_dir / "tansu")
                self.tansu.start()
            return self.tansu.bootstrap

        return bootstrap

    def __exit__(self, *exc: object) -> None:
        for server in (self.tansu, self.kafka, self.pg):
            if server is not None:
                server.stop()


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
