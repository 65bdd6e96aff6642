"""Delivery channels: e-mail (SMTP), SMS and plate display gateways, webhooks.

Each ``send`` makes one attempt and returns a :class:`Result`: ``sent``,
``retry`` (network errors, timeouts, 5xx, 429 with its ``Retry-After``) or
``failed`` (any other 4xx, a refused recipient). Every HTTP request carries
``Idempotency-Key: <notice_id>:<channel>``, so a receiver can drop repeats;
webhooks are signed ``X-Signature: t=<unix>,v1=<hex HMAC-SHA256("<t>.<body>")>``
with each configured secret. Errors are reported by type and status only.

HTTP goes over one aiohttp session per dispatcher, keeping a connection alive
for each delivery that may be in flight: at this concurrency it costs much less
CPU a request than httpx's connection pool, which scans every pooled connection
with system calls for each request (see docs/benchmarks.md).

Webhooks are URLs an owner's preferences hold, so they must not reach the registry's own
network: unless ``PLATEREG_WEBHOOK_ALLOW_PRIVATE`` is set, a webhook whose host is, or
resolves to, a loopback, private, link-local, cloud metadata or otherwise non-public
address fails at once (no retry; the next channel takes over). Every address the name
resolves to is checked, by the resolver of the webhooks' own connector, so the address
connected to is one that was checked (a DNS answer cannot change in between); an IP
address in the URL is checked before. Redirects are never followed (a 3xx answer fails
the attempt), so a public webhook cannot send the dispatcher elsewhere.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiosmtplib
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult

from notifications.render import Texts
from platereg.settings import Settings

#: The longest Retry-After honoured (a gateway asking for more is retried then).
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True, slots=True)
class Result:
    outcome: str                       # sent, retry, failed
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a channel needs to deliver one notice."""

    notice_id: str
    channel: str
    message: dict[str, Any]            # the notice message (contract section 4)
    recipient: dict[str, Any]
    texts: Texts
    webhook_url: str | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.notice_id}:{self.channel}"


