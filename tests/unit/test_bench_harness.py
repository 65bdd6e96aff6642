"""The benchmark harness's own logic: load-generator output parsing, A/B interleaving,
histogram quantiles and the regression marks against bench/baseline.json."""

from __future__ import annotations

import json

from bench.__main__ import load_reference, write_reference
from bench.bench_api import Rounds, interleave, parse_hey, parse_wrk
from bench.bench_consumer import quantile
from bench.common import Figure

HEY = """
Summary:
  Total:\t4.0124 secs
  Requests/sec:\t1994.1234

Latency distribution:
  10%% in 0.0009 secs
  50%% in 0.0015 secs
  99%% in 0.0210 secs

Status code distribution:
  [200]\t7990 responses
  [404]\t10 responses

Error distribution:
  [3]\tGet http://127.0.0.1:1/x: dial tcp: connection refused
"""

WRK = """Running 4s test @ http://127.0.0.1:1
  Latency Distribution
     50%    1.50ms
     99%  120.00us
  12345 requests in 4.00s, 1.00MB read
  Non-2xx or 3xx responses: 7
Requests/sec:   3086.25
"""


def test_parse_hey_reads_rate_percentiles_statuses_and_errors() -> None:
    got = parse_hey(HEY)
    assert got["rps"] == 1994.1234
    assert got["p50"] == 1.5 and got["p99"] == 21.0
    assert got["requests"] == 8000 and got["non2xx"] == 10 and got["errors"] == 3


def test_parse_wrk_converts_units() -> None:
    got = parse_wrk(WRK)
    assert got["p50"] == 1.5 and got["p99"] == 0.12
    assert got["requests"] == 12345 and got["seconds"] == 4.0 and got["non2xx"] == 7


def test_interleave_alternates_which_server_goes_first() -> None:
    calls: list[str] = []

    def measure(name: str):
        def run() -> dict[str, float]:
            calls.append(name)
            return {"rps": 1.0, "requests": 10.0, "seconds": 2.0}
        return run

    a, b = interleave(4, measure("a"), measure("b"))
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(a.runs) == len(b.runs) == 4 and a.rps() == 5.0


def test_rounds_median_and_total() -> None:
    r = Rounds([{"p99": 3.0, "non2xx": 1}, {"p99": 1.0}, {"p99": 2.0, "non2xx": 2}])
    assert r.median("p99") == 2.0 and r.total("non2xx") == 3 and r.median("p50") is None


def test_quantile_of_the_observations_between_two_scrapes() -> None:
    before = {0.01: 100.0, 0.1: 100.0, 1.0: 100.0, float("inf"): 100.0}
    after = {0.01: 150.0, 0.1: 198.0, 1.0: 200.0, float("inf"): 200.0}
    assert quantile(before, after, 0.5) == 0.01
    assert quantile(before, after, 0.99) == 1.0
    assert quantile(before, before, 0.99) is None


def test_regression_marks_depend_on_which_way_is_better() -> None:
    rate = Figure("x", "rate", 60.0, "req/s", 100.0)             # ratio 0.6
    assert rate.regressed(0.9) and not rate.regressed(0.8) and not rate.regressed(None)
    latency = Figure("x", "p99", 200.0, "ms", 100.0, better="lower")   # ratio 2.0
    assert latency.regressed(1.2) and not latency.regressed(1.5)
    assert not Figure("x", "no baseline", 5.0, "ms").regressed(1.0)


def test_reference_file_round_trip_keeps_other_ratios(tmp_path) -> None:
    path = tmp_path / "baseline.json"
    write_reference({"old: kept": 0.5}, [Figure("api", "rate", 80.0, "req/s", 100.0),
                                         Figure("api", "rss", 10.0, "MB")], path)
    assert load_reference(path) == {"old: kept": 0.5, "api: rate": 0.8}
    assert "about" in json.loads(path.read_text())
    assert load_reference(tmp_path / "missing.json") == {}
