"""The platform's Kafka principals and ACLs, read from ``deploy/kafka/acls``.

That file is the one list of who may do what on the broker: the compose stack's
``deploy/kafka/start.sh`` applies it with ``kafka-acls.sh``, and the test harness
applies it here with the same tool (``org.apache.kafka.tools.AclCommand`` from
the broker's jars) to a broker the suite starts, then proves each grant and
each refusal with real clients. Nothing else lists the principals.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devtools.apache_kafka import REPO, KafkaUnavailable, java_command

ACLS = REPO / "deploy" / "kafka" / "acls"
PRODUCERS = "producer:*"
RESOURCES = ("topic", "group", "transactional-id", "cluster")
PATTERNS = ("literal", "prefixed")


@dataclass(frozen=True)
class Grant:
    """One line of the file: ``principal`` may do ``operations`` on a resource."""

    principal: str
    resource: str
    name: str
    pattern: str
    operations: tuple[str, ...]

    def named(self, principal: str, prefix: str) -> Grant:
        """This grant for ``principal``, topic and group names behind ``prefix``."""
        name = self.name if self.resource in ("cluster", "transactional-id") else prefix + self.name
        return Grant(principal, self.resource, name, self.pattern, self.operations)

    def acl_command_args(self) -> list[str]:
        """``kafka-acls.sh`` arguments that add this grant."""
        target = (["--cluster"] if self.resource == "cluster"
                  else [f"--{self.resource}", self.name])
        args = ["--add", "--allow-principal", f"User:{self.principal}", *target,
                "--resource-pattern-type", self.pattern]
        for operation in self.operations:
            args += ["--operation", operation]
        return args


def read_acls(path: Path = ACLS) -> tuple[list[str], list[Grant]]:
    """(principals in file order, their grants); ``ValueError`` naming the line if malformed."""
    principals: list[str] = []
    grants: list[Grant] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        who = fields[0]
        if who not in principals:
            principals.append(who)
        if fields[1:] == ["-"]:
            continue
        if len(fields) != 5 or fields[1] not in RESOURCES or fields[3] not in PATTERNS:
            raise ValueError(f"{path}:{number}: expected 'principal resource name pattern "
                             f"operations' ({'/'.join(RESOURCES)}; {'/'.join(PATTERNS)}): {raw!r}")
        grants.append(Grant(who, fields[1], fields[2], fields[3],
                            tuple(fields[4].split(","))))
    return principals, grants


def password_variable(principal: str) -> str:
    """The variable holding ``principal``'s SCRAM password in the compose stack (the rule
    of deploy/kafka/start.sh): ``SCRAM_PASSWORD_`` + the name in capitals, "-" as "_"."""
    return "SCRAM_PASSWORD_" + principal.upper().replace("-", "_")


def service_principals(path: Path = ACLS) -> list[str]:
    """The platform's own principals (not the direct producers' template)."""
    return [p for p in read_acls(path)[0] if p != PRODUCERS]


def grants_for(producers: Iterable[str] = (), prefix: str = "",
               path: Path = ACLS) -> list[Grant]:
    """Every grant of the file, ``producer:*`` expanded to each of ``producers``."""
    out: list[Grant] = []
    for grant in read_acls(path)[1]:
        names = list(producers) if grant.principal == PRODUCERS else [grant.principal]
        out.extend(grant.named(name, prefix) for name in names)
    return out


def apply_acls(bootstrap: str, grants: Iterable[Grant], *, parallel: int = 3) -> None:
    """Add ``grants`` through ``bootstrap`` (a listener whose principal is a super user)
    with kafka-acls' own class; :class:`KafkaUnavailable` with its output when one fails."""

    def add(grant: Grant) -> None:
        done = subprocess.run(
            java_command("org.apache.kafka.tools.AclCommand", "--bootstrap-server", bootstrap,
                         *grant.acl_command_args()),
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise KafkaUnavailable(f"kafka-acls {' '.join(grant.acl_command_args())} failed: "
                                   + (done.stdout + done.stderr)[-1500:])

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(add, list(grants)))
