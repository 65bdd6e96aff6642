"""The audit rows of an owner's own reads and of owner-token mints, as pure data: one
row per plate read (kind ``owner_self``, the plate and its status) and one per other
record (``owner_<record>``, result ``read``), all under the key id ``owner`` with the
owner's id; a mint under the portal key's id, or ``link`` for a sign-in link."""

from __future__ import annotations

import datetime as dt

from registry.owner.data import LINK_KEY, SELF_KEY, mint_row, self_read_rows

NOW = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
VIEWS = [{"jurisdiction": "CA-ON", "plate": "AAA111", "status": "suspended"},
         {"jurisdiction": "CA-QC", "plate": "AAA222", "status": "valid"}]


def test_an_owner_s_own_reads_are_one_row_per_plate_and_per_record() -> None:
    assert (SELF_KEY, LINK_KEY) == ("owner", "link")
    assert self_read_rows("own-a", NOW, views=VIEWS) == [
        (NOW, "owner", "owner_self", "CA-ON", "AAA111", None, "suspended", "own-a"),
        (NOW, "owner", "owner_self", "CA-QC", "AAA222", None, "valid", "own-a")]
    assert self_read_rows("own-a", NOW, record="notices") == [
        (NOW, "owner", "owner_notices", None, None, None, "read", "own-a")]
    assert self_read_rows("own-a", NOW) == []


def test_a_mint_is_audited_under_its_key_or_the_link() -> None:
    assert mint_row("own-a", "key-1", NOW) == (
        NOW, "key-1", "owner_session", None, None, None, "minted", "own-a")
    assert mint_row("own-a", None, NOW) == (
        NOW, "link", "owner_session", None, None, None, "minted", "own-a")
