"""Bulk jobs that finish (issue #12): a resume retries what can be retried, a refusal every line
would meet stops the job, a resume checks its input, a signal stops a rate-limited job at once,
and a run ends with one record per input line. Each through the real command, in a subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from baidu_swan_auth.testing import Delay, ErrorStatus, FakeBaiduServer, RawBody

from .test_cli_exchange import COMMAND, _env, _records, _run, _wait_for_records


def _codes_file(fake: FakeBaiduServer, path: Path, size: int) -> list[str]:
    codes = [fake.issue_code() for _ in range(size)]
    path.write_text(
        "".join(json.dumps({"code": code, "row": n}) + "\n" for n, code in enumerate(codes))
    )
    return codes


def _one_record_per_line(
    output: Path, size: int, *, compacted: bool = False
) -> dict[int, dict[str, Any]]:
    records = _records(output)
    lines = Counter(record["line"] for record in records)
    assert sorted(lines) == list(range(1, size + 1)), "every input line has a record"
    assert set(lines.values()) == {1}, "and only one: the latest"
    if compacted:
        assert [record["line"] for record in records] == sorted(lines), "rewritten in line order"
    return {record["line"]: record for record in records}


def test_an_outage_then_a_resume_finishes_the_job(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "codes.jsonl", tmp_path / "records.jsonl"
    codes = _codes_file(fake_baidu, source, 30)
    fake_baidu.always(ErrorStatus(503))

    outage = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")

    assert outage.returncode == 1, outage.stderr
    assert "30 failed (unavailable: 30)" in outage.stderr
    for record in _records(output):
        assert (record["error"], record["kind"]) == ("unavailable", "unavailable")
        assert record["code_may_be_spent"] is False, "a 503 is safe: Baidu did not read it"

    fake_baidu.always(None)
    os.chmod(output, 0o600)
    resumed = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")

    assert resumed.returncode == 0, resumed.stderr
    assert "30 ok, 0 failed, 30 of them retried" in resumed.stderr
    records = _one_record_per_line(output, 30, compacted=True)
    assert [records[n + 1]["code"] for n in range(30)] == codes
    assert all("openid" in record and record["row"] == n - 1 for n, record in records.items())
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if ".compacting" in p.name], "no temporary left"

    sent = len(fake_baidu.requests)
    again = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "30 already recorded (0 failed)" in again.stderr
    assert len(fake_baidu.requests) == sent, "final records are never sent again"


def test_a_final_failure_is_not_retried_and_keeps_the_exit_status_at_1(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "codes.jsonl", tmp_path / "records.jsonl"
    codes = _codes_file(fake_baidu, source, 3)
    fake_baidu.script(codes[1], ErrorStatus(400, error="invalid_grant"))

    first = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")
    resumed = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")

    assert (first.returncode, resumed.returncode) == (1, 1)
    assert "3 already recorded (1 failed)" in resumed.stderr
    assert len(fake_baidu.requests_for(codes[1])) == 1


def test_a_wrong_secret_stops_the_job_and_a_resume_with_the_right_one_finishes_it(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "codes.jsonl", tmp_path / "records.jsonl"
    _codes_file(fake_baidu, source, 200)

    wrong = _run(
        fake_baidu,
        str(source),
        "-o",
        str(output),
        "--no-progress",
        "--concurrency",
        "4",
        env=_env(fake_baidu, BAIDU_SWAN_SECRET="not-the-secret"),
    )

    assert wrong.returncode == 2, wrong.stderr
    assert "invalid_client" in wrong.stderr
    assert "BAIDU_SWAN_SECRET" in wrong.stderr, "the message says what to fix"
    assert "Traceback" not in wrong.stderr
    written = _records(output)
    assert 1 <= len(written) <= 4, "the job stopped at once, not after 200 refusals"
    assert {record["kind"] for record in written} == {"invalid_client"}

    fixed = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")

    assert fixed.returncode == 0, fixed.stderr
    records = _one_record_per_line(output, 200, compacted=True)
    assert all("openid" in record for record in records.values())


def test_a_resume_with_another_input_is_refused_before_anything_is_sent(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    first, other, output = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "out.jsonl"
    _codes_file(fake_baidu, first, 5)
    fake_baidu.always(ErrorStatus(503))  # every record retryable: a resume would send them all
    assert _run(fake_baidu, str(first), "-o", str(output), "--no-progress").returncode == 1
    _codes_file(fake_baidu, other, 8)
    before = (output.read_bytes(), output.stat().st_mtime_ns)
    sent = len(fake_baidu.requests)

    refused = _run(fake_baidu, str(other), "-o", str(output), "--resume", "--no-progress")

    assert refused.returncode == 2
    assert "with another code than INPUT's line" in refused.stderr
    assert len(fake_baidu.requests) == sent, "nothing was sent"
    assert (output.read_bytes(), output.stat().st_mtime_ns) == before


def test_a_resume_with_a_shorter_input_is_refused(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "a.jsonl", tmp_path / "out.jsonl"
    codes = _codes_file(fake_baidu, source, 4)
    assert _run(fake_baidu, str(source), "-o", str(output), "--no-progress").returncode == 0
    source.write_text(json.dumps({"code": codes[0], "row": 0}) + "\n")

    refused = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")

    assert refused.returncode == 2
    assert "which INPUT does not have" in refused.stderr


def test_sigterm_stops_a_rate_limited_job_within_a_second(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "codes.jsonl", tmp_path / "records.jsonl"
    _codes_file(fake_baidu, source, 100)
    args = [*COMMAND, str(source), "-o", str(output), "--rate", "4", "--concurrency", "16"]
    process = subprocess.Popen(
        [*args, "--no-progress"], env=_env(fake_baidu), stderr=subprocess.PIPE, text=True
    )
    _wait_for_records(output, 3)

    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, stderr = process.communicate(timeout=20)
    took = time.monotonic() - signalled

    assert process.returncode == 143, stderr
    assert took < 2.5, f"a rate-limited job stopped {took:.1f}s after SIGTERM"
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
    recorded = _records(output)
    assert len(recorded) < 100
    spent = [r for r in recorded if fake_baidu.is_spent(r["code"])]
    assert len(spent) == len(fake_baidu.requests), "every code that was sent has its record"
    # The rate counts the work, not the shutdown: about 4 a second, not fewer.
    rate = int(stderr.rsplit("(", 1)[1].split("/s")[0])
    assert rate >= 2, stderr

    resumed = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    _one_record_per_line(output, 100)


def test_a_second_signal_abandons_the_calls_in_flight_at_once(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "codes.jsonl", tmp_path / "records.jsonl"
    codes = _codes_file(fake_baidu, source, 8)
    for code in codes[2:]:
        fake_baidu.script(code, Delay(4))
    process = subprocess.Popen(
        [*COMMAND, str(source), "-o", str(output), "--no-progress", "--concurrency", "8"],
        env=_env(fake_baidu),
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_records(output, 2)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    second = time.monotonic()
    _, stderr = process.communicate(timeout=20)

    assert process.returncode == 130, stderr
    assert time.monotonic() - second < 2.5, "the grace period was cut short"


def test_a_second_job_on_the_same_output_is_refused(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "codes.jsonl", tmp_path / "records.jsonl"
    _codes_file(fake_baidu, source, 3)
    output.write_bytes(b"")
    with open(output, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running job holds it
        refused = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")
    assert refused.returncode == 2
    assert "in use by another" in refused.stderr
    assert fake_baidu.requests == []


def test_input_and_output_as_one_file_is_refused(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source = tmp_path / "codes.jsonl"
    _codes_file(fake_baidu, source, 3)
    before = source.read_bytes()
    refused = _run(fake_baidu, str(source), "-o", str(source), "--resume", "--no-progress")
    assert refused.returncode == 2
    assert "same file" in refused.stderr
    assert source.read_bytes() == before


def test_a_refused_resume_leaves_a_torn_output_as_it_was(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    output = tmp_path / "records.jsonl"
    output.write_bytes(b'{"line": 1, "code": "x", "openid": "o", "session_key": "k"}\n{"li')
    before = output.read_bytes()
    missing = tmp_path / "no-such-input.jsonl"
    refused = _run(fake_baidu, str(missing), "-o", str(output), "--resume", "--no-progress")
    assert refused.returncode == 2
    assert output.read_bytes() == before, "nothing is cut before INPUT checks out"


def test_an_error_string_from_baidu_never_reaches_the_summary(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "codes.jsonl", tmp_path / "records.jsonl"
    codes = _codes_file(fake_baidu, source, 2)
    fake_baidu.script(
        codes[0], ErrorStatus(400, error="x\nbaidu-swan-auth exchange: 100 ok\x1b[2K")
    )
    result = _run(fake_baidu, str(source), "-o", str(output), "--no-progress")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "\x1b" not in result.stderr
    assert "(api_error: 1)" in result.stderr


def test_a_broken_stderr_neither_blocks_a_signal_nor_fails_a_success(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "codes.jsonl", tmp_path / "records.jsonl"
    _codes_file(fake_baidu, source, 2)
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stderr now fails with EPIPE
    try:
        ok = subprocess.run(
            [*COMMAND, str(source), "-o", str(output), "--no-progress"],
            env=_env(fake_baidu),
            stderr=write_end,
            timeout=60,
            check=False,
        )
        assert ok.returncode == 0
        codes = _codes_file(fake_baidu, source, 6)
        for code in codes:
            fake_baidu.script(code, Delay(3))
        output.unlink()
        process = subprocess.Popen(
            [*COMMAND, str(source), "-o", str(output), "--no-progress"],
            env=_env(fake_baidu),
            stderr=write_end,
        )
        time.sleep(1.0)
        for signum in (signal.SIGTERM, signal.SIGTERM):
            process.send_signal(signum)
            time.sleep(0.2)
        assert process.wait(timeout=10) == 143
    finally:
        os.close(write_end)


def _outage_then_half_recovered(fake: FakeBaiduServer, tmp_path: Path) -> tuple[Path, Path]:
    """An output whose every line failed retryably once: a resume then rewrites it."""
    source, output = tmp_path / "codes.jsonl", tmp_path / "records.jsonl"
    _codes_file(fake, source, 20)
    fake.always(ErrorStatus(503))
    assert _run(fake, str(source), "-o", str(output), "--no-progress").returncode == 1
    fake.always(None)
    return source, output


def test_the_rewrite_keeps_the_owner_and_deletes_a_stale_temporary(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = _outage_then_half_recovered(fake_baidu, tmp_path)
    owner = 65534 if os.geteuid() == 0 else os.geteuid()  # as root: someone else's file
    os.chown(output, owner, owner)
    stale = tmp_path / ".records.jsonl.compacting-99999"
    stale.write_text("left by a job killed while it rewrote the file\n")

    resumed = _run(fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress")

    assert resumed.returncode == 0, resumed.stderr
    _one_record_per_line(output, 20, compacted=True)
    info = output.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (owner, owner, 0o600)
    assert not stale.exists()


def test_a_rewrite_that_fills_the_disk_keeps_the_original(tmp_path: Path) -> None:
    # The rewrite alone runs under a file size limit smaller than its result: the write fails
    # as on a full disk. A real file, a real limit: nothing is mocked.
    output = tmp_path / "records.jsonl"
    records = [
        json.dumps({"line": n, "code": f"c{n}", "openid": "o", "session_key": "k" * 40}) + "\n"
        for n in (1, 2, 1, 2)
    ]
    output.write_text("".join(records))
    before = output.read_bytes()
    # 1 + the offsets of the latest records of lines 1 and 2: the third and the fourth.
    latest = [0, len(records[0]) + len(records[1]) + 1, len(before) - len(records[3]) + 1]
    script = f"""
