"""Least-privilege database roles: who may do what to which table, declared once.

:data:`ROLES` names one group role (NOLOGIN) per service and job; :data:`GRANTS` says,
for every application table, which of them may do what. That table is the only place
grants are written: ``platereg migrate`` applies it after the migrations
(:func:`apply_grants`, as the schema's owner, in one transaction: every privilege of
these groups on every table and sequence is revoked and granted again from the table),
so a table added by a later migration gets its grants from its line here, and a table
without a line stops the migration with its name. ``tests/unit/test_db_grants.py`` checks
that every table the migrations create has a line.

* The schema belongs to the role that runs the migrations (``platereg migrate``); no
  other role may create or alter anything.
* A service logs in as its own login role, a member of its group; it may do what its
  group may and nothing else. Only ``operator`` (``platereg keys``, ``sources``,
  ``dlq``, ``quarantine``) writes ``api_keys`` and ``source_policy``; only ``purge``
  deletes audit rows, and the database itself refuses to delete one younger than the
  retention (migration 0021).
* A privilege is ``SELECT``, ``INSERT``, ``UPDATE`` or ``DELETE``, on the whole table or
  on some columns: ``UPDATE (revoked_at)``. A role that may insert into a table may use
  its sequences (``bigserial`` columns). Row locks (``SELECT ... FOR UPDATE`` /
  ``FOR SHARE``) need an ``UPDATE`` privilege in PostgreSQL, on one column at least.

:func:`ensure_roles` (``platereg roles``, run as an admin before ``platereg migrate``)
creates the group roles, makes the migrations' role the owner of the database, and
creates or updates the login role of each ``PLATEREG_<ROLE>_DATABASE_URL`` that is set
(its password sent as a SCRAM verifier, never in clear) as a member of its group;
``platereg run`` does the same for the embedded server with a new password per role.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class Role:
    """A group role: ``platereg_<name>``, whose logins are given by the setting
    ``<name>_database_url`` (``PLATEREG_<NAME>_DATABASE_URL``)."""

    name: str
    runs: str                      # what logs in as it (docs/operations.md)

    @property
    def group(self) -> str:
        return f"platereg_{self.name}"

    @property
    def setting(self) -> str:
        return f"{self.name}_database_url"


#: One group role per service and job, in the order docs/operations.md lists them.
ROLES: dict[str, Role] = {r.name: r for r in (
    Role("consumer", "`platereg consume registry` and `consume relay`: the write side "
                     "(events, plates, offsets, outboxes, quarantine, dead letters, the "
                     "notices of each batch)"),
    Role("registry_api", "`platereg serve registry`: reads plates, history, notices and "
                         "audit rows, writes audit rows, owner sessions and preferences"),
    Role("ingest_api", "`platereg serve ingest`: reads API keys and the source policy"),
    Role("notices_scheduler", "`platereg notices schedule`: reminders and the notices "
                              "outbox relay"),
    Role("notices_dispatcher", "`platereg notices dispatch` and `notices paper`: "
                               "deliveries, attempts, sign-in links"),
    Role("purge", "`platereg purge`: removes personal data past its retention"),
    Role("operator", "the operator commands: `platereg keys`, `sources`, `dlq`, "
                     "`quarantine`"),
)}

#: For every application table, each role that may use it and how. Roles not named get
#: nothing; the owner (``platereg migrate``) owns every table. One line per table,
#: alphabetical: a branch adding a table adds its line here.
GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "api_keys": {"operator": ("SELECT", "INSERT", "UPDATE"),
                 "registry_api": ("SELECT",), "ingest_api": ("SELECT",)},
    "audit_log": {"registry_api": ("SELECT", "INSERT"), "purge": ("SELECT", "DELETE")},
    "consumer_offsets": {"consumer": ("SELECT", "INSERT", "UPDATE")},
    "dlq_messages": {"consumer": ("SELECT", "INSERT", "UPDATE (published_at)"),
                     "operator": ("SELECT", "UPDATE (replayed_at)"),
                     "purge": ("SELECT", "UPDATE (key, value, purged_at)")},
    "expiry_marks": {"consumer": ("SELECT", "INSERT")},
    "notice_deliveries": {"notices_dispatcher": ("SELECT", "INSERT"),
                          "registry_api": ("SELECT",)},
    "notice_dispatch": {"notices_dispatcher": ("SELECT", "INSERT", "UPDATE"),
                        "purge": ("SELECT (notice_id, state)",)},
    "notice_rechecks": {"consumer": ("INSERT",),
                        "notices_scheduler": ("SELECT", "UPDATE (queued_at)", "DELETE")},
    "notice_scheduler_runs": {"notices_scheduler": ("SELECT", "INSERT", "UPDATE")},
    "notices": {"consumer": ("SELECT", "INSERT"),
                "notices_scheduler": ("SELECT", "INSERT", "UPDATE (published_at)"),
                "notices_dispatcher": ("SELECT",),
                "registry_api": ("SELECT (notice_id, kind, plate_key, owner_id, language, "
                                 "channels, context, created_at)",),
                "purge": ("SELECT (notice_id, created_at, recipient, context)",
                          "UPDATE (recipient, context)")},
    "owner_preferences": {"registry_api": ("SELECT", "INSERT", "UPDATE"),
                          "consumer": ("SELECT",), "notices_scheduler": ("SELECT",),
                          "notices_dispatcher": ("SELECT",)},
    "owner_sessions": {"registry_api": ("SELECT", "INSERT", "UPDATE (revoked_at)"),
                       "purge": ("SELECT", "DELETE")},
    "owner_tokens": {"notices_dispatcher": ("INSERT",),
                     "registry_api": ("SELECT", "UPDATE (used_at)"),
                     "purge": ("SELECT", "DELETE")},
    "plate_events": {"consumer": ("SELECT", "INSERT"), "registry_api": ("SELECT",),
                     "operator": ("SELECT",)},
    # The scheduler reads plates FOR SHARE (a renewal committing meanwhile is seen), which
    # PostgreSQL allows only with an UPDATE privilege: on updated_at alone.
    "plates": {"consumer": ("SELECT", "INSERT", "UPDATE"), "registry_api": ("SELECT",),
               "notices_scheduler": ("SELECT", "UPDATE (updated_at)"),
               "operator": ("SELECT", "INSERT", "UPDATE")},
    # Signed producers: only the consumer (to check signatures) and the operator commands
    # may read them; the version is bumped by a trigger as whoever changed a producer.
    "producers": {"operator": ("SELECT", "INSERT", "UPDATE", "DELETE"),
                  "consumer": ("SELECT",)},
    "producer_secrets": {"operator": ("SELECT", "INSERT", "UPDATE", "DELETE"),
                         "consumer": ("SELECT",)},
    "producers_version": {"operator": ("SELECT", "UPDATE"), "consumer": ("SELECT",)},
    "quarantined_plates": {"consumer": ("SELECT", "INSERT", "UPDATE"),
                           "operator": ("SELECT", "UPDATE", "DELETE")},
    "relay_cursors": {"consumer": ("SELECT", "INSERT", "UPDATE")},
    "retention": {"purge": ("SELECT",)},
    "source_policy": {"operator": ("SELECT", "INSERT", "UPDATE", "DELETE"),
                      "consumer": ("SELECT",), "ingest_api": ("SELECT",)},
    # The policy's change trigger bumps the version as whoever changed the policy.
    "source_policy_version": {"operator": ("SELECT", "UPDATE"), "consumer": ("SELECT",),
                              "ingest_api": ("SELECT",)},
    "status_changes": {"consumer": ("SELECT", "INSERT"), "registry_api": ("SELECT",),
                       "operator": ("INSERT",)},
}

#: Tables that only the operator commands' role may write, whatever :data:`GRANTS` says
#: (tests/unit/test_db_grants.py holds the table to it). A branch adding such a table
#: (signed producers' secrets) names it here too.
OPERATOR_ONLY_WRITES = frozenset({"api_keys", "source_policy", "source_policy_version",
                                  "producers", "producer_secrets", "producers_version"})

ACTIONS = ("SELECT", "INSERT", "UPDATE", "DELETE")
_PRIVILEGE = re.compile(r"^(SELECT|INSERT|UPDATE|DELETE)(?:\s*\(([a-z_][a-z0-9_, ]*)\))?$")


@dataclass(frozen=True)
class Privilege:
    action: str
    columns: tuple[str, ...] = ()      # empty: the whole table


def parse_privilege(text: str) -> Privilege:
    """``"UPDATE (a, b)"`` -> ``Privilege("UPDATE", ("a", "b"))``; ValueError if malformed."""
    match = _PRIVILEGE.match(text.strip())
    if match is None:
        raise ValueError(f"not a privilege: {text!r} (SELECT, INSERT, UPDATE or DELETE, "
                         "optionally with (columns))")
    columns = tuple(c.strip() for c in (match.group(2) or "").split(",") if c.strip())
    if match.group(2) is not None and not columns:
        raise ValueError(f"no columns in {text!r}")
    return Privilege(match.group(1), columns)


def privileges(table: str, role: str) -> list[Privilege]:
    """What ``role`` may do to ``table`` according to :data:`GRANTS`."""
    return [parse_privilege(p) for p in GRANTS.get(table, {}).get(role, ())]


def may(table: str, role: str, action: str, column: str | None = None) -> bool:
    """Whether :data:`GRANTS` lets ``role`` do ``action`` on ``table`` (on ``column``)."""
    return any(p.action == action and (not p.columns or column in p.columns)
               for p in privileges(table, role))


def grant_statements(table: str, sequences: Iterable[str] = (),
                     legacy: Iterable[str] = ()) -> list[sql.Composed]:
    """The statements that give ``table`` (and its ``sequences``) exactly the grants of
    :data:`GRANTS`: everything revoked from every group (and the ``legacy`` groups that
    exist), then granted again."""
    groups = sql.SQL(", ").join(sql.Identifier(g) for g in
                                [*(r.group for r in ROLES.values()), *legacy])
    out = [sql.SQL("REVOKE ALL ON TABLE {} FROM PUBLIC, {}").format(sql.Identifier(table),
                                                                      groups)]
    inserters = []
    for role, texts in GRANTS[table].items():
        group = sql.Identifier(ROLES[role].group)
        for p in map(parse_privilege, texts):
            columns = (sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, p.columns)))
                       if p.columns else sql.SQL(""))
            out.append(sql.SQL("GRANT {}{} ON TABLE {} TO {}").format(
                sql.SQL(p.action), columns, sql.Identifier(table), group))
            if p.action == "INSERT" and group not in inserters:
                inserters.append(group)
    for sequence in sequences:
        out.append(sql.SQL("REVOKE ALL ON SEQUENCE {} FROM PUBLIC, {}").format(
            sql.Identifier(sequence), groups))
        out.extend(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
            sql.Identifier(sequence), group) for group in inserters)
    return out


#: Group roles that keep no privilege (migration 0005's one group for every service).
LEGACY_GROUPS = ("platereg_service",)


class GrantsMissing(RuntimeError):
    """An application table has no line in :data:`GRANTS`."""


_TABLES = """SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
               AND c.relname NOT LIKE '%%yoyo%%' ORDER BY c.relname"""
_SEQUENCES = """SELECT s.relname, t.relname FROM pg_class s
                JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
                                AND d.deptype IN ('a', 'i')
                JOIN pg_class t ON t.oid = d.refobjid
                WHERE s.relkind = 'S' AND s.relnamespace = current_schema()::regnamespace"""


def application_tables(conn: psycopg.Connection) -> list[str]:
    """The tables of the current schema (yoyo's own left out)."""
    return [r[0] for r in conn.execute(_TABLES)]


def _ensure_groups(conn: psycopg.Connection) -> None:
    missing = [r.group for r in ROLES.values() if conn.execute(
        "SELECT 1 FROM pg_roles WHERE rolname = %s", (r.group,)).fetchone() is None]
    for group in missing:
        try:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
        except psycopg.errors.InsufficientPrivilege:
            raise psycopg.errors.InsufficientPrivilege(
                f"the group role {group} does not exist and this role may not create it: "
                "run `platereg roles` (as an admin) first") from None


def apply_grants(conn: psycopg.Connection) -> None:
    """Give every application table exactly the grants of :data:`GRANTS`, in the
    caller's transaction (the schema's owner runs it after each migration run)."""
    tables = application_tables(conn)
    missing = sorted(set(tables) - set(GRANTS))
    if missing:
        raise GrantsMissing(f"no grants for table(s) {', '.join(missing)}: add a line to "
                            "GRANTS in platereg/security/roles.py")
    _ensure_groups(conn)
    legacy = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                         (list(LEGACY_GROUPS),))]
    sequences: dict[str, list[str]] = {}
    for sequence, table in conn.execute(_SEQUENCES):
        sequences.setdefault(table, []).append(sequence)
    for table in tables:
        for statement in grant_statements(table, sequences.get(table, ()), legacy):
            conn.execute(statement)


