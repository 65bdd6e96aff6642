"""``platereg serve registry``."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @groups["serve"].command("registry")
    def serve_registry(
        workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes "
                                             "(they share nothing but PostgreSQL)")] = 1,
        host: Annotated[str | None, typer.Option(help="Default: PLATEREG_HOST")] = None,
        port: Annotated[int | None, typer.Option(help="Default: PLATEREG_REGISTRY_PORT")] = None,
    ) -> None:
        """Serve the registry API (plates, hotlist, owners, audit)."""
        import uvicorn

        from platereg.commands import settings_or_exit
        from platereg.http_server import uvicorn_options

        settings = settings_or_exit("serve registry")   # exits naming what is unset
        uvicorn.run(
            "registry.api.app:app_from_env", factory=True,
            host=host or settings.host,
            port=settings.registry_port if port is None else port,
            workers=workers, lifespan="on", timeout_graceful_shutdown=20, loop="uvloop",
            **uvicorn_options(settings),
        )
