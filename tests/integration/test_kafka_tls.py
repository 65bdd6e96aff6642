"""TLS on the broker's SASL_SSL listener: a client trusting another CA (or only the
system's CAs) is refused, and the certificates deploy/kafka/make-certs.sh makes for the
compose broker are ones Apache Kafka serves and a client with their CA trusts."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import trustme
from aiokafka.errors import KafkaConnectionError

from devtools.apache_kafka import KafkaCluster, TlsFiles
from platereg.kafka import make_admin
from platereg.settings import Settings, load_settings
from tests.broker import AclBroker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def _connects(settings: Settings) -> list[str]:
    admin = make_admin(settings, request_timeout_ms=5_000)
    try:
        await admin.start()
        return await admin.list_topics()
    finally:
        await admin.close()


async def test_a_client_trusting_another_ca_is_refused(
        kafka_acls: AclBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    principal = "platereg-registry-api"
    for cafile in (other_ca, None):       # None: the system's CAs
        caplog.clear()
        settings = kafka_acls.settings(principal, kafka_ssl_cafile=cafile)
        with caplog.at_level(logging.ERROR, logger="aiokafka"), \
                pytest.raises(KafkaConnectionError):
            await _connects(settings)
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text, caplog.text
    assert await _connects(kafka_acls.settings(principal)) is not None   # the right CA


async def test_make_certs_makes_what_kafka_serves_and_clients_trust(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl missing (Debian: apt-get install -y openssl)")
    tls = tmp_path / "tls"
    subprocess.run([str(ROOT / "deploy" / "kafka" / "make-certs.sh"), str(tls), "localhost",
                    "127.0.0.1"], check=True, capture_output=True, timeout=120)
    assert (tls / "broker.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tls / "broker.pem").stat().st_mode & 0o077 == 0
    cluster = KafkaCluster(tmp_path / "kafka", scram_users={"client": "s3cret-pw"},
                           tls=TlsFiles(key_and_chain=tls / "broker.pem", ca=tls / "ca.pem"),
                           heap_mb=256)
    cluster.start()
    try:
        settings = load_settings(
            kafka_bootstrap_servers=cluster.client_bootstrap, kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="client",
            kafka_sasl_password="s3cret-pw", kafka_ssl_cafile=str(tls / "ca.pem"))
        assert await _connects(settings) == []
    finally:
        cluster.stop()
