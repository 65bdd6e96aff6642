"""All configuration, read once from ``PLATEREG_*`` environment variables.

One pydantic-settings class; every service takes what it needs from it. A bad
value stops start-up with a message that names the variable (see
:func:`load_settings`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.signing import ProducerError, Signer

ENV_PREFIX = "PLATEREG_"


class ConfigError(RuntimeError):
    """Raised when the environment holds an invalid setting."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- servers -----------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN of this process. A command that has its own role "
                    "(below) uses that role's URL when it is set, else this one. Unset: "
                    "`make run` and the tests start an embedded PostgreSQL.",
    )
    migrate_database_url: SecretStr | None = Field(
        default=None,
        description="DSN of the role that owns the schema, for `platereg migrate` (it also "
                    "applies the grants and the retention settings). "
                    "Unset: PLATEREG_DATABASE_URL.",
    )
    consumer_database_url: SecretStr | None = Field(
        default=None,
        description="DSN of the registry consumer's role (`platereg consume registry|relay`)"
                    ". Unset: PLATEREG_DATABASE_URL.")
    registry_api_database_url: SecretStr | None = Field(
        default=None,
        description="DSN of the registry API's role (`platereg serve registry`). "
                    "Unset: PLATEREG_DATABASE_URL.")
    ingest_api_database_url: SecretStr | None = Field(
        default=None,
        description="DSN of the ingest API's role (`platereg serve ingest`). "
                    "Unset: PLATEREG_DATABASE_URL.")
    notices_scheduler_database_url: SecretStr | None = Field(
        default=None,
        description="DSN of the notice scheduler's role (`platereg notices schedule`). "
                    "Unset: PLATEREG_DATABASE_URL.")
    notices_dispatcher_database_url: SecretStr | None = Field(
        default=None,
        description="DSN of the notice dispatcher's role (`platereg notices dispatch|paper`)"
                    ". Unset: PLATEREG_DATABASE_URL.")
    purge_database_url: SecretStr | None = Field(
        default=None,
        description="DSN of the role that removes personal data past its retention "
                    "(`platereg purge`). Unset: PLATEREG_DATABASE_URL.",
    )
    operator_database_url: SecretStr | None = Field(
        default=None,
        description="DSN of the operator commands' role (`platereg keys`, `sources`, `dlq`, "
                    "`quarantine`): the only one that may write API keys and the source "
                    "policy. Unset: PLATEREG_DATABASE_URL.")
    admin_database_url: SecretStr | None = Field(
        default=None,
        description="DSN of a role that may create roles, for `platereg roles` only.",
    )
    database_read_urls: Annotated[list[SecretStr], NoDecode] = Field(
        default=[],
        description="DSNs of streaming replicas (hot standbys) of PLATEREG_DATABASE_URL's "
                    "server, comma-separated (or a JSON list, for DSNs with commas): the "
                    "registry API reads plates, views, the hotlist and history there and "
                    "writes audit rows to the primary. Empty: every read goes to the primary.",
    )
    replica_max_lag_seconds: float = Field(
        default=5.0, gt=0, le=3600,
        description="A read replica further behind the primary than this is left out of "
                    "the registry API's reads until it catches up; with none left, reads go "
                    "to the primary.",
    )
    replica_check_seconds: float = Field(
        default=1.0, gt=0, le=300,
        description="How often each registry API process measures each read replica's lag "
                    "(in the background, not per request).",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port,...). Unset: an embedded broker.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How every Kafka client connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or "
                    "SASL_SSL (SASL over TLS, for production).")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism (required with SASL_*).")
    kafka_sasl_username: str | None = Field(
        default=None, description="SASL user name: this process's Kafka principal.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA certificate (PEM) trusted for the brokers' TLS "
                                  "certificates with SSL / SASL_SSL (unset: the system's CAs).")
    kafka_idempotence: bool = Field(
        default=True,
        description="Idempotent producers (no duplicate or reordered records when a send is "
                    "retried). Off only for brokers without it (`make run`'s embedded "
                    "fallback broker).")
    producer_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="The registered producer this process signs what it writes to "
                    "plates.events as (the ingest API, `platereg import` and `platereg "
                    "simulate` to Kafka): `platereg sources producer add NAME --source "
                    "PREFIX` registers one and prints its secret.")
    producer_secret: SecretStr | None = Field(
        default=None,
        description="That producer's secret (43 characters, as `platereg sources producer "
                    "add` or `rotate` printed it).")
    data_dir: Path = Field(
        default=Path(".platereg"),
        description="Where `make run` keeps the embedded PostgreSQL data (survives restarts).",
    )
    db_pool_min: int = Field(
        default=2, ge=1, le=100, description="Least connections in a process's PostgreSQL pool.")
    db_pool_max: int = Field(
        default=10, ge=1, le=200,
        description="Most connections in a process's PostgreSQL pool (times the processes: "
                    "below the server's max_connections).")

    # --- topics --------------------------------------------------------------
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]{0,64}$",
        description="Prefix for every topic name (tests use it to isolate runs).",
    )
    events_partitions: int = Field(
        default=12, ge=1, le=1000,
        description="Partitions of plates.events when `platereg topics` creates it (at most "
                    "this many registry consumers do work).")
    status_partitions: int = Field(
        default=6, ge=1, le=1000, description="Partitions of plates.status when created.")
    notices_partitions: int = Field(
        default=6, ge=1, le=1000, description="Partitions of plates.notices when created.")
    dlq_partitions: int = Field(
        default=1, ge=1, le=1000, description="Partitions of plates.events.dlq when created.")
    replication_factor: int = Field(
        default=1, ge=1, le=10, description="Replication factor of the topics it creates.")
    consumer_group: str = Field(
        default="platereg-registry", min_length=1, max_length=200,
        description="Consumer group of the registry consumers.")

    # --- domain --------------------------------------------------------------
    timezone: str = Field(
        default="America/Toronto",
        description="The registry's IANA time zone: what 'today' and 'expired' mean.")
    renewal_reminder_days: Annotated[list[int], NoDecode] = Field(
        default=[60, 30, 7],
        description="Renewal reminder windows, in days before expiry, comma-separated.")
    notice_max_attempts: int = Field(
        default=8, ge=1, le=100,
        description="Delivery attempts per notice and channel before the next channel.")
    audit_retention_days: int = Field(
        default=365, ge=1, le=36500,
        description="Days an audit row is kept; `platereg purge` deletes older ones and the "
                    "database refuses to delete younger ones. Reaches the database with "
                    "`platereg migrate`.")
    notice_retention_days: int = Field(
        default=365, ge=1, le=36500,
        description="Days a notice keeps its recipient's contact data and its text's "
                    "details; then `platereg purge` clears them (the notice and its "
                    "delivery attempts stay). Reaches the database with `platereg migrate`.")
    dead_letter_retention_days: int = Field(
        default=30, ge=1, le=36500,
        description="Days a rejected message's key and value (the original bytes) are "
                    "kept for `platereg dlq replay`; then `platereg purge` clears them. "
                    "Reaches the database with `platereg migrate`.")
    sign_in_link_retention_days: int = Field(
        default=30, ge=1, le=36500,
        description="Days a sign-in link's record is kept after the link expired; then "
                    "`platereg purge` deletes it. Reaches the database with "
                    "`platereg migrate`.")
    owner_session_retention_days: int = Field(
        default=30, ge=1, le=36500,
        description="Days an owner session's record is kept after it expired; then "
                    "`platereg purge` deletes it. Reaches the database with "
                    "`platereg migrate`.")
    audit_max_pending: int = Field(
        default=50_000, ge=1, le=1_000_000,
        description="Audit rows a registry API process may have waiting to be written (each "
                    "read waits for its own); beyond it reads get 503 at once (a read is never "
                    "served un-audited).",
    )
    audit_ready_lag_seconds: float = Field(
        default=5.0, gt=0, le=3600,
        description="/readyz answers 503 while the oldest unwritten audit row is older.",
    )
    clock_offset_seconds: float = Field(
        default=0.0,
        description="Test only: shift the registry's clock (views, status changes, expiry "
                    "sweep) by this many seconds. Leave 0 in production.",
    )

    # --- HTTP ----------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Listen address of the HTTP servers.")
    registry_port: int = Field(
        default=8080, ge=0, le=65535, description="Port of the registry API (and its /metrics).")
    ingest_port: int = Field(
        default=8081, ge=0, le=65535, description="Port of the ingest API (and its /metrics).")
    consumer_metrics_port: int = Field(
        default=9102, ge=0, le=65535,
        description="Port of /metrics, /healthz and /readyz of `platereg consume registry` "
                    "and `consume relay`.")
    rate_limit_per_second: float = Field(
        default=200.0, gt=0,
        description="Units per second per key for roles without their own default (ingest).",
    )
    rate_limit_enforcement_per_second: float = Field(
        default=1000.0, gt=0,
        description="Units (plates or owner records returned) per second per enforcement key.",
    )
    rate_limit_portal_per_second: float = Field(
        default=100.0, gt=0, description="Units per second per portal key.")
    rate_limit_operator_per_second: float = Field(
        default=20.0, gt=0, description="Units per second per operator key.")
    rate_limit_burst: int = Field(
        default=400, ge=1,
        description="Least bucket size of a key (its size is the larger of this and its rate).")
    auth_key_refresh_seconds: float = Field(
        default=1.0, gt=0, le=3600,
        description="How often, at most, an API process reloads the list of key ids when it "
                    "meets one it does not know.")
    auth_unknown_key_lookups_per_second: float = Field(
        default=5.0, gt=0, le=10_000,
        description="Database look-ups per second, per process, for key ids not in the list "
                    "(a key created since the last reload); beyond it they are refused.")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Larger request bodies get 413.")
    http_body_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600,
        description="A request's body must arrive within this time from its first read, else "
                    "408 and the connection is closed (slow-body clients); checked ten times "
                    "per timeout (at most every second), so it may fire that much later.")
    http_keepalive_timeout_seconds: int = Field(
        default=5, ge=1, le=300, description="Idle keep-alive connections close after this.")
    http_max_concurrent_requests: int = Field(
        default=1000, ge=1, le=100_000,
        description="Requests in progress per process; beyond it 503 with Retry-After at once "
                    "(the probes are not counted).")
    kafka_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300,
        description="Longest wait for Kafka acknowledgements (the ingest API answers 503 "
                    "past it).")

    # --- notices -------------------------------------------------------------
    owner_page_url: str = Field(
        default="http://127.0.0.1:8080/owner/",
        description="Owner page; notices link to it with a one-time sign-in token.")
    smtp_host: str = Field(default="127.0.0.1", description="SMTP server for e-mail notices.")
    smtp_port: int = Field(
        default=8025, ge=1, le=65535,
        description="SMTP port (the default is `make run`'s mail catcher).")
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        default="none", description="TLS to the SMTP server: none, STARTTLS, or implicit TLS.")
    smtp_username: str | None = Field(
        default=None, description="SMTP user name (unset: no authentication).")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    notice_from: str = Field(
        default="Plate Registry <notices@platereg.localhost>",
        description="Sender of e-mail notices; its domain ends each Message-ID.")
    sms_gateway_url: str | None = Field(default=None, description="SMS gateway (HTTP POST).")
    plate_display_url: str | None = Field(
        default=None, description="Smart plate device gateway (HTTP POST {device_id, message}).")
    notice_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default=[], description="Webhook signing secrets, comma-separated (two while rotating).")
    webhook_allow_private: bool = Field(
        default=False,
        description="Let the notice dispatcher call webhooks on loopback, private, link-local "
                    "and cloud metadata addresses (refused by default: an owner's webhook URL "
                    "must not reach the registry's own network). For development and tests.")
    notice_http_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300,
        description="Timeout of one delivery attempt (HTTP or SMTP).")
    notice_retry_initial_seconds: float = Field(
        default=2.0, gt=0, le=3600,
        description="First wait between delivery attempts (exponential backoff, jitter).")
    notice_retry_max_seconds: float = Field(
        default=900.0, gt=0, le=86400, description="Longest wait between delivery attempts.")
    notice_concurrency: int = Field(
        default=32, ge=1, le=1000, description="Deliveries in flight per dispatcher.")
    notices_scheduler_port: int = Field(
        default=9103, ge=0, le=65535,
        description="Port of /metrics, /healthz and /readyz of `platereg notices schedule`.")
    notices_dispatcher_port: int = Field(
        default=9104, ge=0, le=65535,
        description="Port of /metrics, /healthz and /readyz of `platereg notices dispatch`.")

    # --- owner tokens and the owner page ---------------------------------------
    owner_token_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default=[],
        description="Keys that sign owner tokens, comma-separated, at least 32 characters "
                    "each: the first signs, a second (the previous key) is still accepted "
                    "while rotating. Unset: the owner routes and page answer 503. "
                    "`make run` generates one into its data dir.")
    owner_token_minutes: int = Field(
        default=15, ge=1, le=60,
        description="Lifetime of an owner token in minutes (the contract: 15); the owner "
                    "page tells the owner how long they stay signed in.")
    owner_requests_per_second: float = Field(
        default=5.0, gt=0, le=10_000,
        description="Request rate of one owner token on the /v1/me routes (token bucket, "
                    "one unit per record returned, RateLimit-* headers like API keys).")
    owner_sessions_per_hour: int = Field(
        default=20, ge=1, le=10_000,
        description="Sign-ins through a sign-in link per owner per hour (the owner's own "
                    "budget, which no portal uses); beyond it 429 with Retry-After.")
    owner_portal_sessions_per_hour: int = Field(
        default=20, ge=1, le=10_000,
        description="Owner tokens one portal key may mint for one owner per hour (a budget "
                    "of its own: a portal cannot use up the owner's sign-ins or another "
                    "portal's); beyond it 429 with Retry-After.")
    owner_link_failures_per_address: int = Field(
        default=10, ge=1, le=10_000,
        description="Refused sign-in links (unknown, used, expired, malformed) one client "
                    "address may present within PLATEREG_OWNER_LINK_FAILURE_WINDOW_MINUTES; "
                    "beyond it every link from that address gets 429 with Retry-After "
                    "(IPv6: per /64; counted in each registry API process).")
    owner_link_failure_window_minutes: int = Field(
        default=15, ge=1, le=1440,
        description="The window of PLATEREG_OWNER_LINK_FAILURES_PER_ADDRESS, in minutes.")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Addresses or networks (CIDR) of the reverse proxies in front of the "
                    "registry API, comma-separated. Only from these are X-Forwarded-For "
                    "(the client address of the sign-in link limit) and X-Forwarded-Proto "
                    "(`https`: the owner cookie is Secure) believed. Empty: neither header "
                    "is believed from anyone.")
    owner_webhooks: bool = Field(
        default=False,
        description="Offer webhooks as a notice channel on the owner page and accept "
                    "`webhook` in PUT /v1/me/preferences (an owner who already has it "
                    "keeps it). Off: citizens are offered e-mail, SMS, the smart plate "
                    "display and paper.")
    owner_department_name: str = Field(
        default="ServiceOntario", min_length=1, max_length=120,
        description="The department owners deal with, named on the owner page.")
    owner_department_phone: str = Field(
        default="1-800-267-8097", min_length=1, max_length=40,
        description="The department's phone number on the owner page (whom to call).")
    owner_department_url: str = Field(
        default="https://www.ontario.ca/page/serviceontario", min_length=1, max_length=500,
        description="The department's contact page, linked from the owner page.")
    owner_renewal_url: str = Field(
        default="https://www.ontario.ca/page/renew-your-licence-plate", min_length=1,
        max_length=500,
        description="Where an owner renews a plate, linked from the owner page for an "
                    "expired plate or one due for renewal.")
    jurisdiction_timezones: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Time zones of plate jurisdictions, as JURISDICTION=IANA zone, "
                    "comma-separated (e.g. `CA-BC=America/Vancouver`); they add to or "
                    "replace the built-in table of Canadian provinces and US states. The "
                    "owner page shows a plate's times in its jurisdiction's zone; a "
                    "jurisdiction in neither uses PLATEREG_TIMEZONE.")

    # --- registry API --------------------------------------------------------
    cursor_secret: SecretStr | None = Field(
        default=None,
        description="Key sealing the registry API's opaque cursors (at least 32 "
                    "characters, the same for every registry API process). Unset: a random "
                    "one generated once into PLATEREG_DATA_DIR/cursor-secret (development).")

    # --- logging -------------------------------------------------------------
    log_format: Literal["console", "json"] = Field(
        default="console", description="`console` for people, `json` for log shippers.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least level logged.")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("renewal_reminder_days", mode="before")
    @classmethod
    def _parse_days(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("renewal_reminder_days")
    @classmethod
    def _check_days(cls, value: list[int]) -> list[int]:
        if not value or any(d < 1 or d > 366 for d in value):
            raise ValueError("must be a comma-separated list of days between 1 and 366")
        return sorted(set(value), reverse=True)

    @field_validator("database_read_urls", mode="before")
    @classmethod
    def _parse_read_urls(cls, value: object) -> object:
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("not a JSON list of DSNs") from None
        return _split_csv(value)

    @field_validator("notice_webhook_secrets", mode="before")
    @classmethod
    def _parse_secrets(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list) and len(value) > 2:
            raise ValueError("at most two secrets (the current one and the next)")
        return value

    @field_validator("owner_token_keys", mode="before")
    @classmethod
    def _parse_owner_keys(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            if len(value) > 2:
                raise ValueError("at most two keys (the current one, then the previous one)")
            if any(len(k.get_secret_value() if isinstance(k, SecretStr) else str(k)) < 32
                   for k in value):
                raise ValueError("each key needs at least 32 characters (python -c "
                                 "'import secrets; print(secrets.token_urlsafe(32))')")
        return value


    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            for entry in value:
                try:
                    ipaddress.ip_network(str(entry), strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address or network "
                                     "(e.g. 10.0.0.5 or 10.0.0.0/24)") from None
        return value

    @field_validator("jurisdiction_timezones", mode="before")
    @classmethod
    def _parse_jurisdiction_zones(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            for entry in value:
                code, _, zone = str(entry).partition("=")
                if not re.fullmatch(r"[A-Z]{2}-[A-Z0-9]{1,3}", code.strip()):
                    raise ValueError(f"{entry!r}: write JURISDICTION=ZONE, e.g. "
                                     "CA-BC=America/Vancouver")
                try:
                    ZoneInfo(zone.strip())
                except (ZoneInfoNotFoundError, ValueError):
                    raise ValueError(f"{entry!r}: unknown IANA time zone") from None
            value = [str(e).replace(" ", "") for e in value]
        return value

    def jurisdiction_zones(self) -> dict[str, str]:
        """PLATEREG_JURISDICTION_TIMEZONES as a mapping (jurisdiction to IANA zone name)."""
        return dict(entry.split("=", 1) for entry in self.jurisdiction_timezones)

    @field_validator("cursor_secret")
    @classmethod
    def _check_cursor_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    def cursor_key(self) -> bytes:
        """PLATEREG_CURSOR_SECRET, or the development one in the data dir (made once)."""
        if self.cursor_secret is not None:
            return self.cursor_secret.get_secret_value().encode()
        path = self.data_dir / "cursor-secret"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # Written aside, then linked into place: a racing process sees the whole
                # file or none, and the first link wins.
                tmp = self.data_dir / f".cursor-secret.{secrets.token_hex(8)}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32))
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
                tmp.unlink()
            secret = path.read_text().strip().encode()
        except OSError as exc:
            raise ConfigError(f"PLATEREG_CURSOR_SECRET is not set and {path} cannot be "
                              f"used ({type(exc).__name__}); set PLATEREG_CURSOR_SECRET") from None
        if len(secret) < 32:
            raise ConfigError(f"{path} holds no usable cursor secret; delete it or set "
                              "PLATEREG_CURSOR_SECRET")
        return secret

    def signer(self) -> Signer:
        """The producer this process signs as (PLATEREG_PRODUCER_NAME and _SECRET), or
        :class:`ConfigError` saying what is missing."""
        if self.producer_name is None or self.producer_secret is None:
            raise ConfigError(
                "PLATEREG_PRODUCER_NAME and PLATEREG_PRODUCER_SECRET must be set to write to "
                "plates.events: every message is signed by a registered producer (`platereg "
                "sources producer add NAME --source PREFIX` prints the secret)")
        try:
            return Signer.of(self.producer_name, self.producer_secret.get_secret_value())
        except ProducerError as exc:
            raise ConfigError(f"PLATEREG_PRODUCER_SECRET: {exc}") from None


    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def topic(self, name: str) -> str:
        """The real topic name for a contract topic name (adds the prefix)."""
        return f"{self.topic_prefix}{name}"

    def dsn(self) -> str:
        if self.database_url is None:
            raise ConfigError(
                "PLATEREG_DATABASE_URL is not set (run through `platereg run` or set it)"
            )
        return self.database_url.get_secret_value()

    def read_dsns(self) -> list[str]:
        """The read replicas' DSNs (none: the primary serves every read)."""
        return [url.get_secret_value() for url in self.database_read_urls]

    def migrate_dsn(self) -> str:
        """The schema owner's DSN (falls back to the services' one)."""
        if self.migrate_database_url is not None:
            return self.migrate_database_url.get_secret_value()
        return self.dsn()

    def role_dsn(self, role: str) -> str | None:
        """PLATEREG_<ROLE>_DATABASE_URL of a database role (``platereg.security.roles``),
        or None when it is unset."""
        value = getattr(self, f"{role}_database_url")
        return None if value is None else value.get_secret_value()

    def for_role(self, role: str) -> Settings:
        """These settings as a process logging in as ``role`` sees them: PLATEREG_DATABASE_URL
        is the role's own URL when it is set."""
        dsn = self.role_dsn(role)
        if dsn is None:
            return self
        return self.model_copy(update={"database_url": SecretStr(dsn)})

    def bootstrap(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise ConfigError(
                "PLATEREG_KAFKA_BOOTSTRAP_SERVERS is not set (run through `platereg run` or set it)"
            )
        return self.kafka_bootstrap_servers


def describe_error(exc: ValidationError) -> str:
    """One line per bad variable, naming it as the operator would type it."""
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        lines.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def kafka_security_problems(settings: Settings) -> list[str]:
    """What is wrong with the Kafka TLS/SASL settings together, one line per variable."""
    protocol = settings.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    problems = []
    if sasl:
        for name, value in (("SASL_MECHANISM", settings.kafka_sasl_mechanism),
                            ("SASL_USERNAME", settings.kafka_sasl_username),
                            ("SASL_PASSWORD", settings.kafka_sasl_password)):
            if not value or (isinstance(value, SecretStr) and not value.get_secret_value()):
                problems.append(f"{ENV_PREFIX}KAFKA_{name}: required with "
                                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={protocol}")
    else:
        for name, value in (("SASL_MECHANISM", settings.kafka_sasl_mechanism),
                            ("SASL_USERNAME", settings.kafka_sasl_username),
                            ("SASL_PASSWORD", settings.kafka_sasl_password)):
            if value is not None:
                problems.append(f"{ENV_PREFIX}KAFKA_{name}: only used with "
                                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or "
                                f"SASL_SSL (it is {protocol})")
    cafile = settings.kafka_ssl_cafile
    if cafile is not None:
        if not protocol.endswith("SSL"):
            problems.append(f"{ENV_PREFIX}KAFKA_SSL_CAFILE: only used with "
                            f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL "
                            f"(it is {protocol})")
        elif not cafile.is_file():
            problems.append(f"{ENV_PREFIX}KAFKA_SSL_CAFILE: no such file")
        else:
            problems += _ca_file_problems(cafile)
    if protocol == "SASL_PLAINTEXT" and settings.kafka_sasl_mechanism == "PLAIN":
        problems.append(f"{ENV_PREFIX}KAFKA_SASL_MECHANISM: PLAIN would send the password "
                        "in clear text; use SASL_SSL or a SCRAM mechanism")
    return problems


def _ca_file_problems(cafile: Path) -> list[str]:
    """None when ``cafile`` holds PEM certificates TLS can trust, else why not."""
    import ssl

    try:
        ssl.create_default_context(cafile=str(cafile))
    except (ssl.SSLError, OSError) as exc:
        return [f"{ENV_PREFIX}KAFKA_SSL_CAFILE: not a readable PEM CA certificate "
                f"({type(exc).__name__}: {exc.strerror or exc})"]
    return []


def load_settings(**overrides: object) -> Settings:
    """Read and validate the environment; raise :class:`ConfigError` naming bad variables."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from None
    problems = kafka_security_problems(settings)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return settings


# --- what each command needs ----------------------------------------------------------------

#: A setting that, unset, takes another's value (one DSN for everything still works).
#: The roles with a login URL setting of their own (``<role>_database_url``).
_ROLE_LOGINS = ("consumer", "registry_api", "ingest_api", "notices_scheduler",
                "notices_dispatcher", "purge", "operator")
FALLBACKS = {"migrate_database_url": "database_url",
             **{f"{role}_database_url": "database_url" for role in _ROLE_LOGINS}}


@dataclass(frozen=True)
class Needs:
    """What a command needs from the environment.

    ``required``: it refuses to start without them (exit status 2, naming each
    variable; a setting of :data:`FALLBACKS` counts as set when its fallback is).
    ``deployment``: it starts without them on a development fallback that a deployment
    must not rely on (a cursor secret made in the local data directory, which other
    replicas do not share; no owner token keys, so the owner page answers 503; an SMTP
    server and owner page on localhost; one database role doing every job).
    """

    required: tuple[str, ...] = ()
    deployment: tuple[str, ...] = ()
    #: The database role it logs in as (``platereg.security.roles``): PLATEREG_DATABASE_URL
    #: is replaced by that role's own URL (``PLATEREG_<ROLE>_DATABASE_URL``) when it is set.
    role: str | None = None

    @property
    def kafka(self) -> bool:
        """Whether the command talks to Kafka (and so logs in as a principal)."""
        return "kafka_bootstrap_servers" in self.required


_DB = ("database_url",)
_DB_KAFKA = ("database_url", "kafka_bootstrap_servers")
#: Each command (as typed after ``platereg``) with requirements, checked by
#: ``platereg.commands.settings_or_exit`` before it starts; docker-compose.yml sets every
#: one of them for the service running the command (tests/unit/test_compose_env.py).
COMMAND_NEEDS: dict[str, Needs] = {
    "roles": Needs(("admin_database_url",),
                   tuple(f"{role}_database_url" for role in _ROLE_LOGINS)),
    "migrate": Needs(("migrate_database_url",)),
    "topics": Needs(("kafka_bootstrap_servers",)),
    "consume registry": Needs(_DB_KAFKA, role="consumer"),
    "consume relay": Needs(_DB_KAFKA, role="consumer"),
    "serve registry": Needs(_DB_KAFKA, ("cursor_secret", "owner_token_keys"),
                         role="registry_api"),
    "serve ingest": Needs((*_DB_KAFKA, "producer_name", "producer_secret"), role="ingest_api"),
    "purge": Needs(_DB, role="purge"),
    "notices schedule": Needs(_DB_KAFKA, role="notices_scheduler"),
    "notices dispatch": Needs(_DB_KAFKA, ("smtp_host", "owner_page_url"),
                              role="notices_dispatcher"),
    "notices paper": Needs(_DB, role="notices_dispatcher"),
    "dlq list": Needs(_DB, role="operator"),
    "dlq replay": Needs(_DB_KAFKA, role="operator"),
    **{f"{group} {verb}": Needs(_DB, role="operator") for group, verbs in (
        ("keys", ("create", "list", "bind", "revoke")), ("quarantine", ("list", "release")),
        ("sources", ("list", "set", "remove", "check")),
        ("sources producer", ("add", "rotate", "retire-secret", "revoke", "list")))
        for verb in verbs},
}


def variable(name: str) -> str:
    """The environment variable of setting ``name``."""
    return f"{ENV_PREFIX}{name.upper()}"


def _is_set(settings: Settings, name: str) -> bool:
    value = getattr(settings, name)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value not in (None, "", []):
        return True
    return name in FALLBACKS and _is_set(settings, FALLBACKS[name])


def missing_settings(settings: Settings, command: str) -> list[str]:
    """The variables ``command`` refuses to start without that ``settings`` leave unset."""
    needs = COMMAND_NEEDS.get(command, Needs())
    own = f"{needs.role}_database_url" if needs.role else None   # the role's own login

    def instead(name: str) -> str | None:
        return FALLBACKS.get(name) or (own if name == "database_url" else None)

    return [variable(name) + (f" (or {variable(other)})" if (other := instead(name)) else "")
            for name in needs.required
            if not (_is_set(settings, name) or (name == "database_url" and own
                                                 and _is_set(settings, own)))]


# --- the settings table of docs/configuration.md ------------------------------------------

#: The generated table sits between these two lines of docs/configuration.md.
TABLE_BEGIN = "<!-- BEGIN settings table: python -m platereg.settings --markdown FILE -->"
TABLE_END = "<!-- END settings table -->"
_TYPE_NAMES: dict[Any, str] = {str: "text", int: "integer", float: "number",
                               bool: "true/false", SecretStr: "secret", Path: "path"}


def _type_text(field: FieldInfo) -> str:
    """The field's type as an operator types it, with its bounds."""
    annotation, args = field.annotation, get_args(field.annotation)
    if get_origin(annotation) in (Union, UnionType):   # ``X | None``: optional, shown as unset
        annotation = next(a for a in args if a is not type(None))
        args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if get_origin(annotation) is list:
        return f"comma-separated {_TYPE_NAMES[args[0]]}s"
    text = _TYPE_NAMES[annotation]
    bounds = {key: getattr(m, key) for m in field.metadata
              for key in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")
              if getattr(m, key, None) is not None}
    if "ge" in bounds and "le" in bounds:
        return f"{text}, {bounds['ge']:,} to {bounds['le']:,}"
    limits = [f"{sign} {bounds[key]:,}" for key, sign in
              (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if key in bounds]
    if "min_length" in bounds or "max_length" in bounds:
        limits.append(f"{bounds.get('min_length', 0)} to {bounds.get('max_length')} characters")
    if "pattern" in bounds:
        limits.append(f"matching `{bounds['pattern']}`")
    return ", ".join([text, *limits])


def _default_text(field: FieldInfo) -> str:
    value = field.default
    if value is None:
        return "unset"
    if value in ("", []):
        return "empty"
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    elif isinstance(value, float):
        value = f"{value:g}"
    return f"`{value}`"


def settings_table() -> str:
    """The Markdown table of every setting: variable, type, default, description."""
    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        cells = (f"`{ENV_PREFIX}{name.upper()}`", _type_text(field), _default_text(field),
                 (field.description or "").replace("|", "\\|"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def with_generated(page: str, begin_line: str, end_line: str, text: str) -> str:
    """``page`` with ``text`` between the line ``begin_line`` and ``end_line`` (a generated
    block of a documentation page); ValueError when the page has no such block."""
    head, begin, rest = page.partition(begin_line + "\n")
    _, end, tail = rest.partition(end_line)
    if not begin or not end:
        raise ValueError(f"the page has no {begin_line!r} ... {end_line!r} block")
    return head + begin + text + end + tail


def with_settings_table(page: str) -> str:
    """``page`` with the text between :data:`TABLE_BEGIN` and :data:`TABLE_END` replaced
    by :func:`settings_table`."""
    return with_generated(page, TABLE_BEGIN, TABLE_END, settings_table())


def main(argv: list[str]) -> int:
    """``python -m platereg.settings --markdown [FILE]``: print the settings table, or
    rewrite it in FILE (docs/configuration.md)."""
    if not argv or argv[0] != "--markdown" or len(argv) > 2:
        print("usage: python -m platereg.settings --markdown [FILE]", file=sys.stderr)
        return 2
    if len(argv) == 1:
        sys.stdout.write(settings_table())
        return 0
    path = Path(argv[1])
    path.write_text(with_settings_table(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
