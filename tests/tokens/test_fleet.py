"""A fleet sharing one access token through a real Redis, against the fake over real HTTP.

Several processes (real ones, running ``fleet_worker.py``, or several clients with stores of
their own standing in for them) fetch one token between them, recover from a revocation with one
more fetch, renew before the expiry with one fetch, ask Redis nothing while warm, never write
the AppSecret to Redis, and go on logging users in when Redis is down, hangs or holds garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from baidu_swan_auth import AccessToken, SwanAuthClient
from baidu_swan_auth.redis import RedisTokenStore
from baidu_swan_auth.testing import GETSESSIONKEY_PATH, FakeBaiduServer
from tests.helpers import MakeClient

from .conftest import RedisServer

pytestmark = pytest.mark.asyncio

WORKER = Path(__file__).with_name("fleet_worker.py")
REPO = Path(__file__).resolve().parents[2]
FLEET_SIZE = 4
#: The fake's token API waits this long: every process of a fleet reaches Redis meanwhile.
TOKEN_DELAY = 0.3
STORE_FAILED = "token store failed"

MakeStore = Callable[..., RedisTokenStore]


def _token_key(client_id: str) -> str:
    return f"baidu_swan_auth:token:{client_id}"


def _lock_key(client_id: str) -> str:
    return f"baidu_swan_auth:lock:{client_id}"


def _v2(make_client: MakeClient, fake: FakeBaiduServer, **settings: Any) -> SwanAuthClient:
    return make_client(api="getsessionkey", openapi_url=fake.openapi_url, **settings)


def _sent_tokens(fake: FakeBaiduServer) -> list[str]:
    return [
        request.form["access_token"]
        for request in fake.requests
        if request.path == GETSESSIONKEY_PATH
    ]


@contextlib.asynccontextmanager
async def _stores() -> AsyncIterator[MakeStore]:
    stores: list[RedisTokenStore] = []

    def make(url: str, **settings: Any) -> RedisTokenStore:
        store = RedisTokenStore.from_url(url, **settings)
        stores.append(store)
        return store

    try:
        yield make
    finally:
        for store in stores:
            await store.aclose()


@pytest.fixture
async def make_store(redis_client: redis.asyncio.Redis) -> AsyncIterator[MakeStore]:
    """Stores with a Redis client each (one per "process"), closed after the test. Requesting
    ``redis_client`` empties the database first."""
    async with _stores() as make:
        yield make


@pytest.fixture
async def make_offline_store() -> AsyncIterator[MakeStore]:
    """As ``make_store``, for a Redis that is down or hangs (nothing to empty)."""
    async with _stores() as make:
        yield make


async def _stored(redis_client: redis.asyncio.Redis, client_id: str) -> dict[str, Any]:
    raw = await redis_client.get(_token_key(client_id))
    assert raw is not None, "no token in Redis"
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


async def _until(check: Callable[[], Any], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not happen within {within} s"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------- real processes


class _Worker:
    """One ``fleet_worker.py`` process, spoken to one JSON line at a time, every wait bounded."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr

    @classmethod
    async def start(cls, settings: dict[str, Any], stderr: Path) -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with stderr.open("wb") as errors:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                json.dumps(settings),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                cwd=REPO,
                env=env,
            )
        return cls(process, stderr)

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")

    async def receive(self, within: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), within)
        except TimeoutError:
            pytest.fail(f"a worker did not answer within {within} s:\n{self.errors()}")
        if not line:
            pytest.fail(f"a worker ended (exit {self.process.returncode}):\n{self.errors()}")
        answer: dict[str, Any] = json.loads(line)
        assert "error" not in answer, f"{answer['error']}\n{self.errors()}"
        return answer

    async def stop(self) -> None:
        """Ask the worker to quit; kill it if it does not within a few seconds."""
        process = self.process
        if process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.send({"quit": True})
                assert process.stdin is not None
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await asyncio.wait_for(process.wait(), 5.0)

    def errors(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr.read_text(errors="replace")[-3000:]
        return ""


async def _round(workers: list[_Worker], count: int) -> list[dict[str, Any]]:
    """Every worker exchanges ``count`` codes at once, all starting at the same moment."""
    at = time.time() + 0.2
    for worker in workers:
        worker.send({"exchange": count, "at": at})
    return [await worker.receive(within=10.0) for worker in workers]


async def test_a_fleet_of_processes_fetches_one_token_and_renews_a_revoked_one_once(
    redis_client: redis.asyncio.Redis, redis_url: str, tmp_path: Path
) -> None:
    with FakeBaiduServer(auto_issue=True) as fake:
        fake.token_delay = TOKEN_DELAY
        settings = {
            "openapi_url": fake.openapi_url,
            "endpoint": fake.url,
            "redis_url": redis_url,
            "client_id": fake.client_id,
            "secret": fake.secret,
        }
        workers: list[_Worker] = []
        try:
            for number in range(FLEET_SIZE):
                workers.append(await _Worker.start(settings, tmp_path / f"worker-{number}.err"))
            for worker in workers:
                assert await worker.receive(within=15.0) == {"ready": True}
            assert fake.token_fetches == 0

            # A cold fleet, every process racing for the token: one fetch between them.
            cold = await _round(workers, 3)
            starts = [answer["started"] for answer in cold]
            assert max(starts) - min(starts) < TOKEN_DELAY / 2, "the processes did not race"
            assert all(len(answer["openids"]) == 3 for answer in cold)
            assert fake.token_fetches == 1
            [first] = fake.tokens_issued
            assert {answer["token"] for answer in cold} == {first}
            assert (await _stored(redis_client, fake.client_id))["token"] == first

            # Baidu revokes it: every process is refused, and one more fetch serves them all.
            fake.revoke_tokens()
            revoked = await _round(workers, 3)
            assert all(len(answer["openids"]) == 3 for answer in revoked)
            assert fake.token_fetches == 2
            second = fake.tokens_issued[1]
            assert {answer["token"] for answer in revoked} == {second}
            assert (await _stored(redis_client, fake.client_id))["token"] == second
            # Every exchange went through: 4 x 3 codes twice, each spent once.
            openids = [openid for answer in cold + revoked for openid in answer["openids"]]
            assert len(set(openids)) == 2 * FLEET_SIZE * 3

            for worker in workers:
                await worker.stop()
                assert worker.process.returncode == 0, worker.errors()
        finally:
            for worker in workers:
                if worker.process.returncode is None:
                    worker.process.kill()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(worker.process.wait(), 5.0)


# ------------------------------------------------------------------- outages and garbage


@pytest.mark.parametrize("redis_state", ["down", "silent"])
async def test_logins_go_on_without_redis_with_one_warning_and_one_fetch(
    redis_state: str,
    request: pytest.FixtureRequest,
    fake: FakeBaiduServer,
    make_client: MakeClient,
    make_offline_store: MakeStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="baidu_swan_auth")
    url = request.getfixturevalue(f"{redis_state}_redis_url")
    client = _v2(make_client, fake, token_store=make_offline_store(url, timeout=0.5))
    deadline = 4.0

    # Many cold calls at once: they share one renewal, which gets past Redis in time.
    started = time.monotonic()
    keys = await asyncio.gather(
        *(client.exchange(fake.issue_code(openid=f"u{n}"), timeout=deadline) for n in range(20))
    )
    assert [key.openid for key in keys] == [f"u{n}" for n in range(20)]
    assert time.monotonic() - started < deadline
    # Then many warm ones, none of which waits on Redis.
    started = time.monotonic()
    for _ in range(20):
        await client.exchange(fake.issue_code(), timeout=deadline)
    assert time.monotonic() - started < 1.0
    assert fake.token_fetches == 1

    # A revocation needs one more renewal: one more fetch, and still one warning.
    fake.revoke_tokens()
    started = time.monotonic()
    await asyncio.gather(*(client.exchange(fake.issue_code(), timeout=deadline) for _ in range(5)))
    assert time.monotonic() - started < deadline
    assert fake.token_fetches == 2

    warnings = [r.getMessage() for r in caplog.records if r.name == "baidu_swan_auth"]
    assert len([message for message in warnings if STORE_FAILED in message]) == 1, warnings
    assert "the token store answers again" not in warnings, warnings


async def test_a_silent_redis_holds_a_call_no_longer_than_the_store_timeout(
    fake: FakeBaiduServer,
    make_client: MakeClient,
    make_offline_store: MakeStore,
    silent_redis_url: str,
) -> None:
    # The store's timeout is "seconds a client waits on the store for one token, the lock wait
    # included" (and "every call and the lock wait included" for the default): with 1 s of it,
    # a call with a 3.5 s deadline has 2.5 s left for a fetch that takes milliseconds.
    client = _v2(make_client, fake, token_store=make_offline_store(silent_redis_url, timeout=1.0))
    started = time.monotonic()
    key = await client.exchange(fake.issue_code(openid="patient"), timeout=3.5)
    assert key.openid == "patient"
    assert time.monotonic() - started < 3.5
    assert fake.token_fetches == 1


GARBAGE: dict[str, Callable[[redis.asyncio.Redis, str], Any]] = {
    "not-json": lambda r, key: r.set(key, b"\xff not json {"),
    "json-of-another-shape": lambda r, key: r.set(key, b'{"token": 5, "expires_at": "soon"}'),
    "json-array": lambda r, key: r.set(key, b'["24.abc", 1e12, 0]'),
    "hash": lambda r, key: r.hset(key, mapping={"token": "24.abc", "expires_at": "1e12"}),
    "list": lambda r, key: r.rpush(key, "24.abc", "1e12"),
}


@pytest.mark.parametrize("garbage", list(GARBAGE))
async def test_logins_go_on_over_garbage_and_a_lock_that_never_expires(
    garbage: str,
    fake: FakeBaiduServer,
    make_client: MakeClient,
    make_store: MakeStore,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
) -> None:
    token_key, lock_key = _token_key(fake.client_id), _lock_key(fake.client_id)
    await GARBAGE[garbage](redis_client, token_key)
    await redis_client.set(lock_key, b"held by a process that died long ago")
    assert await redis_client.pttl(lock_key) == -1
    assert await redis_client.pttl(token_key) == -1

    client = _v2(make_client, fake, token_store=make_store(redis_url, timeout=0.5))
    started = time.monotonic()
    keys = await asyncio.gather(
        *(client.exchange(fake.issue_code(openid=f"g{n}"), timeout=4.0) for n in range(5))
    )
    assert [key.openid for key in keys] == [f"g{n}" for n in range(5)]
    assert time.monotonic() - started < 4.0
    await client.exchange(fake.issue_code(), timeout=4.0)
    assert fake.token_fetches == 1

    # The lock no longer lives forever; the token key holds the token, with a TTL.
    lock_ttl = await redis_client.pttl(lock_key)
    assert lock_ttl > 0 or lock_ttl == -2, lock_ttl
    assert await redis_client.type(token_key) == b"string"
    stored = await _stored(redis_client, fake.client_id)
    assert stored["token"] == fake.tokens_issued[0]
    assert stored["expires_at"] > time.time()
    assert await redis_client.pttl(token_key) > 0

    # A second process reads that token rather than fetching one.
    other = _v2(make_client, fake, token_store=make_store(redis_url, timeout=0.5))
    await other.exchange(fake.issue_code(), timeout=4.0)
    assert fake.token_fetches == 1
    assert _sent_tokens(fake)[-1] == fake.tokens_issued[0]


# ------------------------------------------------------------------- a warm process


async def test_a_warm_process_sends_redis_nothing_per_call(
    fake: FakeBaiduServer,
    make_client: MakeClient,
    make_store: MakeStore,
    redis_url: str,
    redis_server: RedisServer,
) -> None:
    client = _v2(make_client, fake, token_store=make_store(redis_url))
    redis_server.reset_stats()
    await client.exchange(fake.issue_code())
    # The cold call did use Redis (so the counts below can tell).
    assert redis_server.commands("get") >= 1
    assert redis_server.commands("set") >= 1  # the lock's SET NX, and the token's

    # Counted on a connection opened beforehand, whose own handshake is not counted.
    with redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=5) as admin:
        admin.ping()
        redis_server.reset_stats()
        for _ in range(50):
            await client.exchange(fake.issue_code())
        await client.unionid("someone")
        await client.access_token()
        stats = admin.info("commandstats")
    assert fake.token_fetches == 1
    for name in ("get", "set", "evalsha", "eval", "pttl", "pexpire", "del", "script", "ping"):
        assert stats.get(f"cmdstat_{name}", {}).get("calls", 0) == 0, name
    # Not even a new connection's handshake (HELLO, CLIENT SETINFO): INFO and the reset only.
    ran = {name for name, value in stats.items() if value.get("calls")}
    assert ran <= {"cmdstat_info", "cmdstat_config", "cmdstat_config|resetstat"}, stats


