"""RedisTokenStore against a real redis-server (tests/tokens/conftest.py starts it)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio
import redis.exceptions

from baidu_swan_auth import ConfigurationError
from baidu_swan_auth._models import AccessToken
from baidu_swan_auth._token_store import TokenStore
from baidu_swan_auth._tokens import TokenSource
from baidu_swan_auth.redis import RedisTokenStore

from ..helpers import traceback_frames
from .conftest import RedisServer

SECRET = "token-that-must-stay-secret"
TOKEN = AccessToken(SECRET, expires_at=time.time() + 3600, fetched_at=time.time())
KEY = "baidu_swan_auth:token:app"
LOCK_KEY = "baidu_swan_auth:lock:app"


@pytest.fixture
async def store(redis_client: redis.asyncio.Redis) -> RedisTokenStore:
    return RedisTokenStore(redis_client, timeout=0.5)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 3.0) -> None:
    """Wait until ``check`` answers true, at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.02)


# -- tokens ---------------------------------------------------------------------------------


async def test_a_token_round_trips(store: RedisTokenStore) -> None:
    assert await store.get("app") is None
    await store.set("app", TOKEN, 60)
    assert await store.get("app") == TOKEN


async def test_the_value_is_json_under_a_key_with_the_prefix_and_the_app(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = RedisTokenStore(redis_client, prefix="fleet:")
    await store.set("app-1", TOKEN, 60)
    assert await redis_client.keys("*") == [b"fleet:token:app-1"]
    stored = await redis_client.get("fleet:token:app-1")
    assert isinstance(stored, bytes)
    assert json.loads(stored) == {
        "token": SECRET,
        "expires_at": TOKEN.expires_at,
        "fetched_at": TOKEN.fetched_at,
    }


async def test_apps_sharing_a_redis_keep_their_own_tokens(store: RedisTokenStore) -> None:
    other = AccessToken("other", TOKEN.expires_at, TOKEN.fetched_at)
    await store.set("app", TOKEN, 60)
    await store.set("app-2", other, 60)
    assert await store.get("app") == TOKEN
    assert await store.get("app-2") == other


async def test_the_token_key_has_the_ttl(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis
) -> None:
    await store.set("app", TOKEN, 30)
    assert 0 < await redis_client.pttl(KEY) <= 30_000


@pytest.mark.parametrize("ttl", [0.0004, 0.0, -5.0])
async def test_a_ttl_under_a_millisecond_is_one(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis, ttl: float
) -> None:
    await store.set("app", TOKEN, ttl)  # PX 0 would be an error
    assert await redis_client.pttl(KEY) in {1, 0, -2}  # -2: gone already
    lock = store.lock("app", ttl)
    assert await lock.acquire()
    assert await redis_client.pttl(LOCK_KEY) in {1, 0, -2}
    await lock.release()


async def test_a_token_is_forgotten_after_its_ttl(store: RedisTokenStore) -> None:
    await store.set("app", TOKEN, 0.2)
    assert await store.get("app") == TOKEN

    async def gone() -> bool:
        return await store.get("app") is None

    await eventually(gone)


async def test_a_non_finite_ttl_is_refused(store: RedisTokenStore) -> None:
    with pytest.raises(ConfigurationError):
        await store.set("app", TOKEN, float("inf"))


GARBAGE = [
    b"\xff\xfe not utf-8",
    b"not json",
    b"",
    b"[1, 2]",
    b'"a string"',
    b"null",
    b"[" * 100_000,
    b"{}",
    b'{"token": "t", "expires_at": 1}',
    b'{"token": 5, "expires_at": 1, "fetched_at": 0}',
    b'{"token": "", "expires_at": 1, "fetched_at": 0}',
    b'{"token": null, "expires_at": 1, "fetched_at": 0}',
    b'{"token": "t", "expires_at": "1", "fetched_at": 0}',
    b'{"token": "t", "expires_at": true, "fetched_at": 0}',
    b'{"token": "t", "expires_at": NaN, "fetched_at": 0}',
    b'{"token": "t", "expires_at": 1e999, "fetched_at": 0}',
    b'{"token": "t", "expires_at": 1, "fetched_at": -Infinity}',
    b'{"token": "t", "expires_at": 1, "fetched_at": ' + b"9" * 5000 + b"}",
]


@pytest.mark.parametrize("garbage", GARBAGE)
async def test_garbage_reads_as_no_token(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis, garbage: bytes
) -> None:
    await redis_client.set(KEY, garbage)
    assert await store.get("app") is None


@pytest.mark.parametrize("kind", ["hash", "list", "set"])
async def test_a_key_of_another_type_reads_as_no_token(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis, kind: str
) -> None:
    await _put_other_type(redis_client, KEY, kind)
    assert await store.get("app") is None


async def test_a_decoding_client_reads_tokens_and_garbage_too(redis_url: str) -> None:
    async with RedisTokenStore.from_url(redis_url, decode_responses=True) as store:
        await store.set("app", TOKEN, 60)
        assert await store.get("app") == TOKEN
        await store._redis.set(KEY, "not json")
        assert await store.get("app") is None


async def _put_other_type(client: redis.asyncio.Redis, key: str, kind: str) -> None:
    if kind == "hash":
        await client.hset(key, "token", SECRET)
    elif kind == "list":
        await client.rpush(key, SECRET)
    else:
        await client.sadd(key, SECRET)


async def test_invalidate_deletes_the_matching_token_only(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis
) -> None:
    other = AccessToken("other", TOKEN.expires_at, TOKEN.fetched_at)
    await store.set("app", TOKEN, 60)
    await store.set("app-2", TOKEN, 60)

    await store.invalidate("app", other)  # a late rejection of an older token
    assert await store.get("app") == TOKEN

    await store.invalidate("app", TOKEN)
    assert await redis_client.exists(KEY) == 0
    assert await store.get("app-2") == TOKEN  # another app's token is its own

    await store.invalidate("app", TOKEN)  # nothing stored: nothing happens


@pytest.mark.parametrize(
    "garbage",
    [b"not json", b"\xff\xfe", b"[1]", b"5", b'{"token": 5}', b"[" * 10_000],
)
async def test_invalidate_leaves_garbage_alone_without_error(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis, garbage: bytes
) -> None:
    await redis_client.set(KEY, garbage)
    await store.invalidate("app", TOKEN)
    assert await redis_client.get(KEY) == garbage


async def test_invalidate_survives_a_key_of_another_type(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis
) -> None:
    await _put_other_type(redis_client, KEY, "hash")
    await store.invalidate("app", TOKEN)
    assert await redis_client.type(KEY) == b"hash"


async def test_the_token_stays_out_of_the_frames_of_a_failure(down_redis_url: str) -> None:
    async with RedisTokenStore.from_url(down_redis_url, timeout=0.5) as store:
        calls: list[Callable[[], Awaitable[None]]] = [
            lambda: store.set("app", TOKEN, 60),
            lambda: store.invalidate("app", TOKEN),
        ]
        for call in calls:
            with pytest.raises(redis.exceptions.ConnectionError) as caught:
                await call()
            assert SECRET not in str(caught.value)
            for filename, function, local in traceback_frames(caught.value):
                if filename.endswith("baidu_swan_auth/redis.py"):
                    assert SECRET not in map(str, local.values()), (function, local)


# -- locks ----------------------------------------------------------------------------------


async def test_two_locks_of_an_app_exclude_each_other(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis
) -> None:
    first, second = store.lock("app", 10), store.lock("app", 10)
    assert await first.acquire()
    assert 0 < await redis_client.pttl(LOCK_KEY) <= 10_000

    started = time.monotonic()
    assert not await second.acquire()
    waited = time.monotonic() - started
    assert store.timeout / 2 <= waited < store.timeout + 2

    await first.release()
    assert await redis_client.exists(LOCK_KEY) == 0
    assert await second.acquire()
    await second.release()


async def test_a_lock_waits_for_its_holder(store: RedisTokenStore) -> None:
    first, second = store.lock("app", 10), store.lock("app", 10)
    assert await first.acquire()
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0.15)
    assert not waiting.done()
    await first.release()
    assert await waiting
    await second.release()


