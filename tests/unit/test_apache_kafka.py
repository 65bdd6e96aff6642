"""The Apache Kafka tooling, without starting a broker: one pinned release, one ACL list."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devtools import apache_kafka
from devtools.apache_kafka import KafkaCluster, kafka_version, new_cluster_id
from devtools.kafka_acls import PRODUCERS, Grant, grants_for, read_acls, service_principals
from platereg.settings import Settings
from schemas import topics

ROOT = Path(__file__).resolve().parents[2]


def test_the_compose_image_runs_the_release_the_pom_pins() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"
    assert kafka_version().startswith("4.")


def test_cluster_ids_are_kafka_uuids() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and "=" not in i for i in ids)
    # the storage tool reads "-t -abc..." as an option: one id in 64 started so
    assert not any(i.startswith("-") for i in ids)


def test_the_acl_file_names_only_contract_topics_and_the_services_groups() -> None:
    principals, grants = read_acls()
    assert PRODUCERS in principals
    settings = Settings()
    groups = {settings.consumer_group, f"{settings.consumer_group}.notices-dispatcher"}
    for grant in grants:
        if grant.resource == "topic" and grant.pattern == "literal":
            assert grant.name in topics.ALL_TOPICS, grant
        if grant.resource == "group":
            assert grant.name in groups, grant


def test_only_producers_the_ingest_api_and_operators_may_write_events() -> None:
    writers = {g.principal for g in read_acls()[1]
               if g.resource == "topic" and g.name == topics.EVENTS and "Write" in g.operations}
    assert writers == {PRODUCERS, "platereg-ingest", "platereg-operator"}


def test_the_registry_api_may_log_in_and_nothing_more() -> None:
    assert "platereg-registry-api" in service_principals()
    assert not [g for g in read_acls()[1] if g.principal == "platereg-registry-api"]


def test_producer_lines_expand_and_names_take_the_prefix() -> None:
    grants = grants_for(["police", "insurer"], prefix="x.")
    events = [g for g in grants if g.principal in ("police", "insurer")]
    assert {(g.principal, g.name) for g in events} == {("police", "x.plates.events"),
                                                       ("insurer", "x.plates.events")}
    assert Grant("a", "cluster", "kafka-cluster", "literal", ("Create",)).named("a", "x.") \
        .acl_command_args()[3] == "--cluster"


def test_a_malformed_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "acls"
    bad.write_text("someone topic plates.events literal\n")
    with pytest.raises(ValueError, match=r"acls:1: expected"):
        read_acls(bad)


def test_without_java_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apache_kafka, "java_binary", lambda: None)
    problem = apache_kafka.java_problem()
    assert problem is not None and "JDK 17" in problem and "apt-get install" in problem


def test_node_configuration_has_the_production_listeners(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, nodes=3, scram_users={"a": "b"})
    props = cluster._properties(cluster.nodes[1])
    assert props["listener.security.protocol.map"].endswith("CLIENT:SASL_PLAINTEXT")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["min.insync.replicas"] == "2"
    assert props["controller.quorum.voters"].count("@") == 3
    assert props["node.id"] == "2"
