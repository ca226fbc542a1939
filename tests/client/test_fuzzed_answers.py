"""Fuzzing over real HTTP: whatever status, headers and body the fake answers with, a call gives a
``SessionKey`` or a ``SwanAuthError``, never anything else.

tests/client/test_answer_parsing.py fuzzes the parser alone; this drives the whole client (aiohttp's
parser, decompression, the body cap, retries, the pool) against
[`Arbitrary`][baidu_swan_auth.testing.Arbitrary] answers. One fake on its own thread, one event loop
and one client serve every example, so the pool sees every kind of garbage in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tenacity import wait_none

from baidu_swan_auth import RetryBudget, SessionKey, SwanAuthClient, SwanAuthError
from baidu_swan_auth.testing import Arbitrary, FakeBaiduServer

from ..helpers import RecordingSleep
from ..strategies import baidu_like, json_values

MAX_ATTEMPTS = 4
SECRET = "fuzz-secret-never-shown-0123"


@attrs.define
class Harness:
    fake: FakeBaiduServer
    runner: asyncio.Runner
    client: SwanAuthClient
    loop_errors: list[dict[str, Any]]


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    fake = FakeBaiduServer(secret=SECRET)
    fake.start_in_thread()
    # A loop factory keeps the runner from installing its loop as the thread's current one.
    runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
    loop_errors: list[dict[str, Any]] = []
    runner.get_loop().set_exception_handler(lambda _loop, context: loop_errors.append(context))
    client = SwanAuthClient(
        fake.client_id,
        fake.secret,
        endpoint=fake.url,
        max_attempts=MAX_ATTEMPTS,
        timeout=10.0,
        read_timeout=2.0,
        backoff=wait_none(),
        sleep=RecordingSleep(),
        retry_budget=RetryBudget(min_retries_per_second=1e6),
    )
    try:
        yield Harness(fake, runner, client, loop_errors)
        runner.run(client.aclose())
    finally:
        runner.close()
        fake.stop_thread()
    assert not loop_errors, [context.get("message") for context in loop_errors]


# ---------------------------------------------------------------------------------- strategies

token = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", fullmatch=True)
_FRAMING = {"connection", "content-length", "keep-alive", "proxy-connection", "te", "trailer"}
_FRAMING |= {"transfer-encoding", "upgrade"}
header_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), max_codepoint=0x2FFF) | st.just("\t"),
    max_size=40,
)
retry_after_values = st.one_of(
    st.integers(-5, 100).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 01 Jan 2100 00:00:00 GMT", "soon"]),
    header_text,
)
headers = st.lists(
    st.one_of(
        st.tuples(st.just("Retry-After"), retry_after_values),
        st.tuples(
            st.just("Content-Type"),
            st.sampled_from(["application/json", "text/html; charset=utf-8", "x/y; charset=nope"])
            | header_text,
        ),
        st.tuples(
            st.just("Content-Encoding"),
            st.sampled_from(["gzip", "deflate", "br", "zstd", "identity", "x-unknown", ""]),
        ),
        st.tuples(st.just("Location"), st.just("https://elsewhere.example/") | header_text),
        st.tuples(token.filter(lambda name: name.lower() not in _FRAMING), header_text),
    ),
    max_size=5,
)

good_answer = st.builds(
    lambda openid, key: {"openid": openid, "session_key": key},
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=44),
)
echoing_error = st.builds(
    lambda error: {"error": error, "error_description": f"sk={SECRET} was wrong"},
    st.sampled_from(["invalid_client", "slow_down", "whatever", SECRET]),
)
json_bodies = (json_values | baidu_like | good_answer | echoing_error).map(
    lambda value: json.dumps(value).encode()
)
bodies = st.binary(max_size=300) | json_bodies | st.just(b"x" * 20_000)


@st.composite
def answers(draw: st.DrawFn) -> Arbitrary:
    status = draw(
        st.sampled_from([200, 200, 400, 401, 429, 500, 503, 302, 307]) | st.integers(200, 999)
    )
    answer_headers = draw(headers)
    body = draw(bodies)
    # Sometimes a body that really is compressed, and says so.
    encoding = draw(st.sampled_from([None, None, "gzip", "deflate"]))
    if encoding is not None:
        body = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
        answer_headers = [*answer_headers, ("Content-Encoding", encoding)]
    return Arbitrary(status, answer_headers, body, spend=draw(st.booleans()))


def _keys_in(answer: Arbitrary) -> set[tuple[Any, Any]]:
    """The (openid, session_key) pairs a client could legitimately take from ``answer``."""
    candidates = [answer.body]
    for decompress in (gzip.decompress, zlib.decompress):
        with contextlib.suppress(OSError, EOFError, zlib.error):
            candidates.append(decompress(answer.body))
    found = set()
    for body in candidates:
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            found.add((value.get("openid"), value.get("session_key")))
    return found


# -------------------------------------------------------------------------------------- the test


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripted=st.lists(answers(), min_size=1, max_size=MAX_ATTEMPTS))
def test_any_answer_over_http_gives_a_key_or_a_swan_auth_error(
    harness: Harness, scripted: list[Arbitrary]
) -> None:
    fake, client = harness.fake, harness.client
    code = fake.issue_code()
    fake.script(code, *scripted)

    async def call() -> SessionKey | SwanAuthError:
        try:
            return await client.exchange(code)
        except SwanAuthError as error:
            return error

    # Anything else than a SessionKey or a SwanAuthError propagates and fails the example.
    result = harness.runner.run(call())
    requests = len(fake.requests_for(code))
    assert 1 <= requests <= MAX_ATTEMPTS
    event(type(result).__name__)

    if isinstance(result, SessionKey):
        grant = fake.grant_for(code)
        allowed = {(grant.openid, grant.session_key)}
        for answer in scripted[:requests]:
            if answer.status == 200:
                allowed |= _keys_in(answer)
        assert (result.openid, result.session_key) in allowed
    else:
        assert isinstance(result, SwanAuthError)
        assert result.attempts == requests
        for text in (str(result), repr(result), str(result.description)):
            assert SECRET not in text
            assert code not in text
    assert not harness.loop_errors, [context.get("message") for context in harness.loop_errors]
