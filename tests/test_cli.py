"""The ``baidu-swan-auth`` command."""

from __future__ import annotations

import re

import pytest

from baidu_swan_auth import __version__
from baidu_swan_auth.cli import main
from baidu_swan_auth.testing import DEFAULT_SECRET


def test_demo_exits_zero_with_every_outcome_as_expected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0

    out = capsys.readouterr().out
    assert "9 of 9 outcomes as expected" in out
    assert "records: 3000 of 3000 inputs, 0 missing, 0 doubled, 0 not as injected" in out
    assert "demo: every outcome as expected" in out
    assert "EXPECTED" not in out
    assert "CodeConsumedError" in out
    assert DEFAULT_SECRET not in out
    # Session keys are shown masked: two characters, then stars.
    for shown in re.findall(r"session_key=(\S+)", out):
        assert re.fullmatch(r".{2}\*+", shown), shown


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "demo" in capsys.readouterr().err
