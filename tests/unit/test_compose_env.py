"""docker-compose.yml against what the code requires, so the two cannot drift.

* What a command refuses to start without comes from the settings code
  (``platereg.settings.COMMAND_NEEDS``, enforced by ``settings_or_exit``: shown here
  for every command); each compose service sets all of it for the commands it runs,
  explicitly, and logs in to Kafka (SASL_SSL, a mounted CA) as its own principal, or
  not at all when its commands do not use Kafka.
* ``.env.example`` lists every variable the compose file interpolates, each with the
  command that makes a value; ``docker-compose config`` (Debian's v1) passes with only
  those filled in and fails naming each required one left out.
* ``deploy/kafka/start.sh`` reads ``deploy/kafka/acls`` as devtools.kafka_acls does:
  run with a fake ``kafka-acls.sh`` / ``kafka-configs.sh`` that record their arguments.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from devtools.kafka_acls import grants_for, password_variable, read_acls, service_principals
from platereg.settings import (
    COMMAND_NEEDS,
    Needs,
    Settings,
    kafka_security_problems,
    missing_settings,
    variable,
)
from wiring.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
PLATEREG = {name: svc for name, svc in SERVICES.items()
            if svc.get("image") == "plate-registry:latest"}
START = ROOT / "deploy" / "kafka" / "start.sh"
REFERENCE = re.compile(r"\$\{(?P<var>[A-Z0-9_]+)(?P<op>:?[-?])?(?P<rest>[^}]*)\}")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("PLATEREG_"):
            monkeypatch.delenv(key)


# --------------------------------------------------------------------------- commands

def service_commands(name: str) -> list[str]:
    """The COMMAND_NEEDS commands a compose service runs."""
    if name == "prestart":
        script = (ROOT / "deploy" / "prestart.sh").read_text().splitlines()
        return [max((c for c in COMMAND_NEEDS if line.startswith(f"platereg {c}")), key=len)
                for line in script if line.startswith("platereg ")]
    if name == "operator":    # any operator command not run by a service
        run = {c for other in PLATEREG if other != "operator" for c in service_commands(other)}
        return sorted(set(COMMAND_NEEDS) - run)
    words = " ".join(PLATEREG[name]["command"])
    return [max((c for c in COMMAND_NEEDS if words.startswith(c)), key=len)]


def needs_of(name: str) -> Needs:
    commands = [COMMAND_NEEDS[c] for c in service_commands(name)]
    return Needs(tuple({s for n in commands for s in n.required}),
                 tuple({s for n in commands for s in n.deployment}))


#: Arguments a command needs before it reads its settings.
ARGS = {"dlq replay": ["1"], "keys create": ["--role", "operator", "--name", "x"],
        "keys bind": ["k", "--source", "/x/"], "keys revoke": ["k"],
        "quarantine release": ["CA-ON/X"], "sources set": ["/x/", "plate.issued"],
        "sources remove": ["/x/"], "sources check": ["/x/", "plate.issued"],
        "notices paper": ["--date", "2026-01-01"],
        "sources producer add": ["p", "--source", "/x/"], "sources producer rotate": ["p"],
        "sources producer retire-secret": ["p"], "sources producer revoke": ["p"]}


@pytest.mark.parametrize("command", sorted(COMMAND_NEEDS))
def test_each_command_refuses_to_start_without_what_it_requires(command: str) -> None:
    """The table is what the code enforces: every required variable named, exit 2."""
    result = CliRunner().invoke(app, [*command.split(), *ARGS.get(command, [])])
    assert result.exit_code == 2, result.output
    for name in COMMAND_NEEDS[command].required:
        assert variable(name) in result.output, result.output
    assert "cannot start without" in result.output


def test_every_platereg_service_runs_commands_of_the_table() -> None:
    assert service_commands("prestart") == ["roles", "migrate", "topics",
                                            "sources producer add"]
    for name in PLATEREG:
        assert service_commands(name), name


# --------------------------------------------------------------------------- .env.example

def env_example() -> dict[str, str]:
    """Variable -> the command that makes its value (the "# make:" line above it)."""
    out, command = {}, None
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("# make: "):
            command = line.removeprefix("# make: ")
        elif match := re.fullmatch(r"([A-Z0-9_]+)=", line):
            assert command, f"{match[1]} has no '# make:' line"
            out[match[1]], command = command, None
    return out


def references() -> dict[str, set[str]]:
    """Each variable the compose file interpolates -> how (":?" required, ":-" default)."""
    found: dict[str, set[str]] = {}
    for match in REFERENCE.finditer(COMPOSE_TEXT):
        found.setdefault(match["var"], set()).add(match["op"] or "")
    return found


REQUIRED = sorted(var for var, ops in references().items() if ops == {":?"})


@pytest.fixture(scope="module")
def filled() -> dict[str, str]:
    """.env.example's variables, each made by its own command."""
    return {var: subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                check=True).stdout.strip()
            for var, command in env_example().items()}


