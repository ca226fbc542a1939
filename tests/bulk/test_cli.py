"""The ``baidu-swan-auth`` command."""

from __future__ import annotations

import re
import subprocess
import sys

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


@pytest.mark.parametrize("argv", [["-v", "demo"], ["demo", "-v"]])
def test_a_verbose_demo_stays_readable(argv: list[str]) -> None:
    # A subprocess: -v configures logging for the whole process.
    result = subprocess.run(
        [sys.executable, "-m", "baidu_swan_auth.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    attempts = [line for line in lines if "exchange code=" in line]
    assert attempts, "-v shows the tour's attempts"
    assert len(lines) < 300, "the bulk phase's 3,000 codes do not flood the output"
    assert any("per-attempt log lines of the bulk phase are left out" in line for line in lines)


def test_the_demo_shows_progress_and_where_its_records_are(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"bulk: 1500 of 3000 records", out)
    assert re.search(r"records were in \S+records\.jsonl \(mode 0600\)", out)


def test_verbose_after_the_subcommand_is_accepted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BAIDU_SWAN_CLIENT_ID", raising=False)
    assert main(["exchange", "-v", "in.txt", "-o", "out.jsonl"]) == 2
    assert "BAIDU_SWAN_CLIENT_ID" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--rate", "abc"], "argument --rate: expected a positive number such as 50, not 'abc'"),
        (["--rate", "0"], "argument --rate: expected a positive number such as 50, not '0'"),
        (["--rate", "nan"], "not 'nan'"),
        (["--rate", "inf"], "not 'inf'"),
        (["--concurrency", "x"], "argument --concurrency: expected a whole number of at least 1"),
        (["--concurrency", "0"], "expected a whole number of at least 1, not '0'"),
    ],
)
def test_bad_numbers_get_plain_messages(
    argv: list[str], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["exchange", "in.txt", "-o", "out.jsonl", *argv])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert shown in err
    assert "_positive" not in err, "no function name in the message"


def test_the_exchange_command_does_not_load_the_fake_or_aiohttp_web() -> None:
    # A subprocess: this test process has long imported both.
    probe = (
        "import sys, baidu_swan_auth.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('aiohttp.web', 'baidu_swan_auth.'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = result.stdout
    assert "aiohttp.web" not in loaded
    assert "baidu_swan_auth.testing" not in loaded
    assert "baidu_swan_auth._demo" not in loaded
    assert "baidu_swan_auth.cli" in loaded
