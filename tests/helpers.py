"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

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
