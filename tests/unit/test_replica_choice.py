"""The read replicas' rules without I/O (``platereg.replicas``): how far behind a replica
is, which replicas serve reads given their lags and the most allowed, and what a read
from one says it is as of."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from platereg.replicas import (
    ReadPools,
    Seen,
    choose,
    fresh_as_of,
    lag_seconds,
    replica_name,
    serving,
)

NOW = dt.datetime(2026, 12, 6, 4, 0, 0, tzinfo=dt.UTC)


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


# --------------------------------------------------------------------------- the choice


@pytest.mark.parametrize(("lags", "max_lag", "expected"), [
    ([], 5.0, []),                                  # no read replicas: the primary
    ([0.0, 1.5], 5.0, [0, 1]),
    ([0.0, 5.0], 5.0, [0, 1]),                      # at the limit still serves
    ([0.0, 5.01], 5.0, [0]),                        # past it: left out
    ([None, 0.2], 5.0, [1]),                        # unreachable or not a standby
    ([math.inf, 7.0, None], 5.0, []),               # none fit: the primary
])
def test_serving_are_the_measured_replicas_within_the_max_lag(
        lags: list[float | None], max_lag: float, expected: list[int]) -> None:
    assert serving(lags, max_lag) == expected


def test_reads_go_round_robin_over_the_serving_replicas_else_to_the_primary() -> None:
    assert [choose([0.0, 9.0, 1.0], 5.0, turn) for turn in range(4)] == [0, 2, 0, 2]
    assert [choose([9.0, None], 5.0, turn) for turn in range(3)] == [None, None, None]
    assert choose([], 5.0, 0) is None


# --------------------------------------------------------------------------- the lag


def test_a_replica_that_replayed_the_primarys_position_is_not_behind() -> None:
    assert lag_seconds(Seen(True, True, ago(3600)), None, NOW) == 0.0


def test_behind_by_the_smaller_bound_last_commit_or_last_caught_up_check() -> None:
    # replaying paused an hour after a quiet spell: the last caught-up check bounds it
    assert lag_seconds(Seen(True, False, ago(3600)), ago(2), NOW) == 2.0
    # a busy primary: its last replayed commit is the nearer bound
    assert lag_seconds(Seen(True, False, ago(0.5)), ago(30), NOW) == 0.5
    assert lag_seconds(Seen(True, False, ago(7)), None, NOW) == 7.0
    assert lag_seconds(Seen(True, False, None), None, NOW) == math.inf
    # clocks a little apart never make a negative lag
    assert lag_seconds(Seen(True, False, NOW + dt.timedelta(seconds=1)), None, NOW) == 0.0


def test_unreachable_or_not_a_standby_is_not_measured() -> None:
    assert lag_seconds(None, ago(1), NOW) is None
    assert lag_seconds(Seen(False, False, None), ago(1), NOW) is None   # promoted


# --------------------------------------------------------------------------- as_of


def test_as_of_is_the_replicas_replay_time_not_now() -> None:
    assert fresh_as_of(Seen(True, False, ago(4)), None) == ago(4)
    # caught up at a check after its last commit: complete as of that check
    assert fresh_as_of(Seen(True, True, ago(600)), ago(1)) == ago(1)
    assert fresh_as_of(Seen(True, False, ago(1)), ago(9)) == ago(1)
    assert fresh_as_of(None, None) is None


def test_the_replica_label_has_no_credentials() -> None:
    assert replica_name("postgresql://app:s3cret@db-replica:5433/platereg") == (
        "db-replica:5433/platereg")
    assert replica_name("postgresql://h1,h2/platereg") == "h1,h2/platereg"


async def test_without_read_replicas_the_primary_is_the_read_pool_through_the_same_path() -> None:
    primary = object()
    pools = ReadPools(primary, [], max_lag=5.0, check_every=1.0)
    used = []

    async def query(pool: object) -> int:
        used.append(pool)
        return 42

    await pools.start()   # nothing to check: no task, no pool opened
    assert [await pools.read(query) for _ in range(3)] == [(42, None)] * 3
    assert used == [primary] * 3
    await pools.close()
