"""``baidu-swan-auth exchange`` as users run it: a subprocess against the fake on its thread."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import stat
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from baidu_swan_auth._job_output import scan_records as _scan_records
from baidu_swan_auth.testing import Delay, Drop, ErrorStatus, FakeBaiduServer


def _env(fake: FakeBaiduServer, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BAIDU_SWAN_")}
    env.update(
        BAIDU_SWAN_CLIENT_ID=fake.client_id,
        BAIDU_SWAN_SECRET=fake.secret,
        BAIDU_SWAN_ENDPOINT=fake.url,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


COMMAND = [sys.executable, "-m", "baidu_swan_auth.cli", "exchange"]


def _run(
    fake: FakeBaiduServer, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*COMMAND, *args],
        env=env if env is not None else _env(fake),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert fake.secret not in result.stdout + result.stderr
    return result


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_plain_lines(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    good = [fake_baidu.issue_code() for _ in range(5)]
    twice = fake_baidu.issue_code()
    fake_baidu.script(twice, Delay(0.2))  # both lines are in flight together: they share
    source = tmp_path / "codes.txt"
    source.write_bytes(
        f"{good[0]}\r\n\n  {good[1]}  \n{twice}\n{twice}\n\n{good[2]}\n{good[3]}\r\n"
        f"{good[4]}\nnever-issued-code".encode()
    )
    output = tmp_path / "records.jsonl"

    result = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")

    assert result.returncode == 1, result.stderr
    records = {record["line"]: record for record in _records(output)}
    assert sorted(records) == [1, 3, 4, 5, 7, 8, 9, 10], "blank lines get no record"
    assert records[3]["code"] == good[1]
    for line in (1, 3, 4, 5, 7, 8, 9):
        assert set(records[line]) == {"line", "code", "openid", "session_key"}
        grant = fake_baidu.grant_for(records[line]["code"])
        assert records[line]["session_key"] == grant.session_key
    assert records[10]["error"] == "invalid_grant"
    assert records[10]["description"]
    assert len(fake_baidu.requests_for(twice)) == 1
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert "7 ok, 1 failed (invalid_code: 1)" in result.stderr


def test_json_lines_carry_their_fields(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    code = fake_baidu.issue_code(openid="user-7")
    source = tmp_path / "codes.jsonl"
    rows = [
        {"code": code, "user_id": 7, "line": 99, "openid": "forged", "error": "forged"},
        "not json {",
        {"user_id": 8},
        {"code": 12345},
        {"code": "never-issued-code", "user_id": 9},
    ]
    source.write_text(
        "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n",
        encoding="utf-8",
    )
    output = tmp_path / "out.jsonl"

    result = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")

    assert result.returncode == 1
    records = {record["line"]: record for record in _records(output)}
    assert records[1] == {
        "line": 1,
        "code": code,
        "openid": "user-7",
        "session_key": fake_baidu.grant_for(code).session_key,
        "user_id": 7,
    }
    assert records[2]["error"] == "invalid_input"
    assert records[3] == {
        "line": 3,
        "code": None,
        "error": "invalid_input",
        "kind": "invalid_input",
        "code_may_be_spent": False,
        "description": "the object has no string 'code' field",
        "user_id": 8,
    }
    assert records[4]["error"] == "invalid_input"
    assert records[5]["error"] == "invalid_grant"
    assert records[5]["user_id"] == 9


def test_a_byte_order_mark_does_not_hide_json_lines(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    code = fake_baidu.issue_code()
    source = tmp_path / "codes.jsonl"
    source.write_text(json.dumps({"code": code, "row": 1}) + "\n", encoding="utf-8-sig")
    output = tmp_path / "out.jsonl"
    result = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert _records(output)[0]["row"] == 1


def test_all_ok_exits_zero_and_reads_stdin(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    codes = [fake_baidu.issue_code() for _ in range(20)]
    output = tmp_path / "out.jsonl"
    result = _run(fake_baidu, "-", "-o", str(output), stdin="\n".join(codes) + "\n")
    assert result.returncode == 0, result.stderr
    assert sorted(record["code"] for record in _records(output)) == sorted(codes)
    assert "20 ok, 0 failed" in result.stderr


def test_missing_credentials_exit_2(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    env = _env(fake_baidu)
    del env["BAIDU_SWAN_SECRET"]
    output = tmp_path / "out.jsonl"
    result = _run(fake_baidu, "-", "-o", str(output), env=env, stdin="x\n")
    assert result.returncode == 2
    assert "BAIDU_SWAN_SECRET" in result.stderr
    assert not output.exists()


def test_an_existing_output_is_refused_untouched(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text("precious\n", encoding="utf-8")
    result = _run(fake_baidu, "-", "-o", str(output), stdin="code-1\n")
    assert result.returncode == 2
    assert "--resume" in result.stderr
    assert output.read_text(encoding="utf-8") == "precious\n"


def test_resume_needs_a_file(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    result = _run(fake_baidu, "-", "-o", str(tmp_path / "o"), "--resume", stdin="c\n")
    assert result.returncode == 2
    assert "stdin" in result.stderr


@pytest.mark.parametrize("flag", [["--rate", "0"], ["--concurrency", "0"], []])
def test_usage_errors_exit_2(fake_baidu: FakeBaiduServer, tmp_path: Path, flag: list[str]) -> None:
    args = [*flag] if flag else ["--rate", "fast"]
    result = _run(fake_baidu, "-", "-o", str(tmp_path / "o"), *args, stdin="c\n")
    assert result.returncode == 2


def _wait_for_records(path: Path, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} records")


def _wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.02)


def _slow_job(fake: FakeBaiduServer, tmp_path: Path, size: int) -> tuple[Path, Path]:
    codes = [fake.issue_code() for _ in range(size)]
    for code in codes:
        fake.script(code, Delay(0.05))
    source = tmp_path / "codes.txt"
    source.write_text("\n".join(codes) + "\n", encoding="utf-8")
    return source, tmp_path / "records.jsonl"


def _assert_exactly_once(output: Path, size: int) -> None:
    lines = Counter(record["line"] for record in _records(output))
    assert sorted(lines) == list(range(1, size + 1))
    assert set(lines.values()) == {1}, "no input has two records"


def test_kill_9_then_resume_gives_every_input_one_record(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    size = 300
    source, output = _slow_job(fake_baidu, tmp_path, size)
    args = [*COMMAND, str(source), "-o", str(output), "--concurrency", "4", "--no-progress"]
    process = subprocess.Popen(args, env=_env(fake_baidu), stderr=subprocess.PIPE)
    _wait_for_records(output, 40)

    process.kill()  # SIGKILL: no cleanup of any kind
    process.wait(10)
    assert process.stderr is not None
    process.stderr.close()
    written = len(_records(output))
    assert written < size

    result = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")

    assert result.returncode in (0, 1), result.stderr
    _assert_exactly_once(output, size)
    failures = [record for record in _records(output) if "error" in record]
    # Only codes in flight at the kill can have been spent without a record.
    assert len(failures) <= 4
    assert all(record["error"] == "invalid_grant" for record in failures)
    assert "already recorded" in result.stderr


def test_resume_repairs_a_torn_last_line(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    codes = [fake_baidu.issue_code() for _ in range(3)]
    source = tmp_path / "codes.txt"
    source.write_text("\n".join(codes) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    first = {"line": 1, "code": codes[0], "openid": "o", "session_key": "k"}
    output.write_text(json.dumps(first) + '\n{"line": 2, "code": "' + codes[1][:5], "utf-8")

    result = _run(fake_baidu, str(source), "-o", str(output), "--resume")

    assert result.returncode == 0, result.stderr
    _assert_exactly_once(output, 3)
    assert _records(output)[0] == first


def test_existing_records_scan(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"line": 4}\n{"line": 9}\n{"li', encoding="utf-8")
    fd = os.open(path, os.O_RDWR)
    seen: list[tuple[int, int]] = []
    try:
        scan = _scan_records(
            fd, str(path), lambda line, _record, offset: seen.append((line, offset))
        )
    finally:
        os.close(fd)
    assert seen == [(4, 0), (9, 12)]
    assert (scan.records, scan.torn_at, scan.open_end) == (2, 24, False)
    # The scan changes nothing: the torn line is cut by the job, once INPUT checks out.
    assert path.read_text(encoding="utf-8") == '{"line": 4}\n{"line": 9}\n{"li'


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_cleanly_and_resume_finishes(
    fake_baidu: FakeBaiduServer, tmp_path: Path, signum: int
) -> None:
    size = 200
    source, output = _slow_job(fake_baidu, tmp_path, size)
    args = [*COMMAND, str(source), "-o", str(output), "--concurrency", "4", "--no-progress"]
    process = subprocess.Popen(args, env=_env(fake_baidu), stderr=subprocess.PIPE, text=True)
    _wait_for_records(output, 20)

    process.send_signal(signum)
    _, stderr = process.communicate(timeout=20)

    assert process.returncode == 128 + signum
    assert "interrupted" in stderr
    assert fake_baidu.secret not in stderr
    records = _records(output)  # every line parses: nothing torn
    assert len(records) < size
    spent_without_record = [
        code for code in source.read_text("utf-8").split() if fake_baidu.is_spent(code)
    ]
    assert len(spent_without_record) == len(records), "in-flight calls finished and recorded"

    result = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")
    assert result.returncode == 0, result.stderr
    _assert_exactly_once(output, size)


def _stderr_on_a_terminal(fake: FakeBaiduServer, *args: str, pass_fds: tuple[int, ...] = ()) -> str:
    """Run the command with stderr on a pseudo-terminal; return what it showed there."""
    leader, follower = pty.openpty()
    # A new pty is 0 columns wide, which leaves a bar no room; give it a terminal's size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        [*COMMAND, *args],
        env=_env(fake),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        pass_fds=pass_fds,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(30)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    def stderr_on_a_terminal(*flags: str, output: Path) -> str:
        source = output.with_suffix(".txt")
        codes = [fake_baidu.issue_code() for _ in range(30)]
        source.write_text("\n".join(codes) + "\n", encoding="utf-8")
        return _stderr_on_a_terminal(fake_baidu, str(source), "-o", str(output), *flags)

    shown = stderr_on_a_terminal(output=tmp_path / "a.jsonl")
    assert "code/s" in shown or "30/30" in shown
    quiet = stderr_on_a_terminal("--no-progress", output=tmp_path / "b.jsonl")
    assert "30/30" not in quiet
    assert "30 ok, 0 failed" in quiet


def _pipe_of(lines: list[str]) -> int:
    """The read end of a pipe that holds ``lines`` and has no writer left (they fit its
    buffer)."""
    reader, writer = os.pipe()
    with os.fdopen(writer, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return reader


def test_a_pipe_path_is_read_once(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    # What `baidu-swan-auth exchange <(producer) -o ...` hands the command: /dev/fd/N, a pipe.
    codes = [fake_baidu.issue_code() for _ in range(50)]
    reader = _pipe_of(codes)
    output = tmp_path / "out.jsonl"
    try:
        result = subprocess.run(
            [*COMMAND, f"/dev/fd/{reader}", "-o", str(output), "--no-progress"],
            env=_env(fake_baidu),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            pass_fds=(reader,),
        )
    finally:
        os.close(reader)
    assert result.returncode == 0, result.stderr
    assert "50 ok, 0 failed" in result.stderr
    assert sorted(record["code"] for record in _records(output)) == sorted(codes)


def test_a_progress_bar_does_not_read_a_pipe_ahead(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    codes = [fake_baidu.issue_code() for _ in range(30)]
    reader = _pipe_of(codes)
    output = tmp_path / "out.jsonl"
    try:
        shown = _stderr_on_a_terminal(
            fake_baidu, f"/dev/fd/{reader}", "-o", str(output), pass_fds=(reader,)
        )
    finally:
        os.close(reader)
    assert "30 ok, 0 failed" in shown
    assert len(_records(output)) == 30


def _wait_for_text(process: subprocess.Popen[bytes], text: str, timeout: float = 20.0) -> str:
    """Read the process's stderr until ``text`` shows up; return what was read."""
    assert process.stderr is not None
    descriptor = process.stderr.fileno()
    os.set_blocking(descriptor, False)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen += os.read(descriptor, 4096)
        except BlockingIOError:
            time.sleep(0.02)
        if text.encode() in seen:
            return seen.decode()
        if process.poll() is not None:
            break
    raise AssertionError(f"{text!r} did not show up on stderr: {seen.decode()!r}")


