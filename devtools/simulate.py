"""Realistic registry traffic: a pure, seeded generator of plate events, and output sinks.

The generator (:func:`generate`) simulates the life of ``plates`` plates over a
window of simulated time ``[start, start + duration)``:

* plates are issued (most early in the window, some during it) with a first
  expiry spread over the following 12 months; jurisdictions CA-ON 55 %,
  CA-QC 30 %, US-NY 10 %, CA-BC 5 %; owners speak ``fr`` mostly in Quebec
  (about 25 % overall), with realistic-looking names, fictional phone numbers
  (555-01xx) and e-mail addresses on ``example.*`` domains only;
* renewals: about 80 % on time (up to 45 days before expiry), 12 % late (up to
  90 days after) and 8 % never (the plate expires);
* insurance lapses, unpaid fines and failed emissions tests suspend plates;
  most are reinstated within days or weeks;
* stolen reports (about 1 %/year), most recovered; transfers to new owners,
  owner updates (e-mail, phone, language, name), cancellations, smart plate
  pairings and unpairings.

Events come out merged in time order. On top of that stream:

* ``late_share``: that share of valid events is held back and emitted 20 to
  2,000 items later, so they arrive out of order (late);
* ``duplicate_share``: that share of output items are exact re-sends (same
  bytes, same ``id``) of a recent event;
* ``invalid_share``: that share of output items are invalid: malformed JSON,
  unknown type, invalid plate, schema violations, a ``time`` far in the future,
  an oversized event, an ``id`` reused by its source with different content
  (``id_conflict``) or a stolen report from a smart plate device, which the
  default source policy does not allow (``unauthorized_source``). Each carries
  the reason the registry should give.

Every valid event comes from a source the default source policy
(``schemas.policy.DEFAULT_POLICY``) allows to send it: registry offices under
``/registry/``, insurers under ``/insurance/``, courts (unpaid fines) under
``/courts/``, the emissions program under ``/emissions/``, police under
``/police/``.

A fixed ``seed`` (with the same options) gives the same bytes, item for item:
every random choice comes from seeded generators (one per plate, one for the
stream) and times derive from ``start``, never from the wall clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import random
import re
import time as _time
import unicodedata
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from schemas.topics import CLOUDEVENTS_JSON, CONTENT_TYPE_HEADER

VALID, DUPLICATE, INVALID = "valid", "duplicate", "invalid"
DEFAULT_SEEDED_START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)
DAY_S = 86400.0

# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SimConfig:
    plates: int = 1000
    start: datetime = DEFAULT_SEEDED_START
    duration: timedelta = YEAR
    events: int | None = None            # stop after this many output items
    late_share: float = 0.0
    duplicate_share: float = 0.0
    invalid_share: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.plates < 1:
            raise ValueError("plates must be at least 1")
        if self.start.tzinfo is None:
            raise ValueError("start must have a UTC offset")
        if self.duration <= timedelta(0):
            raise ValueError("duration must be positive")
        if self.events is not None and self.events < 0:
            raise ValueError("events must not be negative")
        for name in ("late_share", "duplicate_share", "invalid_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0 or math.isnan(value):
                raise ValueError(f"{name.replace('_', '-')} must be between 0 and 1")
        if self.duplicate_share + self.invalid_share > 1.0:
            raise ValueError("duplicate-share + invalid-share must not exceed 1")
        if self.events is None and self.duplicate_share + self.invalid_share >= 1.0:
            raise ValueError("with duplicate-share + invalid-share = 1, give --events")

    @property
    def end(self) -> datetime:
        return self.start + self.duration


@dataclass(frozen=True)
class Item:
    """One output message. ``value`` is the JSON text (broken when ``kind`` is invalid)."""

    kind: str                 # valid | duplicate | invalid
    key: bytes | None         # Kafka key: the canonical plate key
    value: bytes
    event_type: str | None = None
    reason: str | None = None  # for invalid items: the reason the registry should give
    late: bool = False
    event_id: str | None = None


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"365d"``, ``"2w"`` -> timedelta."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError("duration must look like 90s, 15m, 12h, 365d or 2w")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


# --------------------------------------------------------------------------- reference data

EN_FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
            "David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
            "Thomas", "Sarah", "Daniel", "Karen", "Matthew", "Emily", "Andrew", "Olivia",
            "Ryan", "Megan", "Priya", "Wei", "Arjun", "Mei", "Omar", "Fatima", "Liam", "Noah",
            "Ava", "Chloe", "Ethan", "Grace", "Hannah", "Owen"]
EN_LAST = ["Smith", "Brown", "Tremblay", "Martin", "Roy", "Wilson", "MacDonald", "Taylor",
           "Campbell", "Anderson", "Jones", "Leblanc", "Thompson", "White", "Clark", "Wong",
           "Singh", "Patel", "Nguyen", "Chen", "Li", "Kim", "Johnson", "Williams", "Miller",
           "Davis", "Garcia", "Rodriguez", "Murphy", "O'Brien", "Kelly", "Walsh", "Stewart",
           "Robertson", "Scott", "Young", "King", "Wright", "Hill", "Green"]
FR_FIRST = ["Jean", "Marie", "Pierre", "Nathalie", "Louis", "Isabelle", "François", "Sophie",
            "Michel", "Julie", "André", "Catherine", "Mathieu", "Geneviève", "Étienne",
            "Valérie", "Olivier", "Chantal", "Guillaume", "Mélanie", "Félix", "Émilie",
            "Benoît", "Josée", "Alexandre", "Annie", "Simon", "Caroline", "Luc", "Maude",
            "Gabriel", "Léa", "Samuel", "Camille", "Antoine", "Rosalie", "Zoé", "Hélène",
            "Raphaël", "Noémie"]
FR_LAST = ["Tremblay", "Gagnon", "Roy", "Côté", "Bouchard", "Gauthier", "Morin", "Lavoie",
           "Fortin", "Gagné", "Ouellet", "Pelletier", "Bélanger", "Lévesque", "Bergeron",
           "Leblanc", "Paquette", "Girard", "Simard", "Boucher", "Caron", "Beaulieu",
           "Cloutier", "Dubé", "Poirier", "Fournier", "Lapointe", "Leclerc", "Lefebvre",
           "Poulin", "Thibault", "St-Pierre", "Nadeau", "Martel", "Gilbert", "Hamel",
           "Desjardins", "Lemieux", "Mercier", "Bisson"]

# make -> (WMI prefixes, models)
MAKES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Honda": (("2HG", "19X", "5FN"), ("Civic", "Accord", "CR-V", "HR-V", "Odyssey")),
    "Toyota": (("2T1", "4T1", "2T3"), ("Corolla", "Camry", "RAV4", "Highlander", "Tacoma")),
    "Ford": (("1FA", "1FM", "1FT"), ("F-150", "Escape", "Explorer", "Mustang", "Edge")),
    "Chevrolet": (("1G1", "2GN", "1GC"), ("Malibu", "Equinox", "Silverado", "Trax")),
    "Hyundai": (("KMH", "5NM"), ("Elantra", "Tucson", "Kona", "Santa Fe")),
    "Nissan": (("1N4", "5N1", "JN8"), ("Sentra", "Rogue", "Altima", "Kicks")),
    "Kia": (("KND", "KNA"), ("Sorento", "Soul", "Sportage", "Forte")),
    "Mazda": (("JM1", "JM3"), ("Mazda3", "CX-5", "CX-30")),
    "Subaru": (("JF1", "JF2", "4S4"), ("Outback", "Forester", "Crosstrek", "Ascent")),
    "Volkswagen": (("3VW", "WVW", "1V2"), ("Jetta", "Golf", "Tiguan", "Atlas")),
    "Tesla": (("5YJ", "7SA"), ("Model 3", "Model Y")),
    "Ram": (("1C6", "3C6"), ("1500", "2500", "ProMaster")),
}
#: make -> (VIN world manufacturer codes, models), as MAKES.
Makes = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
MOTORCYCLES: Makes = {"Harley-Davidson": (("1HD",), ("Street Glide", "Sportster")),
               "Honda": (("JH2", "MLH"), ("CB500F", "Gold Wing")),
               "Yamaha": (("JYA",), ("MT-07", "R3"))}
TRAILERS: Makes = {"Big Tex": (("16V",), ("35SA", "70PI")),
            "Remorques Laroche": (("2L9",), ("Utilitaire 5x8",))}
COMMERCIAL: Makes = {"Ford": (("1FD", "1FT"), ("Transit", "F-550")),
              "Freightliner": (("1FU", "3AK"), ("Cascadia", "M2 106")),
              "Isuzu": (("JAL", "54D"), ("NPR", "NRR"))}
COLOURS = ["white", "black", "silver", "grey", "blue", "red", "green", "brown", "beige",
           "yellow", "orange", "burgundy"]
VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
VANITY_WORDS = ["GOHABS", "MAPLE", "BONJOUR", "LEAFS", "BIGAPPLE", "SKIDOO", "POUTINE",
                "CANUCK", "LOONIE", "ZAMBONI", "TIMBITS", "HOCKEY", "CABANE", "NORTH", "EH"]


@dataclass(frozen=True)
class Jurisdiction:
    code: str
    weight: float
    fr_share: float
    area_codes: tuple[str, ...]
    office: str                       # source template
    police: tuple[tuple[str, str, str], ...]   # (source, agency, report prefix)
    plate_format: str                 # L = letter, D = digit, ' ' '-' kept


JURISDICTIONS = (
    Jurisdiction("CA-ON", 0.55, 0.03, ("416", "647", "613", "905", "519"),
                 "/registry/serviceontario/office/{:04d}",
                 (("/police/opp", "Ontario Provincial Police", "OPP"),
                  ("/police/tps", "Toronto Police Service", "TPS")), "LLLL DDD"),
    Jurisdiction("CA-QC", 0.30, 0.80, ("514", "418", "450", "819"), "/registry/saaq/centre/{:03d}",
                 (("/police/spvm", "Service de police de la Ville de Montréal", "SPVM"),
                  ("/police/sq", "Sûreté du Québec", "SQ")), "LDD LLL"),
    Jurisdiction("US-NY", 0.10, 0.01, ("212", "718", "518", "716"), "/registry/nydmv/office/{:03d}",
                 (("/police/nypd", "New York City Police Department", "NYPD"),), "LLL-DDDD"),
    Jurisdiction("CA-BC", 0.05, 0.02, ("604", "250", "778"), "/registry/icbc/office/{:03d}",
                 (("/police/rcmp-bc", "RCMP British Columbia", "RCMP"),), "LLD DDL"),
)
#: Smart plate devices pair and unpair through the registry's own gateway (the default
#: source policy lets only /registry/ sources send those events).
SMART_PLATE_GATEWAY = "/registry/smartplate/gateway"
INSURERS = ("/insurance/intact", "/insurance/desjardins", "/insurance/aviva",
            "/insurance/td", "/insurance/geico")
LETTERS = "ABCDEFGHJKLMNPRSTVWXYZ"
# Fictional addresses (street and town names that are not meant to be real ones).
EN_STREETS = ["Maple Lane", "Birch Crescent", "Heron Way", "Juniper Road", "Quarry Street"]
FR_STREETS = ["rue des Érables", "chemin du Héron", "avenue des Pins", "rang des Bouleaux",
              "rue de la Carrière"]
FICTIONAL_CITIES = ["Maplewood Falls", "Port Heron", "Lac-Brumeux", "Pine Hollow",
                    "Saint-Fictif"]

# Yearly rates of the random life events, and the chances of the scheduled ones.
RATES = {"insurance": 0.05, "fines": 0.02, "emissions": 0.02, "stolen": 0.01,
         "transfer": 0.07, "owner_update": 0.12, "cancel": 0.02, "pair": 0.04, "unpair": 0.015}
RENEW_ON_TIME, RENEW_LATE = 0.80, 0.12
REINSTATE_CHANCE, RECOVER_CHANCE = 0.85, 0.60
OFFICE_KINDS = frozenset({"transfer", "owner_update", "cancel"})


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "", folded.lower())


@dataclass(frozen=True, slots=True)
class Packed:
    """A generated event, kept serialized (a dict per pending event costs far more memory)."""

    value: bytes
    event_type: str
    event_id: str


def _pack(event: dict[str, Any]) -> Packed:
    # orjson's result can sit in a much larger allocation; an exact copy
    # keeps thousands of pending events small.
    return Packed(bytes(memoryview(orjson.dumps(event))), event["type"], event["id"])


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- one plate

_M64 = (1 << 64) - 1


class LightRandom:
    """A small seeded PRNG (splitmix64) for the per-plate generators.

    ``random.Random`` carries 2.5 KB of Mersenne Twister state; with one
    generator per plate that dominated memory. Same method names as
    ``random.Random`` for what this module uses; deterministic across runs
    and platforms (the seed text is hashed with BLAKE2b, not ``hash()``).
    """

    __slots__ = ("_state",)

    def __init__(self, seed_text: str) -> None:
        digest = hashlib.blake2b(seed_text.encode(), digest_size=8).digest()
        self._state = int.from_bytes(digest, "big")

    def _next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _M64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)

    def random(self) -> float:
        return (self._next() >> 11) * (1.0 / 9007199254740992.0)

    def getrandbits(self, k: int) -> int:
        value, bits = 0, 0
        while bits < k:
            value = (value << 64) | self._next()
            bits += 64
        return value >> (bits - k)

    def randrange(self, n: int) -> int:
        return self._next() % n          # bias below 2**-40 for the small n used here

    def randint(self, a: int, b: int) -> int:
        return a + self.randrange(b - a + 1)

    def choice(self, seq: Any) -> Any:
        return seq[self.randrange(len(seq))]

    def choices(self, population: Any, weights: Any) -> list[Any]:
        total = float(sum(weights))
        u = self.random() * total
        acc = 0.0
        for item, weight in zip(population, weights, strict=True):
            acc += weight
            if u < acc:
                return [item]
        return [population[-1]]

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def expovariate(self, lambd: float) -> float:
        return -math.log(1.0 - self.random()) / lambd



class PlateLife:
    """Generates one plate's events in time order (its own seeded RNG)."""

    def __init__(self, index: int, config: SimConfig, used_plates: set[str]) -> None:
        self.rng = LightRandom(f"{config.seed}:plate:{index}")
        self.config = config
        rng = self.rng
        self.jur = rng.choices(JURISDICTIONS, weights=[j.weight for j in JURISDICTIONS])[0]
        self.plate_class = rng.choices(
            ("passenger", "commercial", "motorcycle", "trailer", "vanity"),
            weights=(80, 8, 5, 4, 3))[0]
        self.display_plate = self._new_plate(used_plates)
        self.key = f"{self.jur.code}/{re.sub(r'[ .-]', '', self.display_plate)}"
        self.office = self.jur.office.format(rng.randint(1, 240))
        self.owner = self._new_owner()
        self.device: str | None = None
        self.suspended: set[str] = set()
        self.stolen = False
        self.cancelled = False
        self.expires: date | None = None

    # -- reference data ---------------------------------------------------------

    def _new_plate(self, used: set[str]) -> str:
        rng = self.rng
        for _ in range(1000):
            if self.plate_class == "vanity":
                word = rng.choice(VANITY_WORDS)
                plate = (word + str(rng.randint(1, 99)))[:10] if rng.random() < 0.7 else word
            else:
                plate = "".join(rng.choice(LETTERS) if c == "L" else
                                str(rng.randint(0, 9)) if c == "D" else c
                                for c in self.jur.plate_format)
            key = f"{self.jur.code}/{re.sub(r'[ .-]', '', plate)}"
            if key not in used:
                used.add(key)
                return plate
        raise RuntimeError("could not find an unused plate number")

    def _new_owner(self) -> dict[str, Any]:
        rng = self.rng
        french = rng.random() < self.jur.fr_share
        first = rng.choice(FR_FIRST if french else EN_FIRST)
        last = rng.choice(FR_LAST if french else EN_LAST)
        owner: dict[str, Any] = {
            "owner_id": f"own-{rng.getrandbits(64):016x}",
            "name": f"{first} {last}",
        }
        if rng.random() < 0.8:
            owner["email"] = (f"{_ascii(first)}.{_ascii(last)}{rng.randint(1, 999)}"
                              f"@example.{rng.choice(('com', 'org', 'net'))}")
        if "email" not in owner or rng.random() < 0.6:
            owner["phone"] = self._phone()
        owner["language"] = "fr" if french else "en"
        owner["address"] = self._address(owner["owner_id"], french)
        return owner

    def _address(self, owner_id: str, french: bool) -> dict[str, Any]:
        """A fictional postal address, from its own generator (the main stream is unchanged)."""
        rng = random.Random(owner_id)
        street = rng.choice(FR_STREETS if french else EN_STREETS)
        country, _, region = self.jur.code.partition("-")
        if country == "CA":
            postal = (f"{rng.choice('ABCEGHJKLMNPRSTVXY')}{rng.randint(0, 9)}"
                      f"{rng.choice(LETTERS)} {rng.randint(0, 9)}{rng.choice(LETTERS)}"
                      f"{rng.randint(0, 9)}")
        else:
            postal = f"{rng.randint(10000, 99999)}"
        return {"lines": [f"{rng.randint(1, 9999)} {street}"],
                "city": rng.choice(FICTIONAL_CITIES), "region": region,
                "postal_code": postal, "country": country}

    def _phone(self) -> str:
        """A fictional North American number (555-0100 to 555-0199 are reserved for fiction)."""
        rng = self.rng
        return f"+1 ({rng.choice(self.jur.area_codes)}) 555-01{rng.randint(0, 99):02d}"

    def _vehicle(self, start_year: int) -> dict[str, Any]:
        rng = self.rng
        tables: dict[str, Makes] = {
            "motorcycle": MOTORCYCLES, "trailer": TRAILERS, "commercial": COMMERCIAL}
        table = tables.get(self.plate_class, MAKES)
        make = rng.choice(sorted(table))
        wmis, models = table[make]
        vin = rng.choice(wmis) + "".join(rng.choice(VIN_CHARS) for _ in range(14))
        return {"vin": vin, "make": make, "model": rng.choice(models),
                "year": rng.randint(max(1990, start_year - 18), start_year + 1),
                "colour": rng.choice(COLOURS)}

    # -- events -------------------------------------------------------------------

    def _event(self, t: datetime, etype: str, source: str, data: dict[str, Any] | None) -> dict:
        subject = self.key
        if self.rng.random() < 0.05:   # producers do not always send canonical plate keys
            subject = f"{self.jur.code.lower()}/{self.display_plate.lower()}"
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "source": source, "type": etype, "time": _iso(t), "subject": subject,
            "datacontenttype": "application/json",
        }
        if data is not None:
            event["data"] = data
        return event

    def _office_time(self, t: datetime) -> datetime:
        """Move an office event into 13:00-22:00 UTC (roughly business hours in the east)."""
        day = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return day + timedelta(seconds=13 * 3600 + self.rng.randrange(9 * 3600))

    def _exp(self, rate_per_year: float, after: datetime) -> datetime:
        return after + timedelta(days=self.rng.expovariate(rate_per_year / 365.0))

    def events(self) -> Iterator[tuple[datetime, Packed]]:
        cfg, rng = self.config, self.rng
        span = cfg.duration.total_seconds()
        early = rng.random() < 0.85
        t0 = cfg.start + timedelta(seconds=span * (0.3 if early else 1.0) * rng.random())
        t0 = min(self._office_time(t0), cfg.end - timedelta(seconds=1))
        if t0 < cfg.start:
            t0 = cfg.start
        self.expires = (t0 + timedelta(days=rng.randint(30, 395))).date()
        issued: dict[str, Any] = {
            "plate_class": self.plate_class, "expires_on": self.expires.isoformat(),
            "vehicle": self._vehicle(t0.year), "owner": dict(self.owner),
        }
        if rng.random() < 0.05:
            self.device = f"sp-{rng.getrandbits(48):012x}"
            issued["device_id"] = self.device
        first = _pack(self._event(t0, "plate.issued", self.office, issued))
        del issued
        yield t0, first
        del first

        agenda: list[tuple[datetime, int, str, Any]] = []
        seq = 0

        def plan(t: datetime, what: str, arg: Any = None) -> None:
            nonlocal seq
            if t < cfg.end:
                seq += 1
                heapq.heappush(agenda, (t, seq, what, arg))

        def plan_renewal() -> None:
            assert self.expires is not None
            due = datetime(self.expires.year, self.expires.month, self.expires.day, tzinfo=UTC)
            u = rng.random()
            if u < RENEW_ON_TIME:
                plan(self._office_time(due - timedelta(days=rng.uniform(0, 45))), "renew")
            elif u < RENEW_ON_TIME + RENEW_LATE:
                plan(self._office_time(due + timedelta(days=rng.uniform(1, 90))), "renew")

        plan_renewal()
        for what, rate in RATES.items():
            plan(self._exp(rate, t0), what)

        while agenda:
            t, _, what, arg = heapq.heappop(agenda)
            if what in OFFICE_KINDS:
                t = self._office_time(t)
            if t <= t0:
                t = t0 + timedelta(seconds=rng.randint(60, 3600))
                if t >= cfg.end:
                    continue
            out = self._step(t, what, arg, plan, plan_renewal)
            if out is not None:
                yield t, _pack(out)
                t0 = t
            if self.cancelled:
                return
            if what in RATES:
                plan(self._exp(RATES[what], t), what)

    def _step(self, t: datetime, what: str, arg: Any,
              plan: Callable[..., None], plan_renewal: Callable[[], None]) -> dict | None:
        rng = self.rng
        if what == "renew":
            assert self.expires is not None
            years = 2 if rng.random() < 0.2 else 1
            self.expires = self.expires.replace(year=self.expires.year + years) if not (
                self.expires.month == 2 and self.expires.day == 29) else date(
                self.expires.year + years, 2, 28)
            plan_renewal()
            return self._event(t, "plate.renewed", self.office,
                               {"expires_on": self.expires.isoformat()})
        if what in ("insurance", "fines", "emissions"):
            reason = {"insurance": "insurance_lapsed", "fines": "unpaid_fines",
                      "emissions": "emissions_failed"}[what]
            if reason in self.suspended:
                return None
            self.suspended.add(reason)
            source = {"insurance": rng.choice(INSURERS),
                      "fines": f"/courts/{self.jur.code.lower()}/fines",
                      "emissions": "/emissions/inspection-program"}[what]
            data: dict[str, Any] = {"reason": reason}
            if rng.random() < 0.3:
                data["detail"] = {"insurance": "policy cancelled for non-payment",
                                  "fines": "outstanding fines past due",
                                  "emissions": "vehicle failed the emissions test"}[what]
            if rng.random() < REINSTATE_CHANCE:
                plan(t + timedelta(days=rng.uniform(2, 60)), "reinstate", (reason, source))
            return self._event(t, "plate.suspended", source, data)
        if what == "reinstate":
            reason, source = arg
            if reason not in self.suspended:
                return None
            self.suspended.discard(reason)
            return self._event(t, "plate.reinstated", source, {"reason": reason})
        if what == "stolen":
            if self.stolen:
                return None
            self.stolen = True
            src, agency, prefix = rng.choice(self.jur.police)
            if rng.random() < RECOVER_CHANCE:
                plan(t + timedelta(days=rng.uniform(0.5, 120)), "recover", (src, agency))
            return self._event(t, "plate.stolen_reported", src, {
                "agency": agency, "report_id": f"{prefix}-{t.year}-{rng.randint(1, 999999):06d}"})
        if what == "recover":
            if not self.stolen:
                return None
            self.stolen = False
            src, agency = arg
            return self._event(t, "plate.recovered", src,
                               {"agency": agency} if rng.random() < 0.8 else {})
        if what == "transfer":
            self.owner = self._new_owner()
            return self._event(t, "plate.transferred", self.office,
                               {"owner": dict(self.owner)})
        if what == "owner_update":
            return self._event(t, "plate.owner_updated", self.office,
                               self._owner_change())
        if what == "cancel":
            self.cancelled = True
            return self._event(t, "plate.cancelled", self.office, {
                "reason": rng.choices(("surrendered", "destroyed", "replaced", "administrative"),
                                      weights=(50, 10, 30, 10))[0]})
        if what == "pair":
            if self.device is not None:
                return None
            self.device = f"sp-{rng.getrandbits(48):012x}"
            return self._event(t, "plate.device_paired", SMART_PLATE_GATEWAY,
                               {"device_id": self.device})
        if what == "unpair":
            if self.device is None:
                return None
            self.device = None
            return self._event(t, "plate.device_unpaired", SMART_PLATE_GATEWAY, None)
        raise AssertionError(what)

    def _owner_change(self) -> dict[str, Any]:
        rng = self.rng
        change: dict[str, Any] = {}
        u = rng.random()
        if u < 0.4:
            first = self.owner["name"].split(" ")[0]
            change["email"] = (f"{_ascii(first)}{rng.randint(1, 9999)}"
                               f"@example.{rng.choice(('com', 'org', 'net'))}")
        elif u < 0.7:
            change["phone"] = self._phone()
        elif u < 0.85:
            change["language"] = "en" if self.owner.get("language") == "fr" else "fr"
        else:
            first = self.owner["name"].split(" ")[0]
            french = self.owner.get("language") == "fr"
            change["name"] = f"{first} {rng.choice(FR_LAST if french else EN_LAST)}"
        self.owner.update(change)
        return change


