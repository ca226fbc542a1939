"""What the fake knows, behind one lock: codes, access tokens, scripted faults, the request log,
counters.

No I/O and no event loop: the server's public methods (called from any thread) and its request
handling (on the server's loop) meet here, and only here.
"""

from __future__ import annotations

import collections
import threading
import time

import attrs

from ._faults import Fault
from ._values import (
    API_PATHS,
    ENDPOINT_PATH,
    GETSESSIONKEY_PATH,
    Grant,
    RecordedRequest,
    UnknownCodeError,
)
from ._wire import new_openid, new_session_key

__all__: list[str] = []  # the server's state; nothing public

# The number of connections remembered before forgetting the closed ones.
_PRUNE_AT = 1024

# The paths whose requests carry a code, so that `script(code)` applies to them.
_CODE_PATHS = frozenset({ENDPOINT_PATH, GETSESSIONKEY_PATH})

DEFAULT_TOKEN_LIFETIME = 2592000  # 30 days, what Baidu answers
TOKEN_INVALID = 110
TOKEN_EXPIRED = 111


@attrs.define
class _Token:
    issued_at: float  # time.time(): a lifetime is wall-clock, like the unix time in the token
    lifetime: int
    revoked: bool = False


class ServerState:
    """The fake's state. Every method takes the lock; none blocks for long."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}
        self._spent: set[str] = set()
        self._always: Fault | None = None
        self._next_faults: collections.deque[Fault] = collections.deque()
        self._code_faults: dict[str, collections.deque[Fault]] = {}
        self._path_faults: dict[str, collections.deque[Fault]] = {}
        self._tokens: dict[str, _Token] = {}
        self._token_fetches = 0
        self._token_lifetime = DEFAULT_TOKEN_LIFETIME
        self._token_delay = 0.0
        self._requests: list[RecordedRequest] = []
        self._connections_opened = 0
        self._in_flight = 0
        self._max_in_flight = 0
        # Protocol -> connection number; pruned of closed connections as it grows.
        self._connection_ids: dict[object, int] = {}
        self._prune_at = _PRUNE_AT

    # ---------------------------------------------------------------- codes

    def counts(self) -> tuple[int, int]:
        """``(issued, spent)``."""
        with self._lock:
            return len(self._grants), len(self._spent)

    def issue(self, code: str, grant: Grant) -> None:
        with self._lock:
            if code in self._grants:
                raise ValueError("this code was already issued")
            self._grants[code] = grant

    def grant_for(self, code: str) -> Grant:
        with self._lock:
            grant = self._grants.get(code)
        if grant is None:
            raise UnknownCodeError("this code was never issued by the fake")
        return grant

    def is_spent(self, code: str) -> bool:
        with self._lock:
            if code not in self._grants:
                raise UnknownCodeError("this code was never issued by the fake")
            return code in self._spent

    def redeem(self, code: str, *, auto_issue: bool, spend: bool) -> Grant | None:
        """The grant of an issued (or, with ``auto_issue``, new) unspent code, else ``None``.

        With ``spend``, the code is spent.
        """
        with self._lock:
            grant = self._grants.get(code)
            if grant is None and auto_issue:
                grant = self._grants[code] = Grant(new_openid(), new_session_key())
            if grant is None or code in self._spent:
                return None
            if spend:
                self._spent.add(code)
            return grant

    # ---------------------------------------------------------------- access tokens

    @property
    def token_lifetime(self) -> int:
        with self._lock:
            return self._token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        if seconds <= 0:
            raise ValueError(f"token_lifetime must be > 0, got {seconds!r}")
        with self._lock:
            self._token_lifetime = seconds

    @property
    def token_delay(self) -> float:
        with self._lock:
            return self._token_delay

    @token_delay.setter
    def token_delay(self, seconds: float) -> None:
        if not seconds >= 0:  # `not >=` also refuses NaN
            raise ValueError(f"token_delay must be >= 0, got {seconds!r}")
        with self._lock:
            self._token_delay = seconds

    def add_token(self, token: str, issued_at: float, lifetime: int) -> None:
        with self._lock:
            self._tokens[token] = _Token(issued_at, lifetime)
            self._token_fetches += 1

    def check_token(self, token: str) -> int:
        """0 for a usable token, else the gateway's ``error_code``: 110 unknown or revoked, 111
        expired."""
        with self._lock:
            record = self._tokens.get(token)
            if record is None or record.revoked:
                return TOKEN_INVALID
            if time.time() >= record.issued_at + record.lifetime:
                return TOKEN_EXPIRED
            return 0

    def revoke_tokens(self) -> None:
        with self._lock:
            for record in self._tokens.values():
                record.revoked = True

    @property
    def token_fetches(self) -> int:
        with self._lock:
            return self._token_fetches

    def tokens_issued(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    # ---------------------------------------------------------------- faults

    def script(self, code: str, faults: tuple[Fault, ...]) -> None:
        with self._lock:
            self._code_faults.setdefault(code, collections.deque()).extend(faults)

    def script_next(self, faults: tuple[Fault, ...]) -> None:
        with self._lock:
            self._next_faults.extend(faults)

    def script_path(self, path: str, faults: tuple[Fault, ...]) -> None:
        if path not in API_PATHS:
            raise ValueError(f"faults apply only to the API paths {API_PATHS}, not {path!r}")
        with self._lock:
            self._path_faults.setdefault(path, collections.deque()).extend(faults)

    def always(self, fault: Fault | None) -> None:
        with self._lock:
            self._always = fault

    def take_fault(self, path: str, code: str | None) -> Fault | None:
        """The fault for the next request to ``path``; ``None`` for normal handling.

        For the v1 endpoint: ``always``, then the ``script_next`` queue. For every API path:
        then the path's queue, then (v1 and v2 session key only) the code's queue.
        """
        if path not in API_PATHS:
            return None
        with self._lock:
            if path == ENDPOINT_PATH:
                if self._always is not None:
                    return self._always
                if self._next_faults:
                    return self._next_faults.popleft()
            if fault := _pop(self._path_faults, path):
                return fault
            if code is not None and path in _CODE_PATHS:
                return _pop(self._code_faults, code)
        return None

    # ---------------------------------------------------------------- the request log

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self, code: str | None = None) -> list[RecordedRequest]:
        """The log (a copy), or the requests whose form carried ``code``."""
        with self._lock:
            if code is None:
                return list(self._requests)
            return [request for request in self._requests if request.code == code]

    # ---------------------------------------------------------------- connections and load

    def connection_opened(self, protocol: object) -> None:
        """Number a new connection, by the aiohttp protocol object that serves it."""
        with self._lock:
            self._connections_opened += 1
            if len(self._connection_ids) >= self._prune_at:
                self._connection_ids = {
                    proto: n
                    for proto, n in self._connection_ids.items()
                    if getattr(proto, "transport", None) is not None
                }
                self._prune_at = max(_PRUNE_AT, 2 * len(self._connection_ids))
            self._connection_ids[protocol] = self._connections_opened

    def connection_number(self, protocol: object) -> int:
        """The number of the connection ``protocol`` serves, from 1; 0 if unknown."""
        with self._lock:
            return self._connection_ids.get(protocol, 0)

    @property
    def connections_opened(self) -> int:
        with self._lock:
            return self._connections_opened

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    def reset_stats(self) -> None:
        with self._lock:
            self._requests.clear()
            self._connections_opened = 0
            self._max_in_flight = self._in_flight
            self._token_fetches = 0


def _pop(queues: dict[str, collections.deque[Fault]], key: str) -> Fault | None:
    """The first fault of ``queues[key]``, dropping the queue once empty; ``None`` if none."""
    queue = queues.get(key)
    if not queue:
        return None
    fault = queue.popleft()
    if not queue:
        del queues[key]
    return fault
