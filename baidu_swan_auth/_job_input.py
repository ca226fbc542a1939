"""The input of ``baidu-swan-auth exchange``: opened and read once on a daemon thread, cut into
lines of at most ``MAX_LINE_BYTES``, each parsed into a code or a reason it cannot be one."""

from __future__ import annotations

import array
import asyncio
import errno
import hashlib
import json
import math
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from functools import partial
from typing import Any

import attrs

from ._job_output import JobError

# Internal to the package: nothing here is public.
__all__: list[str] = []

#: A longer input line gets an ``invalid_input`` record and is skipped without being buffered,
#: so an endless one (``/dev/zero``) cannot fill memory.
MAX_LINE_BYTES = 64 * 1024
_CHUNK_BYTES = 64 * 1024
_BATCHES_AHEAD = 4
_OPEN_NOTICE_AFTER = 0.25  # seconds an input may take to open before the caller is told
_OPENED, _STOPPED, _WAITING = object(), object(), object()


@attrs.frozen
class JobInput:
    line: int
    code: Any
    carried: dict[str, Any]
    problem: str | None = None  # why the line cannot be exchanged


class _NotStandardJson(ValueError):
    """NaN, Infinity, or a number too large for a float: standard JSON has none of them."""


def _refuse_constant(name: str) -> float:
    raise _NotStandardJson(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotStandardJson(text)
    return value


def _parse(line: int, text: str | None, json_lines: bool) -> JobInput:
    if text is None:
        return JobInput(line, None, {}, f"the line is longer than {MAX_LINE_BYTES} bytes")
    if not json_lines:
        return JobInput(line, text.strip(), {})
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        if "\\u" in text:  # an escaped lone surrogate decodes to a str no UTF-8 file can hold
            json.dumps(value, ensure_ascii=False).encode()
    except _NotStandardJson:
        problem = "the line holds NaN or Infinity (or an overflowing number): not standard JSON"
    except UnicodeEncodeError:
        problem = "the line holds a lone surrogate (an escape like \\ud800 without its pair)"
    except RecursionError:
        problem = "the line is nested too deeply"
    except ValueError:
        problem = "the line is not valid JSON"
    else:
        if not isinstance(value, dict):
            return JobInput(line, None, {}, "the line is not a JSON object")
        code = value.get("code")
        if not isinstance(code, str):
            return JobInput(line, None, value, "the object has no string 'code' field")
        return JobInput(line, code, value)
    return JobInput(line, None, {}, problem)


def _fits(line: bytes | bytearray) -> bool:
    # A CRLF line's \r is part of its ending, not of the line.
    return len(line) <= MAX_LINE_BYTES or (
        len(line) == MAX_LINE_BYTES + 1 and line.endswith(b"\r")
    )


def _split_lines(chunks: Iterable[bytes]) -> Iterator[list[bytes | None]]:
    """The lines each chunk completes, None standing for an over-long one (dropped as it is
    read); at the end, a last line without a newline."""
    pending = bytearray()
    skipping = False  # inside an over-long line, up to its newline
    for chunk in chunks:
        *ended, rest = chunk.split(b"\n")
        lines: list[bytes | None] = []
        for piece in ended:
            if skipping:
                skipping = False
                continue
            pending += piece
            lines.append(bytes(pending) if _fits(pending) else None)
            pending.clear()
        if not skipping:
            pending += rest
            if len(pending) > MAX_LINE_BYTES + 1:
                lines.append(None)
                pending.clear()
                skipping = True
        yield lines
    if pending:
        yield [bytes(pending) if _fits(pending) else None]


#: What a blank line may hold: ASCII white space only, as ``bytes.strip`` has it, so that the
#: progress bar's count and the job agree (a line of U+00A0 is no blank line: it gets a record).
_BLANK = " \t\r\n\v\f"


class LineParser:
    """Turns numbered raw lines into inputs, the way every reader of INPUT must: the byte order
    mark, blank lines, and the format that the first non-blank line decides."""

    def __init__(self) -> None:
        self._json_lines: bool | None = None

    def parse(self, number: int, raw: bytes | None) -> JobInput | None:
        """The input on line ``number`` (``raw`` None: over-long), or None for a blank line."""
        text = None if raw is None else raw.decode("utf-8", "replace")
        if number == 1 and text is not None:
            text = text.removeprefix("\ufeff")  # a byte order mark from some editors
        if text is not None and not text.strip(_BLANK):
            return None
        if self._json_lines is None and text is not None:
            self._json_lines = text.lstrip(_BLANK).startswith("{")
        return _parse(number, text, bool(self._json_lines))


def code_key(code: object) -> int:
    """A fingerprint of a line's code, to tell without keeping the codes whether a record was
    made from that line: odd for a code, 2 for a line without one, 0 for a blank line."""
    if not isinstance(code, str):
        return 2
    digest = hashlib.blake2b(code.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") | 1


def survey_input(path: str) -> array.array[int]:
    """Each line's ``code_key`` (index: the line number; 0 unused), read from a regular file
    that the job then reads again: for a resume to check its records against INPUT."""
    keys = array.array("Q", [0])
    parser = LineParser()
    with open(path, "rb") as handle:
        chunks = iter(partial(handle.read, _CHUNK_BYTES), b"")
        for lines in _split_lines(chunks):
            for raw in lines:
                item = parser.parse(len(keys), raw)
                keys.append(0 if item is None else code_key(item.code))
    return keys


def count_input_lines(path: str) -> int | None:
    """The non-blank lines of ``path``, for a progress bar; None unless it is a regular file:
    anything else (a pipe, a FIFO, a device) is read once, by the job."""
    try:
        if path == "-" or not stat.S_ISREG(os.stat(path).st_mode):
            return None  # checked before opening: even opening a FIFO disturbs its writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None  # the job reports it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = iter(partial(os.read, fd, _CHUNK_BYTES), b"")
        return sum(
            1 for lines in _split_lines(chunks) for line in lines if line is None or line.strip()
        )
    except OSError:
        return None
    finally:
        os.close(fd)


class InputReader:
    """Opens and reads the input on a daemon thread, at most a few batches of lines ahead.

    Opening a FIFO waits for a writer and reading a pipe waits for data: in the loop's thread
    neither would let a signal stop the job, and O_NONBLOCK would read an empty FIFO as the end.
    The thread owns the file, so nothing closes it under a read in progress.
    """

    def __init__(self, path: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._permits = threading.Semaphore(_BATCHES_AHEAD)
        self._closed = threading.Event()
        thread = threading.Thread(target=self._read, args=(path,), daemon=True)
        thread.start()

    def _deliver(self, message: object) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, message)
        except RuntimeError:  # the loop is gone
            return False
        return True

    def _read(self, path: str) -> None:
        try:
            fd = 0 if path == "-" else os.open(path, os.O_RDONLY | os.O_NOCTTY)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        except OSError as error:
            self._deliver(error)
            return
        try:
            self._deliver(_OPENED)
            for lines in _split_lines(iter(partial(os.read, fd, _CHUNK_BYTES), b"")):
                if self._closed.is_set():
                    return
                if not lines:
                    continue  # the middle of an over-long line: nothing to hand over
                while not self._permits.acquire(timeout=0.2):
                    if self._closed.is_set():
                        return
                if not self._deliver(lines):
                    return
            self._deliver(None)
        except BaseException as error:
            self._deliver(error)
        finally:
            if fd != 0:
                os.close(fd)

    async def next(self, stop: asyncio.Event, timeout: float | None = None) -> object:
        """The thread's next message: a list of lines, None at the end, or an error; _STOPPED
        once ``stop`` is set, _WAITING after ``timeout`` seconds."""
        getting = asyncio.ensure_future(self._queue.get())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {getting, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            if not getting.done():
                getting.cancel()
        if not getting.done() or getting.cancelled():
            return _STOPPED if stop.is_set() else _WAITING
        message = getting.result()
        if isinstance(message, list):
            self._permits.release()
        return message

    async def opened(self, path: str, stop: asyncio.Event, on_waiting: Callable[[], None]) -> bool:
        """Whether the input is open (False when ``stop`` came first)."""
        message = await self.next(stop, timeout=_OPEN_NOTICE_AFTER)
        if message is _WAITING:
            on_waiting()
            message = await self.next(stop)
        if isinstance(message, OSError):
            raise JobError(f"cannot read {path}: {message.strerror}")
        return message is _OPENED and not stop.is_set()

    def close(self) -> None:
        self._closed.set()


async def read_inputs(
    reader: InputReader, skip: Callable[[int], bool], stop: asyncio.Event
) -> AsyncIterator[JobInput | int]:
    """Inputs in order; an int counts a line skipped because ``skip`` says it is done."""
    parser = LineParser()
    number = 0
    while True:
        batch = await reader.next(stop)
        if batch is None or batch is _STOPPED:
            return
        if isinstance(batch, BaseException):
            raise JobError(f"reading the input failed: {batch}") from batch
        assert isinstance(batch, list)
        for raw in batch:
            number += 1
            item = parser.parse(number, raw)
            if item is None:
                continue  # blank lines are skipped, not recorded
            if skip(number):
                yield number
                continue
            if stop.is_set():
                return
            yield item
