"""docker-compose.yml cannot be started here (no Docker engine): check it statically."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from platereg.settings import COMMAND_NEEDS, Settings
from wiring.cli import app

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


def test_prestart_sets_up_roles_then_migrates_then_creates_topics() -> None:
    script = (ROOT / "deploy" / "prestart.sh").read_text()
    commands = [line for line in script.splitlines() if line.startswith("platereg ")]
    assert commands == ["platereg roles", "platereg migrate", "platereg topics",
                        'platereg sources producer add "$PLATEREG_PRODUCER_NAME" --source / '
                        '--secret-from-env PLATEREG_PRODUCER_SECRET']
    assert "--secret-from-env PLATEREG_PRODUCER_SECRET" in script   # never on a command line
    prestart, ingest = SERVICES["prestart"]["environment"], SERVICES["ingest-api"]["environment"]
    assert prestart["PLATEREG_PRODUCER_NAME"] == ingest["PLATEREG_PRODUCER_NAME"]
    assert prestart["PLATEREG_PRODUCER_SECRET"] == ingest["PLATEREG_PRODUCER_SECRET"]
    for name, svc in PLATEREG_SERVICES.items():
        if name != "prestart":
            assert svc["depends_on"]["prestart"]["condition"] == "service_completed_successfully"


def test_dockerfile_copies_existing_paths() -> None:
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
#: platereg services that serve no /metrics (one-shot or periodic commands).
NOT_SCRAPED = {"prestart", "purge", "operator"}


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    """One job per platereg process; each finds its compose service's replicas by DNS."""
    prom = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    defaults = Settings()
    ports = {"registry-api": defaults.registry_port, "ingest-api": defaults.ingest_port,
             "registry-consumer": defaults.consumer_metrics_port,
             "registry-relay": defaults.consumer_metrics_port,
             "notice-scheduler": 9103, "notice-dispatcher": 9104}
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert set(ports) <= set(jobs)
    for name, port in ports.items():
        (sd,) = jobs[name]["dns_sd_configs"]
        assert sd["names"] == [name] and sd["type"] == "A" and sd["port"] == port
    for name in PLATEREG_SERVICES:
        if name not in NOT_SCRAPED:   # a long-running process: scraped under its own name
            assert name in jobs, f"{name} is not scraped"


def test_prometheus_in_compose_loads_the_config_and_rules() -> None:
    prom = SERVICES["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    assert list((PROMETHEUS / "rules").glob("*.yml"))


def test_kafka_is_kraft_apache_kafka() -> None:
    kafka = SERVICES["kafka"]
    assert re.match(r"apache/kafka:", kafka["image"])
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]


def _listeners(value: str) -> dict[str, str]:
    return dict(item.split("://", 1) for item in value.split(","))


def test_kafka_clients_need_scram_over_tls_and_only_loopback_is_anonymous() -> None:
    """Only the CLIENT listener is reachable from other containers: SASL_SSL (SCRAM) with
    the mounted PEM key and chain; the anonymous super user exists only on the
    loopback-bound listeners. The log is on the kafkadata volume (the image's default
    is under /tmp). Each service's login: tests/unit/test_compose_env.py."""
    kafka = SERVICES["kafka"]
    env = kafka["environment"]
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
                     .split(","))
    for name, address in _listeners(env["KAFKA_LISTENERS"]).items():
        if protocols[name] == "PLAINTEXT":
            assert address.startswith("127.0.0.1:"), f"{name} is plaintext beyond loopback"
        else:
            assert protocols[name] == "SASL_SSL" and address == ":9092"
    assert "SSL://" not in env["KAFKA_ADVERTISED_LISTENERS"], (
        "the image then wants a JKS key store (KAFKA_SSL_KEYSTORE_FILENAME)")
    assert env["KAFKA_LISTENER_NAME_CLIENT_SSL_KEYSTORE_TYPE"] == "PEM"
    key = env["KAFKA_LISTENER_NAME_CLIENT_SSL_KEYSTORE_LOCATION"]
    assert "${KAFKA_TLS_DIR:-./deploy/kafka/tls}:/etc/kafka/tls:ro" in kafka["volumes"]
    assert key == "/etc/kafka/tls/broker.pem"
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert not [k for k in env if k.startswith("KAFKA_") and "PASSWORD" in k], (
        "the image turns KAFKA_* variables into broker properties: no passwords there")
    assert f"kafkadata:{env['KAFKA_LOG_DIRS']}" in kafka["volumes"]


