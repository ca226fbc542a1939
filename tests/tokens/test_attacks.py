"""Hostile review of the access-token APIs: real HTTP (the fake, or a Baidu of our own on
127.0.0.1 that answers what Baidu never should), real stores (custom ones that misbehave, a real
Redis), real cancellations.

Tests named ``test_break_*`` show a break of the project's rules (they fail until it is fixed);
the others are attacks that held, kept as regression tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

import pytest
import redis.asyncio
from aiohttp import web

import baidu_swan_auth
from baidu_swan_auth import (
    AccessToken,
    ApiError,
    ClientClosedError,
    ConfigurationError,
    InvalidClientError,
    InvalidInputError,
    MemoryTokenStore,
    ResponseError,
    SwanAuthClient,
    SwanAuthError,
    TokenRejectedError,
    UsageError,
)
from baidu_swan_auth.redis import RedisTokenStore
from baidu_swan_auth.testing import (
    GETUNIONID_PATH,
    TOKEN_PATH,
    Delay,
    FakeBaiduServer,
    HugeBody,
    RawBody,
    Redirect,
)
from tests.helpers import MakeClient

pytestmark = pytest.mark.asyncio

PACKAGE_DIR = Path(baidu_swan_auth.__file__).resolve().parent
#: An AppSecret whose wire forms differ: raw, quote_plus and quote each look different.
ODD_SECRET = "Sé cret/&=+%~x-0123456789abcdef"


# ------------------------------------------------------------------------------------ helpers


def _wire_forms(value: str) -> set[str]:
    return {value, quote_plus(value), quote(value, safe=""), quote(value)}


def _exposure(error: BaseException) -> str:
    """Everything an error tracker records of ``error``: str, repr and attributes of it and of
    its whole chain (causes and contexts, recursively), and the repr of every local of the
    package's own frames in their tracebacks."""
    parts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), repr(getattr(current, "__dict__", {}))]
        parts.append(repr(getattr(current, "__notes__", None)))
        for frame, _ in traceback.walk_tb(current.__traceback__):
            filename = Path(frame.f_code.co_filename).resolve()
            if PACKAGE_DIR not in filename.parents:
                continue
            for name, value in frame.f_locals.items():
                try:
                    parts.append(f"{frame.f_code.co_name}.{name}={value!r}")
                except Exception:  # a broken repr shows nothing
                    continue
        pending += [current.__cause__, current.__context__]
    return "\n".join(parts)


def _assert_hidden(text: str, *hidden: str) -> None:
    for value in hidden:
        for form in _wire_forms(value):
            assert form not in text, f"{form!r} shows"


def _assert_no_fragment(text: str, value: str, size: int = 16) -> None:
    """No run of ``size`` characters of ``value`` shows: a half-blanked secret is a leak too."""
    for start in range(len(value) - size + 1):
        assert value[start : start + size] not in text, f"a fragment of {value[:4]}... shows"


def _gateway(code: object, message: str = "Access token invalid or no longer valid") -> bytes:
    return json.dumps({"error_code": code, "error_msg": message}).encode()


def _token_body(token: object = None, expires_in: object = 2592000) -> bytes:
    token = f"24.{secrets.token_hex(16)}.2592000.1.1-1" if token is None else token
    return json.dumps({"access_token": token, "expires_in": expires_in}).encode()


class HostileBaidu:
    """A Baidu of our own over real HTTP: normal answers by default, or what a queued responder
    for the path returns (``None`` from it: the normal answer)."""

    Responder = Callable[[dict[str, str], bytes], "web.StreamResponse | None"]

    def __init__(self) -> None:
        self.queues: dict[str, list[HostileBaidu.Responder]] = {
            TOKEN_PATH: [],
            GETUNIONID_PATH: [],
        }
        self.valid: set[str] = set()
        self.issued: list[str] = []
        self.received: list[tuple[str, dict[str, str]]] = []
        self.url = ""
        self.next_token: Callable[[], str] = lambda: f"24.{secrets.token_hex(32)}.2592000.1.1-1"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        self.received.append((request.path, form))
        queue = self.queues.get(request.path)
        if queue:
            answer = queue.pop(0)(form, raw)
            if answer is not None:
                return answer
        if request.path == TOKEN_PATH:
            token = self.next_token()
            self.issued.append(token)
            self.valid.add(token)
            return web.json_response({"access_token": token, "expires_in": 2592000})
        if form.get("access_token") not in self.valid:
            return web.json_response({"error_code": 110, "error_msg": "invalid token"})
        return web.json_response({"errno": 0, "data": {"unionid": "union-" + form["openid"]}})


