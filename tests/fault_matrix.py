"""The fault matrix: every fault the fake Baidu can script, and the outcome each must give.

`FAULT_MATRIX` is the input of tests/client/test_fault_matrix.py and, rendered by
`render_matrix`, the table in docs/errors-and-retries.md between the ``fault-matrix`` markers.
Regenerate the docs with ``python -m tests.fault_matrix`` after changing the table;
`test_the_docs_show_the_matrix` fails until they agree.
"""

from __future__ import annotations

import contextlib
import email.utils
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from tenacity import wait_none

from baidu_swan_auth import (
    ApiError,
    CodeConsumedError,
    ExchangeTimeoutError,
    InvalidClientError,
    InvalidCodeError,
    ResponseError,
    RetryBudget,
    ServiceUnavailableError,
    SessionKey,
    SwanAuthClient,
    SwanAuthError,
    TransportError,
)
from baidu_swan_auth.testing import (
    ENDPOINT_PATH,
    Delay,
    Drop,
    ErrnoBody,
    ErrorStatus,
    FakeBaiduServer,
    Fault,
    HugeBody,
    RawBody,
    Redirect,
    Truncated,
)

from .helpers import RecordingSleep, socket_port

DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "errors-and-retries.md"
START_MARKER = "<!-- fault-matrix:start -->"
END_MARKER = "<!-- fault-matrix:end -->"

#: The client every row runs against, unless the row's ``settings`` say otherwise. Waits are
#: recorded by an injected ``sleep``, never slept, so ``Retry-After`` costs no time.
MATRIX_CLIENT: dict[str, float] = {"max_attempts": 4, "timeout": 10.0, "read_timeout": 0.25}

#: Stands for a ``Retry-After`` HTTP date 5 seconds ahead, written when the row runs.
DATE_IN_5_S = "<HTTP date 5 s ahead>"
PAST_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
FAR_FUTURE_DATE = "Fri, 01 Jan 2100 00:00:00 GMT"
#: An HTTP date has whole seconds, and a moment passes before the client reads it.
DATE_TOLERANCE = 1.1

TIMES = "\N{MULTIPLICATION SIGN}"
HTML_PAGE = b"<html><body><h1>Service temporarily unavailable</h1></body></html>"


@attrs.frozen
class Refused:
    """Not a fault of the fake: the client's endpoint is a port nothing listens on."""


Step = Fault | Refused


@attrs.frozen
class Row:
    """One line of the matrix.

    Attributes:
        faults: What the requests carrying the code meet, in order; later requests get the
            normal answer.
        outcome: The ``SwanAuthError`` subclass the call raises (exactly that class), or None
            for a ``SessionKey`` equal to the fake's grant.
        requests: How many requests carrying the code reach the fake during the call.
        waits: The seconds the client asks its ``sleep`` for, in order.
        settings: Client settings that differ from `MATRIX_CLIENT`.
        attempts: ``error.attempts`` when it differs from ``requests`` (nothing listening).
        error: The expected ``error.error``, when worth checking.
        message: Text the error's message must contain, when the class alone says too little.
        spent_before: The code is exchanged once before the call, so Baidu has spent it.
        note: Why, for the reader of the docs.
    """

    faults: tuple[Step, ...]
    outcome: type[SwanAuthError] | None
    requests: int
    waits: tuple[float, ...] = ()
    settings: tuple[tuple[str, float], ...] = ()
    attempts: int | None = None
    error: str | None = None
    message: str | None = None
    spent_before: bool = False
    note: str = ""

    @property
    def expected_attempts(self) -> int:
        return self.requests if self.attempts is None else self.attempts

    @property
    def wait_tolerance(self) -> float:
        dated = any(getattr(fault, "retry_after", None) == DATE_IN_5_S for fault in self.faults)
        return DATE_TOLERANCE if dated else 0.0


