"""The values the SDK hands back: session keys, access tokens and per-attempt events."""

from __future__ import annotations

from typing import Any

import attrs

from ._crypto import decrypt_user_data
from ._errors import SwanAuthError

__all__ = ["AccessToken", "AttemptEvent", "Outcome", "SessionKey"]


@attrs.frozen
class SessionKey:
    """What Baidu returns for a login code.

    Attributes:
        openid: The user's id for this mini program (stable per user and mini program).
        session_key: The key that decrypts the user's data. A secret: it stays out of ``repr``.
    """

    openid: str
    session_key: str = attrs.field(repr=False)

    def decrypt(self, data: str, iv: str, app_key: str) -> dict[str, Any]:
        """Decrypt user data the mini program received while this key was current.

        The same as [`decrypt_user_data`][baidu_swan_auth.decrypt_user_data] with this
        ``session_key``; needs the ``crypto`` extra.

        Args:
            data: The encrypted data from ``swan.getUserInfo``, ``getPhoneNumber``, ...: base64.
            iv: The ``iv`` that came with it: base64.
            app_key: The mini program's AppKey (the ``client_id``).

        Returns:
            The decrypted JSON object.

        Raises:
            DecryptError: The inputs do not decrypt to Baidu's layout with this key; see
                [`DecryptError`][baidu_swan_auth.DecryptError]. ``stale_key`` is true when a
                newer login most likely replaced this key.
            MissingDependencyError: The ``cryptography`` package is not installed.
        """
        return decrypt_user_data(data, iv, self.session_key, app_key)


@attrs.frozen
class AccessToken:
    """An access token for Baidu's OpenAPI (``getsessionkey``, ``getunionid``).

    Attributes:
        token: The token. A secret: it stays out of ``repr`` and is sent in form bodies only.
        expires_at: When Baidu says it expires, in epoch seconds: the time of the fetch plus
            Baidu's ``expires_in``. The client renews it earlier than that.
        fetched_at: When it was fetched, in epoch seconds; with ``expires_at`` it gives the
            token's lifetime, which sets how early the client renews it.
    """

    token: str = attrs.field(repr=False)
    expires_at: float
    fetched_at: float

    @property
    def lifetime(self) -> float:
        """Seconds from the fetch to the expiry."""
        return self.expires_at - self.fetched_at


@attrs.frozen
class AttemptEvent:
    """One HTTP attempt of a call, as reported to ``on_attempt`` hooks.

    Attributes:
        code: The login code of an exchange, masked (its first characters and its length
            only); the masked openid of a ``unionid()`` call; empty for a token fetch.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        outcome: ``"ok"`` or the failed attempt's error kind (``SwanAuthError.kind``).
        status: The HTTP status, or None when no answer arrived.
        elapsed: Seconds the attempt took, from sending to the answer or the failure.
        error: Baidu's error string, if its answer carried one.
        will_retry: Whether another attempt follows.
        retry_in: Seconds until that attempt when ``will_retry``, else None.
        reason: Why the call stops or goes on (``"success"``, ``"retrying"``, ``"final"``,
            ``"attempts"``, ``"deadline"``, ``"budget"``, ``"retry_after_cap"``, ``"closed"``,
            ``"backoff"``: the backoff strategy raised or gave no finite wait >= 0,
            ``"token_rejected"``: Baidu refused the access token, and the call goes on once
            with a fresh one).
        operation: Which kind of call the attempt belongs to: ``"exchange"`` (either API),
            ``"token"`` (an access token fetch) or ``"unionid"``.
    """

    code: str
    attempt: int
    outcome: str
    status: int | None
    elapsed: float
    error: str | None = None
    will_retry: bool = False
    retry_in: float | None = None
    reason: str = "success"
    operation: str = "exchange"


def mask_code(code: str) -> str:
    """Show enough of a login code to correlate log lines, never enough to replay it."""
    if len(code) >= 12:
        return f"{code[:4]}...({len(code)})"
    return f"***({len(code)})"


@attrs.frozen(repr=False)
class Outcome:
    """What became of one input of ``exchange_many``: a result or an error, never both.

    Attributes:
        code: The code as it was given.
        tag: The tag given with it (``(tag, code)`` pairs), else None.
        result: The ``SessionKey`` when the exchange succeeded.
        error: The ``SwanAuthError`` when it failed.
    """

    code: object
    tag: object = None
    result: SessionKey | None = None
    error: SwanAuthError | None = None

    @property
    def ok(self) -> bool:
        """Whether the exchange succeeded."""
        return self.error is None

    def __repr__(self) -> str:
        code = mask_code(self.code) if isinstance(self.code, str) else type(self.code).__name__
        shown = f"result={self.result!r}" if self.error is None else f"error={self.error!r}"
        return f"Outcome(code={code!r}, tag={self.tag!r}, {shown})"
