"""Owner tokens (itsdangerous): expiry on the registry clock, key rotation, CSRF tokens
bound to a session; the settings error names the variable; make run's development key."""

from __future__ import annotations

import os
import stat
import time

import pytest

from devtools.runner import owner_env
from platereg.settings import ConfigError, load_settings
from registry.owner.tokens import OwnerTokens, TokenExpired, TokenInvalid

NEW, OLD = "n" * 32, "o" * 32


def test_tokens_expire_after_their_lifetime() -> None:
    clock = [time.time()]
    tokens = OwnerTokens([NEW], 15, lambda: clock[0])
    token = tokens.mint("own-1", "s1")
    assert token.startswith("ot_")
    clock[0] += 15 * 60
    assert tokens.verify(token).owner_id == "own-1"
    clock[0] += 2
    with pytest.raises(TokenExpired):
        tokens.verify(token)


def test_rotation_accepts_the_previous_key_and_signs_with_the_first() -> None:
    before = OwnerTokens([OLD], 15, time.time).mint("own-1", "s1")
    rotated = OwnerTokens([NEW, OLD], 15, time.time)
    assert rotated.verify(before).session_id == "s1"
    after = rotated.mint("own-1", "s2")
    assert OwnerTokens([NEW], 15, time.time).verify(after).session_id == "s2"
    with pytest.raises(TokenInvalid):
        OwnerTokens([OLD], 15, time.time).verify(after)
    with pytest.raises(TokenInvalid):
        rotated.verify("prk_abcdefghijkl_" + "x" * 43)
    with pytest.raises(TokenInvalid):
        rotated.verify(after[:-2] + ("AA" if not after.endswith("AA") else "BB"))


def test_csrf_tokens_are_bound_to_the_session_and_not_owner_tokens() -> None:
    tokens = OwnerTokens([NEW], 15, time.time)
    csrf = tokens.csrf("s1")
    assert tokens.csrf_ok("s1", csrf) and not tokens.csrf_ok("s2", csrf)
    assert not tokens.csrf_ok("s1", None) and not tokens.csrf_ok("s1", "")
    with pytest.raises(TokenInvalid):
        tokens.verify("ot_" + csrf)  # another salt: a CSRF token is no owner token


@pytest.mark.parametrize("value", ["short", f"{NEW},{OLD},{'x' * 32}"])
def test_bad_keys_are_a_settings_error_naming_the_variable(monkeypatch, value) -> None:
    monkeypatch.setenv("PLATEREG_OWNER_TOKEN_KEYS", value)
    with pytest.raises(ConfigError, match="PLATEREG_OWNER_TOKEN_KEYS"):
        load_settings()


def test_make_run_generates_a_development_key_once(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PLATEREG_OWNER_TOKEN_KEYS", raising=False)
    monkeypatch.delenv("PLATEREG_OWNER_PAGE_URL", raising=False)
    settings = load_settings(data_dir=tmp_path / "data", registry_port=18080)
    env = owner_env(settings)
    assert env["PLATEREG_OWNER_PAGE_URL"] == "http://127.0.0.1:18080/owner/"
    first = env["PLATEREG_OWNER_TOKEN_KEYS"]
    assert len(first) >= 32
    key_file = tmp_path / "data" / "owner-token.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert owner_env(settings)["PLATEREG_OWNER_TOKEN_KEYS"] == first
    assert load_settings(owner_token_keys=first).owner_token_keys  # a valid key
    mine = load_settings(data_dir=tmp_path / "data", owner_token_keys=NEW)
    assert "PLATEREG_OWNER_TOKEN_KEYS" not in owner_env(mine)


def test_make_run_with_your_own_servers_writes_no_key_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PLATEREG_OWNER_TOKEN_KEYS", raising=False)
    settings = load_settings(data_dir=tmp_path / "data")
    key = owner_env(settings, demo=False)["PLATEREG_OWNER_TOKEN_KEYS"]
    assert load_settings(owner_token_keys=key).owner_token_keys  # a valid key, for this run
    assert not (tmp_path / "data").exists()
