"""Signed producers: what checking a message's signature costs the registry consumer, per
event, beside the same run's unsigned path (parsing the same messages).

No servers: the consumer's own functions on the realistic events of the consumer
benchmark (:func:`bench.bench_consumer.realistic_events`, 20,000), each signed as one
registered producer.

* unsigned path: ``registry.consumer.batch.parse_values`` (what the consumer did per
  message before producers signed; still the parse step);
* the check: ``registry.consumer.signatures.verify`` of the parsed batch (the producer
  header, the HMAC-SHA256 of the signed bytes, the constant-time comparison, the
  producer's prefixes against the event's ``source``), in structured mode (signed bytes
  = the value) and in binary mode (the sorted ``ce_`` headers, then the data);
* during a rotation: the producer signs with the older of its two secrets (two HMACs).

Each time is the CPU time of this process (``time.process_time``: a pure CPU loop, so
time spent waiting for a busy machine's cores is left out), the best of :data:`REPEATS`
passes over the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from bench.bench_consumer import realistic_events
from bench.common import BenchContext, Figure
from platereg.kafka import Record
from platereg.security.producer_store import Producer, Producers
from registry.consumer.batch import parse_values
from registry.consumer.signatures import verify
from schemas.signing import Signer, new_secret

EVENTS = 20_000
REPEATS = 7
NOW_TEXT = "2030-01-01T00:00:00+00:00"


def _best(work: Callable[[], object], n: int) -> float:
    """CPU microseconds per event of the fastest of :data:`REPEATS` runs of ``work``."""
    best = float("inf")
    for _ in range(REPEATS):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best / n * 1e6


def binary_message(value: bytes) -> tuple[tuple[tuple[str, bytes], ...], bytes]:
    """(headers, value) of a structured event's value in binary content mode."""
    event = orjson.loads(value)
    data = event.pop("data", None)
    content_type = event.pop("datacontenttype", None)
    headers = [(f"ce_{name}", str(text).encode()) for name, text in event.items()]
    if content_type is not None:
        headers.append(("content-type", content_type.encode()))
    return tuple(headers), orjson.dumps(data)


def _records(signer: Signer, binary: bool) -> list[Record]:
    out = []
    for i, (key, value) in enumerate(realistic_events(EVENTS)):
        headers: tuple[tuple[str, bytes], ...] = ()
        if binary:
            headers, value = binary_message(value)
        out.append(Record(key, value, 0, i, tuple(signer.headers(value, headers))))
    return out


def _mode(signer: Signer, producers: Producers, binary: bool, now) -> tuple[float, float]:  # noqa: ANN001
    """(parse, check) microseconds per event of one content mode."""
    records = _records(signer, binary)
    parsed = parse_values(records, now)
    checked = verify(parsed, records, producers)
    refused = sum(1 for c in checked if getattr(c, "reason", "") == "unauthorized_source")
    if refused:
        raise RuntimeError(f"{refused} of {len(records)} signed messages were refused")
    return (_best(lambda: parse_values(records, now), len(records)),
            _best(lambda: verify(parsed, records, producers), len(records)))


def run(ctx: BenchContext) -> list[Figure]:
    import datetime as dt

    now = dt.datetime.fromisoformat(NOW_TEXT)
    current, newer = new_secret(), new_secret()
    signer = Signer.of("bench", current)
    producers = Producers({"bench": Producer("bench", ("/",), (current.encode(),))}, 1)
    # after `rotate`: the new secret is tried first, the message is signed with the old one
    rotating = Producers({"bench": Producer("bench", ("/",), (newer.encode(),
                                                              current.encode()))}, 1)
    parse_s, check_s = _mode(signer, producers, False, now)
    parse_b, check_b = _mode(signer, producers, True, now)
    records = _records(signer, False)
    parsed = parse_values(records, now)
    check_r = _best(lambda: verify(parsed, records, rotating), len(records))
    unsigned = "parse per event (the unsigned path)"
    note = f"{EVENTS:,} realistic events, CPU time, best of {REPEATS} passes"
    return [
        Figure("signing", "signature check per event, structured", check_s, "us",
               baseline=parse_s, baseline_name=unsigned, target="< 3", better="lower",
               notes=f"{note}; HMAC-SHA256 of the value, compare, prefixes"),
        Figure("signing", "signature check per event, binary mode", check_b, "us",
               baseline=parse_b, baseline_name=f"{unsigned}, binary mode", target="< 3",
               better="lower", notes=f"{note}; sorted ce_ headers, then the data"),
        Figure("signing", "signature check per event, rotation (older secret)", check_r,
               "us", baseline=parse_s, baseline_name=unsigned, target="< 3", better="lower",
               notes=f"{note}; two secrets, the message signed with the older: two HMACs"),
    ]
