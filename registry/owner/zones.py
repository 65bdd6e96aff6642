"""The time zone of a plate's jurisdiction, for the times the owner page shows.

A built-in table gives each Canadian province and territory and each US state the zone
most of its people live in (a province or state across two zones gets the larger one);
``PLATEREG_JURISDICTION_TIMEZONES`` adds to it or replaces entries, and a jurisdiction
in neither uses the registry's zone (``PLATEREG_TIMEZONE``). Status and expiry are still
derived in the registry's zone (contract section 2): only the times shown move.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from zoneinfo import ZoneInfo

_CANADA = {
    "CA-AB": "America/Edmonton", "CA-BC": "America/Vancouver", "CA-MB": "America/Winnipeg",
    "CA-NB": "America/Moncton", "CA-NL": "America/St_Johns", "CA-NS": "America/Halifax",
    "CA-NT": "America/Yellowknife", "CA-NU": "America/Iqaluit", "CA-ON": "America/Toronto",
    "CA-PE": "America/Halifax", "CA-QC": "America/Toronto", "CA-SK": "America/Regina",
    "CA-YT": "America/Whitehorse",
}
_EASTERN = ("CT", "DC", "DE", "FL", "GA", "KY", "MA", "MD", "ME", "NC", "NH", "NJ", "NY",
            "OH", "PA", "RI", "SC", "VA", "VT", "WV")
_CENTRAL = ("AL", "AR", "IA", "IL", "KS", "LA", "MN", "MO", "MS", "ND", "NE", "OK", "SD",
            "TN", "TX", "WI")
_US = {
    **{f"US-{s}": "America/New_York" for s in _EASTERN},
    **{f"US-{s}": "America/Chicago" for s in _CENTRAL},
    **{f"US-{s}": "America/Denver" for s in ("CO", "MT", "NM", "UT", "WY")},
    **{f"US-{s}": "America/Los_Angeles" for s in ("CA", "NV", "OR", "WA")},
    "US-AK": "America/Anchorage", "US-AZ": "America/Phoenix", "US-HI": "Pacific/Honolulu",
    "US-ID": "America/Boise", "US-IN": "America/Indiana/Indianapolis",
    "US-MI": "America/Detroit",
}
#: Jurisdiction -> IANA zone, before PLATEREG_JURISDICTION_TIMEZONES.
BUILT_IN: Mapping[str, str] = {**_CANADA, **_US}


class Zones:
    """Each jurisdiction's zone: the built-in table, the configured entries over it, and
    ``default`` for the rest."""

    def __init__(self, configured: Mapping[str, str], default: dt.tzinfo) -> None:
        self._names = {**BUILT_IN, **configured}
        self.default = default

    def of(self, jurisdiction: str | None) -> dt.tzinfo:
        name = self._names.get(jurisdiction or "")
        return _zone(name) if name else self.default

    def common(self, jurisdictions: Iterable[str]) -> dt.tzinfo:
        """The one zone of all these jurisdictions, or the default when they differ (or
        there are none): the zone of an owner's times that name no plate."""
        zones = {self.of(j) for j in jurisdictions}
        return zones.pop() if len(zones) == 1 else self.default


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)