@pytest.fixture
async def hostile() -> AsyncIterator[HostileBaidu]:
    server = HostileBaidu()
    app = web.Application()
    app.router.add_post(TOKEN_PATH, server.handle)
    app.router.add_post(GETUNIONID_PATH, server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


class JunkStore:
    """A token store of one's own that holds nothing useful: ``get`` returns ``answer``."""

    def __init__(self, answer: object = None, timeout: float = 0.5) -> None:
        self.timeout = timeout
        self.answer = answer

    async def get(self, client_id: str) -> Any:
        return self.answer

    async def set(self, client_id: str, token: AccessToken, ttl: float) -> None:
        pass

    async def invalidate(self, client_id: str, token: AccessToken) -> None:
        pass

    def lock(self, client_id: str, ttl: float) -> Any:
        return None


class RaisingStore(JunkStore):
    """Every member raises: an outage."""

    async def get(self, client_id: str) -> Any:
        raise RuntimeError("store down")

    async def set(self, client_id: str, token: AccessToken, ttl: float) -> None:
        raise RuntimeError("store down")

    async def invalidate(self, client_id: str, token: AccessToken) -> None:
        raise RuntimeError("store down")

    def lock(self, client_id: str, ttl: float) -> Any:
        raise RuntimeError("store down")


class SyncRaisingStore(JunkStore):
    """Members written without ``async``, raising at once."""

    def get(self, client_id: str) -> Any:
        raise KeyError(client_id)

    def set(self, client_id: str, token: AccessToken, ttl: float) -> None:  # type: ignore[override]
        raise TypeError("sync")

    def invalidate(self, client_id: str, token: AccessToken) -> None:  # type: ignore[override]
        raise TypeError("sync")


class SyncAnsweringStore(JunkStore):
    """``get`` answers a token without being awaitable."""

    def get(self, client_id: str) -> Any:
        return AccessToken("24.not-awaitable", time.time() + 9999, time.time())


class HangingStore(JunkStore):
    async def get(self, client_id: str) -> Any:
        await asyncio.Event().wait()


def _v2(make_client: MakeClient, fake: FakeBaiduServer, **settings: Any) -> SwanAuthClient:
    return make_client(api="getsessionkey", openapi_url=fake.openapi_url, **settings)


async def _maybe_await(value: object) -> object:
    return await value if isinstance(value, Awaitable) else value


def _package_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if task is current or task.done() or code is None:
            continue
        filename = Path(code.co_filename).resolve()
        if PACKAGE_DIR in filename.parents and "testing" not in filename.parts:
            found.append(task)
    return found


# =========================================================================== breaks (fail now)


@pytest.mark.parametrize(
    "expires_in",
    [
        pytest.param(b"1" + b"0" * 400, id="int-past-any-float"),
        pytest.param(b'"' + b"9" * 5000 + b'"', id="digits-past-int-max-str-digits"),
    ],
)
async def test_break_an_enormous_expires_in_is_a_typed_error_and_hides_the_token(
    fake: FakeBaiduServer, make_client: MakeClient, expires_in: bytes
) -> None:
    """_openapi._lifetime: math.isfinite(10**400) raises OverflowError, int("9"*5000) raises
    ValueError; either escapes the renewal task bare, with the answer (the token) in the locals
    of read_token and Engine._attempt."""
    issued = "24." + secrets.token_hex(20) + ".2592000.1.1-1"
    body = b'{"access_token":"' + issued.encode() + b'","expires_in":' + expires_in + b"}"
    fake.script_path(TOKEN_PATH, RawBody(body))
    client = make_client(openapi_url=fake.openapi_url)
    with pytest.raises(SwanAuthError) as caught:
        await client.access_token()
    _assert_hidden(_exposure(caught.value), issued, fake.secret)
    assert (await client.access_token()).token == fake.tokens_issued[0]


async def test_break_a_token_that_expires_on_arrival_is_never_handed_out(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    """_openapi._lifetime takes any positive expires_in, 1e-9 included; _wait_for_renewal hands
    the fetched token out without checking its last use: access_token() returns (and v2 sends)
    a token already expired."""
    fake.script_path(TOKEN_PATH, RawBody(_token_body(expires_in=1e-9)))
    client = make_client(openapi_url=fake.openapi_url)
    try:
        token = await client.access_token()
    except ResponseError:
        return  # refused as unusable: fine
    assert token.expires_at > time.time(), "an expired token was handed out"


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda: AccessToken("24.huge", 10**400, 0), id="expires_at-10**400"),
        pytest.param(lambda: AccessToken("24.huge", time.time() + 99, -(10**400)), id="fetched_at"),
    ],
)
async def test_break_a_stored_token_with_an_enormous_time_is_no_token(
    fake: FakeBaiduServer, make_client: MakeClient, answer: Callable[[], AccessToken]
) -> None:
    """_tokens._usable: math.isfinite() on an int past any float raises OverflowError, outside
    _bounded, so a store's garbage fails the call with a bare OverflowError."""
    client = make_client(openapi_url=fake.openapi_url, token_store=JunkStore(answer()))
    assert await client.unionid("user") == fake.unionid_for("user")
    assert fake.token_fetches == 1


