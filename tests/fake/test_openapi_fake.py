"""Tests of the fake's access-token APIs (token, v2 session key, unionid), over real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from baidu_swan_auth.testing import (
    ENDPOINT_PATH,
    GETSESSIONKEY_PATH,
    GETUNIONID_PATH,
    REDIRECT_TARGET_PATH,
    TOKEN_PATH,
    V2_INVALID_CODE_ERRNO,
    Delay,
    Drop,
    ErrnoBody,
    ErrorStatus,
    FakeBaiduServer,
    Redirect,
    Truncated,
)

TOKEN_SHAPE = re.compile(r"24\.[0-9a-f]{32}\.(\d+)\.(\d{10})\.\d+-\d+")


@pytest.fixture
async def fake() -> AsyncIterator[FakeBaiduServer]:
    async with FakeBaiduServer() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def token_form(fake: FakeBaiduServer, **overrides: str) -> dict[str, str]:
    fields = {
        "grant_type": "client_credentials",
        "client_id": fake.client_id,
        "client_secret": fake.secret,
        "scope": "smartapp_snsapi_base",
    }
    fields.update(overrides)
    return fields


async def call(
    session: aiohttp.ClientSession,
    fake: FakeBaiduServer,
    path: str,
    data: Any = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    async with session.post(f"{fake.openapi_url}{path}", data=data, **kwargs) as response:
        return response.status, json.loads(await response.read())


async def fetch_token(session: aiohttp.ClientSession, fake: FakeBaiduServer) -> str:
    status, answer = await call(session, fake, TOKEN_PATH, token_form(fake))
    assert status == 200, answer
    token = answer["access_token"]
    assert isinstance(token, str)
    return token


async def v2(
    session: aiohttp.ClientSession, fake: FakeBaiduServer, token: str, code: str
) -> dict[str, Any]:
    status, answer = await call(
        session, fake, GETSESSIONKEY_PATH, {"access_token": token, "code": code}
    )
    assert status == 200
    assert isinstance(answer, dict)
    return answer


async def v1(session: aiohttp.ClientSession, fake: FakeBaiduServer, code: str) -> tuple[int, Any]:
    """The status and the JSON answer (``None`` for a gateway's HTML page) of the v1 endpoint."""
    fields = {"code": code, "client_id": fake.client_id, "sk": fake.secret}
    async with session.post(fake.url, data=fields) as response:
        body = await response.read()
        json_answer = response.content_type == "application/json"
        return response.status, json.loads(body) if json_answer else None


# ------------------------------------------------------------------------------ addresses


async def test_openapi_url_is_the_base_url_without_a_trailing_slash(
    fake: FakeBaiduServer,
) -> None:
    assert fake.openapi_url == f"http://127.0.0.1:{fake.port}"
    assert fake.url == f"{fake.openapi_url}{ENDPOINT_PATH}"


# ------------------------------------------------------------------------------ token


async def test_token_success_shape(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    fake.token_lifetime = 7200
    before = int(time.time())

    status, answer = await call(session, fake, TOKEN_PATH, token_form(fake))

    assert status == 200
    assert set(answer) == {
        "access_token",
        "expires_in",
        "scope",
        "refresh_token",
        "session_key",
        "session_secret",
    }
    assert answer["expires_in"] == 7200
    match = TOKEN_SHAPE.fullmatch(answer["access_token"])
    assert match is not None, answer["access_token"]
    assert int(match[1]) == 7200
    assert before <= int(match[2]) <= int(time.time())
    assert "smartapp_snsapi_base" in answer["scope"].split()
    for legacy in ("refresh_token", "session_key", "session_secret"):
        assert isinstance(answer[legacy], str)
        assert answer[legacy]
    assert fake.tokens_issued == [answer["access_token"]]
    assert fake.token_fetches == 1

    _, again = await call(session, fake, TOKEN_PATH, token_form(fake))
    for field in ("access_token", "refresh_token", "session_key", "session_secret"):
        assert again[field] != answer[field]
    assert fake.tokens_issued == [answer["access_token"], again["access_token"]]


async def test_token_lifetime_comes_from_the_constructor_and_must_be_positive(
    session: aiohttp.ClientSession,
) -> None:
    with pytest.raises(ValueError, match="token_lifetime"):
        FakeBaiduServer(token_lifetime=0)
    async with FakeBaiduServer(token_lifetime=86400) as fake:
        assert fake.token_lifetime == 86400
        with pytest.raises(ValueError, match="token_lifetime"):
            fake.token_lifetime = -1
        assert fake.token_lifetime == 86400
        _, answer = await call(session, fake, TOKEN_PATH, token_form(fake))
    assert answer["expires_in"] == 86400


async def test_default_token_lifetime_is_thirty_days(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    _, answer = await call(session, fake, TOKEN_PATH, token_form(fake))
    assert answer["expires_in"] == fake.token_lifetime == 2592000


@pytest.mark.parametrize("wrong", ["client_id", "client_secret"])
async def test_wrong_credentials_are_invalid_client(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, wrong: str
) -> None:
    status, answer = await call(session, fake, TOKEN_PATH, token_form(fake, **{wrong: "nope"}))

    assert status == 401
    assert answer["error"] == "invalid_client"
    assert answer["error_description"]
    assert fake.secret not in json.dumps(answer)
    assert fake.token_fetches == 0
    assert fake.tokens_issued == []


@pytest.mark.parametrize("missing", ["grant_type", "client_id", "client_secret"])
async def test_missing_fields_are_invalid_request(
    fake: FakeBaiduServer, session: aiohttp.ClientSession, missing: str
) -> None:
    fields = token_form(fake)
    del fields[missing]

    status, answer = await call(session, fake, TOKEN_PATH, fields)

    assert status == 400
    assert answer["error"] == "invalid_request"
    assert missing in answer["error_description"]


async def test_missing_scope_is_fine(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    fields = token_form(fake)
    del fields["scope"]
    status, answer = await call(session, fake, TOKEN_PATH, fields)
    assert status == 200, answer


async def test_wrong_grant_type_is_unsupported(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fields = token_form(fake, grant_type="authorization_code")
    status, answer = await call(session, fake, TOKEN_PATH, fields)
    assert status == 400
    assert answer["error"] == "unsupported_grant_type"
    assert fake.token_fetches == 0


async def test_token_fields_in_the_query_string_are_ignored(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    status, answer = await call(session, fake, TOKEN_PATH, params=token_form(fake))

    assert status == 400
    assert answer["error"] == "invalid_request"
    (request,) = fake.requests
    assert "client_credentials" in request.query_string
    assert request.form == {}
    assert request.code is None
    assert fake.token_fetches == 0


@pytest.mark.parametrize("path", [TOKEN_PATH, GETSESSIONKEY_PATH, GETUNIONID_PATH])
async def test_only_post(fake: FakeBaiduServer, session: aiohttp.ClientSession, path: str) -> None:
    async with session.get(f"{fake.openapi_url}{path}") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"


async def test_token_delay_makes_the_answer_slow(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ValueError, match="token_delay"):
        fake.token_delay = -0.1
    fake.token_delay = 0.3

    started = time.monotonic()
    await fetch_token(session, fake)

    # A lower bound only: the delay is the server's, whatever else slows the test down.
    assert time.monotonic() - started >= 0.3
    (request,) = fake.requests
    assert request.received_at >= started


async def test_token_delay_keeps_the_request_in_flight(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.token_delay = 0.3
    fetch = asyncio.create_task(fetch_token(session, fake))
    # Polling: the fake offers no event for "a request arrived", only its log.
    async with asyncio.timeout(5):
        while not fake.requests:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert fake.in_flight == 1
    assert fake.token_fetches == 0
    await fetch
    assert fake.token_fetches == 1


async def test_token_fetches_counts_and_reset_stats_resets_it(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    tokens = [await fetch_token(session, fake) for _ in range(3)]
    await call(session, fake, TOKEN_PATH, token_form(fake, client_secret="wrong"))
    assert fake.token_fetches == 3
    assert fake.tokens_issued == tokens

    fake.reset_stats()

    assert fake.token_fetches == 0
    assert fake.tokens_issued == tokens
    assert (await v2(session, fake, tokens[0], fake.issue_code()))["errno"] == 0


# ------------------------------------------------------------------------------ v2 session key


async def test_v2_success_spends_the_code_for_v1_too(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)
    code = fake.issue_code(openid="user-1")
    before = int(time.time())

    answer = await v2(session, fake, token, code)

    grant = fake.grant_for(code)
    assert answer["errno"] == 0
    assert answer["msg"] == "success"
    assert answer["data"] == {"open_id": "user-1", "session_key": grant.session_key}
    assert isinstance(answer["request_id"], str)
    assert answer["request_id"]
    assert before <= answer["timestamp"] <= int(time.time())
    assert fake.is_spent(code)
    assert [request.path for request in fake.requests_for(code)] == [GETSESSIONKEY_PATH]

    status, v1_answer = await v1(session, fake, code)
    assert status == 400
    assert v1_answer["error"] == "invalid_grant"
    again = await v2(session, fake, token, code)
    assert again["errno"] == V2_INVALID_CODE_ERRNO


async def test_a_code_spent_on_v1_is_spent_for_v2(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)
    code = fake.issue_code()
    status, _ = await v1(session, fake, code)
    assert status == 200

    answer = await v2(session, fake, token, code)

    assert answer["errno"] == V2_INVALID_CODE_ERRNO
    assert "data" not in answer


async def test_v2_unknown_code_is_an_errno(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)

    answer = await v2(session, fake, token, "never-issued")

    assert V2_INVALID_CODE_ERRNO != 0
    assert answer["errno"] == V2_INVALID_CODE_ERRNO
    assert isinstance(answer["msg"], str)
    assert answer["msg"]
    assert "data" not in answer
    assert {"request_id", "timestamp"} <= set(answer)


async def test_v2_missing_code_is_an_errno(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)
    status, answer = await call(session, fake, GETSESSIONKEY_PATH, {"access_token": token})
    assert status == 200
    assert isinstance(answer["errno"], int)
    assert answer["errno"] != 0
    assert "code" in answer["msg"]


async def test_v2_auto_issue(session: aiohttp.ClientSession) -> None:
    async with FakeBaiduServer(auto_issue=True) as fake:
        token = await fetch_token(session, fake)
        answer = await v2(session, fake, token, "invented")
        assert answer["errno"] == 0
        assert answer["data"]["open_id"] == fake.grant_for("invented").openid
        assert fake.is_spent("invented")


async def test_v2_fields_in_the_query_string_are_ignored(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)
    code = fake.issue_code()
    params = {"access_token": token, "code": code}

    status, answer = await call(session, fake, GETSESSIONKEY_PATH, params=params)

    assert status == 200
    assert answer["error_code"] == 110
    assert not fake.is_spent(code)


async def test_revoked_token_is_110_and_does_not_spend_the_code(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)
    code = fake.issue_code()

    fake.revoke_tokens()
    answer = await v2(session, fake, token, code)

    assert answer == {"error_code": 110, "error_msg": "Access token invalid or no longer valid"}
    assert not fake.is_spent(code)
    fake.reset_stats()
    assert (await v2(session, fake, token, code))["error_code"] == 110

    fresh = await fetch_token(session, fake)
    assert (await v2(session, fake, fresh, code))["errno"] == 0
    assert fake.is_spent(code)


async def test_unknown_token_is_110(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    code = fake.issue_code()
    answer = await v2(session, fake, "24.not-a-token", code)
    assert answer["error_code"] == 110
    assert not fake.is_spent(code)


async def test_expired_token_is_111_and_does_not_spend_the_code(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.token_lifetime = 1
    token = await fetch_token(session, fake)
    code = fake.issue_code()
    await asyncio.sleep(1.1)

    answer = await v2(session, fake, token, code)

    assert answer == {"error_code": 111, "error_msg": "Access token expired"}
    assert not fake.is_spent(code)
    status, unionid = await call(
        session, fake, GETUNIONID_PATH, {"access_token": token, "openid": "user-1"}
    )
    assert status == 200
    assert unionid["error_code"] == 111

    # A token keeps the lifetime it was issued with.
    fake.token_lifetime = 3600
    assert (await v2(session, fake, token, code))["error_code"] == 111
    fresh = await fetch_token(session, fake)
    assert (await v2(session, fake, fresh, code))["errno"] == 0


# ------------------------------------------------------------------------------ unionid


async def test_unionid_success_is_unionid_for(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)

    status, answer = await call(
        session, fake, GETUNIONID_PATH, {"access_token": token, "openid": "user-1"}
    )

    assert status == 200
    assert answer["errno"] == 0
    assert answer["errmsg"] == "succ"
    assert answer["data"] == {"unionid": fake.unionid_for("user-1")}
    assert {"request_id", "timestamp"} <= set(answer)
    assert fake.unionid_for("user-1") == fake.unionid_for("user-1")
    assert fake.unionid_for("user-1") != fake.unionid_for("user-2")
    assert fake.unionid_for("user-1").startswith("union-")
    (_, request) = fake.requests
    assert request.code is None
    assert request.form["openid"] == "user-1"


async def test_unionid_missing_openid_is_an_errno(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)
    status, answer = await call(session, fake, GETUNIONID_PATH, {"access_token": token})
    assert status == 200
    assert answer["errno"] != 0
    assert "openid" in answer["errmsg"]
    assert "data" not in answer


async def test_unionid_needs_a_valid_token(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)
    fake.revoke_tokens()
    _, answer = await call(
        session, fake, GETUNIONID_PATH, {"access_token": token, "openid": "user-1"}
    )
    assert answer["error_code"] == 110
    assert "data" not in answer


# ------------------------------------------------------------------------------ faults


async def test_script_path_on_token(fake: FakeBaiduServer, session: aiohttp.ClientSession) -> None:
    fake.script_path(TOKEN_PATH, ErrorStatus(503, retry_after="1"))

    async with session.post(f"{fake.openapi_url}{TOKEN_PATH}", data=token_form(fake)) as first:
        assert first.status == 503
        assert first.headers["Retry-After"] == "1"
    token = await fetch_token(session, fake)

    assert [request.fault for request in fake.requests] == ["ErrorStatus", None]
    assert fake.tokens_issued == [token]
    assert fake.token_fetches == 1


async def test_script_path_on_unionid(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)
    fields = {"access_token": token, "openid": "user-1"}
    fake.script_path(GETUNIONID_PATH, ErrorStatus(503), ErrnoBody(110, key="error_code"))

    async with session.post(f"{fake.openapi_url}{GETUNIONID_PATH}", data=fields) as first:
        assert first.status == 503
    status, second = await call(session, fake, GETUNIONID_PATH, fields)
    assert (status, second) == (200, {"error_code": 110, "error_msg": "simulated error"})
    status, third = await call(session, fake, GETUNIONID_PATH, fields)

    assert status == 200
    assert third["data"] == {"unionid": fake.unionid_for("user-1")}
    assert [request.fault for request in fake.requests[1:]] == ["ErrorStatus", "ErrnoBody", None]


async def test_script_path_comes_before_the_code_script(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(502))
    fake.script_path(GETSESSIONKEY_PATH, ErrorStatus(504))
    url = f"{fake.openapi_url}{GETSESSIONKEY_PATH}"
    fields = {"access_token": token, "code": code}

    statuses = []
    for _ in range(3):
        async with session.post(url, data=fields) as response:
            statuses.append(response.status)

    assert statuses == [504, 502, 200]
    assert fake.is_spent(code)


async def test_script_code_applies_on_getsessionkey(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    token = await fetch_token(session, fake)
    code = fake.issue_code(openid="user-1")
    fake.script(code, ErrnoBody(50000, "busy"))

    first = await v2(session, fake, token, code)
    assert first == {"errno": 50000, "errmsg": "busy"}
    assert not fake.is_spent(code)
    second = await v2(session, fake, token, code)

    assert second["errno"] == 0
    assert second["data"]["open_id"] == "user-1"
    assert [request.fault for request in fake.requests_for(code)] == ["ErrnoBody", None]


async def test_always_and_script_next_stay_on_the_v1_endpoint(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.always(ErrorStatus(500))
    token = await fetch_token(session, fake)
    code = fake.issue_code()
    assert (await v2(session, fake, token, code))["errno"] == 0
    fake.always(None)

    fake.script_next(ErrorStatus(500))
    await fetch_token(session, fake)
    status, _ = await v1(session, fake, fake.issue_code())
    assert status == 500
    assert [request.fault for request in fake.requests] == [None, None, None, "ErrorStatus"]


async def test_script_path_refuses_other_paths(fake: FakeBaiduServer) -> None:
    with pytest.raises(ValueError, match="/nowhere"):
        fake.script_path("/nowhere", ErrorStatus(503))
    with pytest.raises(ValueError, match="elsewhere"):
        fake.script_path(REDIRECT_TARGET_PATH, ErrorStatus(503))


async def test_script_path_on_the_v1_endpoint(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.script_path(ENDPOINT_PATH, ErrorStatus(503))
    code = fake.issue_code()
    assert (await v1(session, fake, code))[0] == 503
    assert (await v1(session, fake, code))[0] == 200


async def test_delay_answers_like_the_path(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.script_path(TOKEN_PATH, Delay(0.05))
    token = await fetch_token(session, fake)
    assert fake.token_fetches == 1

    code = fake.issue_code()
    fake.script(code, Delay(0.05))
    answer = await v2(session, fake, token, code)
    assert answer["data"]["session_key"] == fake.grant_for(code).session_key

    fake.script_path(GETUNIONID_PATH, Delay(0.05))
    _, unionid = await call(session, fake, GETUNIONID_PATH, {"access_token": token, "openid": "u"})
    assert unionid["data"] == {"unionid": fake.unionid_for("u")}
    assert [request.fault for request in fake.requests] == ["Delay"] * 3


async def test_drop_with_spend_issues_a_token_nobody_receives(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.script_path(TOKEN_PATH, Drop(spend=True), Drop())
    for _ in range(2):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await call(session, fake, TOKEN_PATH, token_form(fake))
    assert fake.token_fetches == 1
    assert len(fake.tokens_issued) == 1


async def test_truncated_token_answer(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.script_path(TOKEN_PATH, Truncated(spend=False))
    with pytest.raises(aiohttp.ClientPayloadError):
        await call(session, fake, TOKEN_PATH, token_form(fake))
    assert fake.token_fetches == 0


async def test_redirect_lands_on_a_stand_in_for_the_path(
    fake: FakeBaiduServer, session: aiohttp.ClientSession
) -> None:
    fake.script_path(TOKEN_PATH, Redirect())
    url = f"{fake.openapi_url}{TOKEN_PATH}"

    async with session.post(url, data=token_form(fake), allow_redirects=False) as response:
        assert response.status == 307
        assert response.headers["Location"] == f"{fake.openapi_url}/elsewhere{TOKEN_PATH}"
    fake.script_path(TOKEN_PATH, Redirect())
    status, answer = await call(session, fake, TOKEN_PATH, token_form(fake))

    assert status == 200
    assert fake.tokens_issued == [answer["access_token"]]
    assert [request.path for request in fake.requests] == [
        TOKEN_PATH,
        TOKEN_PATH,
        f"/elsewhere{TOKEN_PATH}",
    ]
