"""Final hostile review of the access-token APIs (v2 ``getsessionkey``, ``access_token()``,
``unionid()``, token stores, the CLI's ``--api getsessionkey`` with ``BAIDU_SWAN_REDIS_URL``).

Real parts only: HTTP on 127.0.0.1 (aiohttp servers and raw asyncio sockets of our own), a real
``redis-server``, real subprocesses of the command. Tests named ``test_break_*`` fail until the
break they show is fixed; the others are attacks that held, kept as regression tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import web

from baidu_swan_auth import (
    MemoryTokenStore,
    ResponseError,
    SwanAuthClient,
    SwanAuthError,
)
from baidu_swan_auth.testing import (
    GETSESSIONKEY_PATH,
    GETUNIONID_PATH,
    TOKEN_PATH,
    FakeBaiduServer,
)
from tests.tokens.conftest import (  # noqa: F401
    down_redis_url,
    redis_server,
    redis_url,
    silent_redis_url,
)
from tests.tokens.test_attacks import _exposure

SECRET = "Sé cret/&=+%~x-0123456789abcdef"
TOKEN = "24.deadbeefcafe0123456789abcdef.2592000.1.1-1"
CODE = "code-abcdefghij@0123456789"
PASSWORD = "redis-pass-final-7c1d"
COMMAND = [sys.executable, "-m", "baidu_swan_auth.cli", "exchange"]


def _forms(value: str) -> set[str]:
    return {value, quote_plus(value), quote(value, safe=""), quote(value)}


def _messages(error: BaseException) -> str:
    """str, repr and attributes of ``error`` and its whole chain (no frame locals: a code is a
    local of the caller's frames by design)."""
    parts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), repr(getattr(current, "__dict__", {}))]
        pending += [current.__cause__, current.__context__]
    return "\n".join(parts)


