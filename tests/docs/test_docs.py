"""The docs keep up with the code: every public name has its entry in the API reference."""

from __future__ import annotations

import re
from pathlib import Path

import baidu_swan_auth

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_every_public_name_is_in_the_api_reference() -> None:
    text = API_PAGE.read_text(encoding="utf-8")
    block = text.split("::: baidu_swan_auth\n", 1)[1].split(":::", 1)[0]
    listed = set(re.findall(r"^\s+- (\w+)$", block, flags=re.MULTILINE))
    missing = sorted(set(baidu_swan_auth.__all__) - listed)
    assert not missing, f"list them under '::: baidu_swan_auth' in docs/api.md: {missing}"
    assert "::: baidu_swan_auth.testing" in text
    assert "::: baidu_swan_auth.pytest_plugin" in text
