"""Edges of the source policy that `make mutate` found no test looking at: how a grant
describes itself, check_grant's exact bounds, messages and result, prefixes whose grants
add up after an unrestricted one, the memo's bound, explain's text both ways, and the
compiled policy's rows and version."""

from __future__ import annotations

import pytest

from schemas.policy import (
    _MEMO_LIMIT,
    DEFAULT_POLICY,
    KNOWN_REASONS,
    KNOWN_TYPES,
    MAX_PREFIX_CHARS,
    NO_REASON,
    Grant,
    PolicyError,
    check_grant,
    compile_policy,
)

DEFAULT = compile_policy(DEFAULT_POLICY)


def test_a_grant_describes_its_reasons_only_for_the_reason_types() -> None:
    assert Grant("/x/", "plate.renewed").describe() == "plate.renewed"
    assert Grant("/x/", "plate.renewed", frozenset({"court_order"})).describe() == (
        "plate.renewed")
    assert Grant("/x/", "plate.suspended").describe() == "plate.suspended"
    assert Grant("/x/", "plate.suspended", frozenset({"unpaid_fines", "court_order"})
                 ).describe() == "plate.suspended (court_order, unpaid_fines)"


def test_check_grant_bounds_messages_and_result() -> None:
    assert check_grant("/" * MAX_PREFIX_CHARS, "plate.renewed", None).prefix == (
        "/" * MAX_PREFIX_CHARS)
    with pytest.raises(PolicyError, match="prefix must be"):
        check_grant("/" * (MAX_PREFIX_CHARS + 1), "plate.renewed", None)
    with pytest.raises(PolicyError) as unknown:
        check_grant("/x/", "plate.repainted", None)
    assert str(unknown.value) == ("unknown event type 'plate.repainted'; one of "
                                  + ", ".join(sorted(KNOWN_TYPES)))
    with pytest.raises(PolicyError) as bad:
        check_grant("/x/", "plate.suspended", ["nope"])
    assert str(bad.value) == "reasons must be among " + ", ".join(sorted(KNOWN_REASONS))
    assert check_grant("/x/", "plate.reinstated", [NO_REASON, "court_order"]) == Grant(
        "/x/", "plate.reinstated", frozenset({NO_REASON, "court_order"}))


def test_grants_after_an_unrestricted_one_still_add_up() -> None:
    policy = compile_policy([Grant("/a/", "plate.cancelled"),
                             Grant("/a/b/", "plate.cancelled"),
                             Grant("/a/b/", "plate.renewed")])
    assert policy.allows("/a/b/1", "plate.cancelled")
    assert policy.allows("/a/b/1", "plate.renewed")


def test_the_memo_of_sources_stays_within_its_bound() -> None:
    policy = compile_policy(DEFAULT_POLICY)
    for i in range(_MEMO_LIMIT + 1):
        policy.allows(f"/registry/{i}", "plate.issued")
    assert 0 < len(policy._memo) <= _MEMO_LIMIT


def test_explain_names_the_type_and_only_a_reason_type_s_reason() -> None:
    assert DEFAULT.explain("/courts/on/", "plate.suspended", "court_order") == (
        "source: allowed to send plate.suspended with reason court_order")
    assert DEFAULT.explain("/registry/1", "plate.reinstated") == (
        "source: allowed to send plate.reinstated with reason none")
    assert DEFAULT.explain("/fines/x", "plate.stolen_reported") == (
        "source: the source policy does not allow this source to send plate.stolen_reported")


def test_a_compiled_policy_keeps_its_rows_sorted_and_its_version() -> None:
    rows = [Grant("/b/", "plate.renewed"), Grant("/a/", "plate.issued"),
            Grant("/a/", "plate.issued")]
    assert compile_policy(rows).version == 0
    policy = compile_policy(rows, 7)
    assert (policy.grants, policy.version) == (
        (Grant("/a/", "plate.issued"), Grant("/b/", "plate.renewed")), 7)
