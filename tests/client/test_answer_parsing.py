"""Property tests: any status, any body, any Retry-After gives a SessionKey or a SwanAuthError."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from baidu_swan_auth import SessionKey, SwanAuthError
from baidu_swan_auth._answers import interpret_answer
from baidu_swan_auth._protocol import AttemptFailure, Credentials
from baidu_swan_auth._retry import Disposition

from ..strategies import baidu_like, json_values

SECRET = "property-secret-value"
CODE = "property-code-value"
CREDENTIALS = Credentials("client", SECRET)

error_strings = st.sampled_from(
    ["invalid_grant", "invalid_client", "unauthorized_client", "slow_down", "", "x", SECRET]
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    baidu_like.map(lambda value: json.dumps(value).encode()),
    st.builds(
        lambda error, description: json.dumps(
            {"error": error, "error_description": description}
        ).encode(),
        error_strings,
        st.text(max_size=40) | st.just(f"echo {SECRET} {CODE}"),
    ),
)
statuses = st.integers(min_value=100, max_value=599) | st.sampled_from([200, 400, 429, 503])
retry_after = st.none() | st.text(max_size=30) | st.integers(-5, 10**6).map(str)


def _headers(value: str | None) -> CIMultiDictProxy[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    if value is not None:
        headers["Retry-After"] = value
    return CIMultiDictProxy(headers)


@given(status=statuses, body=bodies, retry_after_value=retry_after)
def test_any_answer_gives_a_key_or_a_swan_auth_error(
    status: int, body: bytes, retry_after_value: str | None
) -> None:
    try:
        result: Any = interpret_answer(status, _headers(retry_after_value), body, CREDENTIALS, CODE)
    except AttemptFailure as failure:
        assert isinstance(failure.error, SwanAuthError)
        assert isinstance(failure.disposition, Disposition)
        text = f"{failure.error} {failure.error!r} {failure.error.description}"
        assert SECRET not in text
        assert CODE not in text
        if failure.retry_after is not None:
            assert failure.retry_after >= 0
    else:
        assert isinstance(result, SessionKey)
        assert status == 200


@given(openid=st.text(min_size=1), session_key=st.text(min_size=1))
def test_well_formed_answers_always_parse(openid: str, session_key: str) -> None:
    body = json.dumps({"openid": openid, "session_key": session_key}).encode()
    key = interpret_answer(200, _headers(None), body, CREDENTIALS, CODE)
    assert key == SessionKey(openid, session_key)


@given(status=st.sampled_from([429, 500, 502, 503, 504, 599]), body=bodies)
def test_overload_statuses_are_retryable_whatever_the_body(status: int, body: bytes) -> None:
    try:
        interpret_answer(status, _headers(None), body, CREDENTIALS, CODE)
    except AttemptFailure as failure:
        assert failure.disposition is not Disposition.FINAL
        assert failure.error.kind == "unavailable"
    else:
        raise AssertionError("a 429 or 5xx never yields a key")
