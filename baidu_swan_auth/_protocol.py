"""The wire: the credentials and the form body they go in, the body read back under a cap, the
failure one attempt ends in, and the blanking of every form a secret took on the wire.

Baidu's answers are read in ``_answers``, the network's failures mapped in ``_transport``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Generic, TypeVar
from urllib.parse import quote, quote_plus, urlencode

import aiohttp

from ._retry import Disposition

# Internal to the package: nothing here is public.
__all__: list[str] = []

T = TypeVar("T")

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

#: Baidu's answers are about a hundred bytes; a gateway's error page may be a few KiB. Anything
#: larger is refused unread rather than buffered.
MAX_BODY_BYTES = 16 * 1024


class AttemptFailure(Exception):
    """One failed attempt: the error the call would raise, and whether retrying may help."""

    def __init__(
        self,
        error: Exception,
        disposition: Disposition,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        stale_token: bool = False,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.disposition = disposition
        self.status = status
        self.retry_after = retry_after
        #: Baidu refused the access token the attempt carried: a fresh one may succeed.
        self.stale_token = stale_token


def wire_forms(value: str) -> frozenset[str]:
    """``value`` as it is and as it travels percent-encoded: in a form body (``quote_plus``) and in
    a URL (``quote``, with and without ``/`` kept). A server that echoes a request may use any."""
    return frozenset({value, quote_plus(value), quote(value, safe=""), quote(value)})


class Redactor:
    """Blanks every wire form of some hidden values out of a text.

    Longer forms go first, so a value is never half-blanked by a shorter one inside it.
    """

    __slots__ = ("_forms",)

    def __init__(self, forms: Iterable[str]) -> None:
        self._forms = sorted({form for form in forms if form}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, "***")
        return text

    def reveals(self, text: str) -> bool:
        """Whether ``text`` holds any of the hidden values, in any of their forms."""
        return any(form in text for form in self._forms)

    def __repr__(self) -> str:
        return "<Redactor>"


#: A shorter code is not blanked: "***" for every "abc" would mangle Baidu's own error strings,
#: and a code that short is no secret worth guarding.
SHORTEST_BLANKED_CODE = 8


class Credentials:
    """The AppKey and AppSecret, with the constant part of every request body encoded once.

    Its ``repr`` is redacted: error trackers record the repr of every local variable of a failed
    call's frames, and this object (and the bytes it holds) must never show up there.
    """

    __slots__ = ("_hidden", "client_id", "form_prefix", "secret")

    def __init__(self, client_id: str, secret: str) -> None:
        self.client_id = client_id
        self.secret = secret
        self.form_prefix = (urlencode({"client_id": client_id, "sk": secret}) + "&code=").encode()
        self._hidden = wire_forms(secret)

    def hide_also(self, forms: Iterable[str]) -> None:
        """Blank these too, wherever the secret is blanked (a proxy's password, for one)."""
        self._hidden = self._hidden | frozenset(forms)

    def form_body(self, code: str) -> bytes:
        """The whole urlencoded body for one code; the code travels byte for byte."""
        return self.form_prefix + quote_plus(code).encode("ascii")

    def redactor(self, code: str | None = None, token: str | None = None) -> Redactor:
        """Blanks the secret (and whatever ``hide_also`` added), an access token, and, when it
        is long enough to blank safely, ``code``, in every wire form."""
        hidden = self._hidden
        if token is not None:
            hidden = hidden | wire_forms(token)
        if code is not None and len(code) >= SHORTEST_BLANKED_CODE:
            return Redactor(hidden | wire_forms(code))
        return Redactor(hidden)

    def redact(self, text: str, code: str) -> str:
        """``text`` with the secret and the code blanked out, should Baidu echo them."""
        return self.redactor(code)(text)

    def __repr__(self) -> str:
        return "<Credentials redacted>"


class Hidden(Generic[T]):
    """Holds a setting that may carry a credential (a proxy URL with a password) behind a
    redacted ``repr``, for the same reason as ``Credentials``."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


def read_capped_body(response: aiohttp.ClientResponse) -> Awaitable[bytes | None]:
    """The body, or None when it is over ``MAX_BODY_BYTES`` (then it is not buffered).

    A plain function returning the awaitable, rather than a coroutine, so the usual answer costs
    no extra frame on the hot path.
    """
    length = response.content_length
    if length is not None:
        if length > MAX_BODY_BYTES:
            return _nothing()
        # Content-Length counts the bytes on the wire; a compressed body may expand far beyond
        # them, so only an uncompressed one is read whole.
        if "Content-Encoding" not in response.headers:
            return response.read()
    return _read_streamed(response)


async def _nothing() -> None:
    return None


async def _read_streamed(response: aiohttp.ClientResponse) -> bytes | None:
    stream = response.content
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(MAX_BODY_BYTES + 1 - size):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


