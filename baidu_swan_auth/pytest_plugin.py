"""pytest fixtures that serve a fake Baidu endpoint.

Installing ``baidu-swan-auth`` registers this module as a pytest plugin, so the fixtures are
available in every test without imports:

```python
def test_login(fake_baidu):
    code = fake_baidu.issue_code(openid="user-1")
    ...  # exchange `code` against fake_baidu.url with fake_baidu.client_id / fake_baidu.secret
    assert fake_baidu.is_spent(code)
```

The fake runs on its own event loop in a daemon thread, so the same fixtures work in plain
synchronous tests, with pytest-asyncio, with anyio, or with anything else. Disable the plugin
with ``-p no:baidu_swan_auth``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from baidu_swan_auth.testing import FakeBaiduServer

__all__ = ["fake_baidu", "fake_baidu_env"]


@pytest.fixture
def fake_baidu() -> Iterator[FakeBaiduServer]:
    """A started [`FakeBaiduServer`][baidu_swan_auth.testing.FakeBaiduServer], fresh per test.

    It listens on ``127.0.0.1`` on a free port, accepts the default fake credentials
    (``fake_baidu.client_id`` / ``fake_baidu.secret``) and is stopped after the test. Issue
    codes with ``fake_baidu.issue_code()`` and script faults with ``fake_baidu.script(...)``.

    Yields:
        The running fake.
    """
    fake = FakeBaiduServer()
    fake.start_in_thread()
    try:
        yield fake
    finally:
        fake.stop_thread()


@pytest.fixture
def fake_baidu_env(fake_baidu: FakeBaiduServer, monkeypatch: pytest.MonkeyPatch) -> FakeBaiduServer:
    """The `fake_baidu` server, with the environment pointing at it.

    Sets ``BAIDU_SWAN_CLIENT_ID``, ``BAIDU_SWAN_SECRET``, ``BAIDU_SWAN_ENDPOINT`` and
    ``BAIDU_SWAN_OPENAPI_URL`` to the fake's values for the duration of the test, so code that
    configures itself from the environment (such as the CLI, or a v2 client) talks to the fake.

    Returns:
        The running fake.
    """
    monkeypatch.setenv("BAIDU_SWAN_CLIENT_ID", fake_baidu.client_id)
    monkeypatch.setenv("BAIDU_SWAN_SECRET", fake_baidu.secret)
    monkeypatch.setenv("BAIDU_SWAN_ENDPOINT", fake_baidu.url)
    monkeypatch.setenv("BAIDU_SWAN_OPENAPI_URL", fake_baidu.openapi_url)
    return fake_baidu
