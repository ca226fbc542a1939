"""The client's aiohttp session: the event loop it belongs to, whose it is, and closing it.

A client creates its session on first use, inside the running loop, and never uses it from
another loop (aiohttp's would hang rather than fail). A session the caller passed is borrowed:
used, never closed, and its proxy password is blanked wherever the AppSecret is. ``aclose()``
cancels the calls in flight (``_flight.interrupt``) before it closes the session it owns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import aiohttp
import yarl

from ._errors import ClientClosedError, SwanAuthError, UsageError
from ._flight import Flight, interrupt
from ._protocol import Credentials
from ._settings import SessionSettings, borrowed_proxy_forms

__all__: list[str] = []


class Stoppable(Protocol):
    """What stops starting retries once the client is closed (the engine)."""

    closed: bool


class SessionHolder:
    """One client's session, bound to one event loop, and its closing."""

    __slots__ = (
        "_closing",
        "_credentials",
        "_hid_session_proxy",
        "_owns_session",
        "_settings",
        "_url",
        "closed",
        "loop",
        "session",
    )

    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        settings: SessionSettings,
        url: yarl.URL,
        credentials: Credentials,
    ) -> None:
        self.session = session
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._owns_session = session is None
        self._settings = settings
        self._url = url
        self._credentials = credentials
        self._closing: asyncio.Future[None] | None = None
        self._hid_session_proxy = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        """The session to use from ``loop``, created on first use inside it."""
        if self.closed:
            raise ClientClosedError("the SwanAuthClient is closed")
        if self.loop is None:
            # aiohttp keeps the loop a session belongs to private; a session from another loop
            # would hang rather than fail, so it is checked once here.
            session_loop = getattr(self.session, "_loop", loop)
            if session_loop is not loop:
                raise UsageError(
                    "the aiohttp session passed to SwanAuthClient belongs to another event loop"
                )
            self.loop = loop
        elif self.loop is not loop:
            raise UsageError(
                "this SwanAuthClient belongs to another event loop; create one client per event "
                "loop and per process (never share one across a fork)"
            )
        if self.session is None:
            self.session = self._settings.new_session(self._url, self._credentials)
        elif not self._owns_session and not self._hid_session_proxy:
            # A borrowed session's proxy password is blanked as the client's own would be.
            self._hid_session_proxy = True
            self._credentials.hide_also(borrowed_proxy_forms(self.session))
        return self.session

    async def aclose(
        self,
        engine: Stoppable,
        flights: Iterable[Flight[Any]],
        also: Callable[[], Awaitable[None]],
    ) -> None:
        """Stop ``engine``'s retries, cancel ``flights`` and whatever ``also`` stops (a token
        renewal), then close the session if it is ours."""
        if self._closing is not None:
            # Another aclose() is under way (or done): return when the session really is closed.
            await asyncio.shield(self._closing)
            return
        running = asyncio.get_running_loop()
        if self.loop is not None and self.loop is not running:
            raise UsageError("close the SwanAuthClient from the event loop it was used in")
        self.closed = True
        self._closing = running.create_future()
        engine.closed = True
        try:
            await interrupt(flights, running)
            await also()
        finally:
            # Even when aclose() itself is cancelled (a framework's shutdown timeout), the
            # session it owns gets closed; a later aclose() waits for this.
            try:
                if self._owns_session and self.session is not None:
                    await asyncio.shield(self.session.close())
            finally:
                self._closing.set_result(None)

    def closed_error(self) -> SwanAuthError:
        """What a call raises when the session was closed under it."""
        if self.closed or self._owns_session:
            return ClientClosedError("the SwanAuthClient was closed during the call")
        return UsageError("the aiohttp session passed to SwanAuthClient is closed")
