"""The normal answers of the access-token APIs: the token, v2 session key and unionid.

Pure functions over the request's form and the state, no I/O: ``_exchange`` calls them from
``AiohttpExchange.answer`` and sends what they return. The shapes follow Baidu's official SDKs
(see ``FakeBaiduServer``'s docstring): the token API errs like OAuth (``error``, HTTP 400/401);
the ``rest/2.0`` APIs answer HTTP 200 with a gateway layer (``error_code``) in front of a
business layer (``errno``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Protocol

from ._state import ServerState
from ._values import V2_INVALID_CODE_ERRNO
from ._wire import ParsedForm, Reply, json_reply, new_session_key, oauth_error

__all__: list[str] = []  # helpers of the request handling; nothing public

SCOPE = "smartapp_snsapi_base"
# What Baidu grants along with the scope asked for; a client must not rely on the rest.
_GRANTED_SCOPE = f"{SCOPE} public"

# The fake's own choice, like V2_INVALID_CODE_ERRNO; kept private since no client should
# tell the two apart by number.
_MISSING_PARAMETER_ERRNO = 40002

_GATEWAY_MESSAGES = {
    100: "Invalid parameter",
    110: "Access token invalid or no longer valid",
    111: "Access token expired",
}


class ClientSettings(Protocol):
    """What the answers read from the server (tests may change it while it runs)."""

    client_id: str
    secret: str
    auto_issue: bool


def unionid(client_id: str, openid: str) -> str:
    """The unionid of ``openid``: stable per app and user, unguessable without both."""
    digest = hashlib.sha256(f"{client_id}\0{openid}".encode()).hexdigest()
    return f"union-{digest[:32]}"


def token_answer(
    parsed: ParsedForm, settings: ClientSettings, state: ServerState, *, spend: bool
) -> Reply:
    """``/oauth/2.0/token``; with ``spend`` a valid request issues (and remembers) a token."""
    if parsed.problem is not None:
        return oauth_error(400, "invalid_request", parsed.problem)
    fields = parsed.fields
    for name in ("grant_type", "client_id", "client_secret"):
        if not fields.get(name):
            return oauth_error(400, "invalid_request", f"missing parameter: {name}")
    if fields["grant_type"] != "client_credentials":
        return oauth_error(
            400, "unsupported_grant_type", "the grant_type must be client_credentials"
        )
    client_ok = hmac.compare_digest(fields["client_id"].encode(), settings.client_id.encode())
    secret_ok = hmac.compare_digest(fields["client_secret"].encode(), settings.secret.encode())
    if not (client_ok and secret_ok):
        return oauth_error(401, "invalid_client", "unknown client_id or wrong client_secret")
    scope = fields.get("scope")
    if scope is not None and SCOPE not in scope.split():
        return oauth_error(400, "invalid_scope", f"the scope must include {SCOPE}")
    lifetime = state.token_lifetime
    issued_at = time.time()
    token = _new_token(settings.client_id, lifetime, int(issued_at))
    if spend:
        state.add_token(token, issued_at, lifetime)
    return json_reply(
        200,
        {
            "access_token": token,
            "expires_in": lifetime,
            "scope": _GRANTED_SCOPE,
            # Legacy fields Baidu still sends; random so that a client that uses them shows.
            "refresh_token": _new_token(settings.client_id, lifetime * 12, int(issued_at), "25"),
            "session_key": new_session_key(),
            "session_secret": secrets.token_hex(16),
        },
    )


def session_key_answer(
    parsed: ParsedForm, settings: ClientSettings, state: ServerState, *, spend: bool
) -> Reply:
    """``/rest/2.0/smartapp/getsessionkey``; with ``spend`` a valid code is spent."""
    if (refused := _gateway(parsed, state)) is not None:
        return refused
    code = parsed.fields.get("code")
    if not code:
        return _business(_MISSING_PARAMETER_ERRNO, "msg", "missing parameter: code")
    grant = state.redeem(code, auto_issue=settings.auto_issue, spend=spend)
    if grant is None:
        return _business(
            V2_INVALID_CODE_ERRNO, "msg", "the code is invalid, expired or already used"
        )
    data = {"open_id": grant.openid, "session_key": grant.session_key}
    return _business(0, "msg", "success", data)


def unionid_answer(parsed: ParsedForm, settings: ClientSettings, state: ServerState) -> Reply:
    """``/rest/2.0/smartapp/getunionid``: no side effect, so nothing to spend."""
    if (refused := _gateway(parsed, state)) is not None:
        return refused
    openid = parsed.fields.get("openid")
    if not openid:
        return _business(_MISSING_PARAMETER_ERRNO, "errmsg", "missing parameter: openid")
    return _business(0, "errmsg", "succ", {"unionid": unionid(settings.client_id, openid)})


def _gateway(parsed: ParsedForm, state: ServerState) -> Reply | None:
    """The gateway's refusal of a request that cannot reach the business layer, if any."""
    if parsed.problem is not None:
        error_code = 100
    else:
        error_code = state.check_token(parsed.fields.get("access_token", ""))
    if not error_code:
        return None
    return json_reply(200, {"error_code": error_code, "error_msg": _GATEWAY_MESSAGES[error_code]})


def _business(errno: int, msg_key: str, msg: str, data: dict[str, str] | None = None) -> Reply:
    payload: dict[str, object] = {"errno": errno, msg_key: msg}
    if data is not None:
        payload["data"] = data
    payload["request_id"] = secrets.token_hex(16)
    payload["timestamp"] = int(time.time())
    return json_reply(200, payload)


def _new_token(client_id: str, lifetime: int, issued_at: int, prefix: str = "24") -> str:
    """``24.<32 hex>.<lifetime>.<unix time>.<n>-<app id>``, the shape of Baidu's tokens."""
    app_id = int(hashlib.sha256(client_id.encode()).hexdigest()[:12], 16) % 10**8
    serial = secrets.randbelow(900_000) + 100_000
    return f"{prefix}.{secrets.token_hex(16)}.{lifetime}.{issued_at}.{serial}-{app_id}"
