"""`make bench`: performance figures, each beside a baseline measured in the same run.

Each ``bench/bench_*.py`` module has ``run(ctx: BenchContext) -> list[Figure]``
(a plain function; use ``asyncio.run`` inside if needed). ``python -m bench``
starts the servers once (embedded unless PLATEREG_* URLs are set), runs every
module (or those named on the command line), prints one table and writes
``bench/results/latest.json``.
"""
