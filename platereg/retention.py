"""Retention of personal data: what ``platereg purge`` removes, and after how long.

:data:`KINDS` lists every kind of personal data that is kept for a while and then
removed, each with its setting (``PLATEREG_<KIND>_RETENTION_DAYS``), its table and the
rows past retention. ``platereg migrate`` writes the settings into the ``retention``
table (:func:`write_retention`, as the schema's owner; migration 0021); ``platereg
purge`` reads them from there (:func:`stored_retention`; its role may read, not change
them) and removes, kind by kind, in chunks, what is past them (:func:`purge`). The
audit triggers of migration 0021 read the same row, so the database refuses to delete an
audit row the purge would keep.

A branch adding a table with personal data adds its kind here (and its default to the
``retention`` rows of its migration), and its line to ``platereg.security.roles.GRANTS``
with what the ``purge`` role needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

#: Session advisory lock: one purge at a time, however many run.
PURGE_LOCK_ID = 0x706C617465617564
CHUNK = 10_000


@dataclass(frozen=True)
class Kind:
    """One kind of personal data: rows of ``table`` (alias ``t``) matching ``where``
    (``$1``: the retention in days) are past retention; ``action`` is ``DELETE`` or the
    ``SET`` list of an UPDATE that clears them."""

    name: str                  # the row of the `retention` table
    setting: str               # the Settings field
    table: str
    key: str                   # a unique column, to take chunks
    where: str
    action: str
    what: str                  # for people: what is removed

    def _past(self, limit: bool) -> str:
        cutoff = "now() - make_interval(days => $1)"
        return (f"SELECT t.{self.key} FROM {self.table} t WHERE {self.where.format(cutoff)}"
                + (" LIMIT $2" if limit else ""))

    @property
    def count_sql(self) -> str:
        return f"SELECT count(*) FROM ({self._past(False)}) AS past"

    @property
    def purge_sql(self) -> str:
        verb = (f"DELETE FROM {self.table}" if self.action == "DELETE"
                else f"UPDATE {self.table} SET {self.action}")
        return f"{verb} WHERE {self.key} IN ({self._past(True)})"


KINDS: tuple[Kind, ...] = (
    Kind("audit", "audit_retention_days", "audit_log", "id", "t.at < {}", "DELETE",
         "audit rows (who read which plate or owner record) are deleted"),
    Kind("notice", "notice_retention_days", "notices", "notice_id",
         "t.created_at < {} AND (t.recipient <> '{{}}'::jsonb OR t.context <> '{{}}'::jsonb)"
         " AND NOT EXISTS (SELECT FROM notice_dispatch d WHERE d.notice_id = t.notice_id"
         " AND d.state IN ('pending', 'print'))",
         "recipient = '{}'::jsonb, context = '{}'::jsonb",
         "notices lose their recipient's contact data and their text's details (once "
         "delivered or failed)"),
    Kind("dead_letter", "dead_letter_retention_days", "dlq_messages", "id",
         "t.received_at < {} AND t.purged_at IS NULL AND t.published_at IS NOT NULL",
         "key = NULL, value = NULL, purged_at = now()",
         "rejected messages lose their key and value (the original bytes)"),
    Kind("sign_in_link", "sign_in_link_retention_days", "owner_tokens", "token_hash",
         "t.expires_at < {}", "DELETE", "expired sign-in links are deleted"),
    Kind("owner_session", "owner_session_retention_days", "owner_sessions", "session_id",
         "t.expires_at < {}", "DELETE", "expired owner sessions are deleted"),
)


def retention_days(settings: Any) -> dict[str, int]:
    """Each kind's retention in days, from the settings."""
    return {k.name: getattr(settings, k.setting) for k in KINDS}


_WRITE = ("INSERT INTO retention (kind, days) VALUES (%s, %s) ON CONFLICT (kind) DO UPDATE"
          " SET days = EXCLUDED.days, updated_at = now() WHERE retention.days <> EXCLUDED.days")


