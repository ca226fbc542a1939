"""The access-token calls of the client, over real HTTP to the fake, with the default in-process
store: v2 ``getsessionkey``, ``access_token()``, ``unionid()``, renewal and rejection."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from baidu_swan_auth import (
    AccessToken,
    ApiError,
    AttemptEvent,
    ClientClosedError,
    ConfigurationError,
    ExchangeTimeoutError,
    InvalidClientError,
    InvalidCodeError,
    InvalidInputError,
    MemoryTokenStore,
    SessionKey,
    SwanAuthClient,
    TokenRejectedError,
)
from baidu_swan_auth.testing import (
    GETSESSIONKEY_PATH,
    GETUNIONID_PATH,
    TOKEN_PATH,
    V2_INVALID_CODE_ERRNO,
    Drop,
    ErrorStatus,
    FakeBaiduServer,
    RawBody,
)
from tests.helpers import MakeClient

pytestmark = pytest.mark.asyncio


def _v2(make_client: MakeClient, fake: FakeBaiduServer, **settings: Any) -> SwanAuthClient:
    return make_client(api="getsessionkey", openapi_url=fake.openapi_url, **settings)


def _gateway(code: int) -> RawBody:
    message = "Access token invalid or no longer valid" if code == 110 else "Access token expired"
    return RawBody(json.dumps({"error_code": code, "error_msg": message}).encode())


def _sent_tokens(fake: FakeBaiduServer, path: str) -> list[str]:
    return [request.form["access_token"] for request in fake.requests if request.path == path]


# ------------------------------------------------------------------------------ v2 exchange


async def test_v2_exchange_gives_the_same_session_key_with_one_token_for_many_codes(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = _v2(make_client, fake)
    codes = [fake.issue_code(openid=f"user-{n}") for n in range(3)]
    keys = [await client.exchange(code) for code in codes]
    assert [key.openid for key in keys] == ["user-0", "user-1", "user-2"]
    assert keys[0] == SessionKey("user-0", fake.grant_for(codes[0]).session_key)
    assert fake.token_fetches == 1
    assert all(fake.is_spent(code) for code in codes)
    assert client.api == "getsessionkey"


async def test_the_secret_and_the_token_travel_in_form_bodies_only(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = _v2(make_client, fake)
    code = fake.issue_code()
    await client.exchange(code)
    await client.unionid("some-openid")
    token = fake.tokens_issued[0]
    [fetch] = [request for request in fake.requests if request.path == TOKEN_PATH]
    assert fetch.method == "POST"
    assert fetch.form == {
        "grant_type": "client_credentials",
        "client_id": fake.client_id,
        "client_secret": fake.secret,
        "scope": "smartapp_snsapi_base",
    }
    assert _sent_tokens(fake, GETSESSIONKEY_PATH) == [token]
    assert _sent_tokens(fake, GETUNIONID_PATH) == [token]
    for request in fake.requests:
        assert request.method == "POST"
        assert request.query_string == ""
        assert token not in request.path
        assert fake.secret not in request.path


async def test_concurrent_cold_calls_fetch_one_token(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.token_delay = 0.2
    client = _v2(make_client, fake)
    codes = [fake.issue_code() for _ in range(20)]
    keys = await asyncio.gather(*(client.exchange(code) for code in codes))
    assert len(keys) == 20
    assert fake.token_fetches == 1


async def test_a_revoked_token_is_renewed_once_and_the_call_succeeds(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    events: list[AttemptEvent] = []
    client = _v2(make_client, fake, on_attempt=events.append)
    await client.exchange(fake.issue_code())
    fake.revoke_tokens()
    code = fake.issue_code(openid="after-revocation")
    key = await client.exchange(code)
    assert key.openid == "after-revocation"
    assert fake.token_fetches == 2
    old, new = fake.tokens_issued
    assert _sent_tokens(fake, GETSESSIONKEY_PATH) == [old, old, new]
    exchange_events = [event for event in events if event.operation == "exchange"]
    assert [(event.reason, event.will_retry) for event in exchange_events[1:]] == [
        ("token_rejected", True),
        ("success", False),
    ]
    assert exchange_events[1].outcome == "token_rejected"
    assert [event.operation for event in events].count("token") == 2


async def test_a_fresh_token_refused_too_raises_token_rejected_after_one_renewal(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = _v2(make_client, fake, max_attempts=4)
    code = fake.issue_code()
    fake.script(code, _gateway(110), _gateway(111), _gateway(110))
    with pytest.raises(TokenRejectedError) as caught:
        await client.exchange(code)
    assert caught.value.errno == 111
    assert caught.value.attempts == 2
    assert not caught.value.code_may_be_spent
    assert fake.token_fetches == 2  # one renewal per call, never a loop
    assert not fake.is_spent(code)
    assert len(fake.requests_for(code)) == 2


async def test_the_renewal_retry_is_outside_max_attempts(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = _v2(make_client, fake, max_attempts=1)
    await client.exchange(fake.issue_code())
    fake.revoke_tokens()
    key = await client.exchange(fake.issue_code(openid="one-attempt"))
    assert key.openid == "one-attempt"


async def test_a_v2_business_error_is_an_api_error_with_its_errno(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = _v2(make_client, fake)
    code = fake.issue_code()
    await client.exchange(code)
    with pytest.raises(ApiError) as caught:
        await client.exchange(code)  # spent
    assert caught.value.errno == V2_INVALID_CODE_ERRNO
    # Baidu's errno for a spent code is not public: v2 never guesses InvalidCodeError.
    assert not isinstance(caught.value, InvalidCodeError)
    assert caught.value.attempts == 1


async def test_a_code_dropped_after_sending_is_not_retried_into_a_confusing_error(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = _v2(make_client, fake)
    code = fake.issue_code()
    fake.script(code, Drop(spend=True))
    with pytest.raises(ApiError) as caught:
        await client.exchange(code)
    assert caught.value.code_may_be_spent
    assert caught.value.errno == V2_INVALID_CODE_ERRNO


# ------------------------------------------------------------------------- the token itself


async def test_access_token_is_cached_with_baidus_expiry(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.token_lifetime = 86400
    client = _v2(make_client, fake)
    before = time.time()
    token = await client.access_token()
    after = time.time()
    assert token.token == fake.tokens_issued[0]
    assert before + 86400 <= token.expires_at <= after + 86400
    assert token.lifetime == pytest.approx(86400)
    assert token.token not in repr(token)
    assert await client.access_token() is token
    assert fake.token_fetches == 1


async def test_the_token_answers_legacy_fields_are_not_kept(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    store = MemoryTokenStore()
    client = _v2(make_client, fake, token_store=store)
    token = await client.access_token()
    assert attrs_fields(token) == {"token", "expires_at", "fetched_at"}
    assert await store.get(fake.client_id) == token


def attrs_fields(value: object) -> set[str]:
    import attrs  # noqa: PLC0415

    return {field.name for field in attrs.fields(type(value))}


async def test_a_token_is_renewed_in_the_background_before_it_expires(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.token_lifetime = 4  # renewed from 3 s on; never sent after 3.8 s
    client = _v2(make_client, fake)
    first = await client.access_token()
    await asyncio.sleep(first.expires_at - 0.5 - time.time())
    # Past the refresh point: this call goes on at once with the valid token...
    await client.exchange(fake.issue_code())
    assert _sent_tokens(fake, GETSESSIONKEY_PATH) == [first.token]
    # ...while one renewal runs beside it.
    for _ in range(100):
        if fake.token_fetches == 2:
            break
        await asyncio.sleep(0.01)
    assert fake.token_fetches == 2
    await client.exchange(fake.issue_code())
    assert _sent_tokens(fake, GETSESSIONKEY_PATH)[-1] == fake.tokens_issued[1]


async def test_a_token_past_its_last_use_is_never_sent(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.token_lifetime = 2
    client = _v2(make_client, fake)
    first = await client.access_token()
    await asyncio.sleep(first.expires_at - time.time() + 0.05)
    await client.exchange(fake.issue_code())
    assert _sent_tokens(fake, GETSESSIONKEY_PATH) == [fake.tokens_issued[1]]


async def test_a_transient_token_failure_is_retried(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    events: list[AttemptEvent] = []
    client = _v2(make_client, fake, on_attempt=events.append)
    fake.script_path(TOKEN_PATH, ErrorStatus(503), Drop())
    await client.exchange(fake.issue_code())
    token_events = [(event.operation, event.outcome, event.code) for event in events][:3]
    assert token_events == [
        ("token", "unavailable", ""),
        ("token", "transport", ""),
        ("token", "ok", ""),
    ]


async def test_a_refused_secret_fails_the_call_and_is_not_cached(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = _v2(make_client, fake, secret="wrong-secret-value")
    with pytest.raises(InvalidClientError):
        await client.exchange(fake.issue_code())
    with pytest.raises(InvalidClientError) as caught:
        await client.access_token()
    assert "wrong-secret-value" not in repr(caught.value) + str(caught.value)
    assert len([request for request in fake.requests if request.path == TOKEN_PATH]) == 2


async def test_the_shared_fetch_survives_the_cancellation_of_its_first_caller(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.token_delay = 0.3
    client = _v2(make_client, fake)
    first = asyncio.create_task(client.exchange(fake.issue_code()))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(client.exchange(fake.issue_code(openid="second")))
    await asyncio.sleep(0.05)
    first.cancel()
    assert (await second).openid == "second"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert fake.token_fetches == 1


async def test_a_call_waits_for_a_token_within_its_own_deadline(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.token_delay = 1.0
    client = _v2(make_client, fake)
    started = time.monotonic()
    with pytest.raises(ExchangeTimeoutError):
        await client.exchange(fake.issue_code(), timeout=0.2)
    assert time.monotonic() - started < 0.9
    # The fetch went on without that caller: the next call finds its token.
    token = await client.access_token()
    assert token.token == fake.tokens_issued[0]


async def test_aclose_during_a_token_fetch_fails_its_waiters_with_client_closed(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    fake.token_delay = 5.0
    client = _v2(make_client, fake)
    waiting = asyncio.create_task(client.exchange(fake.issue_code()))
    token_waiting = asyncio.create_task(client.access_token())
    await asyncio.sleep(0.1)
    await asyncio.wait_for(client.aclose(), 3)
    with pytest.raises(ClientClosedError):
        await waiting
    with pytest.raises(ClientClosedError):
        await token_waiting
    with pytest.raises(ClientClosedError):
        await client.access_token()


# ---------------------------------------------------------------------------------- unionid


async def test_unionid_works_with_the_v1_api_too(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(openapi_url=fake.openapi_url)
    key = await client.exchange(fake.issue_code())
    assert await client.unionid(key.openid) == fake.unionid_for(key.openid)
    assert fake.token_fetches == 1


async def test_unionid_is_retried_whatever_happened(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(openapi_url=fake.openapi_url)
    fake.script_path(GETUNIONID_PATH, Drop(), ErrorStatus(502))
    assert await client.unionid("user") == fake.unionid_for("user")


async def test_unionid_renews_a_revoked_token(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(openapi_url=fake.openapi_url)
    await client.unionid("user")
    fake.revoke_tokens()
    assert await client.unionid("user") == fake.unionid_for("user")
    assert fake.token_fetches == 2


@pytest.mark.parametrize("openid", ["", "a\nb", "x" * 1025, 42])
async def test_unionid_refuses_unusable_input_before_any_request(
    fake: FakeBaiduServer, make_client: MakeClient, openid: Any
) -> None:
    client = make_client(openapi_url=fake.openapi_url)
    with pytest.raises(InvalidInputError, match="openid"):
        await client.unionid(openid)
    assert fake.requests == []


# ------------------------------------------------------------------------ secrets, settings


async def test_the_token_never_reaches_a_log_line_a_repr_or_an_error(
    fake: FakeBaiduServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="baidu_swan_auth")
    client = _v2(make_client, fake)
    token = await client.access_token()
    echo = json.dumps({"errno": 7, "msg": f"bad token {token.token} for you"}).encode()
    code = fake.issue_code()
    fake.script(code, RawBody(echo), ErrorStatus(500, description=token.token))
    errors: list[BaseException] = []
    for _ in range(2):
        try:
            await client.exchange(code, max_attempts=1)
        except ApiError as error:
            errors.append(error)
        except Exception as error:  # collected to be searched
            errors.append(error)
    assert len(errors) == 2
    shown = caplog.text + repr(client) + repr(client.token_store) + repr(token)
    for error in errors:
        shown += str(error) + repr(error) + repr(vars(error))
        cause = error.__cause__ or error.__context__
        while cause is not None:
            shown += str(cause) + repr(cause)
            cause = cause.__cause__ or cause.__context__
    assert token.token not in shown
    assert fake.secret not in shown


async def test_settings_of_the_token_apis_are_checked(fake: FakeBaiduServer) -> None:
    with pytest.raises(ConfigurationError, match="api"):
        SwanAuthClient("id", "secret", api="v3")
    with pytest.raises(ConfigurationError, match="openapi_url"):
        SwanAuthClient("id", "secret", openapi_url="http://example.com")
    with pytest.raises(ConfigurationError, match="openapi_url"):
        SwanAuthClient("id", "secret", openapi_url="https://example.com/?x=1")
    with pytest.raises(ConfigurationError, match="timeout"):
        MemoryTokenStore(timeout=0)


async def test_from_env_reads_the_api_and_the_openapi_url(
    fake: FakeBaiduServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAIDU_SWAN_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("BAIDU_SWAN_SECRET", fake.secret)
    monkeypatch.setenv("BAIDU_SWAN_ENDPOINT", fake.url)
    monkeypatch.setenv("BAIDU_SWAN_API", "getsessionkey")
    monkeypatch.setenv("BAIDU_SWAN_OPENAPI_URL", fake.openapi_url)
    async with SwanAuthClient.from_env() as client:
        assert client.api == "getsessionkey"
        await client.exchange(fake.issue_code())
    assert fake.token_fetches == 1


async def test_clients_sharing_a_memory_store_share_one_token(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    store = MemoryTokenStore()
    first = _v2(make_client, fake, token_store=store)
    second = _v2(make_client, fake, token_store=store)
    tokens: list[AccessToken] = await asyncio.gather(first.access_token(), second.access_token())
    assert tokens[0] == tokens[1]
    assert fake.token_fetches == 1


async def test_a_retry_after_the_renewal_still_has_the_calls_attempts(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    """The renewal's attempt is outside max_attempts: a 503 after it is still retried."""
    client = _v2(make_client, fake, max_attempts=2)
    await client.access_token()
    code = fake.issue_code(openid="retried-after-renewal")
    fake.script(code, _gateway(110), ErrorStatus(503))
    key = await client.exchange(code)
    assert key.openid == "retried-after-renewal"
    assert len(fake.requests_for(code)) == 3


async def test_a_rejected_token_leaves_the_store_even_when_no_new_one_comes(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    store = MemoryTokenStore()
    client = _v2(make_client, fake, token_store=store, max_attempts=1)
    await client.exchange(fake.issue_code())
    assert await store.get(fake.client_id) is not None
    fake.revoke_tokens()
    fake.script_path(TOKEN_PATH, ErrorStatus(401, error="invalid_client"))
    with pytest.raises(InvalidClientError):
        await client.exchange(fake.issue_code())
    # Compare and delete: the refused token is gone, so no other process keeps reading it.
    assert await store.get(fake.client_id) is None
