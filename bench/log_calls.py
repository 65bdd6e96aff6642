"""python -m bench.log_calls [N]: the cost of one log call in the JSON configuration of
``platereg.logging``, the registry API's per-request line at INFO and a call below the
level, with a bound context var as under a request; lines go to /dev/null. The figures
are in docs/benchmarks.md."""

from __future__ import annotations

import os
import statistics
import sys
import time

import structlog

from platereg.logging import configure_logging, get_logger


def _per_call(fn, n: int) -> float:
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(rounds)


def main(n: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)
    try:
        configure_logging("json", "INFO")
        log = get_logger("platereg.http")
        structlog.contextvars.bind_contextvars(request_id="r1")

        def line() -> None:
            log.info("request", route="/v1/plates/query", method="POST", status=200,
                     key_id="k1", ms=1.25)

        def filtered() -> None:
            log.debug("request", route="/v1/plates/query", method="POST", status=200)

        at_info, below = _per_call(line, n), _per_call(filtered, n)
    finally:
        os.dup2(saved, 2)
    print(f"JSON line at INFO: {at_info:.2f} us per call; below the level: {below:.3f} us "
          f"(median of 5 rounds of {n:,})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
