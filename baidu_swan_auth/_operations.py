"""Operations: each kind of call to Baidu, as the engine sees it.

An operation says where a call goes, how its form body is built, how its answer is read, how a
failure's text is blanked, how the request shows in a log line, and whether it spends a single-use
code. The engine's retry loop knows nothing else about the call: the exchange of a login code is
the first operation; the token fetch, v2 ``getsessionkey`` and ``getunionid`` are the next.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import yarl
from multidict import CIMultiDictProxy

from ._answers import interpret_answer
from ._models import SessionKey, mask_code
from ._protocol import Credentials, Redactor

__all__: list[str] = []

Request_contra = TypeVar("Request_contra", contravariant=True)
Result_co = TypeVar("Result_co", covariant=True)


class Operation(Protocol, Generic[Request_contra, Result_co]):
    """One kind of call to Baidu."""

    url: yarl.URL
    #: Whether a request may spend a single-use code: then ``invalid_grant`` after an ambiguous
    #: attempt becomes ``CodeConsumedError``.
    spends_code: bool

    def body(self, request: Request_contra) -> bytes:
        """The urlencoded form body; secrets go here, never in the URL."""
        ...

    def interpret(
        self,
        status: int,
        headers: CIMultiDictProxy[str],
        body: bytes | None,
        request: Request_contra,
    ) -> Result_co:
        """The result, or ``AttemptFailure`` saying what went wrong and whether to retry."""
        ...

    def redactor(self, request: Request_contra) -> Redactor:
        """What blanks this request's secrets out of a failure's text."""
        ...

    def shown(self, request: Request_contra) -> str:
        """The request as a log line or an ``AttemptEvent`` may show it."""
        ...


class CodeExchange:
    """``jscode2sessionkey``: a login code for an ``openid`` and a ``session_key``."""

    __slots__ = ("body", "credentials", "url")
    spends_code = True

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

    def __repr__(self) -> str:
        return f"<CodeExchange {self.url}>"
