"""`make run`'s terminal, in pure parts: the banner fits an 80x24 screen with the status
block, the status block's figures come from /metrics and the log files, the log files are
rotated per run and followed across runs, `platereg demo`'s curls hold what they need."""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import threading
import time
from collections import deque
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devtools import runlogs
from devtools.runner import DEMO_INGEST_SOURCE, DemoAccess, banner_lines, demo_text
from devtools.status import (
    Reading,
    Status,
    StatusBoard,
    rate,
    read_metrics,
    status_block,
    status_line,
)
from ingest.api import validate_batch
from platereg.settings import Settings
from wiring.cli import app

KEY = "prk_dh617vsu9wy7_ee5VV_zwGUTL2GZqV7ZscJdw1DmgTIBQwPWrvY1P0es"
INGEST_KEY = "prk_4wcpu6ptilf6_YCAxklSuZ__LCq-32Ssi0fPimbtprjXrPzGzstjeVOM"


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / ".platereg", registry_port=65001, ingest_port=65002,
                    consumer_metrics_port=65003, notices_scheduler_port=65004,
                    notices_dispatcher_port=65005, smtp_port=65006)


def _access() -> DemoAccess:
    return DemoAccess(KEY, INGEST_KEY, "CA-BC/AA656B",
                      "http://127.0.0.1:65001/owner/?token=HJUwAwDEZNC-fZCV314KjqmGRUMhVHynrhj"
                      "sKPqf8pY")


def _status(**reading: float) -> Status:
    return Status(Reading(**reading), 1234.56, 3, ("notices-dispatcher", "registry-consumer"),
                  "14:03:12")


@pytest.mark.parametrize("demo", [True, False])
def test_the_banner_and_the_status_block_fit_an_80x24_screen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo: bool) -> None:
    monkeypatch.chdir(tmp_path)                     # the default: .platereg under it
    command = ".venv/bin/platereg"                  # as `make run` shows it
    banner = banner_lines(_settings(tmp_path), _access() if demo else None, command)
    block = status_block(_status(events=1e9, lag=1e6, dead_lettered=1e6, sent=1e8,
                                 failed=1e6, retrying=1e6), 80, command)
    assert all(len(line) <= 80 for line in banner + block), banner + block
    assert len(banner) + len(block) <= 23           # and the cursor's line
    text = "\n".join(banner)
    assert "http://127.0.0.1:65001/docs" in text and "http://127.0.0.1:65002/docs" in text
    if demo:
        assert f"\n  {KEY}\n" in text and f"\n  {INGEST_KEY}\n" in text
        assert "/owner/?token=" in text and f"{command} demo" in text
    assert banner[-1] == "Press Ctrl-C to stop."


def test_demo_text_holds_curls_that_work_verbatim(tmp_path: Path) -> None:
    text = demo_text(_settings(tmp_path), _access())
    curls = [shlex.split(line) for line in text.splitlines() if line.startswith("curl ")]
    assert len(curls) == 3
    hotlist, query, ingest = curls
    assert hotlist[-1] == "http://127.0.0.1:65001/v1/hotlist?purpose=testing&limit=5"
    assert f"Authorization: Bearer {KEY}" in hotlist and f"Authorization: Bearer {KEY}" in query
    body = json.loads(query[query.index("-d") + 1])  # the plate in the body, not the URL
    assert body == {"jurisdiction": "CA-BC", "plate": "AA656B", "purpose": "testing"}
    assert query[-1] == "http://127.0.0.1:65001/v1/plates/query"
    assert f"Authorization: Bearer {INGEST_KEY}" in ingest
    assert ingest[-1] == "http://127.0.0.1:65002/v1/events"
    event = json.loads(ingest[ingest.index("-d") + 1])
    events, errors = validate_batch([event], dt.datetime.now(dt.UTC),
                                    sources=[DEMO_INGEST_SOURCE])
    assert errors == [] and len(events) == 1
    assert _access().owner_link in text


# --------------------------------------------------------------------------- status

CONSUMER = """# TYPE platereg_events_total counter
platereg_events_total{type="plate.issued",outcome="applied"} 3000.0
platereg_events_total{type="plate.issued",outcome="rejected"} 20.0
platereg_consumer_lag{partition="0"} 2.0
platereg_consumer_lag{partition="1"} 5.0
platereg_dlq_total{reason="schema_invalid"} 20.0
"""
DISPATCHER = """platereg_notice_deliveries_total{channel="email",outcome="sent"} 1200.0
platereg_notice_deliveries_total{channel="paper",outcome="sent"} 3.0
platereg_notice_deliveries_total{channel="sms",outcome="failed"} 7.0
platereg_notice_deliveries_total{channel="sms",outcome="retry"} 2.0
platereg_dlq_total{reason="notice"} 1.0
"""


def test_the_figures_come_from_each_services_metrics() -> None:
    reading = read_metrics({"registry-consumer": CONSUMER, "notices-dispatcher": DISPATCHER,
                            "notices-scheduler": ""})
    assert reading == Reading(events=3020, lag=7, dead_lettered=21, sent=1203, failed=7,
                              retrying=2, silent=())
    silent = read_metrics({"registry-consumer": None, "notices-dispatcher": DISPATCHER})
    assert (silent.events, silent.lag, silent.sent, silent.silent) == (
        None, None, 1203, ("registry-consumer",))


