"""Plate, jurisdiction and plate key normalization (contract section 1)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.plates import (
    InvalidPlate,
    Jurisdiction,
    Plate,
    PlateKey,
    normalize_jurisdiction,
    normalize_plate,
    parse_plate_key,
    plate_key,
)

VALID_PLATES = [
    ("ABC123", "ABC123"),
    ("abc123", "ABC123"),
    ("aBc123", "ABC123"),
    ("abc-123", "ABC123"),
    ("ABC 123", "ABC123"),
    ("A.B.C.1.2.3", "ABC123"),
    ("  abc 123  ", "ABC123"),
    ("a - b . c", "ABC"),
    ("--ABC--", "ABC"),
    ("1", "1"),
    ("x", "X"),
    ("0O0O", "0O0O"),  # no O/0 folding
    ("I1L1", "I1L1"),  # no I/1 folding
    ("ABCDEFGHIJ", "ABCDEFGHIJ"),  # exactly 10
    ("ABCDE-FGHIJ", "ABCDEFGHIJ"),  # 10 after removing the separator
    ("1234567890", "1234567890"),
    ("ab cd-ef.gh ij", "ABCDEFGHIJ"),
]

INVALID_PLATES = [
    "",
    " ",
    "-",
    ".",
    " - . ",
    "-----",
    "ABCDEFGHIJK",  # 11
    "12345678901",
    "A" * 65,  # over the raw length limit
    " " * 100 + "A",
    "\u0410BC123",  # Cyrillic capital A
    "\u0430bc123",  # Cyrillic small a
    "AB\u039f123",  # Greek capital omicron
    "\uff11\uff12\uff13",  # full-width digits
    "\uff21\uff22\uff23",  # full-width letters
    "ABC\u00a0123",  # no-break space
    "ABC\u200b123",  # zero-width space
    "\ufeffABC",  # BOM
    "ABC\x00",
    "ABC\n",
    "\nABC",
    "ABC\t123",
    "ABC\r123",
    "ABC_123",
    "ABC/123",
    "ABC*",
    "ABC%20",
    "ABC'; DROP TABLE plates;--",
    "' OR '1'='1",
    "<script>",
    "ABC\U0001f697",  # emoji
    "\U0001f697",
    "stra\u00dfe",  # sharp s upper-cases to SS
    "\ufb00",  # ligature ff upper-cases to FF
    "\u0131",  # dotless i
    "\u212a",  # Kelvin sign
    "ABC\u0301",  # combining accent
    "١٢٣",  # Arabic-Indic digits
]

VALID_JURISDICTIONS = [
    ("CA-ON", "CA-ON"),
    ("ca-on", "CA-ON"),
    ("Ca-On", "CA-ON"),
    ("us-ny", "US-NY"),
    ("CA-QC", "CA-QC"),
    (" CA-ON ", "CA-ON"),
    ("FR-75", "FR-75"),
    ("GB-ENG", "GB-ENG"),
    ("DE-B", "DE-B"),
    ("ES-M1", "ES-M1"),
]

INVALID_JURISDICTIONS = [
    "",
    " ",
    "ONT",
    "CA_ON",
    "CA-ONTX",
    "C-ON",
    "CAON",
    "CAN-ON",
    "CA-",
    "-ON",
    "CA--ON",
    "CA ON",
    "C A-ON",
    "CA-O N",
    "12-ON",
    "CA-ON/ABC",
    "CA-ON\n",
    "\tCA-ON",
    "CA-ON\x00",
    "\u0421A-ON",  # Cyrillic capital Es
    "CA-\u039fN",  # Greek capital omicron
    "\uff23\uff21-ON",  # full-width
    "CA\u2010ON",  # Unicode hyphen
    "CA\u2013ON",  # en dash
    "CA-ON\u200b",
    "CA-ON'; DROP TABLE plates;--",
    "CA-\U0001f697",
    "x" * 65,
]


@pytest.mark.parametrize(("raw", "expected"), VALID_PLATES)
def test_valid_plates(raw: str, expected: str) -> None:
    assert normalize_plate(raw) == expected
    assert normalize_plate(expected) == expected


@pytest.mark.parametrize("raw", INVALID_PLATES)
def test_invalid_plates(raw: str) -> None:
    with pytest.raises(InvalidPlate) as info:
        normalize_plate(raw)
    message = str(info.value)
    assert "plate" in message
    stripped = raw.strip(" -.")
    if len(stripped) >= 3:
        assert stripped not in message, "the message must not echo the input"


@pytest.mark.parametrize(("raw", "expected"), VALID_JURISDICTIONS)
def test_valid_jurisdictions(raw: str, expected: str) -> None:
    assert normalize_jurisdiction(raw) == expected


@pytest.mark.parametrize("raw", INVALID_JURISDICTIONS)
def test_invalid_jurisdictions(raw: str) -> None:
    with pytest.raises(InvalidPlate) as info:
        normalize_jurisdiction(raw)
    if len(raw.strip()) >= 3:
        assert raw.strip() not in str(info.value)


@pytest.mark.parametrize("value", [None, 123, b"ABC123", ["ABC"]])
def test_non_strings_are_invalid(value: object) -> None:
    with pytest.raises(InvalidPlate):
        normalize_plate(value)  # type: ignore[arg-type]
    with pytest.raises(InvalidPlate):
        normalize_jurisdiction(value)  # type: ignore[arg-type]
    with pytest.raises(InvalidPlate):
        parse_plate_key(value)  # type: ignore[arg-type]


def test_invalid_plate_is_a_value_error() -> None:
    assert issubclass(InvalidPlate, ValueError)


@pytest.mark.parametrize(
    ("jurisdiction", "plate", "key"),
    [
        ("ca-on", "abc-123", "CA-ON/ABC123"),
        ("CA-ON", "ABC 123", "CA-ON/ABC123"),
        ("us-ny", "x.1", "US-NY/X1"),
    ],
)
def test_plate_key_round_trip(jurisdiction: str, plate: str, key: str) -> None:
    assert plate_key(jurisdiction, plate) == key
    assert parse_plate_key(key) == tuple(key.split("/"))
    assert parse_plate_key(f"{jurisdiction}/{plate}") == tuple(key.split("/"))


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/",
        "CA-ON",
        "CA-ON/",
        "/ABC123",
        "CA-ON/ABC/123",
        "CA-ON//ABC123",
        "CA-ON\\ABC123",
        "CA_ON/ABC123",
        "CA-ON/ABCDEFGHIJK",
        "CA-ON/\u0410BC",
        "CA-ON/" + "A" * 200,
        "CA-ON/ABC\n",
    ],
)
def test_invalid_plate_keys(key: str) -> None:
    with pytest.raises(InvalidPlate):
        parse_plate_key(key)


def test_plate_key_rejects_invalid_parts() -> None:
    with pytest.raises(InvalidPlate):
        plate_key("ONT", "ABC123")
    with pytest.raises(InvalidPlate):
        plate_key("CA-ON", "")


class _Model(BaseModel):
    jurisdiction: Jurisdiction
    plate: Plate
    key: PlateKey


def test_annotated_types_normalize() -> None:
    model = _Model(jurisdiction="ca-on", plate="abc-123", key="us-ny/x 1")
    assert (model.jurisdiction, model.plate, model.key) == ("CA-ON", "ABC123", "US-NY/X1")
    assert (
        _Model.model_validate_json(
            '{"jurisdiction": "ca-on", "plate": "abc 123", "key": "ca-on/abc.123"}'
        ).key
        == "CA-ON/ABC123"
    )


def test_annotated_types_report_invalid_plate_without_value() -> None:
    with pytest.raises(ValidationError) as info:
        _Model(jurisdiction="ONT", plate="SECRET\u0410", key="CA-ON/SECRET12345")
    errors = info.value.errors(include_input=False)
    assert {e["type"] for e in errors} == {"invalid_plate"}
    assert [e["loc"] for e in errors] == [("jurisdiction",), ("plate",), ("key",)]
    assert not any("SECRET" in e["msg"] for e in errors)


def test_annotated_types_reject_non_strings() -> None:
    with pytest.raises(ValidationError):
        _Model(jurisdiction="CA-ON", plate=123, key="CA-ON/X")  # type: ignore[arg-type]


_PLATE_RE = re.compile(r"[A-Z0-9]{1,10}")


@given(st.text(max_size=80))
def test_normalize_plate_never_crashes_and_is_idempotent(raw: str) -> None:
    try:
        plate = normalize_plate(raw)
    except InvalidPlate:
        return
    assert _PLATE_RE.fullmatch(plate)
    assert plate.isascii()
    assert normalize_plate(plate) == plate


@given(st.text(alphabet="abcXYZ019 -.", min_size=1, max_size=20))
def test_separators_and_case_do_not_matter(raw: str) -> None:
    core = raw.replace(" ", "").replace("-", "").replace(".", "").upper()
    if 1 <= len(core) <= 10:
        assert normalize_plate(raw) == core
    else:
        with pytest.raises(InvalidPlate):
            normalize_plate(raw)


@given(st.text(max_size=30))
def test_normalize_jurisdiction_output_shape(raw: str) -> None:
    try:
        code = normalize_jurisdiction(raw)
    except InvalidPlate:
        return
    assert re.fullmatch(r"[A-Z]{2}-[A-Z0-9]{1,3}", code)
    assert normalize_jurisdiction(code) == code