def test_env_example_lists_every_variable_of_the_compose_file() -> None:
    assert set(env_example()) == set(references())
    for var, ops in references().items():
        assert ops in ({":?"}, {":-"}), f"{var} is both required and defaulted: {ops}"


def test_each_make_command_makes_a_usable_value(filled: dict[str, str]) -> None:
    for var in REQUIRED:
        if var == "INGEST_PRODUCER_SECRET":   # the contract's form: 32 bytes as base64url
            assert re.fullmatch(r"[A-Za-z0-9_-]{43}", filled[var]), var
        else:
            assert re.fullmatch(r"[0-9a-f]{48,}", filled[var]), var   # URL-safe, 24+ bytes
    assert re.fullmatch(r"([a-z-]+:[0-9a-f]{48})( [a-z-]+:[0-9a-f]{48})*",
                        filled["KAFKA_PRODUCERS"])


def compose_config(env: dict[str, str], tmp_path: Path, docker_compose: str,
                   *flags: str) -> subprocess.CompletedProcess:
    """``docker-compose config`` with only ``env`` (as a --env-file) of .env.example's."""
    env_file = tmp_path / "filled.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    base = {k: v for k, v in os.environ.items() if k not in references()}
    return subprocess.run([docker_compose, "--env-file", str(env_file), "-f",
                           str(ROOT / "docker-compose.yml"), "config", *flags],
                          capture_output=True, text=True, check=False, env=base, timeout=60)


