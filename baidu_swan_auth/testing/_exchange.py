"""Handling one request: read it, log it, then answer normally or as its fault says.

``RequestHandler`` is the aiohttp handler of every request the fake receives. It asks the
state for the request's fault and hands the fault an ``AiohttpExchange``, the aiohttp
implementation of the few things a fault may do to a request (``_faults.Exchange``). The normal
answer (validation, credentials, spending the code) is ``AiohttpExchange.answer``: the v1
endpoint's here, the access-token APIs' in ``_openapi``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import attrs
from aiohttp import web
from multidict import CIMultiDict

from ._faults import Fault
from ._openapi import session_key_answer, token_answer, unionid_answer
from ._state import ServerState
from ._values import (
    API_PATHS,
    ENDPOINT_PATH,
    GETSESSIONKEY_PATH,
    GETUNIONID_PATH,
    REDIRECT_TARGET_PATH,
    TOKEN_PATH,
    RecordedRequest,
)
from ._wire import (
    HTML_MIME,
    JSON_MIME,
    ParsedForm,
    Reply,
    html_page,
    json_reply,
    oauth_error,
    parse_form,
)

__all__: list[str] = []  # the server's request handling; nothing public

# The API each path answers like: its own, or for the redirect target the API it stands in for
# (the bare target for v1, the target followed by the API's path for the others).
_ANSWERS_AS = {
    **{path: path for path in API_PATHS},
    REDIRECT_TARGET_PATH: ENDPOINT_PATH,
    **{f"{REDIRECT_TARGET_PATH}{path}": path for path in API_PATHS if path != ENDPOINT_PATH},
}


class ServerSettings(Protocol):
    """What request handling reads from the server on every request (tests may change it)."""

    client_id: str
    secret: str
    auto_issue: bool
    record_requests: bool

    @property
    def base_url(self) -> str: ...


class RequestHandler:
    """The aiohttp handler: counts requests in flight and keeps their tasks for ``close()``."""

    def __init__(self, settings: ServerSettings, state: ServerState) -> None:
        self._settings = settings
        self._state = state
        self.tasks: dict[asyncio.Task[Any], web.BaseRequest] = {}
        """The tasks handling a request right now, with their request."""

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self.tasks[task] = request
        self._state.request_started()
        try:
            return await self._dispatch(request)
        finally:
            self._state.request_finished()
            if task is not None:
                self.tasks.pop(task, None)

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        received_at = time.monotonic()
        try:
            body = await request.read()
        except ConnectionError:
            # The client vanished mid-body; there is nobody to answer.
            return web.Response()
        parsed = parse_form(request.headers.get("Content-Type", ""), body)
        fault = self._state.take_fault(request.path, parsed.fields.get("code"))
        if self._settings.record_requests:
            self._record(request, body, parsed, fault, received_at)

        exchange = AiohttpExchange(self._settings, self._state, request, parsed)
        if fault is not None:
            return await fault._respond(exchange)
        if _ANSWERS_AS.get(request.path) == TOKEN_PATH and (delay := self._state.token_delay):
            await asyncio.sleep(delay)
        return await exchange.send(exchange.answer(spend=True))

    def _record(
        self,
        request: web.BaseRequest,
        body: bytes,
        parsed: ParsedForm,
        fault: Fault | None,
        received_at: float,
    ) -> None:
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self._state.record(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query_string=request.query_string,
                headers=headers,
                form=parsed.fields,
                body=body,
                code=parsed.fields.get("code"),
                fault=type(fault).__name__ if fault is not None else None,
                host_header=request.headers.get("Host"),
                connection=self._state.connection_number(request.protocol),
                received_at=received_at,
            )
        )


class AiohttpExchange:
    """One request, and the ways to answer it: ``_faults.Exchange`` on aiohttp."""

    def __init__(
        self,
        settings: ServerSettings,
        state: ServerState,
        request: web.BaseRequest,
        parsed: ParsedForm,
    ) -> None:
        self._settings = settings
        self._state = state
        self._request = request
        self._parsed = parsed

    @property
    def redirect_target(self) -> str:
        api = _ANSWERS_AS.get(self._request.path, ENDPOINT_PATH)
        suffix = "" if api == ENDPOINT_PATH else api
        return f"{self._settings.base_url}{REDIRECT_TARGET_PATH}{suffix}"

    def answer(self, *, spend: bool) -> Reply:
        """Compute the normal answer of the request's path; only with ``spend`` may it change
        the state (spend a code, issue a token), and only when the request is valid."""
        path = _ANSWERS_AS.get(self._request.path)
        if path is None:
            return Reply(404, html_page(404), HTML_MIME)
        if self._request.method != "POST":
            reply = oauth_error(405, "invalid_request", "the method must be POST")
            return attrs.evolve(reply, headers={"Allow": "POST"})
        if path == TOKEN_PATH:
            return token_answer(self._parsed, self._settings, self._state, spend=spend)
        if path == GETSESSIONKEY_PATH:
            return session_key_answer(self._parsed, self._settings, self._state, spend=spend)
        if path == GETUNIONID_PATH:
            return unionid_answer(self._parsed, self._settings, self._state)
        return self._v1_answer(spend=spend)

    def _v1_answer(self, *, spend: bool) -> Reply:
        settings = self._settings
        if self._parsed.problem is not None:
            return oauth_error(400, "invalid_request", self._parsed.problem)
        fields = self._parsed.fields
        for name in ("code", "client_id", "sk"):
            if not fields.get(name):
                return oauth_error(400, "invalid_request", f"missing parameter: {name}")
        client_ok = hmac.compare_digest(fields["client_id"].encode(), settings.client_id.encode())
        secret_ok = hmac.compare_digest(fields["sk"].encode(), settings.secret.encode())
        if not (client_ok and secret_ok):
            return oauth_error(401, "invalid_client", "unknown client_id or wrong secret")
        grant = self._state.redeem(fields["code"], auto_issue=settings.auto_issue, spend=spend)
        if grant is None:
            return oauth_error(400, "invalid_grant", "the code is invalid, expired or already used")
        return json_reply(200, {"openid": grant.openid, "session_key": grant.session_key})

    async def send(self, reply: Reply) -> web.StreamResponse:
        response = web.Response(
            status=reply.status,
            body=reply.body,
            headers={"Content-Type": reply.content_type, **reply.headers},
        )
        # Writing here rather than leaving it to aiohttp keeps the request "in flight" until
        # its answer is really out.
        with contextlib.suppress(ConnectionError):
            await response.prepare(self._request)
            await response.write_eof()
        return response

    async def send_verbatim(
        self, status: int, headers: Iterable[tuple[str, str]], body: bytes
    ) -> web.StreamResponse:
        response = web.Response(status=status, body=body, headers=CIMultiDict(headers))
        with contextlib.suppress(ConnectionError):
            await response.prepare(self._request)
            await response.write_eof()
        return response

    async def send_half(self, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON_MIME})
        response.content_length = len(body)
        with contextlib.suppress(ConnectionError):
            await response.prepare(self._request)
            await response.write(body[: len(body) // 2])
        # close() flushes what was written before the FIN, so the client gets the first
        # half and then an early end of stream.
        return self._close(reset=False, response=response)

    async def stream(
        self, chunks: Iterator[bytes], size: int, *, status: int, chunked: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": JSON_MIME})
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        # write() waits for the socket to drain past a small buffer, so memory stays flat
        # however large the body; a client hang-up surfaces as ConnectionError.
        with contextlib.suppress(ConnectionError):
            await response.prepare(self._request)
            for chunk in chunks:
                await response.write(chunk)
            await response.write_eof()
        return response

    def drop(self, *, reset: bool) -> web.StreamResponse:
        return self._close(reset=reset, response=None)

    def _close(self, *, reset: bool, response: web.StreamResponse | None) -> web.StreamResponse:
        transport = self._request.transport
        if transport is not None:
            if reset:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    # SO_LINGER with a zero timeout turns close() into a TCP reset.
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                transport.abort()
            else:
                transport.close()
        # aiohttp still "finishes" the returned response; writing to the closing transport
        # raises ConnectionResetError, which aiohttp takes as a client hang-up and ignores,
        # so nothing else reaches the wire and nothing is logged.
        return response if response is not None else web.Response()