def sign(body: bytes, secrets: list[str], t: int | None = None) -> str:
    """The ``X-Signature`` value: one ``v1`` per secret."""
    t = int(time.time()) if t is None else t
    sigs = [hmac.new(s.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
            for s in secrets]
    return ",".join([f"t={t}", *(f"v1={s}" for s in sigs)])


def verify(header: str, body: bytes, secret: str, *, now: float | None = None,
           tolerance: float = 300.0) -> bool:
    """What a receiver does: a fresh ``t`` and one ``v1`` matching its secret."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    ts = [v for k, v in parts if k == "t"]
    if len(ts) != 1 or not ts[0].isdigit():
        return False
    t = int(ts[0])
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v, expected) for k, v in parts)


#: Cloud instance metadata services (AWS, GCP, Azure, OpenStack; AWS's IPv6; Alibaba).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200"))


class AddressRefused(OSError):
    """A webhook's host is, or resolves to, an address the dispatcher may not call."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook address refused: {reason}")
        self.reason = reason


def refused_address(address: str) -> str | None:
    """Why the dispatcher may not call ``address`` (an IP address), or None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])     # an IPv6 zone is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private:
        return "private"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "not public"
    return None


def refused_url(url: str) -> str | None:
    """Why the webhook ``url`` may not be called before any name is resolved (its scheme,
    or an IP address as its host), or None."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "malformed URL"
    if parts.scheme not in ("http", "https") or not host:
        return "not an http(s) URL"
    try:
        return refused_address(host)
    except ValueError:
        return None                                          # a name: the resolver checks it


class PublicResolver(AbstractResolver):
    """aiohttp resolver that refuses (``AddressRefused``) a name any of whose addresses
    :func:`refused_address` refuses."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner or aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        infos = await self.inner.resolve(host, port, family)
        for info in infos:
            reason = refused_address(info["host"])
            if reason is not None:
                raise AddressRefused(reason)
        return infos

    async def close(self) -> None:
        await self.inner.close()


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (a number or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    delta = when.timestamp() - (time.time() if now is None else now)
    return min(max(delta, 0.0), MAX_RETRY_AFTER)


def classify_response(status_code: int, retry_after: str | None = None) -> Result:
    """An HTTP answer as an outcome: 2xx sent, 429 and 5xx retried, other codes failed."""
    code = status_code
    if 200 <= code < 300:
        return Result("sent", code)
    if code == 429 or code >= 500:
        return Result("retry", code, f"HTTP {code}", retry_after_seconds(retry_after))
    return Result("failed", code, f"HTTP {code}")


async def post(session: aiohttp.ClientSession, url: str, body: bytes,
               headers: dict[str, str]) -> Result:
    """One POST; network errors and timeouts are a retry (named like httpx's)."""
    try:
        async with session.post(url, data=body, allow_redirects=False, headers={
                "Content-Type": "application/json", **headers}) as response:
            await response.read()
            return classify_response(response.status, response.headers.get("Retry-After"))
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressRefused):      # for good: no retry
            return Result("failed", None, str(exc.os_error))
        return Result("retry", None, f"network: {type(exc).__name__}")
    except aiohttp.ConnectionTimeoutError:
        return Result("retry", None, "timeout: ConnectTimeout")
    except TimeoutError:
        return Result("retry", None, "timeout: ReadTimeout")
    except (aiohttp.ClientError, OSError) as exc:
        return Result("retry", None, f"network: {type(exc).__name__}")


class Channels:
    """The senders, with one HTTP client; ``send`` picks by channel name.

    The session (made on first use, in the running loop) keeps a connection
    alive for each delivery that may be in flight (``PLATEREG_NOTICE_CONCURRENCY``),
    so a busy receiver is not reconnected to for each request and no request
    waits for a pooled connection. Connecting and each read are bounded by
    ``PLATEREG_NOTICE_HTTP_TIMEOUT_SECONDS``. Webhooks have a session of their own, whose
    resolver refuses non-public addresses (unless ``PLATEREG_WEBHOOK_ALLOW_PRIVATE``);
    the gateways the operator configures (SMS, plate display) may be on a private network.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._secrets = [s.get_secret_value() for s in settings.notice_webhook_secrets]
        self.guarded = not settings.webhook_allow_private

    def _session(self, name: str, resolver: AbstractResolver | None) -> aiohttp.ClientSession:
        if name not in self._sessions:
            t = self.settings.notice_http_timeout_seconds
            self._sessions[name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.settings.notice_concurrency,
                                               resolver=resolver),
                timeout=aiohttp.ClientTimeout(total=None, connect=t, sock_read=t))
        return self._sessions[name]

    @property
    def session(self) -> aiohttp.ClientSession:
        """The gateways' session."""
        return self._session("gateways", None)

    @property
    def webhook_session(self) -> aiohttp.ClientSession:
        """The webhooks' session: every address checked when guarded."""
        if not self.guarded:
            return self.session
        return self._session("webhooks", PublicResolver())

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()

    async def send(self, d: Delivery) -> Result:
        if d.channel == "email":
            return await self.email(d)
        if d.channel == "sms":
            return await self.http(self.settings.sms_gateway_url, d, {
                "to": d.recipient.get("phone"), "message": d.texts.sms})
        if d.channel == "plate_display":
            return await self.http(self.settings.plate_display_url, d, {
                "device_id": d.recipient.get("device_id"), "message": d.texts.display})
        if d.channel == "webhook":
            return await self.webhook(d)
        return Result("failed", None, f"no sender for channel {d.channel}")

    async def http(self, url: str | None, d: Delivery, payload: dict) -> Result:
        if not url:
            return Result("failed", None, f"{d.channel} gateway not configured")
        return await post(self.session, url, orjson.dumps(payload),
                          {"Idempotency-Key": d.idempotency_key})

    async def webhook(self, d: Delivery) -> Result:
        if not d.webhook_url:
            return Result("failed", None, "no webhook URL")
        if not self._secrets:
            return Result("failed", None, "no webhook secret configured")
        if self.guarded and (reason := refused_url(d.webhook_url)) is not None:
            return Result("failed", None, f"webhook address refused: {reason}")
        body = orjson.dumps(d.message)
        return await post(self.webhook_session, d.webhook_url, body, {
            "Idempotency-Key": d.idempotency_key, "X-Signature": sign(body, self._secrets)})

    def email_message(self, d: Delivery) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.settings.notice_from
        msg["To"] = email.utils.formataddr((d.recipient.get("name") or "",
                                            d.recipient.get("email") or ""))
        msg["Subject"] = d.texts.subject
        domain = self.settings.notice_from.rsplit("@", 1)[-1].strip("> ") or "platereg"
        msg["Message-ID"] = f"<{d.notice_id}.{d.channel}@{domain}>"
        msg["Date"] = email.utils.formatdate(localtime=False)
        msg["Content-Language"] = d.message.get("language", "en")
        msg.set_content(d.texts.text)
        msg.add_alternative(d.texts.html, subtype="html")
        return msg

    async def email(self, d: Delivery) -> Result:
        if not d.recipient.get("email"):
            return Result("failed", None, "no e-mail address")
        s = self.settings
        try:
            await aiosmtplib.send(
                self.email_message(d), hostname=s.smtp_host, port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                use_tls=s.smtp_tls == "tls", start_tls=s.smtp_tls == "starttls",
                timeout=s.notice_http_timeout_seconds)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if all(c >= 500 for c in codes):
                return Result("failed", codes[0] if codes else None, "recipient refused")
            return Result("retry", codes[0] if codes else None, "recipient deferred")
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                return Result("failed", exc.code, f"SMTP {exc.code}")
            return Result("retry", exc.code, f"SMTP {exc.code}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Result("retry", None, f"network: {type(exc).__name__}")
        return Result("sent", 250)
