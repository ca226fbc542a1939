"""Hostile inputs and outputs for ``baidu-swan-auth exchange``: each gets a record or a clear
refusal, never a traceback, a hang, or a file the command had no business touching."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from baidu_swan_auth import SessionKey
from baidu_swan_auth._job import _record
from baidu_swan_auth._job_input import MAX_LINE_BYTES
from baidu_swan_auth._job_input import JobInput as _Input
from baidu_swan_auth._job_output import RecordFile as _RecordFile
from baidu_swan_auth.bulk import Outcome
from baidu_swan_auth.testing import FakeBaiduServer, RawBody

from .test_cli_exchange import COMMAND, _env, _records, _run, _wait_for_records

# A recent, fixed time: the refused-output tests check that the mtime was not touched.
_OLD_MTIME = 1_600_000_000


def _strict_records(path: Path) -> list[dict[str, Any]]:
    """The records, read as standard JSON in strict UTF-8: no NaN, no Infinity, no lone
    surrogates."""

    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name} in {path}")

    text = path.read_bytes().decode("utf-8")  # strict: a lone surrogate cannot be in here
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def _assert_clean_exit(result: subprocess.CompletedProcess[str], status: int) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, result.stderr


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- inputs that used to kill the job ---------------------------------------------------------


def test_a_lone_surrogate_gets_an_invalid_input_record_and_resume_works(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    codes = [fake_baidu.issue_code() for _ in range(3)]
    emoji = fake_baidu.issue_code(code="ab\U0001f600")
    source = _write_lines(
        tmp_path / "codes.jsonl",
        [
            json.dumps({"code": codes[0]}),
            '{"code": "\\ud800"}',  # the JSON escape, as a file would hold it
            '{"code": "' + codes[1] + '", "note": "\\udfff"}',
            '{"code": "' + codes[2] + '", "\\udbff": 1}',
            '{"code": "ab\\ud83d\\ude00"}',  # a proper pair is fine: it decodes to an emoji
        ],
    )
    output = tmp_path / "out.jsonl"

    result = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")

    _assert_clean_exit(result, 1)
    records = {record["line"]: record for record in _strict_records(output)}
    assert sorted(records) == [1, 2, 3, 4, 5]
    assert "openid" in records[1]
    for line in (2, 3, 4):
        assert records[line]["error"] == "invalid_input"
        assert "surrogate" in records[line]["description"]
    assert not fake_baidu.is_spent(codes[1]), "a line with a lone surrogate is not exchanged"
    assert records[5]["code"] == emoji
    assert records[5]["session_key"] == fake_baidu.grant_for(emoji).session_key

    again = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")
    # Not 0: the invalid_input records are final failures, and 0 means every line succeeded.
    _assert_clean_exit(again, 1)
    assert "5 already recorded" in again.stderr


def test_a_line_nested_200k_deep_gets_an_invalid_input_record(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    codes = [fake_baidu.issue_code() for _ in range(2)]
    # Under the line cap, but far deeper than any recursion limit.
    deep = '{"code": "x", "rows": ' + "[" * 30_000 + "]" * 30_000 + "}"
    assert len(deep) < MAX_LINE_BYTES
    source = _write_lines(
        tmp_path / "codes.jsonl",
        [json.dumps({"code": codes[0]}), deep, "[" * 200_000, json.dumps({"code": codes[1]})],
    )
    output = tmp_path / "out.jsonl"

    result = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")

    _assert_clean_exit(result, 1)
    records = {record["line"]: record for record in _strict_records(output)}
    assert sorted(records) == [1, 2, 3, 4]
    assert "openid" in records[1]
    assert "openid" in records[4]
    for line in (2, 3):
        assert records[line]["error"] == "invalid_input"
    assert "nested too deeply" in records[2]["description"]
    assert f"longer than {MAX_LINE_BYTES} bytes" in records[3]["description"]

    again = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")
    # Not 0: the invalid_input records are final failures, and 0 means every line succeeded.
    _assert_clean_exit(again, 1)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "[1, -1e400]"])
def test_nan_or_infinity_in_an_input_gets_an_invalid_input_record(
    fake_baidu: FakeBaiduServer, tmp_path: Path, value: str
) -> None:
    code = fake_baidu.issue_code()
    source = _write_lines(
        tmp_path / "codes.jsonl", ['{"code": "' + code + '", "x": ' + value + "}"]
    )
    output = tmp_path / "out.jsonl"

    result = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")

    _assert_clean_exit(result, 1)
    [record] = _strict_records(output)
    assert record["error"] == "invalid_input"
    assert "NaN or Infinity" in record["description"]
    assert not fake_baidu.is_spent(code)


def test_an_over_long_line_is_skipped_with_an_invalid_input_record(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    codes = [fake_baidu.issue_code() for _ in range(2)]
    long_code = "z" * (MAX_LINE_BYTES * 16)
    source = tmp_path / "codes.txt"
    source.write_text(f"{codes[0]}\n{long_code}\n{codes[1]}\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"

    result = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")

    _assert_clean_exit(result, 1)
    records = {record["line"]: record for record in _strict_records(output)}
    assert sorted(records) == [1, 2, 3]
    assert records[2]["error"] == "invalid_input"
    assert str(MAX_LINE_BYTES) in records[2]["description"]
    assert output.stat().st_size < MAX_LINE_BYTES, "the long line is not copied into its record"
    assert "openid" in records[1]
    assert "openid" in records[3]


def test_an_endless_line_is_not_buffered_and_a_signal_stops_it(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    output = tmp_path / "out.jsonl"
    with subprocess.Popen(
        [*COMMAND, "/dev/zero", "-o", str(output), "--no-progress"],
        env=_env(fake_baidu),
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            _wait_for_records(output, 1)
            for _ in range(20):  # it keeps reading zeros; its memory must not grow with them
                resident_kib = int(
                    Path(f"/proc/{process.pid}/status").read_text().split("VmRSS:")[1].split()[0]
                )
                assert resident_kib < 300 * 1024
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=20)
        finally:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    [record] = _strict_records(output)
    assert record["line"] == 1
    assert f"longer than {MAX_LINE_BYTES} bytes" in record["description"]


def test_a_line_just_under_the_cap_is_read(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    code = fake_baidu.issue_code()
    line = json.dumps({"code": code, "pad": ""})
    line = line.replace('""', '"' + "p" * (MAX_LINE_BYTES - len(line)) + '"')
    assert len(line) == MAX_LINE_BYTES
    source = _write_lines(tmp_path / "codes.jsonl", [line])
    output = tmp_path / "out.jsonl"

    result = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")

    _assert_clean_exit(result, 0)
    assert _strict_records(output)[0]["pad"].startswith("ppp")


# -- what Baidu sends back --------------------------------------------------------------------


def test_lone_surrogates_from_baidu_do_not_lose_the_session_key(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    good, refused = fake_baidu.issue_code(), fake_baidu.issue_code()
    fake_baidu.script(good, RawBody(b'{"openid": "o-\\ud800", "session_key": "k-\\udfff"}'))
    fake_baidu.script(
        refused,
        RawBody(b'{"error": "invalid_grant", "error_description": "\\udc00"}', status=400),
    )
    source = _write_lines(tmp_path / "codes.txt", [good, refused])
    output = tmp_path / "out.jsonl"

    result = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")

    _assert_clean_exit(result, 1)
    records = {record["line"]: record for record in _records(output)}
    assert records[1]["openid"] == "o-\ud800"
    assert records[1]["session_key"] == "k-\udfff"
    assert records[2]["error"] == "invalid_grant"
    output.read_bytes().decode("utf-8")  # still UTF-8 throughout: the escapes stay escapes


def test_a_record_that_cannot_be_encoded_keeps_its_own_fields(tmp_path: Path) -> None:
    deep: list[Any] = []
    for _ in range(100_000):  # deeper than any encoder recursion
        deep = [deep]
    path = tmp_path / "out.jsonl"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    output = _RecordFile(fd, needs_newline=False)
    item = _Input(7, "the-code", {"deep": deep, "nan": float("nan"), "user": 1})
    output.write(_record(item, Outcome("the-code", result=SessionKey("o-7", "k-7"))))
    output.close()

    [record] = _strict_records(path)
    assert record == {"line": 7, "code": "the-code", "openid": "o-7", "session_key": "k-7"}


# -- outputs that are not the command's to write ----------------------------------------------


def _untouched_file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    path.chmod(0o644)
    os.utime(path, (_OLD_MTIME, _OLD_MTIME))
    return path


def _assert_untouched(path: Path, content: bytes) -> None:
    assert path.read_bytes() == content
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.stat().st_mtime == _OLD_MTIME


@pytest.mark.parametrize(
    "content",
    [
        b'{"precious": true}',
        b"precious",
        b"[1, 2",
        b'{"line": 1}\n{"line": 2.0}',
        b'{"line": 1}\nnot a record\n{"line": 3',
        b'{"line": Infinity}\n',
        b'{"line": 1.0}\n',
        b'{"line": true}\n',
        b'{"line": "1"}\n',
        b'{"line": 0}\n',
        b'{"line": 1}\n\n',
        b"[" * 200_000 + b"\n",
    ],
)
def test_resume_refuses_a_file_it_did_not_write(
    fake_baidu: FakeBaiduServer, tmp_path: Path, content: bytes
) -> None:
    source = _write_lines(tmp_path / "codes.txt", [fake_baidu.issue_code()])
    output = _untouched_file(tmp_path / "precious.json", content)

    result = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")

    _assert_clean_exit(result, 2)
    assert "not a record of this command" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    _assert_untouched(output, content)


def test_resume_keeps_a_whole_last_record_without_a_newline(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    codes = [fake_baidu.issue_code() for _ in range(2)]
    source = _write_lines(tmp_path / "codes.txt", codes)
    first = json.dumps({"line": 1, "code": codes[0], "openid": "o", "session_key": "k"})
    output = tmp_path / "out.jsonl"
    output.write_text(first, encoding="utf-8")

    result = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")

    _assert_clean_exit(result, 0)
    lines = output.read_text(encoding="utf-8").split("\n")
    assert lines[0] == first
    assert json.loads(lines[1])["line"] == 2
    assert lines[2:] == [""]
    assert not fake_baidu.requests_for(codes[0]), "line 1 already had its record"


def _assert_refused(result: subprocess.CompletedProcess[str], words: str) -> None:
    _assert_clean_exit(result, 2)
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_a_symlinked_output_is_refused(
    fake_baidu: FakeBaiduServer, tmp_path: Path, resume: list[str]
) -> None:
    source = _write_lines(tmp_path / "codes.txt", [fake_baidu.issue_code()])
    target = _untouched_file(tmp_path / "target.jsonl", b"")
    (tmp_path / "link.jsonl").symlink_to(target)
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")

    for link in ("link.jsonl", "dangling.jsonl"):
        result = _run(fake_baidu, str(source), "-o", str(tmp_path / link), *resume)
        _assert_refused(result, "symbolic link")
    _assert_untouched(target, b"")
    assert not (tmp_path / "elsewhere.jsonl").exists()


def test_dev_stdout_as_output_is_refused(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    source = _write_lines(tmp_path / "codes.txt", [fake_baidu.issue_code()])
    result = _run(fake_baidu, str(source), "-o", "/dev/stdout")
    _assert_refused(result, "/dev/stdout")
    assert result.stdout == ""


def test_a_fifo_as_output_is_refused_without_waiting(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source = _write_lines(tmp_path / "codes.txt", [fake_baidu.issue_code()])
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo, 0o644)
    result = _run(fake_baidu, str(source), "-o", str(fifo))
    _assert_refused(result, "not a regular file")
    assert stat.S_IMODE(fifo.stat().st_mode) == 0o644


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_as_output_is_refused_and_not_chmodded(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source = _write_lines(tmp_path / "codes.txt", [fake_baidu.issue_code()])
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    device.chmod(0o666)  # past the umask
    result = _run(fake_baidu, str(source), "-o", str(device))
    _assert_refused(result, "not a regular file")
    assert stat.S_IMODE(device.stat().st_mode) == 0o666


# A wrapper that caps the file size and then becomes the command. preexec_fn would do the same
# from the test process, but it is unsafe with threads running, and the fake Baidu is one.
_CAPPED = (
    "import os, resource, signal, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def test_a_full_disk_stops_with_a_message_and_whole_records(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    size, limit = 40, 3000
    codes = [fake_baidu.issue_code() for _ in range(size)]
    source = _write_lines(tmp_path / "codes.txt", codes)
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-c", _CAPPED, str(limit), *COMMAND[1:]]

    result = subprocess.run(
        [*command, str(source), "-o", str(output), "--no-progress", "--concurrency", "2"],
        env=_env(fake_baidu),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    _assert_clean_exit(result, 3)
    message, summary = result.stderr.strip().splitlines()
    assert "cannot write" in message
    assert str(output) in message
    assert "--resume" in message
    assert " ok, " in summary
    assert 0 < output.stat().st_size <= limit
    assert output.read_bytes().endswith(b"\n"), "no torn record is left behind"
    written = _strict_records(output)
    for record in written:
        assert record["session_key"] == fake_baidu.grant_for(record["code"]).session_key
    assert fake_baidu.secret not in result.stderr
    for record in written:
        assert record["session_key"] not in result.stderr

    finish = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")
    assert finish.returncode in (0, 1), finish.stderr
    lines = sorted(record["line"] for record in _strict_records(output))
    assert lines == list(range(1, size + 1))
