"""Who may do what: API keys and their authentication, roles and rate limits (``keys``,
``auth``), the database login roles (``roles``), the owners' one-time sign-in links
(``owner_links``) and the source policy table (``policy_store``: which sources may send
which events). Shared by the services; no service's internals here.
"""