def _retried_statuses() -> list[Row]:
    rows = []
    for status in (429, 500, 502, 503, 504):
        kind = "safe" if status in (429, 503) else "ambiguous: Baidu may have spent the code"
        rows += [
            Row((ErrorStatus(status),), None, 2, (0.0,), note=kind),
            Row((ErrorStatus(status, retry_after="1"),), None, 2, (1.0,), note="Retry-After: 1"),
            Row(
                (ErrorStatus(status, retry_after=DATE_IN_5_S),),
                None,
                2,
                (5.0,),
                note="Retry-After as an HTTP date",
            ),
        ]
    return rows


FAULT_MATRIX: list[Row] = [
    Row((), None, 1, note="no fault: the normal answer"),
    # -- 429 and 5xx: retried, honouring Retry-After in both of its forms.
    *_retried_statuses(),
    Row(
        (ErrorStatus(503),) * 4,
        ServiceUnavailableError,
        4,
        (0.0, 0.0, 0.0),
        note="max_attempts counts the first attempt",
    ),
    Row((ErrorStatus(502),) * 4, ServiceUnavailableError, 4, (0.0, 0.0, 0.0)),
    Row(
        (ErrorStatus(503), Drop(), ErrorStatus(429, retry_after="1")),
        None,
        4,
        (0.0, 0.0, 1.0),
        note="a different failure on every attempt",
    ),
    Row((ErrorStatus(503, retry_after=PAST_DATE),), None, 2, (0.0,), note="a date in the past"),
    Row(
        (ErrorStatus(503, retry_after="soon"),),
        None,
        2,
        (0.0,),
        note="unparsable Retry-After: the backoff applies",
    ),
    Row(
        (ErrorStatus(429, retry_after="120"),),
        ServiceUnavailableError,
        1,
        note="past max_retry_after (30 s): no wait at all",
    ),
    Row(
        (ErrorStatus(503, retry_after=FAR_FUTURE_DATE),),
        ServiceUnavailableError,
        1,
        note="an HTTP date past max_retry_after",
    ),
    Row(
        (ErrorStatus(503, retry_after="8"),),
        ServiceUnavailableError,
        1,
        settings=(("timeout", 5.0),),
        note="the wait would outlast the deadline",
    ),
    Row(
        (ErrorStatus(503, error="invalid_grant"),),
        None,
        2,
        (0.0,),
        note="a 5xx is judged by its status, whatever its body says",
    ),
    Row(
        (ErrorStatus(500),),
        CodeConsumedError,
        2,
        (0.0,),
        spent_before=True,
        note="invalid_grant after an ambiguous 500",
    ),
    Row(
        (ErrorStatus(503),),
        InvalidCodeError,
        2,
        (0.0,),
        spent_before=True,
        note="invalid_grant after a safe 503",
    ),
    # -- 4xx: final. An error body decides the class; a page without one is a ResponseError.
    Row((), InvalidCodeError, 1, spent_before=True, note="the fake's own 400 invalid_grant"),
    Row((ErrorStatus(400),), ResponseError, 1, note="a 4xx without an error body"),
    Row((ErrorStatus(400, error="invalid_grant"),), InvalidCodeError, 1, error="invalid_grant"),
    Row((ErrorStatus(400, error="invalid_request"),), ApiError, 1, error="invalid_request"),
    Row((ErrorStatus(401),), ResponseError, 1),
    Row((ErrorStatus(401, error="invalid_client"),), InvalidClientError, 1),
    Row((ErrorStatus(403),), ResponseError, 1),
    Row((ErrorStatus(403, error="unauthorized_client"),), InvalidClientError, 1),
    Row((ErrorStatus(404),), ResponseError, 1),
    # -- slow_down: safe, on any status.
    Row((ErrorStatus(200, error="slow_down"),), None, 2, (0.0,)),
    Row((ErrorStatus(400, error="slow_down", retry_after="2"),), None, 2, (2.0,)),
    Row(
        (ErrorStatus(200, error="slow_down"),) * 4,
        ServiceUnavailableError,
        4,
        (0.0, 0.0, 0.0),
        error="slow_down",
    ),
    # -- Numeric errno / error_code bodies, and error strings nobody documented: final.
    Row((ErrnoBody(110, "invalid"),), ApiError, 1, error="110"),
    Row((ErrnoBody(2, "x", key="error_code"),), ApiError, 1, error="2"),
    Row((ErrnoBody(110, status=400),), ApiError, 1, error="110"),
    Row((ErrnoBody(0, "ok"),), ResponseError, 1, note="errno 0 is no error, but no openid"),
    Row((ErrorStatus(400, error="no_such_error"),), ApiError, 1, error="no_such_error"),
    Row(
        (ErrorStatus(200, error="temporarily_unavailable"),),
        ApiError,
        1,
        error="temporarily_unavailable",
        note="unknown strings are kept as they came, and not retried",
    ),
    # -- Answers that are not Baidu's shape: final.
    Row((RawBody(HTML_PAGE, content_type="text/html"),), ResponseError, 1, note="HTML"),
    Row((RawBody(b"not json at all"),), ResponseError, 1, note="not JSON"),
    Row((RawBody(b"[1, 2]"),), ResponseError, 1, note="JSON, not an object"),
    Row((RawBody(b'"openid"'),), ResponseError, 1, note="JSON, not an object"),
    Row((RawBody(b""),), ResponseError, 1, note="empty"),
    Row((RawBody(b'{"openid": "o"}'),), ResponseError, 1, note="no session_key"),
    Row(
        (RawBody(b'{"openid": "o", "session_key": "k"}', status=201),),
        ResponseError,
        1,
        note="a good body on another status than 200",
    ),
    # -- Huge bodies: never buffered. On a 429 or 5xx the status decides.
    Row(
        (HugeBody(),),
        ResponseError,
        1,
        message="larger than 16384 bytes",
        note="8 MiB with a Content-Length: refused unread",
    ),
    Row(
        (HugeBody(chunked=True),),
        ResponseError,
        1,
        message="larger than 16384 bytes",
        note="8 MiB chunked: read to 16 KiB",
    ),
    Row((HugeBody(status=503),), None, 2, (0.0,)),
    # -- Truncated bodies and dropped connections: ambiguous, retried.
    Row((Truncated(),), CodeConsumedError, 2, (0.0,), note="the answer was lost in transit"),
    Row((Truncated(spend=False),), None, 2, (0.0,)),
    Row((Truncated(spend=False),) * 4, TransportError, 4, (0.0, 0.0, 0.0)),
    Row((Drop(),), None, 2, (0.0,), note="dropped before Baidu spent the code"),
    Row((Drop(spend=True),), CodeConsumedError, 2, (0.0,), note="dropped after Baidu spent it"),
    Row((Drop(reset=True),), None, 2, (0.0,), note="a TCP reset"),
    Row((Drop(reset=True, spend=True),), CodeConsumedError, 2, (0.0,)),
    Row((Drop(),) * 4, TransportError, 4, (0.0, 0.0, 0.0)),
    # -- Redirects: never followed, whatever the status.
    *(
        Row((Redirect(status),), ResponseError, 1, note="nothing reaches the Location")
        for status in (301, 302, 303, 307, 308)
    ),
    # -- Delays: past read_timeout (ambiguous, retried) and past the deadline (final).
    Row((Delay(0.1),), None, 1, note="within read_timeout"),
    Row(
        (Delay(1.0),),
        None,
        2,
        (0.0,),
        note="the retry lands before the late first attempt spends the code",
    ),
    Row(
        (Delay(1.05), Delay(0.5)),
        CodeConsumedError,
        2,
        (0.0,),
        settings=(("read_timeout", 0.8),),
        note="the first attempt spends the code after the client gave up on it",
    ),
    Row(
        (Delay(0.6),) * 4,
        ExchangeTimeoutError,
        4,
        (0.0, 0.0, 0.0),
        settings=(("read_timeout", 0.15),),
    ),
    Row(
        (Delay(0.6),),
        ExchangeTimeoutError,
        1,
        settings=(("timeout", 0.3), ("read_timeout", 5.0)),
        note="the deadline passed during the attempt",
    ),
    Row(
        (ErrorStatus(503), Delay(1.0)),
        ExchangeTimeoutError,
        2,
        (0.0,),
        settings=(("timeout", 0.5), ("read_timeout", 5.0)),
        note="the error is the last attempt's",
    ),
    Row(
        (ErrorStatus(503, delay=0.6),),
        ServiceUnavailableError,
        1,
        settings=(("timeout", 1.0), ("read_timeout", 5.0)),
        note="a retry that could not finish in time is not started",
    ),
    # -- Nothing listening.
    Row(
        (Refused(),),
        TransportError,
        0,
        (0.0, 0.0, 0.0),
        attempts=4,
        note="safe: retried until max_attempts",
    ),
]


