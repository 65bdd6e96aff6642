"""The consumer's fetched batch against the stored offsets, without servers: records
before the stored offsets are dropped (and said so in one log line), those at or after
them kept, and the next offsets and the records kept for dead letters follow what is kept.
`make mutate` found no test looking at these edges."""

from __future__ import annotations

import datetime as dt

import pytest

from platereg.kafka import Record
from registry.consumer import loop
from registry.consumer.loop import _Batch

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


class Lines:
    """Stands in for the module's logger: the lines it was given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def info(self, event: str, **values: object) -> None:
        self.lines.append((event, values))


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Lines:
    lines = Lines()
    monkeypatch.setattr(loop, "log", lines)
    return lines


def batch(*positions: tuple[int, int]) -> _Batch:
    records = [Record(f"k{p}.{o}".encode(), f"v{p}.{o}".encode(), p, o) for p, o in positions]
    return _Batch(records, [f"parsed {p}.{o}" for p, o in positions], 1, NOW)


def test_a_batch_at_the_stored_offsets_is_kept_whole_without_a_word(logged: Lines) -> None:
    b = batch((0, 5), (0, 6), (1, 2))
    assert b.drop_before({0: 5, 1: 2}) is True
    assert logged.lines == []
    assert b.next_offsets == {0: 7, 1: 3} and len(b.records) == 3
    assert [(r.key, r.value) for r in b.records] == [
        (b"k0.5", b"v0.5"), (b"k0.6", b"v0.6"), (b"k1.2", b"v1.2")]


def test_records_before_the_stored_offsets_are_dropped_with_their_parses(
        logged: Lines) -> None:
    b = batch((0, 5), (0, 6), (1, 2), (1, 3))
    assert b.drop_before({0: 6, 1: 2}) is True
    assert logged.lines == [("dropped records before the stored offsets", {"count": 1})]
    assert [(r.partition, r.offset) for r in b.records] == [(0, 6), (1, 2), (1, 3)]
    assert b.parsed == ["parsed 0.6", "parsed 1.2", "parsed 1.3"]
    assert b.next_offsets == {0: 7, 1: 4}
    assert (b.records[0].key, b.records[0].value) == (b"k0.6", b"v0.6")
    assert b.drop_before({0: 7, 1: 4}) is False and b.records == [] and b.next_offsets == {}
