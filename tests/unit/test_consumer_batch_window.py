"""The consumer's fetched batch against the stored offsets, without servers: records
before the stored offsets are dropped (and said so in one log line), those at or after
them kept, and the next offsets and the raw records of dead letters follow what is kept.
`make mutate` found no test looking at these edges."""

from __future__ import annotations

import datetime as dt

import structlog

from platereg.kafka import Record
from platereg.logging import configure_logging
from registry.consumer.loop import _Batch

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def batch(*positions: tuple[int, int]) -> _Batch:
    records = [Record(f"k{p}.{o}".encode(), f"v{p}.{o}".encode(), p, o) for p, o in positions]
    return _Batch(records, [f"parsed {p}.{o}" for p, o in positions], 1, NOW)


def test_a_batch_at_the_stored_offsets_is_kept_whole_without_a_word() -> None:
    configure_logging("json", "INFO")
    b = batch((0, 5), (0, 6), (1, 2))
    with structlog.testing.capture_logs() as logs:
        assert b.drop_before({0: 5, 1: 2}) is True
    assert logs == []
    assert b.next_offsets == {0: 7, 1: 3} and len(b.records) == 3
    assert b.raw[(0, 5)] == (b"k0.5", b"v0.5") and b.raw[(1, 2)] == (b"k1.2", b"v1.2")


def test_records_before_the_stored_offsets_are_dropped_with_their_parses() -> None:
    configure_logging("json", "INFO")
    b = batch((0, 5), (0, 6), (1, 2), (1, 3))
    with structlog.testing.capture_logs() as logs:
        assert b.drop_before({0: 6, 1: 2}) is True
    assert [(e["event"], e["count"]) for e in logs] == [
        ("dropped records before the stored offsets", 1)]
    assert [(r.partition, r.offset) for r in b.records] == [(0, 6), (1, 2), (1, 3)]
    assert b.parsed == ["parsed 0.6", "parsed 1.2", "parsed 1.3"]
    assert b.next_offsets == {0: 7, 1: 4}
    assert b.raw[(0, 6)] == (b"k0.6", b"v0.6")
    assert b.drop_before({0: 7, 1: 4}) is False and b.records == [] and b.next_offsets == {}
