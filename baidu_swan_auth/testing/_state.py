"""What the fake knows, behind one lock: codes, scripted faults, the request log, counters.

No I/O and no event loop: the server's public methods (called from any thread) and its request
handling (on the server's loop) meet here, and only here.
"""

from __future__ import annotations

import collections
import threading

from ._faults import Fault
from ._values import Grant, RecordedRequest, UnknownCodeError
from ._wire import new_openid, new_session_key

__all__: list[str] = []  # the server's state; nothing public

# The number of connections remembered before forgetting the closed ones.
_PRUNE_AT = 1024


class ServerState:
    """The fake's state. Every method takes the lock; none blocks for long."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}
        self._spent: set[str] = set()
        self._always: Fault | None = None
        self._next_faults: collections.deque[Fault] = collections.deque()
        self._code_faults: dict[str, collections.deque[Fault]] = {}
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

    # ---------------------------------------------------------------- faults

    def script(self, code: str, faults: tuple[Fault, ...]) -> None:
        with self._lock:
            self._code_faults.setdefault(code, collections.deque()).extend(faults)

    def script_next(self, faults: tuple[Fault, ...]) -> None:
        with self._lock:
            self._next_faults.extend(faults)

    def always(self, fault: Fault | None) -> None:
        with self._lock:
            self._always = fault

    def take_fault(self, code: str | None) -> Fault | None:
        """The fault for the next request to the endpoint: ``always``, then the ``script_next``
        queue, then the code's queue; ``None`` for normal handling."""
        with self._lock:
            if self._always is not None:
                return self._always
            if self._next_faults:
                return self._next_faults.popleft()
            if code is not None and (queue := self._code_faults.get(code)):
                fault = queue.popleft()
                if not queue:
                    del self._code_faults[code]
                return fault
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
