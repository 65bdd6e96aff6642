"""The registry's clock: "now" for the API's views, the consumer's batches and the
expiry sweep, in one injectable object.

Production uses the real clock (offset zero). Tests inject a :class:`Clock`
and move it with :meth:`Clock.set` to cross midnight in the registry's time
zone; child processes take the offset from ``PLATEREG_CLOCK_OFFSET_SECONDS``,
a test-only setting (never set it in production: views, status changes and
the ``future_time`` check would use the shifted time). The shifted clock keeps
running at the real rate, so timeouts and waits still work.
"""

from __future__ import annotations

import datetime as dt

from platereg.settings import Settings


class Clock:
    """The real UTC clock plus a fixed offset (zero unless a test sets one)."""

    def __init__(self, offset: dt.timedelta = dt.timedelta(0)) -> None:
        self.offset = offset

    @classmethod
    def from_settings(cls, settings: Settings) -> Clock:
        return cls(dt.timedelta(seconds=settings.clock_offset_seconds))

    def now(self) -> dt.datetime:
        """The current instant, timezone-aware UTC."""
        return dt.datetime.now(dt.UTC) + self.offset

    def today(self, tz: dt.tzinfo) -> dt.date:
        """The calendar date in ``tz`` now."""
        return self.now().astimezone(tz).date()

    def set(self, instant: dt.datetime) -> None:
        """Make :meth:`now` read ``instant`` from this moment on (test use)."""
        self.offset = instant - dt.datetime.now(dt.UTC)
