"""``baidu-swan-auth exchange`` on the access-token APIs: ``--api getsessionkey``,
``--openapi-url``, and the token shared through ``BAIDU_SWAN_REDIS_URL``; and the demo's tour of
them. The command runs in a subprocess, as users run it, against the fake on its thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from baidu_swan_auth import SwanAuthClient
from baidu_swan_auth.redis import RedisTokenStore
from baidu_swan_auth.testing import (
    DEFAULT_SECRET,
    ENDPOINT_PATH,
    GETSESSIONKEY_PATH,
    TOKEN_PATH,
    FakeBaiduServer,
)
from tests.helpers import socket_port
from tests.tokens.conftest import RedisServer, _free_port, _redis_server_binary

from .test_cli_exchange import _env

COMMAND = [sys.executable, "-m", "baidu_swan_auth.cli", "exchange"]
# The command's main() in a process where redis-py cannot be imported, as if not installed.
WITHOUT_REDIS_PY = [
    sys.executable,
    "-c",
    "import sys; sys.modules['redis'] = None; from baidu_swan_auth.cli import main; "
    "sys.exit(main(['exchange', *sys.argv[1:]]))",
]
PASSWORD = "redis-pass-4e1f9c"  # a test value: it must never be printed
TOKEN_KEY = "baidu_swan_auth:token:{client_id}"


# -- helpers and fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for this module, started as tests/tokens/conftest.py starts its own."""
    directory = tmp_path_factory.mktemp("redis-cli")
    server = RedisServer(_free_port())
    process = subprocess.Popen(
        [
            _redis_server_binary(),
            *("--port", str(server.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--protected-mode", "no", "--dir", str(directory)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if server.ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer PING on port {server.port}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the module's server, on a database emptied for the test."""
    with redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=5) as client:
        client.flushall()
        yield client


def _v2_env(fake: FakeBaiduServer, **extra: str) -> dict[str, str]:
    return _env(
        fake,
        **{"BAIDU_SWAN_API": "getsessionkey", "BAIDU_SWAN_OPENAPI_URL": fake.openapi_url, **extra},
    )


def _run(
    *args: str, env: dict[str, str], command: list[str] = COMMAND, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*command, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    shown = result.stdout + result.stderr
    assert DEFAULT_SECRET not in shown
    assert PASSWORD not in shown
    return result


def _codes(fake: FakeBaiduServer, folder: Path, count: int, name: str = "codes.txt") -> Path:
    source = folder / name
    source.write_text("".join(f"{fake.issue_code()}\n" for _ in range(count)), encoding="utf-8")
    return source


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _assert_all_exchanged(fake: FakeBaiduServer, output: Path, count: int) -> None:
    records = _records(output)
    assert len(records) == count
    for record in records:
        grant = fake.grant_for(record["code"])
        assert (record["openid"], record["session_key"]) == (grant.openid, grant.session_key)


def _paths(fake: FakeBaiduServer) -> list[str]:
    return [request.path for request in fake.requests]


def _sent_tokens(fake: FakeBaiduServer) -> set[str]:
    return {
        request.form["access_token"]
        for request in fake.requests
        if request.path == GETSESSIONKEY_PATH
    }


# -- --api and --openapi-url --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_a_v2_job_exchanges_every_code_with_one_token(
    fake_baidu: FakeBaiduServer, tmp_path: Path, how: str
) -> None:
    source = _codes(fake_baidu, tmp_path, 6)
    output = tmp_path / "records.jsonl"
    if how == "flags":
        flags = ["--api", "getsessionkey", "--openapi-url", fake_baidu.openapi_url]
        env = _env(fake_baidu)
    else:
        flags, env = [], _v2_env(fake_baidu)

    result = _run(str(source), "-o", str(output), "--no-progress", *flags, env=env)

    assert result.returncode == 0, result.stderr
    assert "6 ok, 0 failed" in result.stderr
    _assert_all_exchanged(fake_baidu, output, 6)
    assert _paths(fake_baidu).count(GETSESSIONKEY_PATH) == 6
    assert ENDPOINT_PATH not in _paths(fake_baidu), "no v1 exchange"
    assert fake_baidu.token_fetches == 1
    assert _sent_tokens(fake_baidu) == set(fake_baidu.tokens_issued)
    for token in fake_baidu.tokens_issued:
        assert token not in result.stdout + result.stderr


def test_the_api_flag_wins_over_the_environment(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source = _codes(fake_baidu, tmp_path, 2)
    output = tmp_path / "records.jsonl"
    result = _run(
        str(source), "-o", str(output), "--api", "jscode2sessionkey", env=_v2_env(fake_baidu)
    )
    assert result.returncode == 0, result.stderr
    _assert_all_exchanged(fake_baidu, output, 2)
    assert _paths(fake_baidu) == [ENDPOINT_PATH, ENDPOINT_PATH]
    assert fake_baidu.token_fetches == 0


def test_an_unknown_api_is_a_usage_error(fake_baidu: FakeBaiduServer, tmp_path: Path) -> None:
    source = _codes(fake_baidu, tmp_path, 1)
    flag = _run(str(source), "-o", str(tmp_path / "a.jsonl"), "--api", "v3", env=_env(fake_baidu))
    assert flag.returncode == 2
    assert "argument --api: invalid choice: 'v3'" in flag.stderr

    env = _env(fake_baidu, BAIDU_SWAN_API="v3")
    variable = _run(str(source), "-o", str(tmp_path / "b.jsonl"), env=env)
    assert variable.returncode == 2
    assert variable.stderr.splitlines() == [
        "baidu-swan-auth exchange: BAIDU_SWAN_API must be jscode2sessionkey or getsessionkey, "
        "not 'v3'"
    ]
    assert fake_baidu.requests == []
    assert not (tmp_path / "a.jsonl").exists()
    assert not (tmp_path / "b.jsonl").exists()


def test_a_plain_http_openapi_url_is_refused_unless_allowed_by_the_flag(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    source = _codes(fake_baidu, tmp_path, 1)
    # 0.0.0.0 is no loopback address to the check, yet Linux connects it to this host.
    insecure = f"http://0.0.0.0:{fake_baidu.port}"
    by_flag = _run(
        str(source),
        *("-o", str(tmp_path / "a.jsonl"), "--api", "getsessionkey", "--openapi-url", insecure),
        env=_env(fake_baidu),
    )
    assert by_flag.returncode == 2
    assert "refusing plain http:// to 0.0.0.0 (--openapi-url)" in by_flag.stderr
    assert "pass --allow-insecure-http" in by_flag.stderr
    env = _v2_env(fake_baidu, BAIDU_SWAN_OPENAPI_URL=insecure)
    by_variable = _run(str(source), "-o", str(tmp_path / "b.jsonl"), env=env)
    assert by_variable.returncode == 2
    assert "(BAIDU_SWAN_OPENAPI_URL)" in by_variable.stderr
    assert fake_baidu.requests == []

    output = tmp_path / "c.jsonl"
    allowed = _run(str(source), "-o", str(output), "--allow-insecure-http", env=env)
    assert allowed.returncode == 0, allowed.stderr
    _assert_all_exchanged(fake_baidu, output, 1)
    assert fake_baidu.token_fetches == 1


# -- BAIDU_SWAN_REDIS_URL -----------------------------------------------------------------------


def test_the_job_keeps_its_token_in_redis_for_the_fleet_and_the_next_job(
    fake_baidu: FakeBaiduServer, redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path
) -> None:
    env = _v2_env(fake_baidu, BAIDU_SWAN_REDIS_URL=redis_server.url)
    first = tmp_path / "first.jsonl"
    result = _run(str(_codes(fake_baidu, tmp_path, 4)), "-o", str(first), env=env)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    _assert_all_exchanged(fake_baidu, first, 4)
    assert fake_baidu.token_fetches == 1
    [token] = fake_baidu.tokens_issued
    stored = redis_db.get(TOKEN_KEY.format(client_id=fake_baidu.client_id))
    assert isinstance(stored, bytes)
    assert json.loads(stored)["token"] == token
    assert redis_db.pttl(TOKEN_KEY.format(client_id=fake_baidu.client_id)) > 0

    fake_baidu.reset_stats()
    second = tmp_path / "second.jsonl"
    source = _codes(fake_baidu, tmp_path, 3, "more.txt")
    again = _run(str(source), "-o", str(second), env=env)
    assert again.returncode == 0, again.stderr
    _assert_all_exchanged(fake_baidu, second, 3)
    assert fake_baidu.token_fetches == 0, "the token in Redis was used"
    assert _sent_tokens(fake_baidu) == {token}


async def test_a_job_uses_the_token_a_web_fleet_keeps_in_redis(
    fake_baidu: FakeBaiduServer, redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path
) -> None:
    # A web process of the fleet, with the store its deployment uses.
    async with (
        RedisTokenStore.from_url(redis_server.url) as store,
        SwanAuthClient(
            fake_baidu.client_id,
            fake_baidu.secret,
            api="getsessionkey",
            openapi_url=fake_baidu.openapi_url,
            token_store=store,
        ) as web,
    ):
        fleet_token = (await web.access_token()).token
    assert redis_db.exists(TOKEN_KEY.format(client_id=fake_baidu.client_id))
    fake_baidu.reset_stats()

    output = tmp_path / "records.jsonl"
    env = _v2_env(fake_baidu, BAIDU_SWAN_REDIS_URL=redis_server.url)
    source = _codes(fake_baidu, tmp_path, 5)
    result = await asyncio.to_thread(_run, str(source), "-o", str(output), env=env)

    assert result.returncode == 0, result.stderr
    _assert_all_exchanged(fake_baidu, output, 5)
    assert fake_baidu.token_fetches == 0
    assert TOKEN_PATH not in _paths(fake_baidu)
    assert _sent_tokens(fake_baidu) == {fleet_token}


# The command's main(), with the Redis store saying on stderr when it is closed.
CLOSED = "[redis store closed]"
WITH_CLOSE_NOTICE = [
    sys.executable,
    "-c",
    "import sys\n"
    "from baidu_swan_auth.redis import RedisTokenStore\n"
    "close = RedisTokenStore.aclose\n"
    "async def aclose(self):\n"
    "    await close(self)\n"
    f"    print({CLOSED!r}, file=sys.stderr, flush=True)\n"
    "RedisTokenStore.aclose = aclose\n"
    "from baidu_swan_auth.cli import main\n"
    "sys.exit(main(['exchange', *sys.argv[1:]]))\n",
]


@pytest.mark.parametrize("ending", ["done", "output refused", "client refused"])
def test_the_redis_store_is_closed_however_the_job_ends(
    fake_baidu: FakeBaiduServer,
    redis_server: RedisServer,
    redis_db: redis.Redis,
    tmp_path: Path,
    ending: str,
) -> None:
    output = tmp_path / "records.jsonl"
    env = _v2_env(fake_baidu, BAIDU_SWAN_REDIS_URL=redis_server.url)
    if ending == "output refused":
        output.write_text("not this command's records\n")  # and no --resume: a JobError
    if ending == "client refused":  # past the CLI's own checks, refused by the client
        env["BAIDU_SWAN_OPENAPI_URL"] = fake_baidu.openapi_url + "/#fragment"
    source = _codes(fake_baidu, tmp_path, 3)

    result = _run(str(source), "-o", str(output), env=env, command=WITH_CLOSE_NOTICE)

    assert result.returncode == (0 if ending == "done" else 2), result.stderr
    assert result.stderr.count(CLOSED) == 1
    assert "Traceback" not in result.stderr


def test_the_redis_store_is_closed_when_a_signal_stops_the_job(
    fake_baidu: FakeBaiduServer, redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path
) -> None:
    code = fake_baidu.issue_code()
    reader, writer = os.pipe()
    os.write(writer, f"{code}\n".encode())  # and then nothing more, with the pipe left open
    output = tmp_path / "records.jsonl"
    env = _v2_env(fake_baidu, BAIDU_SWAN_REDIS_URL=redis_server.url)
    try:
        with subprocess.Popen(
            [*WITH_CLOSE_NOTICE, f"/dev/fd/{reader}", "-o", str(output), "--no-progress"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(reader,),
        ) as process:
            try:
                deadline = time.monotonic() + 20
                while not fake_baidu.is_spent(code):  # the token was fetched, and stored
                    assert time.monotonic() < deadline, "the code was not exchanged"
                    time.sleep(0.02)
                process.send_signal(signal.SIGTERM)
                _, stderr = process.communicate(timeout=20)
            finally:
                process.kill()
    finally:
        os.close(reader)
        os.close(writer)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.count(CLOSED) == 1
    assert "1 ok, 0 failed" in stderr
    assert redis_db.exists(TOKEN_KEY.format(client_id=fake_baidu.client_id))


@contextlib.contextmanager
def _unusable_redis_port(state: str) -> Iterator[int]:
    """A port where Redis is down (connections refused) or hangs (accepted, never answered)."""
    if state == "down":
        with socket_port() as port:
            yield port
        return
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the handshakes; nobody reads or writes
        yield listener.getsockname()[1]


@pytest.mark.parametrize("redis_state", ["down", "hanging"])
def test_an_unusable_redis_costs_one_warning_and_no_record(
    fake_baidu: FakeBaiduServer, tmp_path: Path, redis_state: str
) -> None:
    output = tmp_path / "records.jsonl"
    source = _codes(fake_baidu, tmp_path, 20)
    with _unusable_redis_port(redis_state) as port:
        url = f"redis://fleet:{PASSWORD}@127.0.0.1:{port}/0"
        env = _v2_env(fake_baidu, BAIDU_SWAN_REDIS_URL=url)
        result = _run(str(source), "-o", str(output), env=env)

    assert result.returncode == 0, result.stderr
    assert "20 ok, 0 failed" in result.stderr
    _assert_all_exchanged(fake_baidu, output, 20)
    assert fake_baidu.token_fetches == 1
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    reason = "ConnectionError" if redis_state == "down" else "(timeout|TimeoutError)"
    assert len(warnings) == 1, result.stderr
    assert re.fullmatch(
        rf"baidu-swan-auth exchange: warning: the token store failed \({reason}\); access "
        "tokens are fetched and kept in this process until it answers again",
        warnings[0],
    ), warnings
    assert url not in result.stderr
    assert "fleet:" not in result.stderr


@pytest.mark.parametrize("with_redis_url", [True, False])
def test_without_redis_py(
    fake_baidu: FakeBaiduServer, tmp_path: Path, with_redis_url: bool
) -> None:
    source = _codes(fake_baidu, tmp_path, 2)
    output = tmp_path / "records.jsonl"
    extra = {"BAIDU_SWAN_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:6379/0"}
    env = _v2_env(fake_baidu, **(extra if with_redis_url else {}))

    result = _run(str(source), "-o", str(output), env=env, command=WITHOUT_REDIS_PY)

    if not with_redis_url:  # Redis is neither needed nor imported
        assert result.returncode == 0, result.stderr
        _assert_all_exchanged(fake_baidu, output, 2)
        return
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "baidu-swan-auth exchange: BAIDU_SWAN_REDIS_URL is set, but sharing the access token "
        "through Redis needs redis-py: pip install 'baidu-swan-auth[redis]', or unset "
        "BAIDU_SWAN_REDIS_URL"
    ]
    assert fake_baidu.requests == []
    assert not output.exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"http://fleet:{PASSWORD}@127.0.0.1:6379/0", "must specify one of the following schemes"),
        # urllib's own message quotes the port: here, the password.
        (f"redis://fleet:{PASSWORD}@127.0.0.1:{PASSWORD}/0", "as '***'"),
    ],
)
def test_a_redis_url_redis_py_cannot_use_is_refused_without_being_shown(
    fake_baidu: FakeBaiduServer, tmp_path: Path, url: str, shown: str
) -> None:
    source = _codes(fake_baidu, tmp_path, 1)
    env = _v2_env(fake_baidu, BAIDU_SWAN_REDIS_URL=url)
    result = _run(str(source), "-o", str(tmp_path / "records.jsonl"), env=env)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("baidu-swan-auth exchange: BAIDU_SWAN_REDIS_URL is not a usable Redis")
    assert shown in line
    assert fake_baidu.requests == []


def test_importing_the_command_does_not_import_redis() -> None:
    probe = (
        "import sys, baidu_swan_auth.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'redis' or 'redis' in m))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


# -- the demo -----------------------------------------------------------------------------------


def test_the_demo_shows_a_v2_exchange_a_revocation_and_a_unionid() -> None:
    env = {**os.environ, "CI": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "baidu_swan_auth.cli", "demo"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "a v2 client (api='getsessionkey')" in out
    assert "1. a v2 exchange (getsessionkey) fetches a token, then uses it" in out
    assert "(token fetches 0 -> 1) -- as expected" in out
    assert "2. Baidu revokes every token, then a v2 exchange" in out
    assert "(revoked token refused 1x, renewed once: token fetches 1 -> 2) -- as expected" in out
    assert "unionid=union-" in out
    assert "(no new token: token fetches 2 -> 2) -- as expected" in out
    # Session keys are shown masked: two characters, then stars.
    for shown in re.findall(r"session_key=(\S+)", out):
        assert re.fullmatch(r".{2}\*+", shown), shown
    assert "3 of 3 access-token outcomes as expected" in out
    assert "demo: every outcome as expected" in out
    assert "NOT AS EXPECTED" not in out
    assert DEFAULT_SECRET not in out
    assert "access_token" not in out
