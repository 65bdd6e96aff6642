"""Signed producers without servers: the signed bytes of both content modes, the signature
(checked against an HMAC written here from RFC 2104, not the code's), the consumer's checks
in their order, and binary mode read as the same event as structured mode."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import orjson
import pytest

from platereg.kafka import Record
from platereg.security.producer_store import Producer, Producers
from registry.consumer import signatures
from registry.consumer.batch import Parsed, Rejected, parse_values
from registry.consumer.signatures import verify
from schemas.content_modes import http_binary_event, kafka_binary_event
from schemas.signing import (
    ProducerError,
    Signer,
    check_prefixes,
    is_binary,
    keyed,
    matches,
    new_secret,
    signature,
    signed_bytes,
)
from schemas.validation import Rejection

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
SECRET, OTHER = "A" * 43, "B" * 43
SIGNER = Signer.of("office-42", SECRET)
EVENT = {"specversion": "1.0", "id": "e1", "source": "/registry/office/42",
         "type": "plate.renewed", "time": "2026-11-24T15:04:05Z", "subject": "ca-on/abc 123",
         "datacontenttype": "application/json", "data": {"expires_on": "2027-11-30"}}
BINARY_HEADERS = (("ce_specversion", b"1.0"), ("ce_id", b"e1"),
                  ("ce_source", b"/registry/office/42"), ("ce_type", b"plate.renewed"),
                  ("ce_time", b"2026-11-24T15:04:05Z"), ("ce_subject", b"ca-on/abc 123"),
                  ("content-type", b"application/json"))
DATA = b'{"expires_on": "2027-11-30"}'


def rfc2104_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 from its definition (RFC 2104), independent of the hmac module."""
    block = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + message).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in block) + inner).digest()


def producers(*extra: Producer) -> Producers:
    found = {"office-42": Producer("office-42", ("/registry/",), (SECRET.encode(),))}
    found.update((p.name, p) for p in extra)
    return Producers(found, 1)


def message(value: bytes | None, headers: tuple = (), offset: int = 0) -> Record:
    return Record(b"CA-ON/ABC123", value, 0, offset, tuple(headers))


def signed(value: bytes | None, headers: tuple = (), signer: Signer = SIGNER,
           offset: int = 0) -> Record:
    return message(value, tuple(signer.headers(value, headers)), offset)


def checked(*records: Record, known: Producers | None = None) -> list[Parsed | Rejected]:
    return verify(parse_values(list(records), NOW), list(records), known or producers())


# --------------------------------------------------------------------------- signed bytes

def test_structured_mode_signs_the_exact_value_bytes() -> None:
    value = orjson.dumps(EVENT)
    assert signed_bytes([("content-type", b"application/cloudevents+json")], value) == value
    expected = b"v1=" + base64.urlsafe_b64encode(
        rfc2104_sha256(SECRET.encode(), value)).rstrip(b"=")
    assert signature(SECRET.encode(), [], value) == expected
    assert len(expected) == 3 + 43


def test_binary_mode_signs_the_sorted_ce_headers_then_the_value() -> None:
    headers = [("ce_type", b"plate.renewed"), ("content-type", b"application/json"),
               ("ce_id", b"e1"), ("x-trace", b"abc")]
    assert signed_bytes(headers, DATA) == (
        b"ce_id:e1\nce_type:plate.renewed\n\n" + DATA)
    assert is_binary(headers) and not is_binary([("CE_ID", b"e1"), ("content-type", b"x")])


def test_no_attribute_of_a_binary_message_can_change_under_its_signature() -> None:
    headers = list(BINARY_HEADERS)
    claimed = signature(SECRET.encode(), headers, DATA)
    keys = (keyed(SECRET.encode()),)
    assert matches(keys, headers, DATA, claimed)
    forged_source = [(n, b"/police/forged" if n == "ce_source" else v) for n, v in headers]
    assert not matches(keys, forged_source, DATA, claimed)
    assert not matches(keys, [*headers, ("ce_authid", b"k1")], DATA, claimed)
    assert not matches(keys, [h for h in headers if h[0] != "ce_subject"], DATA, claimed)
    assert not matches(keys, headers, DATA + b" ", claimed)
    # a header that is not an attribute is not read as the event, and not signed
    assert matches(keys, [*headers, ("x-trace", b"abc")], DATA, claimed)


def test_secrets_and_prefixes_are_checked() -> None:
    assert len(new_secret()) == 43
    with pytest.raises(ProducerError):
        Signer.of("office-42", "short")
    with pytest.raises(ProducerError):
        Signer.of("bad name", SECRET)
    with pytest.raises(ProducerError):
        check_prefixes([])
    assert check_prefixes(["/b/", "/a/", "/b/"]) == ("/a/", "/b/")


# --------------------------------------------------------------------------- the checks

def test_a_correctly_signed_message_passes_in_either_mode() -> None:
    structured, binary = checked(signed(orjson.dumps(EVENT)),
                                 signed(DATA, BINARY_HEADERS, offset=1))
    assert isinstance(structured, Parsed) and isinstance(binary, Parsed)
    assert structured.producer == binary.producer == "office-42"
    # binary mode is read as the same event: same identity and content fingerprint
    assert (binary.source, binary.event_id, binary.fingerprint, binary.plate_key) == (
        structured.source, structured.event_id, structured.fingerprint, "CA-ON/ABC123")


