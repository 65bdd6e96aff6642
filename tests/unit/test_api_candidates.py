"""ALPR-confusable variants: only in-group swaps, nearest first, bounded."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from registry.api.candidates import (
    CONFUSABLE_GROUPS,
    MAX_VARIANTS,
    substitutions,
    variant_count,
    variants,
)

GROUP_OF = {ch: g for g in CONFUSABLE_GROUPS for ch in g}
plates = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=10)


def test_plate_without_confusable_characters_has_only_itself() -> None:
    result = variants("AXY")
    assert result.plates == ("AXY",)
    assert not result.truncated and result.total == 1


def test_every_group_is_expanded() -> None:
    assert set(variants("0").plates) == set("O0QD")
    assert set(variants("1").plates) == set("I1L")
    assert set(variants("B8").plates) == {"B8", "88", "BB", "8B"}
    assert set(variants("S").plates) == {"S", "5"}
    assert set(variants("Z").plates) == {"Z", "2"}
    assert set(variants("6").plates) == {"6", "G"}


def test_full_set_for_a_mixed_plate() -> None:
    result = variants("ABC123")  # B: 2, 1: 3, 2: 2 -> 12
    assert result.total == 12 and len(result.plates) == 12 and not result.truncated
    assert "A8CL2" not in result.plates  # wrong length can never appear
    assert "A8CLZ3" in result.plates


@given(plates)
def test_variants_are_valid_same_length_in_group_swaps_nearest_first(plate: str) -> None:
    result = variants(plate, limit=200)
    assert result.plates[0] == plate
    assert len(set(result.plates)) == len(result.plates)
    distances = [substitutions(plate, v) for v in result.plates]
    assert distances == sorted(distances)
    for v in result.plates:
        assert re.fullmatch(r"[A-Z0-9]{1,10}", v) and len(v) == len(plate)
        for a, b in zip(plate, v, strict=True):
            assert a == b or GROUP_OF.get(a) is not None and b in GROUP_OF[a]
    assert result.truncated == (variant_count(plate) > 200)
    assert len(result.plates) == min(200, variant_count(plate))


def test_long_confusable_plate_is_bounded_and_keeps_the_nearest() -> None:
    plate = "O0QD0O0QD0"  # 4**10 = 1,048,576 spellings
    result = variants(plate)
    assert result.total == 4**10
    assert result.truncated and len(result.plates) == MAX_VARIANTS
    # 1 + all 30 single substitutions + all 405 double ones fit below the bound.
    assert sum(substitutions(plate, v) == 1 for v in result.plates) == 30
    assert sum(substitutions(plate, v) == 2 for v in result.plates) == 45 * 9
    assert max(substitutions(plate, v) for v in result.plates) == 3


def test_limit_must_be_positive() -> None:
    import pytest

    with pytest.raises(ValueError):
        variants("ABC", limit=0)
