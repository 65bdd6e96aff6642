"""Least-privilege database roles.

Two group roles (NOLOGIN) hold the privileges; migration 0005 grants them:

* ``platereg_service``: what the services need (SELECT, INSERT, UPDATE, DELETE
  on the application tables; only SELECT and INSERT on ``audit_log``; no DDL).
* ``platereg_purge``: SELECT and DELETE on ``audit_log`` (``platereg audit purge``).

The schema belongs to the role that runs the migrations. :func:`ensure_roles`
(``platereg roles``, run as an admin before ``platereg migrate``) creates or
updates the login roles named in the three database URLs, sets their
passwords (sent as SCRAM verifiers, never in clear) and makes each a member
of its group role; ``platereg run`` does the same for the embedded server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

SERVICE_GROUP = "platereg_service"
PURGE_GROUP = "platereg_purge"


@dataclass(frozen=True)
class Login:
    user: str
    password: str | None
    database: str

    @classmethod
    def from_dsn(cls, dsn: str) -> Login:
        parts = urlsplit(dsn)
        if not parts.username:
            raise ValueError("the database URL names no user")
        return cls(unquote(parts.username),
                   unquote(parts.password) if parts.password is not None else None,
                   unquote(parts.path.lstrip("/")) or unquote(parts.username))


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _password_literal(password: str) -> sql.Composable:
    # PostgreSQL applies SASLprep to non-ASCII passwords; send those as they are.
    return sql.Literal(scram_verifier(password) if password.isascii() else password)


def _ensure_group(conn: psycopg.Connection, name: str) -> None:
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))


def _ensure_login(conn: psycopg.Connection, login: Login, group: str | None) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                          (login.user,)).fetchone() is not None
    verb = "ALTER" if exists else "CREATE"
    statement = sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
        sql.Identifier(login.user))
    if login.password is not None:
        statement += sql.SQL(" PASSWORD ") + _password_literal(login.password)
    conn.execute(statement)
    if group is not None and group != login.user:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group),
                                                      sql.Identifier(login.user)))


def ensure_roles(admin_dsn: str, *, service_dsn: str, purge_dsn: str | None = None,
                 owner_dsn: str | None = None) -> None:
    """Create or update the group roles and the login roles of the given URLs.

    ``owner_dsn``'s user becomes the owner of its database (it runs the
    migrations). A URL whose user is the admin's is left as it is.
    """
    admin = Login.from_dsn(admin_dsn)
    with psycopg.connect(admin_dsn, autocommit=True) as conn, conn.transaction():
        for group in (SERVICE_GROUP, PURGE_GROUP):
            _ensure_group(conn, group)
        if owner_dsn is not None and (owner := Login.from_dsn(owner_dsn)).user != admin.user:
            _ensure_login(conn, owner, None)
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(owner.database), sql.Identifier(owner.user)))
            conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(
                sql.Identifier(owner.user)))
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        for dsn, group in ((service_dsn, SERVICE_GROUP), (purge_dsn, PURGE_GROUP)):
            if dsn is not None and (login := Login.from_dsn(dsn)).user != admin.user:
                _ensure_login(conn, login, group)
