"""Request and file parsing of the ingest package, without servers."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import orjson
import pytest

from ingest.api import MAX_BATCH, events_of, media_type, validate_batch
from ingest.importer import (
    ImportUsageError,
    csv_lines,
    detect_format,
    ndjson_lines,
    row_to_event,
)
from ingest.publisher import record_of
from platereg.http import ProblemError
from schemas.policy import DEFAULT_POLICY, compile_policy
from schemas.validation import Rejection, parse_event_bytes, parse_event_obj

NOW = datetime.now(UTC)


def event(subject: str = "CA-ON/ABC123", id: str = "e-1") -> dict:
    return {"specversion": "1.0", "id": id, "source": "/x", "type": "plate.renewed",
            "time": "2026-01-01T00:00:00Z", "subject": subject,
            "data": {"expires_on": "2027-01-01"}}


# --------------------------------------------------------------------------- API


BATCH_TYPE = "application/cloudevents-batch+json"


@pytest.mark.parametrize("raw,kind", [
    (orjson.dumps([event(id="a"), event("ca-on/abc 123", id="b")]), BATCH_TYPE),
    (orjson.dumps(event()), "application/cloudevents+json"),
    (orjson.dumps([event()], option=orjson.OPT_INDENT_2), "application/json"),
])
def test_a_valid_batch_gives_what_each_event_gives_alone(raw: bytes, kind: str) -> None:
    items = events_of(raw, kind)
    events, errors = validate_batch(items, NOW, depth_known=True)
    assert errors == []
    assert events == [parse_event_obj(item, now=NOW).obj for item in items]


def test_each_invalid_item_of_a_batch_gets_its_own_rejection() -> None:
    items = [event(id="a"), {**event(id="b"), "time": "bad"}, event("CA-ON/A B C $", id="c"),
             {**event(id="d"), "data": {}, "x!": 1}, [1], event(id="e"),
             {**event(id="f"), "type": "plate.nope"},
             {**event(id="g"), "time": "2100-01-01T00:00:00Z"}]
    events, errors = validate_batch(items, NOW)
    expected = []
    for index, item in enumerate(items):
        try:
            parse_event_obj(item, now=NOW)
        except Rejection as exc:
            expected.append({"index": index, "reason": exc.reason.value, "detail": exc.detail})
    assert errors == expected
    assert [e["reason"] for e in errors] == ["schema_invalid", "invalid_plate", "schema_invalid",
                                             "malformed_json", "unknown_type", "future_time"]
    assert [e["id"] for e in events] == ["a", "e"]


@pytest.mark.parametrize("header,kind", [
    ("application/cloudevents+json", "application/cloudevents+json"),
    ("Application/CloudEvents-Batch+JSON", "application/cloudevents-batch+json"),
    ("application/json; charset=utf-8", "application/json"),
    ('application/json;charset="UTF-8"', "application/json"),
    ("application/json; foo=bar", "application/json"),
])
def test_media_types_accepted(header: str, kind: str) -> None:
    assert media_type(header) == kind


@pytest.mark.parametrize("header", [None, "", "text/plain", "application/xml",
                                    "application/json; charset=latin-1", "multipart/form-data",
                                    "application/jsonx", "x" * 10_000])
def test_media_types_refused_with_415(header: str | None) -> None:
    with pytest.raises(ProblemError) as info:
        media_type(header)
    assert info.value.status == 415


@pytest.mark.parametrize("body,kind,status", [
    (b"nope", "application/json", 400),
    (b"[]", "application/json", 400),
    (b"3", "application/json", 400),
    (b"{}", "application/cloudevents-batch+json", 400),
    (b"[{}]", "application/cloudevents+json", 400),
    (orjson.dumps([{}] * (MAX_BATCH + 1)), "application/json", 400),
])
def test_body_shapes_refused(body: bytes, kind: str, status: int) -> None:
    with pytest.raises(ProblemError) as info:
        events_of(body, kind)
    assert info.value.status == status


def test_body_shapes_accepted() -> None:
    assert events_of(b"{}", "application/json") == [{}]
    assert events_of(b"[{}, 1]", "application/json") == [{}, 1]
    assert len(events_of(orjson.dumps([{}] * MAX_BATCH), "application/cloudevents-batch+json")) \
        == MAX_BATCH


def test_validate_batch_lists_every_invalid_index() -> None:
    items = [event(id="a"), event("CA-ON/#"), {"x": 1}, event(id="a"),
             {**event(id="a"), "time": "2026-01-02T00:00:00Z"}, 7,
             {**event(id="a"), "source": "/other"}]
    events, errors = validate_batch(items, NOW)
    assert [(e["index"], e["reason"]) for e in errors] == [
        (1, "invalid_plate"), (2, "schema_invalid"), (4, "id_conflict"), (5, "malformed_json")]
    # the same id from another source is another event (contract: (source, id))
    assert [(e["source"], e["id"]) for e in events] == [("/x", "a"), ("/x", "a"), ("/other", "a")]


def test_validate_batch_refuses_sources_outside_the_key_or_the_policy() -> None:
    policy = compile_policy(DEFAULT_POLICY)
    renewal = {**event(id="r"), "source": "/registry/office/7"}
    stolen = {**event(id="s"), "source": "/insurance/acme/1", "type": "plate.stolen_reported",
              "data": {"agency": "X", "report_id": "1"}}
    lapse = {**event(id="l"), "source": "/insurance/acme/1", "type": "plate.suspended",
             "data": {"reason": "insurance_lapsed"}}
    court = {**lapse, "id": "c", "data": {"reason": "court_order"}}
    events, errors = validate_batch([renewal, stolen, lapse, court], NOW,
                                    sources=["/insurance/acme/"], policy=policy)
    assert [(e["index"], e["reason"]) for e in errors] == [
        (0, "unauthorized_source"), (1, "unauthorized_source"), (3, "unauthorized_source")]
    assert "prefixes of this API key" in errors[0]["detail"]
    assert "plate.stolen_reported" in errors[1]["detail"]
    assert "court_order" in errors[2]["detail"]
    assert [e["id"] for e in events] == ["l"]


def test_published_record_carries_the_authcontext() -> None:
    events, _ = validate_batch([event(id="a")], NOW)
    value = orjson.loads(record_of(events[0], "k123").value)
    assert (value["authtype"], value["authid"]) == ("api_key", "k123")
    forged, _ = validate_batch([{**event(id="a"), "authid": "someone-else"}], NOW)
    assert orjson.loads(record_of(forged[0], "k123").value)["authid"] == "k123"
    # the authcontext is not content: the stamped record is the same event
    again = parse_event_bytes(record_of(events[0], "k123").value, now=NOW)
    assert again.fingerprint() == parse_event_obj(event(id="a"), now=NOW).fingerprint()


# --------------------------------------------------------------------------- NDJSON


def lines_of(data: bytes) -> list:
    return list(ndjson_lines(io.BufferedReader(io.BytesIO(data)), NOW))


def test_ndjson_lines_numbers_blank_bom_crlf() -> None:
    data = (b"\xef\xbb\xbf" + orjson.dumps(event()) + b"\r\n\r\n  \n"
            + orjson.dumps(event("bad")) + b"\n" + orjson.dumps(event(id="2")))
    lines = lines_of(data)
    assert [(ln.number, ln.event is not None, ln.rejection and ln.rejection.reason)
            for ln in lines] == [(1, True, None), (2, False, None), (3, False, None),
                                 (4, False, "invalid_plate"), (5, True, None)]


def test_ndjson_overlong_line_is_skipped_in_bounded_memory() -> None:
    huge = b'{"a": "' + b"x" * 5_000_000 + b'"}'
    lines = lines_of(huge + b"\n" + orjson.dumps(event()) + b"\n")
    assert lines[0].rejection.reason == "too_large" and len(lines[0].raw) < 300
    assert lines[1].number == 2 and lines[1].event is not None


def test_ndjson_line_exactly_at_the_limit() -> None:
    from schemas.validation import MAX_EVENT_BYTES

    base = orjson.dumps({**event(), "note": ""})
    pad = MAX_EVENT_BYTES - len(base)
    exact = orjson.dumps({**event(), "note": "y" * pad})
    assert len(exact) == MAX_EVENT_BYTES
    lines = lines_of(exact + b"\r\n" + exact + b"y\n")
    assert lines[0].event is not None
    assert lines[1].rejection is not None


# --------------------------------------------------------------------------- CSV


def csv_of(text: bytes) -> list:
    return list(csv_lines(io.BufferedReader(io.BytesIO(text)), NOW))


def test_csv_rows() -> None:
    body = (b"id,source,type,time,subject,data.expires_on\n"
            b"a,/x,plate.renewed,2026-01-01T00:00:00Z,ca-on/abc-123,2027-01-01\n"
            b'"b",/x,plate.renewed,2026-01-01T00:00:00Z,"CA-ON/AB""C",2027-01-01\n'
            b"c,/x,plate.renewed,2026-01-01T00:00:00Z,CA-ON/ABC\xff,2027-01-01\n"
            b"d,/x,plate.renewed,2026-01-01T00:00:00Z,CA-ON/A\n")
    rows = csv_of(body)
    assert rows[0].event.subject == "CA-ON/ABC123"
    assert [r.rejection.reason for r in rows[1:]] == ["invalid_plate", "malformed_csv",
                                                      "malformed_csv"]
    assert [r.number for r in rows] == [2, 3, 4, 5]


def test_csv_multiline_cells_keep_line_numbers() -> None:
    body = (b"id,source,type,time,subject,data.reason,data.detail\n"
            b'a,/x,plate.suspended,2026-01-01T00:00:00Z,CA-ON/A1,court_order,"two\nlines"\n'
            b"b,/x,plate.suspended,2026-01-01T00:00:00Z,CA-ON/A1,court_order,\n")
    rows = csv_of(body)
    assert rows[0].rejection.reason == "schema_invalid"      # control character in detail
    assert rows[1].event is not None
    assert [r.number for r in rows] == [2, 4]


def test_csv_unterminated_quote_is_bounded() -> None:
    body = (b"id,source,type,time,subject\n"
            b'a,/x,plate.renewed,2026-01-01T00:00:00Z,"CA-ON/A1\n' + b"x" * 200_000 + b"\n")
    rows = csv_of(body)
    assert rows and all(r.rejection is not None for r in rows)


@pytest.mark.parametrize("header,message", [
    (b"id,source,type,time\n", "lacks"),
    (b"id,source,type,time,subject,colour\n", "unknown CSV column"),
    (b"id,id,source,type,time,subject\n", "twice"),
    (b'id,"source\n', "not readable"),
])
def test_csv_bad_headers(header: bytes, message: str) -> None:
    with pytest.raises(ImportUsageError, match=message):
        csv_of(header + b"a,b,c,d,e\n")


def test_row_to_event_conflicts_and_types() -> None:
    from ingest.importer import BadRow

    names = ["id", "source", "type", "time", "subject", "data", "data.expires_on"]
    with pytest.raises(BadRow, match="given twice"):
        row_to_event(names, ["a", "/x", "plate.renewed", "t", "s",
                             '{"expires_on": "2027-01-01"}', "2027-01-01"])
    with pytest.raises(BadRow, match="JSON object"):
        row_to_event(names, ["a", "/x", "plate.renewed", "t", "s", "[1]", ""])
    names = ["id", "data.vehicle.year", "data.vehicle"]
    with pytest.raises(BadRow):
        row_to_event(names, ["a", "٣", ""])                   # non-ASCII digit


@pytest.mark.parametrize("name,head,fmt", [
    ("a.ndjson", b"id,x", "ndjson"), ("a.JSONL", b"", "ndjson"), ("a.csv", b"{", "csv"),
    ("a.txt", b"\xef\xbb\xbf  {", "ndjson"), ("a.txt", b"id,source", "csv"),
])
def test_detect_format(name: str, head: bytes, fmt: str) -> None:
    from pathlib import Path

    assert detect_format(Path(name), head) == fmt
