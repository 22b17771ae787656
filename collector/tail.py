"""Following one log file by its open descriptor, across rename, unlink and truncation.

A `Tail` owns the file descriptor, so bytes stay readable after the runtime renames the
file and even after kubelet gzips and unlinks it: the agent drains the descriptor to its end
before letting go. Reads are large and split into complete lines; a last line without its
newline waits for the next read.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

from collector.metrics import METRICS

FINGERPRINT_BYTES = 4096
"""The first line (at most this much) identifies a file's content across renames."""


class Chunk(NamedTuple):
    offset: int
    """Byte offset of the first line."""
    data: bytes
    """Complete lines, newline-separated, without the last one's newline."""
    end: int
    """Byte offset just past the last line's newline."""
    rest: bytes | None = None
    """Set for one line cut at `max_line`: `data` is its head, this its last bytes."""


END_BYTES = 64 * 1024
"""Of a cut line, the last bytes kept: Docker's `"stream"`, `"attrs"` and `"time"`."""


CONTROL_BYTES = bytes(c for c in range(32) if c != 10)


def plain(data: bytes) -> bool:
    """ASCII without control bytes but newlines: checked once per read, not per line."""
    return data.isascii() and len(data.translate(None, CONTROL_BYTES)) == len(data)


def first_line(head: bytes) -> int:
    """How many of the first bytes identify the file: its first line with its newline."""
    end = head.find(b"\n")
    return end + 1 if end >= 0 else FINGERPRINT_BYTES


