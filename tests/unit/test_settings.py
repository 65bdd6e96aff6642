"""Configuration is validated at start-up with messages that name the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from platereg.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PLATEREG_"):
            monkeypatch.delenv(key)


def test_defaults_follow_the_contract() -> None:
    s = load_settings()
    assert s.timezone == "America/Toronto"
    assert s.renewal_reminder_days == [60, 30, 7]
    assert s.notice_max_attempts == 8
    assert s.events_partitions == 12
    assert s.registry_port == 8080 and s.ingest_port == 8081


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("PLATEREG_TIMEZONE", "Mars/Olympus", "PLATEREG_TIMEZONE"),
        ("PLATEREG_RENEWAL_REMINDER_DAYS", "60,x", "PLATEREG_RENEWAL_REMINDER_DAYS"),
        ("PLATEREG_RENEWAL_REMINDER_DAYS", "0", "PLATEREG_RENEWAL_REMINDER_DAYS"),
        ("PLATEREG_RENEWAL_REMINDER_DAYS", "", "PLATEREG_RENEWAL_REMINDER_DAYS"),
        ("PLATEREG_EVENTS_PARTITIONS", "0", "PLATEREG_EVENTS_PARTITIONS"),
        ("PLATEREG_EVENTS_PARTITIONS", "twelve", "PLATEREG_EVENTS_PARTITIONS"),
        ("PLATEREG_LOG_FORMAT", "xml", "PLATEREG_LOG_FORMAT"),
        ("PLATEREG_REGISTRY_PORT", "70000", "PLATEREG_REGISTRY_PORT"),
        ("PLATEREG_TOPIC_PREFIX", "bad prefix/..", "PLATEREG_TOPIC_PREFIX"),
        ("PLATEREG_NOTICE_MAX_ATTEMPTS", "-1", "PLATEREG_NOTICE_MAX_ATTEMPTS"),
        ("PLATEREG_HTTP_BODY_TIMEOUT_SECONDS", "soon", "PLATEREG_HTTP_BODY_TIMEOUT_SECONDS"),
        ("PLATEREG_HTTP_KEEPALIVE_TIMEOUT_SECONDS", "-5",
         "PLATEREG_HTTP_KEEPALIVE_TIMEOUT_SECONDS"),
        ("PLATEREG_HTTP_MAX_CONCURRENT_REQUESTS", "0", "PLATEREG_HTTP_MAX_CONCURRENT_REQUESTS"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str,
                                      fragment: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert fragment in str(info.value)


def test_reminder_days_are_deduplicated_and_sorted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATEREG_RENEWAL_REMINDER_DAYS", " 7, 60 ,30,7")
    assert load_settings().renewal_reminder_days == [60, 30, 7]


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATEREG_DATABASE_URL", "postgresql://u:hunter2@db/x")
    s = load_settings()
    assert "hunter2" not in repr(s)
    assert s.dsn() == "postgresql://u:hunter2@db/x"


def test_cli_exits_2_with_the_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    env = {**os.environ, "PLATEREG_TIMEZONE": "Nowhere/Else",
           "PLATEREG_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}
    res = subprocess.run([sys.executable, "-m", "wiring.cli", "migrate"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "PLATEREG_TIMEZONE" in res.stderr
    assert "Traceback" not in res.stderr


def test_unset_servers_give_a_clear_error() -> None:
    s = load_settings()
    with pytest.raises(ConfigError, match="PLATEREG_DATABASE_URL"):
        s.dsn()
    with pytest.raises(ConfigError, match="PLATEREG_KAFKA_BOOTSTRAP_SERVERS"):
        s.bootstrap()