# ------------------------------------------------------------------- revocation


async def test_two_processes_recover_from_a_revocation_with_one_fetch(
    fake: FakeBaiduServer,
    make_client: MakeClient,
    make_store: MakeStore,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
) -> None:
    fake.token_delay = TOKEN_DELAY
    stores = [make_store(redis_url), make_store(redis_url)]
    clients = [_v2(make_client, fake, token_store=store) for store in stores]
    await asyncio.gather(*(client.exchange(fake.issue_code()) for client in clients))
    assert fake.token_fetches == 1
    [old] = fake.tokens_issued

    fake.revoke_tokens()
    keys = await asyncio.gather(
        *(client.exchange(fake.issue_code(openid="back")) for client in clients for _ in range(3))
    )
    assert [key.openid for key in keys] == ["back"] * 6
    assert fake.token_fetches == 2
    new = fake.tokens_issued[1]
    assert [(await client.access_token()).token for client in clients] == [new, new]
    assert (await _stored(redis_client, fake.client_id))["token"] == new

    # A late rejection of the old token, from either process, leaves its successor alone.
    for store in stores:
        await store.invalidate(fake.client_id, AccessToken(old, time.time() + 60, time.time()))
    assert (await _stored(redis_client, fake.client_id))["token"] == new
    await clients[0].exchange(fake.issue_code())
    assert fake.token_fetches == 2


