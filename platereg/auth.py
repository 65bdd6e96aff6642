"""Bearer API keys for both HTTP APIs: authentication, roles and rate limits.

Verified keys are cached per process for ``CACHE_TTL`` seconds, so a
revocation reaches every process within that time (the contract asks for 5 s)
while a busy lookup path does not query the keys table on every request.
Rate limits are token buckets per key and per process: with N API processes a
key may get up to N times its limit (documented in the README).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import asyncpg
from fastapi import Request

from platereg.keys import InvalidKey, secret_matches, split_key
from platereg.metrics import AUTH_FAILURES

CACHE_TTL = 2.0
#: ``platereg_auth_failures_total`` by reason (401s and 403s; ``expired_token`` is for
#: owner tokens).
_FAILURES = {reason: AUTH_FAILURES.labels(reason) for reason in
             ("missing", "unknown_key", "revoked", "forbidden")}


class AuthError(Exception):
    """A refused request; ``key_id`` is set once the key is verified (403, 429)."""

    def __init__(self, status: int, title: str, detail: str,
                 headers: dict[str, str] | None = None, key_id: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.key_id = key_id


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str
    #: Source prefixes an ingest key may publish for (empty for the other roles).
    sources: tuple[str, ...] = ()


@dataclass
class _CachedKey:
    role: str | None            # None: no such key or revoked
    secret_hash: str
    rate: float
    fetched: float
    revoked: bool = False
    sources: tuple[str, ...] = ()


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class Authenticator:
    pool: asyncpg.Pool
    default_rate: float
    burst: int
    _cache: dict[str, _CachedKey] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def _key(self, key_id: str) -> _CachedKey:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached.fetched < CACHE_TTL:
            return cached
        lock = self._locks.setdefault(key_id, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key_id)
            if cached is not None and time.monotonic() - cached.fetched < CACHE_TTL:
                return cached
            row = await self.pool.fetchrow(
                "SELECT role, secret_hash, rate_limit, revoked_at, sources FROM api_keys"
                " WHERE key_id = $1",
                key_id,
            )
            if row is None:
                cached = _CachedKey(None, "", 0.0, time.monotonic())
            elif row["revoked_at"] is not None:
                cached = _CachedKey(None, row["secret_hash"], 0.0, time.monotonic(),
                                    revoked=True)
            else:
                cached = _CachedKey(row["role"], row["secret_hash"],
                                    row["rate_limit"] or self.default_rate, time.monotonic(),
                                    sources=tuple(row["sources"] or ()))
            if len(self._cache) > 100_000:  # bound memory against key-id spraying
                self._cache.clear()
            self._cache[key_id] = cached
            return cached

    def _empty_bucket_wait(self, key_id: str, secret: str, roles: frozenset[str]) -> float:
        """Seconds until a token, for a key known (even stale), verified and allowed, else 0.

        Checked before the key is (re)fetched, so that a client over its limit gets
        its 429 at once instead of queueing for the keys table behind a busy pool.
        A revoked key is refused here too (429 rather than 401) until its bucket refills.
        """
        cached = self._cache.get(key_id)
        bucket = self._buckets.get(key_id)
        if (cached is None or cached.role not in roles or bucket is None
                or not secret_matches(secret, cached.secret_hash)):
            return 0.0
        tokens = min(max(float(self.burst), cached.rate),
                     bucket.tokens + (time.monotonic() - bucket.updated) * cached.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / cached.rate

    def _take(self, key_id: str, rate: float) -> float:
        """Take a token; returns 0 if allowed, else seconds until one is available."""
        now = time.monotonic()
        capacity = max(float(self.burst), rate)
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate

    async def authenticate(self, authorization: str | None, roles: frozenset[str]) -> Principal:
        if not authorization:
            _FAILURES["missing"].inc()
            raise AuthError(401, "Unauthorized", "an API key is required (Authorization: Bearer)",
                            {"WWW-Authenticate": "Bearer"})
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            _FAILURES["missing"].inc()
            raise AuthError(401, "Unauthorized", "use Authorization: Bearer <api key>",
                            {"WWW-Authenticate": "Bearer"})
        try:
            key_id, secret = split_key(token.strip())
        except InvalidKey:
            _FAILURES["unknown_key"].inc()
            raise AuthError(401, "Unauthorized", "invalid API key",
                            {"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        wait = self._empty_bucket_wait(key_id, secret, roles)
        if wait > 0:
            raise _too_many(key_id, wait)
        cached = await self._key(key_id)
        if cached.role is None or not secret_matches(secret, cached.secret_hash):
            revoked = cached.revoked and secret_matches(secret, cached.secret_hash)
            _FAILURES["revoked" if revoked else "unknown_key"].inc()
            raise AuthError(401, "Unauthorized", "invalid or revoked API key",
                            {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if cached.role not in roles:
            _FAILURES["forbidden"].inc()
            raise AuthError(403, "Forbidden", f"the {cached.role} role may not use this route",
                            key_id=key_id)
        wait = self._take(key_id, cached.rate)
        if wait > 0:
            raise _too_many(key_id, wait)
        return Principal(key_id=key_id, role=cached.role, sources=cached.sources)


def _too_many(key_id: str, wait: float) -> AuthError:
    return AuthError(429, "Too Many Requests", "rate limit exceeded for this API key",
                     {"Retry-After": str(max(1, math.ceil(wait)))}, key_id=key_id)


def require(*roles: str):
    """FastAPI dependency: the caller's Principal, or 401/403/429 as a problem response."""
    allowed = frozenset(roles)

    async def dependency(request: Request) -> Principal:
        auth: Authenticator = request.app.state.authenticator
        principal = await auth.authenticate(request.headers.get("authorization"), allowed)
        request.state.key_id = principal.key_id
        return principal

    dependency.__name__ = f"require_{'_'.join(sorted(allowed))}"
    return dependency
