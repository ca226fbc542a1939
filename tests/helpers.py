"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from types import TracebackType

from baidu_swan_auth import SwanAuthClient

MakeClient = Callable[..., SwanAuthClient]


class RecordingSleep:
    """Stands in for asyncio.sleep: records the waits the client schedules, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


class socket_port:
    """A loopback port with nothing listening on it, for 'connection refused'."""

    def __enter__(self) -> int:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        port: int = self._socket.getsockname()[1]
        return port  # bound but not listening: connections are refused

    def __exit__(self, *_: object) -> None:
        self._socket.close()


def traceback_frames(error: BaseException) -> Iterator[tuple[str, str, dict[str, object]]]:
    """Every frame an error tracker records for ``error``: its traceback's and those of its whole
    chain of causes and contexts, as (file, function, locals)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        tb: TracebackType | None = current.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            yield code.co_filename, code.co_name, dict(tb.tb_frame.f_locals)
            tb = tb.tb_next
        pending += [current.__cause__, current.__context__]
