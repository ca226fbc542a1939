"""The file-to-file job behind ``baidu-swan-auth exchange``: read, exchange, record, resume.

The input side is ``_job_input`` and the records file ``_job_output``; this module runs the calls
between them, counts, and stops on a signal or a failed write.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import InvalidInputError
from ._job_input import MAX_LINE_BYTES, InputReader, JobInput, count_input_lines, read_inputs
from ._job_output import RECORD_FIELDS, JobError, RecordFile, open_output, scan_records
from .bulk import Outcome, error_label

if TYPE_CHECKING:
    from ._client import SwanAuthClient

__all__ = [
    "MAX_LINE_BYTES",
    "JobError",
    "JobOptions",
    "JobSummary",
    "count_input_lines",
    "run_exchange_job",
]


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
    output_error: str | None = None  # why writing a record failed, which stopped the job

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


def _record(item: JobInput, outcome: Outcome | None) -> dict[str, Any]:
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


# -- the job ----------------------------------------------------------------------------------


def _prepare_output(options: JobOptions) -> tuple[int | None, set[int], bool]:
    """The existing output (None when there is none yet), the lines it has records for, and
    whether its last record lacks a newline."""
    if options.resume and options.input == "-":
        raise JobError("--resume needs an input file: stdin cannot be read again")
    try:
        fd = open_output(options.output, create=False)
    except FileNotFoundError:
        return None, set(), False
    try:
        if options.resume:
            return fd, *scan_records(fd, options.output)
        if os.fstat(fd).st_size > 0:
            raise JobError(
                f"{options.output} exists and is not empty: pass --resume to continue the "
                "job that wrote it, or choose another file"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, set(), False


class _Job:
    """One run: turns inputs into calls and outcomes into records, counting as it goes."""

    def __init__(
        self,
        client: SwanAuthClient,
        options: JobOptions,
        output: RecordFile,
        on_record: Callable[[bool], None] | None,
    ) -> None:
        self.client = client
        self.options = options
        self.output = output
        self.on_record = on_record
        self.summary = JobSummary()

    def write(self, item: JobInput, outcome: Outcome | None) -> None:
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
        self, reader: InputReader, done: set[int], stop: asyncio.Event
    ) -> AsyncIterator[tuple[JobInput, Any]]:
        async for item in read_inputs(reader, done, stop):
            if isinstance(item, int):
                self.summary.skipped += 1
            elif item.problem is not None:
                self.write(item, None)
            else:
                yield item, item.code

    async def run(self, reader: InputReader, done: set[int], stop: asyncio.Event) -> None:
        calls = self.client.exchange_many(
            self._calls(reader, done, stop),
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


async def _exchange_into(
    job: _Job, reader: InputReader, done: set[int], stop: asyncio.Event, cut: asyncio.Event
) -> None:
    try:
        work = asyncio.create_task(job.run(reader, done, stop))
        await _until_done_or_stopped(work, stop, cut, job.options.grace)
    except OSError as error:  # from writing a record: the reader's errors are JobErrors
        # The calls in flight were cancelled and get no record: --resume runs them again.
        job.summary.output_error = error.strerror or str(error)
    finally:
        try:
            job.output.close()
        except OSError as error:
            job.summary.output_error = job.summary.output_error or error.strerror or str(error)


async def run_exchange_job(
    client: SwanAuthClient,
    options: JobOptions,
    *,
    stop: asyncio.Event | None = None,
    cut: asyncio.Event | None = None,
    on_record: Callable[[bool], None] | None = None,
    on_waiting: Callable[[], None] = lambda: None,
) -> JobSummary:
    """Exchange every code of ``options.input`` into one record each in ``options.output``.

    Args:
        client: The client to exchange with.
        options: Files and limits.
        stop: Once set, no new input is taken; calls in flight get ``options.grace`` seconds.
        cut: Once set during that grace period, the calls still in flight are abandoned
            (they get no record, so ``--resume`` runs them again).
        on_record: Called with ``ok`` after each record (progress bars).
        on_waiting: Called when the input is slow to open (a FIFO without a writer yet).

    Returns:
        The counts; ``output_error`` says why, if writing a record failed and stopped the job.

    Raises:
        JobError: The files or settings are unusable; nothing was exchanged.
    """
    stop = stop or asyncio.Event()
    cut = cut or asyncio.Event()
    started = time.monotonic()
    fd, done, needs_newline = _prepare_output(options)
    reader = InputReader(options.input)
    try:
        if not await reader.opened(options.input, stop, on_waiting):
            return JobSummary(elapsed=time.monotonic() - started, interrupted=True)
        if fd is None:  # created only now, so an unreadable input leaves no empty output
            fd = open_output(options.output, create=True)
        try:
            output = RecordFile(fd, needs_newline=needs_newline)
        except OSError as error:
            raise JobError(f"cannot write {options.output}: {error.strerror}") from None
        fd = None  # the record file closes it
        job = _Job(client, options, output, on_record)
        await _exchange_into(job, reader, done, stop, cut)
    finally:
        reader.close()
        if fd is not None:
            os.close(fd)
    job.summary.elapsed = time.monotonic() - started
    job.summary.interrupted = stop.is_set() or job.summary.output_error is not None
    return job.summary
