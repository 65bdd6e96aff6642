"""Who is asking, for the owner sign-in: the client address, whether the owner cookie is
``Secure``, and the per-address limit of refused sign-in links.

* The client address is the connection's peer, or, when the peer is one of
  ``PLATEREG_TRUSTED_PROXIES``, what it put in ``X-Forwarded-For`` (uvicorn's
  ``ProxyHeadersMiddleware`` rewrites the request for the registry app, see
  :func:`registry.owner.app.install`; from anyone else the header is ignored). IPv6
  clients are counted per /64, the block one subscriber usually gets.
* The cookie is ``Secure`` unless the configured public address of the page
  (``PLATEREG_OWNER_PAGE_URL``) is plain HTTP on a loopback host and the request did
  not arrive over HTTPS (TLS here, or ``X-Forwarded-Proto: https`` from a trusted
  proxy). The ``Host`` header plays no part: any client can write it.
* :class:`LinkLimiter`: refused links (unknown, used, expired, malformed) per client
  address in a moving window (the ``limits`` library, in this process's memory); past
  the limit every link from that address is answered 429 with ``Retry-After``, before
  it is looked up, so guessing links costs the guesser's time, not owners' sign-ins.
"""

from __future__ import annotations

import ipaddress
import math
import time
from urllib.parse import urlsplit

from fastapi import Request
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from platereg.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_key(request: Request) -> str:
    """The address the link limit counts: the client's, IPv6 reduced to its /64."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def public_url_is_secure(owner_page_url: str) -> bool:
    """Whether the configured page address asks for ``Secure`` cookies: HTTPS, or any
    host that is not a loopback one (the contract: Secure on anything but loopback)."""
    url = urlsplit(owner_page_url)
    return url.scheme == "https" or not is_loopback(url.hostname or "")


def cookie_secure(request: Request, settings: Settings) -> bool:
    """``request.url.scheme`` is the connection's (or a trusted proxy's) scheme, never
    taken from the ``Host`` header."""
    return request.url.scheme == "https" or public_url_is_secure(settings.owner_page_url)


class LinkLimiter:
    """Refused sign-in links per client address in a moving window."""

    def __init__(self, failures: int, window_minutes: int) -> None:
        self._item = RateLimitItemPerMinute(failures, window_minutes)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def wait(self, client: str) -> int:
        """0 while ``client`` may present a link, else the seconds until it may again."""
        if self._limiter.test(self._item, client):
            return 0
        reset, _ = self._limiter.get_window_stats(self._item, client)
        return max(1, math.ceil(reset - time.time()))

    def refused(self, client: str) -> None:
        """Count one refused link from ``client``."""
        self._limiter.hit(self._item, client)
