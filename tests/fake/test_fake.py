"""Tests of the fake Baidu endpoint itself, over real HTTP with a raw aiohttp client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import attrs
import pytest

from baidu_swan_auth.testing import (
    DEFAULT_SECRET,
    ENDPOINT_PATH,
    REDIRECT_TARGET_PATH,
    Delay,
    Drop,
    ErrnoBody,
    ErrorStatus,
    FakeBaiduServer,
    Grant,
    HugeBody,
    RawBody,
    RecordedRequest,
    Redirect,
    Truncated,
    UnknownCodeError,
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBaiduServer]:
    async with FakeBaiduServer() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def form(fake: FakeBaiduServer, code: str | None, **overrides: str) -> dict[str, str]:
    fields = {"client_id": fake.client_id, "sk": fake.secret}
    if code is not None:
        fields["code"] = code
    fields.update(overrides)
    return fields


async def post(
    session: aiohttp.ClientSession,
    fake: FakeBaiduServer,
    data: Any,
    **kwargs: Any,
) -> tuple[int, Mapping[str, str], bytes]:
    async with session.post(fake.url, data=data, **kwargs) as response:
        return response.status, response.headers, await response.read()


async def exchange(
    session: aiohttp.ClientSession, fake: FakeBaiduServer, code: str, **kwargs: Any
) -> tuple[int, Any]:
    status, _, body = await post(session, fake, form(fake, code), **kwargs)
    return status, json.loads(body)


# ------------------------------------------------------------------------------ normal handling


async def test_success_then_invalid_grant_on_reuse(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code(openid="user-1")
    assert not fake.is_spent(code)

    status, headers, body = await post(session, fake, form(fake, code))
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    grant = fake.grant_for(code)
    assert json.loads(body) == {"openid": "user-1", "session_key": grant.session_key}
    assert len(grant.session_key) == 32
    assert fake.is_spent(code)

    status, answer = await exchange(session, fake, code)
    assert status == 400
    assert answer["error"] == "invalid_grant"
    assert grant.session_key not in json.dumps(answer)
    assert [request.fault for request in fake.requests_for(code)] == [None, None]


@pytest.mark.parametrize(
    "chosen",
    ["a&b=c@d", "x+y z%20w", "代码-é/?#", "  spaced  ", "=&@%+;"],
)
async def test_codes_round_trip_byte_for_byte(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, chosen: str
) -> None:
    code = fake.issue_code(code=chosen)
    assert code == chosen
    status, answer = await exchange(session, fake, code)
    assert status == 200, answer
    assert answer["openid"] == fake.grant_for(code).openid
    (request,) = fake.requests
    assert request.code == chosen
    assert request.form["code"] == chosen


async def test_open_source_code_contains_at_sign(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code(open_source=True)
    assert "@" in code
    status, _ = await exchange(session, fake, code)
    assert status == 200
    assert b"%40" in fake.requests[0].body


async def test_similar_code_is_not_accepted(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code(code="a b")
    status, answer = await exchange(session, fake, "a+b")
    assert (status, answer["error"]) == (400, "invalid_grant")
    assert not fake.is_spent(code)


@pytest.mark.parametrize("field", ["sk", "client_id"])
async def test_wrong_credentials_give_invalid_client(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, field: str
) -> None:
    code = fake.issue_code()
    status, _, body = await post(session, fake, form(fake, code, **{field: "wrong"}))
    assert status == 401
    assert json.loads(body)["error"] == "invalid_client"
    assert fake.secret.encode() not in body
    assert not fake.is_spent(code)


@pytest.mark.parametrize("missing", ["code", "client_id", "sk"])
async def test_missing_field_gives_invalid_request(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, missing: str
) -> None:
    code = fake.issue_code()
    data = form(fake, code)
    del data[missing]
    status, _, body = await post(session, fake, data)
    assert status == 400
    assert json.loads(body)["error"] == "invalid_request"
    assert not fake.is_spent(code)


async def test_query_string_fields_are_ignored(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    status, _, body = await post(session, fake, None, params=form(fake, code))
    assert status == 400
    assert json.loads(body)["error"] == "invalid_request"
    assert not fake.is_spent(code)
    (request,) = fake.requests
    assert "sk=" in request.query_string
    assert request.code is None


async def test_non_form_body_is_invalid_request(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    async with session.post(fake.url, json=form(fake, code)) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"
    assert not fake.is_spent(code)


async def test_get_is_rejected(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    async with session.get(fake.url, params=form(fake, fake.issue_code())) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert (await response.json())["error"] == "invalid_request"


async def test_unknown_path_is_404_and_recorded(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.always(ErrorStatus(503))  # faults only concern the endpoint
    async with session.post(f"{fake.base_url}/nalogin/getSessionKeyByCode") as response:
        assert response.status == 404
        assert response.content_type == "text/html"
    assert fake.requests[0].path == "/nalogin/getSessionKeyByCode"
    assert fake.requests[0].fault is None


async def test_auto_issue_accepts_new_codes_once(session: aiohttp.ClientSession) -> None:
    async with FakeBaiduServer(auto_issue=True) as fake:
        status, answer = await exchange(session, fake, "invented")
        assert status == 200
        assert answer["openid"] == fake.grant_for("invented").openid
        status, answer = await exchange(session, fake, "invented")
        assert (status, answer["error"]) == (400, "invalid_grant")


def test_code_bookkeeping_errors() -> None:
    fake = FakeBaiduServer()
    code = fake.issue_code(code="mine")
    with pytest.raises(ValueError, match="already issued"):
        fake.issue_code(code=code)
    with pytest.raises(ValueError, match="empty"):
        fake.issue_code(code="")
    with pytest.raises(ValueError, match="@"):
        fake.issue_code(code="plain", open_source=True)
    with pytest.raises(UnknownCodeError):
        fake.grant_for("never-issued")
    with pytest.raises(LookupError):
        fake.is_spent("never-issued")
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.url


# ------------------------------------------------------------------------------ faults


async def test_drop_disconnects_without_spending(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    fake.script(code, Drop())
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, fake, form(fake, code))
    assert not fake.is_spent(code)
    assert await exchange(session, fake, code) == (200, attrs.asdict(fake.grant_for(code)))


async def test_drop_can_spend_the_code(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    fake.script(code, Drop(spend=True))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, fake, form(fake, code))
    assert fake.is_spent(code)
    assert fake.requests_for(code)[0].fault == "Drop"


async def test_drop_with_reset(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    code = fake.issue_code()
    fake.script(code, Drop(reset=True))
    with pytest.raises(aiohttp.ClientOSError):
        await post(session, fake, form(fake, code))


async def test_truncated_body_fails_to_read_and_spends(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    fake.script(code, Truncated())
    async with session.post(fake.url, data=form(fake, code)) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert fake.is_spent(code)


@pytest.mark.parametrize("chunked", [False, True])
async def test_huge_body(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, chunked: bool
) -> None:
    size = 3 * 2**20 + 7
    code = fake.issue_code()
    fake.script(code, HugeBody(size, chunked=chunked))
    async with session.post(fake.url, data=form(fake, code)) as response:
        if chunked:
            assert "Content-Length" not in response.headers
            assert response.headers["Transfer-Encoding"] == "chunked"
        else:
            assert response.content_length == size
        body = await response.read()
    assert len(body) == size
    assert body.startswith(b'{"')
    assert body.endswith(b'"}')
    assert not fake.is_spent(code)


async def test_huge_body_client_hanging_up_early(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.script_next(HugeBody())
    async with session.post(fake.url, data=form(fake, "x")) as response:
        assert len(await response.content.read(10)) == 10
    await fake.wait_idle()


async def test_redirect_not_followed(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    code = fake.issue_code()
    fake.script(code, Redirect())
    status, headers, _ = await post(session, fake, form(fake, code), allow_redirects=False)
    assert status == 307
    assert headers["Location"] == f"http://127.0.0.1:{fake.port}{REDIRECT_TARGET_PATH}"
    assert not fake.is_spent(code)
    assert [request.path for request in fake.requests] == [ENDPOINT_PATH]


async def test_redirect_target_is_recorded_when_followed(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    fake.script(code, Redirect(308))
    status, _ = await exchange(session, fake, code)
    assert status == 200
    assert [request.path for request in fake.requests] == [ENDPOINT_PATH, REDIRECT_TARGET_PATH]
    assert fake.requests[1].form["sk"] == fake.secret  # exactly what a client must not do


async def test_error_status_with_json_body_and_retry_after(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    fake.script(code, ErrorStatus(429, error="slow_down", retry_after="7"))
    status, headers, body = await post(session, fake, form(fake, code))
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert json.loads(body)["error"] == "slow_down"
    assert not fake.is_spent(code)


async def test_error_status_with_gateway_page(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.script_next(ErrorStatus(502, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
    status, headers, body = await post(session, fake, form(fake, fake.issue_code()))
    assert status == 502
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert b"502 Bad Gateway" in body


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (ErrnoBody(110, "invalid"), {"errno": 110, "errmsg": "invalid"}),
        (ErrnoBody(2, "x", key="error_code"), {"error_code": 2, "error_msg": "x"}),
    ],
)
async def test_errno_body(
    fake: FakeBaiduServer,
    session: aiohttp.ClientSession,
    fault: ErrnoBody,
    expected: dict[str, object],
) -> None:
    code = fake.issue_code()
    fake.script(code, fault)
    assert await exchange(session, fake, code) == (200, expected)
    assert not fake.is_spent(code)


async def test_raw_body(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    code = fake.issue_code()
    fake.script(code, RawBody(b"[1, 2]", status=400), RawBody(b"<b>", content_type="text/html"))
    status, headers, body = await post(session, fake, form(fake, code))
    assert (status, body) == (400, b"[1, 2]")
    assert headers["Content-Type"] == "application/json"
    status, headers, body = await post(session, fake, form(fake, code))
    assert (status, headers["Content-Type"], body) == (200, "text/html", b"<b>")
    assert not fake.is_spent(code)


async def test_delay_then_normal(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    code = fake.issue_code()
    fake.script(code, Delay(0.1))
    started = time.monotonic()
    status, _ = await exchange(session, fake, code)
    assert status == 200
    assert time.monotonic() - started >= 0.09


async def test_delayed_request_spends_code_after_client_gave_up(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    fake.script(code, Delay(0.2))
    with pytest.raises(TimeoutError):
        await post(session, fake, form(fake, code), timeout=aiohttp.ClientTimeout(total=0.02))
    assert not fake.is_spent(code)
    assert fake.in_flight == 1
    await fake.wait_idle()
    assert fake.is_spent(code)


async def test_fault_precedence(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    code = fake.issue_code()
    other = fake.issue_code()
    fake.script(code, ErrorStatus(500))
    fake.script_next(ErrorStatus(502))
    fake.always(ErrorStatus(503))

    statuses = []
    for _ in range(2):
        statuses.append((await post(session, fake, form(fake, code)))[0])
    fake.always(None)
    statuses.append((await post(session, fake, form(fake, other)))[0])  # script_next: any code
    statuses.append((await post(session, fake, form(fake, other)))[0])  # code's queue is not used
    statuses.append((await post(session, fake, form(fake, code)))[0])
    statuses.append((await post(session, fake, form(fake, code)))[0])
    assert statuses == [503, 503, 502, 200, 500, 200]
    assert [request.fault for request in fake.requests] == [
        "ErrorStatus",
        "ErrorStatus",
        "ErrorStatus",
        None,
        "ErrorStatus",
        None,
    ]


# ------------------------------------------------------------------------------ observation


async def test_keep_alive_uses_one_connection(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    for _ in range(20):
        await exchange(session, fake, fake.issue_code())
    assert fake.connections_opened == 1
    assert {request.connection for request in fake.requests} == {1}


async def test_force_close_opens_a_connection_per_request(fake: FakeBaiduServer) -> None:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):
            await exchange(session, fake, fake.issue_code())
    assert fake.connections_opened == 20
    assert [request.connection for request in fake.requests] == list(range(1, 21))


async def test_max_in_flight(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    fake.script_next(*[Delay(0.15)] * 5)
    codes = [fake.issue_code() for _ in range(5)]
    results = await asyncio.gather(*(exchange(session, fake, code) for code in codes))
    assert [status for status, _ in results] == [200] * 5
    assert fake.max_in_flight == 5
    assert fake.in_flight == 0
    assert fake.connections_opened == 5

    fake.reset_stats()
    assert (fake.requests, fake.connections_opened, fake.max_in_flight) == ([], 0, 0)


async def test_headers_and_host_are_recorded(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    await post(session, fake, form(fake, "x"), headers={"X-Trace": "abc"})
    (request,) = fake.requests
    assert request.method == "POST"
    assert request.header("x-trace") == request.headers["x-trace"] == "abc"
    assert request.host_header == f"127.0.0.1:{fake.port}"
    assert request.header("content-type") == "application/x-www-form-urlencoded"


async def test_nothing_secret_in_reprs(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    await exchange(session, fake, code)
    grant = fake.grant_for(code)
    texts = [repr(fake), repr(grant), *(repr(request) for request in fake.requests)]
    texts.append(repr(Grant("o", "s3cr3t-session-key")))
    for text in texts:
        assert fake.secret not in text
        assert DEFAULT_SECRET not in text
        assert grant.session_key not in text
        assert "s3cr3t-session-key" not in text
    assert "openid='" in repr(grant)
    assert isinstance(fake.requests[0], RecordedRequest)


async def test_close_is_idempotent_and_cancels_orphaned_delays(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeBaiduServer()
    await fake.start()
    fake.script_next(Delay(30))
    with pytest.raises(TimeoutError):
        await post(session, fake, form(fake, "x"), timeout=aiohttp.ClientTimeout(total=0.05))
    started = time.monotonic()
    await fake.close()
    await fake.close()
    assert time.monotonic() - started < 0.5
    assert fake.in_flight == 0


# ------------------------------------------------------------------------------ threads, plugin


def test_fixture_in_a_sync_test(fake_baidu: FakeBaiduServer) -> None:
    code = fake_baidu.issue_code(openid="sync-user")
    data = urllib.parse.urlencode(form(fake_baidu, code)).encode()
    with urllib.request.urlopen(fake_baidu.url, data=data, timeout=5) as response:
        assert json.loads(response.read())["openid"] == "sync-user"
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(fake_baidu.url, data=data, timeout=5)
    assert raised.value.code == 400
    raised.value.close()
    assert fake_baidu.is_spent(code)


async def test_threaded_fake_from_async_test(
    fake_baidu: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake_baidu.issue_code()
    fake_baidu.script(code, Delay(0.2))
    with pytest.raises(TimeoutError):
        await post(
            session, fake_baidu, form(fake_baidu, code), timeout=aiohttp.ClientTimeout(total=0.02)
        )
    await fake_baidu.wait_idle()
    assert fake_baidu.is_spent(code)


def test_start_failure_is_raised_and_log_can_be_off() -> None:
    with FakeBaiduServer(record_requests=False) as first:
        second = FakeBaiduServer(port=first.port)
        with pytest.raises(OSError, match="address already in use"):
            second.start_in_thread()
        second.stop_thread()
        data = urllib.parse.urlencode(form(first, first.issue_code())).encode()
        with urllib.request.urlopen(first.url, data=data, timeout=5) as response:
            assert response.status == 200
        assert first.requests == []
        assert first.connections_opened == 1


def test_fake_baidu_env(fake_baidu_env: FakeBaiduServer) -> None:
    assert os.environ["BAIDU_SWAN_ENDPOINT"] == fake_baidu_env.url
    assert os.environ["BAIDU_SWAN_CLIENT_ID"] == fake_baidu_env.client_id
    assert os.environ["BAIDU_SWAN_SECRET"] == fake_baidu_env.secret
    assert os.environ["BAIDU_SWAN_OPENAPI_URL"] == fake_baidu_env.openapi_url


def test_sync_context_manager() -> None:
    with FakeBaiduServer(client_id="app", secret="other-secret") as fake:
        code = fake.issue_code()
        data = urllib.parse.urlencode(form(fake, code)).encode()
        with urllib.request.urlopen(fake.url, data=data, timeout=5) as response:
            assert response.status == 200
        with pytest.raises(RuntimeError, match="stop_thread"):
            asyncio.run(fake.close())
    fake.stop_thread()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(fake.url, data=data, timeout=5)


def test_command_line_serves_until_sigterm() -> None:
    env = {**os.environ, "BAIDU_SWAN_SECRET": "from-env"}
    with subprocess.Popen(
        [sys.executable, "-m", "baidu_swan_auth.testing", "--client-id", "cli-app"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert url.endswith(ENDPOINT_PATH)
            fields = {"code": "any", "client_id": "cli-app", "sk": "from-env"}
            data = urllib.parse.urlencode(fields).encode()
            with urllib.request.urlopen(url, data=data, timeout=5) as response:
                assert response.status == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_the_testing_module_never_imports_pytest() -> None:
    # The demo and the benchmarks use the fake outside pytest; only the plugin module may need it.
    probe = (
        "import sys, baidu_swan_auth.testing, baidu_swan_auth.cli; print('pytest' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
