"""Signed producers (contract section 2, "Signed producers"): the signed bytes and the
signature, shared by every producer of ``plates.events`` and by the registry consumer.

Each message carries two headers:

* ``platereg-producer: NAME``, a producer registered with ``platereg sources producer
  add`` (which prints its secret once);
* ``platereg-signature: v1=<base64url, no padding, of HMAC-SHA256(secret, signed
  bytes)>``; the HMAC key is the secret's text as UTF-8 bytes.

The signed bytes (:func:`signed_bytes`):

* **structured mode** (no ``ce_`` header): the exact value bytes, nothing else; no
  canonical form to agree on;
* **binary mode** (``ce_`` headers: the attributes; the value is the ``data``): the
  message's ``ce_`` headers sorted by name, each as ``name:value\\n`` (the value bytes as
  sent), then ``\\n``, then the value bytes. So no attribute can be changed, added or
  removed without breaking the signature.

Only header names starting with ``ce_`` exactly (lower case, as the CloudEvents Kafka
binding writes them) are attributes; the registry ignores every other header when it
reads the event, so what it reads is what is signed.

Standard library only (``hmac``, ``hashlib``, ``secrets``): the comparison is
:func:`hmac.compare_digest`, in constant time. Pure: no I/O, no clock.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Final

PRODUCER_HEADER: Final = "platereg-producer"
SIGNATURE_HEADER: Final = "platereg-signature"
#: Headers whose names start with this are CloudEvents attributes (Kafka binary mode).
CE_PREFIX: Final = "ce_"
SIGNATURE_SCHEME: Final = "v1="
#: A secret: 32 random bytes, base64url without padding.
SECRET_BYTES: Final = 32
SECRET_PATTERN: Final = r"^[A-Za-z0-9_-]{43}$"  # noqa: S105 - a pattern, not a secret
PRODUCER_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: ``platereg-signature`` of a v1 signature (43 base64url characters of 32 bytes).
SIGNATURE_PATTERN: Final = r"^v1=[A-Za-z0-9_-]{43}$"
MAX_PREFIXES: Final = 100
MAX_PREFIX_CHARS: Final = 512

_NAME_RE = re.compile(PRODUCER_NAME_PATTERN[1:-1], re.ASCII)
_SECRET_RE = re.compile(SECRET_PATTERN[1:-1], re.ASCII)
_first = itemgetter(0)

#: A message's headers as Kafka clients give them: (name, value bytes or None).
Headers = Sequence[tuple[str, bytes | None]]


class ProducerError(ValueError):
    """A producer name, prefix or secret that cannot be used (the message says why)."""


def new_secret() -> str:
    """A fresh secret: :data:`SECRET_BYTES` random bytes, base64url without padding."""
    return secrets.token_urlsafe(SECRET_BYTES)


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ProducerError("a producer name is 1 to 64 characters of A-Z a-z 0-9 . _ -, "
                            "starting with a letter or digit")
    return name


def check_secret(secret: str) -> str:
    if not _SECRET_RE.fullmatch(secret):
        raise ProducerError("a producer secret is 43 characters of base64url (32 bytes, "
                            "as `platereg sources producer add` prints it)")
    return secret


def check_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """The distinct prefixes, sorted; at least one, each 1 to 512 printable characters."""
    distinct = tuple(sorted(set(prefixes)))
    if not distinct:
        raise ProducerError("give at least one --source prefix")
    if len(distinct) > MAX_PREFIXES:
        raise ProducerError(f"at most {MAX_PREFIXES} source prefixes")
    for prefix in distinct:
        if not prefix or len(prefix) > MAX_PREFIX_CHARS or not prefix.isprintable():
            raise ProducerError(f"a source prefix is 1 to {MAX_PREFIX_CHARS} printable "
                                "characters")
    return distinct


def is_binary(headers: Headers) -> bool:
    """Whether a message is in binary content mode (it has a ``ce_`` header)."""
    return any(name.startswith(CE_PREFIX) for name, _ in headers)


def signed_bytes(headers: Headers, value: bytes | None) -> bytes:
    """What the signature covers (see the module's docstring)."""
    body = value or b""
    for name, _ in headers:
        if name.startswith(CE_PREFIX):
            break
    else:
        return body   # structured mode (the common case: no list is built)
    attributes = sorted((h for h in headers if h[0].startswith(CE_PREFIX)),
                        key=_first)   # stable: repeated names keep the message's order
    return b"".join([name.encode() + b":" + (text or b"") + b"\n"
                     for name, text in attributes]) + b"\n" + body


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _encode(digest: bytes) -> bytes:
    """base64url without padding (``base64.urlsafe_b64encode`` and a strip, cheaper)."""
    return binascii.b2a_base64(digest, newline=False).rstrip(b"=").translate(_TO_URLSAFE)


def keyed(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with ``key`` and fed nothing yet: each message's MAC is a
    ``copy()`` of it, which skips hashing the key's pads per message."""
    return hmac.new(key, digestmod=hashlib.sha256)


def _signature_with(mac: hmac.HMAC, data: bytes) -> bytes:
    one = mac.copy()
    one.update(data)
    return b"v1=" + _encode(one.digest())


def signature(key: bytes, headers: Headers, value: bytes | None) -> bytes:
    """The ``platereg-signature`` header value for a message, with the HMAC key ``key``."""
    return b"v1=" + _encode(hmac.digest(key, signed_bytes(headers, value), "sha256"))


def matches(macs: Sequence[hmac.HMAC], headers: Headers, value: bytes | None,
            claimed: bytes) -> bool:
    """Whether ``claimed`` (a ``platereg-signature`` value) is the signature of the message
    under one of the producer's secrets (``macs``: :func:`keyed` of each), tried in order
    (newest first: a producer that uses its current secret costs one HMAC); each
    comparison takes constant time."""
    data = signed_bytes(headers, value)
    for mac in macs:
        if hmac.compare_digest(_signature_with(mac, data), claimed):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Signer:
    """A producer's name and secret: signs messages as that producer."""

    name: str
    key: bytes
    _mac: hmac.HMAC = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_mac", keyed(self.key))

    @classmethod
    def of(cls, name: str, secret: str) -> Signer:
        return cls(check_name(name), check_secret(secret).encode())

    def headers(self, value: bytes | None,
                headers: Headers = ()) -> list[tuple[str, bytes | None]]:
        """``headers`` (the message's own, ``ce_`` attributes included) followed by the
        producer and signature headers."""
        return [*headers, (PRODUCER_HEADER, self.name.encode()),
                (SIGNATURE_HEADER, _signature_with(self._mac, signed_bytes(headers, value)))]
