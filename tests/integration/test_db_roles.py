"""Least-privilege database roles: the services' role cannot rewrite the audit trail or change
the schema, only the purge role deletes audit rows, and the prestart sequence (roles, then
migrate as a non-superuser owner) works on a fresh database."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from api_helpers import insert_plate
from cli_support import PLATEREG

from platereg.db import create_pool
from platereg.security.roles import ensure_roles
from registry.api.audit import INSERT_ROWS, purge

pytestmark = pytest.mark.integration


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


AUDIT_ROW = ("INSERT INTO audit_log (at, key_id, kind, jurisdiction, plate, purpose, result)"
             " VALUES ($1, 'k1', 'single', 'CA-ON', 'AUD1', NULL, 'valid')")


async def test_the_services_role_cannot_rewrite_audit_rows_or_change_the_schema(
        servers, database_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    service = _as(database_url, f"{prefix}_app", secrets.token_urlsafe(16))
    purger = _as(database_url, f"{prefix}_purge", secrets.token_urlsafe(16))
    ensure_roles(database_url, service_dsn=service, purge_dsn=purger)
    try:
        pool = await create_pool(service, min_size=1, max_size=1)  # with the jsonb codec
        conn = await pool.acquire()
        try:
            assert not await conn.fetchval("SELECT rolsuper FROM pg_roles"
                                           " WHERE rolname = current_user")
            await insert_plate(conn, "CA-ON", "ROLE1")  # the data itself: yes
            await conn.execute("UPDATE plates SET stolen = true WHERE plate = 'ROLE1'")
            await conn.execute(AUDIT_ROW, dt.datetime.now(dt.UTC) - dt.timedelta(days=400))
            assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1
            # The API's audit writer (one INSERT of column arrays) needs no more than this.
            row = (dt.datetime.now(dt.UTC), "k1", "single", "CA-ON", "AUD2", "testing",
                   "valid", None, None, None)
            await conn.execute(INSERT_ROWS, *([value] for value in row))
            assert await conn.fetchval("SELECT count(*) FROM audit_log") == 2
            for statement in ("UPDATE audit_log SET result = 'stolen'", "DELETE FROM audit_log",
                              "TRUNCATE audit_log"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError,
                                   match="permission denied for table audit_log"):
                    await conn.execute(statement)
            with pytest.raises(asyncpg.InsufficientPrivilegeError,
                               match="permission denied for schema public"):
                await conn.execute("CREATE TABLE sneaky (id int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError,
                               match="must be owner of table plates"):
                await conn.execute("ALTER TABLE plates ADD COLUMN sneaky int")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM _yoyo_migration")  # the migration history
        finally:
            await pool.release(conn)
            await pool.close()
        conn = await asyncpg.connect(purger)
        try:
            assert await purge(conn, 365) == 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError,
                               match="permission denied for table plates"):
                await conn.fetch("SELECT owner FROM plates")  # it sees no registry data
        finally:
            await conn.close()
    finally:
        await _drop_roles(database_url, f"{prefix}_app", f"{prefix}_purge")


async def test_prestart_sets_up_roles_and_a_non_superuser_owner_migrates(servers) -> None:
    """What deploy/prestart.sh runs on a fresh database: `platereg roles`, `platereg migrate`."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    database = f"{prefix}_db"
    admin = await asyncpg.connect(servers.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    admin_dsn = servers.dsn_for(database)
    users = {role: f"{prefix}_{role}" for role in ("owner", "app", "purge")}
    urls = {role: _as(admin_dsn, user, secrets.token_urlsafe(16))
            for role, user in users.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEREG_")}
    env.update(PLATEREG_ADMIN_DATABASE_URL=admin_dsn, PLATEREG_MIGRATE_DATABASE_URL=urls["owner"],
               PLATEREG_DATABASE_URL=urls["app"], PLATEREG_PURGE_DATABASE_URL=urls["purge"])
    try:
        for command in (["roles"], ["migrate"], ["roles"], ["migrate"], ["audit", "purge"]):
            done = subprocess.run([PLATEREG, *command], env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert "purged 0 audit row(s)" in done.stdout
        conn = await asyncpg.connect(urls["owner"])
        try:
            assert not await conn.fetchval("SELECT rolsuper OR rolcreaterole FROM pg_roles"
                                           " WHERE rolname = current_user")
            owners = {r["tableowner"] for r in await conn.fetch(
                "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
            assert owners == {users["owner"]}
        finally:
            await conn.close()
        conn = await asyncpg.connect(urls["app"])
        try:
            await conn.execute(AUDIT_ROW, dt.datetime.now(dt.UTC))
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM audit_log")
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
        await _drop_roles(servers.admin_dsn, *users.values())
