"""The registry's write side: the consumer that folds ``plates.events`` into PostgreSQL
with an exactly-once effect (``loop``, ``apply``, ``batch``, ``store``), the outbox relays
(``relay``), the daily expiry sweep (``expiry``), quarantined plates (``quarantine``),
the dead-letter commands (``dlq``), the process that runs them (``service``) and their
commands (``cli``, ``sources_cli``). It shares the status rules of ``registry.domain``
with the read side and imports nothing of ``registry.api`` or ``registry.owner``.
"""
