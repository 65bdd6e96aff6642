"""Logs: console for people, JSON in production, and never a plate or a name."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def _run(fmt: str, level: str = "INFO") -> str:
    code = textwrap.dedent(
        f"""
        import logging
        import structlog
        from platereg.logging import configure_logging, get_logger
        configure_logging({fmt!r}, {level!r})
        log = get_logger("probe")
        log.info("lookup", route="/v1/plates/{{jurisdiction}}/{{plate}}", plate="ABC123",
                 name="Jane Doe", path="/v1/plates/CA-ON/ABC123", key_id="k1",
                 email="jane@example.org", phone="+14165550123", ms=1.5)
        log.debug("below the level", plate="DEBUGPLATE")
        log.info("partitions assigned", offsets={{0: 12, 3: 40}})   # int keys (the consumer)
        with structlog.contextvars.bound_contextvars(request_id="r1", owner="Jane Doe"):
            log.warning("bound", count=3)
        logging.getLogger("uvicorn.access").info("GET /v1/plates/CA-ON/ABC123 200")
        logging.getLogger("third.party").warning("stdlib line %s", 7)
        logging.getLogger("third.party").info("stdlib info")
        logging.getLogger("mail.log").info("%r recip: %s", ("127.0.0.1", 5), "<jo@example.net>")
        log.warning("gateway refused +1 (416) 555-0199 and 416-555-0188 for x.y@mail.example",
                    detail=["call 416.555.0177"], day="2026-12-06", at="12:00:00+00:00")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    return res.stderr


def test_json_format_is_one_object_per_line() -> None:
    lines = [json.loads(line) for line in _run("json").splitlines() if line.strip()]
    lookup = next(line for line in lines if line["event"] == "lookup")
    assert lookup["key_id"] == "k1" and lookup["ms"] == 1.5
    assert lookup["route"] == "/v1/plates/{jurisdiction}/{plate}"
    assert lookup["level"] == "info" and lookup["logger"] == "probe"
    assert lookup["timestamp"].endswith("Z")
    bound = next(line for line in lines if line["event"] == "bound")
    assert (bound["request_id"], bound["count"], bound["level"]) == ("r1", 3, "warning")
    stdlib = next(line for line in lines if line["event"] == "stdlib line 7")
    assert (stdlib["logger"], stdlib["level"]) == ("third.party", "warning")
    assert stdlib.keys() >= {"event", "logger", "level", "timestamp"}
    assigned = next(line for line in lines if line["event"] == "partitions assigned")
    assert assigned["offsets"] == {"0": 12, "3": 40}
    assert [line["event"] for line in lines][:5] == [
        "lookup", "partitions assigned", "bound", "stdlib line 7", "stdlib info"]


def test_console_format_is_readable_lines() -> None:
    out = _run("console")
    lookup = next(line for line in out.splitlines() if " lookup " in line)
    assert lookup.startswith("20") and "[info" in lookup and "[probe]" in lookup
    assert "key_id=k1" in lookup and not lookup.lstrip().startswith("{")
    assert any("[third.party]" in line and "stdlib line 7" in line for line in out.splitlines())


def test_sensitive_fields_and_uvicorn_access_lines_never_reach_the_log() -> None:
    for fmt in ("json", "console"):
        out = _run(fmt)
        for value in ("ABC123", "Jane Doe", "jane@example.org", "+14165550123", "4165550123"):
            assert value not in out, (fmt, value)
        assert "[redacted]" in out


def test_e_mail_addresses_and_phone_numbers_in_any_text_are_masked() -> None:
    """Whatever key or message carries them, ours or a library's (the mail catcher's SMTP
    server logs each recipient); dates and times are left alone."""
    for fmt in ("json", "console"):
        out = _run(fmt)
        for value in ("jo@example.net", "x.y@mail.example", "555-0199", "416-555-0188",
                      "416.555.0177"):
            assert value not in out, (fmt, value)
        assert "recip: <[redacted]>" in out and "gateway refused [redacted]" in out
        assert "2026-12-06" in out and "12:00:00+00:00" in out


def test_the_level_drops_lines_below_it_ours_and_the_standard_librarys() -> None:
    for fmt in ("json", "console"):
        out = _run(fmt, "WARNING")
        assert "bound" in out and "stdlib line 7" in out
        assert "lookup" not in out and "stdlib info" not in out and "DEBUGPLATE" not in out
    assert "below the level" not in _run("json")
    debug = _run("json", "DEBUG")
    assert "below the level" in debug and "DEBUGPLATE" not in debug