@pytest.mark.parametrize(("record", "detail"), [
    (message(orjson.dumps(EVENT)), signatures.UNSIGNED),
    (message(orjson.dumps(EVENT), (("platereg-producer", b"office-42"),)),
     signatures.NO_SIGNATURE),
    (signed(orjson.dumps(EVENT), signer=Signer.of("office-42", OTHER)), signatures.BAD_SIGNATURE),
    (signed(orjson.dumps(EVENT), signer=Signer.of("stranger", SECRET)), signatures.UNKNOWN),
    (signed(orjson.dumps(EVENT), signer=Signer.of("gone", SECRET)), signatures.REVOKED),
    (signed(orjson.dumps({**EVENT, "source": "/police/1"})), signatures.OUT_OF_SCOPE),
    (message(orjson.dumps(EVENT), (*SIGNER.headers(orjson.dumps(EVENT)),
                                   ("platereg-producer", b"office-42"))),
     signatures.TWO_PRODUCERS),
])
def test_each_failing_check_is_named(record: Record, detail: str) -> None:
    gone = Producer("gone", ("/",), (), revoked=True)
    (result,) = checked(record, known=producers(gone))
    assert isinstance(result, Rejected)
    assert (result.reason, result.detail) == ("unauthorized_source", detail)
    assert result.type_label == "plate.renewed"   # the metrics label of a valid event


def test_a_forged_ce_source_under_a_valid_value_signature_is_refused() -> None:
    """Binary mode signed as structured (over the value only), then ce_source set to a
    police source: the signature no longer matches."""
    headers = tuple((n, b"/police/forged" if n == "ce_source" else v) for n, v in BINARY_HEADERS)
    value_only = (("platereg-producer", b"office-42"),
                  ("platereg-signature", signature(SECRET.encode(), [], DATA)))
    (result,) = checked(message(DATA, (*headers, *value_only)))
    assert (result.reason, result.detail) == ("unauthorized_source", signatures.BAD_SIGNATURE)


def test_both_secrets_pass_during_a_rotation_and_a_retired_one_does_not() -> None:
    rotating = Producer("office-42", ("/registry/",), (OTHER.encode(), SECRET.encode()))
    old, new = (signed(orjson.dumps(EVENT), signer=Signer.of("office-42", s)) for s in
                (SECRET, OTHER))
    assert all(isinstance(r, Parsed) for r in checked(old, new, known=producers(rotating)))
    retired = Producer("office-42", ("/registry/",), (OTHER.encode(),))
    old_result, new_result = checked(old, new, known=producers(retired))
    assert isinstance(new_result, Parsed)
    assert (old_result.reason, old_result.detail) == ("unauthorized_source",
                                                      signatures.BAD_SIGNATURE)


def test_the_signature_is_checked_before_the_content() -> None:
    garbage = b'{"specversion": "1.0", oops'
    unsigned, signed_garbage = checked(message(garbage), signed(garbage, offset=1))
    assert (unsigned.reason, unsigned.detail) == ("unauthorized_source", signatures.UNSIGNED)
    assert signed_garbage.reason == "malformed_json"


# --------------------------------------------------------------------------- binary mode

def test_binary_mode_problems_are_classified() -> None:
    def reason(headers: tuple, value: bytes | None) -> str:
        with pytest.raises(Rejection) as exc:
            kafka_binary_event(headers, value)
        return exc.value.reason.value

    assert reason((*BINARY_HEADERS, ("ce_id", b"e2")), DATA) == "schema_invalid"
    assert reason((*BINARY_HEADERS, ("ce_data", b"{}")), DATA) == "schema_invalid"
    assert reason((*BINARY_HEADERS, ("ce_agency", b"\xff")), DATA) == "schema_invalid"
    assert reason(BINARY_HEADERS, b"{not json") == "malformed_json"
    assert reason(BINARY_HEADERS, b" " * (64 * 1024 + 1)) == "too_large"
    (missing,) = parse_values([message(DATA, BINARY_HEADERS[1:])], NOW)
    assert (missing.reason, missing.detail.split(";")[0]) == ("schema_invalid",
                                                            "specversion: field required")


def test_http_binary_mode_decodes_percent_encoded_headers() -> None:
    headers = [(b"Ce-Id", b"e1"), (b"ce-source", b"%2Fregistry%2Foffice%2F42"),
               (b"ce-time", b"2026-11-24T15%3A04%3A05Z"), (b"ce-type", b"plate.renewed"),
               (b"CE-SPECVERSION", b"1.0"), (b"ce-subject", b"CA-ON%2FABC123"),
               (b"authorization", b"Bearer x")]
    event = http_binary_event(headers, "application/json", DATA)
    assert event == {"id": "e1", "source": "/registry/office/42",
                     "time": "2026-11-24T15:04:05Z", "type": "plate.renewed",
                     "specversion": "1.0", "subject": "CA-ON/ABC123",
                     "datacontenttype": "application/json", "data": {"expires_on": "2027-11-30"}}


def test_the_parse_workers_read_binary_mode_as_the_consumer_does() -> None:
    """The worker path (parse_compact, pickled, expand_compact) gives what parse_values
    gives, binary-mode messages, their producer and their authcontext included."""
    import pickle

    from registry.consumer.batch import expand_compact, parse_compact

    stamped = (*BINARY_HEADERS, ("ce_authtype", b"api_key"), ("ce_authid", b"k1"))
    records = [signed(orjson.dumps(EVENT)), signed(DATA, stamped, offset=1),
               signed(b"{oops", BINARY_HEADERS, offset=2)]
    binary = [r.headers if is_binary(r.headers) else None for r in records]
    sent = pickle.loads(pickle.dumps(parse_compact([r.value for r in records], NOW, binary)))  # noqa: S301 - our bytes
    assert expand_compact(sent, records) == parse_values(records, NOW)
    structured, stamped_event, bad = expand_compact(sent, records)
    assert (stamped_event.producer, stamped_event.authtype, stamped_event.authid) == (
        "office-42", "api_key", "k1")
    assert structured.authid is None and bad.reason == "malformed_json"
