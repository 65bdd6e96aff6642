"""The grants table (platereg/security/roles.py): complete, well-formed, and least privilege.

These read the table and the migrations' text only; tests/integration/test_db_roles.py logs
in as each role on a real database.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from platereg.retention import KINDS
from platereg.security.roles import (
    ACTIONS,
    GRANTS,
    OPERATOR_ONLY_WRITES,
    ROLES,
    Privilege,
    may,
    parse_privilege,
    privileges,
)
from platereg.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "platereg" / "migrations"
_CREATE = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)", re.I)
_DROP = re.compile(r"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?([a-z_][a-z0-9_]*)", re.I)
WRITES = ("INSERT", "UPDATE", "DELETE")


def migration_tables(texts: list[str]) -> set[str]:
    """The tables the migrations leave: created, less dropped (in file order)."""
    tables: set[str] = set()
    for text in texts:
        text = re.sub(r"--[^\n]*", "", text)
        tables |= {m.lower() for m in _CREATE.findall(text)}
        tables -= {m.lower() for m in _DROP.findall(text)}
    return tables


def _migration_texts() -> list[str]:
    return [p.read_text() for p in sorted(MIGRATIONS.glob("*.sql"))]


def test_every_table_the_migrations_create_has_a_line() -> None:
    tables = migration_tables(_migration_texts())
    assert "audit_log" in tables and "retention" in tables   # the reader works
    missing = sorted(tables - set(GRANTS))
    assert not missing, f"no line in GRANTS (platereg/security/roles.py) for {missing}"
    stale = sorted(set(GRANTS) - tables)
    assert not stale, f"GRANTS names tables no migration creates: {stale}"


def test_a_new_table_without_a_line_is_found() -> None:
    """What a branch adding a table without grants sees."""
    texts = [*_migration_texts(),
             "-- CREATE TABLE commented_out (id int);\nCREATE TABLE IF NOT EXISTS planted_table ("
             " name text PRIMARY KEY);"]
    assert sorted(migration_tables(texts) - set(GRANTS)) == ["planted_table"]
    assert "commented_out" not in migration_tables(texts)


def test_every_line_parses_and_names_known_roles() -> None:
    for table, roles in GRANTS.items():
        assert roles, table
        for role, texts in roles.items():
            assert role in ROLES, (table, role)
            assert texts, (table, role)
            parsed = [parse_privilege(t) for t in texts]
            actions = [p.action for p in parsed]
            assert len(actions) == len(set(actions)), (table, role, "an action twice")


@pytest.mark.parametrize("text", ["ALL", "SELECT INSERT", "UPDATE ()", "TRUNCATE",
                                  "UPDATE (a; DROP TABLE x)", "select"])
def test_a_malformed_privilege_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="privilege|columns"):
        parse_privilege(text)


def test_privileges_parse_columns() -> None:
    assert parse_privilege("UPDATE (key, value,purged_at)") == Privilege(
        "UPDATE", ("key", "value", "purged_at"))
    assert parse_privilege(" DELETE ") == Privilege("DELETE")


def test_only_the_operator_writes_keys_and_the_source_policy() -> None:
    for table in OPERATOR_ONLY_WRITES:
        assert table in GRANTS, table
        for role in ROLES:
            for action in WRITES:
                if role != "operator":
                    assert not may(table, role, action), (table, role, action)


def test_the_services_may_only_do_what_they_need() -> None:
    """The contract's rules, each stated once more here so that widening GRANTS fails."""
    for action in WRITES:
        assert not may("plates", "registry_api", action)       # reads plates, never writes
        assert not may("plate_events", "registry_api", action)
        assert not may("plates", "ingest_api", action)
    for role in ROLES:
        assert not may("audit_log", role, "UPDATE"), role      # nobody rewrites audit rows
        if role != "purge":
            assert not may("audit_log", role, "DELETE"), role  # only the purge deletes
        if role not in ("registry_api",):
            assert not may("audit_log", role, "INSERT"), role
        assert not may("retention", role, "UPDATE") and not may("retention", role, "INSERT")
    # The ingest API reads keys and the policy, and nothing else.
    assert {t for t in GRANTS if privileges(t, "ingest_api")} == {
        "api_keys", "source_policy", "source_policy_version"}
    assert [p.action for p in privileges("api_keys", "ingest_api")] == ["SELECT"]
    # The registry API never reads the contact data stored with notices.
    (select,) = [p for p in privileges("notices", "registry_api") if p.action == "SELECT"]
    assert select.columns and "recipient" not in select.columns


def test_the_purge_may_do_what_each_retention_kind_needs() -> None:
    for kind in KINDS:
        assert may(kind.table, "purge", "SELECT", kind.key), kind.name
        if kind.action == "DELETE":
            assert may(kind.table, "purge", "DELETE"), kind.name
        else:
            for column in re.findall(r"(\w+) = ", kind.action):
                assert may(kind.table, "purge", "UPDATE", column), (kind.name, column)
    assert may("retention", "purge", "SELECT")


def test_every_role_has_its_setting_and_its_own_group() -> None:
    groups = [r.group for r in ROLES.values()]
    assert len(set(groups)) == len(groups)
    for role in ROLES.values():
        assert role.setting in Settings.model_fields, role.setting
        assert role.group.startswith("platereg_")
    assert all(a in ACTIONS for a in ("SELECT", "INSERT", "UPDATE", "DELETE"))


def _literals_given_to(*functions: str) -> set[str]:
    """The string literals production code passes first to ``functions``."""
    found = set()
    for path in ROOT.glob("*/**/*.py"):
        if {".venv", "tests", "build", "mutants"} & set(path.parts):   # ours, not copies
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and getattr(node.func, "attr", getattr(node.func, "id", None))
                    in functions):
                found.add(node.args[0].value)
    return found


def test_every_command_names_a_known_role() -> None:
    """Each command's role comes from COMMAND_NEEDS; every role named there or given to
    ``Settings.for_role`` exists, and every command a module names has a row."""
    from platereg.settings import COMMAND_NEEDS

    named = {n.role for n in COMMAND_NEEDS.values() if n.role} | _literals_given_to("for_role")
    assert {"consumer", "registry_api", "operator", "purge"} <= named
    assert named <= set(ROLES)
    assert _literals_given_to("settings_or_exit") <= set(COMMAND_NEEDS)


def test_the_operations_page_shows_the_grants_table() -> None:
    from platereg.security.roles import grants_table, with_grants_table

    page = (ROOT / "docs" / "operations.md").read_text()
    assert grants_table() in page
    assert with_grants_table(page) == page, (
        "run: python -m platereg.security.roles --markdown docs/operations.md")