class _AcquireOnly:
    async def acquire(self) -> bool:
        return True


@pytest.mark.parametrize(
    "junk", [object(), "a lock", 42, _AcquireOnly()], ids=["object", "str", "int", "no-release"]
)
async def test_break_a_lock_that_is_junk_is_an_outage(
    fake: FakeBaiduServer, make_client: MakeClient, junk: object
) -> None:
    """_tokens._obtain evaluates ``lock.acquire`` / ``lock.release`` before _bounded calls them:
    a store whose lock() returns junk fails the call with a bare AttributeError."""

    class JunkLockStore(JunkStore):
        def lock(self, client_id: str, ttl: float) -> Any:
            return junk

    client = make_client(openapi_url=fake.openapi_url, token_store=JunkLockStore())
    assert await client.unionid("user") == fake.unionid_for("user")
    assert fake.token_fetches == 1


async def test_break_a_store_raising_cancelled_error_is_an_outage_not_a_close(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    """_tokens._bounded catches Exception only: a store call that raises CancelledError (nobody
    cancelled the renewal) reaches _renew, which answers ClientClosedError on an open client."""

    class CancellingStore(JunkStore):
        async def get(self, client_id: str) -> Any:
            raise asyncio.CancelledError

    client = make_client(openapi_url=fake.openapi_url, token_store=CancellingStore())
    token = await client.access_token()
    assert token.token == fake.tokens_issued[0]
    assert not client.closed


_MISSING = object()


@pytest.mark.parametrize(
    "timeout",
    [math.inf, math.nan, None, "3", _MISSING],
    ids=["inf", "nan", "None", "str", "missing"],
)
async def test_break_a_store_timeout_that_bounds_nothing_is_refused_or_still_bounded(
    fake: FakeBaiduServer, make_client: MakeClient, timeout: object
) -> None:
    """The client never checks a custom store's ``timeout``. With inf or NaN, _bounded bounds
    nothing: a hanging get() holds the renewal forever and every call times out for good. With
    None, a str or none at all, _tokens._obtain computes ``loop.time() + store.timeout`` outside
    _bounded (since 63bc821) and the call fails with a bare TypeError / AttributeError."""
    store = HangingStore()
    if timeout is _MISSING:
        del store.timeout
    else:
        store.timeout = timeout  # type: ignore[assignment]
    try:
        client = make_client(openapi_url=fake.openapi_url, token_store=store)
    except ConfigurationError:
        return  # refused up front: fine
    token = await client.access_token(timeout=1.5)
    assert token.token == fake.tokens_issued[0]


@pytest.mark.parametrize("build", ["memory", "redis", "redis-from-url", "redis-set-ttl"])
async def test_break_an_enormous_store_timeout_or_ttl_is_a_configuration_error(
    build: str, down_redis_url: str
) -> None:
    """_tokens.check_store_timeout and redis._milliseconds call math.isfinite(10**400), which
    raises OverflowError (_settings.positive_number handles the same input)."""
    client = redis.asyncio.Redis.from_url(down_redis_url)
    token = AccessToken("24.x", time.time() + 100, time.time())
    attempts: dict[str, Callable[[], Any]] = {
        "memory": lambda: MemoryTokenStore(timeout=10**400),
        "redis": lambda: RedisTokenStore(client, timeout=10**400),
        "redis-from-url": lambda: RedisTokenStore.from_url(down_redis_url, timeout=10**400),
        "redis-set-ttl": lambda: RedisTokenStore(client).set("app", token, 10**400),
    }
    try:
        with pytest.raises(ConfigurationError):
            await _maybe_await(attempts[build]())
    finally:
        await client.aclose()


@pytest.mark.parametrize("code", ["110", 110.0], ids=["str", "float"])
async def test_break_a_gateway_110_as_text_or_float_renews_the_token(
    fake: FakeBaiduServer, make_client: MakeClient, code: object
) -> None:
    """_openapi._data takes the gateway's refusal only as a JSON int; everywhere else (_answers
    ._errno) "110" is errno 110. The call fails as ApiError(errno=110) or ResponseError, and the
    refused token is kept and sent again until its refresh point, weeks later."""
    client = make_client(openapi_url=fake.openapi_url)
    fake.script_path(GETUNIONID_PATH, RawBody(_gateway(code)))
    assert await client.unionid("user") == fake.unionid_for("user")
    assert fake.token_fetches == 2


@pytest.mark.parametrize("echoed", ["token", "secret"])
async def test_break_a_long_110_message_never_shows_part_of_a_secret(
    hostile: HostileBaidu, make_client: MakeClient, echoed: str
) -> None:
    """_openapi._data cuts error_msg to 300 characters *before* blanking: a token or secret
    straddling character 300 is no longer whole, so it is not blanked, and all of it but its
    last characters lands in TokenRejectedError.description."""

    def echo(form: dict[str, str], raw: bytes) -> web.StreamResponse:
        value = form["access_token"] if echoed == "token" else ODD_SECRET
        message = "x" * (300 - len(value) + 2) + value
        return web.json_response({"error_code": 110, "error_msg": message})

    hostile.queues[GETUNIONID_PATH] += [echo, echo]
    client = make_client(openapi_url=hostile.url, secret=ODD_SECRET)
    with pytest.raises(TokenRejectedError) as caught:
        await client.unionid("user")
    shown = _exposure(caught.value)
    for value in [*hostile.issued, ODD_SECRET]:
        _assert_no_fragment(shown, value)


async def test_break_late_rejections_with_a_failing_store_fetch_one_token(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    """TokenSource.replace starts a new renewal for a rejection of a token it already replaced;
    with a store that fails, that renewal fetches again (one fetch per late rejection) instead
    of taking the local token that already replaced the rejected one. The default store reads
    the successor back, so only a failing store shows it; "the store is never a new way to
    fail ... under the same rules as without a store"."""
    client = make_client(openapi_url=fake.openapi_url, token_store=RaisingStore())
    await client.unionid("warm")
    fake.revoke_tokens()
    fake.script_path(GETUNIONID_PATH, Delay(0), Delay(0.3), Delay(0.6))
    results = await asyncio.gather(*(client.unionid(f"user-{n}") for n in range(3)))
    assert results == [fake.unionid_for(f"user-{n}") for n in range(3)]
    assert fake.token_fetches == 2, "one fetch for the warm-up, one for the revocation"


@pytest.mark.parametrize("where", ["redis", "custom-store"])
async def test_break_a_stored_token_that_cannot_be_encoded_is_no_token(
    fake: FakeBaiduServer,
    make_client: MakeClient,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
    where: str,
) -> None:
    """_tokens._usable takes any non-empty str, and RedisTokenStore._decode turns the JSON
    escape "\\ud800" into a lone surrogate: _TokenOperation.body's quote_plus() then raises a
    bare UnicodeEncodeError in Engine._attempt (outside its try), and every call fails until the
    garbage expires. read_token checks a fetched token's shape; a stored one is not checked."""
    now = time.time()
    token = "24.\ud800-written-by-another-program"
    value = {"token": token, "expires_at": now + 86400, "fetched_at": now}
    if where == "redis":
        await redis_client.set(f"baidu_swan_auth:token:{fake.client_id}", json.dumps(value))
        store: Any = RedisTokenStore.from_url(redis_url, timeout=1.0)
    else:
        store = JunkStore(AccessToken(token, now + 86400, now))
    try:
        client = make_client(openapi_url=fake.openapi_url, token_store=store)
        assert await client.unionid("user") == fake.unionid_for("user")
        await client.aclose()
    finally:
        if isinstance(store, RedisTokenStore):
            await store.aclose()
    assert fake.token_fetches == 1


async def test_break_redis_garbage_with_an_enormous_time_reads_as_no_token(
    redis_client: redis.asyncio.Redis, redis_url: str
) -> None:
    """RedisTokenStore.get promises None for an unreadable value; redis._is_time calls
    math.isfinite() on a JSON integer past any float and raises OverflowError, which the client
    then logs as a store outage and rests the store for 30 s."""
    body = '{"token": "24.x", "expires_at": 1' + "0" * 400 + ', "fetched_at": 0}'
    await redis_client.set("baidu_swan_auth:token:app", body)
    async with RedisTokenStore.from_url(redis_url, timeout=1.0) as store:
        assert await store.get("app") is None


async def test_break_aclose_leaves_no_renewal_behind_when_the_lock_release_hangs(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    """TokenSource.aclose cancels the renewal once and waits at most 5 s; the cancelled renewal
    then waits up to the store's timeout in its finally (lock.release via _bounded), so aclose
    takes 5 s and returns with the renewal task still pending (the session already closed)."""

    class StuckLock:
        async def acquire(self) -> bool:
            return True

        async def release(self) -> None:
            await asyncio.Event().wait()

    class StuckReleaseStore(JunkStore):
        def lock(self, client_id: str, ttl: float) -> Any:
            return StuckLock()

    fake.token_delay = 30
    client = make_client(openapi_url=fake.openapi_url, token_store=StuckReleaseStore(timeout=30))
    waiting = asyncio.ensure_future(client.access_token())
    await asyncio.sleep(0.1)  # the renewal holds the lock and waits for Baidu
    started = time.monotonic()
    await client.aclose()
    took = time.monotonic() - started
    leftover = [task for task in _package_tasks() if task is not waiting]
    waiter_done = waiting.done()
    for task in [*leftover, waiting]:
        task.cancel()
    outcome, *_ = await asyncio.gather(waiting, *leftover, return_exceptions=True)
    fake.token_delay = 0
    assert leftover == [], f"aclose took {took:.1f}s and left {leftover}"
    assert waiter_done, "aclose returned while an access_token() caller still waited"
    assert isinstance(outcome, ClientClosedError)


# ========================================================================= attacks that held


HOSTILE_TOKEN = "24.hostile-" + "f" * 40
HOSTILE_TOKEN_ANSWERS: dict[str, bytes] = {
    "expires_in-0": _token_body(HOSTILE_TOKEN, 0),
    "expires_in-negative": _token_body(HOSTILE_TOKEN, -5),
    "expires_in-1e308": _token_body(HOSTILE_TOKEN, 1e308),
    "expires_in-NaN-text": _token_body(HOSTILE_TOKEN, "NaN"),
    "expires_in-NaN-literal": b'{"access_token":"'
    + HOSTILE_TOKEN.encode()
    + b'","expires_in":NaN}',
    "expires_in-Infinity": b'{"access_token":"'
    + HOSTILE_TOKEN.encode()
    + b'","expires_in":Infinity}',
    "expires_in-true": _token_body(HOSTILE_TOKEN, True),
    "expires_in-spaces": _token_body(HOSTILE_TOKEN, " 3600 "),
    "expires_in-float-text": _token_body(HOSTILE_TOKEN, "3600.5"),
    "expires_in-arabic-digits": _token_body(HOSTILE_TOKEN, "٣٦٠٠"),
    "expires_in-null": _token_body(HOSTILE_TOKEN, None),
    "expires_in-list": _token_body(HOSTILE_TOKEN, [3600]),
    "token-empty": _token_body("", 3600),
    "token-huge": _token_body("24." + "Q" * 5000, 3600),
    "token-non-ascii": _token_body("24.tökén-" + "e" * 30, 3600),
    "token-newline": _token_body("24.tok\nen-" + "e" * 30, 3600),
    "token-space": _token_body("24.tok en-" + "e" * 30, 3600),
    "token-number": _token_body(12345678901234567890, 3600),
    "token-object": _token_body({"t": HOSTILE_TOKEN}, 3600),
    "nesting-bomb-array": b"[" * 15000,
    "nesting-bomb-object": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    "json-list": b"[" + _token_body(HOSTILE_TOKEN) + b"]",
    "not-utf8": b'{"access_token":"\xff\xfe","expires_in":3600}',
    "error-and-token": json.dumps(
        {"error": "invalid_client", "access_token": HOSTILE_TOKEN, "expires_in": 3600}
    ).encode(),
    "error_code-and-token": json.dumps(
        {"error_code": 110, "error_msg": "x", "access_token": HOSTILE_TOKEN, "expires_in": 3600}
    ).encode(),
    "error-ill-typed": json.dumps(
        {"error": ["x"], "access_token": HOSTILE_TOKEN, "expires_in": 3600}
    ).encode(),
}


@pytest.mark.parametrize(
    "body", list(HOSTILE_TOKEN_ANSWERS.values()), ids=list(HOSTILE_TOKEN_ANSWERS)
)
async def test_a_hostile_token_answer_is_a_typed_error_and_is_not_cached(
    fake: FakeBaiduServer, make_client: MakeClient, body: bytes
) -> None:
    fake.script_path(TOKEN_PATH, RawBody(body))
    client = make_client(openapi_url=fake.openapi_url)
    with pytest.raises(SwanAuthError) as caught:
        await client.access_token()
    assert isinstance(caught.value, ResponseError | ApiError)
    _assert_hidden(_exposure(caught.value), fake.secret, HOSTILE_TOKEN)
    assert (await client.access_token()).token == fake.tokens_issued[0]


async def test_huge_and_redirected_token_answers_are_typed_and_never_followed(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.script_path(TOKEN_PATH, HugeBody(64 * 1024), HugeBody(64 * 1024, chunked=True), Redirect())
    client = make_client(openapi_url=fake.openapi_url)
    for _ in range(3):
        with pytest.raises(ResponseError):
            await client.access_token()
    assert all("elsewhere" not in request.path for request in fake.requests)
    assert fake.token_fetches == 0


async def test_a_token_with_form_delimiters_travels_intact(
    hostile: HostileBaidu, make_client: MakeClient
) -> None:
    odd = "24.a&b=c+d%2F/e?f#g;h'i\"j\\k"
    hostile.next_token = lambda: odd
    client = make_client(openapi_url=hostile.url)
    assert await client.unionid("user&openid=evil") == "union-user&openid=evil"
    [(_, sent)] = [item for item in hostile.received if item[0] == GETUNIONID_PATH]
    assert sent == {"access_token": odd, "openid": "user&openid=evil"}


def _echoing(status: int, shape: str) -> HostileBaidu.Responder:
    def respond(form: dict[str, str], raw: bytes) -> web.StreamResponse:
        echoes = " | ".join(sorted(_wire_forms(ODD_SECRET) | {raw.decode()}))
        headers = {"X-Echo": quote_plus(ODD_SECRET), "WWW-Authenticate": quote(ODD_SECRET)}
        if shape == "oauth":
            payload: object = {"error": "invalid_client", "error_description": echoes}
        elif shape == "error-is-secret":
            payload = {"error": quote(ODD_SECRET, safe=""), "error_description": echoes}
        elif shape == "errno":
            payload = {"errno": 7, "errmsg": echoes, "msg": ODD_SECRET}
        else:
            return web.Response(status=status, text=echoes, headers=headers)
        return web.json_response(payload, status=status, headers=headers)

    return respond


@pytest.mark.parametrize("status", [200, 400, 401, 500, 503])
@pytest.mark.parametrize("shape", ["oauth", "error-is-secret", "errno", "text"])
async def test_a_token_server_echoing_the_secret_in_every_form_never_shows_it(
    hostile: HostileBaidu, make_client: MakeClient, status: int, shape: str
) -> None:
    hostile.queues[TOKEN_PATH] += [_echoing(status, shape)] * 8
    client = make_client(openapi_url=hostile.url, secret=ODD_SECRET)
    with pytest.raises(SwanAuthError) as caught:
        await client.unionid("user")
    _assert_hidden(_exposure(caught.value), ODD_SECRET)


@pytest.mark.parametrize("status", [200, 400, 500])
async def test_a_rest_answer_echoing_token_and_secret_never_shows_them(
    hostile: HostileBaidu, make_client: MakeClient, status: int
) -> None:
    def echo(form: dict[str, str], raw: bytes) -> web.StreamResponse:
        forms = _wire_forms(form["access_token"]) | _wire_forms(ODD_SECRET)
        text = " ".join(sorted(forms)) + " " + raw.decode()
        return web.json_response(
            {"errno": 9, "errmsg": text, "error": text, "error_description": text},
            status=status,
        )

    hostile.queues[GETUNIONID_PATH] += [echo] * 8
    client = make_client(openapi_url=hostile.url, secret=ODD_SECRET)
    with pytest.raises(SwanAuthError) as caught:
        await client.unionid("user")
    _assert_hidden(_exposure(caught.value), ODD_SECRET, *hostile.issued)


async def test_a_gateway_answering_110_forever_costs_one_renewal_per_call(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.script_path(GETUNIONID_PATH, *[RawBody(_gateway(110))] * 20)
    client = make_client(openapi_url=fake.openapi_url, max_attempts=4)
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(TokenRejectedError) as caught:
            await client.unionid("user")
        assert caught.value.attempts == 2
        assert time.monotonic() - started < 2
    assert fake.token_fetches <= 4


@pytest.mark.parametrize("status", [401, 403])
async def test_a_gateway_110_on_an_error_status_renews_the_token(
    fake: FakeBaiduServer, make_client: MakeClient, status: int
) -> None:
    fake.script_path(GETUNIONID_PATH, RawBody(_gateway(110), status=status))
    client = make_client(openapi_url=fake.openapi_url)
    assert await client.unionid("user") == fake.unionid_for("user")
    assert fake.token_fetches == 2


async def test_a_gateway_110_as_a_bool_is_no_rejection(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.script_path(GETUNIONID_PATH, RawBody(_gateway(True)))
    client = make_client(openapi_url=fake.openapi_url)
    with pytest.raises(SwanAuthError):
        await client.unionid("user")
    assert fake.token_fetches == 1


async def test_random_cancellations_never_fail_the_others_and_one_token_is_fetched(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.token_delay = 0.3
    client = _v2(make_client, fake)
    rng = random.Random(20240611)
    calls: list[Awaitable[Any]] = []
    for n in range(45):
        kind = n % 3
        if kind == 0:
            calls.append(client.access_token())
        elif kind == 1:
            calls.append(client.unionid(f"user-{n}"))
        else:
            calls.append(client.exchange(fake.issue_code(openid=f"user-{n}")))
    tasks = [asyncio.ensure_future(call) for call in calls]
    doomed = set(rng.sample(range(len(tasks)), 15))
    for index in sorted(doomed, key=lambda _: rng.random()):
        await asyncio.sleep(rng.uniform(0, 0.02))
        tasks[index].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for index, outcome in enumerate(outcomes):
        if index in doomed and isinstance(outcome, asyncio.CancelledError):
            continue
        assert not isinstance(outcome, BaseException), (index, outcome)
    assert fake.token_fetches == 1
    assert _package_tasks() == []


async def test_access_token_from_another_thread_is_a_usage_error(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(openapi_url=fake.openapi_url)
    token = await client.access_token()

    def elsewhere() -> None:
        asyncio.run(client.access_token())

    with pytest.raises(UsageError):
        await asyncio.to_thread(elsewhere)
    assert await client.access_token() is token
    assert fake.token_fetches == 1


def _junk_answers() -> dict[str, Callable[[], object]]:
    now = time.time
    return {
        "str": lambda: "24.a-token-as-str",
        "int": lambda: 7,
        "dict": lambda: {"token": "24.x", "expires_at": now() + 999, "fetched_at": now()},
        "nan": lambda: AccessToken("24.nan", math.nan, now()),
        "inf": lambda: AccessToken("24.inf", math.inf, now()),
        "expired": lambda: AccessToken("24.expired", now() - 10, now() - 100),
        "negative-lifetime-past": lambda: AccessToken("24.neg", now() - 1, now() + 100),
        "bytes-token": lambda: AccessToken(b"24.bytes", now() + 999, now()),  # type: ignore[arg-type]
        "empty-token": lambda: AccessToken("", now() + 999, now()),
        "bool-times": lambda: AccessToken("24.bool", True, False),
        "text-times": lambda: AccessToken("24.text", "9e99", "0"),  # type: ignore[arg-type]
    }


@pytest.mark.parametrize("junk", list(_junk_answers()))
async def test_a_store_answering_garbage_never_fails_a_call(
    fake: FakeBaiduServer, make_client: MakeClient, junk: str
) -> None:
    store = JunkStore(_junk_answers()[junk]())
    client = make_client(openapi_url=fake.openapi_url, token_store=store)
    assert await client.unionid("user") == fake.unionid_for("user")
    assert fake.token_fetches == 1


@pytest.mark.parametrize("store", [RaisingStore, SyncRaisingStore, SyncAnsweringStore])
async def test_a_store_that_raises_or_is_not_async_never_fails_a_call(
    fake: FakeBaiduServer,
    make_client: MakeClient,
    store: type[JunkStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(openapi_url=fake.openapi_url, token_store=store())
    results = await asyncio.gather(*(client.unionid(f"u{n}") for n in range(10)))
    assert results == [fake.unionid_for(f"u{n}") for n in range(10)]
    assert fake.token_fetches == 1
    failed = [r for r in caplog.records if "token store failed" in r.getMessage()]
    assert len(failed) <= 1


async def test_a_hanging_store_neither_fails_a_call_nor_holds_aclose(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    class Hangs(JunkStore):
        async def get(self, client_id: str) -> Any:
            await asyncio.Event().wait()

        async def set(self, client_id: str, token: AccessToken, ttl: float) -> None:
            await asyncio.Event().wait()

    client = make_client(openapi_url=fake.openapi_url, token_store=Hangs(timeout=0.2))
    assert await client.unionid("user", timeout=3) == fake.unionid_for("user")
    assert fake.token_fetches == 1

    cold = make_client(openapi_url=fake.openapi_url, token_store=Hangs(timeout=30))
    waiting = asyncio.ensure_future(cold.unionid("other"))
    token_waiting = asyncio.ensure_future(cold.access_token())
    await asyncio.sleep(0.1)  # the renewal now hangs in the store
    started = time.monotonic()
    await cold.aclose()
    assert time.monotonic() - started < 1
    for waiter in (waiting, token_waiting):
        with pytest.raises(ClientClosedError):
            await waiter
    assert _package_tasks() == []


async def test_aclose_during_a_hanging_fetch_is_prompt_and_leaves_no_task(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.token_delay = 30
    client = _v2(make_client, fake)
    waiters = [
        asyncio.ensure_future(client.access_token()),
        asyncio.ensure_future(client.unionid("u")),
        asyncio.ensure_future(client.exchange(fake.issue_code())),
    ]
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await client.aclose()
    assert time.monotonic() - started < 1
    for waiter in waiters:
        with pytest.raises(ClientClosedError):
            await waiter
    assert _package_tasks() == []
    fake.token_delay = 0


@pytest.mark.parametrize("lifetime", ["zero", "negative", "skewed"])
async def test_an_odd_stored_lifetime_is_used_without_a_crash(
    fake: FakeBaiduServer, make_client: MakeClient, lifetime: str
) -> None:
    valid = await make_client(openapi_url=fake.openapi_url).access_token()
    now = time.time()
    expires_at, fetched_at = {
        "zero": (now + 1000, now + 1000),
        "negative": (now + 1000, now + 5000),
        "skewed": (now + 10**6, now + 10**6 - 2592000),
    }[lifetime]
    store = JunkStore(AccessToken(valid.token, expires_at, fetched_at))
    client = make_client(openapi_url=fake.openapi_url, token_store=store)
    assert await client.unionid("user") == fake.unionid_for("user")
    assert fake.token_fetches == 1


async def test_redis_holding_a_token_that_is_not_this_apps_recovers_with_one_fetch(
    fake: FakeBaiduServer,
    make_client: MakeClient,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
) -> None:
    key = f"baidu_swan_auth:token:{fake.client_id}"
    foreign = {"token": "24.another-apps-token", "expires_at": time.time() + 86400}
    foreign["fetched_at"] = time.time()
    await redis_client.set(key, json.dumps(foreign), ex=86400)
    async with RedisTokenStore.from_url(redis_url, timeout=1.0) as store:
        client = make_client(openapi_url=fake.openapi_url, token_store=store)
        assert await client.unionid("user") == fake.unionid_for("user")
        await client.aclose()
    assert fake.token_fetches == 1
    stored = json.loads(await redis_client.get(key) or b"null")
    assert stored["token"] == fake.tokens_issued[0]
    assert fake.secret not in json.dumps(stored)


@pytest.mark.parametrize("openid", ["\ud800", "a\x00b", "é" * 600, b"bytes", None, "\x85next-line"])
async def test_unionid_refuses_odd_input_before_any_request(
    fake: FakeBaiduServer, make_client: MakeClient, openid: Any
) -> None:
    client = make_client(openapi_url=fake.openapi_url)
    with pytest.raises(InvalidInputError):
        await client.unionid(openid)
    assert fake.requests == []


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, True, "1", 10**400])
async def test_access_token_refuses_an_odd_timeout(
    fake: FakeBaiduServer, make_client: MakeClient, timeout: Any
) -> None:
    client = make_client(openapi_url=fake.openapi_url)
    with pytest.raises(ConfigurationError):
        await client.access_token(timeout=timeout)


async def test_nothing_secret_reaches_the_debug_log(
    hostile: HostileBaidu, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def hook_raises(event: object) -> None:
        raise RuntimeError("hook")

    client = make_client(
        openapi_url=hostile.url,
        secret=ODD_SECRET,
        token_store=RaisingStore(),
        on_attempt=hook_raises,
    )
    await client.unionid("user-with-a-long-openid")
    hostile.valid.clear()  # revoked: one renewal
    await client.unionid("user-with-a-long-openid")
    hostile.queues[TOKEN_PATH].append(_echoing(401, "oauth"))
    hostile.valid.clear()
    with pytest.raises(InvalidClientError):
        await client.unionid("user-with-a-long-openid")
    assert "unionid" in caplog.text
    _assert_hidden(caplog.text, ODD_SECRET, *hostile.issued)
