"""ALPR-confusable plate variants (pure).

A camera that reads ``0`` may have seen ``O``, ``Q`` or ``D``. Given a
normalized plate, :func:`variants` lists the plates that differ from it only
by swapping characters inside these groups (contract section 5):

    O 0 Q D  |  I 1 L  |  B 8  |  S 5  |  Z 2  |  G 6

Bounding the work
-----------------
A 10-character plate made only of ``O``/``0``/``Q``/``D`` has 4**10 (about a
million) variants, so the set is generated *nearest first* (0 substitutions,
then every variant with 1 substitution, then 2, ...) and generation stops at
``limit`` variants (:data:`MAX_VARIANTS` by default). The caller is told when
the set was cut (``truncated``); the variants it gets are always the ones
closest to the plate that was read. The work is O(limit * plate length) plus
enumerating position subsets, which stops with the limit as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations, product

CONFUSABLE_GROUPS: tuple[str, ...] = ("O0QD", "I1L", "B8", "S5", "Z2", "G6")
MAX_VARIANTS = 1024

_ALTERNATIVES: dict[str, str] = {
    ch: "".join(other for other in group if other != ch)
    for group in CONFUSABLE_GROUPS
    for ch in group
}


@dataclass(frozen=True, slots=True)
class VariantSet:
    plates: tuple[str, ...]     # the plate itself first, then by number of substitutions
    truncated: bool             # True when the full set is larger than the limit
    total: int                  # size of the full set (computed, not generated)


def variant_count(plate: str) -> int:
    """How many variants (the plate itself included) the full set has."""
    count = 1
    for ch in plate:
        count *= 1 + len(_ALTERNATIVES.get(ch, ""))
    return count


def _nearest_first(plate: str) -> Iterator[str]:
    positions = [i for i, ch in enumerate(plate) if ch in _ALTERNATIVES]
    chars = list(plate)
    yield plate
    for k in range(1, len(positions) + 1):
        for chosen in combinations(positions, k):
            for replacement in product(*(_ALTERNATIVES[plate[i]] for i in chosen)):
                variant = chars.copy()
                for i, ch in zip(chosen, replacement, strict=True):
                    variant[i] = ch
                yield "".join(variant)


def variants(plate: str, limit: int = MAX_VARIANTS) -> VariantSet:
    """The plate's confusable variants, nearest first, at most ``limit`` of them.

    ``plate`` must already be normalized (``schemas.plates.normalize_plate``);
    every variant is then a valid normalized plate too (same length, same
    alphabet).
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    total = variant_count(plate)
    out: list[str] = []
    for variant in _nearest_first(plate):
        out.append(variant)
        if len(out) >= limit:
            break
    return VariantSet(plates=tuple(out), truncated=total > len(out), total=total)


def substitutions(a: str, b: str) -> int:
    """Number of positions where two same-length plates differ."""
    return sum(x != y for x, y in zip(a, b, strict=True))