# ------------------------------------------------------------------------------------- running


@attrs.frozen
class RowRun:
    """What one row did: its code, what the call returned or raised, requests and waits."""

    code: str
    outcome: SessionKey | SwanAuthError
    requests: int
    waits: list[float]


def resolve(fault: Fault) -> Fault:
    """``fault`` with the `DATE_IN_5_S` placeholder replaced by a real HTTP date."""
    if getattr(fault, "retry_after", None) == DATE_IN_5_S:
        return attrs.evolve(fault, retry_after=email.utils.formatdate(time.time() + 5, usegmt=True))
    return fault


async def run_row(row: Row, fake: FakeBaiduServer, **client_options: Any) -> RowRun:
    """Run one row against ``fake`` with a client of its own; return what happened.

    ``client_options`` add to or override the client's settings (``ssl=``, ``on_attempt=``).
    No local of this frame holds the secret: the leak test walks these frames too.
    """
    sleep = RecordingSleep()
    settings: dict[str, Any] = {**MATRIX_CLIENT, **dict(row.settings), **client_options}
    with contextlib.ExitStack() as stack:
        endpoint = fake.url
        if any(isinstance(step, Refused) for step in row.faults):
            endpoint = f"http://127.0.0.1:{stack.enter_context(socket_port())}{ENDPOINT_PATH}"
        code = fake.issue_code()
        async with SwanAuthClient(
            fake.client_id,
            fake.secret,
            endpoint=endpoint,
            backoff=wait_none(),
            sleep=sleep,
            retry_budget=RetryBudget(),
            **settings,
        ) as client:
            if row.spent_before:
                await client.exchange(code)
                sleep.waits.clear()
            before = len(fake.requests_for(code))
            fake.script(code, *(resolve(f) for f in row.faults if isinstance(f, Fault)))
            outcome: SessionKey | SwanAuthError
            try:
                outcome = await client.exchange(code)
            except SwanAuthError as error:
                outcome = error
    # A delayed request goes on after its client gave up (and may spend the code then).
    await fake.wait_idle(timeout=10.0)
    return RowRun(code, outcome, len(fake.requests_for(code)) - before, sleep.waits)


