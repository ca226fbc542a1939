"""The legacy shim, over real HTTP against the fake Baidu."""

from __future__ import annotations

import socket
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st

from baidu_swan_auth import (
    DEFAULT_ENDPOINT,
    InvalidCodeError,
    SwanAuthClient,
    UsageError,
    _endpoints,
)
from baidu_swan_auth.legacy import (
    LEGACY_ENDPOINT,
    LegacyRedirectRefusedError,
    LegacyRequestNotResentError,
    get_session_key_by_code,
    legacy_rewrite_middleware,
    rewrite_legacy_url,
)
from baidu_swan_auth.testing import Arbitrary, Drop, FakeBaiduServer, Redirect

from ..helpers import traceback_frames

LEGACY = "getSessionKeyByCode"  # every deprecation warning of the shim names it
LEGACY_VARIANTS = [
    "https://openapi.baidu.com/nalogin/getSessionKeyByCode",
    "http://openapi.baidu.com/nalogin/getSessionKeyByCode",
    "https://OpenAPI.Baidu.COM/nalogin/getSessionKeyByCode/",
    "https://openapi.baidu.com:443/nalogin/getSessionKeyByCode",
    "http://openapi.baidu.com:80/nalogin/getSessionKeyByCode/",
]


@pytest.fixture(autouse=True)
def _fresh_warning(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts as a new process would: the once-per-process warning not yet given."""
    monkeypatch.setattr(_endpoints, "_legacy_warning", _endpoints._OncePerProcess())
    with warnings.catch_warnings():
        warnings.simplefilter("always", DeprecationWarning)
        yield


class RecordingResolver(AbstractResolver):
    """Records every host aiohttp asks about, and refuses all of them: no test reaches the
    internet, and a lookup of Baidu's legacy host shows up here."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.hosts.append(host)
        raise OSError(f"the tests resolve no names ({host})")

    async def close(self) -> None:
        return None


@pytest.fixture
async def resolver() -> RecordingResolver:
    return RecordingResolver()


@pytest.fixture
async def session(
    fake: FakeBaiduServer, resolver: RecordingResolver
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(resolver=resolver)
    async with aiohttp.ClientSession(
        connector=connector, middlewares=[legacy_rewrite_middleware(fake.url)]
    ) as client_session:
        yield client_session


def _fields(fake: FakeBaiduServer, code: str) -> dict[str, str]:
    return {"code": code, "client_id": fake.client_id, "sk": fake.secret}


async def _json(response: aiohttp.ClientResponse) -> Any:
    return await response.json()


@pytest.mark.parametrize("legacy", LEGACY_VARIANTS)
async def test_get_with_fields_in_the_query_arrives_as_a_form_post(
    fake: FakeBaiduServer,
    session: aiohttp.ClientSession,
    resolver: RecordingResolver,
    legacy: str,
) -> None:
    code = fake.issue_code(code="old@caller&code=x", openid="legacy-get")
    with pytest.warns(DeprecationWarning, match=LEGACY):
        async with session.get(legacy, params=_fields(fake, code)) as response:
            assert (await _json(response))["openid"] == "legacy-get"

    (request,) = fake.requests
    assert request.method == "POST"
    assert request.path == "/oauth/jscode2sessionkey"
    # Nothing the caller gets back carries the old URL's query, and with it the secret.
    assert fake.secret not in str(response.url)
    assert fake.secret not in str(response.request_info.real_url)
    assert request.query_string == ""
    assert request.form == _fields(fake, code)
    assert request.host_header == yarl.URL(fake.url).host_port_subcomponent
    assert resolver.hosts == [], "the legacy host is never looked up"


async def test_post_with_fields_in_the_body(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, resolver: RecordingResolver
) -> None:
    code = fake.issue_code(open_source=True)
    with pytest.warns(DeprecationWarning, match=LEGACY):
        async with session.post(LEGACY_ENDPOINT, data=_fields(fake, code)) as response:
            assert response.status == 200
    (request,) = fake.requests
    assert (request.method, request.query_string) == ("POST", "")
    assert request.form == _fields(fake, code)
    assert resolver.hosts == []


@pytest.mark.parametrize(
    ("in_query", "in_body"),
    [
        (("sk",), ("code", "client_id")),
        (("code", "sk"), ("client_id",)),
        (("code", "client_id", "sk"), ()),
    ],
)
async def test_post_with_fields_split_between_query_and_body(
    fake: FakeBaiduServer,
    session: aiohttp.ClientSession,
    in_query: tuple[str, ...],
    in_body: tuple[str, ...],
) -> None:
    code = fake.issue_code(code="split@code=1&2")
    fields = _fields(fake, code)
    query = {key: fields[key] for key in in_query}
    body = {key: fields[key] for key in in_body}
    with pytest.warns(DeprecationWarning, match=LEGACY):
        async with session.post(LEGACY_ENDPOINT, params=query, data=body or None) as response:
            assert response.status == 200
    (request,) = fake.requests
    assert (request.method, request.query_string) == ("POST", "")
    assert request.form == fields


async def test_fields_already_in_the_body_win(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    with pytest.warns(DeprecationWarning, match=LEGACY):
        async with session.post(
            LEGACY_ENDPOINT,
            params={"code": "stale-code-from-query"},
            data=_fields(fake, code),
        ) as response:
            assert response.status == 200
    assert fake.requests[0].form["code"] == code


async def test_other_query_parameters_stay(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code()
    with pytest.warns(DeprecationWarning, match=LEGACY):
        async with session.get(LEGACY_ENDPOINT, params={**_fields(fake, code), "trace": "1"}):
            pass
    assert fake.requests[0].query_string == "trace=1"
    assert "sk" not in fake.requests[0].query_string


async def test_other_urls_are_untouched(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    other = f"{fake.base_url}/elsewhere"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with session.get(other, params={"code": "x", "sk": "y"}) as response:
            await response.read()
    (request,) = fake.requests
    assert (request.method, request.path, request.query_string) == (
        "GET",
        "/elsewhere",
        "code=x&sk=y",
    )


async def test_a_rewritten_request_is_never_sent_twice(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    # aiohttp re-sends a GET after a dropped connection, and would re-send this one, now a POST
    # carrying a single-use code, behind the caller's back.
    code = fake.issue_code()
    fake.script(code, Drop(spend=True))
    with (
        pytest.warns(DeprecationWarning, match=LEGACY),
        pytest.raises(LegacyRequestNotResentError) as caught,
    ):
        async with session.get(LEGACY_ENDPOINT, params=_fields(fake, code)):
            pass
    assert isinstance(caught.value, aiohttp.ClientConnectionError)
    assert isinstance(caught.value.__cause__, aiohttp.ServerDisconnectedError)
    assert len(fake.requests_for(code)) == 1


async def test_the_warning_comes_once(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            code = fake.issue_code()
            async with session.get(LEGACY_ENDPOINT, params=_fields(fake, code)) as response:
                assert response.status == 200
        SwanAuthClient("id", "secret", endpoint=LEGACY_ENDPOINT)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1
    text = str(deprecations[0].message)
    assert "openapi.baidu.com/nalogin/getSessionKeyByCode" in text
    assert fake.secret not in text
    assert "?" not in text.split(maxsplit=1)[0]
    logged = [r for r in caplog.records if "legacy endpoint" in r.getMessage()]
    assert len(logged) == 1
    assert fake.secret not in caplog.text


async def test_a_non_form_body_with_query_fields_is_refused(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    with pytest.warns(DeprecationWarning, match=LEGACY), pytest.raises(UsageError):
        async with session.post(LEGACY_ENDPOINT, params={"sk": fake.secret}, json={"code": "c"}):
            pass
    assert fake.requests == []


def test_the_middleware_refuses_an_insecure_endpoint() -> None:
    with pytest.raises(ValueError, match="clear text"):
        legacy_rewrite_middleware("http://gateway.example/x")


async def test_drop_in_function(fake: FakeBaiduServer) -> None:
    code = fake.issue_code(openid="drop-in")
    with pytest.warns(DeprecationWarning, match="SwanAuthClient"):
        answer = await get_session_key_by_code(code, fake.client_id, fake.secret, endpoint=fake.url)
    assert answer == {"openid": "drop-in", "session_key": fake.grant_for(code).session_key}

    with pytest.warns(DeprecationWarning, match="SwanAuthClient"), pytest.raises(InvalidCodeError):
        await get_session_key_by_code(code, fake.client_id, fake.secret, endpoint=fake.url)


async def test_the_drop_in_function_keeps_the_secret_out_of_its_frame(
    fake: FakeBaiduServer,
) -> None:
    # Its frame is in the traceback of every failed call, and error trackers record its locals.
    with (
        pytest.warns(DeprecationWarning, match="SwanAuthClient"),
        pytest.raises(InvalidCodeError) as caught,
    ):
        await get_session_key_by_code(
            "never-issued", fake.client_id, fake.secret, endpoint=fake.url
        )
    frames = [
        (function, local)
        for filename, function, local in traceback_frames(caught.value)
        if filename.endswith("baidu_swan_auth/legacy.py")
    ]
    assert [function for function, _ in frames] == ["get_session_key_by_code"]
    for _, local in frames:
        assert not any(fake.secret in repr(value) for value in local.values()), list(local)


async def test_drop_in_function_with_a_session(fake: FakeBaiduServer) -> None:
    async with aiohttp.ClientSession() as own:
        with pytest.warns(DeprecationWarning, match="SwanAuthClient"):
            answer = await get_session_key_by_code(
                fake.issue_code(), fake.client_id, fake.secret, endpoint=fake.url, session=own
            )
        assert not own.closed
    assert set(answer) == {"openid", "session_key"}


@pytest.mark.parametrize("legacy", LEGACY_VARIANTS)
def test_a_legacy_configuration_value_gets_the_new_endpoint(legacy: str) -> None:
    with pytest.warns(DeprecationWarning, match="getSessionKeyByCode"):
        client = SwanAuthClient("id", "secret", endpoint=legacy)
    assert str(client.endpoint) == DEFAULT_ENDPOINT


def test_the_legacy_warning_points_at_the_callers_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAIDU_SWAN_CLIENT_ID", "id")
    monkeypatch.setenv("BAIDU_SWAN_SECRET", "secret")
    monkeypatch.setenv("BAIDU_SWAN_ENDPOINT", LEGACY_ENDPOINT)
    builders = [
        lambda: SwanAuthClient("id", "secret", endpoint=LEGACY_ENDPOINT),
        SwanAuthClient.from_env,  # one frame more inside the package
    ]
    for build in builders:
        monkeypatch.setattr(_endpoints, "_legacy_warning", _endpoints._OncePerProcess())
        with pytest.warns(DeprecationWarning, match="getSessionKeyByCode") as caught:
            build()
        assert [warning.filename for warning in caught] == [__file__]


@pytest.mark.parametrize("legacy", LEGACY_VARIANTS)
def test_rewrite_legacy_url(legacy: str) -> None:
    assert rewrite_legacy_url(legacy) == yarl.URL(DEFAULT_ENDPOINT)
    rewritten = rewrite_legacy_url(f"{legacy}?code=a%40b%26&sk=s", endpoint="https://gw.test/x")
    assert rewritten.with_query(None) == yarl.URL("https://gw.test/x")
    assert list(rewritten.query.items()) == [("code", "a@b&"), ("sk", "s")]


@pytest.mark.parametrize(
    "url",
    [
        "https://openapi.baidu.com/nalogin/getSessionKeyByCodeX",
        "https://openapi.baidu.com/nalogin/getsessionkeybycode",
        "https://openapi.baidu.com:8443/nalogin/getSessionKeyByCode",
        "https://openapi.baidu.com.evil.test/nalogin/getSessionKeyByCode",
        "ftp://openapi.baidu.com/nalogin/getSessionKeyByCode",
        "https://spapi.baidu.com/oauth/jscode2sessionkey?code=1",
        "/nalogin/getSessionKeyByCode",
    ],
)
def test_other_urls_are_not_rewritten(url: str) -> None:
    assert rewrite_legacy_url(url) == yarl.URL(url)


queries = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=12)), max_size=5).map(
    lambda pairs: yarl.URL("https://h.test/").with_query(pairs).raw_query_string
)
hosts = st.sampled_from(
    ["openapi.baidu.com", "OPENAPI.baidu.com", "spapi.baidu.com", "example.com"]
)
paths = st.sampled_from(
    ["/nalogin/getSessionKeyByCode", "/nalogin/getSessionKeyByCode/", "/nalogin/x", "/", ""]
)


@given(
    scheme=st.sampled_from(["http", "https", "ws", "ftp"]),
    host=hosts,
    port=st.sampled_from([None, 80, 443, 8080]),
    path=paths,
    query=queries,
)
def test_rewrite_property(scheme: str, host: str, port: int | None, path: str, query: str) -> None:
    url = yarl.URL.build(scheme=scheme, host=host, port=port, path=path, query_string=query)
    rewritten = rewrite_legacy_url(url)
    legacy = (
        scheme in ("http", "https")
        and host.lower() == "openapi.baidu.com"
        and path.rstrip("/") == "/nalogin/getSessionKeyByCode"
        and port in (None, {"http": 80, "https": 443}[scheme])
    )
    if legacy:
        assert rewritten.with_query(None) == yarl.URL(DEFAULT_ENDPOINT)
    else:
        assert rewritten == url
    assert rewritten.raw_query_string == url.raw_query_string
    assert rewritten.query == url.query


# ------------------------------------------------------------------------ redirects


class Elsewhere:
    """A second loopback server, where a redirect from the endpoint points: it records every
    request it receives, so a test can prove none reached it."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        self.url = ""

    async def _record(self, request: web.Request) -> web.Response:
        self.received.append((request.method, request.path_qs, await request.read()))
        return web.json_response({"openid": "elsewhere", "session_key": "stolen"})


@pytest.fixture
async def elsewhere() -> AsyncIterator[Elsewhere]:
    target = Elsewhere()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", target._record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    target.url = f"http://127.0.0.1:{port}/collect?next=%2Fhome&token=location-token"
    try:
        yield target
    finally:
        await runner.cleanup()


REDIRECTS = [301, 302, 303, 307, 308]


async def _legacy_call(
    session: aiohttp.ClientSession, fake: FakeBaiduServer, code: str, method: str, **extra: Any
) -> None:
    fields = _fields(fake, code)
    if method == "GET":
        request = session.get(LEGACY_ENDPOINT, params=fields, **extra)
    else:
        request = session.post(LEGACY_ENDPOINT, data=fields, **extra)
    async with request as response:
        await response.read()


@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_rewritten_request_never_follows_a_redirect(
    fake: FakeBaiduServer,
    session: aiohttp.ClientSession,
    elsewhere: Elsewhere,
    status: int,
    method: str,
) -> None:
    # aiohttp re-sends the body of a 307 or 308, AppSecret included, to the Location's host.
    code = fake.issue_code()
    fake.script(code, Redirect(status, location=elsewhere.url))
    with (
        pytest.warns(DeprecationWarning, match=LEGACY),
        pytest.raises(LegacyRedirectRefusedError) as caught,
    ):
        await _legacy_call(session, fake, code, method)

    assert elsewhere.received == []
    assert len(fake.requests_for(code)) == 1
    error = caught.value
    assert isinstance(error, aiohttp.ClientResponseError)
    assert error.status == status
    assert "redirect" in str(error)
    assert "AppSecret" in str(error)
    where = yarl.URL(elsewhere.url)
    assert f"redirect to {where.origin()} for" in str(error), "it names the redirect's host"
    for shown in (str(error), repr(error)):
        # Neither the Location's query nor its path: a server may echo the form into either.
        for secret in (fake.secret, code, "location-token", "next=", where.path):
            assert secret not in shown
    assert fake.secret not in str(error.request_info.real_url)


async def test_a_redirect_is_refused_with_allow_redirects_false_too(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, elsewhere: Elsewhere
) -> None:
    # The middleware cannot see allow_redirects: the caller gets the refusal, whose status is
    # the redirect's, instead of the 3xx answer.
    code = fake.issue_code()
    fake.script(code, Redirect(307, location=elsewhere.url))
    with (
        pytest.warns(DeprecationWarning, match=LEGACY),
        pytest.raises(LegacyRedirectRefusedError) as caught,
    ):
        await _legacy_call(session, fake, code, "GET", allow_redirects=False)
    assert caught.value.status == 307
    assert elsewhere.received == []


async def test_the_connection_is_released_after_a_refused_redirect(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, elsewhere: Elsewhere
) -> None:
    code = fake.issue_code()
    fake.script(code, Redirect(308, location=elsewhere.url))
    with (
        pytest.warns(DeprecationWarning, match=LEGACY),
        pytest.raises(LegacyRedirectRefusedError),
    ):
        await _legacy_call(session, fake, code, "POST")
    async with session.post(LEGACY_ENDPOINT, data=_fields(fake, code)) as response:
        assert response.status == 200
    first, second = fake.requests_for(code)
    assert first.connection == second.connection, "the kept-alive connection was reused"


async def test_other_urls_still_follow_redirects(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, elsewhere: Elsewhere
) -> None:
    code = fake.issue_code()
    fake.script(code, Redirect(307, location=elsewhere.url))
    async with session.post(fake.url, data={"code": code}) as response:
        assert response.status == 200
    assert [method for method, _, _ in elsewhere.received] == ["POST"]


async def test_a_refused_redirect_keeps_the_location_out_of_our_frames(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, elsewhere: Elsewhere
) -> None:
    # An error tracker records the locals of every frame; the Location's query may echo the
    # form, so the middleware's frame must not hold the response (whose repr has its headers).
    code = fake.issue_code()
    fake.script(code, Redirect(307, location=elsewhere.url))
    with (
        pytest.warns(DeprecationWarning, match=LEGACY),
        pytest.raises(LegacyRedirectRefusedError) as caught,
    ):
        await _legacy_call(session, fake, code, "GET")
    ours = [
        (function, local)
        for filename, function, local in traceback_frames(caught.value)
        if "baidu_swan_auth" in filename
    ]
    assert ours, "the middleware's frame is in the traceback"
    for function, local in ours:
        for name, value in local.items():
            assert "location-token" not in repr(value), (function, name)
            assert fake.secret not in repr(value), (function, name)


@pytest.mark.parametrize(
    ("fault", "shown"),
    [
        (Redirect(308), "{base} for"),
        (Redirect(307, location="/elsewhere?sk=echoed-secret"), "{base} for"),
        (Arbitrary(307), "redirect for"),
    ],
    ids=["default-location", "relative-location", "no-location"],
)
async def test_a_redirect_on_the_same_host_is_refused_too(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, fault: Any, shown: str
) -> None:
    code = fake.issue_code()
    fake.script(code, fault)
    with (
        pytest.warns(DeprecationWarning, match=LEGACY),
        pytest.raises(LegacyRedirectRefusedError) as caught,
    ):
        await _legacy_call(session, fake, code, "POST")
    assert [request.path for request in fake.requests] == ["/oauth/jscode2sessionkey"]
    assert shown.format(base=fake.base_url) in str(caught.value)
    assert "echoed-secret" not in str(caught.value)
    assert "/elsewhere" not in str(caught.value)