# --- login roles ---------------------------------------------------------------------------


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


def ensure_roles(admin_dsn: str, logins: Mapping[str, str], *,
                 owner_dsn: str | None = None) -> list[str]:
    """Create the group roles of :data:`ROLES` and the login role of each URL in
    ``logins`` (role name -> URL) as a member of its group; returns the logins made or
    updated. ``owner_dsn``'s user becomes the owner of its database (it runs the
    migrations). A URL whose user is the admin's is left as it is."""
    unknown = sorted(set(logins) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown database role(s): {', '.join(unknown)}")
    admin = Login.from_dsn(admin_dsn)
    done = []
    with psycopg.connect(admin_dsn, autocommit=True) as conn, conn.transaction():
        for role in ROLES.values():
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                            (role.group,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(
                    sql.Identifier(role.group)))
        if owner_dsn is not None and (owner := Login.from_dsn(owner_dsn)).user != admin.user:
            _ensure_login(conn, owner, None)
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(owner.database), sql.Identifier(owner.user)))
            conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(
                sql.Identifier(owner.user)))
            done.append(owner.user)
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        for name, dsn in logins.items():
            if (login := Login.from_dsn(dsn)).user != admin.user:
                _ensure_login(conn, login, ROLES[name].group)
                done.append(login.user)
    return done


