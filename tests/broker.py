"""The suite's Apache Kafka: one node with the production security setup beside the
plaintext listener the ordinary tests use.

* ``PLAINTEXT``: anonymous super user (every test's own topics, no logins);
* ``CLIENT``: ``SASL_SSL`` with certificates made here by ``trustme`` (a test CA
  and a server certificate for 127.0.0.1), SCRAM-SHA-512 logins for every
  principal of ``deploy/kafka/acls`` and for :data:`TEST_PRODUCERS`, and the
  standard authorizer refusing whatever no ACL grants. The ACLs themselves are
  added by the ``kafka_acls`` fixture (once per session, only when a test asks),
  from the same file the compose stack applies.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from devtools.apache_kafka import KafkaCluster, TlsFiles, java_problem, kafka_version
from devtools.kafka_acls import apply_acls, grants_for, service_principals
from platereg.settings import Settings, load_settings

TEST_PRODUCERS = ("producer-police", "producer-insurer")
#: The topic (and group) prefix the session's ACLs are applied for.
ACL_PREFIX = "acl."


@dataclass
class SecureListener:
    """The CLIENT listener: where it is, how to trust it, each principal's password."""

    bootstrap: str
    protocol: str
    cafile: Path
    passwords: dict[str, str] = field(default_factory=dict)

    def env(self, principal: str) -> dict[str, str]:
        """``PLATEREG_KAFKA_*`` variables of a process logging in as ``principal``."""
        return {
            "PLATEREG_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "PLATEREG_KAFKA_SECURITY_PROTOCOL": self.protocol,
            "PLATEREG_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "PLATEREG_KAFKA_SASL_USERNAME": principal,
            "PLATEREG_KAFKA_SASL_PASSWORD": self.passwords[principal],
            "PLATEREG_KAFKA_SSL_CAFILE": str(self.cafile),
        }


def describe_test_broker() -> str:
    """The report header's broker line."""
    external = os.environ.get("PLATEREG_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return f"external, {external} (PLATEREG_KAFKA_BOOTSTRAP_SERVERS)"
    problem = java_problem()
    label = f"Apache Kafka {kafka_version()} (KRaft)"
    return f"{label}: UNAVAILABLE, {problem}" if problem else label


def make_certificates(directory: Path) -> TlsFiles:
    """A test CA and a server certificate for 127.0.0.1 / localhost, as PEM files: the
    broker's key (PKCS#8, as Kafka's PEM key store wants it) with its chain, and the CA."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="Plate Registry test CA")
    server = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    key_and_chain = directory / "broker.pem"
    key_and_chain.write_bytes(pkcs8 + chain)
    key_and_chain.chmod(0o600)
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return TlsFiles(key_and_chain=key_and_chain, ca=ca_path)


def start_test_kafka(base: Path, *, nodes: int = 1,
                     config: dict[str, str] | None = None) -> tuple[KafkaCluster, SecureListener]:
    tls = make_certificates(base / "tls")
    passwords = {name: secrets.token_hex(16)
                 for name in (*service_principals(), *TEST_PRODUCERS)}
    cluster = KafkaCluster(base, nodes=nodes, scram_users=passwords, tls=tls, heap_mb=384,
                           config=config)
    cluster.start()
    return cluster, SecureListener(bootstrap=cluster.client_bootstrap,
                                   protocol=cluster.client_protocol, cafile=tls.ca,
                                   passwords=passwords)


@dataclass
class AclBroker:
    """The CLIENT listener with the ACLs of ``deploy/kafka/acls`` applied for
    :data:`ACL_PREFIX`, whose topics exist: how each principal's process is set up.
    ``plaintext`` is the super user's listener (for a test's own set-up)."""

    secure: SecureListener
    plaintext: str
    prefix: str = ACL_PREFIX

    def env(self, principal: str) -> dict[str, str]:
        """The ``PLATEREG_*`` variables of a service logging in as ``principal``: its
        login and the prefix the ACLs name (topics and the registry's group)."""
        return {**self.secure.env(principal), "PLATEREG_TOPIC_PREFIX": self.prefix,
                "PLATEREG_CONSUMER_GROUP": f"{self.prefix}platereg-registry"}

    def settings(self, principal: str, **overrides: object) -> Settings:
        """Settings of a process logging in as ``principal`` (``overrides`` win, e.g. a
        wrong ``kafka_sasl_password``)."""
        values: dict[str, object] = {key.removeprefix("PLATEREG_").lower(): value
                                     for key, value in self.env(principal).items()}
        return load_settings(**{**values, **overrides})


def apply_session_acls(plaintext: str, secure: SecureListener) -> AclBroker:
    """Apply the file's grants for :data:`ACL_PREFIX` (the test producers as its direct
    producers) through the super user's ``plaintext`` listener; create the topics."""
    from devtools.apache_kafka import run_sync
    from platereg.kafka import ensure_topics

    apply_acls(plaintext, grants_for(TEST_PRODUCERS, ACL_PREFIX))
    run_sync(ensure_topics(load_settings(
        kafka_bootstrap_servers=plaintext, kafka_security_protocol="PLAINTEXT",
        topic_prefix=ACL_PREFIX, events_partitions=2, status_partitions=2,
        notices_partitions=2)))
    return AclBroker(secure, plaintext)
