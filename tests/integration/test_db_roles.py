"""Least privilege in PostgreSQL, on a real database: the grants the database holds are
exactly the table of ``platereg.security.roles``; each service's role, logged in, may do
its job and nothing more; the prestart sequence (roles, then migrate as a non-superuser
owner) works on a fresh database."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from api_helpers import insert_plate
from cli_support import PLATEREG

from platereg.db import create_pool, migrate
from platereg.security import keys, policy_store
from platereg.security.roles import ACTIONS, GRANTS, ROLES, ensure_roles, may
from registry.api.audit import insert_rows

pytestmark = pytest.mark.integration

GROUPS = {role.group: name for name, role in ROLES.items()}
#: Table privileges no role ever has (the owner's own).
NEVER = ("TRUNCATE", "REFERENCES", "TRIGGER")


def _as(dsn: str, user: str, password: str, database: str | None = None) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}",
                                     path=f"/{database}" if database else parts.path))


async def _drop_roles(admin_dsn: str, *users: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        for user in users:
            await conn.execute(f'DROP ROLE IF EXISTS "{user}"')
    finally:
        await conn.close()


async def grant_differences(conn: asyncpg.Connection) -> list[str]:
    """Every privilege of a group role on a table, column or sequence of this database that
    differs from :data:`GRANTS` ("role may X on t" / "role may not X on t"), and any
    privilege left to the old one-for-all services' group."""
    out = []
    tables = await conn.fetch(
        "SELECT r.rolname, c.relname, p, has_table_privilege(r.oid, c.oid, p) AS held"
        " FROM pg_roles r, pg_class c, unnest($1::text[]) AS p"
        " WHERE r.rolname = ANY($2) AND c.relnamespace = current_schema()::regnamespace"
        " AND c.relkind = 'r' AND c.relname NOT LIKE '%yoyo%'",
        [*ACTIONS, *NEVER], [*GROUPS, "platereg_service"])
    for group, table, action, held in tables:
        role = GROUPS.get(group)
        wanted = role is not None and any(
            p == action for p in GRANTS.get(table, {}).get(role, ()))
        if held != wanted:
            out.append(f"{group} may {'' if held else 'not '}{action} on {table}")
    columns = await conn.fetch(
        "SELECT r.rolname, c.relname, a.attname, p,"
        " has_column_privilege(r.oid, c.oid, a.attnum, p) AS held"
        " FROM pg_roles r, pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
        " AND a.attnum > 0 AND NOT a.attisdropped, unnest($1::text[]) AS p"
        " WHERE r.rolname = ANY($2) AND c.relnamespace = current_schema()::regnamespace"
        " AND c.relkind = 'r' AND c.relname NOT LIKE '%yoyo%'",
        ["SELECT", "INSERT", "UPDATE"], list(GROUPS))
    for group, table, column, action, held in columns:
        if held != may(table, GROUPS[group], action, column):
            out.append(f"{group} may {'' if held else 'not '}{action} ({column}) on {table}")
    sequences = await conn.fetch(
        "SELECT r.rolname, s.relname AS seq, t.relname, has_sequence_privilege(r.oid, s.oid,"
        " 'USAGE') AS held FROM pg_roles r, pg_class s"
        " JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')"
        " JOIN pg_class t ON t.oid = d.refobjid"
        " WHERE r.rolname = ANY($1) AND s.relkind = 'S'"
        " AND s.relnamespace = current_schema()::regnamespace", list(GROUPS))
    for group, seq, table, held in sequences:
        if held != may(table, GROUPS[group], "INSERT", "any column"):
            out.append(f"{group} may {'' if held else 'not '}use sequence {seq}")
    return sorted(out)