# --- the grants table of docs/operations.md ------------------------------------------------

#: The generated table sits between these two lines of docs/operations.md.
TABLE_BEGIN = "<!-- BEGIN grants table: python -m platereg.security.roles --markdown FILE -->"
TABLE_END = "<!-- END grants table -->"


def grants_table() -> str:
    """The Markdown table of each group role: who logs in as it and what it may do."""
    rows = ["| group role (login URL) | used by | may |", "|---|---|---|"]
    for role in ROLES.values():
        may_do = "; ".join(f"`{table}` {', '.join(GRANTS[table][role.name])}"
                           for table in sorted(GRANTS) if role.name in GRANTS[table])
        rows.append(f"| `{role.group}` (`PLATEREG_{role.setting.upper()}`) | {role.runs} "
                    f"| {may_do} |")
    return "\n".join(rows) + "\n"


def with_grants_table(page: str) -> str:
    """``page`` with the text between :data:`TABLE_BEGIN` and :data:`TABLE_END` replaced
    by :func:`grants_table`."""
    from platereg.settings import with_generated

    return with_generated(page, TABLE_BEGIN, TABLE_END, grants_table())


def main(argv: list[str]) -> int:
    """``python -m platereg.security.roles --markdown FILE``: rewrite the grants table in
    FILE (docs/operations.md)."""
    from pathlib import Path

    if len(argv) != 2 or argv[0] != "--markdown":
        print("usage: python -m platereg.security.roles --markdown FILE", file=sys.stderr)
        return 2
    path = Path(argv[1])
    path.write_text(with_grants_table(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
