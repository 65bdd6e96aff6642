"""A real Prometheus (Debian's ``prometheus`` package) scraping real processes: the
registry consumer, the relays, the notice scheduler and dispatcher and both APIs as
``platereg`` subprocesses on this test's database and topics, loading
deploy/prometheus/rules. After a little traffic (events, a rejected one for the DLQ,
lookups, refused keys) and two scrapes, Prometheus's HTTP API must show every contract
metric (section 6) with its labels, each from the processes that own it only, the rules
loaded without error, and data for every panel query of deploy/grafana/dashboards. Each
process's own /metrics has its families and no other platereg family, and no ``_created``
series.

What no process exports yet is listed in NOT_YET / PANELS_NOT_YET with the issue that
adds it, and asserted absent: when it lands, this test fails until the entry goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from api_helpers import bearer, role_keys
from consumer_support import produce
from ingest_support import issued, renewed
from prometheus_client.parser import text_string_to_metric_families

from devtools.embedded import free_port, stop_process
from platereg.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))

#: Contract section 6 (histograms by their _bucket series), then the rules' own gauges.
METRICS: dict[str, set[str]] = {
    "platereg_events_total": {"type", "outcome"},
    "platereg_dlq_total": {"reason"},
    "platereg_event_apply_latency_seconds_bucket": {"le"},
    "platereg_consumer_lag": {"partition"},
    "platereg_lookups_total": {"kind", "result", "purpose"},
    "platereg_audit_backlog": set(),
    "platereg_auth_failures_total": {"reason"},
    "platereg_http_request_duration_seconds_bucket": {"route", "method", "status", "le"},
    "platereg_ingest_events_total": {"outcome"},
    "platereg_notices_total": {"kind"},
    "platereg_notice_deliveries_total": {"channel", "outcome"},
    "platereg_expiry_sweep_last_run_timestamp_seconds": set(),
    "platereg_notice_scheduler_last_run_timestamp_seconds": set(),
}
#: (metric, label or None for the whole metric) -> the issue that will add it.
NOT_YET: dict[tuple[str, str | None], str] = {
}
#: Dashboard panels (by title) whose queries have no data until the issue lands.
PANELS_NOT_YET: dict[str, str] = {
}
JOBS = ("registry-api", "ingest-api", "registry-consumer",    # as in deploy/prometheus
        "registry-relay", "notice-scheduler", "notice-dispatcher")
#: The platereg metric families each process exports (what it moves), and no other.
_HTTP = {"platereg_http_request_duration_seconds", "platereg_auth_failures"}
OWN: dict[str, set[str]] = {
    "registry-api": _HTTP | {"platereg_lookups", "platereg_audit_backlog",
                             "platereg_audit_oldest_unwritten_seconds",
                             "platereg_audit_write_failures", "platereg_audit_refused",
                             # its read replicas (none in this test: families, no series)
                             "platereg_replica_lag_seconds", "platereg_replica_serving"},
    "ingest-api": _HTTP | {"platereg_ingest_events"},
    "registry-consumer": {"platereg_events", "platereg_dlq", "platereg_quarantined_plates",
                          "platereg_event_apply_latency_seconds", "platereg_consumer_lag",
                          "platereg_notices",
                          "platereg_expiry_sweep_last_run_timestamp_seconds"},
    "registry-relay": {"platereg_expiry_sweep_last_run_timestamp_seconds"},
    "notice-scheduler": {"platereg_notices",
                         "platereg_notice_scheduler_last_run_timestamp_seconds"},
    "notice-dispatcher": {"platereg_notice_deliveries", "platereg_dlq"},
}


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    """Poll ``check()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def platereg(args: list[str], port: int, log_path: Path) -> Iterator[str]:
    """``platereg ARGS`` as a child process until its /healthz answers; stopped with SIGTERM."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "wiring.cli", *args],
                                env={**os.environ, "PLATEREG_LOG_LEVEL": "WARNING"},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{args} exited:\n{log_path.read_text()[-3000:]}")
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        wait_for(up, f"{args} to answer /healthz")
        yield url
    finally:
        stop_process(proc, signal.SIGTERM, 30)


@contextlib.contextmanager
def mail_catcher(directory: Path, log_path: Path) -> Iterator[None]:
    """``platereg notices mail-catcher`` on PLATEREG_SMTP_PORT until it accepts connections."""
    port = int(os.environ["PLATEREG_SMTP_PORT"])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wiring.cli", "notices", "mail-catcher", "--dir",
             str(directory)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"mail catcher exited:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
            return False
        wait_for(listening, "the mail catcher to listen")
        yield
    finally:
        stop_process(proc, signal.SIGTERM, 30)


@contextlib.contextmanager
def prometheus(binary: str, work: Path, targets: dict[str, str]) -> Iterator[str]:
    """A Prometheus server on a free loopback port scraping ``targets`` (job -> host:port)
    every second with the repository's rule files; its own data directory; stopped at the
    end."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                           for job, target in targets.items()],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    with open(work / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError((work / "prometheus.log").read_text()[-3000:])
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        wait_for(ready, "Prometheus to be ready")
        yield url
    finally:
        stop_process(proc, signal.SIGTERM, 30)


