"""The forward protocol's framing of one connection: bytes in, messages out.

The connection's bytes are kept as they came and fed to one msgpack unpacker, which only
skips through them to find where each whole object ends: that object's bytes are one message
(Message, Forward, PackedForward or CompressedPackedForward mode, with its option map) or,
while the shared-key handshake is not done, the client's PING. A message is bounded by
`forward_max_frame_bytes` on the wire and, gzipped, by INFLATE_RATIO times that once
inflated; its entries are unpacked from its bytes and encoded a step at a time as the
delivery side asks (collector.forward_delivery), so what one message holds is its bytes and
one step of them, however many entries it carries (unpacked whole, small entries would take
some 50 times their bytes, which are all the budget is charged).

Spec: https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import secrets
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from msgpack import ExtType, Timestamp
from prometheus_client import Counter

from collector.encode import ForwardEncoder
from collector.sink import MAX_KEY_BYTES

if TYPE_CHECKING:
    from collector.forward import ForwardServer

log = logging.getLogger("collector.forward")

ERRORS = Counter(
    "logferry_collector_forward_errors",
    "Forward connections cut, refused or closed, by reason (malformed, too_large, auth, "
    "refused, delivery, idle)",
    ["reason"],
)

EVENT_TIME = struct.Struct(">II")
INFLATE_RATIO = 8
"""A CompressedPackedForward message may inflate to this many times forward_max_frame_bytes."""
STEP_BYTES = 1024 * 1024
"""Inflated bytes per step of a gzip message: a message is read a step at a time, so what it
holds does not grow with its size (its records are batched likewise, collector.encode)."""
READ_MARGIN = 1024 * 1024
"""Above the frame limit in the unpacker's buffer: room for one read past a frame's end."""
ARRAY_HEADERS = {0xDC: 3, 0xDD: 5}
"""msgpack's array 16 and array 32 type bytes and their headers' lengths; a fixarray's type
byte (0x90 to 0x9F) is its whole header."""


class ProtocolError(ValueError):
    """Valid msgpack that is not the forward protocol: the connection is cut."""

    reason = "malformed"


class TooLarge(ProtocolError):
    reason = "too_large"


class Refused(ProtocolError):
    """The handshake failed: the client was told so, and the connection is cut."""

    reason = "auth"


def ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:
        return Timestamp(*EVENT_TIME.unpack(data))
    return ExtType(code, data)


def unpacker(max_bytes: int, source: io.BytesIO | None = None) -> msgpack.Unpacker:
    """Fed, or reading `source` a little at a time."""
    return msgpack.Unpacker(
        source,
        raw=False,
        # Old clients send PackedForward entries as str holding binary: kept byte for byte.
        unicode_errors="surrogateescape",
        strict_map_key=False,
        ext_hook=ext_hook,
        max_buffer_size=max(max_bytes, 1),
    )


def reader(data: bytes) -> msgpack.Unpacker:
    """An unpacker over one message's bytes, which it shares rather than copies."""
    return unpacker(len(data), io.BytesIO(data))


def array_header(data: bytes, at: int) -> int:
    """The length of the header of the msgpack array at `at`; 0 when none starts there."""
    byte = data[at]
    if 0x90 <= byte <= 0x9F:
        return 1
    return ARRAY_HEADERS.get(byte, 0)


def steps(data: bytes, start: int, end: int) -> Iterator[memoryview]:
    """data[start:end], STEP_BYTES at a time, without copies."""
    view = memoryview(data)
    for at in range(start, end, STEP_BYTES):
        yield view[at : min(at + STEP_BYTES, end)]


def as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise ProtocolError(f"expected str or bin, got {type(value).__name__}")


def inflated(data: bytes, limit: int) -> Iterator[bytes]:
    """Gzip members one after another (forwarders append one per flush), STEP_BYTES at a time;
    TooLarge past `limit` bytes out in all. Never more than one step is held."""
    size = 0
    while data:
        member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        while not member.eof:
            piece = member.decompress(data, STEP_BYTES)
            data = member.unconsumed_tail
            size += len(piece)
            if size > limit:
                raise TooLarge(f"compressed entries inflate past {limit} bytes")
            if piece:
                yield piece
            elif not data:
                raise ProtocolError("compressed entries end inside a gzip member")
        data = member.unused_data


