"""Kafka TLS / SASL settings: one mapping to aiokafka options, errors naming the variable."""

from __future__ import annotations

import ssl

import pytest

from platereg.kafka import client_options, security_options
from platereg.settings import ConfigError, Settings, load_settings


def settings(**values: object) -> Settings:
    return Settings(kafka_bootstrap_servers="k1:9093,k2:9093", **values)  # type: ignore[arg-type]


def test_plaintext_is_the_default_and_adds_nothing_else() -> None:
    assert security_options(settings()) == {"security_protocol": "PLAINTEXT"}
    options = client_options(settings(), client_id="x")
    assert options == {"bootstrap_servers": "k1:9093,k2:9093",
                       "security_protocol": "PLAINTEXT", "client_id": "x"}


def test_sasl_ssl_with_scram(tmp_path) -> None:
    options = security_options(settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="insurer-acme", kafka_sasl_password="s3cret"))
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"],
            options["sasl_plain_password"]) == ("SCRAM-SHA-512", "insurer-acme", "s3cret")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_ssl_with_a_ca_file() -> None:
    import certifi

    options = security_options(settings(kafka_security_protocol="SSL",
                                        kafka_ssl_cafile=certifi.where()))
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in options


@pytest.mark.parametrize("values,variable", [
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u",
      "kafka_sasl_password": "p"}, "PLATEREG_KAFKA_SASL_MECHANISM: required"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-256",
      "kafka_sasl_password": "p"}, "PLATEREG_KAFKA_SASL_USERNAME: required"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-256",
      "kafka_sasl_username": "u"}, "PLATEREG_KAFKA_SASL_PASSWORD: required"),
    ({"kafka_sasl_username": "u"}, "PLATEREG_KAFKA_SASL_USERNAME: only used with"),
    ({"kafka_ssl_cafile": "/etc/hosts"}, "PLATEREG_KAFKA_SSL_CAFILE: only used with"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
     "PLATEREG_KAFKA_SSL_CAFILE: no such file"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN",
      "kafka_sasl_username": "u", "kafka_sasl_password": "p"},
     "PLATEREG_KAFKA_SASL_MECHANISM: PLAIN would send the password"),
])
def test_bad_combinations_name_the_variable(values: dict, variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        security_options(settings(**values))
    with pytest.raises(ConfigError, match=variable):
        load_settings(kafka_bootstrap_servers="k:9092", **values)


def test_unknown_protocol_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("PLATEREG_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ConfigError, match="PLATEREG_KAFKA_SECURITY_PROTOCOL"):
        load_settings()


def test_password_never_shows_in_the_settings_repr() -> None:
    s = settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
                 kafka_sasl_username="u", kafka_sasl_password="hunter2")
    assert "hunter2" not in repr(s)


def test_every_client_factory_takes_the_options(monkeypatch) -> None:
    import platereg.kafka as kafka

    made: list[dict] = []
    for name in ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"):
        monkeypatch.setattr(kafka, name, lambda *topics, **kw: made.append(kw))
    s = settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
                 kafka_sasl_username="registry", kafka_sasl_password="p")
    kafka.make_producer(s)
    kafka.make_consumer(s, group_id="g")
    kafka.make_admin(s)
    assert len(made) == 3
    for options in made:
        assert options["bootstrap_servers"] == "k1:9093,k2:9093"
        assert (options["security_protocol"], options["sasl_mechanism"],
                options["sasl_plain_username"]) == ("SASL_SSL", "SCRAM-SHA-256", "registry")


def test_a_ca_file_that_is_no_pem_certificate_names_the_variable(tmp_path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="PLATEREG_KAFKA_SSL_CAFILE: not a readable PEM CA"):
        load_settings(kafka_bootstrap_servers="k:9092", kafka_security_protocol="SSL",
                      kafka_ssl_cafile=str(bad))