async def test_a_late_rejection_in_one_process_keeps_the_token_the_other_fetched(
    fake: FakeBaiduServer,
    make_client: MakeClient,
    make_store: MakeStore,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
) -> None:
    first, second = (_v2(make_client, fake, token_store=make_store(redis_url)) for _ in range(2))
    await first.exchange(fake.issue_code())
    await second.exchange(fake.issue_code())
    [old] = fake.tokens_issued

    fake.revoke_tokens()
    await first.exchange(fake.issue_code())  # refused, renewed, stored
    assert fake.token_fetches == 2
    new = fake.tokens_issued[1]
    # The second still holds the old token: refused, it deletes it only if Redis still holds
    # it, which it does not; it then reads the new one instead of fetching a third.
    assert (await second.exchange(fake.issue_code(openid="late"))).openid == "late"
    assert fake.token_fetches == 2
    assert _sent_tokens(fake)[-2:] == [old, new]
    assert (await _stored(redis_client, fake.client_id))["token"] == new


# ------------------------------------------------------------------- the secret


class _Monitor:
    """Every command Redis runs meanwhile, as MONITOR reports them (raw bytes)."""

    def __init__(self, port: int) -> None:
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._socket.sendall(b"MONITOR\r\n")
        self._socket.settimeout(0.05)
        self._data = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="redis-monitor", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self._socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self._data += chunk

    def stop(self) -> bytes:
        time.sleep(0.1)  # the last commands' reports are on their way
        self._stop.set()
        self._thread.join(5)
        self._socket.close()
        return bytes(self._data)


