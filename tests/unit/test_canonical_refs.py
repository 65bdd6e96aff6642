"""The batch lookup's fast path: ``canonical_refs`` accepts exactly the items whose parts
the normalizers would return unchanged, and nothing else."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.plates import InvalidPlate, canonical_refs, normalize_jurisdiction, normalize_plate

PARTS = st.one_of(st.from_regex(r"[A-Za-z]{2}-[A-Za-z0-9]{1,3}", fullmatch=True),
                  st.from_regex(r"[A-Za-z0-9 .-]{0,12}", fullmatch=True), st.text(max_size=12))


def _unchanged(normalize, value: str) -> bool:
    try:
        return normalize(value) == value
    except InvalidPlate:
        return False


@given(PARTS, PARTS)
def test_fast_path_iff_both_parts_are_already_canonical(j: str, p: str) -> None:
    got = canonical_refs([{"jurisdiction": j, "plate": p}])
    expected = _unchanged(normalize_jurisdiction, j) and _unchanged(normalize_plate, p)
    assert (got == [(j, p)]) if expected else got is None


def test_anything_but_a_list_of_two_key_objects_takes_the_validating_path() -> None:
    ok = {"jurisdiction": "CA-ON", "plate": "ABC123"}
    assert canonical_refs([ok, ok]) == [("CA-ON", "ABC123")] * 2
    assert canonical_refs([]) == []
    for bad in (None, "x", (ok,), [ok, {**ok, "extra": 1}], [ok, {"jurisdiction": "CA-ON"}],
                [{"jurisdiction": "CA-ON", "plate": 123}], [ok, ["CA-ON", "ABC123"]],
                [{"jurisdiction": "ca-on", "plate": "ABC123"}],
                [{"jurisdiction": "CA-ON", "plate": "ABC-123"}],
                [{"jurisdiction": "CA-ON", "plate": "ABC123\n"}]):
        assert canonical_refs(bad) is None, bad
