"""The fake server: its settings, addresses and lifecycle, and the API tests call.

The state lives in ``_state``, request handling in ``_exchange`` (the access-token APIs'
answers in ``_openapi``), the faults' behaviour in ``_faults`` and the threaded mode in
``_runner``; ``FakeBaiduServer`` ties them together.

Over 400 lines because it is one public class whose docstrings are the reference of every method
a test calls (about half the module); the code is lifecycle and one-line delegations to the
state, which splitting the class would only scatter.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from ._exchange import RequestHandler
from ._faults import Fault
from ._openapi import unionid
from ._runner import ThreadRunner
from ._state import DEFAULT_TOKEN_LIFETIME, ServerState
from ._userdata import IV_SIZE, encrypt_user_data
from ._values import DEFAULT_CLIENT_ID, DEFAULT_SECRET, ENDPOINT_PATH, Grant, RecordedRequest
from ._wire import new_openid, new_session_key, url_host

__all__ = ["FakeBaiduServer"]

_SHUTDOWN_TIMEOUT = 1.0


class FakeBaiduServer:
    """A fake Baidu ``jscode2sessionkey`` endpoint served over real HTTP on the loopback.

    Use it as ``async with FakeBaiduServer() as fake:`` inside an event loop, or as
    ``with FakeBaiduServer() as fake:`` to run it on its own loop in a daemon thread (which
    works from synchronous code and from any async framework).

    Every method that tests call (issuing codes, scripting faults, reading the log) is
    thread-safe, so a test may call them while the server runs on its thread.

    Normal handling of a request to [`ENDPOINT_PATH`][baidu_swan_auth.testing.ENDPOINT_PATH]:
    ``POST`` only (else 405 ``invalid_request``); ``code``, ``client_id`` and ``sk`` are read
    from the form body only, never the query string (missing: 400 ``invalid_request``); a wrong
    ``client_id`` or ``sk`` gives 401 ``invalid_client``; an unknown or spent code gives 400
    ``invalid_grant``; otherwise the code is spent and the answer is 200
    ``{"openid": ..., "session_key": ...}``. Other paths get a 404 HTML page.

    The same server answers Baidu's access-token APIs below
    [`openapi_url`][baidu_swan_auth.testing.FakeBaiduServer.openapi_url], ``POST`` only, fields
    from the form body only. [`TOKEN_PATH`][baidu_swan_auth.testing.TOKEN_PATH] takes
    ``grant_type=client_credentials``, ``client_id``, ``client_secret`` and an optional ``scope``
    (which must include ``smartapp_snsapi_base``), errs like OAuth (400 ``invalid_request``,
    ``unsupported_grant_type`` or ``invalid_scope``; 401 ``invalid_client``) and answers a new
    random token, ``expires_in`` (`token_lifetime`), ``scope`` and three random legacy fields
    (``refresh_token``, ``session_key``, ``session_secret``). The ``rest/2.0`` APIs answer HTTP
    200: first a gateway checks ``access_token`` (unknown or revoked: ``{"error_code": 110, ...}``;
    past its lifetime by ``time.time()``: ``111``), then
    [`GETSESSIONKEY_PATH`][baidu_swan_auth.testing.GETSESSIONKEY_PATH] spends ``code`` (the same
    codes as the endpoint) and answers ``{"errno": 0, "msg": "success", "data": {"open_id": ...,
    "session_key": ...}, "request_id": ..., "timestamp": ...}`` (a missing code, or an unknown or
    spent one, [`V2_INVALID_CODE_ERRNO`][baidu_swan_auth.testing.V2_INVALID_CODE_ERRNO]: a
    non-zero ``errno``), and [`GETUNIONID_PATH`][baidu_swan_auth.testing.GETUNIONID_PATH]
    answers ``{"errno": 0, "errmsg": "succ", "data": {"unionid": ...}, ...}`` for ``openid``.

    Faults apply to requests to the four API paths only, taken in this order: for the endpoint
    only, the [`always`][baidu_swan_auth.testing.FakeBaiduServer.always] fault, then the
    [`script_next`][baidu_swan_auth.testing.FakeBaiduServer.script_next] queue; then the path's
    [`script_path`][baidu_swan_auth.testing.FakeBaiduServer.script_path] queue; then, for the
    endpoint and ``GETSESSIONKEY_PATH``, the request code's
    [`script`][baidu_swan_auth.testing.FakeBaiduServer.script] queue.

    Args:
        client_id: The AppKey the fake accepts.
        secret: The AppSecret the fake accepts. Never shown in ``repr`` or error bodies.
        host: The address to listen on.
        port: The port to listen on; 0 picks a free one.
        auto_issue: Accept any code never seen before (once), as if it had been issued. Lets a
            load generator in another process invent codes.
        record_requests: Keep every request in `requests`. Turn it off for long benchmark
            runs, where the log would only grow.
        ssl_context: Serve HTTPS with this server-side context (its certificate and key, e.g.
            from ``trustme``) instead of plain HTTP; `url` then starts with ``https://``.
        token_lifetime: The initial `token_lifetime`, in seconds.

    Raises:
        ValueError: ``token_lifetime`` is not positive.

    Attributes:
        client_id: The AppKey the fake accepts; may be changed while it runs.
        secret: The AppSecret the fake accepts; may be changed while it runs.
        host: The address it listens on.
        auto_issue: Whether unknown codes are accepted once.
        record_requests: Whether requests are recorded.
    """

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        secret: str = DEFAULT_SECRET,
        host: str = "127.0.0.1",
        port: int = 0,
        auto_issue: bool = False,
        record_requests: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
    ) -> None:
        self.client_id = client_id
        self.secret = secret
        self.host = host
        self.auto_issue = auto_issue
        self.record_requests = record_requests
        self._requested_port = port
        self._port: int | None = None
        self._ssl_context = ssl_context

        self._state = ServerState()
        self._state.token_lifetime = token_lifetime
        self._handler = RequestHandler(self, self._state)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._web_server: web.Server | None = None
        self._tcp_server: asyncio.Server | None = None
        self._closed = False
        self._runner: ThreadRunner | None = None

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        issued, spent = self._state.counts()
        return (
            f"<FakeBaiduServer {where} client_id={self.client_id!r} codes={issued} spent={spent}>"
        )

    # ---------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        """The TCP port the server listens on.

        Raises:
            RuntimeError: The server is not started.
        """
        if self._port is None:
            raise RuntimeError("FakeBaiduServer is not started")
        return self._port

    @property
    def scheme(self) -> str:
        """``"https"`` when the server was given an ``ssl_context``, else ``"http"``."""
        return "http" if self._ssl_context is None else "https"

    @property
    def base_url(self) -> str:
        """``http://host:port`` (or ``https://``) without a path."""
        return f"{self.scheme}://{url_host(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """The endpoint URL to give the client: ``http://127.0.0.1:{port}/oauth/jscode2sessionkey``
        (``https://`` with an ``ssl_context``)."""
        return f"{self.base_url}{ENDPOINT_PATH}"

    @property
    def openapi_url(self) -> str:
        """The base URL of the access-token APIs to give a client, ``http://127.0.0.1:{port}``:
        without a trailing slash, since the client appends e.g.
        [`TOKEN_PATH`][baidu_swan_auth.testing.TOKEN_PATH]."""
        return self.base_url

    # ---------------------------------------------------------------- lifecycle (same loop)

    async def start(self) -> None:
        """Start listening on the running event loop.

        Raises:
            RuntimeError: The server was already started.
        """
        if self._loop is not None:
            raise RuntimeError("FakeBaiduServer can only be started once")
        loop = asyncio.get_running_loop()
        # handler_cancellation stays False on purpose: a real backend keeps working on a request
        # whose client hung up, so a delayed request must still spend its code.
        # access_log=None: logging every request only slows benchmarks down.
        self._web_server = web.Server(self._handler, handler_cancellation=False, access_log=None)
        try:
            self._tcp_server = await loop.create_server(
                self._make_protocol,
                self.host,
                self._requested_port,
                backlog=1024,
                ssl=self._ssl_context,
            )
        except BaseException:
            self._web_server = None
            raise
        self._loop = loop
        self._port = int(self._tcp_server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop the server. Safe to call more than once.

        Requests still being handled get a second to finish, then are cancelled.

        Raises:
            RuntimeError: Called from another event loop than the one the server runs on
                (use [`stop_thread`][baidu_swan_auth.testing.FakeBaiduServer.stop_thread] for a
                server started with `start_in_thread`).
        """
        if self._loop is None or self._closed:
            return
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(
                "close() must run on the server's event loop; use stop_thread() for a server "
                "started with start_in_thread()"
            )
        self._closed = True
        assert self._tcp_server is not None
        assert self._web_server is not None
        self._tcp_server.close()
        # A handler whose client already hung up has nobody to answer; cancel it now rather
        # than letting the shutdown below wait out its grace period for nothing. The short
        # sleep lets a hang-up already on the wire be noticed first.
        if self._handler.tasks:
            await asyncio.sleep(0.02)
        for task, request in list(self._handler.tasks.items()):
            if request.transport is None:
                task.cancel()
        # pre_shutdown() wakes idle keep-alive connections so they close at once; without it
        # shutdown() waits the whole timeout for each of them.
        self._web_server.pre_shutdown()
        await self._web_server.shutdown(_SHUTDOWN_TIMEOUT)
        await self._tcp_server.wait_closed()
        # Whatever still runs (e.g. cancelled above) must finish before the loop may close.
        leftovers = [task for task in self._handler.tasks if not task.done()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    async def __aenter__(self) -> Self:
        """Start the server on the running loop."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the server."""
        await self.close()

    # ---------------------------------------------------------------- lifecycle (own thread)

    def start_in_thread(self, *, timeout: float = 10.0) -> None:
        """Run the server on a new event loop in a daemon thread; return once it listens.

        Args:
            timeout: How long to wait for the server to listen, in seconds.

        Raises:
            RuntimeError: The server was already started, or did not start in time.
            OSError: The address could not be bound.
        """
        if self._runner is not None or self._loop is not None:
            raise RuntimeError("FakeBaiduServer can only be started once")
        self._runner = ThreadRunner(self.start, self.close, name="FakeBaiduServer")
        self._runner.start(timeout)

    def stop_thread(self, *, timeout: float = 10.0) -> None:
        """Stop a server started with `start_in_thread` and wait for its thread. Idempotent.

        Args:
            timeout: How long to wait for the thread to finish, in seconds.
        """
        if self._runner is not None:
            self._runner.stop(timeout)

    def __enter__(self) -> Self:
        """Start the server in its own thread (see `start_in_thread`)."""
        self.start_in_thread()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server's thread."""
        self.stop_thread()

    # ---------------------------------------------------------------- codes

    def issue_code(
        self, *, openid: str | None = None, code: str | None = None, open_source: bool = False
    ) -> str:
        """Register a new single-use code, as ``swan.login()`` would hand one out.

        Args:
            openid: The user's openid; a random one when ``None``. Issue several codes with the
                same openid to model one user logging in again.
            code: The exact code string to register (any characters, e.g. ``"a&b=c@d"``);
                random when ``None``.
            open_source: Make a code containing ``@``, the kind Baidu routes to an open-source
                host. With an explicit ``code`` it must contain ``@``.

        Returns:
            The code.

        Raises:
            ValueError: The code is empty, already issued, or lacks ``@`` for ``open_source``.
        """
        if code is None:
            code = secrets.token_hex(16)
            if open_source:
                code = f"{code}@{secrets.token_hex(4)}"
        elif not code:
            raise ValueError("a code cannot be empty")
        elif open_source and "@" not in code:
            raise ValueError("an open-source code must contain '@'")
        grant = Grant(
            openid=openid if openid is not None else new_openid(), session_key=new_session_key()
        )
        self._state.issue(code, grant)
        return code

    def grant_for(self, code: str) -> Grant:
        """Return what the fake answers (or answered) for a code.

        Args:
            code: A code from `issue_code` (or auto-issued).

        Raises:
            UnknownCodeError: The code was never issued.
        """
        return self._state.grant_for(code)

    def encrypt_for(
        self, code: str, payload: Mapping[str, Any] | bytes, *, app_key: str | None = None
    ) -> tuple[str, str]:
        """Encrypt user data with the session key of a code, as the mini program would get it.

        Models ``swan.getUserInfo`` (or ``getPhoneNumber``, ...) called after the ``swan.login()``
        that produced ``code``: your server decrypts the result with the session key it got for
        that code. Needs the ``crypto`` extra.

        Args:
            code: A code from `issue_code` (or auto-issued).
            payload: The JSON object (or raw payload bytes) to encrypt; see
                [`encrypt_user_data`][baidu_swan_auth.testing.encrypt_user_data].
            app_key: The AppKey to append; the fake's ``client_id`` by default.

        Returns:
            ``(data, iv)``, both base64, with a fresh random IV.

        Raises:
            UnknownCodeError: The code was never issued.
            MissingDependencyError: The ``cryptography`` package is not installed.
        """
        grant = self.grant_for(code)
        iv = base64.b64encode(secrets.token_bytes(IV_SIZE)).decode("ascii")
        data = encrypt_user_data(
            payload, iv, grant.session_key, self.client_id if app_key is None else app_key
        )
        return data, iv

    def is_spent(self, code: str) -> bool:
        """Tell whether a code was already exchanged (or spent by a fault).

        Args:
            code: A code from `issue_code` (or auto-issued).

        Raises:
            UnknownCodeError: The code was never issued.
        """
        return self._state.is_spent(code)

    # ---------------------------------------------------------------- fault scripting

    def script(self, code: str, *faults: Fault) -> None:
        """Queue faults for the requests that carry ``code``, first in first out.

        Each request with this code in its form takes one fault; once the queue is empty,
        requests are handled normally. The code need not be issued.

        Args:
            code: The code the faults apply to.
            *faults: The faults, in the order requests will meet them.
        """
        self._state.script(code, faults)

    def script_next(self, *faults: Fault) -> None:
        """Queue faults for the next requests to the endpoint, whatever their code.

        Args:
            *faults: The faults, in the order requests will meet them.
        """
        self._state.script_next(faults)

    def always(self, fault: Fault | None) -> None:
        """Apply ``fault`` to every request to the endpoint until ``always(None)``.

        Only the v1 endpoint: the access-token APIs take faults from `script_path` and `script`.

        Args:
            fault: The fault, or ``None`` to go back to scripted and normal handling.
        """
        self._state.always(fault)

    def script_path(self, path: str, *faults: Fault) -> None:
        """Queue faults for the next requests to ``path``, whatever they carry, first in first out.

        Taken after `always` and `script_next` (which apply to the endpoint only) and before the
        `script` queue of the request's code. Use it for the access-token APIs, e.g. a 503 on
        the next token fetch: ``script_path(TOKEN_PATH, ErrorStatus(503))``.

        Args:
            path: [`ENDPOINT_PATH`][baidu_swan_auth.testing.ENDPOINT_PATH],
                [`TOKEN_PATH`][baidu_swan_auth.testing.TOKEN_PATH],
                [`GETSESSIONKEY_PATH`][baidu_swan_auth.testing.GETSESSIONKEY_PATH] or
                [`GETUNIONID_PATH`][baidu_swan_auth.testing.GETUNIONID_PATH].
            *faults: The faults, in the order requests will meet them.

        Raises:
            ValueError: ``path`` is not one of those four.
        """
        self._state.script_path(path, faults)

    # ---------------------------------------------------------------- access tokens

    @property
    def token_lifetime(self) -> int:
        """The ``expires_in``, in seconds, of the tokens issued from now on; may be changed while
        the server runs. A token answers ``111`` (expired) once ``time.time()`` reaches its issue
        time plus the lifetime it was issued with.

        Raises:
            ValueError: Set to a value that is not positive.
        """
        return self._state.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        self._state.token_lifetime = seconds

    @property
    def token_delay(self) -> float:
        """Seconds the token API waits before answering normally (0 at first), so that token
        fetches are slow enough for races to be real. A faulted request waits as its fault says.

        Raises:
            ValueError: Set to a negative value.
        """
        return self._state.token_delay

    @token_delay.setter
    def token_delay(self, seconds: float) -> None:
        self._state.token_delay = seconds

    @property
    def token_fetches(self) -> int:
        """How many tokens were issued since start or the last `reset_stats`."""
        return self._state.token_fetches

    @property
    def tokens_issued(self) -> list[str]:
        """Every token issued since start, oldest first (a copy); `reset_stats` keeps them."""
        return self._state.tokens_issued()

    def revoke_tokens(self) -> None:
        """Revoke every token issued so far: they answer ``110`` from now on (even after
        `reset_stats`); tokens issued later are valid."""
        self._state.revoke_tokens()

    def unionid_for(self, openid: str) -> str:
        """Return the unionid the fake answers for ``openid``: the same every time, per
        `client_id`.

        Args:
            openid: Any openid, issued or not.
        """
        return unionid(self.client_id, openid)

    # ---------------------------------------------------------------- observation

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy); empty if not `record_requests`."""
        return self._state.requests()

    def requests_for(self, code: str) -> list[RecordedRequest]:
        """The requests whose form carried ``code``, oldest first.

        Args:
            code: The code to look for.
        """
        return self._state.requests(code)

    @property
    def connections_opened(self) -> int:
        """How many TCP connections the server accepted."""
        return self._state.connections_opened

    @property
    def in_flight(self) -> int:
        """How many requests are being handled right now.

        A request counts from its arrival until its answer is written or its connection is
        dropped by the fake. A delayed request whose client hung up still counts until its
        delay is over, because the fake keeps working on it (and spends its code then).
        """
        return self._state.in_flight

    @property
    def max_in_flight(self) -> int:
        """The highest `in_flight` seen since start or the last `reset_stats`."""
        return self._state.max_in_flight

    def reset_stats(self) -> None:
        """Forget recorded requests, and reset `connections_opened`, `max_in_flight` and
        `token_fetches`. Codes, tokens and revocations stay as they are."""
        self._state.reset_stats()

    # A timeout parameter and polling, not an asyncio.Event: in threaded mode in_flight changes
    # on another loop, and callers want a bounded wait without ceremony.
    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no request is being handled, e.g. a delayed one whose client gave up.

        Works from any event loop, whether the server runs on it or on its own thread.

        Args:
            timeout: How long to wait, in seconds.

        Raises:
            TimeoutError: Requests were still in flight after ``timeout``.
        """
        async with asyncio.timeout(timeout):
            while self.in_flight:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    # ---------------------------------------------------------------- connections

    def _make_protocol(self) -> asyncio.Protocol:
        assert self._web_server is not None
        protocol = self._web_server()
        self._state.connection_opened(protocol)
        return protocol