def _open_for_writing(fifo: Path, timeout: float = 20.0) -> int:
    """Open a FIFO's write end once the command has opened its read end (never blocking)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody has it open for reading yet
            time.sleep(0.02)
    raise AssertionError(f"nobody opened {fifo} for reading")


def test_a_named_fifo_is_read_once(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    codes = [fake_baidu.issue_code() for _ in range(40)]
    fifo = tmp_path / "codes.fifo"
    os.mkfifo(fifo)
    output = tmp_path / "out.jsonl"
    with subprocess.Popen(
        [*COMMAND, str(fifo), "-o", str(output), "--no-progress"],
        env=_env(fake_baidu),
        stderr=subprocess.PIPE,
    ) as process:
        try:
            writer = _open_for_writing(fifo)
            os.set_blocking(writer, True)
            with os.fdopen(writer, "w", encoding="utf-8") as handle:
                handle.write("\n".join(codes) + "\n")
            _, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
    assert process.returncode == 0, stderr
    assert sorted(record["code"] for record in _records(output)) == sorted(codes)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_job_waiting_for_a_fifo_writer(
    fake_baidu: FakeBaiduServer, tmp_path: Path, signum: int
) -> None:
    fifo = tmp_path / "codes.fifo"
    os.mkfifo(fifo)
    output = tmp_path / "out.jsonl"
    with subprocess.Popen(
        [*COMMAND, str(fifo), "-o", str(output), "--no-progress"],
        env=_env(fake_baidu),
        stderr=subprocess.PIPE,
    ) as process:
        try:
            shown = _wait_for_text(process, "waiting for")
            process.send_signal(signum)
            _, rest = process.communicate(timeout=20)
        finally:
            process.kill()
    stderr = shown + rest.decode()
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert "0 ok, 0 failed" in stderr
    assert "interrupted" in stderr
    assert not output.exists(), "nothing was read, so nothing was written"


def test_a_signal_stops_a_job_whose_pipe_has_stalled(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    code = fake_baidu.issue_code()
    reader, writer = os.pipe()
    os.write(writer, f"{code}\n".encode())  # and then nothing more, with the pipe left open
    output = tmp_path / "out.jsonl"
    try:
        with subprocess.Popen(
            [*COMMAND, f"/dev/fd/{reader}", "-o", str(output), "--no-progress"],
            env=_env(fake_baidu),
            stderr=subprocess.PIPE,
            pass_fds=(reader,),
        ) as process:
            try:
                _wait_until(lambda: fake_baidu.is_spent(code))  # sent as it came, not per batch
                process.send_signal(signal.SIGTERM)
                _, stderr = process.communicate(timeout=20)
            finally:
                process.kill()
    finally:
        os.close(reader)
        os.close(writer)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert b"Traceback" not in stderr
    assert b"1 ok, 0 failed" in stderr
    assert _records(output)[0]["code"] == code


def test_verbose_output_leaks_no_secret_key_or_code(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    codes = [fake_baidu.issue_code() for _ in range(12)]
    fake_baidu.script(codes[0], ErrorStatus(503))
    fake_baidu.script(codes[1], Drop(spend=True))
    source = tmp_path / "codes.txt"
    source.write_text("\n".join(codes) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "baidu_swan_auth.cli", "-v", "exchange", str(source)]
    result = subprocess.run(
        [*command, "-o", str(output)],
        env=_env(fake_baidu),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    printed = result.stdout + result.stderr
    assert "attempt=" in printed, "DEBUG logging was on"
    session_keys = [r["session_key"] for r in _records(output) if "session_key" in r]
    assert len(session_keys) == 11
    for hidden in [fake_baidu.secret, *session_keys, *codes]:
        assert hidden not in printed


def test_stdout_as_output_is_refused_clearly(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    source = tmp_path / "codes.txt"
    source.write_text(fake_baidu.issue_code() + "\n")
    result = _run(fake_baidu, str(source), "-o", "-")
    assert result.returncode == 2
    assert "-o - (stdout) is not supported" in result.stderr
    assert not (Path.cwd() / "-").exists()
    assert fake_baidu.requests == []


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_input_warns_and_exits_zero(
    fake_baidu: FakeBaiduServer, tmp_path: Path, content: str
) -> None:
    source = tmp_path / "codes.txt"
    source.write_text(content)
    result = _run(fake_baidu, str(source), "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr
    assert "holds no codes" in result.stderr


def test_plain_http_is_refused_in_the_cli_s_terms_and_allowed_by_its_flag(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source = tmp_path / "codes.txt"
    source.write_text(fake_baidu.issue_code() + "\n")
    # 0.0.0.0 is no loopback address to the endpoint check, yet Linux connects it to this host.
    insecure = f"http://0.0.0.0:{fake_baidu.port}/oauth/jscode2sessionkey"
    refused = _run(fake_baidu, str(source), "-o", str(tmp_path / "a.jsonl"), "--endpoint", insecure)
    assert refused.returncode == 2
    assert "--allow-insecure-http" in refused.stderr
    assert "allow_insecure_http=True" not in refused.stderr
    env = _env(fake_baidu, BAIDU_SWAN_ENDPOINT=insecure)
    refused_env = _run(fake_baidu, str(source), "-o", str(tmp_path / "b.jsonl"), env=env)
    assert refused_env.returncode == 2
    assert "--allow-insecure-http" in refused_env.stderr
    assert fake_baidu.requests == []

    output = tmp_path / "c.jsonl"
    allowed = _run(fake_baidu, str(source), "-o", str(output), "--allow-insecure-http", env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert "openid" in _records(output)[0]
