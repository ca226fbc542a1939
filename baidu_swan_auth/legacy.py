"""A path off the legacy ``getSessionKeyByCode`` API.

Baidu asks everyone to move from ``https://openapi.baidu.com/nalogin/getSessionKeyByCode`` to
``https://spapi.baidu.com/oauth/jscode2sessionkey``; the old URL fails for mini programs running in
partner apps. Three ways across, from least to most change to your code:

* [`legacy_rewrite_middleware`][baidu_swan_auth.legacy.legacy_rewrite_middleware]: one line in
  the ``ClientSession(...)`` of existing aiohttp code, which then reaches the new endpoint. Fields
  sent in a query string (the AppSecret among them) move into the form body.
* [`get_session_key_by_code`][baidu_swan_auth.legacy.get_session_key_by_code]: a drop-in for the old
  helper's name and dict answer, built on ``SwanAuthClient``.
* ``SwanAuthClient(endpoint=LEGACY_ENDPOINT)``: an old configuration value keeps working.

Each warns once per process (a ``DeprecationWarning`` and a log line naming the old URL, never
its query).
"""

from __future__ import annotations

import warnings
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import yarl
from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse, hdrs
from aiohttp.payload import BytesPayload
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict

from ._client import SwanAuthClient
from ._endpoints import (
    DEFAULT_ENDPOINT,
    LEGACY_ENDPOINT,
    check_endpoint,
    is_legacy_url,
    warn_legacy_once,
)
from ._errors import UsageError
from ._protocol import FORM_CONTENT_TYPE

__all__ = [
    "LEGACY_ENDPOINT",
    "LegacyRedirectRefusedError",
    "LegacyRequestNotResentError",
    "get_session_key_by_code",
    "legacy_rewrite_middleware",
    "rewrite_legacy_url",
]

_FIELDS = ("code", "client_id", "sk")
# aiohttp re-sends a request whose *original* method is one of these after a dropped connection.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# The statuses aiohttp follows (when allow_redirects is true, its default for all but HEAD).
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class LegacyRequestNotResentError(aiohttp.ClientConnectionError):
    """The connection dropped under a rewritten legacy request, which is not sent again.

    The request carried a single-use login code that Baidu may already have spent. It is an
    ``aiohttp.ClientConnectionError`` (not a ``ServerDisconnectedError`` or ``ClientOSError``,
    which aiohttp would answer by re-sending the request); the original error is its
    ``__cause__``.
    """


