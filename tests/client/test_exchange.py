"""The exchange itself over real HTTP: results, errors, inputs and configuration."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

import baidu_swan_auth
from baidu_swan_auth import (
    DEFAULT_ENDPOINT,
    ApiError,
    ClientClosedError,
    ConfigurationError,
    ExchangeTimeoutError,
    InvalidClientError,
    InvalidCodeError,
    InvalidInputError,
    ResponseError,
    SessionKey,
    SwanAuthClient,
    SwanAuthError,
    TransportError,
)
from baidu_swan_auth.testing import (
    Delay,
    ErrnoBody,
    ErrorStatus,
    FakeBaiduServer,
    HugeBody,
    RawBody,
    Redirect,
)

from ..helpers import MakeClient, socket_port


async def test_exchange_returns_the_grant(fake: FakeBaiduServer, client: SwanAuthClient) -> None:
    code = fake.issue_code(openid="user-1")

    key = await client.exchange(code)

    grant = fake.grant_for(code)
    assert key == SessionKey(openid="user-1", session_key=grant.session_key)
    assert fake.is_spent(code)


async def test_request_shape(fake: FakeBaiduServer, client: SwanAuthClient) -> None:
    code = fake.issue_code()
    await client.exchange(code)

    (request,) = fake.requests
    assert request.method == "POST"
    assert request.query_string == ""
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    assert request.form == {"client_id": fake.client_id, "sk": fake.secret, "code": code}


def test_default_endpoint() -> None:
    assert DEFAULT_ENDPOINT == "https://spapi.baidu.com/oauth/jscode2sessionkey"


def test_session_key_stays_out_of_repr() -> None:
    key = SessionKey(openid="o", session_key="very-secret-session-key")
    assert "very-secret-session-key" not in repr(key)
    assert "openid='o'" in repr(key)
    with pytest.raises(AttributeError):
        key.openid = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "code",
    ["a@b", "a&b=c", "a+b c", "100%", "/?#[]", "码-ü-🙂", "x" * 1024, "@" * 16],
)
async def test_codes_travel_byte_for_byte(
    fake: FakeBaiduServer, client: SwanAuthClient, code: str
) -> None:
    fake.issue_code(code=code, openid="byte-for-byte")
    key = await client.exchange(code)
    assert key.openid == "byte-for-byte"
    assert fake.requests[-1].form["code"] == code


async def test_open_source_codes(fake: FakeBaiduServer, client: SwanAuthClient) -> None:
    code = fake.issue_code(open_source=True)
    assert "@" in code
    assert (await client.exchange(code)).openid == fake.grant_for(code).openid


@pytest.mark.parametrize(
    "code",
    ["", "x" * 1025, "é" * 513, "a\nb", "a\x00b", "tab\tcode", "del\x7f", "c1\x85", "\ud800"],
)
async def test_bad_codes_fail_before_any_request(
    fake: FakeBaiduServer, client: SwanAuthClient, code: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await client.exchange(code)
    assert isinstance(caught.value, ValueError)
    assert caught.value.attempts == 0
    assert fake.requests == []


@pytest.mark.parametrize("code", [None, b"bytes-code", 12345])
async def test_non_string_codes(
    fake: FakeBaiduServer, client: SwanAuthClient, code: object
) -> None:
    with pytest.raises(InvalidInputError):
        await client.exchange(code)  # type: ignore[arg-type]
    assert fake.requests == []


async def test_used_code_is_invalid_code_error(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    await client.exchange(code)

    with pytest.raises(InvalidCodeError) as caught:
        await client.exchange(code)

    error = caught.value
    assert type(error) is InvalidCodeError
    assert error.error == "invalid_grant"
    assert error.status == 400
    assert error.attempts == 1
    assert error.description
    assert len(fake.requests_for(code)) == 2


async def test_wrong_secret_is_invalid_client(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(secret="not-the-secret")
    with pytest.raises(InvalidClientError) as caught:
        await client.exchange(fake.issue_code())
    assert caught.value.error == "invalid_client"
    assert caught.value.attempts == 1


@pytest.mark.parametrize("status", [200, 400, 403])
async def test_unknown_error_strings_are_kept(
    fake: FakeBaiduServer, client: SwanAuthClient, status: int
) -> None:
    code = fake.issue_code()
    fake.script(code, ErrorStatus(status, error="brand_new_error", description="something new"))

    with pytest.raises(ApiError) as caught:
        await client.exchange(code)

    error = caught.value
    assert type(error) is ApiError
    assert (error.error, error.description, error.status) == (
        "brand_new_error",
        "something new",
        status,
    )
    assert len(fake.requests) == 1


@pytest.mark.parametrize(("key", "msg_key"), [("errno", "errmsg"), ("error_code", "error_msg")])
async def test_numeric_errno_is_an_api_error(
    fake: FakeBaiduServer, client: SwanAuthClient, key: str, msg_key: str
) -> None:
    code = fake.issue_code()
    fake.script(code, ErrnoBody(40001, "bad app", key=key))

    with pytest.raises(ApiError) as caught:
        await client.exchange(code)

    assert caught.value.errno == 40001
    assert caught.value.error == "40001"
    assert caught.value.description == "bad app"
    assert len(fake.requests) == 1


@pytest.mark.parametrize(("status", "key"), [(200, "errno"), (400, "errno"), (400, "error_code")])
async def test_an_error_body_with_both_errno_and_error_keeps_both(
    fake: FakeBaiduServer, client: SwanAuthClient, status: int, key: str
) -> None:
    # Seen from Baidu's gateway: a numeric errno beside an OAuth-style error string.
    body = {
        key: 10010100,
        "error": "parameter is invalid",
        "error_description": "Key: 'Code2SessionKeyParam.ClientID' Error:Field validation",
    }
    code = fake.issue_code()
    fake.script(code, RawBody(json.dumps(body).encode(), status=status))

    with pytest.raises(ApiError) as caught:
        await client.exchange(code)

    assert caught.value.errno == 10010100
    assert caught.value.error == "parameter is invalid"
    assert caught.value.description == body["error_description"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"<html>gateway says hi</html>", 200),
        (b"not json at all", 200),
        (b"[1, 2, 3]", 200),
        (b'{"openid": "o"}', 200),
        (b'{"openid": "", "session_key": "k"}', 200),
        (b'{"openid": 1, "session_key": "k"}', 200),
        (b'{"error": ["list"]}', 400),
        (b"\xff\xfe\x00garbage", 200),
        (b"<html>not found</html>", 404),
        (b'{"unexpected": true}', 401),
        (b"", 200),
    ],
)
async def test_malformed_answers_are_response_errors(
    fake: FakeBaiduServer, client: SwanAuthClient, body: bytes, status: int
) -> None:
    code = fake.issue_code()
    fake.script(code, RawBody(body, status=status))

    with pytest.raises(ResponseError) as caught:
        await client.exchange(code)

    assert caught.value.status == status
    assert len(fake.requests) == 1, "malformed answers are final, never retried"


@pytest.mark.parametrize("chunked", [False, True])
async def test_huge_bodies_are_refused_unread(
    fake: FakeBaiduServer, client: SwanAuthClient, chunked: bool
) -> None:
    code = fake.issue_code()
    fake.script(code, HugeBody(8 * 2**20, chunked=chunked))

    with pytest.raises(ResponseError, match="larger than"):
        await client.exchange(code)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_never_followed(
    fake: FakeBaiduServer, client: SwanAuthClient, status: int
) -> None:
    code = fake.issue_code()
    fake.script(code, Redirect(status))

    with pytest.raises(ResponseError, match="redirect") as caught:
        await client.exchange(code)

    assert caught.value.status == status
    assert [request.path for request in fake.requests] == ["/oauth/jscode2sessionkey"]


async def test_deadline_is_an_exchange_timeout(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(timeout=0.3, read_timeout=5.0)
    code = fake.issue_code()
    fake.script(code, Delay(2.0))

    with pytest.raises(ExchangeTimeoutError) as caught:
        await client.exchange(code)

    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, TransportError)
    assert len(fake.requests) == 1


async def test_per_call_timeout_overrides(fake: FakeBaiduServer, client: SwanAuthClient) -> None:
    code = fake.issue_code()
    fake.script(code, Delay(2.0))
    with pytest.raises(ExchangeTimeoutError):
        await client.exchange(code, timeout=0.2)


async def test_connection_refused_is_a_transport_error(make_client: MakeClient) -> None:
    with socket_port() as port:
        client = make_client(endpoint=f"http://127.0.0.1:{port}/oauth", max_attempts=3)
        with pytest.raises(TransportError) as caught:
            await client.exchange("some-code-123456")
    assert type(caught.value) is TransportError
    assert caught.value.attempts == 3
    assert caught.value.status is None


async def test_calls_after_close_fail(fake: FakeBaiduServer, client: SwanAuthClient) -> None:
    await client.exchange(fake.issue_code())
    await client.aclose()
    assert client.closed
    with pytest.raises(ClientClosedError):
        await client.exchange(fake.issue_code())
    await client.aclose()  # idempotent


async def test_borrowed_session_is_used_and_left_open(fake: FakeBaiduServer) -> None:
    traced: list[str] = []

    async def on_start(*_: object) -> None:
        traced.append("request")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        async with SwanAuthClient(
            fake.client_id, fake.secret, endpoint=fake.url, session=session
        ) as client:
            await client.exchange(fake.issue_code())
        assert not session.closed
        assert traced == ["request"]


async def test_trace_configs_pass_through(fake: FakeBaiduServer, make_client: MakeClient) -> None:
    starts: list[str] = []

    async def on_start(
        _session: object, _ctx: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        starts.append(params.method)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    client = make_client(trace_configs=[trace])
    await client.exchange(fake.issue_code())
    assert starts == ["POST"]


async def test_borrowed_session_refuses_session_settings(fake: FakeBaiduServer) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigurationError):
            SwanAuthClient("id", "secret", endpoint=fake.url, session=session, proxy="http://p:1")


def test_client_is_built_outside_a_loop_and_its_session_inside(fake_baidu: FakeBaiduServer) -> None:
    client = SwanAuthClient(fake_baidu.client_id, fake_baidu.secret, endpoint=fake_baidu.url)

    async def use() -> SessionKey:
        async with client:
            return await client.exchange(fake_baidu.issue_code(openid="sync-built"))

    assert asyncio.run(use()).openid == "sync-built"


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://spapi.baidu.com/oauth/jscode2sessionkey",
        "https://gateway.internal:8443/baidu",
        "http://127.0.0.1:8080/x",
        "http://127.3.4.5/x",
        "http://localhost:1/x",
        "http://[::1]:9/x",
    ],
)
def test_accepted_endpoints(endpoint: str) -> None:
    assert str(SwanAuthClient("id", "secret", endpoint=endpoint).endpoint) == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://spapi.baidu.com/oauth/jscode2sessionkey",
        "http://10.0.0.1/x",
        "ftp://example.com/x",
        "spapi.baidu.com/oauth",
        "https://user:pw@example.com/x",
        "https://example.com/x?sk=1",
    ],
)
def test_refused_endpoints(endpoint: str) -> None:
    with pytest.raises(ConfigurationError):
        SwanAuthClient("id", "secret", endpoint=endpoint)


def test_insecure_http_can_be_allowed_explicitly() -> None:
    client = SwanAuthClient(
        "id", "secret", endpoint="http://gateway.internal/x", allow_insecure_http=True
    )
    assert client.endpoint.scheme == "http"


@pytest.mark.parametrize(
    "settings",
    [
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"timeout": 0},
        {"timeout": float("inf")},
        {"pool_size": 0},
        {"read_timeout": -1},
    ],
)
def test_bad_settings_are_configuration_errors(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        SwanAuthClient("id", "secret", **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(("client_id", "secret"), [("", "s"), ("id", ""), ("id", "  ")])
def test_empty_credentials_are_refused(client_id: str, secret: str) -> None:
    with pytest.raises(ConfigurationError):
        SwanAuthClient(client_id, secret)


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAIDU_SWAN_CLIENT_ID", "env-id")
    monkeypatch.setenv("BAIDU_SWAN_SECRET", "env-secret")
    monkeypatch.setenv("BAIDU_SWAN_ENDPOINT", "http://127.0.0.1:9/x")
    client = SwanAuthClient.from_env(max_attempts=2)
    assert client.client_id == "env-id"
    assert str(client.endpoint) == "http://127.0.0.1:9/x"

    monkeypatch.delenv("BAIDU_SWAN_ENDPOINT")
    assert str(SwanAuthClient.from_env().endpoint) == DEFAULT_ENDPOINT


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        (["BAIDU_SWAN_SECRET"], ["BAIDU_SWAN_SECRET"]),
        (["BAIDU_SWAN_CLIENT_ID"], ["BAIDU_SWAN_CLIENT_ID"]),
        (
            ["BAIDU_SWAN_CLIENT_ID", "BAIDU_SWAN_SECRET"],
            ["BAIDU_SWAN_CLIENT_ID", "BAIDU_SWAN_SECRET"],
        ),
    ],
)
def test_from_env_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, missing: list[str], named: list[str]
) -> None:
    monkeypatch.setenv("BAIDU_SWAN_CLIENT_ID", "env-id")
    monkeypatch.setenv("BAIDU_SWAN_SECRET", "env-secret-value")
    for name in missing:
        monkeypatch.delenv(name)
    with pytest.raises(ConfigurationError) as caught:
        SwanAuthClient.from_env()
    for name in named:
        assert name in str(caught.value)
    assert "env-secret-value" not in str(caught.value)


def test_every_error_is_a_swan_auth_error() -> None:
    for name in baidu_swan_auth.__all__:
        value = getattr(baidu_swan_auth, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, SwanAuthError), name


@pytest.mark.parametrize(
    "extra",
    [
        '"error": null',
        '"error": ""',
        '"error": 0',
        '"error": false',
        '"errno": 0',
        '"errno": "0"',
        '"error_code": 0',
        '"error_code": "0"',
        '"errmsg": "ok"',
    ],
)
async def test_benign_error_fields_do_not_spoil_a_good_answer(
    fake: FakeBaiduServer, client: SwanAuthClient, extra: str
) -> None:
    code = fake.issue_code()
    body = f'{{"openid": "benign", "session_key": "k", {extra}}}'.encode()
    fake.script(code, RawBody(body))
    assert (await client.exchange(code)).openid == "benign"


def test_turning_tls_verification_off_needs_saying_so() -> None:
    with pytest.raises(ConfigurationError, match="verification"):
        SwanAuthClient("id", "secret", ssl=False)
    client = SwanAuthClient("id", "secret", ssl=False, allow_insecure_http=True)
    assert client.endpoint.scheme == "https"
