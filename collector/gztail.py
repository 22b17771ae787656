"""Reading a rotated file that kubelet gzipped, at the offsets of the original.

kubelet renames `0.log` to `0.log.<time>` at a rotation and, at the next one, compresses it
into `.tmp`, renames that to `.gz` and unlinks the original. An agent holding the original
open drains it through its descriptor; one that was stopped meanwhile finds only the `.gz`.
`GzipTail` is a `Tail` over the decompressed content: the same first line (so the same
fingerprint and checkpoint), the same offsets (so the same event.id), streamed through zlib
with a bounded buffer and never held whole.
"""

from __future__ import annotations

import os
import re
import zlib
from datetime import datetime

from collector.decode import DECODERS, detect
from collector.tail import Tail

BLOCK = 64 * 1024
"""Compressed bytes read at a time, and the least decompressed per step."""

GZIP = 16 + zlib.MAX_WBITS
"""zlib's window setting for the gzip container."""


FRACTION = re.compile(r"\.\d+")


def started(head: bytes) -> float | None:
    """When a file's first line was written, by the runtime's clock; None when unknown."""
    first = head.split(b"\n", 1)[0]
    # Only the time is wanted: the head may end inside the line, even inside a character.
    line = DECODERS[detect(first)](first)
    if not line.time:
        return None
    try:
        return datetime.fromisoformat(FRACTION.sub("", line.time, count=1)).timestamp()
    except ValueError:
        return None


class GzipTail(Tail):
    """A `Tail` whose content comes out of zlib: read forward only, from any offset."""

    __slots__ = (
        "compressed_pos",
        "feed",
        "isize",
        "length",
        "out",
        "problem",
        "stream",
        "upos",
    )

    def __init__(self, fd: int, folder: str, max_line: int) -> None:
        super().__init__(fd, folder, max_line)
        compressed = os.fstat(fd).st_size
        trailer = os.pread(fd, 4, compressed - 4) if compressed >= 4 else b""
        self.isize = int.from_bytes(trailer, "little") if len(trailer) == 4 else 0
        """The gzip trailer's length of the content (modulo 2**32): a hint until the end."""
        self.length: int | None = None
        """The content's length, once the stream was read to its end (or as far as it went)."""
        self.problem: str | None = None
        """Why the stream ended before its end (a cut or damaged file)."""
        self.stream: zlib._Decompress | None = zlib.decompressobj(GZIP)
        self.feed = b""
        """Compressed bytes after a member's end: the start of the next member."""
        self.compressed_pos = 0
        self.upos = 0
        """Offset in the content of `out`'s first byte."""
        self.out = b""

    @classmethod
    def open(cls, path: str, folder: str, max_line: int) -> GzipTail:
        return cls(os.open(path, os.O_RDONLY | os.O_CLOEXEC), folder, max_line)

    def rewind(self) -> None:
        """Back to the start of the content: a stream can only be decompressed forward."""
        self.stream = zlib.decompressobj(GZIP)
        self.feed = b""
        self.compressed_pos = 0
        self.upos = 0
        self.out = b""
        self.length = None
        self.problem = None

    def first_bytes(self, size: int) -> bytes:
        try:
            return zlib.decompressobj(GZIP).decompress(os.pread(self.fd, BLOCK, 0), size)
        except zlib.error:
            return b""

    def pread(self, size: int, start: int) -> bytes:
        if start < self.upos:
            self.rewind()
        while True:
            drop = min(start - self.upos, len(self.out))
            if drop:
                # Skipping to a checkpoint: decompressed and dropped, never kept.
                self.out = self.out[drop:]
                self.upos += drop
            if self.upos == start and (len(self.out) >= size or self.length is not None):
                # Handed out is consumed (Tail asks next for what follows): only what was
                # decompressed past `size`, less than a step, stays between reads.
                data = self.out[:size]
                self.out = self.out[len(data) :]
                self.upos += len(data)
                return data
            if self.length is not None:
                return b""
            self.inflate(max(size - len(self.out), BLOCK))

    def inflate(self, want: int) -> None:
        """Decompress at most `want` more bytes of content (fewer at a block's end)."""
        stream = self.stream
        data = stream.unconsumed_tail if stream is not None else b""
        if not data:
            data, self.feed = self.feed, b""
        if not data:
            data = os.pread(self.fd, BLOCK, self.compressed_pos)
            self.compressed_pos += len(data)
        if not data:
            if stream is not None:
                self.problem = "the compressed file ends inside its stream"
            self.length = self.upos + len(self.out)
            return
        if stream is None:
            # gzip allows several members one after the other; each is its own stream.
            stream = self.stream = zlib.decompressobj(GZIP)
        try:
            self.out += stream.decompress(data, want)
        except zlib.error as exc:
            self.problem = f"damaged: {exc}"
            self.length = self.upos + len(self.out)
            return
        if stream.eof:
            self.feed = stream.unused_data
            self.stream = None

    def size(self) -> int:
        if self.length is not None:
            return self.length
        return max(self.isize, self.upos + len(self.out))

    def truncated(self) -> bool:
        return False
