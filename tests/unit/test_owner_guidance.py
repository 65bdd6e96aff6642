"""The owner page's pure parts: what each status means and what to do, the jurisdictions'
zones, times with the zone shown, the session length, the channels offered, the page
language from the browser, the client address the link limit counts, the cookie's Secure
flag from the configured address, and the settings behind them."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from starlette.requests import Request

from platereg.settings import ConfigError, load_settings
from registry.owner import words
from registry.owner.guard import LinkLimiter, client_key, cookie_secure, public_url_is_secure
from registry.owner.guidance import Department, guidance
from registry.owner.zones import Zones

TODAY = dt.date(2027, 3, 1)
DEPT = Department("ServiceOntario", "1-800-267-8097", "https://example.org/contact",
                  "https://example.org/renew")


def _view(status: str, expires: str = "2027-12-01", **extra) -> dict:
    return {"status": status, "flags": [status] if status != "valid" else [],
            "expires_on": expires, **extra}


def test_each_status_says_what_it_means_and_what_to_do() -> None:
    expired = guidance(_view("expired", "2027-02-01"), TODAY, "en", DEPT, 60)
    assert expired.renew and "has expired" in expired.meaning
    assert expired.steps == ["Renew it online, or in person with ServiceOntario."]
    suspended = guidance(_view("suspended", suspension_reasons=[
        "insurance_lapsed", "administrative"], flags=["suspended", "expired"]),
        TODAY, "en", DEPT, 60)
    assert not suspended.renew
    assert suspended.steps[0].startswith("Insurance lapsed: ask your insurance company")
    assert suspended.steps[1] == ("Administrative hold: call ServiceOntario at 1-800-267-8097 "
                                  "to find out what is needed.")
    assert "also expired" in suspended.steps[2]
    stolen = guidance(_view("stolen"), TODAY, "fr", DEPT, 60)
    assert "déclarée volée" in stolen.meaning and len(stolen.steps) == 3
    assert "ServiceOntario au 1-800-267-8097" in stolen.steps[2]
    cancelled = guidance(_view("cancelled"), TODAY, "en", DEPT, 60)
    assert "new plate with ServiceOntario" in cancelled.steps[0]
    # A valid plate: the renewal link once within the longest reminder window.
    assert guidance(_view("valid", "2027-04-30"), TODAY, "en", DEPT, 60).renew
    later = guidance(_view("valid", "2027-05-01"), TODAY, "en", DEPT, 60)
    assert not later.renew and later.steps[0].startswith("Nothing to do now")
    assert DEPT.tel == "tel:18002678097"


def test_times_are_in_the_jurisdictions_zone_with_the_zone_named() -> None:
    zones = Zones({"US-XX": "Pacific/Honolulu", "CA-ON": "America/Winnipeg"},
                  ZoneInfo("America/Toronto"))
    assert zones.of("CA-BC") == ZoneInfo("America/Vancouver")
    assert zones.of("CA-ON") == ZoneInfo("America/Winnipeg")  # configured over built-in
    assert zones.of("US-XX") == ZoneInfo("Pacific/Honolulu")
    assert zones.of("MX-CMX") == zones.of(None) == ZoneInfo("America/Toronto")
    assert zones.common(["CA-BC", "CA-BC"]) == ZoneInfo("America/Vancouver")
    assert zones.common(["CA-BC", "CA-QC"]) == zones.common([]) == ZoneInfo("America/Toronto")
    at = dt.datetime(2026, 1, 15, 20, 0, tzinfo=dt.UTC)
    assert words.moment(at, "en", zones.of("CA-BC")).replace("\u202f", " ") == \
        "Jan 15, 2026, 12:00:00 p.m. PST"
    assert words.moment(at, "fr", zones.of("CA-NL")) == "15 janv. 2026, 16 h 30 min 00 s HNT"


def test_session_length_channels_and_browser_language() -> None:
    assert words.session_length(1, "en") == "You stay signed in for 1 minute."
    assert words.session_length(20, "fr") == "Vous restez connecté pendant 20 minutes."
    assert "webhook" not in words.offered_channels(False, None)
    assert "webhook" in words.offered_channels(False, ["webhook", "email"])  # kept
    assert words.offered_channels(True, None) == words.CHANNELS
    assert words.accept_language("de-DE,fr;q=0.8,en;q=0.5") == "fr"
    assert words.accept_language("en;q=0.1, fr;q=0.9") == "fr"
    assert words.accept_language("de") is None and words.accept_language(None) is None


def _request(client: str, scheme: str = "http", host: str = "127.0.0.1") -> Request:
    return Request({"type": "http", "scheme": scheme, "client": (client, 1), "method": "GET",
                    "path": "/owner/", "headers": [(b"host", host.encode())],
                    "server": (host, 80)})


def test_client_address_and_secure_flag() -> None:
    assert client_key(_request("203.0.113.9")) == "203.0.113.9"
    assert client_key(_request("2001:db8:1:2:3:4:5:6")) == "2001:db8:1:2::/64"
    assert client_key(_request("::ffff:203.0.113.9")) == "203.0.113.9"
    assert not public_url_is_secure("http://127.0.0.1:8080/owner/")
    assert not public_url_is_secure("http://[::1]:8080/owner/")
    assert not public_url_is_secure("http://localhost/owner/")
    assert public_url_is_secure("https://127.0.0.1/owner/")
    assert public_url_is_secure("http://registry.internal/owner/")
    settings = load_settings(owner_page_url="http://127.0.0.1:8080/owner/")
    # The Host header is not looked at; the connection's scheme is.
    assert not cookie_secure(_request("10.0.0.1", host="registry.example.org"), settings)
    assert cookie_secure(_request("10.0.0.1", scheme="https"), settings)


def test_link_limiter_counts_refusals_per_client() -> None:
    limiter = LinkLimiter(2, 15)
    assert limiter.wait("a") == 0
    limiter.refused("a")
    limiter.refused("a")
    assert 890 <= limiter.wait("a") <= 900
    assert limiter.wait("b") == 0


def test_owner_page_settings_are_checked() -> None:
    settings = load_settings(trusted_proxies="10.0.0.0/8, 192.0.2.7",
                             jurisdiction_timezones="CA-BC=America/Vancouver,US-XX=UTC")
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.0.2.7"]
    assert settings.jurisdiction_zones() == {"CA-BC": "America/Vancouver", "US-XX": "UTC"}
    for name, value in (("trusted_proxies", "proxy.example.org"),
                        ("jurisdiction_timezones", "CA-BC=Mars/Olympus"),
                        ("jurisdiction_timezones", "BC:America/Vancouver")):
        with pytest.raises(ConfigError, match=f"PLATEREG_{name.upper()}"):
            load_settings(**{name: value})
