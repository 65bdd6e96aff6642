"""Logs: console for people, JSON in production, and never a plate or a name."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def _run(fmt: str) -> str:
    code = textwrap.dedent(
        f"""
        import logging
        from platereg.logging import configure_logging, get_logger
        configure_logging({fmt!r}, "INFO")
        log = get_logger("probe")
        log.info("lookup", route="/v1/plates/{{jurisdiction}}/{{plate}}", plate="ABC123",
                 name="Jane Doe", path="/v1/plates/CA-ON/ABC123", key_id="k1")
        logging.getLogger("uvicorn.access").info("GET /v1/plates/CA-ON/ABC123 200")
        logging.getLogger("third.party").warning("stdlib line")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    return res.stderr


def test_json_format_is_one_object_per_line() -> None:
    lines = [json.loads(line) for line in _run("json").splitlines() if line.strip()]
    lookup = next(line for line in lines if line["event"] == "lookup")
    assert lookup["key_id"] == "k1"
    assert lookup["route"] == "/v1/plates/{jurisdiction}/{plate}"
    assert lookup["level"] == "info"
    assert any(line["event"] == "stdlib line" for line in lines)


def test_sensitive_fields_and_uvicorn_access_lines_never_reach_the_log() -> None:
    for fmt in ("json", "console"):
        out = _run(fmt)
        assert "ABC123" not in out
        assert "Jane Doe" not in out
        assert "[redacted]" in out


def _crash(fmt: str) -> str:
    """An exception logged by our code and by uvicorn's error logger, with secrets in locals."""
    code = textwrap.dedent(
        f"""
        import logging
        from platereg.logging import configure_logging, get_logger
        configure_logging({fmt!r}, "INFO")

        def handler(authorization, body):
            secret_local = "LOCALSECRET42"
            raise RuntimeError("boom")

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


def _lines(level: str, fmt: str = "json") -> str:
    """The same fields through get_logger and LineLogger, in a process of its own."""
    code = textwrap.dedent(
        f"""
        import structlog
        from platereg.logging import LineLogger, configure_logging, get_logger
        configure_logging({fmt!r}, {level!r})
        structlog.contextvars.bind_contextvars(request_id="r1")
        fields = dict(route="/v1/plates/{{jurisdiction}}/{{plate}}", method="GET", status=200,
                      key_id="k1", ms=1.5, plate="ABC123")
        get_logger("platereg.http").info("request", **fields)
        LineLogger("platereg.http").info("request", **fields)
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60).stderr


def test_line_logger_writes_the_json_renderers_fields_and_redacts() -> None:
    slow, fast = (json.loads(line) for line in _lines("INFO").splitlines() if line.strip())
    assert slow.keys() == fast.keys()
    assert {k: v for k, v in fast.items() if k != "timestamp"} == \
        {k: v for k, v in slow.items() if k != "timestamp"}
    assert fast["plate"] == "[redacted]" and fast["request_id"] == "r1"
    assert fast["timestamp"].endswith("Z")


def test_line_logger_honours_the_level_and_the_console_format() -> None:
    assert _lines("WARNING").strip() == ""
    console = _lines("INFO", "console")
    lines = [line for line in console.splitlines() if " request " in line]
    assert len(lines) == 2 and "ABC123" not in console


def test_line_logger_lines_reach_captured_logs() -> None:
    import structlog

    from platereg.logging import LineLogger, configure_logging

    configure_logging("json", "INFO")
    with structlog.testing.capture_logs() as logs:
        LineLogger("platereg.http").info("request", status=429, key_id="k2")
    assert [(e["event"], e["status"], e["key_id"]) for e in logs] == [("request", 429, "k2")]