def check_row(row: Row, run: RowRun, fake: FakeBaiduServer) -> None:
    """Assert that ``run`` is what ``row`` says."""
    if row.outcome is None:
        grant = fake.grant_for(run.code)
        assert run.outcome == SessionKey(grant.openid, grant.session_key), run.outcome
    else:
        assert type(run.outcome) is row.outcome, run.outcome
        assert isinstance(run.outcome, SwanAuthError)
        assert run.outcome.attempts == row.expected_attempts
        if row.error is not None:
            assert run.outcome.error == row.error
        if row.message is not None:
            assert row.message in str(run.outcome)
    assert run.requests == row.requests
    assert run.waits == pytest.approx(list(row.waits), abs=row.wait_tolerance, rel=0)


# ----------------------------------------------------------------------------------- rendering


def _literal(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes) and len(value) > 24:
        return repr(value[:20])[:-1] + "...'"
    return repr(value)


def describe(step: Step) -> str:
    """A fault as its constructor call, showing only what differs from the defaults."""
    if isinstance(step, Refused):
        return "nothing listens (connection refused)"
    parts = []
    for position, field in enumerate(attrs.fields(type(step))):
        value = getattr(step, field.name)
        default = field.default
        if isinstance(default, attrs.Factory):
            default = default.factory()
        if position == 0 and not field.kw_only:
            parts.append(_literal(value))
        elif value != default:
            positional = not field.kw_only and len(parts) == position
            parts.append(_literal(value) if positional else f"{field.name}={_literal(value)}")
    return f"{type(step).__name__}({', '.join(parts)})"