async def test_the_secret_never_reaches_redis_and_every_key_has_a_ttl(
    fake: FakeBaiduServer,
    make_client: MakeClient,
    make_store: MakeStore,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
    redis_server: RedisServer,
) -> None:
    secret = fake.secret.encode()
    monitor = _Monitor(redis_server.port)
    try:
        clients = [_v2(make_client, fake, token_store=make_store(redis_url)) for _ in range(2)]
        await asyncio.gather(*(client.exchange(fake.issue_code()) for client in clients))
        await clients[0].unionid("someone")
        fake.revoke_tokens()
        await asyncio.gather(*(client.exchange(fake.issue_code()) for client in clients))
        await clients[1].access_token()
    finally:
        seen = monitor.stop()
    assert fake.token_fetches == 2

    # What Redis was sent: the tokens, never the secret.
    assert fake.tokens_issued[1].encode() in seen, "MONITOR saw nothing"
    assert secret not in seen

    # What Redis holds: the token key only, JSON of three fields, with a TTL.
    keys = [key async for key in redis_client.scan_iter(match="*")]
    assert keys == [_token_key(fake.client_id).encode()]
    for key in keys:
        assert secret not in key
        assert await redis_client.type(key) == b"string"
        value = await redis_client.get(key)
        assert value is not None
        assert secret not in value
        assert set(json.loads(value)) == {"token", "expires_at", "fetched_at"}
        assert await redis_client.pttl(key) > 0
    assert (await _stored(redis_client, fake.client_id))["token"] == fake.tokens_issued[1]


