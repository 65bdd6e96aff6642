"""Kafka Connect standalone for the benchmarks: the peer a user would pick instead of the
registry consumer to put Kafka events into PostgreSQL (the Debezium JDBC sink).

The jars come from Maven Central through the pinned descriptor ``deploy/connect/pom.xml``
as the broker's do (:func:`devtools.apache_kafka.fetch_jars`), into the same cache outside
git: its ``worker`` profile (``connect-runtime`` of the broker's Kafka release, the JSON
converter, logging) onto the class path, each connector profile (``jdbc-sink``: the
Debezium JDBC sink, Hibernate ORM and its Agroal pool, the PostgreSQL driver) into a
directory of its own under the worker's ``plugin.path``, where Connect loads it in an
isolated class loader. The plugin path is named after a digest of the pom, so a changed
pin or exclusion fetches the plugins anew.

:class:`ConnectWorker` writes the worker's properties (bootstrap, a file for source
offsets, ``plugin.path``, the REST listener on loopback, offsets committed every second),
starts ``ConnectStandalone`` with no connector, waits until its REST API answers, creates
connectors through it (``PUT /connectors/<name>/config``) and waits until their task
runs. A sink's progress is its consumer group's committed offsets (group
``connect-<name>``): :func:`committed`. The JVM is a direct child in a session of its own
with a parent-death signal, as the broker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from devtools.apache_kafka import (
    LOG4J,
    REPO,
    KafkaUnavailable,
    cache_root,
    fetch_jars,
    java_binary,
)
from devtools.embedded import EmbeddedError, _die_with_parent, _tail, free_port, stop_process
from platereg.logging import get_logger

log = get_logger(__name__)

POM = REPO / "deploy" / "connect" / "pom.xml"
WORKER_MAIN = "org.apache.kafka.connect.cli.ConnectStandalone"
#: The connector profiles of ``deploy/connect/pom.xml`` and the class each one brings.
CONNECTORS = {"jdbc-sink": "io.debezium.connector.jdbc.JdbcSinkConnector"}


def versions(pom: Path = POM) -> dict[str, str]:
    """The ``*.version`` properties pinned in ``deploy/connect/pom.xml``."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(pom).getroot().find("m:properties", ns)  # noqa: S314
    if props is None:
        raise KafkaUnavailable(f"{pom} has no properties")
    return {child.tag.split("}")[1]: (child.text or "").strip() for child in props
            if child.tag.endswith(".version")}


def home() -> Path:
    """The cache directory of this worker release."""
    return cache_root() / f"kafka-connect-{versions()['kafka.version']}"


def install_worker(*, quiet: bool = True) -> Path:
    """The worker's jars (the class path), fetched on first use."""
    root = home()
    return fetch_jars(POM, root / "libs", f"Kafka Connect {versions()['kafka.version']}",
                      stamp=root / "libs.complete", profile="worker", quiet=quiet)


def plugin_path(pom: Path = POM) -> Path:
    """The worker's ``plugin.path``: ``plugins-<digest of the pom>``, so that a change of
    the pinned jars or their exclusions fetches them anew instead of reusing the cache."""
    return home() / f"plugins-{hashlib.sha256(pom.read_bytes()).hexdigest()[:12]}"


def install_connector(profile: str, *, quiet: bool = True) -> Path:
    """One connector's plugin directory (``<plugin path>/<profile>``), fetched on first
    use; returns the plugin path. :class:`KafkaUnavailable` says why it cannot be had."""
    root = plugin_path()
    label = {"jdbc-sink": f"the Debezium JDBC sink {versions()['debezium.version']}"}.get(
        profile, profile)
    fetch_jars(POM, root / profile, label, stamp=root / f"{profile}.complete",
               profile=profile, quiet=quiet)
    return root


