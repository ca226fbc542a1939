"""The file-to-file job behind ``baidu-swan-auth exchange``: read, exchange, record, resume.

The input side is ``_job_input``, the records file ``_job_output``, and what a resume knows
``_job_resume``; this module runs the calls between them, counts, stops on a signal, a failed
read or write, or a refusal that every line would meet, and leaves one record per input line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, cast

import attrs

from ._errors import InvalidInputError
from ._job_input import InputReader, JobInput, read_inputs
from ._job_output import (
    FAILED_FINALLY,
    JOB_STOPPING_KINDS,
    RECORD_FIELDS,
    TO_RETRY,
    JobError,
    RecordFile,
    compact,
    open_output,
    remove_stale_temporaries,
)
from ._job_resume import Resume, prepare_resume
from .bulk import Outcome, error_label
from .bulk import exchange_many as _exchange_many

if TYPE_CHECKING:
    from ._client import SwanAuthClient

# Internal to the package: nothing here is public.
__all__: list[str] = []


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
    failed: collections.Counter[str] = attrs.Factory(collections.Counter)  # by kind
    skipped: int = 0  # lines whose record was final already (resume)
    skipped_failed: int = 0  # of those, the failed ones
    retried: int = 0  # lines run again because their record was a retryable failure
    elapsed: float = 0.0  # from the start to the last record: the work, not the shutdown
    interrupted: bool = False
    output_error: str | None = None  # why writing a record failed, which stopped the job
    input_error: str | None = None  # why reading INPUT failed after the job had started
    stopped_by: str | None = None  # a refusal every line would meet, which stopped the job

    @property
    def done(self) -> int:
        return self.ok + sum(self.failed.values())

    @property
    def all_succeeded(self) -> bool:
        """Whether every input line has a successful record (the exit status 0)."""
        return not (self.failed or self.skipped_failed or self.interrupted or self.stopped_by)

    def describe(self) -> str:
        rate = self.done / self.elapsed if self.elapsed > 0 else 0.0
        parts = [f"{self.ok} ok", f"{sum(self.failed.values())} failed"]
        if self.failed:
            # Kinds, never Baidu's own strings: those are the server's text, of any length.
            kinds = ", ".join(f"{kind}: {count}" for kind, count in self.failed.most_common())
            parts[-1] += f" ({kinds})"
        if self.retried:
            parts.append(f"{self.retried} of them retried")
        if self.skipped:
            parts.append(f"{self.skipped} already recorded ({self.skipped_failed} failed)")
        text = f"{', '.join(parts)} in {self.elapsed:.1f}s ({rate:.0f}/s)"
        if self.interrupted:
            text += "; interrupted: inputs without a final record run again with --resume"
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
        record["kind"] = outcome.error.kind
        record["code_may_be_spent"] = outcome.error.code_may_be_spent
        record["description"] = outcome.error.description or str(outcome.error)
    else:
        record["error"] = record["kind"] = InvalidInputError.kind
        record["code_may_be_spent"] = False
        record["description"] = item.problem
    return record


# -- the job ----------------------------------------------------------------------------------


def _check_files(options: JobOptions) -> None:
    if options.resume and options.input == "-":
        raise JobError("--resume needs an input file: stdin cannot be read again")
    if options.input == "-" and sys.stdin is None:
        raise JobError("stdin is closed: give INPUT a path, or open stdin")
    if options.input == "-" or options.output == "-":
        return
    with contextlib.suppress(OSError):
        source, target = os.stat(options.input), os.stat(options.output)
        if (source.st_dev, source.st_ino) == (target.st_dev, target.st_ino):
            raise JobError("INPUT and OUTPUT are the same file")


class _Job:
    """One run: turns inputs into calls and outcomes into records, counting as it goes."""

    def __init__(
        self,
        client: SwanAuthClient,
        options: JobOptions,
        output: RecordFile,
        resume: Resume | None,
        on_record: Callable[[bool], None] | None,
    ) -> None:
        self.client = client
        self.options = options
        self.output = output
        self.resume = resume
        self.on_record = on_record
        self.summary = JobSummary()
        self.started = time.monotonic()

    def write(self, item: JobInput, outcome: Outcome | None) -> dict[str, Any]:
        record = _record(item, outcome)
        offset = self.output.write(record)
        if self.resume is not None:
            if self.resume.status[item.line] == TO_RETRY:
                self.summary.retried += 1
            self.resume.note(item.line, record, offset)
        self.summary.elapsed = time.monotonic() - self.started
        ok = "openid" in record
        if ok:
            self.summary.ok += 1
        else:
            self.summary.failed[record["kind"]] += 1
        if self.on_record is not None:
            self.on_record(ok)
        return record

    def _skips(self, line: int) -> bool:
        if self.resume is None or not self.resume.skips(line):
            return False
        self.summary.skipped += 1
        self.summary.skipped_failed += self.resume.status[line] == FAILED_FINALLY
        return True

    async def _calls(
        self, reader: InputReader, stop: asyncio.Event
    ) -> AsyncIterator[tuple[JobInput, Any]]:
        async for item in read_inputs(reader, self._skips, stop):
            if isinstance(item, int):
                continue
            if item.problem is not None:
                self.write(item, None)
            else:
                yield item, item.code

    async def run(self, reader: InputReader, stop: asyncio.Event) -> None:
        calls = _exchange_many(
            self.client,
            self._calls(reader, stop),
            concurrency=self.options.concurrency,
            rate=self.options.rate,
            stop=stop,
        )
        try:
            async with contextlib.aclosing(calls) as outcomes:
                async for outcome in outcomes:
                    # The tag is the input this job gave with the code.
                    record = self.write(cast(JobInput, outcome.tag), outcome)
                    if record.get("kind") in JOB_STOPPING_KINDS:
                        # Every other line would be refused the same way: stop at once, the
                        # calls in flight abandoned without records (resume runs them).
                        self.summary.stopped_by = _stopping_message(outcome)
                        return
        except JobError as error:  # reading INPUT failed, after the calls under way finished
            self.summary.input_error = str(error)


def _stopping_message(outcome: Outcome) -> str:
    kind = outcome.error.kind if outcome.error is not None else ""
    if kind == "invalid_client":
        return (
            "Baidu refused the AppKey or AppSecret (invalid_client): check BAIDU_SWAN_CLIENT_ID "
            "and BAIDU_SWAN_SECRET, then run again with --resume"
        )
    return f"the client's settings are unusable ({kind}): fix them, then run again with --resume"


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
            await asyncio.wait(
                {work, cutting}, timeout=grace, return_when=asyncio.FIRST_COMPLETED
            )
            work.cancel()  # calls still in flight get no record: --resume runs them again
        await asyncio.wait({work})
        if not work.cancelled() and (failure := work.exception()) is not None:
            raise failure
    finally:
        stopping.cancel()
        cutting.cancel()
        work.cancel()


async def _exchange_into(
    job: _Job, reader: InputReader, stop: asyncio.Event, cut: asyncio.Event
) -> None:
    try:
        work = asyncio.create_task(job.run(reader, stop))
        await _until_done_or_stopped(work, stop, cut, job.options.grace)
    except OSError as error:  # from writing a record: the reader's errors are JobErrors
        # The calls in flight were cancelled and get no record: --resume runs them again.
        job.summary.output_error = error.strerror or str(error)


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
        stop: Once set, no new input is taken, inputs waiting for a rate slot are dropped, and
            calls in flight get ``options.grace`` seconds.
        cut: Once set during that grace period, the calls still in flight are abandoned
            (they get no record, so ``--resume`` runs them again).
        on_record: Called with ``ok`` after each record (progress bars).
        on_waiting: Called when the input is slow to open (a FIFO without a writer yet).

    Returns:
        The counts; ``output_error``, ``input_error`` or ``stopped_by`` say why the job
        stopped early, if it did.

    Raises:
        JobError: The files or settings are unusable; nothing was exchanged.
    """
    stop = stop or asyncio.Event()
    cut = cut or asyncio.Event()
    started = time.monotonic()
    _check_files(options)
    reader = InputReader(options.input)
    fd: int | None = None
    try:
        if not await reader.opened(options.input, stop, on_waiting):
            return JobSummary(elapsed=time.monotonic() - started, interrupted=True)
        resume: Resume | None = None
        needs_newline = False
        try:
            fd = open_output(options.output, create=False)
        except FileNotFoundError:
            fd = open_output(options.output, create=True)  # after INPUT opened: none if not
        else:
            if options.resume:
                prepared = await prepare_resume(options.input, options.output, fd, stop)
                if prepared is None:
                    return JobSummary(elapsed=time.monotonic() - started, interrupted=True)
                resume, needs_newline = prepared
            elif os.fstat(fd).st_size > 0:
                raise JobError(
                    f"{options.output} exists and is not empty: pass --resume to continue the "
                    "job that wrote it, or choose another file"
                )
        remove_stale_temporaries(options.output)
        try:
            output = RecordFile(fd, needs_newline=needs_newline)
        except OSError as error:
            raise JobError(f"cannot write {options.output}: {error.strerror}") from None
        job = _Job(client, options, output, resume, on_record)
        job.started = started
        await _exchange_into(job, reader, stop, cut)
        _finish(job, fd)
    finally:
        reader.close()
        if fd is not None:
            os.close(fd)
    job.summary.interrupted = stop.is_set() or job.summary.output_error is not None
    if not job.summary.done:
        job.summary.elapsed = time.monotonic() - started
    return job.summary


def _finish(job: _Job, fd: int) -> None:
    """Flush the records and, when a line got a second one, leave only its latest."""
    try:
        os.fsync(fd)
        resume = job.resume
        if job.summary.output_error is None and resume is not None and resume.superseded:
            compact(job.options.output, fd, resume.latest)
    except OSError as error:
        job.summary.output_error = job.summary.output_error or error.strerror or str(error)