def api(url: str, path: str, **params: Any) -> Any:
    r = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (path, params, body)
    return body["data"]


def query(url: str, promql: str) -> list[dict[str, Any]]:
    return api(url, "query", query=promql)["result"]


async def drive_traffic(settings: Settings, pool: Any, registry: str, ingest: str) -> None:
    """Events through the ingest API (3 valid and a renewal, 1 refused with 422), one
    malformed message straight to Kafka (DLQ), lookups of every kind, a 401 and a 403.
    The renewal makes a notice that the dispatcher e-mails to the test's mail catcher."""
    keys = await role_keys(pool)
    events = [issued(f"CA-ON/PROM{i}") for i in range(3)] + [renewed("CA-ON/PROM0")]
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{ingest}/v1/events", json=events, headers=bearer(keys["ingest"]))
        assert r.status_code == 202, r.text
        bad = {**issued("CA-ON/PROMX"), "type": "plate.teleported"}
        r = await c.post(f"{ingest}/v1/events", json=bad, headers=bearer(keys["ingest"]))
        assert r.status_code == 422, r.text
        await produce(settings, [(b"CA-ON/PROMBAD", b'{"specversion": "1.0", oops')])
        for _ in range(600):
            done = await pool.fetchval("SELECT count(*) FROM plates")
            rejected = await pool.fetchval("SELECT count(*) FROM dlq_messages")
            if done == 3 and rejected == 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the consumer did not fold the events")
        h = bearer(keys["operator"])
        for route, plate in (("query", "PROM1"), ("query", "NOPE1"), ("candidates", "PR0M1"),
                             ("history", "PROM0")):
            r = await c.post(f"{registry}/v1/plates/{route}", headers=h, json={
                "jurisdiction": "CA-ON", "plate": plate, "purpose": "testing"})
            assert r.status_code in (200, 404)
        r = await c.get(f"{registry}/v1/hotlist", params={"purpose": "testing"}, headers=h)
        assert r.status_code == 200
        r = await c.post(f"{registry}/v1/plates/lookup", headers=h, json={
            "purpose": "testing", "plates": [{"jurisdiction": "CA-ON", "plate": "PROM2"}]})
        assert r.status_code == 200, r.text
        assert (await c.get(f"{registry}/v1/hotlist")).status_code == 401
        assert (await c.get(f"{registry}/v1/hotlist", params={"purpose": "testing"},
                            headers=bearer(keys["portal"]))).status_code == 403


def wait_two_scrapes_since(url: str, since: float) -> None:
    """Every job has at least two samples of ``up`` taken after ``since`` (all up)."""
    def scraped() -> bool:
        window = max(1, int((time.time() - since) * 1000))
        for job in JOBS:
            res = query(url, f'count_over_time(up{{job="{job}"}}[{window}ms])')
            if not res or float(res[0]["value"][1]) < 2:
                return False
        return all(float(r["value"][1]) == 1 for r in query(url, "up"))
    wait_for(scraped, "two scrapes of every process after the traffic")


def family(series_name: str) -> str:
    """The metric family of a series name (a counter's without ``_total``, a histogram's
    without ``_bucket``/``_count``/``_sum``)."""
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if series_name.endswith(suffix):
            return series_name.removesuffix(suffix)
    return series_name


def check_own_metrics(ports: dict[str, int]) -> None:
    """Each process's /metrics: its own platereg families, no other, no _created series."""
    for job, port in ports.items():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        families = {f.name for f in text_string_to_metric_families(text)}
        assert {f for f in families if f.startswith("platereg_")} == OWN[job], job
        assert "process_cpu_seconds" in families, job
        created = [line for line in text.splitlines()
                   if line.split("{")[0].split(" ")[0].endswith("_created")]
        assert created == [], (job, created[:3])


