"""`make run`'s mail catcher keeps every message but logs no recipient, sender or phone
number, even at DEBUG: it logs counts (its SMTP server's protocol log, which names each
envelope address, is kept to warnings; the log redaction would mask what got through)."""

from __future__ import annotations

import email.message
import os
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.embedded import free_port, stop_process

pytestmark = pytest.mark.integration


def test_the_mail_catcher_logs_no_contact_data(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEREG_")}
    env.update(PLATEREG_SMTP_PORT=str(port), PLATEREG_LOG_LEVEL="DEBUG")
    log_path = tmp_path / "mail.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wiring.cli", "notices", "mail-catcher", "--dir",
             str(tmp_path / "mail")], env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the mail catcher did not listen"
                time.sleep(0.1)
        msg = email.message.EmailMessage()
        msg["From"] = "Plate Registry <notices@platereg.localhost>"
        msg["To"] = "Jane Doe <jane.doe@example.org>"
        msg["Subject"] = "Your plate"
        msg.set_content("Call +1 (416) 555-0199.")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(msg, to_addrs=["jane.doe@example.org", "+14165550199@sms.example"])
        deadline = time.monotonic() + 10
        while not list((tmp_path / "mail").glob("*.eml")):
            assert time.monotonic() < deadline, "no message kept"
            time.sleep(0.1)
    finally:
        stop_process(proc, 15, 30)
    (kept,) = (tmp_path / "mail").glob("*.eml")
    assert "jane.doe@example.org" in kept.read_text()       # the message itself is kept
    out = log_path.read_text()
    assert "mail caught" in out and "messages=1" in out, out
    for value in ("jane.doe@example.org", "notices@platereg.localhost", "14165550199",
                  "555-0199"):
        assert value not in out, (value, out)
