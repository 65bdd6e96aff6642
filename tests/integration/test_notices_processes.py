"""The notices processes as a user runs them: ``platereg notices schedule``,
``dispatch`` and ``mail-catcher``, with /healthz, /readyz and /metrics, an
e-mail notice ending up as an .eml file, and SIGINT stopping each with 0."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from devtools.embedded import free_port
from platereg.settings import Settings
from tests.integration.notices_support import apply_events, event, issued, owner, wait_until

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


async def test_processes_deliver_an_email_to_the_mail_catcher_and_serve_ops_routes(
        topics: Settings, pool: asyncpg.Pool, tmp_path: Path) -> None:
    smtp, sched, disp = free_port(), free_port(), free_port()
    env = {**os.environ, "PLATEREG_SMTP_PORT": str(smtp), "PLATEREG_LOG_LEVEL": "INFO"}
    mail = tmp_path / "mail"
    log = open(tmp_path / "processes.log", "ab")  # noqa: SIM115
    cli = [sys.executable, "-m", "wiring.cli", "notices"]
    procs = [subprocess.Popen([*cli, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
             for args in (["mail-catcher", "--dir", str(mail)],
                          ["schedule", "--metrics-port", str(sched), "--every", "0.5"],
                          ["dispatch", "--metrics-port", str(disp)])]
    try:
        now = dt.datetime.now(dt.UTC)
        o = owner(42, language="fr")
        await apply_events(pool, topics, [
            issued("CA-QC/PROC1", now.date() + dt.timedelta(days=20),
                   now - dt.timedelta(hours=1), o),
            event("plate.suspended", "CA-QC/PROC1", now - dt.timedelta(minutes=1),
                  {"reason": "emissions_failed"}, source="/emissions/lab/")], now)
        files = await wait_until(lambda: sorted(mail.glob("*.eml")) if mail.exists() and
                                 len(list(mail.glob("*.eml"))) >= 2 else None,
                                 timeout=60, what="two e-mails caught")
        for port in (sched, disp):
            base = f"http://127.0.0.1:{port}"
            assert get(base + "/healthz")[0] == 200
            await wait_until(lambda b=base: get(b + "/readyz")[0] == 200, what="ready")
        metrics = get(f"http://127.0.0.1:{sched}/metrics")[1]
        assert "platereg_notice_scheduler_last_run_timestamp_seconds " in metrics
        assert 'platereg_notices_total{kind="renewal_reminder"} 1.0' in metrics
        await wait_until(lambda: 'platereg_notice_deliveries_total{channel="email",'
                         'outcome="sent"} 2.0' in get(f"http://127.0.0.1:{disp}/metrics")[1],
                         what="deliveries counted")
        subjects = set()
        for f in files:
            msg = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
            assert msg["To"].addresses[0].addr_spec == o["email"]
            subjects.add(msg["Subject"])
        # The reminder (30 days window for an expiry in 20) names its blocker, in French.
        reminder = next(f for f in files if "renouvellement" in f.read_text("utf-8",
                                                                            "replace").lower())
        body = email.message_from_bytes(reminder.read_bytes(), policy=email.policy.default)
        assert "test d'émissions" in body.get_body(("plain",)).get_content()
        assert len(subjects) == 2
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        codes = [p.wait(30) for p in procs]
        log.close()
    assert codes == [0, 0, 0], (tmp_path / "processes.log").read_text()[-3000:]
