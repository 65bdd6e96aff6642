"""The scale table of ``python -m bench scale``: one row per kept figure, a cell per factor,
the largest factor's value over the smallest's; and the event stream it replays."""

from __future__ import annotations

import itertools

import orjson

from bench.bench_consumer import iter_events, realistic_events
from bench.common import Figure
from bench.scale import LOAD, scale_rows


def _figures(rate: float, rss: float, load: str) -> list[Figure]:
    return [
        Figure("consumer", "throughput after first commit", rate, "events/s", baseline=rate * 10,
               baseline_name="bare"),
        Figure("consumer", "peak RSS", rss, "MB"),
        Figure("consumer", LOAD, 0.0, "", notes=load),
        Figure("consumer", "not in the table", 1.0, "x"),
    ]


def test_one_row_per_kept_figure_with_the_growth_of_the_largest_factor():
    rows = scale_rows({4: _figures(5_000, 300, "3.00 / 4.00"), 1: _figures(10_000, 200,
                                                                         "1.00 / 2.00")})
    assert rows == [
        ["consumer", "throughput after first commit", "10,000 events/s (0.10 of bare)",
         "5,000 events/s (0.10 of bare)", "x0.50"],
        ["consumer", "peak RSS", "200 MB", "300 MB", "x1.50"],
        ["consumer", LOAD, "1.00 / 2.00", "3.00 / 4.00", "-"],
    ]


def test_a_figure_missing_at_one_factor_shows_a_dash():
    small = _figures(10_000, 200, "1 / 1")
    rows = scale_rows({1: small, 16: small[:1]})
    assert ["consumer", "peak RSS", "200 MB", "-", "-"] in rows


def test_events_are_made_one_at_a_time_as_the_list_holds_them():
    made = iter_events(2_000, seed=3)
    assert list(itertools.islice(made, 10)) == realistic_events(2_000, seed=3)[:10]
    events = [orjson.loads(v) for _, v in realistic_events(4_000)]
    first = {e["subject"] for e in events[:1_000]}   # every plate issued first (a few
    assert len(first) >= 990                          # redelivered duplicates among them)
    assert first <= {f"CA-ON/B{p:07d}" for p in range(1_000)}
    assert all(e["type"] == "plate.issued" for e in events[:1_000])