def test_kafka_start_script_is_the_entrypoint_and_reads_the_mounted_acl_file() -> None:
    start = ROOT / "deploy" / "kafka" / "start.sh"
    subprocess.run(["bash", "-n", str(start)], check=True)
    assert SERVICES["kafka"]["entrypoint"] == ["/opt/platereg/start.sh"]
    assert "./deploy/kafka/start.sh:/opt/platereg/start.sh:ro" in SERVICES["kafka"]["volumes"]
    assert "./deploy/kafka/acls:/opt/platereg/acls:ro" in SERVICES["kafka"]["volumes"]
    assert "ACLS=${PLATEREG_ACLS:-/opt/platereg/acls}" in start.read_text()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target of the provisioned dashboards."""
    out = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((panel["title"], target["expr"]))
    return out


def grafana_to_promql(expr: str) -> str:
    """A panel query as Grafana sends it: its variables replaced (All jobs and instances)."""
    return (expr.replace("$__rate_interval", "1m").replace('"$job"', '".+"')
            .replace('"$instance"', '".+"'))


def test_grafana_in_compose_provisions_the_datasource_and_dashboards() -> None:
    grafana = SERVICES["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in grafana["volumes"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "${GRAFANA_ADMIN_PASSWORD:?")
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "platereg.yml")
                               .read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/etc/grafana/dashboards"]
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
                               .read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in SERVICES and 9090 == int(SERVICES["prometheus"]["ports"][0]
                                                   .split(":")[-1])
    # The dashboards name no datasource: Grafana's default one (this) fills their
    # ${datasource} variable (tests/unit/test_grafana_dashboard.py).
    assert source["isDefault"] is True


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """Every panel query is valid PromQL: promtool checks them as recording rules."""
    queries = dashboard_queries()
    assert len(queries) >= 20
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(queries)]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    res = subprocess.run([promtool, "check", "rules", str(tmp_path / "queries.yml")],
                         capture_output=True, text=True, check=False, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


URL = re.compile(r"postgresql://(?P<user>[^:@/]+):(?P<password>[^@]+)@")
#: The database login each role's URL carries (the compose users of docs/operations.md).
ROLE_USERS = {role: f"app_{role}" for role in ("consumer", "registry_api", "ingest_api",
                                               "notices_scheduler", "notices_dispatcher",
                                               "purge", "operator")}


def _expected_user(service: str, var: str) -> str:
    """The login ``var`` of compose service ``service`` must carry."""
    fixed = {"PLATEREG_ADMIN_DATABASE_URL": "postgres",
             "PLATEREG_MIGRATE_DATABASE_URL": "platereg_owner"}
    if var in fixed:
        return fixed[var]
    role = var.removeprefix("PLATEREG_").removesuffix("_DATABASE_URL").lower()
    if var == "PLATEREG_DATABASE_URL":   # the role of the command it runs
        if service in ("prestart", "operator"):   # the operator commands' role
            return ROLE_USERS["operator"]
        command = " ".join(PLATEREG_SERVICES[service]["command"])
        role = COMMAND_NEEDS[max((c for c in COMMAND_NEEDS if command.startswith(c)),
                                 key=len)].role or ""
    return ROLE_USERS[role]


def test_each_service_logs_in_to_postgres_as_its_own_role() -> None:
    """No password has a default; only the prestart holds the superuser's; every other
    URL carries the login of the role its command uses (COMMAND_NEEDS)."""
    for name, svc in PLATEREG_SERVICES.items():
        for var, value in svc["environment"].items():
            match = URL.match(str(value))
            if not match:
                continue
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", match["password"]), (name, var)
            assert match["user"] == _expected_user(name, var), (name, var)
            if var == "PLATEREG_ADMIN_DATABASE_URL":
                assert name == "prestart"
        if name != "prestart":   # one database password per service container
            assert len([v for v in svc["environment"] if "DATABASE_URL" in v]) == 1, name
    postgres_env = SERVICES["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def _mounts(service: dict) -> dict[str, Path]:
    """Container path -> the repository file a service mounts there."""
    return {v.split(":")[1]: ROOT / v.split(":")[0] for v in service["volumes"]
            if v.startswith("./")}


def _hba_rules() -> list[list[str]]:
    primary = SERVICES["postgres"]
    hba_path = next(arg.partition("=")[2] for arg in primary["command"]
                    if arg.startswith("hba_file="))
    return [line.split() for line in _mounts(primary)[hba_path].read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_the_optional_read_replica_streams_from_postgres_and_feeds_the_registry_api() -> None:
    """The replica profile: a hot standby of the postgres service (same image: physical
    replication needs the same major version), made by pg_basebackup -R as a user the
    primary's hba file lets replicate, on a volume of its own; the registry API reads
    there when DATABASE_READ_URLS says so, and only then (empty by default)."""
    replica, primary = SERVICES["postgres-replica"], SERVICES["postgres"]
    assert replica["profiles"] == ["replica"]
    assert replica["image"] == primary["image"]
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    script = _mounts(replica)[replica["entrypoint"][0]].read_text()
    assert "pg_basebackup -h \"$PRIMARY_HOST\" -U " in script and " -R " in script
    assert replica["environment"]["PRIMARY_HOST"] == "postgres"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in replica["volumes"]}
    assert mounts["/var/lib/postgresql/data"] in COMPOSE["volumes"]
    assert mounts["/var/lib/postgresql/data"] != "pgdata"
    assert ["host", "all", "all", "all", "scram-sha-256"] in _hba_rules()   # as the image has it

    api_env = SERVICES["registry-api"]["environment"]
    assert api_env["PLATEREG_DATABASE_READ_URLS"] == "${DATABASE_READ_URLS:-}"


def test_the_read_replica_streams_as_a_replication_only_role_never_the_superuser() -> None:
    """The replica's pg_basebackup (and so the primary_conninfo -R writes) logs in as a
    role the primary's init script creates with LOGIN and REPLICATION and nothing else,
    with a password of its own; the hba file lets that role, and only it, replicate over
    the network, and it may not open an ordinary session."""
    replica, primary = SERVICES["postgres-replica"], SERVICES["postgres"]
    script = _mounts(replica)[replica["entrypoint"][0]].read_text()
    users = re.findall(r"pg_basebackup .*-U (\S+)", script)
    assert users == ["platereg_replicator"], users
    superuser = primary["environment"]["POSTGRES_USER"]
    assert superuser not in users and "PGUSER" not in replica["environment"]

    password = replica["environment"]["PGPASSWORD"]
    assert password == "${DB_REPLICATOR_PASSWORD:?set DB_REPLICATOR_PASSWORD}"
    assert password != primary["environment"]["POSTGRES_PASSWORD"]
    assert primary["environment"]["DB_REPLICATOR_PASSWORD"] == password

    init = {target: source for target, source in _mounts(primary).items()
            if target.startswith("/docker-entrypoint-initdb.d/")}
    sql = " ".join(word for path in init.values() for line in path.read_text().splitlines()
                   if not line.lstrip().startswith("#") for word in line.split())
    assert "CREATE ROLE platereg_replicator;" in sql
    granted = re.search(r"ALTER ROLE platereg_replicator WITH (.*?) PASSWORD :'password';",
                        sql)
    assert granted, sql
    assert set(granted[1].split()) == {"LOGIN", "REPLICATION", "NOSUPERUSER", "NOCREATEDB",
                                       "NOCREATEROLE", "NOINHERIT", "NOBYPASSRLS"}
    assert "GRANT" not in sql.upper()
    assert 'password="$DB_REPLICATOR_PASSWORD"' in sql   # a psql variable, not in the SQL

    rules = _hba_rules()
    assert [r for r in rules if r[1] == "replication"] == [
        ["host", "replication", "platereg_replicator", "all", "scram-sha-256"]]
    own = [r for r in rules if r[0] == "host" and r[2] in ("platereg_replicator", "all")
           and r[1] == "all" and r[3] == "all"]
    assert own[0] == ["host", "all", "platereg_replicator", "all", "reject"], own
