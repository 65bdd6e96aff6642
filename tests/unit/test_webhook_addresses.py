"""Which addresses the notice dispatcher may call for a webhook (pure functions and the
resolver with a stand-in for DNS)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp.abc import AbstractResolver

from notifications.channels import AddressRefused, PublicResolver, refused_address, refused_url


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("fd12:3456::1", "private"), ("169.254.10.10", "link-local"),
    ("fe80::1%eth0", "link-local"), ("169.254.169.254", "metadata"),
    ("fd00:ec2::254", "metadata"), ("100.100.100.200", "metadata"),
    ("0.0.0.0", "private"), ("100.64.0.1", "not public"), ("224.0.0.1", "not public"),
    ("240.0.0.1", "private"), ("::", "private"),
])
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert refused_address(address) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refused_address(address) is None


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:8080/hook", "loopback"), ("https://[::1]/h", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("ftp://example.org/h", "not an http(s) URL"), ("file:///etc/passwd", "not an http(s) URL"),
    ("http://[::1/", "malformed URL"),
    ("https://hooks.example.org/h", None), ("https://93.184.215.14/h", None),
])
def test_urls_are_checked_before_any_name_is_resolved(url: str, reason: str | None) -> None:
    assert refused_url(url) == reason


class FakeDns(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list:
        return [{"hostname": host, "host": a, "port": port, "family": family, "proto": 0,
                 "flags": 0} for a in self.answers[host]]

    async def close(self) -> None:
        pass


def test_a_name_is_refused_when_any_of_its_addresses_is() -> None:
    resolver = PublicResolver(FakeDns({"ok.example": ["93.184.215.14"],
                                       "mixed.example": ["93.184.215.14", "10.0.0.5"],
                                       "meta.example": ["169.254.169.254"]}))

    async def go() -> None:
        assert [i["host"] for i in await resolver.resolve("ok.example", 443)] == [
            "93.184.215.14"]
        for host, reason in (("mixed.example", "private"), ("meta.example", "metadata")):
            with pytest.raises(AddressRefused, match=f"refused: {reason}"):
                await resolver.resolve(host, 443)

    asyncio.run(go())
