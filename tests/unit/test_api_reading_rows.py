"""``Reading.rows`` (the batch's audit rows without a ``Read`` per plate) gives exactly the
rows of ``Reading.read(...).row()``, in ``registry.api.audit.ROW_COLUMNS`` order."""

from __future__ import annotations

import datetime as dt

import pytest

from registry.api.routes.common import Reading

NOW = dt.datetime(2026, 11, 26, 1, 2, 3, tzinfo=dt.UTC)


@pytest.mark.parametrize("reading", [
    Reading(NOW, "k1", "testing"),
    Reading(NOW, "k2", "alpr_hit", "CASE-1", NOW - dt.timedelta(days=3)),
])
def test_rows_equal_the_rows_of_reads(reading: Reading) -> None:
    answers = [("CA-ON", "ABC123", "valid"), ("CA-QC", "X1", "not_found"),
               ("CA-ON", "ABC123", "valid")]
    assert reading.rows("batch", answers) == [
        reading.read("batch", j, p, result).row() for j, p, result in answers]
    assert reading.rows("batch", []) == []