def check_contract_metrics(url: str) -> None:
    for name, labels in METRICS.items():
        series = api(url, "series", **{"match[]": name})
        owners = {job for job, families in OWN.items() if family(name) in families}
        strays = {s["job"] for s in series} - owners
        assert not strays, f"{name} exported by {strays}, owned by {owners} only"
        if (name, None) in NOT_YET:
            assert series == [], (
                f"{name} exists now: remove it from NOT_YET ({NOT_YET[name, None]})")
            continue
        assert series, f"{name} is not exported by any process"
        for label in labels:
            if (name, label) in NOT_YET:
                assert all(label not in s for s in series), (
                    f"{name}{{{label}}} exists now: remove it from NOT_YET")
            else:
                missing = [s for s in series if label not in s]
                assert not missing, f"{name} without label {label}: {missing[:3]}"


def check_rules(url: str) -> None:
    expected = {rule.get("alert") or rule["record"]
                for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
                for rule in group["rules"]}

    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in api(url, "rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else []
    rules = wait_for(evaluated, "every rule to be evaluated once")
    assert {r["name"] for r in rules} == expected
    bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert bad == []


def check_panels(url: str) -> None:
    titles = set()
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            titles.add(panel["title"])
            for target in panel.get("targets", []):
                expr = (target["expr"].replace("$__rate_interval", "1m")    # All jobs
                        .replace('"$job"', '".+"').replace('"$instance"', '".+"'))
                result = query(url, expr)   # parses: the API answers success
                if panel["title"] in PANELS_NOT_YET:
                    assert result == [], f"panel {panel['title']!r} has data now: " \
                                         "remove it from PANELS_NOT_YET"
                else:
                    assert result, f"panel {panel['title']!r} has no data: {expr}"
    assert set(PANELS_NOT_YET) <= titles


async def test_prometheus_scrapes_every_contract_metric_rules_and_panels(
        topics: Settings, pool: Any, prometheus_server: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ports = {job: free_port() for job in JOBS}
    monkeypatch.setenv("PLATEREG_SMTP_PORT", str(free_port()))
    mail = tmp_path / "mail"
    with contextlib.ExitStack() as stack:
        stack.enter_context(mail_catcher(mail, tmp_path / "mail.log"))
        stack.enter_context(platereg(
            ["notices", "schedule", "--metrics-port", str(ports["notice-scheduler"]),
             "--every", "1"], ports["notice-scheduler"], tmp_path / "scheduler.log"))
        stack.enter_context(platereg(
            ["notices", "dispatch", "--metrics-port", str(ports["notice-dispatcher"])],
            ports["notice-dispatcher"], tmp_path / "dispatcher.log"))
        consumer = stack.enter_context(platereg(
            ["consume", "registry", "--metrics-port", str(ports["registry-consumer"]),
             "--parse-workers", "0"], ports["registry-consumer"], tmp_path / "consumer.log"))
        stack.enter_context(platereg(
            ["consume", "relay", "--metrics-port", str(ports["registry-relay"])],
            ports["registry-relay"], tmp_path / "relay.log"))
        registry = stack.enter_context(platereg(
            ["serve", "registry", "--port", str(ports["registry-api"])], ports["registry-api"],
            tmp_path / "registry.log"))
        ingest = stack.enter_context(platereg(
            ["serve", "ingest", "--port", str(ports["ingest-api"])], ports["ingest-api"],
            tmp_path / "ingest.log"))
        assert consumer
        prom = stack.enter_context(prometheus(
            prometheus_server, tmp_path, {job: f"127.0.0.1:{p}" for job, p in ports.items()}))
        await drive_traffic(topics, pool, registry, ingest)
        await asyncio.to_thread(wait_for, lambda: list(mail.glob("*.eml")),
                                "the renewal notice to be e-mailed")
        since = time.time()
        await asyncio.to_thread(wait_two_scrapes_since, prom, since)
        await asyncio.to_thread(check_own_metrics, ports)
        await asyncio.to_thread(check_contract_metrics, prom)
        await asyncio.to_thread(check_rules, prom)
        await asyncio.to_thread(check_panels, prom)
        swept = await asyncio.to_thread(query, prom, 'max(platereg_expiry_sweep_last_run_'
                                        'timestamp_seconds{job="registry-consumer"}) > 0')
        assert swept, "the consumer's expiry sweep did not report its run"
