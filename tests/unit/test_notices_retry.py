"""The dispatcher's retry rules without servers: the backoff doubles from the initial
wait up to the longest, plus a jitter of up to the initial wait; an attempt's outcome
stands unless it is a retry, which fails after the last attempt and otherwise waits the
backoff or the receiver's Retry-After, whichever is longer. `make mutate` found these
checked only through slow delivery tests (a wrong backoff showed as a timeout)."""

from __future__ import annotations

import pytest

from notifications.channels import Result
from notifications.dispatcher import backoff, decide
from platereg.settings import Settings

# (an initial wait other than 1 s: tenacity's defaults are 1)
SETTINGS = Settings(notice_retry_initial_seconds=0.5, notice_retry_max_seconds=6.0,
                    notice_max_attempts=5)


@pytest.mark.parametrize("attempt,low", [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 6.0),
                                         (9, 6.0)])
def test_the_backoff_doubles_up_to_the_longest_wait_plus_jitter(attempt: int,
                                                                low: float) -> None:
    waits = [backoff(SETTINGS, attempt) for _ in range(200)]
    assert all(low <= w <= low + 0.5 for w in waits), (min(waits), max(waits))
    assert max(waits) - min(waits) > 0.25   # jittered, by up to the initial wait


def test_an_outcome_other_than_retry_stands() -> None:
    assert decide(Result("sent", 200), 1, SETTINGS) == ("sent", None)
    assert decide(Result("failed", 400), 1, SETTINGS) == ("failed", None)
    assert decide(Result("sent", 200), 5, SETTINGS) == ("sent", None)


def test_a_retry_fails_after_the_last_attempt_and_otherwise_waits() -> None:
    assert decide(Result("retry", 503), 5, SETTINGS) == ("failed", None)
    assert decide(Result("retry", 503), 6, SETTINGS) == ("failed", None)
    outcome, delay = decide(Result("retry", 503), 4, SETTINGS)
    assert outcome == "retry" and 4.0 <= delay <= 4.5
    assert decide(Result("retry", 429, retry_after=60.0), 1, SETTINGS) == ("retry", 60.0)
    outcome, delay = decide(Result("retry", 429, retry_after=0.5), 3, SETTINGS)
    assert outcome == "retry" and 2.0 <= delay <= 2.5
