"""Proxies: an explicit ``proxy=``, or the environment read once when the session is created."""

from __future__ import annotations

import pytest

from baidu_swan_auth import TransportError
from baidu_swan_auth.testing import FakeBaiduServer

from ..helpers import MakeClient

# Nothing listens there: a request only succeeds if it went through the proxy.
UNREACHABLE = "http://127.0.0.2:9/oauth/jscode2sessionkey"


@pytest.fixture(autouse=True)
def _clean_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_explicit_proxy(fake: FakeBaiduServer, make_client: MakeClient) -> None:
    # The fake doubles as a forward proxy: it receives the absolute-form request line.
    client = make_client(endpoint=UNREACHABLE, proxy=fake.base_url)
    key = await client.exchange(fake.issue_code(openid="via-proxy"))
    assert key.openid == "via-proxy"


async def test_proxy_from_the_environment(
    fake: FakeBaiduServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", fake.base_url)
    client = make_client(endpoint=UNREACHABLE)
    key = await client.exchange(fake.issue_code(openid="via-env-proxy"))
    assert key.openid == "via-env-proxy"


async def test_trust_env_false_ignores_the_environment(
    fake: FakeBaiduServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", fake.base_url)
    client = make_client(endpoint=UNREACHABLE, trust_env=False, max_attempts=1)
    with pytest.raises(TransportError):
        await client.exchange(fake.issue_code())
    assert fake.requests == []


async def test_no_proxy_is_honoured(
    fake: FakeBaiduServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.2:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = make_client()
    key = await client.exchange(fake.issue_code(openid="no-proxy"))
    assert key.openid == "no-proxy"
