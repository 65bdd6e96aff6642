"""docker-compose.yml cannot be started here (no Docker engine): check it statically."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from platereg.cli import app
from platereg.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PLATEREG_SERVICES = {name: svc for name, svc in SERVICES.items()
                     if svc.get("image") == "plate-registry:latest"}


def test_every_platereg_variable_is_a_real_setting() -> None:
    fields = {f"PLATEREG_{name.upper()}" for name in Settings.model_fields}
    for name, svc in PLATEREG_SERVICES.items():
        for var in svc.get("environment", {}):
            if var.startswith("PLATEREG_"):
                assert var in fields, f"{name}: {var} is not a setting"


@pytest.mark.parametrize("name", sorted(n for n, s in PLATEREG_SERVICES.items() if "command" in s))
def test_service_commands_exist(name: str) -> None:
    command = PLATEREG_SERVICES[name]["command"]
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, f"`platereg {' '.join(command)}` does not exist:\n{result.output}"


def test_prestart_runs_migrations_and_topics() -> None:
    script = (ROOT / "deploy" / "prestart.sh").read_text()
    assert "platereg migrate" in script and "platereg topics" in script
    for name, svc in PLATEREG_SERVICES.items():
        if name != "prestart":
            assert svc["depends_on"]["prestart"]["condition"] == "service_completed_successfully"


def test_dockerfile_copies_existing_paths() -> None:
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_prometheus_scrapes_the_services_on_their_ports() -> None:
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    defaults = Settings()
    ports = {"registry-api": defaults.registry_port, "ingest-api": defaults.ingest_port,
             "registry-consumer": defaults.consumer_metrics_port}
    for target in targets:
        host, port = target.split(":")
        assert host in SERVICES
        assert int(port) == ports[host]


def test_kafka_is_kraft_apache_kafka() -> None:
    kafka = SERVICES["kafka"]
    assert re.match(r"apache/kafka:", kafka["image"])
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    res = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config",
                          "-q"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
