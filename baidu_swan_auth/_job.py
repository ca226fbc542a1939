"""The file-to-file job behind ``baidu-swan-auth exchange``: read, exchange, record, resume.

Crash safety rests on two rules: every record is written whole with one ``write`` to a file opened
for appending, and a record is written only for an input whose call finished. After a crash,
``--resume`` keeps the records there are (cutting a torn last line) and runs the inputs that have
none.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import IO, TYPE_CHECKING, Any

import attrs

from ._errors import InvalidInputError
from .bulk import Outcome, error_label

if TYPE_CHECKING:
    from ._client import SwanAuthClient

__all__ = ["JobError", "JobOptions", "JobSummary", "run_exchange_job"]

#: Names a record sets itself: carried input fields never override or shadow them.
RECORD_FIELDS = frozenset({"line", "code", "openid", "session_key", "error", "description"})
_BATCH_LINES = 256
_BATCHES_AHEAD = 4


class JobError(Exception):
    """A problem with the job's files or settings (exit status 2); nothing was exchanged."""


@attrs.frozen
class JobOptions:
    """What ``baidu-swan-auth exchange`` was asked to do."""

    input: str  # a path, or "-" for stdin
    output: str
    concurrency: int = 16
    rate: float | None = None
    resume: bool = False
    grace: float = 5.0


@attrs.define
class JobSummary:
    """What the job did, for the summary line and the exit status."""

    ok: int = 0
    failed: collections.Counter[str] = attrs.Factory(collections.Counter)
    skipped: int = 0  # lines that already had a record (resume)
    elapsed: float = 0.0
    interrupted: bool = False

    @property
    def done(self) -> int:
        return self.ok + sum(self.failed.values())

    def describe(self) -> str:
        rate = self.done / self.elapsed if self.elapsed > 0 else 0.0
        parts = [f"{self.ok} ok", f"{sum(self.failed.values())} failed"]
        if self.failed:
            kinds = ", ".join(f"{kind}: {count}" for kind, count in self.failed.most_common())
            parts[-1] += f" ({kinds})"
        if self.skipped:
            parts.append(f"{self.skipped} already recorded")
        text = f"{', '.join(parts)} in {self.elapsed:.1f}s ({rate:.0f}/s)"
        if self.interrupted:
            text += "; interrupted: inputs without a record run again with --resume"
        return text


@attrs.frozen
class _Input:
    line: int
    code: Any
    carried: dict[str, Any]
    problem: str | None = None  # why the line cannot be exchanged


# -- output -----------------------------------------------------------------------------------


def _existing_records(path: str) -> set[int] | None:
    """Line numbers already recorded in ``path`` (None when it is missing or empty), after
    cutting a torn last line left by a crash."""
    try:
        handle = open(path, "rb+")  # noqa: SIM115 (closed below, after a possible truncate)
    except FileNotFoundError:
        return None
    with handle:
        done: set[int] = set()
        complete_up_to = 0
        for number, raw in enumerate(handle, 1):
            if not raw.endswith(b"\n"):
                break  # torn: written in part when the process died
            try:
                record = json.loads(raw)
                done.add(int(record["line"]))
            except (ValueError, KeyError, TypeError):
                raise JobError(
                    f"{path}, line {number}, is not a record of this command; not resuming"
                ) from None
            complete_up_to += len(raw)
        if handle.seek(0, os.SEEK_END) != complete_up_to:
            handle.truncate(complete_up_to)
        return done if complete_up_to else None