def entries_of(pieces: Iterable[bytes | memoryview], max_entry: int) -> Iterator[Any]:
    """The [time, record] entries of a PackedForward message, from its bytes in pieces (or of
    a Forward mode one, from the bytes inside its array: they are laid out alike)."""
    stream = unpacker(max_entry)
    fed = end = 0
    for piece in pieces:
        fed += len(piece)
        stream.feed(piece)
        for entry in stream:
            # Read after each object: past its end, tell() also counts a started next one.
            end = stream.tell()
            yield entry
    if end != fed:
        raise ProtocolError("packed entries end inside an event")


def kafka_key(tag: str) -> str:
    """A tag as a record key; a long one stands as its digest (one tag, one partition)."""
    data = tag.encode("utf-8", "surrogateescape")
    if len(data) <= MAX_KEY_BYTES:
        return tag
    digest = hashlib.blake2b(data, digest_size=16)
    return f"tag-{digest.hexdigest()}"


@dataclass(eq=False, slots=True)
class Message:
    """One message (or chunk) of a connection: its records go to the sink a batch at a time."""

    key: str
    chunk: str | bytes | None
    batches: Iterator[list[bytes]] | None
    """None once every record was handed to the sink."""
    size: int
    """Bytes of its msgpack held while it is read: charged to the budget."""
    outstanding: int = 0
    """Batches handed to the sink whose outcome the loop has not seen yet."""
    topic: str | None = None
    fallback: str | None = None
    """Why `topic` is the fallback topic (collector.route), None when it is not."""


