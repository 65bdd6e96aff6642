"""A catalogue of hostile plate-event values, shared by the validation unit tests and the
poison-message test against the real consumer.

Each case is the raw Kafka value a careless or hostile producer could send, the DLQ
reason it must get, and a fragment its detail must contain. Most are a valid event
with one part made hostile, so the case fails for exactly that part.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import orjson

GOOD_TIME = "2026-11-24T15:04:05Z"

ISSUED_DATA: dict[str, Any] = {
    "plate_class": "passenger",
    "expires_on": "2027-11-30",
    "vehicle": {"vin": "2HGFC2F59KH500001", "make": "Honda", "model": "Civic", "year": 2019,
                "colour": "blue"},
    "owner": {"owner_id": "own-42", "name": "Jeanne Tremblay", "email": "jeanne@example.org"},
}


@dataclass(frozen=True)
class Case:
    name: str
    value: bytes | None
    reason: str
    detail: str          # a fragment of the rejection detail


def base(subject: str = "CA-ON/HOST1", id: str = "hostile-0",
         time: str = GOOD_TIME) -> dict[str, Any]:
    return {"specversion": "1.0", "id": id, "source": "/registry/office/1",
            "type": "plate.issued", "time": time, "subject": subject,
            "datacontenttype": "application/json", "data": copy.deepcopy(ISSUED_DATA)}


def _with(path: tuple[str, ...], value: Any, **kw: Any) -> bytes:
    ev = base(**kw)
    target = ev
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return orjson.dumps(ev)


def _nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    for _ in range(depth):
        inner = {"n": inner}
    return inner


def _raw_year(token: bytes, **kw: Any) -> bytes:
    """The event with ``vehicle.year`` replaced by a raw JSON token (``NaN``...)."""
    return _with(("data", "vehicle", "year"), 123456789, **kw).replace(b"123456789", token)


def _raw_name(token: bytes, **kw: Any) -> bytes:
    return _with(("data", "owner", "name"), "PLACEHOLDER", **kw).replace(b"PLACEHOLDER", token)


BAD_TEXT = {
    "nul": "Jeanne\x00Tremblay",
    "escape": "Jeanne \x1b[31mred",
    "newline": "Jeanne\nBcc: x@example.org",
    "del": "Jeanne\x7f",
    "nel": "Jeanne\u0085Tremblay",
    "c1_csi": "Jeanne\u009b31m",
    "line_separator": "Jeanne\u2028Tremblay",
    "paragraph_separator": "Jeanne\u2029Tremblay",
    "rlo": "Jeanne \u202egnp.exe",
    "lro": "Jeanne \u202dTremblay",
    "rle": "Jeanne \u202bTremblay",
    "pdf": "Jeanne \u202cTremblay",
    "lri": "Jeanne \u2066Tremblay",
    "fsi": "Jeanne \u2068Tremblay",
    "pdi": "Jeanne \u2069Tremblay",
    "rlm": "Jeanne\u200fTremblay",
    "alm": "Jeanne\u061cTremblay",
}


def cases(subject: str = "CA-ON/HOST1", prefix: str = "hostile") -> list[Case]:
    """Every hostile value; ids are ``prefix-<n>`` so none is an id conflict."""
    out: list[Case] = []

    def add(name: str, reason: str, detail: str, build: Any) -> None:
        kw = {"subject": subject, "id": f"{prefix}-{len(out)}"}
        out.append(Case(name, build(kw), reason, detail))

    def timed(t: str) -> Any:
        return lambda kw: orjson.dumps(base(time=t, **kw))

    # times: sentinels asyncpg turns into infinities, out of range, odd offsets, leap seconds
    for t in ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z",
              "9999-12-31T23:59:59.999999Z", "1899-12-31T23:59:59Z", "2201-01-01T00:00:00Z",
              "1900-01-01T00:30:00+01:00"):
        add(f"time {t}", "schema_invalid", "time: must be from 1900-01-01T00:00:00Z", timed(t))
    for t in ("2026-11-24T15:04:05+23:59", "2026-11-24T15:04:05-23:59",
              "2026-11-24T15:04:05+14:01", "2026-11-24T15:04:05-12:01"):
        add(f"offset {t[-6:]}", "schema_invalid", "time: UTC offset must be from", timed(t))
    add("offset minutes 60", "schema_invalid", "time: must be RFC 3339",
        timed("2026-11-24T15:04:05+00:60"))
    add("leap second", "schema_invalid", "time: seconds must be 00 to 59",
        timed("2016-12-31T23:59:60Z"))
    add("time year 0", "schema_invalid", "time: must be RFC 3339", timed("0000-01-01T00:00:00Z"))
    add("time negative year", "schema_invalid", "time: must be RFC 3339",
        timed("-0001-01-01T00:00:00Z"))
    add("time year 10000", "schema_invalid", "time: must be RFC 3339",
        timed("+10000-01-01T00:00:00Z"))
    add("time as number", "schema_invalid", "time: must be RFC 3339",
        lambda kw: orjson.dumps({**base(**kw), "time": 1.7e9}))
    # dates in data
    for d in ("0001-01-01", "9999-12-31", "1899-12-31", "2201-01-01", "-0001-01-01",
              "+10000-01-01", "99999-12-31", "0000-01-01", "2027-02-30"):
        add(f"expires_on {d}", "schema_invalid", "data.expires_on: invalid date",
            lambda kw, d=d: _with(("data", "expires_on"), d, **kw))
    # numbers
    for token in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"nan"):
        add(f"year {token.decode()}", "malformed_json", "not valid JSON",
            lambda kw, t=token: _raw_year(t, **kw))
    add("year 1e308", "schema_invalid", "data.vehicle.year: must be an integer",
        lambda kw: _raw_year(b"1e308", **kw))
    add("year -9223372036854775809", "schema_invalid", "data.vehicle.year",
        lambda kw: _raw_year(b"-9223372036854775809", **kw))
    add("year 10**30", "schema_invalid", "data.vehicle.year",
        lambda kw: _raw_year(b"1" + b"0" * 30, **kw))
    # shapes
    add("data nested 200 deep", "malformed_json", "nesting",
        lambda kw: _with(("data", "vehicle", "make"), _nested(200), **kw))
    add("data nested 40 deep", "schema_invalid", "data.vehicle.make: must be a string",
        lambda kw: _with(("data", "vehicle", "make"), _nested(40), **kw))
    add("data 4000 fields wide", "schema_invalid", "unknown field",
        lambda kw: _with(("data",), {**ISSUED_DATA, **{f"f{i}": 0 for i in range(4000)}}, **kw))
    add("data 20000 fields wide", "too_large", "over 65536 bytes",
        lambda kw: _with(("data",), {**ISSUED_DATA, **{f"f{i}": i for i in range(20000)}},
                         **kw))
    add("array of 10000 in data", "schema_invalid", "data.vehicle.colour: must be a string",
        lambda kw: _with(("data", "vehicle", "colour"), list(range(10000)), **kw))
    add("5000 extension attributes", "schema_invalid", "unknown attribute",
        lambda kw: orjson.dumps({**base(**kw), **{f"X{i}": i for i in range(5000)}}))
    add("data is a string", "schema_invalid", "data: must be an object",
        lambda kw: _with(("data",), "x", **kw))
    # free text
    for name, text in BAD_TEXT.items():
        add(f"owner name {name}", "schema_invalid",
            "data.owner.name: must not contain control characters",
            lambda kw, t=text: _with(("data", "owner", "name"), t, **kw))
    add("vehicle make rlo", "schema_invalid", "data.vehicle.make: must not contain control",
        lambda kw: _with(("data", "vehicle", "make"), "Hon\u202eda", **kw))
    add("source nel", "schema_invalid", "source: must not contain control",
        lambda kw: _with(("source",), "/registry/\u0085office", **kw))
    add("id line separator", "schema_invalid", "id: must not contain control",
        lambda kw: _with(("id",), kw["id"] + "\u2028", **kw))
    add("email rlo", "schema_invalid", "data.owner.email: value is not a valid email",
        lambda kw: _with(("data", "owner", "email"), "jeanne\u202e@example.org", **kw))
    add("extension value nel", "schema_invalid", "trace: extension attribute must not contain",
        lambda kw: orjson.dumps({**base(**kw), "trace": "a\u0085b"}))
    add("datacontenttype padded", "schema_invalid", "datacontenttype: must be application/json",
        lambda kw: _with(("datacontenttype",), "application/json" + " " * 300 + "; x=\x00",
                         **kw))
    add("datacontenttype newline", "schema_invalid", "datacontenttype: must be application/json",
        lambda kw: _with(("datacontenttype",), "application/json; charset=utf-8\r\nX: y", **kw))
    add("datacontenttype text/html", "schema_invalid", "datacontenttype",
        lambda kw: _with(("datacontenttype",), "text/html", **kw))
    # bytes that are not UTF-8 JSON
    add("invalid utf-8", "malformed_json", "not valid JSON",
        lambda kw: _raw_name(b"Jeanne \xff\xfe", **kw))
    add("overlong utf-8", "malformed_json", "not valid JSON",
        lambda kw: _raw_name(b"\xc0\xaf", **kw))
    add("utf-8 surrogate bytes", "malformed_json", "not valid JSON",
        lambda kw: _raw_name(b"\xed\xa0\x80", **kw))
    add("lone surrogate escape", "malformed_json", "not valid JSON",
        lambda kw: _raw_name(b"\\ud800", **kw))
    add("latin-1 bytes", "malformed_json", "not valid JSON",
        lambda kw: orjson.dumps(base(**kw)).replace(b"Tremblay", "Trembl\u00e9".encode("latin-1")))
    add("byte order mark", "malformed_json", "not valid JSON",
        lambda kw: b"\xef\xbb\xbf" + orjson.dumps(base(**kw)))
    add("utf-16", "malformed_json", "not valid JSON",
        lambda kw: orjson.dumps(base(**kw)).decode().encode("utf-16"))
    add("nul byte after the object", "malformed_json", "not valid JSON",
        lambda kw: orjson.dumps(base(**kw)) + b"\x00")
    add("two objects", "malformed_json", "not valid JSON",
        lambda kw: orjson.dumps(base(**kw)) * 2)
    add("duplicate key", "malformed_json", "duplicate object key",
        lambda kw: orjson.dumps(base(**kw))[:-1] + b',"id":"other"}')
    add("empty value", "malformed_json", "not valid JSON", lambda kw: b"")
    add("only spaces", "malformed_json", "not valid JSON", lambda kw: b"   ")
    add("no value (tombstone)", "malformed_json", "message has no value", lambda kw: None)
    for token in (b"[]", b"[{}]", b"42", b'"plate.issued"', b"null", b"true", b"{}"):
        reason = "schema_invalid" if token == b"{}" else "malformed_json"
        detail = "type: field required" if token == b"{}" else "must be a JSON object"
        add(f"top level {token.decode()}", reason, detail, lambda kw, t=token: t)
    return out