def _crash(fmt: str) -> str:
    """An exception logged by our code and by uvicorn's error logger, with secrets in locals."""
    code = textwrap.dedent(
        f"""
        import logging
        from platereg.logging import configure_logging, get_logger
        configure_logging({fmt!r}, "INFO")

        def handler(authorization, body):
            secret_local = "LOCALSECRET42"
            raise RuntimeError("boom: no mailbox jane@example.org")

        try:
            handler("Bearer prk_abc_SECRETKEY", b'{{"plates": "BODYPLATE9"}}')
        except RuntimeError:
            get_logger("probe").exception("failed")
            logging.getLogger("uvicorn.error").error("Exception in ASGI application",
                                                     exc_info=True)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    return res.stderr


def test_exception_logs_never_show_local_variables() -> None:
    for fmt in ("console", "json"):
        out = _crash(fmt)
        assert "RuntimeError" in out and "boom" in out, out  # the traceback is there...
        for value in ("LOCALSECRET42", "SECRETKEY", "BODYPLATE9"):  # ...its locals are not
            assert value not in out, (fmt, value, out)
        assert "jane@example.org" not in out and "no mailbox [redacted]" in out, (fmt, out)


def test_the_access_log_line_and_captured_logs() -> None:
    """The registry API's per-request line is an ordinary structlog line: tests capture
    it with structlog.testing.capture_logs."""
    import structlog

    from platereg.http import log
    from platereg.logging import configure_logging

    configure_logging("json", "INFO")
    with structlog.testing.capture_logs() as logs:
        log.info("request", route="/v1/plates/query", method="POST", status=429,
                 key_id="k2", ms=0.5)
        log.debug("not at INFO")
    assert [(e["event"], e["status"], e["key_id"]) for e in logs] == [("request", 429, "k2")]


def test_lines_go_to_the_current_stderr_and_a_closed_one_fails_no_caller(monkeypatch) -> None:
    import io
    import logging

    from platereg.logging import configure_logging, get_logger

    configure_logging("json", "INFO")
    log = get_logger("probe")
    later = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", later)        # swapped after configure_logging
    log.info("ours", key_id="k3", plate="ABC123")
    logging.getLogger("third.party").warning("theirs")
    later.flush()
    lines = [json.loads(line) for line in later.buffer.getvalue().splitlines()]
    assert [(e["event"], e.get("plate")) for e in lines] == [("ours", "[redacted]"),
                                                           ("theirs", None)]
    later.close()
    log.info("to a closed stream")                   # dropped, no exception
    logging.getLogger("third.party").error("to a closed stream")


def _aiokafka_lines(monkeypatch, records: list[tuple[str, str, tuple]]) -> list[bytes]:
    """``records`` ((logger, message, args) at ERROR) through configure_logging's handler:
    the JSON lines it writes."""
    import io
    import logging

    from platereg.logging import configure_logging

    configure_logging("json", "INFO")
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", out)
    for name, message, args in records:
        logging.getLogger(name).error(message, *args)
    out.flush()
    return out.buffer.getvalue().splitlines()


def test_the_coordinator_wait_of_a_healthy_start_is_a_warning_other_kafka_errors_are_not(
        monkeypatch) -> None:
    """aiokafka's "Group Coordinator Request failed: [Error 15] ..." while the broker makes
    its offsets topic is written as a warning (and ``platereg run`` counts no error); the
    same message with another error, another aiokafka error line and another logger's
    line with the same text stay errors."""
    from aiokafka.errors import (
        GroupCoordinatorNotAvailableError,
        KafkaConnectionError,
        NotCoordinatorForGroupError,
    )

    from devtools.runlogs import is_error

    coordinator = "aiokafka.consumer.group_coordinator"
    failed = "Group Coordinator Request failed: %s"
    written = _aiokafka_lines(monkeypatch, [
        (coordinator, failed, (GroupCoordinatorNotAvailableError(),)),
        (coordinator, failed, (KafkaConnectionError("no route"),)),
        (coordinator, failed, (NotCoordinatorForGroupError(),)),
        (coordinator, "Heartbeat send request failed: %s. Will retry.",
         (GroupCoordinatorNotAvailableError(),)),
        ("aiokafka.consumer.fetcher", failed, (GroupCoordinatorNotAvailableError(),)),
        ("third.party", failed, (GroupCoordinatorNotAvailableError(),)),
    ])
    lines = [json.loads(line) for line in written]
    assert [(line["event"], line["logger"], line["level"]) for line in lines] == [
        ("Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
         coordinator, "warning"),
        ("Group Coordinator Request failed: KafkaConnectionError: no route",
         coordinator, "error"),
        ("Group Coordinator Request failed: [Error 16] NotCoordinatorForGroupError",
         coordinator, "error"),
        ("Heartbeat send request failed: [Error 15] GroupCoordinatorNotAvailableError. "
         "Will retry.", coordinator, "error"),
        ("Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
         "aiokafka.consumer.fetcher", "error"),
        ("Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
         "third.party", "error"),
    ]
    assert [is_error(line) for line in written] == [False, True, True, True, True, True]


def test_a_coordinator_wait_longer_than_the_grace_is_an_error_again() -> None:
    """Warnings for the first ``grace`` seconds of a wait, then errors while it lasts; a
    wait after a quiet spell longer than ``grace`` is a new one."""
    import logging

    from aiokafka.errors import GroupCoordinatorNotAvailableError

    from platereg.logging import TransientKafkaErrors

    now = [0.0]
    transient = TransientKafkaErrors(grace=60.0, clock=lambda: now[0])
    levels = []
    for at in (0.0, 0.5, 30.0, 60.0, 60.5, 120.0, 200.0, 260.0, 261.0):
        now[0] = at
        record = logging.LogRecord(TransientKafkaErrors.LOGGER, logging.ERROR, __file__, 1,
                                   TransientKafkaErrors.MESSAGE,
                                   (GroupCoordinatorNotAvailableError(),), None)
        assert transient.filter(record)
        levels.append((at, record.levelname))
    assert levels == [(0.0, "WARNING"), (0.5, "WARNING"), (30.0, "WARNING"),
                      (60.0, "WARNING"), (60.5, "ERROR"), (120.0, "ERROR"),
                      (200.0, "WARNING"), (260.0, "WARNING"), (261.0, "ERROR")]