# ------------------------------------------------------------------- renewal


async def test_a_fleet_renews_before_the_expiry_without_waiting_and_with_one_fetch(
    fake: FakeBaiduServer,
    make_client: MakeClient,
    make_store: MakeStore,
    redis_client: redis.asyncio.Redis,
    redis_url: str,
) -> None:
    fake.token_lifetime = 4  # renewed from 3 s on; never sent after 3.8 s
    clients = [_v2(make_client, fake, token_store=make_store(redis_url)) for _ in range(2)]
    first = await clients[0].access_token()
    assert await clients[1].access_token() == first
    assert fake.token_fetches == 1

    fake.token_delay = TOKEN_DELAY
    await asyncio.sleep(first.expires_at - 0.9 - time.time())  # past the refresh point

    async def timed(client: SwanAuthClient) -> tuple[float, str]:
        started = time.monotonic()
        await client.exchange(fake.issue_code())
        token = await client.access_token()
        return time.monotonic() - started, token.token

    # The first calls past the refresh point go on with the old token, at once.
    sent_before = len(_sent_tokens(fake))
    answers = await asyncio.gather(*(timed(client) for client in clients for _ in range(4)))
    assert set(_sent_tokens(fake)[sent_before:]) == {first.token}
    # Both keep answering at once (a call that waited for a fetch takes TOKEN_DELAY) until
    # both hold the new token, which one of them fetched and the other read.
    deadline = time.monotonic() + 3.0
    while fake.token_fetches < 2 or {token for _, token in answers[-2:]} != {
        fake.tokens_issued[-1]
    }:
        assert time.monotonic() < deadline, "the clients were not renewed in time"
        await asyncio.sleep(0.03)
        answers += await asyncio.gather(*(timed(client) for client in clients))
    waits = [wait for wait, _ in answers]
    assert max(waits) < TOKEN_DELAY * 2 / 3, waits
    await asyncio.sleep(0.3)
    assert fake.token_fetches == 2
    new = fake.tokens_issued[1]
    assert (await _stored(redis_client, fake.client_id))["token"] == new
    for client in clients:
        await client.exchange(fake.issue_code())
    assert _sent_tokens(fake)[-2:] == [new, new]