class Framing:
    """One connection's stream of messages, its handshake and its records' ids and key.

    Replies to the client (HELO, PONG, the ack of a skipped chunk) go through `reply`.
    """

    def __init__(self, server: ForwardServer, reply: Callable[[Any], None]) -> None:
        self.server = server
        self.encoder = ForwardEncoder(server.object_path, server.max_record_bytes, server.meta)
        self.reply = reply
        self.address = ""
        self.peer = "?"
        self.stream = unpacker(server.max_frame_bytes + READ_MARGIN)
        self.pending = bytearray()
        """The bytes from where the message being received began: the stream only skips
        through them, and a message's own are read once it is whole."""
        self.frame_start = 0
        """Stream offset where the message being received began."""
        self.key: str | None = None
        """The peer's container id, when its pod has only one: the Kafka key."""
        self.topic, self.fallback = server.topics.render(server.meta)
        """Where the peer's records go: the --topic template over its pod's fields, as the
        agent's records are routed; without its pod (no API, a peer off the pod network),
        the fields are missing and the records go to the fallback topic."""
        self.meta_version = -1
        self.uid = secrets.token_hex(6)
        self.frames = 0
        self.nonce: bytes | None = None
        """Set while the handshake is not done."""

    def hello(self) -> None:
        """With a shared key, the server speaks first: HELO with a nonce."""
        if self.server.shared_key:
            self.nonce = os.urandom(16)
            self.reply(["HELO", {"nonce": self.nonce, "auth": "", "keepalive": True}])

    def feed(self, data: bytes) -> None:
        """The socket's bytes; msgpack.BufferFull past the frame limit and a read."""
        self.stream.feed(data)
        self.pending += data

    def buffered(self) -> int:
        """Bytes of a message not yet received whole."""
        return len(self.pending)

    def receiving(self) -> bool:
        """In the middle of receiving a message."""
        return bool(self.pending)

    def drop(self) -> None:
        """The connection is gone: what it buffered goes with it."""
        self.pending = bytearray()

    def next_message(self) -> Message | None:
        """The next message received whole, or None until more bytes come.

        The handshake and messages skipped for their size are dealt with on the way.
        """
        limit = self.server.max_frame_bytes
        while True:
            try:
                # Skipped, nothing of it is built: a message's objects take many times its
                # bytes, which are what the budget is charged.
                self.stream.skip()
            except msgpack.OutOfData:
                break
            start, self.frame_start = self.frame_start, self.stream.tell()
            size = self.frame_start - start
            if size > limit:
                raise TooLarge(f"a message is over forward_max_frame_bytes={limit}")
            # Through a view, copied once (a slice of the bytearray would be a second copy).
            with memoryview(self.pending) as view:
                data = bytes(view[:size])
            del self.pending[:size]
            message = self.handle(data)
            if message is not None:
                return message
        if self.buffered() > limit:
            raise TooLarge(f"a message is over forward_max_frame_bytes={limit}")
        return None

    def handle(self, data: bytes) -> Message | None:
        """One whole message's bytes: read item by item, its entries left for later."""
        if self.nonce is not None:
            self.handshake(reader(data).unpack(), self.nonce)
            return None
        head = reader(data)
        count = head.read_array_header() if array_header(data, 0) else 0
        tag = head.unpack() if count else None
        if count < 2 or type(tag) is not str:
            raise ProtocolError("a message is not an array starting with a tag")
        entries: Iterable[Any]
        max_entry = self.server.max_frame_bytes + STEP_BYTES
        start = head.tell()
        header = array_header(data, start)
        if header:
            # Forward mode: its entries are read from its bytes as PackedForward's are, one
            # at a time; this pass only finds where they end and reads the option after them.
            head.skip()
            end = head.tell()
            option = self.option(head, count, 2)
            entries = entries_of(steps(data, start + header, end), max_entry)
        elif isinstance(body := head.unpack(), bytes | str):
            option = self.option(head, count, 2)
            packed = as_bytes(body)
            compressed = option.get("compressed", "text")
            pieces: Iterable[bytes] = (packed,)
            if compressed == "gzip":
                bound = self.server.max_frame_bytes * INFLATE_RATIO
                # A first pass refuses a message over the bound before any of it is shipped.
                try:
                    for _ in inflated(packed, bound):
                        pass
                except TooLarge as exc:
                    self.skip(tag, option, str(exc))
                    return None
                pieces = inflated(packed, bound)
            elif compressed != "text":
                raise ProtocolError(f"unknown compression {compressed!r}")
            entries = entries_of(pieces, max_entry)
        else:
            record = head.unpack() if count > 2 else None
            option = self.option(head, count, 3)
            entries = [[body, record]]
        chunk = option.get("chunk")
        if chunk is not None and not isinstance(chunk, str | bytes):
            raise ProtocolError("the chunk option is not a string")
        self.refresh()
        if chunk is None:
            ids = f"{self.uid}-{self.frames}"
        else:
            # A chunk sent again after a lost ack keeps its id: so do its records, and the
            # pipeline stores them once.
            digest = hashlib.blake2b(as_bytes(tag) + b"\0" + as_bytes(chunk), digest_size=12)
            ids = digest.hexdigest()
        self.frames += 1
        key = self.key or kafka_key(tag)
        batches = self.encoder.encode(tag, entries, ids)
        return Message(key, chunk, batches, len(data), topic=self.topic, fallback=self.fallback)

    def skip(self, tag: str, option: dict[str, Any], detail: str) -> None:
        """A message read whole and refused for its size: counted, logged, and its chunk
        acknowledged, as the same chunk sent again would be refused again, for ever."""
        ERRORS.labels("too_large").inc()
        log.error(
            "forward client %s: a message tagged %r skipped: %s", self.peer, tag[:200], detail
        )
        chunk = option.get("chunk")
        if isinstance(chunk, str | bytes):
            self.reply({"ack": chunk})

    def option(self, head: msgpack.Unpacker, count: int, at: int) -> dict[str, Any]:
        """The option map, which is the item at `at`, the next `head` reads, when there is
        one in the message's `count` items."""
        if not at <= count <= at + 1:
            raise ProtocolError(f"a message of {count} items")
        option = head.unpack() if count > at else None
        if option is None:
            return {}
        if type(option) is not dict:
            raise ProtocolError("the option is not a map")
        return option

    def handshake(self, frame: Any, nonce: bytes) -> None:
        if type(frame) is not list or len(frame) != 6 or frame[0] != "PING":
            raise ProtocolError("expected PING after HELO")
        _, hostname, salt, digest, _user, _password = frame
        server = self.server
        key = server.shared_key.encode()
        salt = as_bytes(salt)
        expected = hashlib.sha512(salt + as_bytes(hostname) + nonce + key).hexdigest()
        if not hmac.compare_digest(as_bytes(digest), expected.encode()):
            self.reply(["PONG", False, "shared_key mismatch", "", ""])
            raise Refused("shared key mismatch")
        own = server.hostname.encode()
        proof = hashlib.sha512(salt + own + nonce + key).hexdigest()
        self.reply(["PONG", True, "", server.hostname, proof])
        self.nonce = None

    def refresh(self) -> None:
        """Pod metadata of the peer, looked up again only when the pod cache changed."""
        peers = self.server.peers
        if peers is None or peers.enricher.version == self.meta_version:
            return
        self.meta_version = peers.enricher.version
        info = peers.info(self.address)
        meta = dict(self.server.meta)
        if info is not None:
            meta.update(info.fields)
        self.encoder.update(meta)
        self.key = None if info is None else info.fields.get("container.id")
        self.topic, self.fallback = self.server.topics.render(meta)
