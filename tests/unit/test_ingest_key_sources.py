"""Ingest keys' source prefixes: each names at least one path segment."""

from __future__ import annotations

import pytest

from platereg.security.keys import check_sources


@pytest.mark.parametrize("prefix", ["/", "//", "///"])
def test_a_prefix_without_a_path_segment_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="has no path segment.*every source"):
        check_sources("ingest", ["/insurance/acme/", prefix])


@pytest.mark.parametrize("prefix", ["/insurance/", "/insurance", "/x", "insurance/acme/",
                                    "https://example.org/"])
def test_a_prefix_with_a_segment_is_kept(prefix: str) -> None:
    assert check_sources("ingest", [prefix]) == [prefix]