async def test_the_locks_of_two_apps_are_independent(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis
) -> None:
    mine, theirs = store.lock("app", 10), store.lock("app-2", 10)
    assert await mine.acquire()
    started = time.monotonic()
    assert await theirs.acquire()
    assert time.monotonic() - started < 0.2  # no wait
    assert sorted(await redis_client.keys("*lock*")) == [
        b"baidu_swan_auth:lock:app",
        b"baidu_swan_auth:lock:app-2",
    ]
    await mine.release()
    await theirs.release()


async def test_a_lock_key_without_ttl_gets_one(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis
) -> None:
    await redis_client.set(LOCK_KEY, "left by someone")
    assert await redis_client.pttl(LOCK_KEY) == -1
    assert not await store.lock("app", 2).acquire()  # held, until the TTL it now has frees it
    assert await redis_client.get(LOCK_KEY) == b"left by someone"
    assert 0 < await redis_client.pttl(LOCK_KEY) <= 2000

    later = store.lock("app", 10)

    async def acquired() -> bool:
        return await later.acquire()

    await eventually(acquired, within=5)
    await later.release()


async def test_a_lock_key_with_a_ttl_keeps_it(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis
) -> None:
    await redis_client.set(LOCK_KEY, "another holder", px=60_000)
    assert not await store.lock("app", 0.3).acquire()
    assert await redis_client.pttl(LOCK_KEY) > 30_000


