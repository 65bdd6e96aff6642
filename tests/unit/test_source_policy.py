"""The source policy as pure data: the default the contract ships, matching, grants."""

from __future__ import annotations

import pytest

from schemas.policy import (
    DEFAULT_POLICY,
    KNOWN_TYPES,
    NO_REASON,
    Grant,
    PolicyError,
    check_grant,
    compile_policy,
    prefix_allows,
    reason_of,
)

DEFAULT = compile_policy(DEFAULT_POLICY)
REASONS = ("insurance_lapsed", "unpaid_fines", "emissions_failed", "court_order",
           "administrative")


def allowed_types(source: str) -> set[str]:
    return {t for t in KNOWN_TYPES if any(DEFAULT.allows(source, t, r)
                                          for r in (*REASONS, None))}


def test_only_police_may_report_stolen_or_recovered() -> None:
    for source in ("/registry/office/1", "/insurance/acme/", "/fines/city", "/courts/on/",
                   "/emissions/lab", "/smartplate/device/1", "", "/policeacademy"):
        assert not DEFAULT.allows(source, "plate.stolen_reported")
        assert not DEFAULT.allows(source, "plate.recovered")
    assert DEFAULT.allows("/police/opp", "plate.stolen_reported")
    assert DEFAULT.allows("/police/opp", "plate.recovered")
    assert allowed_types("/police/opp") == {"plate.stolen_reported", "plate.recovered"}


@pytest.mark.parametrize("source,reasons", [
    ("/insurance/acme/1", {"insurance_lapsed"}),
    ("/fines/toronto", {"unpaid_fines"}),
    ("/courts/on/fines", {"court_order", "unpaid_fines"}),
    ("/emissions/lab", {"emissions_failed"}),
    ("/registry/office/7", {"administrative"}),
])
def test_suspension_reasons_per_prefix(source: str, reasons: set[str]) -> None:
    for kind in ("plate.suspended", "plate.reinstated"):
        assert {r for r in REASONS if DEFAULT.allows(source, kind, r)} == reasons


def test_only_the_registry_may_lift_every_suspension_or_issue() -> None:
    assert DEFAULT.allows("/registry/office/1", "plate.reinstated", None)
    assert DEFAULT.allows("/registry/office/1", "plate.reinstated", NO_REASON)
    assert not DEFAULT.allows("/registry/office/1", "plate.suspended", None)
    for source in ("/insurance/acme/", "/courts/on/", "/police/opp"):
        assert not DEFAULT.allows(source, "plate.reinstated", None)
    assert allowed_types("/insurance/x") == {"plate.suspended", "plate.reinstated"}
    registry = allowed_types("/registry/office/1")
    assert registry == KNOWN_TYPES - {"plate.stolen_reported", "plate.recovered"}


def test_grants_add_up_over_matching_prefixes_and_memo_follows_the_rows() -> None:
    policy = compile_policy([
        *DEFAULT_POLICY,
        Grant("/insurance/acme/", "plate.suspended", frozenset({"court_order"})),
        Grant("/insurance/acme/", "plate.owner_updated"),
    ])
    assert policy.allows("/insurance/acme/1", "plate.suspended", "court_order")
    assert policy.allows("/insurance/acme/1", "plate.suspended", "insurance_lapsed")
    assert policy.allows("/insurance/acme/1", "plate.owner_updated")
    assert not policy.allows("/insurance/other/1", "plate.suspended", "court_order")
    assert not compile_policy([]).allows("/registry/1", "plate.issued")


def test_reason_of_and_explain_never_show_the_source() -> None:
    assert reason_of("plate.reinstated", {}) == NO_REASON
    assert reason_of("plate.reinstated", {"reason": "unpaid_fines"}) == "unpaid_fines"
    assert reason_of("plate.renewed", {"reason": "x"}) is None
    text = DEFAULT.explain("/insurance/secret-name/", "plate.stolen_reported")
    assert "secret-name" not in text and "plate.stolen_reported" in text
    assert DEFAULT.allows_event("/courts/on/", "plate.suspended", {"reason": "court_order"})
    assert not DEFAULT.allows_event("/courts/on/", "plate.reinstated", None)


def test_check_grant_refuses_what_cannot_be_stored() -> None:
    assert check_grant("/x/", "plate.suspended", ["court_order"]).reasons == {"court_order"}
    assert check_grant("/x/", "plate.renewed", None).reasons is None
    for args, message in [(("", "plate.renewed", None), "prefix"),
                          (("/x\n", "plate.renewed", None), "prefix"),
                          (("/x/", "plate.repainted", None), "unknown event type"),
                          (("/x/", "plate.renewed", ["court_order"]), "no suspension reason"),
                          (("/x/", "plate.suspended", ["nope"]), "reasons must be"),
                          (("/x/", "plate.suspended", [NO_REASON]), "only for plate.reinstated")]:
        with pytest.raises(PolicyError, match=message):
            check_grant(*args)


def test_prefix_allows() -> None:
    assert prefix_allows(["/insurance/acme/", "/fines/"], "/insurance/acme/branch-2")
    assert not prefix_allows(["/insurance/acme/"], "/insurance/acmex/1")
    assert not prefix_allows([], "/registry/1")


def test_the_migration_seeds_the_default_policy() -> None:
    """0008 inserts exactly DEFAULT_POLICY (the rows are parsed from the SQL text)."""
    import re
    from importlib.resources import files

    sql = (files("platereg") / "migrations" / "0008_sources.sql").read_text()
    rows = re.findall(r"\('(/[a-z]+/)', '(plate\.[a-z_]+)', (NULL|'\{[a-z_,]+\}')\)", sql)
    seeded = {Grant(p, t, None if r == "NULL" else frozenset(r.strip("'{}").split(",")))
              for p, t, r in rows}
    assert seeded == set(DEFAULT_POLICY)
