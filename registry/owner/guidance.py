"""What a plate's status means for its owner and what to do next, in the page's language,
and the department owners deal with (``PLATEREG_OWNER_DEPARTMENT_*``,
``PLATEREG_OWNER_RENEWAL_URL``).

Pure functions of a plate's view, the registry's day and the settings: an expired plate
says to renew (with the renewal link), a suspended one gives each reason and whom to
contact about it, a stolen one what to tell the police, a cancelled one where to get a
new plate, a valid one due for renewal (within the longest reminder window) the
renewal link too.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from platereg.i18n import N_
from platereg.settings import Settings
from registry.owner.words import gettext


@dataclass(frozen=True)
class Department:
    name: str
    phone: str
    url: str
    renewal_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Department:
        return cls(settings.owner_department_name, settings.owner_department_phone,
                   settings.owner_department_url, settings.owner_renewal_url)

    @property
    def tel(self) -> str:
        """The phone number as a ``tel:`` link (digits, and a leading +)."""
        digits = re.sub(r"[^0-9+]", "", self.phone)
        return f"tel:{digits}"


@dataclass(frozen=True)
class Guidance:
    meaning: str
    steps: list[str]
    renew: bool  # show the renewal link


_MEANING = {
    "valid": N_("This plate is valid: the vehicle may be driven with it."),
    "expired": N_("This plate has expired: the vehicle may not be driven on public roads "
                  "until the plate is renewed."),
    "suspended": N_("This plate is suspended: the vehicle may not be driven on public roads "
                    "until each reason below is cleared."),
    "stolen": N_("This plate is reported stolen: police systems flag it, and a vehicle "
                 "showing it may be stopped."),
    "cancelled": N_("This plate is cancelled: it may no longer be used on a vehicle."),
}
_SUSPENSION_STEPS = {
    "insurance_lapsed": N_("Insurance lapsed: ask your insurance company to restore your "
                           "coverage; they tell the registry, and this reason is cleared."),
    "unpaid_fines": N_("Unpaid fines: pay them to the court or municipality that issued "
                       "them (the ticket or the court notice says where)."),
    "emissions_failed": N_("Emissions test failed: have the vehicle repaired, then pass the "
                           "test again."),
    "court_order": N_("Court order: contact the court office named in the order."),
    "administrative": N_("Administrative hold: call %(department)s at %(phone)s to find out "
                         "what is needed."),
}
_STOLEN_STEPS = (
    N_("If you have found the plate, or it was reported by mistake, tell the police service "
       "that took the report: only they can clear it."),
    N_("If you did not report it stolen, call your local police service now."),
    N_("For a replacement plate, contact %(department)s at %(phone)s."),
)


def guidance(view: dict[str, Any], today: dt.date, language: str, department: Department,
             renew_within: int) -> Guidance:
    status = view["status"]
    fill = {"department": department.name, "phone": department.phone}

    def say(message: str) -> str:
        return gettext(message, language) % fill

    meaning = say(_MEANING[status]) if status in _MEANING else status
    if status == "expired":
        return Guidance(meaning, [say(N_("Renew it online, or in person with %(department)s."))],
                        renew=True)
    if status == "suspended":
        return Guidance(meaning, _suspension_steps(view, say), renew=False)
    if status == "stolen":
        return Guidance(meaning, [say(s) for s in _STOLEN_STEPS], renew=False)
    if status == "cancelled":
        return Guidance(meaning, [say(N_("To put the vehicle back on the road, register it "
                                         "with a new plate with %(department)s."))],
                        renew=False)
    return _valid(view, today, language, meaning, renew_within)


def _suspension_steps(view: dict[str, Any], say: Any) -> list[str]:
    reasons = view.get("suspension_reasons") or []
    steps = [say(_SUSPENSION_STEPS.get(r, _SUSPENSION_STEPS["administrative"]))
             for r in reasons] or [say(_SUSPENSION_STEPS["administrative"])]
    if "expired" in (view.get("flags") or []):
        steps.append(say(N_("The plate has also expired: renew it once the suspension is "
                            "lifted.")))
    return steps


def _valid(view: dict[str, Any], today: dt.date, language: str, meaning: str,
           renew_within: int) -> Guidance:
    expires = view.get("expires_on")
    if expires and (dt.date.fromisoformat(str(expires)) - today).days <= renew_within:
        return Guidance(meaning, [gettext("It is due for renewal: renew it before it "
                                          "expires.", language)], renew=True)
    return Guidance(meaning, [gettext("Nothing to do now. We will remind you before it "
                                      "expires.", language)], renew=False)
