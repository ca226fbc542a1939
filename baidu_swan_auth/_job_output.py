"""The records file of ``baidu-swan-auth exchange``: opened safely, scanned before a resume,
appended to one whole record at a time.

Crash safety rests on two rules: every record is written whole with one ``write`` to a file opened
for appending, and a record is written only for an input whose call finished. After a crash,
``--resume`` keeps the records there are (cutting a torn last line) and runs the inputs that have
none. A file holding anything but records of this command is refused, untouched.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs

# Internal to the package: nothing here is public.
__all__: list[str] = []

#: Names a record sets itself: carried input fields never override or shadow them.
RECORD_FIELDS = frozenset(
    {"line", "code", "openid", "session_key", "error", "kind", "code_may_be_spent", "description"}
)
# Re-encoding can make a line's fields a few times longer (1e15 becomes 1000000000000000.0), so
# a record is capped far above the input's line cap: a longer record drops its carried fields,
# and a longer line in an output is not a record of this command.
_MAX_RECORD_BYTES = 1024 * 1024
_UNPARSED = object()
_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class JobError(Exception):
    """A problem with the job's files or settings (exit status 2); nothing was exchanged."""


def open_output(path: str, *, create: bool) -> int:
    """The output, open for reading and appending, and locked against a second job
    (FileNotFoundError: missing, not created)."""
    # O_NOFOLLOW makes the open itself refuse a symlink, so none can be swapped in after a
    # check; O_NONBLOCK keeps a FIFO or a device from blocking the open before it is refused.
    flags = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
    except FileNotFoundError:
        if not create:
            raise
        raise JobError(f"cannot write {path}: its folder does not exist") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise JobError(
                f"{path} is a symbolic link: records are written only to a regular file, "
                "named by its own path"
            ) from None
        raise JobError(f"cannot write {path}: {error.strerror}") from None
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise JobError(
            f"{path} is not a regular file ({_FILE_KINDS.get(kind, 'of another kind')}): "
            "records are written only to a regular file"
        )
    try:
        # Two jobs appending to one file (an overlapping cron run) would record every line
        # twice: the second is refused. The lock goes with the file descriptor.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JobError(
            f"{path} is in use by another baidu-swan-auth exchange (it holds a lock on it)"
        ) from None
    return fd


#: What a line's latest record says about it, for a resume.
NO_RECORD, SUCCEEDED, FAILED_FINALLY, TO_RETRY = 0, 1, 2, 3

#: Failures a resume runs again: the code never reached Baidu, or it is worth asking whether it
#: did (a spent code then gets its own final record). The job-stopping kinds are among them: a
#: resume with the right AppSecret completes the job they stopped.
RETRYABLE_KINDS = frozenset(
    {
        "transport",
        "timeout",
        "unavailable",
        "closed",
        # v2: the gateway refused the token before the code reached the exchange.
        "token_rejected",
        "invalid_client",
        "configuration",
        "usage",
    }
)
#: Failures that say the job itself is misconfigured: every further line would fail the same way.
JOB_STOPPING_KINDS = frozenset({"invalid_client", "configuration", "usage"})


def record_status(record: dict[str, Any]) -> int:
    """``SUCCEEDED``, ``TO_RETRY`` or ``FAILED_FINALLY`` for one record.

    A record without a ``kind`` (written before records had one) is final: its ``error`` alone
    could be Baidu's string as well as the SDK's kind.
    """
    if isinstance(record.get("openid"), str) and isinstance(record.get("session_key"), str):
        return SUCCEEDED
    return TO_RETRY if record.get("kind") in RETRYABLE_KINDS else FAILED_FINALLY


def _line_of(value: object) -> int | None:
    """The ``line`` of a record of this command (a positive int, not a bool or a float)."""
    line = value.get("line") if isinstance(value, dict) else None
    return line if type(line) is int and line >= 1 else None


@attrs.frozen
class Scan:
    """What reading an existing output found."""

    records: int  # whole records
    torn_at: int | None  # where a torn last line starts, to be cut before appending
    open_end: bool  # whether the last whole record lacks its newline


