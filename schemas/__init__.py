"""The public contract of the plate registry in code (pydantic v2).

Modules:

* :mod:`schemas.plates`: jurisdiction / plate / plate key normalization and types.
* :mod:`schemas.events`: CloudEvents plate events, one model per type.
* :mod:`schemas.validation`: raw bytes or JSON -> event, or a classified ``Rejection``.
* :mod:`schemas.views`: registry API bodies and ``plates.status`` values.
* :mod:`schemas.notices`: owner notices on ``plates.notices``.
* :mod:`schemas.topics`: topic and header names.
* :mod:`schemas.signing`: signed producers: the signed bytes and the HMAC signature.
* :mod:`schemas.content_modes`: CloudEvents binary content mode to the structured event.
* :mod:`schemas.export`: JSON Schema + AsyncAPI export (``python -m schemas.export``).

Nothing here does I/O except :mod:`schemas.export`.
"""