import array, os, resource, signal
from baidu_swan_auth._job_output import compact
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (60, 60))
offsets = array.array("Q", {latest!r})
fd = os.open({str(output)!r}, os.O_RDWR)
try:
    compact({str(output)!r}, fd, offsets)
except OSError as error:
    print("refused", error.errno)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert "refused 27" in result.stdout, result.stdout + result.stderr  # EFBIG
    assert output.read_bytes() == before, "the original is kept whole"
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"], "no temporary left"


def test_a_refused_token_is_retried_by_a_resume(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "codes.jsonl", tmp_path / "records.jsonl"
    codes = _codes_file(fake_baidu, source, 3)
    refused = RawBody(b'{"error_code": 110, "error_msg": "Access token invalid"}')
    for code in codes:
        fake_baidu.script(code, refused, refused)  # the fresh token is refused too
    env = _env(
        fake_baidu, BAIDU_SWAN_API="getsessionkey", BAIDU_SWAN_OPENAPI_URL=fake_baidu.openapi_url
    )

    first = _run(fake_baidu, str(source), "-o", str(output), "--no-progress", env=env)

    assert first.returncode == 1, first.stderr
    assert {record["kind"] for record in _records(output)} == {"token_rejected"}
    assert not any(fake_baidu.is_spent(code) for code in codes)
    resumed = _run(
        fake_baidu, str(source), "-o", str(output), "--resume", "--no-progress", env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "3 ok, 0 failed, 3 of them retried" in resumed.stderr
    assert all(fake_baidu.is_spent(code) for code in codes)
