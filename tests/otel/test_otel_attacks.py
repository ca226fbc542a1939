"""Hostile tests of the OpenTelemetry instrumentation: parentage under concurrency, context leaks
after errors, cancellations, deadlines and aclose, exact metrics, secrets and cardinality, a
failing instrumentation, instrument()/uninstrument() under load, and the no-import guarantee."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import string
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from baidu_swan_auth import (
    ApiError,
    ClientClosedError,
    ExchangeTimeoutError,
    RetryBudget,
    ServiceUnavailableError,
    SwanAuthError,
)
from baidu_swan_auth.otel import BaiduSwanAuthInstrumentor
from baidu_swan_auth.testing import (
    GETUNIONID_PATH,
    TOKEN_PATH,
    Delay,
    Drop,
    ErrnoBody,
    ErrorStatus,
    FakeBaiduServer,
)

from ..helpers import MakeClient
from .telemetry import Telemetry, instrument, secrets_of

# --------------------------------------------------------------------------- helpers


@pytest.fixture
def otel_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every WARNING or worse logged while the test runs; none may come from OpenTelemetry's
    context machinery ("Failed to detach context")."""
    caplog.set_level(logging.WARNING)
    yield caplog
    bad = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("opentelemetry") and record.levelno >= logging.WARNING
    ]
    assert not bad, bad


def _current() -> trace.Span:
    return trace.get_current_span()


def _no_current_span() -> bool:
    return not _current().get_span_context().is_valid


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    span_id: int = span.context.span_id
    return span_id


#: Every metric label the how-to allows, and the values each may take.
_KINDS = {
    "ok", "error", "invalid_input", "configuration", "usage", "api_error", "invalid_code",
    "code_consumed", "invalid_client", "token_rejected", "unavailable", "transport", "timeout",
    "closed", "response", "decrypt", "CancelledError",
}  # fmt: skip
_LABELS: dict[str, set[Any]] = {
    "baidu_swan_auth.operation": {"exchange", "token", "unionid"},
    "baidu_swan_auth.api": {"jscode2sessionkey", "getsessionkey", "token", "getunionid"},
    "baidu_swan_auth.outcome": _KINDS,
    "baidu_swan_auth.retry.reason": _KINDS,
    "baidu_swan_auth.error_code": {"110", "111"},
}


def _assert_bounded_labels(telemetry: Telemetry) -> None:
    for metric, labels, _ in telemetry.all_points():
        for key, value in labels.items():
            assert key in _LABELS, (metric, key, value)
            assert value in _LABELS[key], (metric, key, value)


# --------------------------------------------------------------------------- breaks


class _RaisingOnEnd(SpanProcessor):
    """A buggy span processor of the application: on_end raises (the SDK's multi-processor
    lets it propagate out of span.end())."""

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("exporter bug")