def _assert_nothing_secret(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    everything = _exposure(error) + "\n" + caplog.text
    for value in (SECRET, TOKEN):
        for form in _forms(value):
            assert form not in everything, f"{value[:6]}... shows"
    for form in _forms(CODE):
        assert form not in _messages(error), "the code shows in a message"


# ------------------------------------------------------------------------- hostile servers


async def _raw_server(mode: str) -> asyncio.Server:
    """A server that answers the token API normally and misbehaves on every other path."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        path = head.split(b" ")[1]
        if path == TOKEN_PATH.encode():
            answer = json.dumps({"access_token": TOKEN, "expires_in": 2592000}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )
        elif mode == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        elif mode == "not-http":
            writer.write(b"XYZ " + head + body + b"\r\n\r\n")
        elif mode == "header-name":
            writer.write(b"HTTP/1.1 200 OK\r\nX-A" + body + b": 1\r\nContent-Length: 2\r\n\r\n{}")
        elif mode == "status-line":
            writer.write(b"HTTP/1.1 500 " + body + b"\r\nContent-Length: 2\r\n\r\n{}")
        elif mode == "bad-chunk":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz" + body)
        try:
            await writer.drain()
            writer.close()
        except ConnectionError:
            pass

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["reset", "not-http", "header-name", "status-line", "bad-chunk"])
@pytest.mark.parametrize("call", ["exchange", "unionid"])
async def test_a_raw_hostile_rest_endpoint_is_typed_and_shows_no_token_or_secret(
    mode: str, call: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    server = await _raw_server(mode)
    url = f"http://127.0.0.1:{_port(server)}"
    try:
        async with SwanAuthClient(
            "appkey-1", SECRET, api="getsessionkey", openapi_url=url, timeout=3, max_attempts=2
        ) as client:
            with pytest.raises(SwanAuthError) as caught:
                async with asyncio.timeout(15):
                    await (client.exchange(CODE) if call == "exchange" else client.unionid(CODE))
    finally:
        server.close()
    _assert_nothing_secret(caught.value, caplog)


@pytest.mark.asyncio
async def test_a_reset_on_accept_at_the_token_api_shows_no_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{_port(server)}"
    try:
        async with SwanAuthClient(
            "appkey-1", SECRET, api="getsessionkey", openapi_url=url, timeout=3, max_attempts=3
        ) as client:
            for call in (client.access_token, lambda: client.exchange(CODE)):
                with pytest.raises(SwanAuthError) as caught:
                    async with asyncio.timeout(15):
                        await call()
                _assert_nothing_secret(caught.value, caplog)
    finally:
        server.close()


class _Echo:
    """An aiohttp Baidu whose ``mode[path]`` answer echoes the request everywhere it can."""

    def __init__(self) -> None:
        self.mode: dict[str, str] = {}
        self.url = ""
        self.stolen = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        text = (await request.read()).decode()
        mode = self.mode.get(request.path, "ok")
        if request.path == "/steal":
            self.stolen += 1
            return web.json_response({"access_token": TOKEN, "expires_in": 2592000})
        if mode == "ok":
            if request.path == TOKEN_PATH:
                return web.json_response({"access_token": TOKEN, "expires_in": 2592000})
            if request.path == GETSESSIONKEY_PATH:
                data = {"open_id": "o-1", "session_key": "sk-0123456789abcdef"}
                return web.json_response({"errno": 0, "data": data})
            return web.json_response({"errno": 0, "data": {"unionid": "u-1"}})
        if mode == "reason-and-headers":
            return web.Response(
                status=503,
                reason=text[:200],
                headers={"X-Echo": text, "Retry-After": "9" * 60},
                text=text,
            )
        if mode == "cookies":
            answer = web.json_response({"error": "x", "error_description": text}, status=400)
            for index in range(60):
                answer.set_cookie(f"c{index}", quote(text)[:100])
            return answer
        if mode == "big-header":
            return web.Response(status=200, headers={"X-Big": "a" * 65536}, text="{}")
        if mode.startswith("redirect"):
            location = f"{self.url}/steal?{text}"
            return web.Response(status=int(mode[8:]), headers={"Location": location})
        if mode == "gateway-100":
            return web.json_response({"error_code": 100, "error_msg": "bad param " + text})
        return web.json_response(
            {"errno": 7, "errmsg": text, "error_msg": text, "msg": text, "data": {"x": text}}
        )


@pytest.fixture
async def echo() -> AsyncIterator[_Echo]:
    server = _Echo()
    app = web.Application()
    for path in (TOKEN_PATH, GETSESSIONKEY_PATH, GETUNIONID_PATH, "/steal"):
        app.router.add_route("*", path, server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "mode",
    [
        "reason-and-headers",
        "cookies",
        "big-header",
        "redirect301",
        "redirect307",
        "redirect308",
        "gateway-100",
        "errno-echo",
    ],
)
@pytest.mark.parametrize("path", [TOKEN_PATH, GETSESSIONKEY_PATH, GETUNIONID_PATH])
async def test_an_echoing_openapi_is_typed_never_followed_and_shows_no_secret(
    echo: _Echo, mode: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    echo.mode[path] = mode
    async with SwanAuthClient(
        "appkey-1", SECRET, api="getsessionkey", openapi_url=echo.url, timeout=3, max_attempts=2
    ) as client:
        call = client.unionid if path == GETUNIONID_PATH else client.exchange
        with pytest.raises(SwanAuthError) as caught:
            await asyncio.wait_for(call(CODE), 15)
    assert echo.stolen == 0, "a redirect was followed"
    if mode.startswith("redirect"):
        assert type(caught.value) is ResponseError
    _assert_nothing_secret(caught.value, caplog)


# ------------------------------------------------------------------------- careless callers


class _TimeoutTurnsBad(MemoryTokenStore):
    """A store whose ``timeout`` is fine when the client is built, then raises (a setting
    reloaded from a configuration service that is down)."""

    def __init__(self) -> None:
        self._reads = 0
        super().__init__()

    @property  # type: ignore[override]
    def timeout(self) -> float:
        self._reads += 1
        if self._reads > 1:
            raise RuntimeError("configuration service down")
        return 1.0

    @timeout.setter
    def timeout(self, value: float) -> None:
        pass


@pytest.mark.asyncio
@pytest.mark.parametrize("junk", ["raises", None, "3"])
async def test_break_a_store_timeout_gone_bad_after_construction_fails_the_call_untyped(
    fake: FakeBaiduServer, junk: object
) -> None:
    """The docs: "takes any exception from the store as an outage ... a store never makes a
    call fail". ``TokenSource._obtain`` reads ``store.timeout`` again on every renewal, outside
    any guard: a ``timeout`` that raises, or became ``None`` or a str, escapes as a bare
    ``RuntimeError`` / ``TypeError`` out of ``exchange()``."""
    store: MemoryTokenStore = _TimeoutTurnsBad() if junk == "raises" else MemoryTokenStore()
    async with SwanAuthClient(
        fake.client_id,
        fake.secret,
        endpoint=fake.url,
        api="getsessionkey",
        openapi_url=fake.openapi_url,
        token_store=store,
        timeout=3,
    ) as client:
        if junk != "raises":
            store.timeout = junk  # type: ignore[assignment]
        async with asyncio.timeout(15):
            key = await client.exchange(fake.issue_code(openid="user-1"))
    assert key.openid == "user-1"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "value",
    [float("nan"), b"openid", None, 5, "\ud800x", "a" * 100_000, "a\x00b", "é" * 600],
)
async def test_unionid_and_v2_exchange_refuse_junk_before_any_request(
    fake: FakeBaiduServer, value: object
) -> None:
    async with SwanAuthClient(
        fake.client_id,
        fake.secret,
        endpoint=fake.url,
        api="getsessionkey",
        openapi_url=fake.openapi_url,
    ) as client:
        for call in (client.unionid, client.exchange):
            with pytest.raises(SwanAuthError):
                async with asyncio.timeout(5):
                    await call(value)  # type: ignore[arg-type]
        for settings in ({"timeout": float("nan")}, {"max_attempts": True}):
            with pytest.raises(SwanAuthError):
                await client.unionid("openid-1", **settings)  # type: ignore[arg-type]
    assert fake.requests == []


# ------------------------------------------------------------------------- the command line


def _env(fake: FakeBaiduServer, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BAIDU_SWAN_")}
    env.update(
        BAIDU_SWAN_CLIENT_ID=fake.client_id,
        BAIDU_SWAN_SECRET=fake.secret,
        BAIDU_SWAN_ENDPOINT=fake.url,
        BAIDU_SWAN_API="getsessionkey",
        BAIDU_SWAN_OPENAPI_URL=fake.openapi_url,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _run(
    fake: FakeBaiduServer, *args: str, env: dict[str, str], timeout: float = 40
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*COMMAND, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    shown = result.stdout + result.stderr
    assert fake.secret not in shown
    assert PASSWORD not in shown
    assert "Traceback" not in shown, shown
    for token in fake.tokens_issued:
        assert token not in shown
    return result


@pytest.mark.parametrize("state", ["down", "silent"])
def test_a_v2_job_with_a_dead_redis_and_verbose_logging_finishes_quietly(
    fake_baidu: FakeBaiduServer,
    tmp_path: Path,
    state: str,
    down_redis_url: str,  # noqa: F811
    silent_redis_url: str,  # noqa: F811
) -> None:
    base = down_redis_url if state == "down" else silent_redis_url
    url = base.replace("redis://", f"redis://fleet:{PASSWORD}@")
    source = tmp_path / "codes.txt"
    source.write_text("".join(f"{fake_baidu.issue_code()}\n" for _ in range(5)))
    output = tmp_path / "records.jsonl"
    result = _run(
        fake_baidu,
        str(source),
        "-o",
        str(output),
        "-v",
        "--no-progress",
        env=_env(fake_baidu, BAIDU_SWAN_REDIS_URL=url),
    )
    assert result.returncode == 0, result.stderr
    assert "5 ok, 0 failed" in result.stderr
    assert fake_baidu.token_fetches == 1
    assert "fleet:" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url",
    [
        f"redis://fleet:{PASSWORD}@127.0.0.1:99999/0",
        f"redis://fleet:{PASSWORD}@127.0.0.1:0/0",
        f"redis://fleet:{PASSWORD}@127.0.0.1:6379/{PASSWORD}",
        f"redis://fleet:{PASSWORD}@[::1/0",
        f"redis://fleet:{PASSWORD}@127.0.0.1:1/0?max_connections=0",
        f"rediss://fleet:{PASSWORD}@127.0.0.1:1/0?ssl_cert_reqs={PASSWORD}",
        f"unix:///nonexistent/{PASSWORD}.sock?password={PASSWORD}",
    ],
)
def test_an_odd_redis_url_with_a_password_is_refused_or_an_outage_never_shown(
    fake_baidu: FakeBaiduServer, tmp_path: Path, url: str
) -> None:
    source = tmp_path / "codes.txt"
    source.write_text(f"{fake_baidu.issue_code()}\n")
    result = _run(
        fake_baidu,
        str(source),
        "-o",
        str(tmp_path / "records.jsonl"),
        "--no-progress",
        env=_env(fake_baidu, BAIDU_SWAN_REDIS_URL=url),
    )
    assert result.returncode in (0, 2), result.stderr
    assert len(result.stderr.splitlines()) <= 3, result.stderr


def _redis_with_password(tmp: Path) -> Iterator[int]:
    from tests.tokens.conftest import _free_port, _redis_server_binary  # noqa: PLC0415

    port = _free_port()
    process = subprocess.Popen(
        [
            _redis_server_binary(),
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)),
            *("--requirepass", "right-" + PASSWORD),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_v2_job_with_the_wrong_redis_password_costs_one_warning(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    for port in _redis_with_password(tmp_path):
        url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
        source = tmp_path / "codes.txt"
        source.write_text("".join(f"{fake_baidu.issue_code()}\n" for _ in range(3)))
        result = _run(
            fake_baidu,
            str(source),
            "-o",
            str(tmp_path / "records.jsonl"),
            "--no-progress",
            env=_env(fake_baidu, BAIDU_SWAN_REDIS_URL=url),
        )
        assert result.returncode == 0, result.stderr
        assert "3 ok, 0 failed" in result.stderr
        warnings = [line for line in result.stderr.splitlines() if "warning" in line]
        assert len(warnings) == 1, result.stderr
        assert "right-" not in result.stderr


def test_a_v2_job_from_a_fifo_with_hostile_lines_writes_a_record_each(
    fake_baidu: FakeBaiduServer, tmp_path: Path
) -> None:
    fifo = tmp_path / "codes.fifo"
    os.mkfifo(fifo)
    good = [fake_baidu.issue_code() for _ in range(3)]
    lines = [
        json.dumps({"code": good[0]}),
        json.dumps({"code": good[1], "n": 1e308}),
        "[" * 200_000 + "]" * 200_000,
        '{"code": "\\ud800"}',
        '{"code": NaN}',
        json.dumps({"code": "x" * 5000}),
        '{"code": ' + "1" * 5000 + "}",
        json.dumps({"code": good[2], "extra": {"deep": [[[[[[]]]]]]}}),
    ]
    payload = ("\n".join(lines) + "\n").encode()

    def feed() -> None:
        with open(fifo, "wb") as writer:  # blocks until the command opens it
            writer.write(payload)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    output = tmp_path / "records.jsonl"
    result = _run(fake_baidu, str(fifo), "-o", str(output), "--no-progress", env=_env(fake_baidu))
    feeder.join(5)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == len(lines), result.stderr
    ok = [record for record in records if record.get("session_key")]
    assert sorted(record["code"] for record in ok) == sorted(good)
    assert result.returncode == 1, result.stderr
    for record in records:
        assert not any(token in json.dumps(record) for token in fake_baidu.tokens_issued)


@pytest.mark.parametrize("status", [301, 307, 308])
def test_a_v2_job_whose_token_api_redirects_never_follows_and_never_prints_secrets(
    fake_baidu: FakeBaiduServer, tmp_path: Path, status: int
) -> None:
    hits: list[str] = []
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def steal(request: web.Request) -> web.Response:
        hits.append((await request.read()).decode())
        return web.json_response({"access_token": TOKEN, "expires_in": 2592000})

    async def redirect(request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        location = f"{holder['url']}/steal?{body}"
        return web.Response(status=status, headers={"Location": location}, text=body)

    def serve() -> None:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        app = web.Application()
        app.router.add_route("*", "/steal", steal)
        app.router.add_route("*", TOKEN_PATH, redirect)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        holder["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
        holder["runner"] = runner
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        source = tmp_path / "codes.txt"
        source.write_text(f"{fake_baidu.issue_code()}\n")
        output = tmp_path / "records.jsonl"
        result = _run(
            fake_baidu,
            str(source),
            "-o",
            str(output),
            "--no-progress",
            env=_env(fake_baidu, BAIDU_SWAN_OPENAPI_URL=holder["url"]),
        )
    finally:
        holder["loop"].call_soon_threadsafe(holder["loop"].stop)
        thread.join(10)
    assert hits == []
    assert result.returncode == 1, result.stderr
    assert SECRET not in output.read_text()
    assert fake_baidu.secret not in output.read_text()


# ------------------------------------------------------------------------- OpenTelemetry


@pytest.mark.asyncio
@pytest.mark.parametrize("call", ["access_token", "v1-exchange", "v2-exchange"])
async def test_excluding_baidus_hosts_keeps_the_aiohttp_client_instrumentation_off_the_secrets(
    call: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``opentelemetry-instrumentation-aiohttp-client``, hooked into the SDK's own session,
    records aiohttp's exception as a span event; an answer whose first line echoes the form body
    makes aiohttp quote it, AppSecret (token fetch, v1) or access token (v2) included. The SDK
    cannot reach into that library's events: docs/how-to/observability.md and docs/security.md
    tell the user to exclude Baidu's hosts from it (the SDK's own spans cover those calls), and
    this checks that the exclusion keeps both out of everything exported."""
    monkeypatch.setenv("OTEL_PYTHON_AIOHTTP_CLIENT_EXCLUDED_URLS", "127.0.0.1")
    from opentelemetry.instrumentation.aiohttp_client import (  # noqa: PLC0415
        AioHttpClientInstrumentor,
    )

    from tests.otel.telemetry import Telemetry, instrument  # noqa: PLC0415

    async def echo_body_as_status_line(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
        if head.split(b" ")[1] == TOKEN_PATH.encode() and call == "v2-exchange":
            answer = json.dumps({"access_token": TOKEN, "expires_in": 2592000}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                % (len(answer), answer)
            )
        else:
            writer.write(body + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    telemetry = Telemetry()
    ours = instrument(telemetry)
    theirs = AioHttpClientInstrumentor()
    theirs.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    server = await asyncio.start_server(echo_body_as_status_line, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{_port(server)}"
    secret = "Secret-0123456789abcdefXYZ"
    try:
        api = "jscode2sessionkey" if call == "v1-exchange" else "getsessionkey"
        async with SwanAuthClient(
            "appkey-1", secret, api=api, openapi_url=url, endpoint=url + "/x", max_attempts=1
        ) as client:
            attempt = client.access_token() if call == "access_token" else client.exchange(CODE)
            with pytest.raises(SwanAuthError):
                await asyncio.wait_for(attempt, 10)
    finally:
        server.close()
        theirs.uninstrument()
        ours.uninstrument()
    telemetry.assert_hides(secret, TOKEN)
    names = {span.name for span in telemetry.finished()}
    assert names <= {"baidu_swan_auth exchange", "baidu_swan_auth token"}, names
    assert names, "the SDK's own span still records the call"
