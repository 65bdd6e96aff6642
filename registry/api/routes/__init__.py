"""The registry API's routers, one module per resource (plates, hotlist, owners, audit),
each with its OpenAPI examples and links; shared parts in ``registry.api.routes.common``."""
