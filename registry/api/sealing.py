"""Sealed (encrypted and authenticated) opaque cursors: a position that reveals nothing.

A hotlist cursor's position is a plate key; base64 of it would put a plate in
every URL that carries the cursor. :class:`Sealer` encrypts and authenticates
the payload with keys derived from ``PLATEREG_CURSOR_SECRET`` (standard library
only):

* keys: ``enc = HMAC-SHA256(secret, "platereg-cursor-enc")``,
  ``mac = HMAC-SHA256(secret, "platereg-cursor-mac")``,
  ``iv = HMAC-SHA256(secret, "platereg-cursor-iv")``;
* encryption: a synthetic 12-byte nonce ``HMAC-SHA256(iv, payload)`` (``iv`` a
  third derived key; deterministic, SIV-style: the same position always gives the
  same cursor, so an unchanged ``next`` says "nothing new"), keystream blocks
  ``HMAC-SHA256(enc, nonce || counter)`` XORed with the payload (HMAC as a PRF
  in counter mode);
* authentication (encrypt-then-MAC): a 16-byte tag
  ``HMAC-SHA256(mac, version || nonce || ciphertext)``, checked in constant time.

The cursor text is ``base64url(version || nonce || ciphertext || tag)`` without
padding. Anything else, or a cursor sealed under another secret, is
:class:`Unsealable`, whose message never echoes the input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

VERSION = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
MIN_SECRET_BYTES = 32
MAX_PAYLOAD_BYTES = 256


class Unsealable(ValueError):
    """Not a cursor sealed by this secret (malformed, altered or foreign)."""


def _prf(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, hashlib.sha256)


class Sealer:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the cursor secret needs at least {MIN_SECRET_BYTES} bytes")
        self._enc = _prf(secret, b"platereg-cursor-enc")
        self._mac = _prf(secret, b"platereg-cursor-mac")
        self._iv = _prf(secret, b"platereg-cursor-iv")

    def _keystream(self, nonce: bytes, size: int) -> bytes:
        blocks = (_prf(self._enc, nonce + i.to_bytes(4, "big")) for i in range(size // 32 + 1))
        return b"".join(blocks)[:size]

    def seal(self, payload: bytes) -> str:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError("cursor payload too large")
        nonce = _prf(self._iv, payload)[:NONCE_BYTES]
        ciphertext = bytes(a ^ b for a, b in zip(payload, self._keystream(nonce, len(payload)),
                                                 strict=True))
        body = VERSION + nonce + ciphertext
        tag = _prf(self._mac, body)[:TAG_BYTES]
        return base64.urlsafe_b64encode(body + tag).decode("ascii").rstrip("=")

    def open(self, text: object) -> bytes:
        if not isinstance(text, str) or not text.isascii() or len(text) > 512:
            raise Unsealable("malformed cursor")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise Unsealable("malformed cursor") from None
        if len(raw) < 1 + NONCE_BYTES + TAG_BYTES or raw[:1] != VERSION:
            raise Unsealable("malformed cursor")
        body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if not hmac.compare_digest(tag, _prf(self._mac, body)[:TAG_BYTES]):
            raise Unsealable("malformed cursor")
        nonce, ciphertext = body[1:1 + NONCE_BYTES], body[1 + NONCE_BYTES:]
        return bytes(a ^ b for a, b in zip(ciphertext, self._keystream(nonce, len(ciphertext)),
                                           strict=True))