def fingerprint(head: bytes, salt: str) -> str | None:
    """A stable id for the file's content: its first line plus the folder it was found in.

    The folder is part of it because two containers may well print the same first line; the
    inode is not, because rotation keeps content but inodes get reused. None until the
    first line is complete, so a file is never identified by a prefix that will still grow.
    `head` is the file's first FINGERPRINT_BYTES (fewer when it is shorter).
    """
    end = head.find(b"\n")
    if end < 0:
        if len(head) < FINGERPRINT_BYTES:
            return None
        end = len(head)
    digest = hashlib.blake2b(head[:end], digest_size=8, person=b"logferry")
    digest.update(salt.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


class Tail:
    """Reads complete lines from one open file, remembering where the next one starts."""

    __slots__ = (
        "dev",
        "fd",
        "fingerprint",
        "folder",
        "head",
        "identified_by",
        "ino",
        "max_line",
        "more",
        "offset",
        "pending",
        "scanned",
        "verified",
    )

    def __init__(self, fd: int, folder: str, max_line: int) -> None:
        st = os.fstat(fd)
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.folder = folder
        self.max_line = max_line
        self.fingerprint: str | None = None
        self.identified_by = 0
        """How many of the file's first bytes the fingerprint was made of."""
        self.verified: tuple[int, int] | None = None
        """The size and mtime at which the first bytes were last found unchanged."""
        self.offset = 0
        """Where the next line to hand out starts; `pending` holds its bytes read so far."""
        self.pending = b""
        self.head: bytes | None = None
        """While a line longer than `max_line` is read past: its first `max_line` bytes
        (`pending` then holds its last bytes read, at most END_BYTES)."""
        self.scanned = 0
        """While reading past a long line: where the next read starts."""
        self.more = False
        """The last read filled its size: the file may hold more than it gave."""

    @classmethod
    def open(cls, path: str, folder: str, max_line: int) -> Tail:
        return cls(os.open(path, os.O_RDONLY | os.O_CLOEXEC), folder, max_line)

    def identify(self) -> bool:
        """Compute the fingerprint once the first line is complete; True when known."""
        if self.fingerprint is None:
            head = self.first_bytes(FINGERPRINT_BYTES)
            self.fingerprint = fingerprint(head, self.folder)
            self.identified_by = first_line(head)
        return self.fingerprint is not None

    def first_bytes(self, size: int) -> bytes:
        """The file's first bytes, whatever has been read."""
        return os.pread(self.fd, size, 0)

    def pread(self, size: int, start: int) -> bytes:
        """Up to `size` bytes of the content from `start`: what a gzipped file replaces."""
        return os.pread(self.fd, size, start)

    def seek(self, offset: int) -> None:
        self.offset = offset
        self.pending = b""
        self.head = None

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def position(self) -> int:
        """Where the next read starts: past every byte read, handed out or not."""
        return self.scanned if self.head is not None else self.offset + len(self.pending)

    def truncated(self) -> bool:
        """copytruncate: the file holds new content, from its start.

        It shrank below what was read, or it did not but its first line is another: the
        new content grew past the old read position (or to the same size) before this look.
        The first line is read again only when size or mtime changed since it was last
        found unchanged, which an appended file does once per write, not once per read.
        """
        st = os.fstat(self.fd)
        if st.st_size < self.position():
            return True
        seen = (st.st_size, st.st_mtime_ns)
        if self.fingerprint is None or seen == self.verified:
            return False
        head = os.pread(self.fd, self.identified_by, 0)
        if fingerprint(head, self.folder) != self.fingerprint:
            return True
        self.verified = seen
        return False

    def restart(self) -> None:
        """Start over on content that replaced the old (after a truncation)."""
        self.seek(0)
        self.fingerprint = None
        self.verified = None

    def unread(self) -> int:
        """Bytes written to the file that have not been read at all."""
        return max(0, self.size() - self.position())

    def read(self, limit: int) -> Chunk | None:
        """Up to `limit` bytes more, as complete lines; None when nothing complete is there.

        A line longer than `max_line` is read past (one read at a time, so memory stays
        bounded) until its newline, then handed out alone, cut.
        """
        while True:
            start = self.position()
            data = self.pread(limit, start)
            self.more = len(data) == limit
            if not data:
                return None
            if self.head is not None:
                chunk = self.read_past(data)
                if chunk is not None:
                    return chunk
                continue
            if self.pending:
                data = self.pending + data
            cut = data.rfind(b"\n")
            if cut >= 0:
                self.pending = data[cut + 1 :]
                chunk = Chunk(self.offset, data[:cut], self.offset + cut + 1)
                self.offset += cut + 1
                return chunk
            if len(data) <= self.max_line:
                self.pending = data
                continue
            self.head = data[: self.max_line]
            self.pending = data[self.max_line :][-END_BYTES:]
            self.scanned = self.offset + len(data)

    def read_past(self, data: bytes) -> Chunk | None:
        """More of a long line: its end kept, the rest counted; the cut line at its newline."""
        head = self.head
        assert head is not None
        newline = data.find(b"\n")
        if newline < 0:
            self.pending = (self.pending + data)[-END_BYTES:]
            self.scanned += len(data)
            return None
        rest = (self.pending + data[:newline])[-END_BYTES:]
        end = self.scanned + newline + 1
        METRICS.truncated_bytes.inc(end - 1 - self.offset - len(head))
        chunk = Chunk(self.offset, head, end, rest)
        self.offset = end
        self.pending = b""
        self.head = None
        return chunk

    def finish(self) -> Chunk | None:
        """The last line of a file no one will write to again, handed out though it has no
        newline (cut at `max_line` as any line); None when there is none."""
        end = self.size()
        if end <= self.offset:
            return None
        length = end - self.offset
        if self.head is not None and self.scanned == end:
            # What the last read kept on its way to the end: a .gz read behind where its
            # stream stands would be inflated again from its start.
            head, rest = self.head, self.pending
        else:
            kept = self.head is None and self.offset + len(self.pending) == end
            data = self.pending if kept else self.pread(min(length, self.max_line), self.offset)
            head = data[: self.max_line]
            rest = None
            if length > self.max_line:
                after = max(self.max_line, length - END_BYTES)
                rest = data[after:] if kept else self.pread(END_BYTES, self.offset + after)
        if rest is None:
            chunk = Chunk(self.offset, head, end)
        else:
            METRICS.truncated_bytes.inc(length - len(head))
            chunk = Chunk(self.offset, head, end, rest)
        self.seek(end)
        return chunk

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