async def test_a_span_whose_end_raises_does_not_stay_current_after_the_call(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    telemetry = Telemetry(_RaisingOnEnd())
    instrumentor = instrument(telemetry)
    try:
        client = make_client()
        assert _no_current_span()
        await client.exchange(fake.issue_code())
        # _CallSpan.finish: span.end() raises in the finally, so context.detach is skipped and
        # the call's span stays the task's current span, parenting everything after it.
        assert _no_current_span(), _current()
        await client.exchange(fake.issue_code())
        assert _no_current_span(), _current()
    finally:
        instrumentor.uninstrument()


async def test_a_failing_instrumentation_does_not_log_an_error_per_call_forever(
    fake: FakeBaiduServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = Telemetry(_RaisingOnEnd())
    instrumentor = instrument(telemetry)
    caplog.set_level(logging.ERROR, logger="baidu_swan_auth")
    try:
        client = make_client()
        for _ in range(20):
            # Each call in its own task, so that the context leak above plays no part.
            await asyncio.create_task(client.exchange(fake.issue_code()))
    finally:
        instrumentor.uninstrument()
    failures = [r for r in caplog.records if r.name == "baidu_swan_auth"]
    # One logger.exception (with a traceback) per call: 20 for 20 logins, forever.
    assert len(failures) <= 2, len(failures)


async def test_the_token_fetch_of_a_first_v2_exchange_is_its_child(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    client = make_client(api="getsessionkey", openapi_url=fake.openapi_url)
    request_tracer = telemetry.tracer_provider.get_tracer("app")
    with request_tracer.start_as_current_span("login request"):
        await client.exchange(fake.issue_code())
    [exchange] = telemetry.named("baidu_swan_auth exchange")
    [token] = telemetry.named("baidu_swan_auth token")
    # The how-to: the token span is "the child of the call that needed it". The first call's
    # fetch runs in TokenCalls.run before engine.run starts the exchange's span: a sibling.
    assert token.parent is not None
    assert token.parent.span_id == _span_id(exchange)


async def test_a_v2_exchange_whose_token_fetch_fails_still_has_its_span_and_call(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    client = make_client(api="getsessionkey", openapi_url=fake.openapi_url)
    fake.script_path(TOKEN_PATH, ErrorStatus(401, error="invalid_client"))
    with pytest.raises(SwanAuthError) as caught:
        await client.exchange(fake.issue_code())
    # One span per call: the failed exchange leaves only a token span, and no exchange call
    # in baidu_swan_auth.calls (TokenCalls.run raises before engine.run starts it).
    assert len(telemetry.named("baidu_swan_auth exchange")) == 1
    assert telemetry.value("calls", operation="exchange", outcome=caught.value.kind) == 1


async def test_span_attempts_agree_with_the_error_when_the_deadline_passes_in_a_wait(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    async def slow_sleep(seconds: float) -> None:
        await asyncio.sleep(0.15)  # longer than planned: the deadline passes meanwhile

    client = make_client(timeout=0.1, sleep=slow_sleep)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503))
    with pytest.raises(ServiceUnavailableError) as caught:
        await client.exchange(code)
    assert caught.value.attempts == 1
    [span] = telemetry.finished()
    assert span.attributes is not None
    assert telemetry.value("attempts") == 1
    # _engine.run: attempt += 1 and flight.attempts = attempt before the `remaining <= 0`
    # check, which raises with attempt - 1; finish() gets flight.attempts: one too many.
    assert span.attributes["baidu_swan_auth.attempts"] == caught.value.attempts


# --------------------------------------------------------------------------- what held


async def test_concurrent_calls_each_have_their_own_span_under_their_own_parent(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry, otel_logs: Any
) -> None:
    aiohttp_instrumentor = AioHttpClientInstrumentor()
    aiohttp_instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    app = telemetry.tracer_provider.get_tracer("app")
    client = make_client()
    codes = [fake.issue_code() for _ in range(30)]
    for index, code in enumerate(codes):
        faults = [ErrorStatus(503)] if index % 3 == 0 else []
        fake.script(code, *faults, Delay(random.uniform(0, 0.02)))
    parents: dict[str, int] = {}

    async def one(code: str) -> None:
        with app.start_as_current_span(f"request {code[-6:]}") as parent:
            parents[code] = parent.get_span_context().span_id
            await asyncio.sleep(random.uniform(0, 0.01))
            await client.exchange(code)
            assert _current() is parent
        assert _no_current_span()

    try:
        await asyncio.gather(*(one(code) for code in codes))
    finally:
        aiohttp_instrumentor.uninstrument()
    ours = telemetry.named("baidu_swan_auth exchange")
    assert len(ours) == 30
    assert {span.parent.span_id for span in ours if span.parent} == set(parents.values())
    by_id = {_span_id(span): span for span in ours}
    http = [span for span in telemetry.finished() if span.name not in ("baidu_swan_auth exchange")]
    http = [span for span in http if not span.name.startswith("request ")]
    assert len(http) == 30 + 10
    children: dict[int, int] = {}
    for span in http:
        assert span.parent is not None
        assert span.parent.span_id in by_id
        children[span.parent.span_id] = children.get(span.parent.span_id, 0) + 1
    for span_id, span in by_id.items():
        assert span.attributes is not None
        assert children[span_id] == span.attributes["baidu_swan_auth.attempts"]
    assert telemetry.value("calls", outcome="ok") == 30
    assert telemetry.value("attempts") == 40
    assert telemetry.value("retries", **{"retry.reason": "unavailable"}) == 10
    telemetry.assert_hides(*secrets_of(fake, *codes))


async def test_no_span_stays_current_after_errors_cancellations_deadlines_and_aclose(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry, otel_logs: Any
) -> None:
    client = make_client()
    assert _no_current_span()

    # an error
    code = fake.issue_code()
    fake.script(code, ErrorStatus(400, error="invalid_grant"))
    with pytest.raises(SwanAuthError):
        await client.exchange(code)
    assert _no_current_span()

    # the caller's own deadline (asyncio.timeout cancels this very task)
    code = fake.issue_code()
    fake.script(code, Delay(1.0))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await client.exchange(code)
    assert _no_current_span()

    # the call's deadline
    code = fake.issue_code()
    fake.script(code, Delay(1.0))
    with pytest.raises(ExchangeTimeoutError):
        await client.exchange(code, timeout=0.05)
    assert _no_current_span()

    # a cancelled task; its context is its own, the caller's stays clean
    code = fake.issue_code()
    fake.script(code, Delay(1.0))
    task = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _no_current_span()

    # aclose mid-call, from another task, and from this one while others run
    code = fake.issue_code()
    fake.script(code, Delay(1.0))

    async def closing_soon() -> None:
        await asyncio.sleep(0.02)
        await client.aclose()

    closer = asyncio.create_task(closing_soon())
    with pytest.raises(ClientClosedError):
        await client.exchange(code)
    await closer
    assert _no_current_span()

    spans = telemetry.finished()
    assert len(spans) == 5
    outcomes = [str(span.attributes["baidu_swan_auth.outcome"]) for span in spans]  # type: ignore[index]
    assert outcomes[:4] == ["invalid_code", "CancelledError", "timeout", "CancelledError"]
    assert telemetry.value("calls") == 5


async def test_a_call_aclose_interrupts_is_recorded_as_closed_like_the_error_it_raises(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    client = make_client()
    code = fake.issue_code()
    fake.script(code, Delay(1.0))
    running = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.02)
    await client.aclose()
    with pytest.raises(ClientClosedError) as caught:
        await running
    [span] = telemetry.finished()
    assert span.attributes is not None
    # The engine sees the CancelledError aclose() used; exchange() turns it into
    # ClientClosedError (kind "closed") only after run() has finished the span: the span,
    # error.type and baidu_swan_auth.calls say "CancelledError", the caller got "closed".
    assert span.attributes["baidu_swan_auth.outcome"] == caught.value.kind
    assert telemetry.value("calls", outcome="closed") == 1


async def test_attacker_chosen_and_huge_error_text_never_reaches_telemetry(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry, otel_logs: Any
) -> None:
    client = make_client()
    evil = "evil-" + fake.secret
    huge = "".join(random.choices(string.ascii_letters, k=20_000))
    marker = "zq" + "".join(random.choices(string.ascii_lowercase, k=24))
    codes = [fake.issue_code() for _ in range(5)]
    fake.script(codes[0], ErrorStatus(400, error=evil, description=evil))
    fake.script(codes[1], ErrorStatus(200, error=huge, description=huge))
    fake.script(codes[2], ErrnoBody(40001, msg=f"{marker} {codes[2]}"))
    fake.script(codes[3], ErrorStatus(503, error=marker, description=marker), ErrnoBody(110))
    fake.script(codes[4], ErrorStatus(429, error=f"slow_down {marker}", retry_after="0"))
    for code in codes:
        with contextlib.suppress(SwanAuthError):
            await client.exchange(code)
    assert len(telemetry.finished()) == 5
    telemetry.assert_hides(*secrets_of(fake, *codes), evil, huge[:64], marker)
    _assert_bounded_labels(telemetry)
    for span in telemetry.finished():
        assert span.status.description is None or span.status.description in _KINDS


async def test_retry_events_and_metrics_are_exact(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry, otel_logs: Any
) -> None:
    client = make_client()
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503, retry_after="1"), Drop(), ErrorStatus(502))
    await client.exchange(code, max_attempts=4)
    [span] = telemetry.finished()
    reasons = [
        (
            event.attributes["baidu_swan_auth.attempt"],  # type: ignore[index]
            event.attributes["baidu_swan_auth.retry.reason"],  # type: ignore[index]
            event.attributes["baidu_swan_auth.retry.wait"],  # type: ignore[index]
        )
        for event in span.events
    ]
    assert reasons == [(1, "unavailable", 1.0), (2, "transport", 0.0), (3, "unavailable", 0.0)]
    assert telemetry.value("attempts") == 4
    assert telemetry.value("retries") == 3
    assert telemetry.value("calls") == 1


async def test_a_tiny_retry_budget_refusal_is_counted_once_and_is_no_retry(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    client = make_client(
        retry_budget=RetryBudget(min_retries_per_second=0.0, percent_can_retry=0.0)
    )
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503))
    with pytest.raises(ServiceUnavailableError):
        await client.exchange(code)
    [span] = telemetry.finished()
    assert span.events == ()
    assert telemetry.value("retry_budget.refusals", operation="exchange") == 1
    assert telemetry.value("retries") is None
    assert telemetry.value("attempts") == 1
    assert telemetry.value("calls", outcome="unavailable") == 1


