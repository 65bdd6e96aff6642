"""Signed owner tokens and the owner page's CSRF tokens (itsdangerous).

An owner token is ``ot_`` followed by an itsdangerous URL-safe timed signature of
``{"o": owner_id, "s": session_id}``. It is valid for ``PLATEREG_OWNER_TOKEN_MINUTES``
and only while its session row (``owner_sessions``) is neither expired nor revoked
(checked by :mod:`registry.owner.sessions`).

Keys come from ``PLATEREG_OWNER_TOKEN_KEYS``: the first signs, a second one (the
previous key) is still accepted, so a key is rotated by putting the new key first,
restarting, and dropping the old one after the token lifetime. CSRF tokens of the
page's forms are signatures of the session id with another salt (so one cannot stand
for the other), valid as long as the session. The sign-in form (before any session)
carries a signature of a random nonce that the page also set in a ``SameSite=Strict``
cookie: a form posted from another site arrives without the cookie (login CSRF).

Time comes from the registry clock, so tests can mint tokens in the past.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

PREFIX = "ot_"
_OWNER_SALT = "platereg.owner-token.v1"
_CSRF_SALT = "platereg.owner-page.csrf.v1"
_SIGN_IN_SALT = "platereg.owner-page.sign-in.v1"
#: How long the sign-in page's button works after the page was opened.
SIGN_IN_SECONDS = 3600


class TokenInvalid(Exception):
    """Not an owner token, or not signed by a current key."""


class TokenExpired(TokenInvalid):
    """Signed by a current key, but older than its lifetime."""


@dataclass(frozen=True)
class OwnerClaims:
    owner_id: str
    session_id: str


def is_owner_token(token: str) -> bool:
    return token.startswith(PREFIX)


class OwnerTokens:
    """Mints and checks owner tokens and CSRF tokens with the configured keys."""

    def __init__(self, keys: list[str], minutes: int, now: Callable[[], float]) -> None:
        if not keys:
            raise ValueError("no owner token keys")
        self.lifetime = minutes * 60

        class _ClockSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(now())

        # itsdangerous takes keys oldest first and signs with the last one.
        oldest_first = list(reversed(keys))
        self._tokens = URLSafeTimedSerializer(oldest_first, salt=_OWNER_SALT,
                                              signer=_ClockSigner)
        self._csrf = URLSafeTimedSerializer(oldest_first, salt=_CSRF_SALT,
                                            signer=_ClockSigner)
        self._sign_in = URLSafeTimedSerializer(oldest_first, salt=_SIGN_IN_SALT,
                                               signer=_ClockSigner)

    def mint(self, owner_id: str, session_id: str) -> str:
        return PREFIX + self._tokens.dumps({"o": owner_id, "s": session_id})

    def verify(self, token: str) -> OwnerClaims:
        if not is_owner_token(token) or len(token) > 512:
            raise TokenInvalid("not an owner token")
        try:
            data = self._tokens.loads(token[len(PREFIX):], max_age=self.lifetime)
        except SignatureExpired:
            raise TokenExpired("owner token expired") from None
        except BadSignature:
            raise TokenInvalid("owner token not valid") from None
        if (not isinstance(data, dict) or not isinstance(data.get("o"), str)
                or not isinstance(data.get("s"), str)):
            raise TokenInvalid("owner token not valid")
        return OwnerClaims(data["o"], data["s"])

    def csrf(self, session_id: str) -> str:
        return self._csrf.dumps(session_id)

    def csrf_ok(self, session_id: str, value: str | None) -> bool:
        return _loads_equal(self._csrf, value, self.lifetime, session_id)

    def sign_in_csrf(self, nonce: str) -> str:
        """The sign-in form's token for the browser's sign-in nonce (a cookie)."""
        return self._sign_in.dumps(nonce)

    def sign_in_csrf_ok(self, nonce: str | None, value: str | None) -> bool:
        return bool(nonce) and _loads_equal(self._sign_in, value, SIGN_IN_SECONDS, nonce)


def _loads_equal(serializer: URLSafeTimedSerializer, value: str | None, max_age: int,
                 expected: str | None) -> bool:
    if not value or len(value) > 512:
        return False
    try:
        return serializer.loads(value, max_age=max_age) == expected
    except BadSignature:
        return False