def describe_steps(row: Row, code: str = "{}") -> str:
    """The row's faults, each formatted with ``code`` (backticks for Markdown)."""
    shown = []
    for step, run in itertools.groupby(row.faults):
        count = len(list(run))
        shown.append(code.format(describe(step)) + (f" {TIMES}{count}" if count > 1 else ""))
    text = ", then ".join(shown) if shown else "no fault"
    return f"code already used, then {text}" if row.spent_before else text


def _describe_outcome(row: Row) -> str:
    if row.outcome is None:
        return "result after retry" if row.requests > 1 else "result"
    text = f"`{row.outcome.__name__}`"
    if row.error is not None:
        text += f" (`.error == {json.dumps(row.error)}`)"
    return text


def _describe_waits(row: Row) -> str:
    if not row.waits:
        return "none"
    shown = [f"{wait:g}" for wait in row.waits]
    if row.wait_tolerance:
        shown = [f"≈{wait}" if wait != "0" else wait for wait in shown]
    return ", ".join(shown)


def _describe_requests(row: Row) -> str:
    if row.attempts is not None and row.attempts != row.requests:
        return f"{row.requests} ({row.attempts} attempts)"
    return str(row.requests)


def render_matrix(rows: Sequence[Row] = FAULT_MATRIX) -> str:
    """The matrix as the Markdown the docs show between the markers."""
    defaults = ", ".join(f"`{name}={value:g}`" for name, value in MATRIX_CLIENT.items())
    lines = [
        "",
        f"Every row runs against a fresh client with {defaults}, `backoff=wait_none()` and a "
        "recording `sleep` (so the waits below are what the client asked for, and cost no "
        "time). *Client* lists the settings a row changes. *Requests* counts the requests "
        "that reached the fake. A `Retry-After` date 5 s ahead is written when the row runs.",
        "",
        "| Fault scripted, in order | Client | Outcome | Requests | Waits (s) | Why |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        settings = ", ".join(f"`{name}={value:g}`" for name, value in row.settings)
        cells = [
            describe_steps(row, "`{}`"),
            settings,
            _describe_outcome(row),
            _describe_requests(row),
            _describe_waits(row),
            row.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", ""]
    return "\n".join(lines)


def write_docs(page: Path = DOCS_PAGE) -> bool:
    """Rewrite the matrix between the markers of ``page``; True when it changed."""
    text = page.read_text(encoding="utf-8")
    head, rest = text.split(START_MARKER, 1)
    _, tail = rest.split(END_MARKER, 1)
    updated = f"{head}{START_MARKER}\n{render_matrix()}{END_MARKER}{tail}"
    if updated == text:
        return False
    page.write_text(updated, encoding="utf-8")
    return True


if __name__ == "__main__":
    changed = write_docs()
    print(f"{DOCS_PAGE}: {'updated' if changed else 'already up to date'}", file=sys.stderr)