async def test_v2_renewal_counts_and_parents(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry, otel_logs: Any
) -> None:
    client = make_client(api="getsessionkey", openapi_url=fake.openapi_url)
    codes = [fake.issue_code() for _ in range(6)]
    await client.exchange(codes[0])
    fake.revoke_tokens()
    fake.token_delay = 0.02
    # Five concurrent calls meet the refused token; one renewal serves them all.
    await asyncio.gather(*(client.exchange(code) for code in codes[1:]))
    assert _no_current_span()
    exchanges = telemetry.named("baidu_swan_auth exchange")
    tokens = telemetry.named("baidu_swan_auth token")
    assert len(exchanges) == 6
    assert len(tokens) == 2
    assert telemetry.value("token.fetches", outcome="ok") == 2
    assert telemetry.value("token.rejections", error_code="110") == 5
    assert telemetry.value("retries", **{"retry.reason": "token_rejected"}) == 5
    renewal_parent = tokens[1].parent
    assert renewal_parent is not None
    assert renewal_parent.span_id in {_span_id(span) for span in exchanges[1:]}
    telemetry.assert_hides(*secrets_of(fake, *codes))


@pytest.mark.parametrize("how", ["break", "aclose", "cancel"])
async def test_bulk_in_flight_returns_to_zero_when_the_stream_is_left_early(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry, how: str, otel_logs: Any
) -> None:
    client = make_client()
    codes = [fake.issue_code() for _ in range(20)]
    for code in codes[1:]:
        fake.script(code, Delay(2.0))
    stream = client.exchange_many(codes, concurrency=8, rate=1000)
    if how == "cancel":

        async def consume() -> None:
            async for _ in stream:
                await asyncio.sleep(10)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()
    else:
        async for _ in stream:
            break
        if how == "aclose":
            await stream.aclose()
        else:
            del stream
    for _ in range(20):
        await asyncio.sleep(0)
    assert telemetry.points("baidu_swan_auth.bulk.in_flight") == [({}, 0)]
    assert telemetry.points("baidu_swan_auth.bulk.pace") == [({}, 1000.0)]
    assert _no_current_span()
    spans = telemetry.named("baidu_swan_auth exchange")
    assert telemetry.value("calls") == len(spans)
    _assert_bounded_labels(telemetry)