async def test_the_database_holds_exactly_the_grants_of_the_table(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await grant_differences(conn) == []
        # A grant too wide, or one missing, is found.
        await conn.execute("GRANT INSERT ON plates TO platereg_registry_api")
        await conn.execute("GRANT UPDATE (stolen) ON plates TO platereg_notices_scheduler")
        await conn.execute("REVOKE SELECT ON api_keys FROM platereg_ingest_api")
        await conn.execute("GRANT SELECT ON audit_log TO platereg_service")
        differences = await grant_differences(conn)
        assert "platereg_registry_api may INSERT on plates" in differences
        assert "platereg_notices_scheduler may UPDATE (stolen) on plates" in differences
        assert "platereg_ingest_api may not SELECT on api_keys" in differences
        assert "platereg_service may SELECT on audit_log" in differences
        # `platereg migrate` puts the table back, whatever was changed by hand.
        await asyncio.to_thread(migrate, database_url)
        assert await grant_differences(conn) == []
    finally:
        await conn.close()


@pytest.fixture
async def logins(database_url: str) -> AsyncIterator[dict[str, str]]:
    """A login role per database role, as `platereg roles` makes them: {role: URL}."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    urls = {name: _as(database_url, f"{prefix}_{name}", secrets.token_urlsafe(16))
            for name in ROLES}
    ensure_roles(database_url, urls)
    yield urls
    await _drop_roles(database_url, *(urlsplit(url).username or "" for url in urls.values()))


async def _refused(conn: asyncpg.Connection, statement: str, *args: object) -> None:
    async with conn.transaction():   # a savepoint when already in one
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement, *args)


#: What no service role may do, whoever it is.
EVERYONE_REFUSED = (
    "CREATE TABLE sneaky (id int)", "ALTER TABLE plates ADD COLUMN sneaky int",
    "TRUNCATE plates", "DELETE FROM _yoyo_migration", "UPDATE retention SET days = 1",
    "UPDATE audit_log SET result = 'x'", "TRUNCATE audit_log",
)
AUDIT_ROW = ("INSERT INTO audit_log (at, key_id, kind, jurisdiction, plate, purpose, result)"
             " VALUES (now(), 'k1', 'single', 'CA-ON', 'AUD1', 'testing', 'valid')")


async def _as_role(url: str) -> asyncpg.Connection:
    from platereg.db import connect

    conn = await connect(url)
    assert not await conn.fetchval("SELECT rolsuper OR rolcreaterole OR rolbypassrls"
                                   " FROM pg_roles WHERE rolname = current_user")
    for statement in EVERYONE_REFUSED:
        await _refused(conn, statement)
    return conn


async def test_the_consumer_writes_the_registry_and_nothing_of_keys_policy_or_audit(
        logins: dict[str, str]) -> None:
    conn = await _as_role(logins["consumer"])
    try:
        await insert_plate(conn, "CA-ON", "ROLE1")
        await conn.execute("UPDATE plates SET stolen = true WHERE plate = 'ROLE1'")
        await conn.execute("INSERT INTO plate_events (event_id, plate_key, type, source,"
                           " event_time, data, fingerprint) VALUES ('e1', 'CA-ON/ROLE1',"
                           " 'plate.renewed', '/registry/1', now(), '{}', 'fp')")
        assert await conn.fetchval("INSERT INTO status_changes (plate_key, view, flagged,"
                                   " was_flagged) VALUES ('CA-ON/ROLE1', '{}', true, false)"
                                   " RETURNING seq") >= 1
        dlq = await conn.fetchval("INSERT INTO dlq_messages (topic, partition, kafka_offset,"
                                  " value, reason) VALUES ('t', 0, 1, 'x', 'malformed_json')"
                                  " RETURNING id")
        await conn.execute("UPDATE dlq_messages SET published_at = now() WHERE id = $1", dlq)
        await conn.execute("INSERT INTO notice_rechecks (plate_key) VALUES ('CA-ON/ROLE1')"
                           " ON CONFLICT DO NOTHING")
        assert (await policy_store.load_grants(conn))   # the source policy: read
        for statement in (
                "INSERT INTO api_keys (key_id, name, role, secret_hash) VALUES"
                " ('k', 'n', 'operator', 'h')", "UPDATE api_keys SET revoked_at = NULL",
                "UPDATE source_policy SET reasons = NULL", "DELETE FROM source_policy",
                AUDIT_ROW, "SELECT count(*) FROM audit_log", "DELETE FROM plates",
                "UPDATE dlq_messages SET value = NULL", "SELECT * FROM owner_tokens",
                "SELECT * FROM owner_sessions"):
            await _refused(conn, statement)
    finally:
        await conn.close()


async def test_the_registry_api_reads_plates_and_adds_audit_rows_only(
        database_url: str, logins: dict[str, str]) -> None:
    admin = await create_pool(database_url, min_size=1, max_size=1)
    await insert_plate(admin, "CA-ON", "ROLE2")
    await admin.close()
    pool = await create_pool(logins["registry_api"], min_size=1, max_size=1)
    conn = await pool.acquire()
    try:
        for statement in EVERYONE_REFUSED:
            await _refused(conn, statement)
        assert await conn.fetchval("SELECT owner->>'name' FROM plates") == "Jane Doe"
        await conn.fetch("SELECT * FROM plate_events")
        await conn.fetch("SELECT * FROM status_changes")
        await conn.fetch("SELECT key_id, role, secret_hash FROM api_keys")
        await conn.fetch("SELECT notice_id, kind, context FROM notices")
        await conn.execute(AUDIT_ROW)
        # The API's audit writer (one binary COPY) needs no more than this.
        row = (dt.datetime.now(dt.UTC), "k1", "single", "CA-ON", "AUD2", "testing",
               "valid", None, None, None)
        await insert_rows(conn, [row])
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 2
        await conn.execute("INSERT INTO owner_preferences (owner_id, channels) VALUES"
                           " ('own-1', '{email}') ON CONFLICT (owner_id) DO UPDATE"
                           " SET channels = EXCLUDED.channels")
        for statement in (
                "UPDATE plates SET stolen = true", "DELETE FROM plates",
                "INSERT INTO plate_events (event_id, plate_key, type, source, event_time,"
                " data, fingerprint) VALUES ('e', 'CA-ON/X', 't', '/s', now(), '{}', 'f')",
                "DELETE FROM audit_log", "SELECT recipient FROM notices",
                "INSERT INTO api_keys (key_id, name, role, secret_hash) VALUES"
                " ('k', 'n', 'operator', 'h')", "UPDATE source_policy SET reasons = NULL",
                "DELETE FROM owner_sessions", "DELETE FROM owner_tokens",
                "UPDATE owner_tokens SET owner_id = 'someone'"):
            await _refused(conn, statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
    finally:
        await pool.release(conn)
        await pool.close()


async def test_the_ingest_api_reads_keys_and_the_policy_only(logins: dict[str, str]) -> None:
    conn = await _as_role(logins["ingest_api"])
    try:
        await conn.fetch("SELECT key_id, role, secret_hash, rate_limit, revoked_at, sources"
                         " FROM api_keys")
        assert (await policy_store.load_policy(conn)).version >= 1
        for statement in ("SELECT * FROM plates", "SELECT * FROM plate_events",
                          "INSERT INTO api_keys (key_id, name, role, secret_hash) VALUES"
                          " ('k', 'n', 'operator', 'h')", "UPDATE api_keys SET sources = '{/}'",
                          "DELETE FROM source_policy", "SELECT * FROM audit_log",
                          "SELECT * FROM notices"):
            await _refused(conn, statement)
    finally:
        await conn.close()


async def test_the_notice_roles_do_their_part_only(database_url: str,
                                                   logins: dict[str, str]) -> None:
    admin = await create_pool(database_url, min_size=1, max_size=1)
    await insert_plate(admin, "CA-ON", "ROLE3")
    await admin.close()
    scheduler = await _as_role(logins["notices_scheduler"])
    try:
        async with scheduler.transaction():
            assert await scheduler.fetch("SELECT plate_key FROM plates FOR SHARE")
        notice = await scheduler.fetchval(
            "INSERT INTO notices (notice_id, dedupe_key, kind, plate_key, owner_id, language,"
            " channels, recipient) VALUES (gen_random_uuid(), 'd1', 'expired', 'CA-ON/ROLE3',"
            " 'own-role3', 'en', '{email}', '{\"email\": \"x@example.org\"}')"
            " RETURNING notice_id")
        await scheduler.execute("UPDATE notices SET published_at = now() WHERE notice_id = $1",
                                notice)
        for statement in ("UPDATE plates SET stolen = true", "SELECT * FROM audit_log",
                          "SELECT * FROM api_keys", "DELETE FROM notices",
                          "INSERT INTO owner_tokens (token_hash, owner_id, expires_at)"
                          " VALUES ('h', 'o', now())"):
            await _refused(scheduler, statement)
    finally:
        await scheduler.close()
    dispatcher = await _as_role(logins["notices_dispatcher"])
    try:
        assert await dispatcher.fetchval("SELECT recipient->>'email' FROM notices")
        await dispatcher.execute("INSERT INTO notice_dispatch (notice_id, channel, state)"
                                 " VALUES ($1, 'email', 'pending')", notice)
        await dispatcher.execute("INSERT INTO owner_tokens (token_hash, owner_id, expires_at)"
                                 " VALUES ('h', 'own-role3', now() + interval '14 days')")
        for statement in ("SELECT * FROM plates", "SELECT * FROM owner_tokens",
                          "SELECT * FROM audit_log", "UPDATE notices SET recipient = '{}'",
                          "SELECT * FROM api_keys"):
            await _refused(dispatcher, statement)
    finally:
        await dispatcher.close()


async def test_the_operator_role_alone_writes_keys_and_the_policy(
        logins: dict[str, str]) -> None:
    conn = await _as_role(logins["operator"])
    try:
        key_id, _ = await keys.create_key(conn, role="ingest", name="acme",
                                          sources=["/insurance/acme/"])
        assert await keys.bind_sources(conn, key_id, ["/insurance/acme/west/"])
        assert await keys.revoke_key(conn, key_id)
        version = await policy_store.policy_version(conn)
        await policy_store.set_grant(conn, "/insurance/acme/", "plate.suspended",
                                     ["insurance_lapsed"])
        assert await policy_store.policy_version(conn) > version   # the trigger ran
        assert await policy_store.remove_grants(conn, "/insurance/acme/") == 1
        for statement in ("SELECT * FROM audit_log", AUDIT_ROW, "DELETE FROM api_keys",
                          "UPDATE dlq_messages SET value = NULL",
                          "SELECT * FROM notices", "SELECT * FROM owner_tokens"):
            await _refused(conn, statement)
    finally:
        await conn.close()
    for role in ROLES:
        if role == "operator":
            continue
        other = await asyncpg.connect(logins[role])
        try:
            await _refused(other, "INSERT INTO api_keys (key_id, name, role, secret_hash)"
                                  " VALUES ('k', 'n', 'operator', 'h')")
            await _refused(other, "INSERT INTO source_policy (prefix, type) VALUES ('/', 'x')")
        finally:
            await other.close()


async def test_the_operator_and_dispatcher_commands_run_as_their_roles(
        settings, database_url: str, logins: dict[str, str], tmp_path) -> None:
    """What `platereg quarantine`, `dlq list` and `notices paper` run, through their code,
    logged in as the operator's and the dispatcher's roles."""
    from pydantic import SecretStr

    from notifications.paper import print_day
    from platereg.db import connect
    from registry.consumer.dlq import list_rejections
    from registry.consumer.quarantine import list_plates, release

    admin = await connect(database_url)
    try:
        key = await insert_plate(admin, "CA-ON", "QUAR1")
        await admin.execute(
            "INSERT INTO plate_events (event_id, plate_key, type, source, event_time, data,"
            " fingerprint) VALUES ('q1', $1, 'plate.issued', '/registry/1', now(), $2, 'fp')",
            key, {"plate_class": "passenger", "expires_on": "2030-01-01",
                  "vehicle": {"vin": "1HGCM82633A004352", "make": "Honda", "model": "Civic",
                              "year": 2019, "colour": "blue"},
                  "owner": {"owner_id": "own-q", "name": "Q", "language": "en"}})
        await admin.execute("INSERT INTO quarantined_plates (plate_key, reason) VALUES ($1,"
                            " 'unfoldable')", key)
        await admin.execute("INSERT INTO dlq_messages (topic, partition, kafka_offset, value,"
                            " reason) VALUES ('t', 0, 1, 'x', 'malformed_json')")
        notice = uuid.uuid4()
        await admin.execute(
            "INSERT INTO notices (notice_id, dedupe_key, kind, plate_key, owner_id, language,"
            " channels, recipient) VALUES ($1, 'p1', 'expired', $2, 'own-q', 'en', '{paper}',"
            " $3)", notice, key, {"name": "Q", "address": {"lines": ["1 Main"], "city": "X",
                                                            "region": "ON", "postal_code": "K1A",
                                                            "country": "CA"}})
        await admin.execute("INSERT INTO notice_dispatch (notice_id, channel, state) VALUES"
                            " ($1, 'paper', 'print')", notice)
    finally:
        await admin.close()
    operator = settings.model_copy(update={"database_url": SecretStr(logins["operator"])})
    assert [r["plate_key"] for r in await list_plates(operator)] == [key]
    [released] = await release(operator, [key])
    assert released.released, released.message
    assert [r["reason"] for r in await list_rejections(operator)] == ["malformed_json"]
    dispatcher = await connect(logins["notices_dispatcher"])
    try:
        today = dt.datetime.now(settings.tz).date()
        assert await print_day(dispatcher, settings, today, tmp_path / "letters.pdf") == 1
    finally:
        await dispatcher.close()


async def test_the_purge_role_sees_no_registry_data(logins: dict[str, str]) -> None:
    conn = await _as_role(logins["purge"])
    try:
        assert await conn.fetchval("SELECT days FROM retention WHERE kind = 'audit'") == 365
        await conn.fetch("SELECT notice_id, created_at, recipient FROM notices")
        for statement in ("SELECT * FROM plates", "SELECT owner_id FROM notices",
                          "SELECT * FROM api_keys", AUDIT_ROW,
                          "UPDATE notices SET owner_id = 'x'", "DELETE FROM notices"):
            await _refused(conn, statement)
    finally:
        await conn.close()


async def test_prestart_sets_up_roles_and_a_non_superuser_owner_migrates(servers) -> None:
    """What deploy/prestart.sh runs on a fresh database: `platereg roles`, `platereg migrate`,
    then the purge with its own login."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    database = f"{prefix}_db"
    admin = await asyncpg.connect(servers.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    admin_dsn = servers.dsn_for(database)
    users = {role: f"{prefix}_{role}" for role in ("owner", *ROLES)}
    urls = {role: _as(admin_dsn, user, secrets.token_urlsafe(16))
            for role, user in users.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEREG_")}
    env.update(PLATEREG_ADMIN_DATABASE_URL=admin_dsn, PLATEREG_MIGRATE_DATABASE_URL=urls["owner"],
               PLATEREG_AUDIT_RETENTION_DAYS="400",
               **{f"PLATEREG_{ROLES[r].setting.upper()}": urls[r] for r in ROLES})
    try:
        for command in (["roles"], ["migrate"], ["roles"], ["migrate"], ["purge"]):
            done = subprocess.run([PLATEREG, *command], env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert "audit: 0 row(s) past 400 day(s)" in done.stdout
        conn = await asyncpg.connect(urls["owner"])
        try:
            assert not await conn.fetchval("SELECT rolsuper OR rolcreaterole FROM pg_roles"
                                           " WHERE rolname = current_user")
            owners = {r["tableowner"] for r in await conn.fetch(
                "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
            assert owners == {users["owner"]}
            assert await grant_differences(conn) == []
            assert await conn.fetchval("SELECT days FROM retention WHERE kind = 'audit'") == 400
        finally:
            await conn.close()
        conn = await asyncpg.connect(urls["registry_api"])
        try:
            await conn.execute(AUDIT_ROW)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM audit_log")
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
        await _drop_roles(servers.admin_dsn, *users.values())
