"""Owners' own access (contract section 5): owner tokens, the ``/v1/me`` routes and the
server-rendered owner page. The registry API includes :data:`registry.owner.routes.router`
and :data:`registry.owner.page.router`; nothing else in the registry depends on it."""