async def test_coalesced_callers_share_one_span_and_count_as_one_call(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry, otel_logs: Any
) -> None:
    """Documents what happens: a joiner (same code, same client, while the first call runs)
    gets no span of its own and is not in baidu_swan_auth.calls; its trace does not link to the
    request made for it. Same for duplicates in exchange_many."""
    client = make_client()
    app = telemetry.tracer_provider.get_tracer("app")
    code = fake.issue_code()
    fake.script(code, Delay(0.05))

    async def caller(name: str) -> None:
        with app.start_as_current_span(name):
            await client.exchange(code)

    await asyncio.gather(caller("first"), caller("joiner"))
    [span] = telemetry.named("baidu_swan_auth exchange")
    [first] = telemetry.named("first")
    assert span.parent is not None
    assert span.parent.span_id == _span_id(first)
    assert telemetry.value("calls") == 1

    dup = fake.issue_code()
    fake.script(dup, Delay(0.05))
    outcomes = [outcome async for outcome in client.exchange_many([dup, dup, dup])]
    assert len(outcomes) == 3
    assert all(outcome.ok for outcome in outcomes)
    assert len(telemetry.named("baidu_swan_auth exchange")) == 2
    assert telemetry.value("calls") == 2
    assert telemetry.points("baidu_swan_auth.bulk.in_flight") == [({}, 0)]


