"""docs/configuration.md holds the settings table generated from the settings class, so the
two cannot drift: regenerate it with ``python -m platereg.settings --markdown
docs/configuration.md``."""

from __future__ import annotations

from pathlib import Path

import pytest

from platereg.settings import (
    ENV_PREFIX,
    TABLE_BEGIN,
    TABLE_END,
    Settings,
    main,
    settings_table,
    with_settings_table,
)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not missing, f"add Field(description=...) to: {missing}"


def test_the_configuration_page_holds_the_generated_table() -> None:
    page = PAGE.read_text()
    assert page == with_settings_table(page), (
        "docs/configuration.md is out of date with platereg/settings.py; run "
        "`python -m platereg.settings --markdown docs/configuration.md`")


def test_the_table_has_one_row_per_setting() -> None:
    table = settings_table()
    for name in Settings.model_fields:
        assert f"| `{ENV_PREFIX}{name.upper()}` |" in table
    assert table.count("\n") == len(Settings.model_fields) + 2


def test_a_changed_row_is_seen_and_rewritten(tmp_path: Path) -> None:
    stale = f"# Configuration\n\n{TABLE_BEGIN}\n| old | table |\n{TABLE_END}\n\nafter\n"
    fresh = with_settings_table(stale)
    assert fresh != stale
    assert fresh.startswith(f"# Configuration\n\n{TABLE_BEGIN}\n| variable |")
    assert fresh.endswith(f"{TABLE_END}\n\nafter\n")
    path = tmp_path / "configuration.md"
    path.write_text(stale)
    assert main(["--markdown", str(path)]) == 0
    assert path.read_text() == fresh


def test_a_page_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="BEGIN settings table"):
        with_settings_table("# no table here\n")
