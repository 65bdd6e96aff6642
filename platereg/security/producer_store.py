"""The registered producers of ``plates.events`` (``producers``, ``producer_secrets``,
migration 0014) and the registry consumer's reloading cache of them.

A producer has a name, the source prefixes it may speak for, and one secret (two during
a rotation: :func:`rotate` adds one, :func:`retire_secret` keeps only the newest).
:func:`revoke` ends it for good: its secrets are deleted and every message naming it is
refused. Every change bumps ``producers_version`` (a trigger); :class:`ProducerCache`
re-reads the rows only when that version moved, inside the consumer's batch
transaction, as :class:`platereg.security.policy_store.PolicyCache` does for the source
policy. So a revocation or a retired secret applies from the consumer's next batch on.

The secrets are stored as they are (a signature is checked with the key itself); only
the consumer's and the operators' database roles can read these tables (migration 0014).
Nothing here logs or returns a secret except :func:`add` and :func:`rotate`, whose
caller prints it once.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg

from schemas.signing import (
    ProducerError,
    check_name,
    check_prefixes,
    check_secret,
    keyed,
    new_secret,
)


@dataclass(frozen=True, slots=True)
class Producer:
    """A producer as the consumer checks it: HMAC keys are the secrets' UTF-8 bytes,
    newest first; ``macs`` the same keyed once (:func:`schemas.signing.keyed`)."""

    name: str
    prefixes: tuple[str, ...]
    keys: tuple[bytes, ...]
    revoked: bool = False
    macs: tuple[hmac.HMAC, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "macs", tuple(keyed(k) for k in self.keys))


@dataclass(frozen=True, slots=True)
class Producers:
    """Every registered producer by name, as of ``version`` of the table."""

    by_name: Mapping[str, Producer] = field(default_factory=dict)
    version: int = 0


@dataclass(frozen=True, slots=True)
class ProducerInfo:
    """What ``platereg sources producer list`` shows: never a secret."""

    name: str
    prefixes: tuple[str, ...]
    secrets: int
    created_at: dt.datetime
    revoked_at: dt.datetime | None


async def producers_version(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval("SELECT version FROM producers_version WHERE id = 1"))


async def load_producers(conn: asyncpg.Connection, version: int) -> Producers:
    rows = await conn.fetch(
        """SELECT p.name, p.prefixes, p.revoked_at IS NOT NULL AS revoked,
                  coalesce(array_agg(s.secret ORDER BY s.serial DESC)
                           FILTER (WHERE s.secret IS NOT NULL), '{}') AS secrets
           FROM producers p LEFT JOIN producer_secrets s ON s.producer = p.name
           GROUP BY p.name""")
    return Producers({r["name"]: Producer(r["name"], tuple(r["prefixes"]),
                                          tuple(s.encode() for s in r["secrets"]),
                                          r["revoked"]) for r in rows}, version)


class ProducerCache:
    """The producers, re-read when the stored version moved."""

    def __init__(self) -> None:
        self.producers: Producers | None = None

    async def current(self, conn: asyncpg.Connection) -> Producers:
        """The producers as of ``conn``'s transaction (reloaded if the version moved)."""
        version = await producers_version(conn)
        if self.producers is None or self.producers.version != version:
            self.producers = await load_producers(conn, version)
        return self.producers


async def add(conn: asyncpg.Connection, name: str, prefixes: Iterable[str],
              secret: str | None = None) -> str:
    """Register a producer; returns its secret (new unless given). :class:`ProducerError`
    when the name is taken (revoked producers keep theirs) or an argument is invalid."""
    name, chosen = check_name(name), check_prefixes(prefixes)
    secret = check_secret(secret) if secret is not None else new_secret()
    async with conn.transaction():
        done = await conn.fetchval(
            "INSERT INTO producers (name, prefixes) VALUES ($1, $2)"
            " ON CONFLICT (name) DO NOTHING RETURNING true", name, list(chosen))
        if not done:
            raise ProducerError(f"a producer named {name!r} exists (names are never reused)")
        await conn.execute("INSERT INTO producer_secrets (producer, serial, secret)"
                           " VALUES ($1, 1, $2)", name, secret)
    return secret