async def test_instrument_and_uninstrument_repeated_and_from_inside_running_calls(
    fake: FakeBaiduServer, make_client: MakeClient, otel_logs: Any
) -> None:
    first, second = Telemetry(), Telemetry()
    instrumentor = BaiduSwanAuthInstrumentor()
    client = make_client()
    slow = [fake.issue_code() for _ in range(3)]
    for code in slow:
        fake.script(code, Delay(0.05))
    # started uninstrumented, instrumented mid-call: the call stays unobserved
    running = asyncio.create_task(client.exchange(slow[0]))
    await asyncio.sleep(0.01)
    instrument(first)
    await running
    assert first.finished() == []
    # started under `first`; uninstrumented and re-instrumented with `second` mid-call
    running = asyncio.create_task(client.exchange(slow[1]))
    await asyncio.sleep(0.01)
    instrumentor.uninstrument()
    instrumentor.uninstrument()
    instrument(second)
    await running
    assert len(first.finished()) == 1
    assert second.finished() == []
    await client.exchange(slow[2])
    assert len(first.finished()) == 1
    assert len(second.finished()) == 1
    assert first.value("calls") == 1
    assert second.value("calls") == 1
    instrumentor.uninstrument()
    for _ in range(3):
        instrument(first)
        instrumentor.uninstrument()
    await client.exchange(fake.issue_code())
    assert len(first.finished()) == 1
    assert _no_current_span()


async def test_a_provider_whose_every_method_raises_never_fails_a_login(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    class Boom:
        def __getattr__(self, name: str) -> Any:
            def raising(*_: Any, **__: Any) -> Any:
                raise RuntimeError(name)

            return raising

    class Provider:
        def get_tracer(self, *_: Any, **__: Any) -> Any:
            return Boom()

        def get_meter(self, *_: Any, **__: Any) -> Any:
            class Meter:
                def __getattr__(self, name: str) -> Any:
                    return lambda *_, **__: Boom()

            return Meter()

    instrumentor = BaiduSwanAuthInstrumentor()
    instrumentor.instrument(tracer_provider=Provider(), meter_provider=Provider())
    try:
        client = make_client(api="getsessionkey", openapi_url=fake.openapi_url)
        code = fake.issue_code()
        fake.script(code, ErrorStatus(503))
        await client.exchange(code)
        outcomes = [o async for o in client.exchange_many([fake.issue_code()], rate=100)]
        assert outcomes[0].ok
        assert _no_current_span()
    finally:
        instrumentor.uninstrument()


def test_using_the_client_uninstrumented_imports_no_opentelemetry_module() -> None:
    probe = """
import asyncio, sys
import baidu_swan_auth
from baidu_swan_auth import SwanAuthClient
from baidu_swan_auth.testing import ErrorStatus, FakeBaiduServer

async def main():
    async with FakeBaiduServer() as fake:
        code = fake.issue_code()
        fake.script(code, ErrorStatus(503))
        async with SwanAuthClient(fake.client_id, fake.secret, endpoint=fake.url) as client:
            await client.exchange(code)
            [o async for o in client.exchange_many([fake.issue_code()], rate=100)]
        async with SwanAuthClient(fake.client_id, fake.secret, endpoint=fake.url,
                                  api="getsessionkey", openapi_url=fake.openapi_url) as v2:
            code = fake.issue_code()
            await v2.exchange(code)
            await v2.unionid(fake.grant_for(code).openid)

asyncio.run(main())
found = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
print(found)
sys.exit(1 if found else 0)
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_unionid_and_api_errors_keep_baidus_text_out(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    client = make_client(api="getsessionkey", openapi_url=fake.openapi_url)
    code = fake.issue_code()
    await client.exchange(code)
    openid = fake.grant_for(code).openid
    marker = "evil-" + "".join(random.choices(string.ascii_lowercase, k=20))
    fake.script_path(GETUNIONID_PATH, ErrnoBody(40001, msg=f"{marker} {openid}"))
    with pytest.raises(ApiError):
        await client.unionid(openid)
    [unionid] = telemetry.named("baidu_swan_auth unionid")
    assert unionid.attributes is not None
    assert unionid.attributes["baidu_swan_auth.outcome"] == "api_error"
    telemetry.assert_hides(*secrets_of(fake, code), marker)
    _assert_bounded_labels(telemetry)
