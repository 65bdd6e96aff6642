"""The registry's read side: the lookup API (``app``, ``routes``, ``models``), its
queries (``lookups``, ``hotlist``, ``candidates``), sealed paging cursors (``cursors``,
``sealing``), the lookup audit (``audit``), the front pages without a
key (``landing``) and its commands (``cli``).
It shares the status rules of ``registry.domain`` with the write side and imports nothing
of ``registry.consumer``; ``app`` mounts the owner routes of ``registry.owner``.
"""