class LegacyRedirectRefusedError(aiohttp.ClientResponseError):
    """A rewritten legacy request was answered with a redirect, which is not followed.

    Following it would send the request's form body, AppSecret and login code included, to
    wherever the ``Location`` header points. It is an ``aiohttp.ClientResponseError`` whose
    ``status`` is the redirect's (301, 302, 303, 307 or 308); the message names where the
    redirect pointed by its scheme, host and port only. ``headers`` is None: the ``Location``
    may echo the secret back in its path or query.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # aiohttp's ClientResponseError does not pickle: its request_info holds the request's
        # headers as a CIMultiDictProxy. Send them as a CIMultiDict and wrap them again.
        info = self.request_info
        request = (info.url, info.method, CIMultiDict(info.headers), info.real_url)
        return (_rebuild_refused, (type(self), request, self.status, self.message))


def _rebuild_refused(
    cls: type[LegacyRedirectRefusedError],
    request: tuple[yarl.URL, str, CIMultiDict[str], yarl.URL],
    status: int,
    message: str,
) -> LegacyRedirectRefusedError:
    url, method, headers, real_url = request
    info = aiohttp.RequestInfo(url, method, CIMultiDictProxy(headers), real_url)
    return cls(info, (), status=status, message=message)


def rewrite_legacy_url(
    url: str | yarl.URL, *, endpoint: str | yarl.URL = DEFAULT_ENDPOINT
) -> yarl.URL:
    """The legacy ``getSessionKeyByCode`` URL becomes ``endpoint`` with the same query; every
    other URL comes back unchanged.

    Args:
        url: Any URL.
        endpoint: Where legacy requests should go.

    Returns:
        The URL to send the request to.
    """
    url = yarl.URL(url)
    if not is_legacy_url(url):
        return url
    target = yarl.URL(endpoint).with_query(None).with_fragment(None)
    if not url.raw_query_string:
        return target
    # Build from the raw text so the query survives byte for byte, however it was encoded.
    return yarl.URL(f"{target}?{url.raw_query_string}", encoded=True)


def legacy_rewrite_middleware(endpoint: str | yarl.URL = DEFAULT_ENDPOINT) -> ClientMiddlewareType:
    """An aiohttp client middleware that sends legacy ``getSessionKeyByCode`` requests to
    ``endpoint``.

    ```python
    session = aiohttp.ClientSession(middlewares=[legacy_rewrite_middleware()])
    ```

    For a request to the legacy URL (http or https, any query):

    * the URL and the ``Host`` header become the new endpoint's;
    * ``code``, ``client_id`` and ``sk`` never stay in the URL: a GET carrying them becomes a POST
      with a form body, and a POST gets those from its query merged into its form body (fields
      already in the body win). Other query parameters stay;
    * the request is sent at most once: when the connection drops, it fails with
      [`LegacyRequestNotResentError`][baidu_swan_auth.legacy.LegacyRequestNotResentError] instead of
      being re-sent by aiohttp, because the code may already be spent;
    * it never follows a redirect: a 301, 302, 303, 307 or 308 answer fails with
      [`LegacyRedirectRefusedError`][baidu_swan_auth.legacy.LegacyRedirectRefusedError], whatever
      ``allow_redirects`` says, because aiohttp would re-send the form, AppSecret included, to
      the ``Location``.

    Other requests are not touched. A per-request ``middlewares=`` argument replaces the session's
    list, this middleware included.

    Args:
        endpoint: Where legacy requests go: ``https://``, or ``http://`` on a loopback address.

    Returns:
        The middleware, for ``ClientSession(middlewares=[...])``.
    """
    target = check_endpoint(endpoint, allow_insecure_http=False)

    async def rewrite_legacy_requests(
        request: ClientRequest, handler: ClientHandlerType
    ) -> ClientResponse:
        if not is_legacy_url(request.url):
            return await handler(request)
        original_method = request.method
        warn_legacy_once(request.url, target=target, stacklevel=2)
        await _move_to(request, target)
        try:
            response = await handler(request)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if original_method not in _IDEMPOTENT or isinstance(exc, aiohttp.ClientConnectorError):
                raise  # aiohttp re-sends neither, and a refused connection sent nothing
            raise LegacyRequestNotResentError(
                "the connection dropped after a rewritten getSessionKeyByCode request was sent; "
                "it is not sent again because Baidu may already have spent its code"
            ) from exc
        if response.status in _REDIRECTS:
            # aiohttp follows a redirect after the middleware returns, re-sending a 307/308's
            # body (the AppSecret) to the Location's host: raising is the only way to stop it.
            # The middleware cannot see allow_redirects, so the refusal does not depend on it.
            refusal = _refuse_redirect(response)
            # The response's repr shows its headers, and the Location may echo the form: keep
            # it out of this frame's locals, which error trackers record.
            del response
            raise refusal
        return response

    return rewrite_legacy_requests


def _refuse_redirect(response: ClientResponse) -> LegacyRedirectRefusedError:
    status = response.status
    where = _redirect_target(response)
    request_info = response.request_info
    # Back to the pool: nobody reads this answer.
    response.release()
    return LegacyRedirectRefusedError(
        request_info,
        (),
        status=status,
        message=(
            f"refused to follow a {status} redirect{where} for a rewritten getSessionKeyByCode "
            "request, which carries the AppSecret and a login code"
        ),
    )


def _redirect_target(response: ClientResponse) -> str:
    """`` to <origin>`` of the response's Location, or nothing when it has none.

    Only the scheme, host and port are shown: a server may echo the form's fields, the
    AppSecret among them, into the path or the query of the URL it redirects to.
    """
    location = response.headers.get(hdrs.LOCATION) or response.headers.get(hdrs.URI)
    if not location:
        return ""
    try:
        url = response.url.join(yarl.URL(location))
        shown = str(url.origin()) if url.absolute else ""
    except ValueError:
        shown = ""
    return f" to {shown}" if shown else " to an unusable Location"


async def _move_to(request: ClientRequest, target: yarl.URL) -> None:
    """Point ``request`` at ``target``, moving the exchange's fields from its query to its body."""
    query = request.url.query
    moved = [(key, value) for key, value in query.items() if key in _FIELDS]
    kept = MultiDict((key, value) for key, value in query.items() if key not in _FIELDS)
    url = target.with_query(kept) if kept else target
    request.url = url
    # aiohttp builds response.url and request_info from original_url: it must not keep the
    # legacy URL, whose query may hold the secret.
    request.original_url = url
    request.headers[hdrs.HOST] = url.host_port_subcomponent or target.raw_host or ""
    if not moved:
        return
    body = await _form_body(request)
    present = {key for key, _ in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)}
    missing = [(key, value) for key, value in moved if key not in present]
    if missing:
        addition = urlencode(missing).encode()
        body = body + b"&" + addition if body else addition
    request.method = hdrs.METH_POST
    request.headers[hdrs.CONTENT_TYPE] = FORM_CONTENT_TYPE
    await request.update_body(BytesPayload(body, content_type=FORM_CONTENT_TYPE))


async def _form_body(request: ClientRequest) -> bytes:
    """The request's body as urlencoded form bytes (empty when it has none)."""
    body = request.body
    if not body:
        return b""
    content_type = request.headers.get(hdrs.CONTENT_TYPE, "")
    if content_type.split(";", 1)[0].strip().lower() != FORM_CONTENT_TYPE:
        raise UsageError(
            "cannot move code, client_id and sk out of the URL of a getSessionKeyByCode request "
            f"whose body is {content_type or 'not a form'}; send them as a urlencoded form"
        )
    return await body.as_bytes()


async def get_session_key_by_code(
    code: str,
    client_id: str,
    sk: str,
    *,
    endpoint: str | yarl.URL = DEFAULT_ENDPOINT,
    session: aiohttp.ClientSession | None = None,
) -> dict[str, Any]:
    """The old helper's name and answer, on the new endpoint. Deprecated: use
    ``SwanAuthClient.exchange``, which keeps one pooled session instead of one per call.

    Args:
        code: The code ``swan.login()`` gave the mini program.
        client_id: The AppKey.
        sk: The AppSecret.
        endpoint: Where to exchange it.
        session: An ``aiohttp.ClientSession`` to use (left open); without it, one is made and
            closed for this call.

    Returns:
        ``{"openid": ..., "session_key": ...}``.

    Raises:
        SwanAuthError: The same typed errors as ``SwanAuthClient.exchange``.
    """
    warnings.warn(
        "get_session_key_by_code is deprecated: keep one SwanAuthClient for the process and call "
        "its exchange(code) method",
        DeprecationWarning,
        stacklevel=2,
    )
    try:
        client = SwanAuthClient(client_id, sk, endpoint=endpoint, session=session)
    finally:
        # This frame is in the traceback of every failed call, and error trackers record its
        # locals: the secret goes as soon as the client holds it.
        del sk
    async with client:
        key = await client.exchange(code)
    return {"openid": key.openid, "session_key": key.session_key}