async def add_or_keep(conn: asyncpg.Connection, name: str, prefixes: Iterable[str],
                      secret: str) -> bool:
    """Register a producer with a secret generated elsewhere (a deployment's secret
    store), or do nothing if it is registered with exactly these prefixes and holds this
    secret; returns whether it was added. :class:`ProducerError` otherwise (rotate and
    retire to change a secret)."""
    chosen = check_prefixes(prefixes)
    row = await conn.fetchrow(
        "SELECT revoked_at IS NOT NULL AS revoked, prefixes, EXISTS (SELECT 1 FROM"
        " producer_secrets s WHERE s.producer = p.name AND s.secret = $2) AS known"
        " FROM producers p WHERE p.name = $1", name, check_secret(secret))
    if row is None:
        await add(conn, name, chosen, secret)
        return True
    if row["revoked"] or not row["known"] or tuple(sorted(row["prefixes"])) != chosen:
        raise ProducerError(f"a producer named {name!r} exists with other prefixes or "
                            "secrets, or is revoked")
    return False


async def _active(conn: asyncpg.Connection, name: str) -> None:
    """Lock the producer's row; :class:`ProducerError` if there is no active one."""
    revoked = await conn.fetchval(
        "SELECT revoked_at IS NOT NULL FROM producers WHERE name = $1 FOR UPDATE", name)
    if revoked is None:
        raise ProducerError(f"no producer named {name!r} (see `platereg sources producer list`)")
    if revoked:
        raise ProducerError(f"producer {name!r} is revoked")


async def rotate(conn: asyncpg.Connection, name: str, secret: str | None = None) -> str:
    """Add a new secret; the older one stays valid until :func:`retire_secret`. Returns
    the new secret. At most two: retire the old one before rotating again."""
    secret = check_secret(secret) if secret is not None else new_secret()
    async with conn.transaction():
        await _active(conn, name)
        count, top = await conn.fetchrow(
            "SELECT count(*), coalesce(max(serial), 0) FROM producer_secrets"
            " WHERE producer = $1", name)
        if count >= 2:
            raise ProducerError(f"producer {name!r} already has two secrets; retire the old "
                                "one first (`platereg sources producer retire-secret`)")
        await conn.execute("INSERT INTO producer_secrets (producer, serial, secret)"
                           " VALUES ($1, $2, $3)", name, top + 1, secret)
    return secret


async def retire_secret(conn: asyncpg.Connection, name: str) -> int:
    """Delete every secret of the producer but the newest; returns how many."""
    async with conn.transaction():
        await _active(conn, name)
        status = await conn.execute(
            "DELETE FROM producer_secrets WHERE producer = $1 AND serial <"
            " (SELECT max(serial) FROM producer_secrets WHERE producer = $1)", name)
    return int(status.rsplit(" ", 1)[1])


async def revoke(conn: asyncpg.Connection, name: str) -> None:
    """End the producer: every message naming it is refused; its secrets are deleted."""
    async with conn.transaction():
        await _active(conn, name)
        await conn.execute("UPDATE producers SET revoked_at = now() WHERE name = $1", name)
        await conn.execute("DELETE FROM producer_secrets WHERE producer = $1", name)


async def list_producers(conn: asyncpg.Connection) -> list[ProducerInfo]:
    rows = await conn.fetch(
        """SELECT p.name, p.prefixes, p.created_at, p.revoked_at,
                  (SELECT count(*) FROM producer_secrets s WHERE s.producer = p.name) AS n
           FROM producers p ORDER BY p.name""")
    return [ProducerInfo(r["name"], tuple(r["prefixes"]), r["n"], r["created_at"],
                         r["revoked_at"]) for r in rows]


async def ensure(conn: asyncpg.Connection, name: str, prefixes: Iterable[str],
                 secret: str) -> None:
    """Register ``name`` with ``secret`` unless it is registered with it already (for
    ``platereg run``, whose development producers' secrets are kept in its data
    directory). A revoked producer stays revoked (:class:`ProducerError`)."""
    row = await conn.fetchrow(
        "SELECT revoked_at IS NOT NULL AS revoked, EXISTS (SELECT 1 FROM producer_secrets s"
        " WHERE s.producer = p.name AND s.secret = $2) AS known"
        " FROM producers p WHERE p.name = $1", name, secret)
    if row is None:
        await add(conn, name, prefixes, secret)
    elif row["revoked"]:
        raise ProducerError(f"producer {name!r} is revoked")
    elif not row["known"]:
        await retire_secret(conn, name)   # a fresh data directory: its secret replaces
        await rotate(conn, name, secret)  # the stored one (kept only until retired)
        await retire_secret(conn, name)