# --------------------------------------------------------------------------- the stream


def _merged(config: SimConfig) -> Iterator[tuple[datetime, str, Packed]]:
    """Every plate's events merged in time order: (time, canonical plate key, event)."""
    used: set[str] = set()
    heap: list[tuple[datetime, int, str, Packed, Iterator]] = []
    for index in range(config.plates):
        life = PlateLife(index, config, used)
        it = life.events()
        first = next(it, None)
        if first is not None:
            heap.append((first[0], index, life.key, first[1], it))
    heapq.heapify(heap)
    while heap:
        t, index, key, event, it = heap[0]
        yield t, key, event
        nxt = next(it, None)
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (nxt[0], index, key, nxt[1], it))


INVALID_KINDS = (("malformed_json", 16), ("unknown_type", 11), ("invalid_plate", 16),
                 ("schema_invalid", 27), ("future_time", 9), ("id_conflict", 9),
                 ("too_large", 2), ("unauthorized_source", 10))


def _invalid(rng: random.Random, key: str, base: Packed, recent: deque[Item]) -> Item:
    """An invalid message derived from ``base``; ``id_conflict`` reuses an emitted id."""
    reason = rng.choices([k for k, _ in INVALID_KINDS], weights=[w for _, w in INVALID_KINDS])[0]
    event = orjson.loads(base.value)
    event["id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if reason == "malformed_json":
        text = orjson.dumps(event)
        value = text[: rng.randint(1, len(text) - 1)]
        return Item(INVALID, key.encode(), value, event["type"], reason, event_id=event["id"])
    if reason == "unknown_type":
        event["type"] = rng.choice(("plate.repainted", "plate.upgraded", "vehicle.sold"))
    elif reason == "invalid_plate":
        jur, plate = key.split("/")
        event["subject"] = rng.choice((f"{jur}/{plate}#", f"{jur}/", f"ONTARIO/{plate}",
                                       f"{jur}/{plate}XXXXXXXXXXX", f"{jur}{plate}"))
    elif reason == "schema_invalid":
        mode = rng.randrange(5)
        if mode == 0:
            event.pop("source")
        elif mode == 1:
            event["specversion"] = "0.3"
        elif mode == 2:
            event["time"] = event["time"][:10]          # a date, not a timestamp
        elif mode == 3:
            event["data"] = {"unexpected": True}
        else:
            event["time"] = 1767225600                  # a number instead of RFC 3339 text
    elif reason == "future_time":
        event["time"] = "2099-01-01T00:00:00Z"
    elif reason == "too_large":
        event["comment"] = "x" * 70_000
    elif reason == "unauthorized_source":
        # The 2023 breach: a smart plate device (allowed to send nothing itself) says
        # the plate was stolen. Only /police/ sources may (the default source policy).
        device = f"sp-{rng.getrandbits(48):012x}"
        event.update(source=f"/smartplate/device/{device}", type="plate.stolen_reported",
                     data={"agency": "SmartPlate", "report_id": f"SP-{rng.randint(1, 99999)}"})
    elif reason == "id_conflict":
        if not recent:
            event["type"] = "plate.repainted"
            reason = "unknown_type"
        else:
            # The same (source, id) with other content: one second earlier.
            old = rng.choice(recent)
            key = old.key.decode() if old.key else key
            event = orjson.loads(old.value)
            when = datetime.fromisoformat(event["time"]) - timedelta(seconds=1)
            event["time"] = _iso(when)
    return Item(INVALID, key.encode(), orjson.dumps(event), str(event.get("type")), reason,
                event_id=str(event.get("id")))


def generate(config: SimConfig) -> Iterator[Item]:
    """The output stream. Pure: the same config gives the same items."""
    rng = random.Random(f"{config.seed}:stream")
    source = _merged(config)
    deferred: list[tuple[int, int, Item]] = []     # (release slot, seq, item): late events
    recent: deque[Item] = deque(maxlen=1000)        # emitted: for duplicates and id conflicts
    last_valid: tuple[str, Packed] | None = None
    slot = 0
    seq = 0
    exhausted = False

    def next_valid() -> Item | None:
        nonlocal exhausted, seq, last_valid
        if deferred and (deferred[0][0] <= slot or exhausted):
            return heapq.heappop(deferred)[2]
        while not exhausted:
            got = next(source, None)
            if got is None:
                exhausted = True
                break
            _, key, packed = got
            last_valid = (key, packed)
            item = Item(VALID, key.encode(), packed.value, packed.event_type,
                        event_id=packed.event_id)
            if config.late_share and rng.random() < config.late_share:
                seq += 1
                late = Item(VALID, item.key, item.value, item.event_type, late=True,
                            event_id=item.event_id)
                heapq.heappush(deferred, (slot + rng.randint(20, 2000), seq, late))
                continue
            return item
        if deferred:
            return heapq.heappop(deferred)[2]
        return None

    while config.events is None or slot < config.events:
        u = rng.random()
        item: Item | None
        if u < config.invalid_share and last_valid is not None:
            item = _invalid(rng, last_valid[0], last_valid[1], recent)
        elif u < config.invalid_share + config.duplicate_share and recent:
            original = rng.choice(recent)
            item = Item(DUPLICATE, original.key, original.value, original.event_type,
                        event_id=original.event_id)
        else:
            item = next_valid()
            if item is None:
                return
            recent.append(item)
        slot += 1
        yield item


# --------------------------------------------------------------------------- sinks

HEADERS = [(CONTENT_TYPE_HEADER, CLOUDEVENTS_JSON.encode())]


@dataclass
class SinkStats:
    sent: int = 0
    accepted: int = 0
    refused: int = 0          # API 4xx answers for invalid items
    by_kind: dict[str, int] = field(default_factory=dict)


class FileSink:
    """NDJSON, one item per line (``-`` = standard output)."""

    def __init__(self, path: str | Path, stdout: BinaryIO | None = None) -> None:
        self.path = str(path)
        self._stdout = stdout
        self._fh: BinaryIO | None = None
        self.stats = SinkStats()

    async def __aenter__(self) -> FileSink:
        if self.path == "-":
            import sys

            self._fh = self._stdout or sys.stdout.buffer
        else:
            self._fh = open(self.path, "wb")  # noqa: SIM115, ASYNC230 - local file, closed in exit
        return self

    async def send(self, item: Item) -> None:
        assert self._fh is not None
        self._fh.write(item.value + b"\n")
        self.stats.sent += 1
        self.stats.accepted += 1

    async def __aexit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.flush()
            if self.path != "-":
                self._fh.close()


class KafkaSink:
    """Raw bytes to ``plates.events`` (invalid items too: they exercise the DLQ)."""

    def __init__(self, settings: Any) -> None:
        from ingest.publisher import StreamPublisher

        self.publisher = StreamPublisher(settings)
        self.stats = SinkStats()

    async def __aenter__(self) -> KafkaSink:
        await self.publisher.start()
        return self

    async def send(self, item: Item) -> None:
        await self.publisher.send(item.key, item.value, tag=None)
        self.stats.sent += 1

    async def __aexit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                await self.publisher.flush()
        finally:
            await self.publisher.stop()
        self.stats.accepted = self.publisher.acked


class ApiSink:
    """POST to the ingest API: valid items in batches, each invalid item on its own."""

    def __init__(self, url: str, key: str, *, batch_size: int = 500,
                 timeout: float = 30.0) -> None:
        from ingest.publisher import ApiPoster

        self.poster = ApiPoster(url, key, timeout=timeout)
        self.batch_size = batch_size
        self.batch: list[bytes] = []
        self.stats = SinkStats()

    async def __aenter__(self) -> ApiSink:
        await self.poster.__aenter__()
        return self

    async def send(self, item: Item) -> None:
        self.stats.sent += 1
        if item.kind == INVALID:
            result = await self.poster.post([item.value])
            self.stats.refused += 0 if result.ok else 1
            self.stats.accepted += result.accepted
            return
        self.batch.append(item.value)
        if len(self.batch) >= self.batch_size:
            await self._flush()

    async def _flush(self) -> None:
        if self.batch:
            batch, self.batch = self.batch, []
            result = await self.poster.post(batch)
            if not result.ok:
                raise RuntimeError(f"the ingest API refused a batch: {result.detail}")
            self.stats.accepted += result.accepted

    async def __aexit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                await self._flush()
        finally:
            await self.poster.__aexit__()


async def run(items: Iterator[Item], sink: Any, *, rate: float = 0.0,
              on_item: Callable[[Item], None] | None = None) -> SinkStats:
    """Feed ``items`` to ``sink``, at most ``rate`` items per second (0: as fast as possible)."""
    started = _time.monotonic()
    async with sink:
        for n, item in enumerate(items, 1):
            await sink.send(item)
            sink.stats.by_kind[item.kind] = sink.stats.by_kind.get(item.kind, 0) + 1
            if on_item is not None:
                on_item(item)
            if rate > 0:
                ahead = n / rate - (_time.monotonic() - started)
                if ahead > 0.005:
                    await asyncio.sleep(ahead)
    return sink.stats
