"""Hotlist paging rules (pure): cursors and entries.

``GET /v1/hotlist`` has two phases, both driven by one opaque cursor:

* **Full list** (no ``since``): the plates whose status is not ``valid`` right
  now, in plate-key order, ``limit`` per page. The first page records the
  newest ``status_changes.seq`` (the *snapshot*); following pages carry it in
  their cursor (``f``). After the last page, ``next`` is a delta cursor at
  the snapshot.
* **Deltas** (``since`` = a delta cursor ``d``): every status change after
  that ``seq`` for a plate that entered, left or stayed in a flagged status,
  oldest first; ``removed`` is true when the plate left. Writers insert
  ``status_changes`` under an advisory lock, so ``seq`` order is commit
  order and a cursor never skips a late commit.

Pages of the full list read the state at the time of each request (later
than the snapshot); every change after the snapshot is replayed by the
deltas, so a client that applies entries in order (upsert, or delete when
``removed``) ends with the current list.

A cursor is ``d:<seq>`` or ``f:<seq>:<plate_key>`` sealed by
:class:`registry.api.sealing.Sealer` (encrypted and authenticated with
``PLATEREG_CURSOR_SECRET``), so it reveals no plate. Clients must treat it as
opaque; anything that does not open to one of these forms is refused with 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry.api.cursors import MAX_CURSOR_LENGTH, InvalidCursor, open_cursor, seal
from registry.api.sealing import Sealer
from schemas.plates import InvalidPlate, parse_plate_key
from schemas.views import EnforcementView

#: Page size of GET /v1/hotlist: default and maximum.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 5000
ENFORCEMENT_KEYS: tuple[str, ...] = tuple(EnforcementView.model_fields)

_SEQ_RE = re.compile(r"(0|[1-9][0-9]{0,18})", re.ASCII)


@dataclass(frozen=True, slots=True)
class Cursor:
    seq: int                         # status_changes.seq already covered
    after_key: str | None = None     # full-list phase: last plate key returned
    full: bool = False               # True while paging the full list

    def encode(self, sealer: Sealer) -> str:
        if self.full:
            return seal(sealer, "f", f"{self.seq}:{self.after_key or ''}")
        return seal(sealer, "d", str(self.seq))


def delta_cursor(seq: int) -> Cursor:
    return Cursor(seq=seq)


def full_cursor(seq: int, after_key: str | None) -> Cursor:
    return Cursor(seq=seq, after_key=after_key, full=True)


def decode_cursor(text: str, sealer: Sealer) -> Cursor:
    """Open and parse a cursor; :class:`InvalidCursor` (without echoing it) otherwise."""
    kind, rest = open_cursor(sealer, text, MAX_CURSOR_LENGTH)
    if kind == "d":
        if not _SEQ_RE.fullmatch(rest):
            raise InvalidCursor("malformed cursor")
        return delta_cursor(_seq(rest))
    if kind == "f":
        seq_text, sep, key = rest.partition(":")
        if not sep or not _SEQ_RE.fullmatch(seq_text):
            raise InvalidCursor("malformed cursor")
        after: str | None = None
        if key:
            try:
                jurisdiction, plate = parse_plate_key(key)
            except InvalidPlate:
                raise InvalidCursor("malformed cursor") from None
            after = f"{jurisdiction}/{plate}"
            if after != key:
                raise InvalidCursor("malformed cursor")
        return full_cursor(_seq(seq_text), after)
    raise InvalidCursor("malformed cursor")


def _seq(text: str) -> int:
    value = int(text)
    if value > 2**63 - 1:
        raise InvalidCursor("malformed cursor")
    return value


def enforcement_only(view: Mapping[str, Any]) -> dict[str, Any]:
    """Only the enforcement view's fields: whatever a stored view holds, no owner data leaves."""
    return {k: view.get(k) for k in ENFORCEMENT_KEYS}


def change_entry(view: Mapping[str, Any], flagged: bool,
                 was_flagged: bool) -> dict[str, Any] | None:
    """The hotlist entry for one status change, or None if it does not concern the hotlist.

    Changes between two ``valid`` views (e.g. a renewal of a valid plate) are
    not hotlist changes. A plate leaving the flagged list is ``removed``;
    entering it or changing inside it (``suspended`` -> ``stolen``) is not.
    """
    if not flagged and not was_flagged:
        return None
    return {**enforcement_only(view), "removed": not flagged}


def current_entry(view: Mapping[str, Any]) -> dict[str, Any]:
    """A full-list entry: a plate flagged right now."""
    return {**enforcement_only(view), "removed": False}
