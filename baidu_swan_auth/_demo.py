"""``baidu-swan-auth demo``: a guided tour, the access-token calls, then a bulk job, against an
embedded fake Baidu.

Every part goes through the code paths users run: ``SwanAuthClient.exchange`` for the tour,
``exchange`` with ``api="getsessionkey"`` and ``unionid`` for the access tokens, and the
``baidu-swan-auth exchange`` job for the bulk run. The demo exits 0 only when every outcome is the
one it injected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator

import attrs

from ._client import SwanAuthClient
from ._errors import SwanAuthError
from ._job import JobOptions, JobSummary, run_exchange_job
from ._models import AttemptEvent, SessionKey, mask_code
from .testing import Drop, ErrorStatus, FakeBaiduServer, Fault

__all__: list[str] = []  # run_demo is for cli.py only

_ATTEMPTS = 4  # the demo client's max_attempts: "on every attempt" faults script that many

Output = Callable[[str], None]
OnRecord = Callable[[bool], None]


@attrs.frozen
class _Case:
    title: str
    expected: str  # "ok", or the name of the SwanAuthError subclass the case must end in
    faults: tuple[Fault, ...] = ()
    code: str | None = None  # a code that is not issued by the fake
    open_source: bool = False
    spend_first: bool = False


_CASES = (
    _Case("a fresh code", "ok"),
    _Case("a code for Baidu's open-source host (contains @)", "ok", open_source=True),
    _Case(
        "503 with Retry-After, then 429, then success",
        "ok",
        (ErrorStatus(503, retry_after="1"), ErrorStatus(429)),
    ),
    _Case("connection dropped before Baidu read the code", "ok", (Drop(spend=False),)),
    _Case(
        "connection dropped after Baidu spent the code", "CodeConsumedError", (Drop(spend=True),)
    ),
    _Case("a code that was already used", "InvalidCodeError", spend_first=True),
    _Case("a code Baidu never issued", "InvalidCodeError", code="never-issued-code-0000"),
    _Case("502 on every attempt", "ServiceUnavailableError", (ErrorStatus(502),) * _ATTEMPTS),
    _Case("an empty code", "InvalidInputError", code=""),
)


async def _run_case(
    case: _Case, fake: FakeBaiduServer, client: SwanAuthClient
) -> tuple[str, SessionKey | SwanAuthError]:
    code = case.code if case.code is not None else fake.issue_code(open_source=case.open_source)
    if case.faults:
        fake.script(code, *case.faults)
    if case.spend_first:
        await client.exchange(code)
    try:
        return code, await client.exchange(code)
    except SwanAuthError as error:
        return code, error


def _mask_secret(value: str) -> str:
    return f"{value[:2]}{'*' * 6}" if len(value) > 8 else "*" * 8


def _describe(result: SessionKey | SwanAuthError) -> tuple[str, str]:
    if isinstance(result, SessionKey):
        return "ok", f"openid={result.openid} session_key={_mask_secret(result.session_key)}"
    attempts = f"after {result.attempts} attempt{'s' if result.attempts != 1 else ''}"
    return type(result).__name__, f"{result} ({attempts})"


async def _tour(fake: FakeBaiduServer, client: SwanAuthClient, out: Output) -> bool:
    failures = 0
    for number, case in enumerate(_CASES, 1):
        code, result = await _run_case(case, fake, client)
        got, detail = _describe(result)
        verdict = "as expected" if got == case.expected else f"EXPECTED {case.expected}"
        failures += got != case.expected
        out(f"{number}. {case.title}: code {mask_code(code)}")
        out(f"   {got}: {detail} -- {verdict}")
    total = len(_CASES)
    out(f"{total - failures} of {total} outcomes as expected")
    return failures == 0


_FRESH = _CASES[0]  # a fresh code, exchanged with no fault


def _fetches(before: int, after: int) -> str:
    return f"token fetches {before} -> {after}"


async def _access_tokens(fake: FakeBaiduServer, out: Output) -> bool:
    """The v2 exchange, a revoked token renewed once, and a unionid: three outcomes checked.

    No token is shown: only how many were fetched, as the fake counts them.
    """
    events: list[AttemptEvent] = []
    client = SwanAuthClient(
        fake.client_id,
        fake.secret,
        api="getsessionkey",
        openapi_url=fake.openapi_url,
        max_attempts=_ATTEMPTS,
        on_attempt=events.append,
    )
    out(f"access tokens: a v2 client (api='getsessionkey') at {fake.openapi_url}; tokens not shown")
    verdicts: list[bool] = []

    def show(
        title: str, code: str, result: SessionKey | SwanAuthError, note: str, ok: bool
    ) -> None:
        got, detail = _describe(result)
        verdicts.append(ok)
        out(f"{len(verdicts)}. {title}: code {mask_code(code)}")
        out(f"   {got}: {detail} ({note}) -- {'as expected' if ok else 'NOT AS EXPECTED'}")

    async with client:
        before = fake.token_fetches
        code, result = await _run_case(_FRESH, fake, client)
        ok = isinstance(result, SessionKey) and result == _granted(fake, code)
        show(
            "a v2 exchange (getsessionkey) fetches a token, then uses it",
            code,
            result,
            _fetches(before, fake.token_fetches),
            ok and fake.token_fetches == before + 1,
        )

        fake.revoke_tokens()
        before, events[:] = fake.token_fetches, []
        code, result = await _run_case(_FRESH, fake, client)
        refused = sum(event.reason == "token_rejected" for event in events)
        ok = isinstance(result, SessionKey) and result == _granted(fake, code)
        show(
            "Baidu revokes every token, then a v2 exchange",
            code,
            result,
            f"revoked token refused {refused}x, renewed once: "
            f"{_fetches(before, fake.token_fetches)}",
            ok and refused == 1 and fake.token_fetches == before + 1,
        )

        openid = result.openid if isinstance(result, SessionKey) else "no-openid"
        before = fake.token_fetches
        try:
            unionid: str | SwanAuthError = await client.unionid(openid)
        except SwanAuthError as error:
            unionid = error
        verdicts.append(unionid == fake.unionid_for(openid) and fake.token_fetches == before)
        shown = f"unionid={unionid}" if isinstance(unionid, str) else _describe(unionid)[1]
        out(f"{len(verdicts)}. unionid() of openid {openid}, with the same token")
        out(
            f"   {shown} (no new token: {_fetches(before, fake.token_fetches)}) -- "
            f"{'as expected' if verdicts[-1] else 'NOT AS EXPECTED'}"
        )
    out(f"{sum(verdicts)} of {len(verdicts)} access-token outcomes as expected")
    return all(verdicts)


def _granted(fake: FakeBaiduServer, code: str) -> SessionKey:
    grant = fake.grant_for(code)
    return SessionKey(grant.openid, grant.session_key)


# The bulk run's mix: (share of inputs, the record's expected "error", or "ok").
_BULK_MIX = (
    (0.04, "ok"),  # 503 with Retry-After, then success
    (0.02, "code_consumed"),  # the connection drops after Baidu spent the code
    (0.02, "invalid_grant"),  # the code was used before
    (0.01, "unavailable"),  # 502 on every attempt
    (0.01, "invalid_input"),  # an empty code
)


async def _bulk_inputs(fake: FakeBaiduServer, client: SwanAuthClient, size: int) -> list[str]:
    """JSON Lines inputs, each carrying the outcome it is meant to get, faults scripted."""
    lines = []
    for user in range(size):
        code = fake.issue_code()
        expect, position = "ok", (user * 7919) % size / size  # an even, shuffled spread
        for share, kind in _BULK_MIX:
            if position < share:
                expect = kind
                if kind == "ok":
                    fake.script(code, ErrorStatus(503, retry_after="0"))
                elif kind == "code_consumed":
                    fake.script(code, Drop(spend=True))
                elif kind == "invalid_grant":
                    await client.exchange(code)
                elif kind == "unavailable":
                    fake.script(code, *[ErrorStatus(502)] * _ATTEMPTS)
                else:
                    code = ""
                break
            position -= share
        lines.append(json.dumps({"code": code, "user": user, "expect": expect}) + "\n")
    return lines


def _check_records(path: str, size: int, out: Output) -> bool:
    seen: Counter[int] = Counter()
    wrong = 0
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            record = json.loads(raw)
            seen[record["line"]] += 1
            got = "ok" if "openid" in record else record["error"]
            wrong += got != record["expect"]
    mode = stat.S_IMODE(os.stat(path).st_mode)
    missing = size - len(seen)
    doubled = sum(1 for count in seen.values() if count > 1)
    out(
        f"records: {len(seen)} of {size} inputs, {missing} missing, {doubled} doubled, "
        f"{wrong} not as injected, file mode {mode:o}"
    )
    return missing == 0 and doubled == 0 and wrong == 0 and mode == 0o600


async def _bulk(
    fake: FakeBaiduServer,
    client: SwanAuthClient,
    out: Output,
    size: int,
    on_record: OnRecord | None,
) -> bool:
    out(f"bulk: {size} codes, faults injected into {sum(s for s, _ in _BULK_MIX):.0%} of them")
    with tempfile.TemporaryDirectory(prefix="baidu-swan-auth-demo-") as folder:
        source = os.path.join(folder, "codes.jsonl")
        target = os.path.join(folder, "records.jsonl")
        lines = await _bulk_inputs(fake, client, size)
        with open(source, "w", encoding="utf-8") as handle:  # noqa: ASYNC230 (a small temp file)
            handle.writelines(lines)
        out(f"bulk: baidu-swan-auth exchange {source} -o {target}")
        options = JobOptions(input=source, output=target, concurrency=32)
        with _quiet_attempts(out):
            summary: JobSummary = await run_exchange_job(
                client, options, on_record=on_record or _TextProgress(size, out)
            )
        out(summary.describe())
        checked = _check_records(target, size, out)
        out(f"records were in {target} (mode 0600), removed with its folder as the demo ends")
        return checked


class _TextProgress:
    """Progress as a line at every quarter, where no terminal shows a bar."""

    def __init__(self, total: int, out: Output) -> None:
        self._total = total
        self._out = out
        self._done = 0
        self._next_quarter = 1

    def __call__(self, _ok: bool) -> None:
        self._done += 1
        if self._next_quarter <= 4 and self._done * 4 >= self._total * self._next_quarter:
            self._out(f"bulk: {self._done} of {self._total} records")
            self._next_quarter += 1


@contextlib.contextmanager
def _quiet_attempts(out: Output) -> Iterator[None]:
    """Leave the bulk phase's thousands of per-attempt DEBUG lines out of a -v run."""
    logger = logging.getLogger("baidu_swan_auth")
    if not logger.isEnabledFor(logging.DEBUG):
        yield
        return
    out("bulk: (-v) the per-attempt log lines of the bulk phase are left out")
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def run_demo(out: Output, *, bulk_size: int = 3000, on_record: OnRecord | None = None) -> int:
    """Run the demo; 0 when every outcome is the expected one, else 1."""
    async with FakeBaiduServer() as fake:
        out(f"fake Baidu listening at {fake.url}")
        client = SwanAuthClient(
            fake.client_id, fake.secret, endpoint=fake.url, max_attempts=_ATTEMPTS
        )
        async with client:
            toured = await _tour(fake, client, out)
            tokens = await _access_tokens(fake, out)
            bulked = await _bulk(fake, client, out, bulk_size, on_record)
    ok = toured and tokens and bulked
    out("demo: every outcome as expected" if ok else "demo: SOME OUTCOMES WERE NOT AS EXPECTED")
    return 0 if ok else 1