def test_the_rate_is_over_the_window_and_never_negative() -> None:
    assert rate(deque([(0.0, 100.0)])) is None
    assert rate(deque([(0.0, 100.0), (5.0, 150.0), (10.0, 300.0)])) == 20.0
    assert rate(deque([(0.0, 300.0), (10.0, 0.0)])) == 0.0   # a restarted consumer


def test_the_status_block_and_line_say_every_figure() -> None:
    status = _status(**vars(read_metrics({"registry-consumer": CONSUMER,
                                          "notices-dispatcher": DISPATCHER})))
    block = "\n".join(status_block(status))
    for figure in ("1,234.6", "consumer lag       7", "dead-lettered      21",
                   "notices sent     1,203", "failed       7", "retrying       2",
                   "errors in the last minute: 3 (notices-dispatcher, registry-consumer)"):
        assert figure in block, block
    assert status_line(status).startswith("status 14:03:12: events/s 1,234.6, consumer lag 7")


def _at(seconds: float) -> bytes:
    """The console renderer's time stamp of Unix time ``seconds``."""
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")
    return stamp.encode()


def test_the_board_counts_the_error_lines_of_the_last_minute(tmp_path: Path) -> None:
    start = 1_800_000_000.0
    now = [start]
    board = StatusBoard({}, tmp_path, ["registry-consumer"], clock=lambda: now[0])
    log = runlogs.log_path(tmp_path, "registry-consumer")
    log.write_bytes(_at(start - 90) + b" [error    ] at start-up, before the minute [x]\n"
                    + _at(start - 5) + b" [info     ] fine [x]\n"
                    + _at(start - 4) + b" [error    ] broken [x]\n"
                    + b'{"level":"error","timestamp":"' + _at(start - 3) + b'"}\n'
                    + b"Traceback (most recent call last):\n"        # no time: read now
                    + _at(start - 1) + b" [warn")                    # a line being written
    status = board.read()
    assert (status.errors, status.error_services) == (3, ("registry-consumer",))
    with open(log, "ab") as f:
        f.write(b"ing  ] not an error [x]\n" + _at(start + 29)
                + b" [critical ] down [x]\n")
    now[0] += 30
    assert board.read().errors == 4
    now[0] += 45                                        # the first three are past a minute
    assert board.read().errors == 1
    log.write_bytes(b"")                                # a new run: read from the start
    now[0] += 61
    assert board.read().errors == 0


# --------------------------------------------------------------------------- log files

def test_a_run_rotates_the_previous_runs_log(tmp_path: Path) -> None:
    with runlogs.open_for_run(tmp_path, "registry-api") as f:
        f.write(b"first run\n")
    with runlogs.open_for_run(tmp_path, "registry-api") as f:
        f.write(b"second run\n")
    assert (tmp_path / "registry-api.log").read_bytes() == b"second run\n"
    assert (tmp_path / "registry-api.log.1").read_bytes() == b"first run\n"
    assert runlogs.available(tmp_path) == ["registry-api"]


def test_follow_prints_the_tail_then_what_comes_across_a_new_run(tmp_path: Path) -> None:
    path = runlogs.log_path(tmp_path, "svc")
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    seen = bytearray()
    running = threading.Event()
    running.set()
    follower = threading.Thread(target=runlogs.follow, args=(path, seen.extend),
                                kwargs={"lines": 3, "poll": 0.02, "running": running.is_set})
    follower.start()
    try:
        def wait_for(text: bytes) -> None:
            deadline = time.monotonic() + 10
            while text not in seen:
                assert time.monotonic() < deadline, bytes(seen)
                time.sleep(0.02)

        wait_for(b"line 99\n")
        assert bytes(seen) == b"line 97\nline 98\nline 99\n"
        with open(path, "ab") as f:
            f.write(b"appended\n")
        wait_for(b"appended\n")
        with runlogs.open_for_run(tmp_path, "svc") as f:   # the next run rotates it
            f.write(b"next run\n")
        wait_for(b"next run\n")
    finally:
        running.clear()
        follower.join(5)
    assert bytes(seen).endswith(b"appended\nnext run\n")


def test_platereg_logs_lists_and_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATEREG_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(app, ["logs"]).exit_code == 1             # none yet
    logs = runlogs.logs_dir(tmp_path)
    with runlogs.open_for_run(logs, "registry-api") as f:
        f.write(b"".join(b"line %d\n" % i for i in range(10)))
    listed = runner.invoke(app, ["logs"])
    assert listed.exit_code == 0 and re.match(r"registry-api\t\S+ bytes$", listed.stdout)
    tail = runner.invoke(app, ["logs", "registry-api", "-n", "2"])
    assert (tail.exit_code, tail.stdout) == (0, "line 8\nline 9\n")
    missing = runner.invoke(app, ["logs", "nope"])
    assert missing.exit_code == 1 and "registry-api" in missing.output


def test_platereg_demo_without_a_run_says_so(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATEREG_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 1 and "no demo running" in result.output