def test_compose_config_passes_with_only_env_example_filled_in(
        filled: dict[str, str], tmp_path: Path, docker_compose: str) -> None:
    done = compose_config(filled, tmp_path, docker_compose, "-q")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_replica_profile_passes_and_points_the_registry_api_at_the_replica(
        filled: dict[str, str], tmp_path: Path, docker_compose: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--profile replica`` with .env.example's values: the read URL its make line writes
    is the registry API's login on the replica, with its password from .env."""
    monkeypatch.chdir(tmp_path)
    password = filled["DB_REGISTRY_API_PASSWORD"]
    (tmp_path / ".env").write_text(f"DB_REGISTRY_API_PASSWORD={password}\n")
    made = subprocess.run(["bash", "-c", env_example()["DATABASE_READ_URLS"]],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert made == f"postgresql://app_registry_api:{password}@postgres-replica:5432/platereg"
    monkeypatch.setenv("COMPOSE_PROFILES", "replica")
    done = compose_config({**filled, "DATABASE_READ_URLS": made}, tmp_path, docker_compose)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert config["services"]["postgres-replica"]["profiles"] == ["replica"]
    # it streams with the replication role's password, not the superuser's
    replica_env = config["services"]["postgres-replica"]["environment"]
    assert replica_env["PGPASSWORD"] == filled["DB_REPLICATOR_PASSWORD"]
    assert replica_env["PGPASSWORD"] != filled["POSTGRES_PASSWORD"]
    assert config["services"]["postgres"]["environment"]["DB_REPLICATOR_PASSWORD"] == \
        filled["DB_REPLICATOR_PASSWORD"]
    api_env = config["services"]["registry-api"]["environment"]
    settings = Settings(database_read_urls=api_env["PLATEREG_DATABASE_READ_URLS"])
    assert settings.read_dsns() == [made]


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_config_fails_naming_each_secret_left_out(
        missing: str, filled: dict[str, str], tmp_path: Path, docker_compose: str) -> None:
    done = compose_config({**filled, missing: ""}, tmp_path, docker_compose, "-q")
    assert done.returncode != 0 and f"set {missing}" in done.stderr, done.stderr


# --------------------------------------------------------------------------- services

def resolve(text: str, filled: dict[str, str]) -> str:
    """``text`` with .env.example's values in, as compose interpolates it."""
    def value(match: re.Match[str]) -> str:
        given = filled.get(match["var"], "")
        return given or (match["rest"] if match["op"] == ":-" else "")
    return REFERENCE.sub(value, text)


def resolved_env(name: str, filled: dict[str, str]) -> dict[str, str]:
    return {k: resolve(str(v), filled) for k, v in PLATEREG[name]["environment"].items()}


@pytest.mark.parametrize("name", sorted(PLATEREG))
def test_each_service_sets_what_its_commands_need(name: str, filled: dict[str, str]) -> None:
    env = resolved_env(name, filled)
    needs = needs_of(name)
    for setting in (*needs.required, *needs.deployment):   # explicitly, not by fallback
        assert env.get(variable(setting)), f"{name}: {variable(setting)} is not set"
    settings = Settings(**{k.removeprefix("PLATEREG_").lower(): v for k, v in env.items()})
    for command in service_commands(name):
        assert missing_settings(settings, command) == [], (name, command)
    problems = [p for p in kafka_security_problems(settings) if not p.endswith("no such file")]
    assert problems == [], name
    if needs.kafka:
        _check_kafka_login(name, env, filled)
    else:
        assert not [k for k in env if k.startswith("PLATEREG_KAFKA_")], f"{name} needs no Kafka"


def _check_kafka_login(name: str, env: dict[str, str], filled: dict[str, str]) -> None:
    """SASL_SSL trusting the CA mounted where PLATEREG_KAFKA_SSL_CAFILE says; the password
    is the one the broker's start script gives this principal."""
    assert env["PLATEREG_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
    mounts = {(parts := resolve(v, filled).split(":"))[1]: parts[0]
              for v in PLATEREG[name]["volumes"]}
    assert mounts[env["PLATEREG_KAFKA_SSL_CAFILE"]].endswith("/ca.pem"), name
    user = env["PLATEREG_KAFKA_SASL_USERNAME"]
    var = password_variable(user)
    raw = PLATEREG[name]["environment"]["PLATEREG_KAFKA_SASL_PASSWORD"]
    assert raw == f"${{{var}:?set {var}}}", name
    assert SERVICES["kafka"]["environment"][var] == raw, name


def test_every_service_logs_in_as_its_own_principal_of_the_acl_file() -> None:
    users = [svc["environment"]["PLATEREG_KAFKA_SASL_USERNAME"] for svc in PLATEREG.values()
             if "PLATEREG_KAFKA_SASL_USERNAME" in svc["environment"]]
    assert sorted(users) == sorted(service_principals())


def test_the_broker_has_a_password_for_every_principal_and_the_acl_file() -> None:
    kafka = SERVICES["kafka"]
    passwords = {k for k in kafka["environment"] if k.startswith("SCRAM_PASSWORD_")}
    assert passwords == {password_variable(p) for p in service_principals()}
    assert kafka["environment"]["SCRAM_PRODUCERS"] == "${KAFKA_PRODUCERS:-}"
    assert "./deploy/kafka/acls:/opt/platereg/acls:ro" in kafka["volumes"]


# --------------------------------------------------------------------------- start.sh

def run_start_functions(tmp_path: Path, script: str, env: dict[str, str],
                        acls: Path | None = None) -> tuple[subprocess.CompletedProcess, list]:
    """``source start.sh`` then ``script``, with fake Kafka tools recording each call's
    arguments: (the shell's result, [(tool, args), ...])."""
    record = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("kafka-acls.sh", "kafka-configs.sh"):
        (bin_dir / tool).write_text(f'#!/bin/bash\nprintf "%s\\0" {tool} "$@" "" >> "$RECORD"\n')
        (bin_dir / tool).chmod(0o755)
    done = subprocess.run(["bash", "-c", f'source "{START}"; {script}'], capture_output=True,
                          text=True, timeout=60, env={
                              "PATH": os.environ["PATH"], "RECORD": str(record),
                              "KAFKA_BIN": str(bin_dir),
                              "PLATEREG_ACLS": str(acls or ROOT / "deploy" / "kafka" / "acls"),
                              **env})
    fields = record.read_text().split("\0") if record.exists() else []
    calls, current = [], []
    for item in fields:
        if item == "" and current:
            calls.append((current[0], current[1:]))
            current = []
        elif item:
            current.append(item)
    return done, calls


PRODUCERS = {"registry-office": "pw-office", "police": "pw-police"}


def _passwords() -> dict[str, str]:
    return {password_variable(p): f"pw-{p}" for p in service_principals()}


def test_start_sh_applies_the_acl_file_as_the_python_harness_does(tmp_path: Path) -> None:
    producers = " ".join(f"{n}:{pw}" for n, pw in PRODUCERS.items())
    done, calls = run_start_functions(tmp_path, "check_passwords && configure",
                                      {**_passwords(), "SCRAM_PRODUCERS": producers})
    assert done.returncode == 0, done.stderr
    admin = ["--bootstrap-server", "127.0.0.1:9094"]
    acls = [args for tool, args in calls if tool == "kafka-acls.sh"]
    assert acls == [[*admin, *g.acl_command_args()] for g in grants_for(list(PRODUCERS))]
    configs = [args for tool, args in calls if tool == "kafka-configs.sh"]
    expected = {**{p: f"pw-{p}" for p in service_principals()}, **PRODUCERS}
    assert configs == [[*admin, "--alter", "--entity-type", "users", "--entity-name", who,
                        "--add-config", f"SCRAM-SHA-512=[password={pw}]"]
                       for who, pw in expected.items()]


@pytest.mark.parametrize("principal", service_principals())
def test_start_sh_needs_every_password_before_the_broker_starts(
        tmp_path: Path, principal: str) -> None:
    env = {k: v for k, v in _passwords().items() if k != password_variable(principal)}
    done, calls = run_start_functions(tmp_path, "check_passwords", env)
    assert done.returncode != 0 and calls == []
    assert f"set {password_variable(principal)} (the password of Kafka principal " \
           f"{principal})" in done.stderr


def test_start_sh_and_python_refuse_the_same_malformed_line(tmp_path: Path) -> None:
    acls = tmp_path / "acls"
    acls.write_text("# a comment\nok  -\nbad topic plates.events literal\n")
    done, calls = run_start_functions(tmp_path, "configure", {}, acls)
    assert done.returncode != 0 and calls == []
    assert f"{acls}:3: expected" in done.stderr
    with pytest.raises(ValueError, match=f"{acls}:3: expected"):
        read_acls(acls)


@pytest.mark.parametrize("command", sorted(c for c, n in COMMAND_NEEDS.items()
                                           if n.role and "database_url" in n.required))
def test_a_command_with_a_role_starts_with_only_that_roles_login(command: str) -> None:
    """``PLATEREG_<ROLE>_DATABASE_URL`` alone is enough where a command needs the database
    (a purge host is given the purge login, not the services' one); without either, both
    are named."""
    role = COMMAND_NEEDS[command].role
    own = f"{role}_database_url"
    others = {n: "x" for n in COMMAND_NEEDS[command].required if n != "database_url"}
    alone = Settings(**{own: "postgresql://r:p@h/db"}, **others)
    assert variable("database_url") not in " ".join(missing_settings(alone, command))
    message = " ".join(missing_settings(Settings(**others), command))
    assert variable("database_url") in message and variable(own) in message