def write_retention(conn: Any, days: Mapping[str, int]) -> None:
    """Store the retention of each kind (psycopg, in the caller's transaction: the schema
    owner's, after the migrations)."""
    for kind, value in days.items():
        conn.execute(_WRITE, (kind, value))


async def stored_retention(conn: asyncpg.Connection) -> dict[str, int]:
    """The retention of each kind as the database has it."""
    return {r["kind"]: r["days"] for r in await conn.fetch("SELECT kind, days FROM retention")}


@dataclass
class Outcome:
    kind: Kind
    days: int | None           # None: the database has no retention for it (not purged)
    removed: int = 0


Progress = Callable[[Kind, int, int], None]
"""Called as ``progress(kind, removed so far, total)`` after each chunk (and once first)."""


async def purge(conn: asyncpg.Connection, *, chunk: int = CHUNK,
                progress: Progress | None = None) -> list[Outcome] | None:
    """Remove what is past each kind's retention, a chunk per statement (each its own
    transaction); None when another purge is running."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PURGE_LOCK_ID):
        return None
    try:
        stored = await stored_retention(conn)
        outcomes = [Outcome(k, stored.get(k.name)) for k in KINDS]
        for outcome in outcomes:
            if outcome.days is not None:
                await _purge_kind(conn, outcome, chunk, progress)
        return outcomes
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK_ID)


async def _purge_kind(conn: asyncpg.Connection, outcome: Outcome, chunk: int,
                      progress: Progress | None) -> None:
    kind, days = outcome.kind, outcome.days
    total = await conn.fetchval(kind.count_sql, days) if progress is not None else 0
    if progress is not None:
        progress(kind, 0, total)
    while True:
        status = await conn.execute(kind.purge_sql, days, chunk)
        n = int(status.rsplit(" ", 1)[1])
        outcome.removed += n
        if progress is not None:
            progress(kind, outcome.removed, max(total, outcome.removed))
        if n < chunk:
            return


# --- the command (``platereg purge``) -------------------------------------------------------


def summary(outcomes: list[Outcome]) -> list[str]:
    """One line per kind: what was removed, past which retention."""
    lines = []
    for o in outcomes:
        if o.days is None:
            lines.append(f"{o.kind.name}: no retention in the database (run `platereg "
                         "migrate`); nothing removed")
        else:
            lines.append(f"{o.kind.name}: {o.removed} row(s) past {o.days} day(s): "
                         f"{o.kind.what}")
    return lines


def purge_once(dsn: str, *, terminal: bool | None = None) -> list[Outcome] | None:
    """One purge on its own connection, with a progress bar (rich) when ``terminal``
    (default: whether stderr is one); None when another purge is running."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    shown = console.is_terminal if terminal is None else terminal
    bar = Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                   console=console, disable=not shown, transient=False)
    tasks: dict[str, Any] = {}

    def progress(kind: Kind, done: int, total: int) -> None:
        if kind.name not in tasks:
            tasks[kind.name] = bar.add_task(kind.name, total=total)
        bar.update(tasks[kind.name], completed=done, total=total)

    async def go() -> list[Outcome] | None:
        conn = await asyncpg.connect(dsn)
        try:
            return await purge(conn, progress=progress if shown else None)
        finally:
            await conn.close()

    with bar:
        return asyncio.run(go())


async def purge_forever(dsn: str, every: float) -> int:
    """``platereg purge --every``: purge now and every ``every`` seconds until SIGTERM or
    SIGINT, logging what each run removed (a failed run is logged and tried again)."""
    import asyncio
    import contextlib
    import signal

    from platereg.logging import get_logger

    log = get_logger(__name__)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn)
            try:
                outcomes = await purge(conn)
            finally:
                await conn.close()
            for o in outcomes or ():
                if o.removed:
                    log.info("purged", kind=o.kind.name, count=o.removed, days=o.days)
        except Exception as exc:  # noqa: BLE001 - the schedule goes on whatever failed
            log.warning("purge failed", error_type=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    return 0
