"""Operations: each kind of call to Baidu, as the engine sees it.

An operation says where a call goes, how its form body is built, how its answer is read, how a
failure's text is blanked, how the request shows in a log line, and whether it spends a single-use
code. The engine's retry loop knows nothing else about the call: the exchange of a login code is
the first operation; the token fetch, v2 ``getsessionkey`` and ``getunionid`` are the next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar
from urllib.parse import quote_plus, urlencode

import yarl
from multidict import CIMultiDictProxy

from ._answers import interpret_answer
from ._models import AccessToken, SessionKey, mask_code
from ._openapi import read_session_key, read_token, read_unionid
from ._protocol import Credentials, Redactor

__all__: list[str] = []

Request = TypeVar("Request")
Result_co = TypeVar("Result_co", covariant=True)


class Operation(Protocol, Generic[Request, Result_co]):
    """One kind of call to Baidu."""

    url: yarl.URL
    #: Whether a request may spend a single-use code: then ``invalid_grant`` after an ambiguous
    #: attempt becomes ``CodeConsumedError``.
    spends_code: bool
    #: What the call is, in log lines and ``AttemptEvent.operation``.
    name: str
    #: The Baidu API it calls, for instrumentation.
    api: str
    #: What ``shown()`` shows in a log line (``code``, ``openid``), or empty.
    label: str

    def body(self, request: Request) -> bytes:
        """The urlencoded form body; secrets go here, never in the URL."""
        ...

    def interpret(
        self,
        status: int,
        headers: CIMultiDictProxy[str],
        body: bytes | None,
        request: Request,
    ) -> Result_co:
        """The result, or ``AttemptFailure`` saying what went wrong and whether to retry."""
        ...

    def redactor(self, request: Request) -> Redactor:
        """What blanks this request's secrets out of a failure's text."""
        ...

    def shown(self, request: Request) -> str:
        """The request as a log line or an ``AttemptEvent`` may show it."""
        ...

    def renewed(self, request: Request, timeout: float) -> Awaitable[Request] | None:
        """After Baidu refused the request's access token: the request with a fresh one, at
        most ``timeout`` seconds away; None when the operation carries no token."""
        ...


class CodeExchange:
    """``jscode2sessionkey``: a login code for an ``openid`` and a ``session_key``."""

    __slots__ = ("body", "credentials", "url")
    spends_code = True
    name = "exchange"
    api = "jscode2sessionkey"
    label = "code"

    def __init__(self, url: yarl.URL, credentials: Credentials) -> None:
        self.url = url
        self.credentials = credentials
        # The bound method itself: the hot path makes one call for the body, not two.
        self.body = credentials.form_body

    def interpret(
        self, status: int, headers: CIMultiDictProxy[str], body: bytes | None, request: str
    ) -> SessionKey:
        return interpret_answer(status, headers, body, self.credentials, request)

    def redactor(self, request: str) -> Redactor:
        return self.credentials.redactor(request)

    def shown(self, request: str) -> str:
        return mask_code(request)

    def renewed(self, request: str, timeout: float) -> None:
        return None

    def __repr__(self) -> str:
        return f"<CodeExchange {self.url}>"


class TokenFetch:
    """``oauth/2.0/token``: the AppKey and AppSecret for an access token (client credentials).

    The secret goes in the form body: Baidu's own SDKs put it in the query string, where every
    proxy and access log keeps it.
    """

    __slots__ = ("_form", "credentials", "url")
    spends_code = False
    name = "token"
    api = "token"
    label = ""

    def __init__(self, url: yarl.URL, credentials: Credentials) -> None:
        self.url = url
        self.credentials = credentials
        self._form = urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": credentials.client_id,
                "client_secret": credentials.secret,
                "scope": "smartapp_snsapi_base",
            }
        ).encode()

    def body(self, request: None) -> bytes:
        return self._form

    def interpret(
        self, status: int, headers: CIMultiDictProxy[str], body: bytes | None, request: None
    ) -> AccessToken:
        return read_token(status, headers, body, self.credentials.redactor())

    def redactor(self, request: None) -> Redactor:
        return self.credentials.redactor()

    def shown(self, request: None) -> str:
        return ""

    def renewed(self, request: None, timeout: float) -> None:
        return None

    def __repr__(self) -> str:
        return f"<TokenFetch {self.url}>"


class TokenSupply(Protocol):
    """Where an operation that carries an access token gets a fresh one (``_tokens``)."""

    def replace(self, rejected: AccessToken, timeout: float) -> Awaitable[AccessToken]: ...


class TokenRequest:
    """One request of an operation that carries an access token: the token, and the value (a
    code, an openid). Its ``repr`` is redacted: it is a local of the engine's frames."""

    __slots__ = ("token", "value")

    def __init__(self, token: AccessToken, value: str) -> None:
        self.token = token
        self.value = value

    def __repr__(self) -> str:
        return "<TokenRequest redacted>"


Result = TypeVar("Result")


class _TokenOperation(Generic[Result]):
    """What the ``rest/2.0`` calls share: the token in the form body, blanked everywhere, and
    renewed once when the gateway refuses it."""

    __slots__ = ("_encoded", "credentials", "tokens", "url")
    label: str
    #: Reads an answer: status, headers, body, and what blanks the request's secrets.
    read: Callable[
        [int, CIMultiDictProxy[str], bytes | None, Callable[[], tuple[Redactor, Redactor]]],
        Result,
    ]

    def __init__(self, url: yarl.URL, credentials: Credentials, tokens: TokenSupply) -> None:
        self.url = url
        self.credentials = credentials
        self.tokens = tokens
        # The last token's encoded form part: it changes once a month, requests many times a
        # second.
        self._encoded: tuple[AccessToken, bytes] | None = None

    def body(self, request: TokenRequest) -> bytes:
        encoded = self._encoded
        if encoded is None or encoded[0] is not request.token:
            prefix = f"access_token={quote_plus(request.token.token)}&{self.label}="
            encoded = self._encoded = (request.token, prefix.encode())
        return encoded[1] + quote_plus(request.value).encode()

    def redactor(self, request: TokenRequest) -> Redactor:
        return self.credentials.redactor(request.value, request.token.token)

    def interpret(
        self,
        status: int,
        headers: CIMultiDictProxy[str],
        body: bytes | None,
        request: TokenRequest,
    ) -> Result:
        return self.read(status, headers, body, lambda: self._blanks(request))

    def shown(self, request: TokenRequest) -> str:
        return mask_code(request.value)

    def _blanks(self, request: TokenRequest) -> tuple[Redactor, Redactor]:
        # Built only for a failure: a successful answer needs no blanking.
        return self.redactor(request), self.credentials.redactor()

    def renewed(self, request: TokenRequest, timeout: float) -> Awaitable[TokenRequest]:
        return self._renewed(request, timeout)

    async def _renewed(self, request: TokenRequest, timeout: float) -> TokenRequest:
        return TokenRequest(await self.tokens.replace(request.token, timeout), request.value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class SessionKeyV2(_TokenOperation[SessionKey]):
    """v2 ``getsessionkey``: a login code and an access token for a ``SessionKey``."""

    __slots__ = ()
    spends_code = True
    name = "exchange"
    api = "getsessionkey"
    label = "code"
    read = staticmethod(read_session_key)


class UnionIdLookup(_TokenOperation[str]):
    """``getunionid``: an openid and an access token for the user's unionid. A read: safe to
    retry whatever happened."""

    __slots__ = ()
    spends_code = False
    name = "unionid"
    api = "getunionid"
    label = "openid"
    read = staticmethod(read_unionid)