class _RecordFile:
    """Appends whole records; opened 0600 because records hold session keys."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(self._fd, 0o600)

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        # One write per record on an O_APPEND file: a crash leaves whole records and at most a
        # torn last one, which --resume cuts.
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def close(self) -> None:
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)


def _record(item: _Input, outcome: Outcome | None) -> dict[str, Any]:
    record = {key: value for key, value in item.carried.items() if key not in RECORD_FIELDS}
    record["line"] = item.line
    record["code"] = item.code if isinstance(item.code, str) else None
    if outcome is not None and outcome.result is not None:
        record["openid"] = outcome.result.openid
        record["session_key"] = outcome.result.session_key
        return record
    if outcome is not None and outcome.error is not None:
        record["error"] = error_label(outcome.error)
        record["description"] = outcome.error.description or str(outcome.error)
    else:
        record["error"] = InvalidInputError.kind
        record["description"] = item.problem
    return record


# -- input ------------------------------------------------------------------------------------


def _parse(line: int, text: str, json_lines: bool) -> _Input:
    if not json_lines:
        return _Input(line, text.strip(), {})
    try:
        value = json.loads(text)
    except ValueError:
        return _Input(line, None, {}, "the line is not valid JSON")
    if not isinstance(value, dict):
        return _Input(line, None, {}, "the line is not a JSON object")
    code = value.get("code")
    if not isinstance(code, str):
        return _Input(line, None, value, "the object has no string 'code' field")
    return _Input(line, code, value)


async def _read_inputs(
    source: IO[bytes], skip: set[int], stop: asyncio.Event
) -> AsyncIterator[_Input | int]:
    """Inputs in order (an int counts a skipped line), read on a thread so a slow pipe never
    blocks the event loop, at most a few batches ahead of the exchanges."""
    loop = asyncio.get_running_loop()
    batches: asyncio.Queue[list[tuple[int, str]] | BaseException | None] = asyncio.Queue()
    permits = threading.Semaphore(_BATCHES_AHEAD)
    closed = threading.Event()

    def deliver(item: list[tuple[int, str]] | BaseException | None) -> bool:
        try:
            loop.call_soon_threadsafe(batches.put_nowait, item)
        except RuntimeError:  # the loop is gone
            return False
        return True

    def read() -> None:
        try:
            batch: list[tuple[int, str]] = []
            for number, raw in enumerate(source, 1):
                text = raw.decode("utf-8", "replace")
                if number == 1:
                    text = text.removeprefix("\ufeff")  # a byte order mark from some editors
                batch.append((number, text))
                if len(batch) == _BATCH_LINES:
                    while not permits.acquire(timeout=0.2):
                        if closed.is_set():
                            return
                    if closed.is_set() or not deliver(batch):
                        return
                    batch = []
            deliver(batch)
            deliver(None)
        except BaseException as error:
            deliver(error)

    threading.Thread(target=read, name="baidu-swan-auth-input", daemon=True).start()
    json_lines: bool | None = None
    try:
        while True:
            batch = await batches.get()
            if batch is None:
                return
            if isinstance(batch, BaseException):
                raise JobError(f"reading the input failed: {batch}") from batch
            if len(batch) == _BATCH_LINES:
                permits.release()
            for number, text in batch:
                if not text.strip():
                    continue  # blank lines are skipped, not recorded
                if json_lines is None:
                    json_lines = text.lstrip().startswith("{")
                if number in skip:
                    yield number
                    continue
                if stop.is_set():
                    return
                yield _parse(number, text, json_lines)
    finally:
        closed.set()


# -- the job ----------------------------------------------------------------------------------


def _open_input(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as error:
        raise JobError(f"cannot read {path}: {error.strerror}") from None


def _prepare_output(options: JobOptions) -> set[int]:
    if options.resume and options.input == "-":
        raise JobError("--resume needs an input file: stdin cannot be read again")
    if os.path.isdir(options.output):
        raise JobError(f"{options.output} is a directory")
    done = _existing_records(options.output) if options.resume else None
    if not options.resume:
        with contextlib.suppress(FileNotFoundError):
            if os.path.getsize(options.output) > 0:
                raise JobError(
                    f"{options.output} exists and is not empty: pass --resume to continue the "
                    "job that wrote it, or choose another file"
                )
    return done or set()


class _Job:
    """One run: turns inputs into calls and outcomes into records, counting as it goes."""

    def __init__(
        self,
        client: SwanAuthClient,
        options: JobOptions,
        output: _RecordFile,
        on_record: Callable[[bool], None] | None,
    ) -> None:
        self.client = client
        self.options = options
        self.output = output
        self.on_record = on_record
        self.summary = JobSummary()

    def write(self, item: _Input, outcome: Outcome | None) -> None:
        record = _record(item, outcome)
        self.output.write(record)
        ok = "openid" in record
        if ok:
            self.summary.ok += 1
        else:
            self.summary.failed[record["error"]] += 1
        if self.on_record is not None:
            self.on_record(ok)

    async def _calls(
        self, source: IO[bytes], done: set[int], stop: asyncio.Event
    ) -> AsyncIterator[tuple[_Input, Any]]:
        async for item in _read_inputs(source, done, stop):
            if isinstance(item, int):
                self.summary.skipped += 1
            elif item.problem is not None:
                self.write(item, None)
            else:
                yield item, item.code

    async def run(self, source: IO[bytes], done: set[int], stop: asyncio.Event) -> None:
        calls = self.client.exchange_many(
            self._calls(source, done, stop),
            concurrency=self.options.concurrency,
            rate=self.options.rate,
        )
        async with contextlib.aclosing(calls) as outcomes:
            async for outcome in outcomes:
                self.write(outcome.tag, outcome)


async def _until_done_or_stopped(
    work: asyncio.Task[None], stop: asyncio.Event, cut: asyncio.Event, grace: float
) -> None:
    """Wait for ``work``; once ``stop`` is set, give it ``grace`` seconds (less if ``cut`` is
    set meanwhile), then cancel it."""
    stopping = asyncio.create_task(stop.wait())
    cutting = asyncio.create_task(cut.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            await asyncio.wait({work, cutting}, timeout=grace)
            work.cancel()  # calls still in flight get no record: --resume runs them again
        await asyncio.wait({work})
        if not work.cancelled() and (failure := work.exception()) is not None:
            raise failure
    finally:
        stopping.cancel()
        cutting.cancel()
        work.cancel()


async def run_exchange_job(
    client: SwanAuthClient,
    options: JobOptions,
    *,
    stop: asyncio.Event | None = None,
    cut: asyncio.Event | None = None,
    on_record: Callable[[bool], None] | None = None,
) -> JobSummary:
    """Exchange every code of ``options.input`` into one record each in ``options.output``.

    Args:
        client: The client to exchange with.
        options: Files and limits.
        stop: Once set, no new input is taken; calls in flight get ``options.grace`` seconds.
        cut: Once set during that grace period, the calls still in flight are abandoned
            (they get no record, so ``--resume`` runs them again).
        on_record: Called with ``ok`` after each record (progress bars).

    Raises:
        JobError: The files or settings are unusable; nothing was exchanged.
    """
    stop = stop or asyncio.Event()
    cut = cut or asyncio.Event()
    done = _prepare_output(options)
    source = _open_input(options.input)
    started = time.monotonic()
    try:
        output = _RecordFile(options.output)
    except OSError as error:
        if source is not sys.stdin.buffer:
            source.close()
        raise JobError(f"cannot write {options.output}: {error.strerror}") from None
    job = _Job(client, options, output, on_record)
    try:
        work = asyncio.create_task(job.run(source, done, stop))
        await _until_done_or_stopped(work, stop, cut, options.grace)
    finally:
        output.close()
        if source is not sys.stdin.buffer:
            source.close()
        job.summary.elapsed = time.monotonic() - started
        job.summary.interrupted = stop.is_set()
    return job.summary
