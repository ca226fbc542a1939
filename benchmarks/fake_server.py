"""The fake Baidu for benchmarks, in its own process, with a control channel on stdin.

The first stdout line is the v1 endpoint URL, the second the base URL of the access-token APIs
(the token and v2 ``getsessionkey``, on the same port). Then each line read on stdin is a
command, answered by one JSON line on stdout: ``stats`` (connections opened, most requests in
flight) or ``reset``. EOF on stdin stops the server. Codes are accepted once each whatever they
are (``auto_issue``, for v1 and v2 alike), and requests are not recorded, so memory stays flat
over long runs.
"""

from __future__ import annotations

import asyncio
import json
import sys

from baidu_swan_auth.testing import FakeBaiduServer


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    fake = FakeBaiduServer(auto_issue=True, record_requests=False)
    await fake.start()
    print(fake.url, flush=True)
    print(fake.openapi_url, flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "reset":
                fake.reset_stats()
                answer: dict[str, int] = {}
            else:
                answer = {
                    "connections_opened": fake.connections_opened,
                    "max_in_flight": fake.max_in_flight,
                }
            print(json.dumps(answer), flush=True)
    finally:
        await fake.close()


if __name__ == "__main__":
    asyncio.run(_serve())