def scan_records(
    fd: int, path: str, visit: Callable[[int, dict[str, Any], int], None] | None = None
) -> Scan:
    """Read every record of an output, changing nothing: ``visit(line, record, offset)`` for
    each. A torn last line (one that starts like a record and does not parse: a crash cut it
    short) is reported; anything else that is not a record is refused with ``JobError``.
    """
    records = 0
    offset = 0  # where the line being read starts
    open_end = False
    with open(os.dup(fd), "rb") as handle:
        lines = iter(partial(handle.readline, _MAX_RECORD_BYTES + 1), b"")
        for number, raw in enumerate(lines, 1):
            try:
                value: object = json.loads(raw)
            except (ValueError, RecursionError):
                value = _UNPARSED
            line = _line_of(value)
            last = not raw.endswith(b"\n") and len(raw) <= _MAX_RECORD_BYTES
            if line is not None and (last or raw.endswith(b"\n")):
                records += 1
                if visit is not None:
                    visit(line, value, offset)  # type: ignore[arg-type]
                open_end = last
            elif last and value is _UNPARSED and raw.startswith(b"{"):
                return Scan(records, offset, False)
            else:
                raise JobError(
                    f"{path}, line {number}, is not a record of this command: not resuming, "
                    "and the file is left as it is"
                )
            offset += len(raw)
    return Scan(records, None, open_end)


def compact(path: str, fd: int, latest: array.array[int]) -> None:
    """Rewrite the output as the latest record of each line, in line order, atomically.

    ``latest[line]`` is 1 + the offset of that line's latest record in ``fd``, or 0. The new
    file is written beside the old one (so the rename stays on one file system), with its mode
    and owner, flushed, then renamed over it, and the folder flushed: a crash or a full disk at
    any point leaves the old file or the new one, whole. On failure the old one stays.
    """
    folder = os.path.dirname(os.path.abspath(path))
    temporary = _temporary_name(path)
    info = os.fstat(fd)
    target = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with contextlib.suppress(PermissionError):  # not root: the owner is ours already
            os.fchown(target, info.st_uid, info.st_gid)
        os.fchmod(target, 0o600)
        with open(os.dup(fd), "rb") as source, open(target, "wb", closefd=False) as sink:
            for offset in latest:
                if offset:
                    source.seek(offset - 1)
                    record = source.readline()
                    sink.write(record if record.endswith(b"\n") else record + b"\n")
        os.fsync(target)
        os.close(target)
        target = -1
        os.replace(temporary, path)
    except BaseException:
        if target >= 0:
            os.close(target)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _temporary_name(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.compacting-{os.getpid()}")


def remove_stale_temporaries(path: str) -> None:
    """Delete what a compaction killed half-way left beside ``path`` (the lock on ``path``,
    held by the caller, says no other job is compacting it)."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}.compacting-"
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _encode(record: dict[str, Any]) -> bytes:
    """A record as one line of standard JSON. Should its carried fields not encode (too deep,
    too long), it goes without them: its own fields, openid and session key above all, are never
    lost."""
    for ascii_only in (False, True):  # escapes write even a lone surrogate that Baidu sent
        with contextlib.suppress(ValueError, RecursionError):
            data = (json.dumps(record, ensure_ascii=ascii_only, allow_nan=False) + "\n").encode()
            if len(data) <= _MAX_RECORD_BYTES:
                return data
    own = {key: value for key, value in record.items() if key in RECORD_FIELDS}
    return (json.dumps(own, allow_nan=False) + "\n").encode()


class RecordFile:
    """Appends whole records; made 0600 because records hold session keys."""

    def __init__(self, fd: int, *, needs_newline: bool) -> None:
        self._fd = fd
        os.fchmod(fd, 0o600)
        self._size = os.fstat(fd).st_size
        # A kept last record without its newline gets one in the same write as the next record.
        self._pending = b"\n" if needs_newline else b""

    def write(self, record: dict[str, Any]) -> int:
        """Append ``record``; returns the offset it starts at."""
        data = self._pending + _encode(record)
        start = self._size + len(self._pending)
        written = 0
        try:
            # One write per record on an O_APPEND file: a crash leaves whole records and at most
            # a torn last one, which --resume cuts.
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            if written:  # part of the record went in before the disk filled: take it out
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        self._pending = b""
        return start

    def close(self) -> None:
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
