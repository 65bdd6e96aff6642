"""How both HTTP APIs are served: uvicorn, configured through its public options only.

One set of options for the registry and ingest APIs (:func:`uvicorn_options`): the
httptools protocol, the keep-alive deadline (``PLATEREG_HTTP_KEEPALIVE_TIMEOUT_SECONDS``),
no access log of uvicorn's own (it prints raw paths; ``platereg.http`` writes one without
them), no ``server`` header, logging left to :mod:`platereg.logging`.

What the application itself bounds (:class:`platereg.http.ObservabilityMiddleware`): a
body's arrival (``PLATEREG_HTTP_BODY_TIMEOUT_SECONDS``, then 408) and the requests in
progress (``PLATEREG_HTTP_MAX_CONCURRENT_REQUESTS``, then 503). uvicorn has no public
setting for how long a request's *headers* may take to arrive, so a client that trickles
them is cut off by the reverse proxy in front of the APIs (a header timeout such as
nginx's ``client_header_timeout`` or HAProxy's ``timeout http-request``; see
docs/operations.md), not here.
"""

from __future__ import annotations

import gc
from typing import Any

from platereg.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` shared by both APIs."""
    return {
        "http": "httptools",
        "timeout_keep_alive": settings.http_keepalive_timeout_seconds,
        "log_config": None,        # platereg.logging configures logging
        "access_log": False,       # uvicorn's access log prints raw paths (plates)
        "server_header": False,
        # X-Forwarded-* are believed only from PLATEREG_TRUSTED_PROXIES, by the registry
        # app itself (registry.owner.app); uvicorn would believe them from 127.0.0.1.
        "proxy_headers": False,
    }


def settle_heap() -> None:
    """Once an API's start-up objects (modules, routes, pools) exist: move them out of the
    collector's working set, and collect the young generation less often. A lookup or an
    ingest batch in flight makes many short-lived objects; with the default threshold they
    were scanned and promoted over and over (docs/benchmarks.md). Both APIs call it at the
    end of their start-up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
