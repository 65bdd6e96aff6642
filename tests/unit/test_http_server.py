"""How both APIs are served (platereg.http_server): uvicorn's public options, and the
heap settled once an API has started."""

from __future__ import annotations

import gc

from platereg.http_server import settle_heap, uvicorn_options
from platereg.settings import load_settings


def test_uvicorn_runs_without_its_own_access_log_or_logging_config() -> None:
    options = uvicorn_options(load_settings())
    assert options["access_log"] is False and options["log_config"] is None
    assert options["http"] == "httptools"


def test_the_started_api_leaves_its_objects_out_of_the_young_collections() -> None:
    threshold = gc.get_threshold()
    try:
        gc.unfreeze()
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == 20_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
