"""The owner page's words in English and French, and plain-language phrasing of plate
status, renewal blockers, notice kinds, channels and delivery outcomes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from babel.dates import format_date, format_datetime

LANGUAGES = ("en", "fr")
LOCALES = {"en": "en_CA", "fr": "fr_CA"}

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your owner page", "site": "Plate Registry", "skip": "Skip to content",
        "language_switch": "Language", "other_language": "Français",
        "signed_in_intro": "You are signed in for 15 minutes. Nothing here is shared with "
                           "enforcement systems.",
        "plates": "Your plates", "no_plates": "No plate is registered to you.",
        "plate": "Plate", "status": "Status", "expiry": "Expiry", "vehicle": "Vehicle",
        "notices": "Your notices", "no_notices": "You have no notices yet.",
        "sent_on": "Sent:", "attempts": "Delivery attempts", "no_attempts": "Not delivered yet.",
        "channel": "Channel", "attempt": "Attempt", "outcome": "Outcome", "when": "When",
        "error": "Error",
        "preferences": "How we reach you", "channels": "Channels for notices",
        "channels_hint": "Choose at least one. If a channel fails we try the next one.",
        "notice_language": "Language of notices", "save": "Save preferences",
        "saved": "Your preferences are saved.",
        "defaults": "You have not chosen yet: we use e-mail when we have your address, "
                    "else text messages, else paper.",
        "access_log": "Who looked up your plates",
        "access_intro": "Every lookup of your plates or your record by a registry system, "
                        "newest first.",
        "no_access": "Nobody has looked up your plates.",
        "who": "Who", "role": "Kind of system", "purpose": "Reason", "what": "What",
        "your_record": "your owner record", "signed_you_in": "signed you in",
        "sign_out": "Sign out", "signed_out": "You are signed out.",
        "sign_in_title": "Sign in",
        "sign_in_help": "Use the personal link in your latest notice from the Plate Registry, "
                        "or sign in through your online services portal.",
        "signed_in": "You are signed in.", "continue": "Continue to your page",
        "error_title": "This link cannot be used",
        "csrf": "Your form expired. Please try again.",
        "choose_channel": "Choose at least one channel.",
        "no_reason": "not given",
    },
    "fr": {
        "title": "Votre page de propriétaire", "site": "Registre des plaques",
        "skip": "Aller au contenu",
        "language_switch": "Langue", "other_language": "English",
        "signed_in_intro": "Vous êtes connecté pour 15 minutes. Rien ici n'est transmis aux "
                           "systèmes d'application de la loi.",
        "plates": "Vos plaques", "no_plates": "Aucune plaque n'est enregistrée à votre nom.",
        "plate": "Plaque", "status": "État", "expiry": "Échéance", "vehicle": "Véhicule",
        "notices": "Vos avis", "no_notices": "Vous n'avez encore reçu aucun avis.",
        "sent_on": "Envoyé :", "attempts": "Tentatives d'envoi",
        "no_attempts": "Pas encore envoyé.",
        "channel": "Moyen", "attempt": "Tentative", "outcome": "Résultat", "when": "Quand",
        "error": "Erreur",
        "preferences": "Comment vous joindre", "channels": "Moyens d'envoi des avis",
        "channels_hint": "Choisissez-en au moins un. Si un moyen échoue, nous essayons le "
                         "suivant.",
        "notice_language": "Langue des avis", "save": "Enregistrer les préférences",
        "saved": "Vos préférences sont enregistrées.",
        "defaults": "Vous n'avez rien choisi : nous utilisons le courriel si nous avons votre "
                    "adresse, sinon le texto, sinon le papier.",
        "access_log": "Qui a consulté vos plaques",
        "access_intro": "Chaque consultation de vos plaques ou de votre dossier par un système "
                        "du registre, la plus récente d'abord.",
        "no_access": "Personne n'a consulté vos plaques.",
        "who": "Qui", "role": "Type de système", "purpose": "Motif", "what": "Quoi",
        "your_record": "votre dossier de propriétaire", "signed_you_in": "vous a connecté",
        "sign_out": "Se déconnecter", "signed_out": "Vous êtes déconnecté.",
        "sign_in_title": "Connexion",
        "sign_in_help": "Utilisez le lien personnel de votre dernier avis du Registre des "
                        "plaques, ou connectez-vous par votre portail de services en ligne.",
        "signed_in": "Vous êtes connecté.", "continue": "Continuer vers votre page",
        "error_title": "Ce lien ne peut pas être utilisé",
        "csrf": "Votre formulaire a expiré. Veuillez réessayer.",
        "choose_channel": "Choisissez au moins un moyen.",
        "no_reason": "non précisé",
    },
}

_STATUS = {
    "en": {"valid": "Valid", "expired": "Expired", "suspended": "Suspended",
           "stolen": "Reported stolen", "cancelled": "Cancelled"},
    "fr": {"valid": "Valide", "expired": "Expirée", "suspended": "Suspendue",
           "stolen": "Déclarée volée", "cancelled": "Annulée"},
}
_BLOCKERS = {
    "en": {"insurance_lapsed": "your insurance has lapsed",
           "unpaid_fines": "you have unpaid fines",
           "emissions_failed": "the vehicle failed its emissions test",
           "court_order": "a court order", "administrative": "an administrative hold"},
    "fr": {"insurance_lapsed": "votre assurance n'est plus en vigueur",
           "unpaid_fines": "vous avez des amendes impayées",
           "emissions_failed": "le véhicule a échoué au test d'émissions",
           "court_order": "une ordonnance du tribunal",
           "administrative": "une suspension administrative"},
}
_KINDS = {
    "en": {"renewal_reminder": "Renewal reminder", "expired": "Plate expired",
           "renewed": "Plate renewed", "suspended": "Plate suspended",
           "reinstated": "Plate reinstated", "stolen_reported": "Plate reported stolen",
           "recovered": "Plate recovered", "transferred_in": "Plate transferred to you",
           "transferred_out": "Plate transferred away", "cancelled": "Plate cancelled"},
    "fr": {"renewal_reminder": "Rappel de renouvellement", "expired": "Plaque expirée",
           "renewed": "Plaque renouvelée", "suspended": "Plaque suspendue",
           "reinstated": "Plaque rétablie", "stolen_reported": "Plaque déclarée volée",
           "recovered": "Plaque retrouvée", "transferred_in": "Plaque transférée à vous",
           "transferred_out": "Plaque transférée à autrui", "cancelled": "Plaque annulée"},
}
CHANNELS = ("email", "sms", "webhook", "plate_display", "paper")
_CHANNELS = {
    "en": {"email": "E-mail", "sms": "Text message (SMS)", "webhook": "Webhook",
           "plate_display": "Smart plate display", "paper": "Paper letter"},
    "fr": {"email": "Courriel", "sms": "Texto (SMS)", "webhook": "Webhook",
           "plate_display": "Affichage de la plaque intelligente", "paper": "Lettre papier"},
}
_OUTCOMES = {"en": {"sent": "Sent", "retry": "Failed, will retry", "failed": "Failed"},
             "fr": {"sent": "Envoyé", "retry": "Échec, nouvel essai prévu",
                    "failed": "Échec"}}
_ROLES = {"en": {"enforcement": "Enforcement", "operator": "Registry staff",
                 "portal": "Online services portal", "ingest": "Data feed"},
          "fr": {"enforcement": "Application de la loi", "operator": "Personnel du registre",
                 "portal": "Portail de services en ligne", "ingest": "Flux de données"}}
_PURPOSES = {
    "en": {"traffic_stop": "traffic stop", "parking_enforcement": "parking enforcement",
           "alpr_hit": "automatic plate reader", "investigation": "investigation",
           "collision": "collision", "registry_administration": "registry administration",
           "audit_review": "audit review", "testing": "testing"},
    "fr": {"traffic_stop": "interception routière", "parking_enforcement": "stationnement",
           "alpr_hit": "lecteur automatique de plaques", "investigation": "enquête",
           "collision": "collision", "registry_administration": "administration du registre",
           "audit_review": "vérification", "testing": "essai"},
}


def words(language: str) -> dict[str, str]:
    return _WORDS[language]


def pick_language(*candidates: str | None) -> str:
    for c in candidates:
        if c in LANGUAGES:
            return c  # type: ignore[return-value]
    return "en"


def date(value: dt.date | str | None, language: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = dt.date.fromisoformat(value)
    return format_date(value, format="long", locale=LOCALES[language])


def moment(value: dt.datetime, language: str, tz: dt.tzinfo) -> str:
    return format_datetime(value.astimezone(tz), format="medium", locale=LOCALES[language])


def _days(n: int, language: str) -> str:
    if language == "fr":
        return f"{n} jour" if n == 1 else f"{n} jours"
    return f"{n} day" if n == 1 else f"{n} days"


def expiry(view: dict[str, Any], today: dt.date, language: str) -> str:
    """The expiry in plain words: 'Expires on 30 November 2027 (in 12 days)'."""
    if not view.get("expires_on"):
        return ""
    expires = dt.date.fromisoformat(str(view["expires_on"]))
    when = date(expires, language)
    left = (expires - today).days
    if left < 0:
        return f"Expirée le {when}" if language == "fr" else f"Expired on {when}"
    if language == "fr":
        return f"Expire le {when} (dans {_days(left, language)})"
    return f"Expires on {when} (in {_days(left, language)})"


def status(view: dict[str, Any], language: str) -> str:
    text = _STATUS[language].get(view["status"], view["status"])
    reasons = view.get("suspension_reasons") or []
    if view["status"] == "suspended" and reasons:
        text += " : " if language == "fr" else ": "
        text += "; ".join(_BLOCKERS[language].get(r, r) for r in reasons)
    return text


def blocked(view: dict[str, Any], language: str) -> str:
    """What blocks renewal, in plain words, or '' when nothing does."""
    reasons = [r for r in view.get("suspension_reasons") or [] if r in _BLOCKERS[language]]
    if not reasons:
        return ""
    listed = "; ".join(_BLOCKERS[language][r] for r in reasons)
    if language == "fr":
        return f"Le renouvellement est bloqué : {listed}."
    return f"Renewal is blocked: {listed}."


def kind(value: str, language: str) -> str:
    return _KINDS[language].get(value, value)


def channel(value: str, language: str) -> str:
    return _CHANNELS[language].get(value, value)


def outcome(value: str, language: str) -> str:
    return _OUTCOMES[language].get(value, value)


def role(value: str, language: str) -> str:
    return _ROLES[language].get(value, value)


def purpose(value: str | None, language: str) -> str:
    if not value:
        return _WORDS[language]["no_reason"]
    return _PURPOSES[language].get(value, value)