async def test_release_after_the_lock_expired_raises_nothing(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis
) -> None:
    lock = store.lock("app", 0.1)
    assert await lock.acquire()

    async def expired() -> bool:
        return not await redis_client.exists(LOCK_KEY)

    await eventually(expired)
    await lock.release()


async def test_release_after_another_took_the_lock_leaves_it_to_them(
    store: RedisTokenStore, redis_client: redis.asyncio.Redis
) -> None:
    slow = store.lock("app", 0.1)
    assert await slow.acquire()
    successor = store.lock("app", 10)
    assert await successor.acquire()  # once the slow holder's lock expired
    await slow.release()
    assert await redis_client.exists(LOCK_KEY) == 1
    await successor.release()
    assert await redis_client.exists(LOCK_KEY) == 0


async def test_release_without_acquire_raises_nothing(store: RedisTokenStore) -> None:
    await store.lock("app", 10).release()


# -- the client, its closing, its repr ------------------------------------------------------


async def _client_names(client: redis.asyncio.Redis) -> list[str]:
    return [str(entry["name"]) for entry in await client.client_list()]


async def test_from_url_builds_a_client_that_aclose_closes(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    store = RedisTokenStore.from_url(redis_url, client_name="owned-by-store")
    await store.set("app", TOKEN, 60)
    assert await store.get("app") == TOKEN
    assert "owned-by-store" in await _client_names(redis_client)
    await store.aclose()

    async def closed() -> bool:
        return "owned-by-store" not in await _client_names(redis_client)

    await eventually(closed)


async def test_async_with_closes_the_client_from_url(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    async with RedisTokenStore.from_url(redis_url, client_name="in-async-with") as store:
        await store.get("app")
        assert "in-async-with" in await _client_names(redis_client)

    async def closed() -> bool:
        return "in-async-with" not in await _client_names(redis_client)

    await eventually(closed)


async def test_aclose_leaves_a_passed_client_open(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, single_connection_client=True)
    try:
        before = await client.client_id()
        async with RedisTokenStore(client) as store:
            await store.get("app")
        await store.aclose()
        assert await client.client_id() == before  # the same connection: never closed
    finally:
        await client.aclose()


async def test_from_url_sets_socket_timeouts_unless_given(redis_url: str) -> None:
    async with RedisTokenStore.from_url(redis_url, timeout=1.5) as store:
        kwargs = store._redis.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (1.5, 1.5)
    async with RedisTokenStore.from_url(redis_url, timeout=1.5, socket_timeout=9) as store:
        kwargs = store._redis.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (9, 1.5)


async def test_a_redis_that_is_down_fails_fast(down_redis_url: str) -> None:
    async with RedisTokenStore.from_url(down_redis_url, timeout=0.5) as store:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError):
            await store.get("app")
        assert time.monotonic() - started < 0.5 + 2
        with pytest.raises(redis.exceptions.ConnectionError):
            await store.lock("app", 10).acquire()


async def test_a_redis_that_hangs_times_out(silent_redis_url: str) -> None:
    async with RedisTokenStore.from_url(silent_redis_url, timeout=0.5) as store:
        started = time.monotonic()
        with pytest.raises((redis.exceptions.TimeoutError, redis.exceptions.ConnectionError)):
            await store.get("app")
        assert time.monotonic() - started < 0.5 + 2


async def test_the_repr_hides_the_url(redis_server: RedisServer) -> None:
    url = f"redis://:hunter2-password@127.0.0.1:{redis_server.port}/0"
    async with RedisTokenStore.from_url(url, prefix="p:") as store:
        assert repr(store) == "<RedisTokenStore prefix='p:'>"
        assert "hunter2" not in repr(store) + str(vars(store).get("_prefix"))


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True, "3"])
async def test_a_bad_timeout_is_refused(
    redis_client: redis.asyncio.Redis, redis_url: str, timeout: object
) -> None:
    with pytest.raises(ConfigurationError):
        RedisTokenStore(redis_client, timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RedisTokenStore.from_url(redis_url, timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", [None, b"bytes:", 5])
async def test_a_prefix_that_is_not_a_str_is_refused(
    redis_client: redis.asyncio.Redis, redis_url: str, prefix: object
) -> None:
    with pytest.raises(ConfigurationError):
        RedisTokenStore(redis_client, prefix=prefix)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RedisTokenStore.from_url(redis_url, prefix=prefix)  # type: ignore[arg-type]


def test_a_synchronous_client_is_refused(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client, pytest.raises(ConfigurationError):
        RedisTokenStore(client)


# -- with TokenSource, the store's user -----------------------------------------------------


@pytest.fixture
async def fleet(redis_url: str) -> AsyncIterator[list[RedisTokenStore]]:
    """Two stores on two clients of one Redis: two processes of a fleet."""
    stores = [RedisTokenStore.from_url(redis_url) for _ in range(2)]
    yield stores
    for store in stores:
        await store.aclose()


async def test_a_fleet_fetches_one_token(
    fleet: list[RedisTokenStore], redis_server: RedisServer
) -> None:
    fetched: list[AccessToken] = []

    async def fetch() -> AccessToken:
        await asyncio.sleep(0.1)  # long enough for the other process to find the lock taken
        fetched.append(AccessToken(f"t{len(fetched)}", time.time() + 3600, time.time()))
        return fetched[-1]

    sources = [
        TokenSource("app", store, fetch, store_timeout=store.timeout, lock_ttl=10)
        for store in fleet
    ]
    tokens = await asyncio.gather(*(source.get(5) for source in sources))
    assert fetched == [tokens[0]] == [tokens[1]]

    # A warm process asks Redis nothing.
    redis_server.reset_stats()
    assert await sources[0].get(5) == tokens[0]
    assert redis_server.commands("get") == redis_server.commands("evalsha") == 0

    # A rejected token is replaced once, fleet-wide.
    replaced = await asyncio.gather(*(source.replace(tokens[0], 5) for source in sources))
    assert fetched[1:] == [replaced[0]] == [replaced[1]]
    for source in sources:
        await source.aclose()


def test_the_store_meets_the_protocol(redis_url: str) -> None:
    store: TokenStore = RedisTokenStore.from_url(redis_url)  # mypy checks the assignment
    assert store.timeout == 3.0


# -- the import ------------------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_package_never_imports_redis() -> None:
    result = _run(
        "import pkgutil, importlib, sys, baidu_swan_auth\n"
        "for module in pkgutil.walk_packages(baidu_swan_auth.__path__, 'baidu_swan_auth.'):\n"
        "    if module.name != 'baidu_swan_auth.redis' and not module.name.endswith('__main__'):\n"
        "        importlib.import_module(module.name)\n"
        "print(sorted(n for n in sys.modules if n == 'redis' or n.startswith('redis.')))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_redis_py_the_module_says_what_to_install() -> None:
    result = _run(
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "import baidu_swan_auth\n"
        "try:\n"
        "    import baidu_swan_auth.redis\n"
        "except baidu_swan_auth.MissingDependencyError as error:\n"
        "    assert isinstance(error, ImportError)\n"
        "    print(error.package, '|', error)\n"
        "else:\n"
        "    raise SystemExit('imported without redis')\n"
    )
    assert result.returncode == 0, result.stderr
    package, message = result.stdout.strip().split(" | ")
    assert package == "redis"
    assert "pip install 'baidu-swan-auth[redis]'" in message
