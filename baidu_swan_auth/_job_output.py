"""The records file of ``baidu-swan-auth exchange``: opened safely, scanned before a resume,
appended to one whole record at a time.

Crash safety rests on two rules: every record is written whole with one ``write`` to a file opened
for appending, and a record is written only for an input whose call finished. After a crash,
``--resume`` keeps the records there are (cutting a torn last line) and runs the inputs that have
none. A file holding anything but records of this command is refused, untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from functools import partial
from typing import Any

__all__ = ["RECORD_FIELDS", "JobError", "RecordFile", "open_output", "scan_records"]

#: Names a record sets itself: carried input fields never override or shadow them.
RECORD_FIELDS = frozenset({"line", "code", "openid", "session_key", "error", "description"})
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
    """The output, open for reading and appending (FileNotFoundError: missing, not created)."""
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
    return fd


def _line_of(value: object) -> int | None:
    """The ``line`` of a record of this command (a positive int, not a bool or a float)."""
    line = value.get("line") if isinstance(value, dict) else None
    return line if type(line) is int and line >= 1 else None


def scan_records(fd: int, path: str) -> tuple[set[int], bool]:
    """The lines an output has records for, and whether its last record lacks a newline.

    Cuts a torn last line (one that starts like a record and does not parse: a crash cut it
    short). Refuses anything else that is not a record, before changing a thing.
    """
    done: set[int] = set()
    whole = 0  # bytes up to the end of the last whole record
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
                done.add(line)
                whole += len(raw)
                open_end = last
            elif last and value is _UNPARSED and raw.startswith(b"{"):
                os.ftruncate(fd, whole)
            else:
                raise JobError(
                    f"{path}, line {number}, is not a record of this command: not resuming, "
                    "and the file is left as it is"
                )
    return done, open_end


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

    def write(self, record: dict[str, Any]) -> None:
        data = self._pending + _encode(record)
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

    def close(self) -> None:
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
