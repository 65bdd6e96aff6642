"""The peer's pinned jars and configuration (devtools/kafka_connect.py, bench/bench_peer.py)."""

from __future__ import annotations

import orjson

from bench.bench_peer import SCHEMA, enveloped, per_event, sink_config
from devtools import kafka_connect
from devtools.apache_kafka import kafka_version


def test_connect_is_the_brokers_kafka_release():
    pinned = kafka_connect.versions()
    assert pinned["kafka.version"] == kafka_version()
    assert pinned["debezium.version"].startswith("3.")


def test_the_sink_reads_each_event_with_its_schema_keyed_by_plate():
    event = {"specversion": "1.0", "id": "e1", "source": "/registry/office/x",
             "type": "plate.renewed", "time": "2024-01-02T03:04:05Z", "subject": "CA-ON/B1",
             "data": {"expires_on": "2025-01-02"}}
    [(key, value)] = enveloped([(b"CA-ON/B1", orjson.dumps(event))])
    assert key == b"CA-ON/B1"
    record = orjson.loads(value)
    assert record["schema"] == SCHEMA
    assert record["payload"] == {"event_id": "e1", "type": "plate.renewed",
                                 "source": "/registry/office/x",
                                 "time": "2024-01-02T03:04:05Z",
                                 "data": '{"expires_on":"2025-01-02"}'}
    assert [f["field"] for f in SCHEMA["fields"]] == list(record["payload"])


def test_upsert_by_plate_into_the_same_postgresql():
    config = sink_config("postgresql://bench:s3cret@127.0.0.1:5433/bench_x", "b1.plates.events")
    assert config["connection.url"] == "jdbc:postgresql://127.0.0.1:5433/bench_x"
    assert (config["connection.username"], config["connection.password"]) == ("bench", "s3cret")
    assert config["insert.mode"] == "upsert"
    assert (config["primary.key.mode"], config["primary.key.fields"]) == ("record_key", "plate")
    # the sink's record_key mode takes a key with fields: the plain plate is wrapped into one
    assert config["transforms.plate.type"].endswith("HoistField$Key")
    assert config["transforms.plate.field"] == "plate"
    assert config["connector.class"] == kafka_connect.CONNECTORS["jdbc-sink"]


def test_a_changed_pom_gets_a_plugin_path_of_its_own(tmp_path):
    pom = tmp_path / "pom.xml"
    pom.write_text(kafka_connect.POM.read_text())
    same = kafka_connect.plugin_path(pom)
    assert same == kafka_connect.plugin_path()
    pom.write_text(pom.read_text().replace("</project>", "<!-- changed --></project>"))
    assert kafka_connect.plugin_path(pom) != same
    assert kafka_connect.plugin_path(pom).parent == kafka_connect.home()


def test_cpu_per_event_sums_the_processes():
    total, parts = per_event({"consumer": 1.0, "PostgreSQL": 0.5}, 100_000)
    assert round(total, 6) == 15.0
    assert parts == "consumer 10.0, PostgreSQL 5.0"


def test_a_failed_fetch_names_the_missing_artifact():
    from devtools.apache_kafka import maven_reason

    output = ("\x1b[0m\x1b[0m[ERROR] Failed to execute goal on project x: Could not resolve "
              "dependencies for project a:b:pom:1: io.debezium:debezium-connector-jdbc:jar:"
              "3.6.1.Final was not found in https://repository.example/maven2 during a "
              "previous attempt.\n[ERROR] \n[ERROR] Re-run Maven using the -X switch\n")
    assert maven_reason(output) == ("io.debezium:debezium-connector-jdbc:jar:3.6.1.Final "
                                    "was not found")
    assert maven_reason("[ERROR] no network\n") == "no network"
