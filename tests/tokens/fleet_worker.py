"""One process of a fleet, for tests/tokens/test_fleet.py: a v2 client on a RedisTokenStore.

Run as ``python fleet_worker.py '<json settings>'``. The settings hold ``openapi_url``,
``endpoint``, ``redis_url``, ``client_id`` and ``secret``. The worker builds its client and store
(without touching Redis or Baidu), prints ``{"ready": true}`` and then obeys one command a line
on stdin, answering each with one JSON line on stdout:

* ``{"exchange": n, "at": t}``: sleep until the wall-clock time ``t`` (so that every process
  starts together), exchange ``n`` new codes at once (the fake accepts them with
  ``auto_issue``) and answer ``{"started": ..., "elapsed": ..., "openids": [...],
  "token": ...}``, ``token`` being the access token the client holds afterwards;
* ``{"quit": true}`` or the end of stdin: close the client and the store, and exit 0.

Any failure is answered as ``{"error": "..."}``, so that the test shows it instead of waiting.
Nothing else is printed on stdout.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from typing import Any

from baidu_swan_auth import SwanAuthClient
from baidu_swan_auth.redis import RedisTokenStore


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _exchange(client: SwanAuthClient, count: int, at: float) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, at - time.time()))
    started = time.time()
    keys = await asyncio.gather(
        *(client.exchange(f"fleet-{secrets.token_hex(12)}", timeout=8.0) for _ in range(count))
    )
    elapsed = time.time() - started
    token = await client.access_token(timeout=1.0)
    return {
        "started": started,
        "elapsed": elapsed,
        "openids": [key.openid for key in keys],
        "token": token.token,
    }


async def main(settings: dict[str, Any]) -> None:
    store = RedisTokenStore.from_url(settings["redis_url"])
    client = SwanAuthClient(
        settings["client_id"],
        settings["secret"],
        api="getsessionkey",
        endpoint=settings["endpoint"],
        openapi_url=settings["openapi_url"],
        token_store=store,
    )
    try:
        _answer({"ready": True})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            if command.get("quit"):
                break
            try:
                _answer(await _exchange(client, command["exchange"], command["at"]))
            except Exception as error:  # shown by the test, which fails on it
                _answer({"error": f"{type(error).__name__}: {error}"})
    finally:
        await client.aclose()
        await store.aclose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
