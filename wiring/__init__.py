"""The composition root: the one package that may import more than one service.

Services (``registry``, ``ingest``, ``notifications``) import only themselves and
the shared layers (``platereg``, ``schemas``); where one service's work must run
inside another's (the notices are made in the registry consumer's batch
transaction), the service that runs it defines a hook and this package plugs the
other service's function into it. ``wiring.cli`` is the ``platereg`` command line: it
imports every service's command module and the developer tools' commands. Nothing
imports this package.
"""
