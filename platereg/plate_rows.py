"""The ``plates`` table read as :class:`~schemas.fold.PlateState`: one column list, one mapper.

Every query that reads a plate's state selects :func:`state_columns` first, in
``PlateState`` field order, and any other columns after them; :func:`state_from_row`
then reads the state by position (no name look-ups on the consumer's hot path).
Enforcement queries select ``NULL::jsonb AS owner``: owner data is not even read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from schemas.fold import PlateState

#: ``PlateState``'s fields, which are also the ``plates`` columns holding them.
STATE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PlateState))
_OWNER = STATE_FIELDS.index("owner")
_REASONS = STATE_FIELDS.index("suspension_reasons")


def state_columns(*, with_owner: bool = True) -> str:
    """The select list of a plate's state (``owner`` as NULL unless ``with_owner``)."""
    return ", ".join(c if with_owner or c != "owner" else "NULL::jsonb AS owner"
                     for c in STATE_FIELDS)


def state_from_row(row: Sequence[Any]) -> PlateState:
    """The state in the first columns of ``row`` (an asyncpg Record or a tuple)."""
    values = list(row[: len(STATE_FIELDS)])
    values[_REASONS] = tuple(values[_REASONS] or ())
    return PlateState(*values)
