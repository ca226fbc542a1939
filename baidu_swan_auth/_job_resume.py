"""What a resume of ``baidu-swan-auth exchange`` knows before it sends anything: each input
line's latest record, checked against INPUT, read on a thread that a signal does not wait for.
"""

from __future__ import annotations

import array
import asyncio
import os
import stat
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._job_input import code_key, survey_input
from ._job_output import FAILED_FINALLY, SUCCEEDED, JobError, record_status, scan_records

# Internal to the package: nothing here is public.
__all__: list[str] = []

T = TypeVar("T")


class Resume:
    """What a resume knows of each input line: its code's fingerprint, its latest record's
    status and where that record is. About 17 bytes a line, whatever the records hold."""

    def __init__(self, keys: array.array[int]) -> None:
        self.keys = keys
        self.status = bytearray(len(keys))
        self.latest = array.array("Q", bytes(8 * len(keys)))
        self.superseded = 0  # records a later one replaced: the file needs compacting
        # The first record that does not fit INPUT; reported once the whole file has been read,
        # so that a file that is not this command's records at all is refused as such.
        self.mismatch: str | None = None

    def visit(self, line: int, record: dict[str, Any], offset: int, *, path: str) -> None:
        if self.mismatch is not None:
            return
        if line >= len(self.keys) or self.keys[line] == 0:
            self.mismatch = (
                f"{path} has a record for line {line}, which INPUT does not have: is INPUT the "
                "file this job started with? Nothing was sent"
            )
        elif code_key(record.get("code")) != self.keys[line]:
            self.mismatch = (
                f"{path} has a record for line {line} with another code than INPUT's line "
                f"{line}: is INPUT the file this job started with? Nothing was sent"
            )
        else:
            self.note(line, record, offset)

    def note(self, line: int, record: dict[str, Any], offset: int) -> None:
        if self.latest[line]:
            self.superseded += 1
        self.latest[line] = offset + 1
        self.status[line] = record_status(record)

    def skips(self, line: int) -> bool:
        return line < len(self.status) and self.status[line] in (SUCCEEDED, FAILED_FINALLY)


async def _in_thread(work: Callable[[], T], stop: asyncio.Event) -> T | None:
    """``work()`` on a daemon thread, or None when ``stop`` comes first (the thread is left to
    finish on its own: a long scan must not hold a signal up)."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            value = work()
        except BaseException as error:
            loop.call_soon_threadsafe(_settle, result, None, error)
        else:
            loop.call_soon_threadsafe(_settle, result, value, None)

    threading.Thread(target=run, name="baidu-swan-auth-scan", daemon=True).start()
    stopping = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[Any]] = {result, stopping}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not result.done():
        return None
    return result.result()


def _settle(future: asyncio.Future[T], value: T | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)  # type: ignore[arg-type]


def _is_regular_file(path: str) -> bool:
    try:
        return path != "-" and stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


async def prepare_resume(
    input_path: str, output_path: str, fd: int, stop: asyncio.Event
) -> tuple[Resume | None, bool] | None:
    """Read OUTPUT's records, checked against INPUT, changing nothing: the resume state and
    whether the last record lacks its newline; None when ``stop`` came first."""
    if os.fstat(fd).st_size == 0:
        return None, False
    if not _is_regular_file(input_path):
        raise JobError(
            "--resume over existing records needs INPUT to be a regular file: its lines are "
            "checked against the records before anything is sent, and a pipe is read once"
        )
    keys = await _in_thread(lambda: survey_input(input_path), stop)
    if keys is None:
        return None
    resume = Resume(keys)
    scan = await _in_thread(
        lambda: scan_records(
            fd, output_path, lambda *args: resume.visit(*args, path=output_path)
        ),
        stop,
    )
    if scan is None:
        return None
    if resume.mismatch is not None:
        raise JobError(resume.mismatch)
    if scan.torn_at is not None:
        os.ftruncate(fd, scan.torn_at)  # the start of a record a crash cut short
    return resume, scan.open_end
