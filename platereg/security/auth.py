"""Bearer API keys for both HTTP APIs: authentication, roles and rate limits.

* Key ids: each process keeps the list of every key id (revoked ones too),
  reloaded at most every ``refresh_every`` seconds, and only when it meets an
  id it does not know. An id not in the list costs no database query: it may
  be a key created since the last reload, so a few such ids per second
  (``unknown_lookups_per_second``, a process-wide budget) are looked up one
  by one; beyond that budget they are refused at once. A flood of made-up
  keys therefore costs at most one reload per ``refresh_every`` plus the
  budget, whatever its size, and holds no memory per made-up id.
* Verified keys are cached per process for ``CACHE_TTL`` seconds. A stale
  entry is served while one background task refreshes it (no lock convoy on
  a busy key); past ``MAX_STALE`` seconds callers wait for the refresh, so a
  revocation reaches every process within 5 s (the contract's figure).
  In-flight refreshes are kept only while they run (the map never grows).
* Rate limits are token buckets per key and per process (with N API
  processes a key may get up to N times its limit; see the README), in
  units: a request costs one unit per plate or owner record it returns, at
  least one. :func:`authenticate_request` takes the first unit; the route
  calls :func:`charge` with the number of records it returns. A bucket may
  go into debt (a batch of 1,000 costs 1,000 units), and the key's next
  requests get 429 until it has refilled. The rate is the key's own, else
  its role's default, else ``default_rate``; the bucket holds the larger of
  ``burst`` and one second of the rate.
* Every answer to an authenticated request carries ``RateLimit-Limit``,
  ``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds until the bucket
  is full again), added by :class:`RateLimitHeadersMiddleware` from the
  bucket as it stands when the answer starts; 429s keep ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from platereg.metrics import AUTH_FAILURES
from platereg.security.keys import InvalidKey, secret_matches, split_key

CACHE_TTL = 2.0
MAX_STALE = 4.5
MAX_CACHED_KEYS = 100_000
AUTH_FAILURE_REASONS = ("missing", "unknown_key", "revoked", "expired_token", "forbidden")
#: ``platereg_auth_failures_total`` by reason (401s and 403s; ``expired_token`` is for
#: owner tokens: see :func:`count_failure`).
_FAILURES = {reason: AUTH_FAILURES.labels(reason) for reason in AUTH_FAILURE_REASONS}
_STATE_KEY = "ratelimit"


def count_failure(reason: str) -> None:
    """Count one refused request in ``platereg_auth_failures_total{reason}``."""
    _FAILURES[reason].inc()


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
    rate: float
    capacity: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self) -> float:
        """Seconds until the bucket holds one unit (0: it does)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def headers(self) -> dict[str, str]:
        self.refill(time.monotonic())
        reset = math.ceil((self.capacity - self.tokens) / self.rate)
        return {"RateLimit-Limit": str(int(self.capacity)),
                "RateLimit-Remaining": str(max(0, math.floor(self.tokens))),
                "RateLimit-Reset": str(max(0, reset))}


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, default_rate: float, burst: int, *,
                 role_rates: Mapping[str, float] | None = None, refresh_every: float = 1.0,
                 unknown_lookups_per_second: float = 5.0) -> None:
        self.pool = pool
        self.default_rate = default_rate
        self.burst = burst
        self.role_rates = dict(role_rates or {})
        self.refresh_every = refresh_every
        self._cache: dict[str, _CachedKey] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._inflight: dict[str, asyncio.Task[_CachedKey]] = {}
        self._ids: frozenset[str] = frozenset()
        self._ids_loaded = -math.inf
        self._ids_task: asyncio.Task[None] | None = None
        # Room for a few keys created together (a deployment's keys, a test's roles).
        room = max(10.0, 2 * unknown_lookups_per_second)
        self._unknown_budget = _Bucket(room, time.monotonic(), unknown_lookups_per_second,
                                       room)

    @classmethod
    def from_settings(cls, pool: asyncpg.Pool, settings: Any) -> Authenticator:
        return cls(pool, settings.rate_limit_per_second, settings.rate_limit_burst,
                   role_rates={"enforcement": settings.rate_limit_enforcement_per_second,
                               "portal": settings.rate_limit_portal_per_second,
                               "operator": settings.rate_limit_operator_per_second},
                   refresh_every=settings.auth_key_refresh_seconds,
                   unknown_lookups_per_second=settings.auth_unknown_key_lookups_per_second)

    # ------------------------------------------------------------------ key ids

    async def _known(self, key_id: str) -> bool:
        """Whether ``key_id`` may exist, without a query per made-up id."""
        if key_id in self._ids or key_id in self._cache:
            return True
        if time.monotonic() - self._ids_loaded >= self.refresh_every:
            if self._ids_task is None:
                self._ids_task = asyncio.create_task(self._load_ids())
            await asyncio.shield(self._ids_task)
            if key_id in self._ids:
                return True
        budget = self._unknown_budget
        budget.refill(time.monotonic())
        if budget.tokens < 1:
            return False
        budget.tokens -= 1
        return (await self._key(key_id)).secret_hash != ""

    async def _load_ids(self) -> None:
        try:
            started = time.monotonic()
            rows = await self.pool.fetch("SELECT key_id FROM api_keys")
            self._ids = frozenset(r["key_id"] for r in rows)
            self._ids_loaded = started
        finally:
            self._ids_task = None

    # ------------------------------------------------------------------ key cache

    async def _key(self, key_id: str) -> _CachedKey:
        cached = self._cache.get(key_id)
        age = math.inf if cached is None else time.monotonic() - cached.fetched
        if age < CACHE_TTL:
            return cached  # type: ignore[return-value]
        task = self._inflight.get(key_id)
        if task is None:
            task = self._inflight[key_id] = asyncio.create_task(self._fetch(key_id))
            task.add_done_callback(lambda t: self._fetched(key_id, t))
        if cached is not None and age < MAX_STALE:
            return cached  # serve stale while the one task refreshes
        return await asyncio.shield(task)

    def _fetched(self, key_id: str, task: asyncio.Task[_CachedKey]) -> None:
        self._inflight.pop(key_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failed background refresh is not an error here

    async def _fetch(self, key_id: str) -> _CachedKey:
        row = await self.pool.fetchrow(
            "SELECT role, secret_hash, rate_limit, revoked_at, sources FROM api_keys"
            " WHERE key_id = $1",
            key_id,
        )
        now = time.monotonic()
        if row is None:
            cached = _CachedKey(None, "", 0.0, now)
        elif row["revoked_at"] is not None:
            cached = _CachedKey(None, row["secret_hash"], 0.0, now, revoked=True)
        else:
            cached = _CachedKey(row["role"], row["secret_hash"],
                                row["rate_limit"] or self.role_rates.get(row["role"],
                                                                         self.default_rate),
                                now, sources=tuple(row["sources"] or ()))
        if row is None:
            self._cache.pop(key_id, None)
            return cached
        if len(self._cache) >= MAX_CACHED_KEYS and key_id not in self._cache:
            self._cache.clear()
        self._cache[key_id] = cached
        return cached

    # ------------------------------------------------------------------ buckets

    def bucket(self, key_id: str) -> _Bucket | None:
        return self._buckets.get(key_id)

    def _bucket_for(self, key_id: str, rate: float) -> _Bucket:
        now = time.monotonic()
        capacity = max(float(self.burst), rate)
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= MAX_CACHED_KEYS:
                self._buckets.clear()
            bucket = self._buckets[key_id] = _Bucket(capacity, now, rate, capacity)
        elif bucket.rate != rate:  # the key's limit changed
            bucket.rate, bucket.capacity = rate, capacity
        bucket.refill(now)
        return bucket

    def charge(self, key_id: str, units: float) -> None:
        """Take ``units`` more from the key's bucket (it may go into debt)."""
        bucket = self._buckets.get(key_id)
        if bucket is not None and units > 0:
            bucket.refill(time.monotonic())
            bucket.tokens -= units

    def _empty_bucket_wait(self, key_id: str, secret: str, roles: frozenset[str]) -> float:
        """Seconds until a unit, for a key known (even stale), verified and allowed, else 0.

        Checked before the key is (re)fetched, so that a client over its limit gets
        its 429 at once instead of queueing for the keys table behind a busy pool.
        A revoked key is refused here too (429 rather than 401) until its bucket refills.
        """
        cached = self._cache.get(key_id)
        bucket = self._buckets.get(key_id)
        if (cached is None or cached.role not in roles or bucket is None
                or not secret_matches(secret, cached.secret_hash)):
            return 0.0
        bucket.refill(time.monotonic())
        return bucket.wait()

    # ------------------------------------------------------------------ the check

    async def authenticate(self, authorization: str | None, roles: frozenset[str]) -> Principal:
        """The caller's key, having taken one unit; AuthError (401, 403, 429) otherwise."""
        key_id, secret = _parse(authorization)
        wait = self._empty_bucket_wait(key_id, secret, roles)
        if wait > 0:
            raise _too_many(key_id, wait)
        if not await self._known(key_id):
            _FAILURES["unknown_key"].inc()
            raise _invalid()
        cached = await self._key(key_id)
        if cached.role is None or not secret_matches(secret, cached.secret_hash):
            revoked = cached.revoked and secret_matches(secret, cached.secret_hash)
            _FAILURES["revoked" if revoked else "unknown_key"].inc()
            raise _invalid()
        bucket = self._bucket_for(key_id, cached.rate)
        if cached.role not in roles:
            _FAILURES["forbidden"].inc()
            raise AuthError(403, "Forbidden", f"the {cached.role} role may not use this route",
                            key_id=key_id)
        wait = bucket.wait()
        if wait > 0:
            raise _too_many(key_id, wait)
        bucket.tokens -= 1
        return Principal(key_id=key_id, role=cached.role, sources=cached.sources)


def _parse(authorization: str | None) -> tuple[str, str]:
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
        return split_key(token.strip())
    except InvalidKey:
        _FAILURES["unknown_key"].inc()
        raise _invalid() from None


def _invalid() -> AuthError:
    return AuthError(401, "Unauthorized", "invalid or revoked API key",
                     {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _too_many(key_id: str, wait: float) -> AuthError:
    return AuthError(429, "Too Many Requests", "rate limit exceeded for this API key",
                     {"Retry-After": str(max(1, math.ceil(wait)))}, key_id=key_id)


async def authenticate_request(request: Request, roles: frozenset[str]) -> Principal:
    """Authenticate ``request`` (one unit taken) and mark it for the RateLimit headers."""
    auth: Authenticator = request.app.state.authenticator
    # ``request.state``'s attributes are the scope's "state" entries: written there
    # directly, as the access line reads its key id (``platereg.http``)
    state = request.scope.setdefault("state", {})
    try:
        principal = await auth.authenticate(request.headers.get("authorization"), roles)
    except AuthError as exc:
        if exc.key_id is not None:  # a verified key: 403 and 429 carry the headers too
            state["key_id"], state[_STATE_KEY] = exc.key_id, (auth, exc.key_id)
        raise
    state["key_id"], state[_STATE_KEY] = principal.key_id, (auth, principal.key_id)
    return principal


def limit_subject(request: Request, subject: str, rate: float) -> float:
    """Rate-limit a request authenticated by other means (an owner token) under
    ``subject``, in the same units and with the same ``RateLimit-*`` headers as a key:
    takes one unit and marks the request; returns 0, or the seconds to wait (refused)."""
    auth: Authenticator = request.app.state.authenticator
    bucket = auth._bucket_for(subject, rate)
    request.scope["state"][_STATE_KEY] = (auth, subject)
    wait = bucket.wait()
    if wait == 0:
        bucket.tokens -= 1
    return wait


def charge(request: Request, units: int) -> None:
    """The request returns ``units`` plates or owner records: its cost is ``max(1, units)``
    (the first unit was taken when it was authenticated). Call once per request."""
    marked = request.scope.get("state", {}).get(_STATE_KEY)
    if marked is not None and units > 1:
        auth, key_id = marked
        auth.charge(key_id, units - 1)


def require(*roles: str):
    """FastAPI dependency: the caller's Principal, or 401/403/429 as a problem response."""
    allowed = frozenset(roles)

    async def dependency(request: Request) -> Principal:
        return await authenticate_request(request, allowed)

    dependency.__name__ = f"require_{'_'.join(sorted(allowed))}"
    return dependency


class RateLimitHeadersMiddleware:
    """Adds ``RateLimit-Limit``/``-Remaining``/``-Reset`` to every answer of a request
    that :func:`authenticate_request` marked (the bucket as the answer starts)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                marked = (scope.get("state") or {}).get(_STATE_KEY)
                bucket = marked[0].bucket(marked[1]) if marked is not None else None
                if bucket is not None:
                    headers = list(message.get("headers") or [])
                    headers.extend((k.lower().encode(), v.encode())
                                   for k, v in bucket.headers().items())
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
