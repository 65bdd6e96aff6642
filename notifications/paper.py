"""Paper notices: one PDF per day of letters, one letter per page.

``platereg notices paper --date D`` takes the paper deliveries queued on day
D (in ``PLATEREG_TIMEZONE``), writes them to one PDF (address block, date,
subject, text, in the owner's language) and marks them delivered only after
the file is completely written (a temporary file renamed into place), in the
same transaction that read them: a crash leaves them queued.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
from babel.dates import format_date
from fpdf import FPDF

from notifications import store
from notifications.render import LOCALES, language_of, render
from platereg import metrics
from platereg.settings import Settings

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)


def _font(pdf: FPDF) -> str:
    """DejaVu Sans when installed (any script), else the core Helvetica (Latin-1)."""
    for d in FONT_DIRS:
        if (d / "DejaVuSans.ttf").exists() and (d / "DejaVuSans-Bold.ttf").exists():
            pdf.add_font("DejaVu", "", str(d / "DejaVuSans.ttf"))
            pdf.add_font("DejaVu", "B", str(d / "DejaVuSans-Bold.ttf"))
            return "DejaVu"
    return "Helvetica"


def _latin1(text: str, font: str) -> str:
    return text if font == "DejaVu" else text.encode("latin-1", "replace").decode("latin-1")


def address_lines(recipient: Mapping[str, Any]) -> list[str]:
    a = recipient.get("address") or {}
    lines = [recipient.get("name") or "", *(a.get("lines") or [])]
    city = " ".join(x for x in (a.get("city"), a.get("region"), a.get("postal_code")) if x)
    return [x for x in (*lines, city, a.get("country") or "") if x]


def write_letters(rows: list, day: dt.date, path: Path) -> None:
    """Every letter on its own page; written to ``path`` atomically."""
    pdf = FPDF(format="A4")
    font = _font(pdf)
    for r in rows:
        recipient = r["recipient"] or {}
        language = language_of(r["language"])
        texts = render(r["kind"], r["plate_key"], language, r["context"] or {}, recipient)
        pdf.add_page()
        pdf.set_font(font, size=11)
        for line in address_lines(recipient):
            pdf.cell(0, 6, _latin1(line, font), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(10)
        pdf.cell(0, 6, format_date(day, format="long", locale=LOCALES[language]),
                 new_x="LMARGIN", new_y="NEXT")
        pdf.ln(6)
        pdf.set_font(font, "B", 13)
        pdf.multi_cell(0, 7, _latin1(texts.subject, font), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        pdf.set_font(font, size=11)
        pdf.multi_cell(0, 6, _latin1(texts.letter, font), new_x="LMARGIN", new_y="NEXT")
    tmp = path.with_name(path.name + ".part")
    pdf.output(str(tmp))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


async def print_day(conn: asyncpg.Connection, settings: Settings, day: dt.date,
                    path: Path) -> int:
    """Write day ``day``'s letters to ``path``; returns how many (0: no file written)."""
    start = dt.datetime.combine(day, dt.time(), settings.tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), settings.tz)
    async with conn.transaction():
        rows = await store.print_queue(conn, start, end)
        if not rows:
            return 0
        write_letters(list(rows), day, path)
        ids = [r["notice_id"] for r in rows]
        await conn.execute(
            """INSERT INTO notice_deliveries (notice_id, channel, attempt, outcome)
               SELECT n, 'paper', 1, 'sent' FROM unnest($1::uuid[]) AS n""", ids)
        await conn.execute(
            "UPDATE notice_dispatch SET state = 'sent', attempts = attempts + 1, "
            "updated_at = now() WHERE channel = 'paper' AND notice_id = ANY($1::uuid[])", ids)
    metrics.NOTICE_DELIVERIES.labels("paper", "sent").inc(len(ids))
    return len(ids)
