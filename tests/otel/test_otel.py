"""OpenTelemetry traces and metrics (the ``otel`` extra), with the SDK's in-memory span exporter
and metric reader, against the fake over real HTTP. Every test also searches everything exported
for the codes, openids, session keys, tokens and the secret it used."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.trace import StatusCode

from baidu_swan_auth import CodeConsumedError, SessionKey
from baidu_swan_auth.legacy import LEGACY_ENDPOINT, legacy_rewrite_middleware
from baidu_swan_auth.otel import BaiduSwanAuthInstrumentor
from baidu_swan_auth.testing import Drop, ErrorStatus, FakeBaiduServer

from ..helpers import MakeClient, RecordingSleep
from .telemetry import Telemetry, secrets_of


async def test_a_successful_exchange_is_one_span_and_one_call(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    code = fake.issue_code()
    await make_client().exchange(code)

    [span] = telemetry.finished()
    assert span.name == "baidu_swan_auth exchange"
    attributes = dict(span.attributes or {})
    assert attributes == {
        "baidu_swan_auth.operation": "exchange",
        "baidu_swan_auth.api": "jscode2sessionkey",
        "server.address": "127.0.0.1",
        "server.port": fake.port,
        "baidu_swan_auth.attempts": 1,
        "baidu_swan_auth.outcome": "ok",
        "http.response.status_code": 200,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()
    assert telemetry.value("calls", operation="exchange", outcome="ok") == 1
    assert telemetry.value("call.duration", api="jscode2sessionkey", outcome="ok") == 1
    assert telemetry.value("attempts", outcome="ok") == 1
    assert telemetry.value("retries") is None
    telemetry.assert_hides(*secrets_of(fake, code))


async def test_a_retried_exchange_has_its_retry_as_an_event(
    fake: FakeBaiduServer, make_client: MakeClient, sleep: RecordingSleep, telemetry: Telemetry
) -> None:
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503, retry_after="1"))
    await make_client().exchange(code)

    [span] = telemetry.finished()
    assert span.attributes is not None
    assert span.attributes["baidu_swan_auth.attempts"] == 2
    assert span.attributes["baidu_swan_auth.outcome"] == "ok"
    [event] = span.events
    assert event.name == "baidu_swan_auth.retry"
    assert dict(event.attributes or {}) == {
        "baidu_swan_auth.attempt": 1,
        "baidu_swan_auth.retry.reason": "unavailable",
        "baidu_swan_auth.retry.wait": 1.0,
        "http.response.status_code": 503,
    }
    assert sleep.waits == [1.0]
    assert telemetry.value("retries", **{"retry.reason": "unavailable"}) == 1
    assert telemetry.value("attempts", outcome="unavailable") == 1
    assert telemetry.value("attempts", outcome="ok") == 1
    assert telemetry.value("calls", outcome="ok") == 1
    telemetry.assert_hides(*secrets_of(fake, code))


async def test_a_consumed_code_is_an_error_span_with_its_kind(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    code = fake.issue_code()
    fake.script(code, Drop(spend=True))
    with pytest.raises(CodeConsumedError):
        await make_client().exchange(code)

    [span] = telemetry.finished()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "code_consumed"
    assert span.attributes["baidu_swan_auth.outcome"] == "code_consumed"
    assert span.attributes["http.response.status_code"] == 400
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "code_consumed"
    assert [event.attributes["baidu_swan_auth.retry.reason"] for event in span.events] == [
        "transport"
    ]
    assert telemetry.value("calls", outcome="code_consumed") == 1
    telemetry.assert_hides(*secrets_of(fake, code), "invalid_grant")


async def test_a_token_rejection_and_its_renewal(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    client = make_client(api="getsessionkey", openapi_url=fake.openapi_url)
    first = fake.issue_code()
    await client.exchange(first)
    fake.revoke_tokens()
    second = fake.issue_code()
    await client.exchange(second)
    openid = fake.grant_for(second).openid
    await client.unionid(openid)

    exchanges = telemetry.named("baidu_swan_auth exchange")
    tokens = telemetry.named("baidu_swan_auth token")
    [unionid] = telemetry.named("baidu_swan_auth unionid")
    assert len(exchanges) == 2
    assert len(tokens) == 2
    renewed = exchanges[1]
    assert renewed.attributes is not None
    assert renewed.attributes["baidu_swan_auth.api"] == "getsessionkey"
    assert renewed.attributes["baidu_swan_auth.attempts"] == 2
    [event] = renewed.events
    assert event.attributes is not None
    assert event.attributes["baidu_swan_auth.retry.reason"] == "token_rejected"
    assert event.attributes["baidu_swan_auth.retry.wait"] == 0.0
    # The renewal runs for the exchange that needed it: its span is the exchange's child.
    assert tokens[1].parent is not None
    assert renewed.context is not None
    assert tokens[1].parent.span_id == renewed.context.span_id
    assert unionid.attributes is not None
    assert unionid.attributes["baidu_swan_auth.api"] == "getunionid"
    assert telemetry.value("token.rejections", error_code="110") == 1
    assert telemetry.value("token.fetches", outcome="ok") == 2
    assert telemetry.value("calls", operation="token", api="token") == 2
    telemetry.assert_hides(*secrets_of(fake, first, second))


async def test_a_bulk_stream_reports_its_calls_in_flight_and_its_pace(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    codes = [fake.issue_code() for _ in range(12)]
    outcomes = [
        outcome
        async for outcome in make_client().exchange_many(codes, concurrency=4, rate=500)
    ]

    assert all(outcome.ok for outcome in outcomes)
    assert telemetry.value("calls", operation="exchange", outcome="ok") == 12
    assert len(telemetry.named("baidu_swan_auth exchange")) == 12
    assert telemetry.points("baidu_swan_auth.bulk.in_flight") == [({}, 0)]
    assert telemetry.points("baidu_swan_auth.bulk.pace") == [({}, 500.0)]
    telemetry.assert_hides(*secrets_of(fake, *codes))


async def test_our_span_is_the_parent_of_the_aiohttp_client_spans(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    aiohttp_instrumentor = AioHttpClientInstrumentor()
    aiohttp_instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        code = fake.issue_code()
        fake.script(code, ErrorStatus(503))
        await make_client().exchange(code)
    finally:
        aiohttp_instrumentor.uninstrument()

    [ours] = telemetry.named("baidu_swan_auth exchange")
    http = [span for span in telemetry.finished() if span is not ours]
    assert len(http) == 2, [span.name for span in http]
    assert ours.context is not None
    for span in http:
        assert span.parent is not None
        assert span.parent.span_id == ours.context.span_id
    telemetry.assert_hides(*secrets_of(fake, code))


async def test_a_url_filter_keeps_a_legacy_gets_secret_out_of_the_aiohttp_client_spans(
    fake: FakeBaiduServer, telemetry: Telemetry
) -> None:
    def without_query(url: Any) -> str:
        return str(url.with_query(None))

    aiohttp_instrumentor = AioHttpClientInstrumentor()
    aiohttp_instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, url_filter=without_query
    )
    try:
        code = fake.issue_code()
        async with aiohttp.ClientSession(
            middlewares=[legacy_rewrite_middleware(fake.url)]
        ) as session:
            query = {"code": code, "client_id": fake.client_id, "sk": fake.secret}
            with pytest.warns(DeprecationWarning, match="getSessionKeyByCode"):
                async with session.get(LEGACY_ENDPOINT, params=query) as response:
                    answer = await response.json()
    finally:
        aiohttp_instrumentor.uninstrument()

    grant = fake.grant_for(code)
    assert SessionKey(**answer) == SessionKey(grant.openid, grant.session_key)
    [span] = telemetry.finished()
    attributes = dict(span.attributes or {})
    # The caller's URL, recorded before the middleware moved the query into a form body: the
    # filter dropped its query, the secret with it. (Old or new HTTP semantic conventions.)
    assert attributes.get("url.full", attributes.get("http.url")) == LEGACY_ENDPOINT
    telemetry.assert_hides(*secrets_of(fake, code))


async def test_uninstrumented_calls_export_nothing(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    exported = Telemetry()
    instrumentor = BaiduSwanAuthInstrumentor()
    instrumentor.instrument(
        tracer_provider=exported.tracer_provider, meter_provider=exported.meter_provider
    )
    instrumentor.uninstrument()
    await make_client().exchange(fake.issue_code())
    assert exported.finished() == []
    assert exported.points("baidu_swan_auth.calls") == []


def test_importing_the_package_imports_no_opentelemetry_module() -> None:
    probe = (
        "import sys, asyncio, baidu_swan_auth, baidu_swan_auth.bulk, baidu_swan_auth.cli;"
        "found = sorted(m for m in sys.modules if m.startswith('opentelemetry'));"
        "print(found); sys.exit(1 if found else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_calls_under_way_finish_when_the_instrumentation_stops(
    fake: FakeBaiduServer, make_client: MakeClient, telemetry: Telemetry
) -> None:
    client = make_client()
    code = fake.issue_code()
    fake.token_delay = 0.0
    fake.script(code, ErrorStatus(503))
    started = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0)
    BaiduSwanAuthInstrumentor().uninstrument()
    await started
    [span] = telemetry.finished()
    assert span.attributes is not None
    assert span.attributes["baidu_swan_auth.outcome"] == "ok"
    BaiduSwanAuthInstrumentor().instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
