"""Plate identity: jurisdiction codes, plate numbers and plate keys (contract section 1).

Normalization rules
-------------------
* ``jurisdiction``: surrounding ASCII spaces are stripped, the rest is upper-cased
  and must then match ``^[A-Z]{2}-[A-Z0-9]{1,3}$``. Tabs, newlines and any other
  character are *not* stripped and make the value invalid.
* ``plate``: upper-cased, every space, ``-`` and ``.`` removed; the result must
  match ``^[A-Z0-9]{1,10}$``. No O/0 or I/1 folding.
* Only ASCII is ever accepted. The ASCII check happens *before* upper-casing,
  because ``str.upper()`` maps some non-ASCII characters onto ASCII ones
  (``"ß".upper() == "SS"``, ``"ﬀ".upper() == "FF"``), and Unicode look-alikes
  (Cyrillic ``А``, Greek ``Ο``, full-width digits) must never alias real plates.
* Raw input longer than :data:`MAX_RAW_LENGTH` characters is rejected before any
  other work, to bound the cost of hostile input.

Error messages (:class:`InvalidPlate`) describe the rule that was broken and
never contain the offending text: plates are personal data and these messages
end up in logs, DLQ headers and HTTP problem responses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, Field, Strict
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_RAW_LENGTH",
    "JURISDICTION_PATTERN",
    "PLATE_PATTERN",
    "PLATE_KEY_PATTERN",
    "InvalidPlate",
    "normalize_jurisdiction",
    "normalize_plate",
    "plate_key",
    "parse_plate_key",
    "Jurisdiction",
    "Plate",
    "PlateKey",
]

#: Longest raw (un-normalized) jurisdiction or plate input that is looked at.
MAX_RAW_LENGTH = 64

JURISDICTION_PATTERN = r"^[A-Z]{2}-[A-Z0-9]{1,3}$"
PLATE_PATTERN = r"^[A-Z0-9]{1,10}$"
PLATE_KEY_PATTERN = r"^[A-Z]{2}-[A-Z0-9]{1,3}/[A-Z0-9]{1,10}$"

_JURISDICTION_RE = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}", re.ASCII)
_PLATE_RE = re.compile(r"[A-Z0-9]{1,10}", re.ASCII)
_PLATE_SEPARATORS = str.maketrans("", "", " -.")
_CANONICAL_KEY_RE = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}/[A-Z0-9]{1,10}", re.ASCII)


class InvalidPlate(ValueError):
    """A jurisdiction, plate or plate key that does not normalize to a valid value.

    The message names the broken rule, never the input text.
    """


def _check_raw(value: object, what: str, max_length: int = MAX_RAW_LENGTH) -> str:
    if not isinstance(value, str):
        raise InvalidPlate(f"{what} must be a string")
    if len(value) > max_length:
        raise InvalidPlate(
            f"{what} is too long (at most {max_length} characters before normalization)"
        )
    if not value.isascii():
        raise InvalidPlate(f"{what} must contain only ASCII characters")
    return value


def normalize_jurisdiction(value: str) -> str:
    """Return the canonical ISO 3166-2 shaped code, e.g. ``" ca-on "`` -> ``"CA-ON"``.

    Raises :class:`InvalidPlate` if the result does not match ``^[A-Z]{2}-[A-Z0-9]{1,3}$``.
    """
    code = _check_raw(value, "jurisdiction").strip(" ").upper()
    if not _JURISDICTION_RE.fullmatch(code):
        raise InvalidPlate(f"jurisdiction must match {JURISDICTION_PATTERN} after upper-casing")
    return code


def normalize_plate(value: str) -> str:
    """Return the canonical plate, e.g. ``"abc-123"`` -> ``"ABC123"``.

    Raises :class:`InvalidPlate` if the result does not match ``^[A-Z0-9]{1,10}$``.
    """
    plate = _check_raw(value, "plate").translate(_PLATE_SEPARATORS).upper()
    if not _PLATE_RE.fullmatch(plate):
        raise InvalidPlate(
            f"plate must match {PLATE_PATTERN} after upper-casing and removing spaces, '-' and '.'"
        )
    return plate


def plate_key(jurisdiction: str, plate: str) -> str:
    """Normalize both parts and return the plate key ``"JURISDICTION/PLATE"``."""
    return f"{normalize_jurisdiction(jurisdiction)}/{normalize_plate(plate)}"


def parse_plate_key(key: str) -> tuple[str, str]:
    """Split a plate key on its single ``/`` and normalize both parts.

    ``"ca-on/abc-123"`` -> ``("CA-ON", "ABC123")``.
    """
    if type(key) is str and _CANONICAL_KEY_RE.fullmatch(key):
        # Already normalized (the common case): every check below passes unchanged.
        jurisdiction, _, plate = key.partition("/")
        return jurisdiction, plate
    key = _check_raw(key, "plate key", 2 * MAX_RAW_LENGTH + 1)
    if key.count("/") != 1:
        raise InvalidPlate("plate key must be JURISDICTION/PLATE with exactly one '/'")
    jurisdiction, plate = key.split("/")
    return normalize_jurisdiction(jurisdiction), normalize_plate(plate)


def _pydantic(fn: Callable[[str], str]) -> Callable[[str], str]:
    """Wrap a normalizer so pydantic reports a stable error type ``invalid_plate``."""

    def validate(value: str) -> str:
        try:
            return fn(value)
        except InvalidPlate as exc:
            raise PydanticCustomError("invalid_plate", str(exc)) from None

    validate.__name__ = f"validate_{fn.__name__}"
    return validate


def _normalize_key(value: str) -> str:
    if _CANONICAL_KEY_RE.fullmatch(value):   # already normalized: the common case
        return value
    jurisdiction, plate = parse_plate_key(value)
    return f"{jurisdiction}/{plate}"


#: A jurisdiction code; validated and normalized (``"ca-on"`` -> ``"CA-ON"``).
Jurisdiction = Annotated[
    str,
    Strict(),
    AfterValidator(_pydantic(normalize_jurisdiction)),
    Field(
        description="ISO 3166-2 code, any case on input, upper case on output: "
        + JURISDICTION_PATTERN,
        examples=["CA-ON"],
    ),
]
#: A plate number; validated and normalized (``"abc 123"`` -> ``"ABC123"``).
Plate = Annotated[
    str,
    Strict(),
    AfterValidator(_pydantic(normalize_plate)),
    Field(
        description="Plate number; upper-cased with spaces, '-' and '.' removed it must match "
        + PLATE_PATTERN,
        examples=["ABC123"],
    ),
]
#: A plate key ``JURISDICTION/PLATE``; validated and normalized.
PlateKey = Annotated[
    str,
    Strict(),
    AfterValidator(_pydantic(_normalize_key)),
    Field(
        description="Plate key JURISDICTION/PLATE, both parts normalized: " + PLATE_KEY_PATTERN,
        examples=["CA-ON/ABC123"],
    ),
]