class ConnectWorker:
    """One Kafka Connect standalone worker on loopback, its files in ``directory``."""

    def __init__(self, directory: Path, bootstrap: str, *, plugins: tuple[str, ...] = (),
                 heap_mb: int = 512, config: Mapping[str, str] | None = None) -> None:
        self.directory = Path(directory).resolve()
        self.bootstrap = bootstrap
        self.plugins = plugins
        self.heap_mb = heap_mb
        self.config = dict(config or {})
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "connect.log"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise EmbeddedError("the Connect worker is not running")
        return self.proc.pid

    def properties(self, plugin_dir: Path | None) -> dict[str, str]:
        """The worker's configuration: records keyed by a plain string, values as JSON
        with their schema (the JDBC sink needs a schema to make its columns)."""
        props = {
            "bootstrap.servers": self.bootstrap,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "true",
            "offset.storage.file.filename": str(self.directory / "offsets"),
            "offset.flush.interval.ms": "1000",
            "listeners": self.url,
            "rest.advertised.host.name": "127.0.0.1",
            # every plugin here has ServiceLoader manifests: no reflective scan of the jars
            # (which took half a minute of the worker's start on the 2-core machine)
            "plugin.discovery": "service_load",
        }
        if plugin_dir is not None:
            props["plugin.path"] = str(plugin_dir)
        return {**props, **self.config}

    def start(self, timeout: float = 120.0) -> str:
        """Fetch what is missing, start the worker, wait for its REST API; returns its URL."""
        libs = install_worker()
        plugin_dir = None
        for profile in self.plugins:
            plugin_dir = install_connector(profile)
        java = java_binary()
        if java is None:
            raise KafkaUnavailable("Kafka Connect needs a JDK: no `java`")
        self.directory.mkdir(parents=True, exist_ok=True)
        worker = self.directory / "worker.properties"
        worker.write_text("".join(f"{k}={v}\n" for k, v in self.properties(plugin_dir).items()))
        (self.directory / "log4j2.properties").write_text(LOG4J.format(log=self.log_path))
        self._log_file = open(self.directory / "stdout.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [java, f"-Xms{self.heap_mb}m", f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC",
             "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={self.directory}/log4j2.properties",
             "-cp", f"{libs}/*", WORKER_MAIN, str(worker)],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: _die_with_parent(signal.SIGKILL))
        self._wait(lambda: self.request("GET", "/") is not None, timeout, "its REST API")
        log.info("Kafka Connect started", url=self.url, plugins=list(self.plugins))
        return self.url

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """A call to the worker's REST API: the decoded JSON answer (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,  # noqa: S310
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as answer:  # noqa: S310 - loopback
            text = answer.read()
        return json.loads(text) if text else None

    def create(self, name: str, config: Mapping[str, str], timeout: float = 120.0) -> None:
        """Create (or replace) connector ``name`` and wait until its task runs."""
        try:
            self.request("PUT", f"/connectors/{name}/config", dict(config))
        except urllib.error.HTTPError as exc:   # e.g. 400: a connector class not found
            raise EmbeddedError(f"Kafka Connect refused connector {name} ({exc.code}): "
                                f"{exc.read()[:2000].decode(errors='replace')}") from exc

        self._wait(lambda: self.running(name), timeout, f"connector {name}'s task")

    def running(self, name: str) -> bool:
        """Whether each task of connector ``name`` runs; :class:`EmbeddedError` with the
        trace when one failed (a failed sink task never commits again: whoever waits for
        its offsets asks this too)."""
        tasks = self.request("GET", f"/connectors/{name}/status").get("tasks", [])
        failed = [t for t in tasks if t.get("state") == "FAILED"]
        if failed:
            raise EmbeddedError(f"connector {name} failed: {failed[0].get('trace', '')[:2000]}")
        return bool(tasks) and all(t.get("state") == "RUNNING" for t in tasks)

    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise EmbeddedError(f"Kafka Connect exited with code {self.proc.returncode}; "
                                    f"see {self.log_path}:\n" + _tail(self.log_path))
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last = exc
            time.sleep(0.25)
        raise EmbeddedError(f"Kafka Connect: {what} not ready within {timeout}s ({last!r}); "
                            f"see {self.log_path}:\n" + _tail(self.log_path))

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.proc, signal.SIGTERM, timeout)
        self.proc = None
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None


async def committed(bootstrap: str, connector: str) -> dict[int, int]:
    """The offsets a sink connector has committed, by partition (its group
    ``connect-<connector>``): each record before them is written. Empty while the group
    has no coordinator yet (its first commit creates the offsets topic's entry)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import CoordinatorNotAvailableError, NotCoordinatorError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"connect-{connector}")
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    except (CoordinatorNotAvailableError, NotCoordinatorError):
        return {}
    finally:
        await admin.close()

