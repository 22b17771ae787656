"""The Fluentd Forward Protocol v1 listener, so apps using fluent-logger ship to the collector.

It takes the Message, Forward, PackedForward and CompressedPackedForward modes, EventTime,
the `chunk` option (answered with `{"ack": chunk}` only once the sink delivered every record
of the chunk), the shared-key handshake, and Fluentd's UDP heartbeat. One asyncio loop in
its own thread serves every connection; one message, or one chunk, becomes one sink batch.

Spec: https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import secrets
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgpack
import orjson
from msgpack import ExtType, Timestamp
from prometheus_client import Counter, Gauge

from collector.budget import Budget
from collector.config import Config
from collector.encode import nest
from collector.metrics import METRICS
from collector.route import Topics
from collector.sink import MAX_KEY_BYTES, Done, Sink, largest_record

if TYPE_CHECKING:
    # The kubernetes client is imported only where enrichment is configured.
    from collector.enrich import Enricher, PodInfo

log = logging.getLogger("collector.forward")

CONNECTIONS = Gauge("logferry_collector_forward_connections", "Open forward protocol connections")
EVENTS = Counter("logferry_collector_forward_events", "Events received by the forward listener")
BYTES = Counter("logferry_collector_forward_bytes", "Bytes received by the forward listener")
ERRORS = Counter(
    "logferry_collector_forward_errors",
    "Forward connections cut or refused, by reason (malformed, too_large, auth, refused, delivery)",
    ["reason"],
)

EVENT_TIME = struct.Struct(">II")
IN_FLIGHT_BYTES = 8 * 1024 * 1024
"""Records of one connection not yet delivered past which it is not read: backpressure."""
INFLATE_RATIO = 8
"""A CompressedPackedForward message may inflate to this many times forward_max_frame_bytes."""
STEP_BYTES = 1024 * 1024
"""Inflated bytes per step of a gzip message, and record bytes per sink batch of a message:
a message is read a step at a time, so what it holds does not grow with its size."""
READ_BYTES = 256 * 1024
"""The most one read of a socket brings (asyncio's): the budget's overshoot per connection."""
READ_MARGIN = 1024 * 1024
"""Above the frame limit in the unpacker's buffer: room for one read past a frame's end."""
CUT_TAG_CHARS = 1024
"""A cut record keeps at most this much of its tag: a tag alone may not overflow a record."""
RETRY_SECONDS = 0.01
SWEEP_SECONDS = 1.0
FEED_SECONDS = 0.02
"""How often connections paused for the budget look for room again."""


class ProtocolError(ValueError):
    """Valid msgpack that is not the forward protocol: the connection is cut."""

    reason = "malformed"


class TooLarge(ProtocolError):
    reason = "too_large"


def ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:
        return Timestamp(*EVENT_TIME.unpack(data))
    return ExtType(code, data)


def unpacker(max_bytes: int) -> msgpack.Unpacker:
    return msgpack.Unpacker(
        raw=False,
        # Old clients send PackedForward entries as str holding binary: kept byte for byte.
        unicode_errors="surrogateescape",
        strict_map_key=False,
        ext_hook=ext_hook,
        max_buffer_size=max(max_bytes, 1),
    )


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


def entries_of(pieces: Iterable[bytes], max_entry: int) -> Iterator[Any]:
    """The [time, record] entries of a PackedForward message, from its bytes in pieces."""
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


def rfc3339(seconds: int, nanos: int | None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}Z" if nanos is None else f"{stamp}.{nanos:09d}Z"


def jsonable(value: Any) -> Any:
    """What msgpack gives and orjson does not take."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Timestamp):
        try:
            return rfc3339(value.seconds, value.nanoseconds)
        except (OverflowError, OSError, ValueError):
            return value.to_unix_nano()
    if isinstance(value, ExtType):
        return f"ext{value.code}:{value.data.hex()}"
    raise TypeError(f"{type(value).__name__} is not JSON")


def clean(value: Any) -> Any:
    """A record orjson refused (undecodable text, keys that are not text), made JSON-able."""
    if isinstance(value, dict):
        return {text_key(k): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, bytes | Timestamp | ExtType):
        return jsonable(value)
    return value


def text_key(key: Any) -> str:
    key = clean(key)
    return key if isinstance(key, str) else orjson.dumps(key).decode()


class RecordEncoder:
    """Forwarded events -> records of the contract, with one connection's static fields."""

    def __init__(self, object_path: str, max_record_bytes: int, meta: dict[str, Any]) -> None:
        *self.parents, self.leaf = object_path.split(".")
        self.max_record_bytes = max_record_bytes
        self.suffix = b"}"
        self.second = -1
        self.prefix = ""
        self.update(meta)

    def update(self, meta: dict[str, Any]) -> None:
        static = orjson.dumps(nest(meta))
        self.suffix = b"," + static[1:] if len(static) > 2 else b"}"

    def stamp(self, value: Any) -> str:
        """RFC 3339 UTC; one strftime per distinct second, which a chunk's events share."""
        if type(value) is int:
            seconds, nanos = value, None
        elif isinstance(value, Timestamp):
            seconds, nanos = value.seconds, value.nanoseconds
        elif type(value) is float and math.isfinite(value):
            seconds = math.floor(value)
            nanos = min(round((value - seconds) * 1e9), 999_999_999)
        else:
            raise ProtocolError(f"event time is a {type(value).__name__}, not a time")
        if seconds != self.second:
            try:
                self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            except (OverflowError, OSError, ValueError) as exc:
                raise ProtocolError(f"event time {seconds} is out of range") from exc
            self.second = seconds
        return f"{self.prefix}Z" if nanos is None else f"{self.prefix}.{nanos:09d}Z"

    def encode(self, tag: str, entries: Iterable[Any], ids: str) -> Iterator[list[bytes]]:
        """The records of a message, in batches of about STEP_BYTES."""
        dumps = orjson.dumps
        suffix = self.suffix
        parents, leaf = self.parents, self.leaf
        values: list[bytes] = []
        size = 0
        for index, entry in enumerate(entries):
            if type(entry) is not list or len(entry) < 2:
                raise ProtocolError("an entry is not [time, record]")
            record = entry[1]
            if type(record) is not dict:
                raise ProtocolError(f"a record is a {type(record).__name__}, not a map")
            body: dict[str, Any] = {"@timestamp": self.stamp(entry[0])}
            text = record.get("message")
            field = "message"
            if not isinstance(text, str | bytes):
                text, field = record.get("log"), "log"
            if isinstance(text, str | bytes):
                del record[field]
                if isinstance(text, bytes):
                    text = text.decode("utf-8", "replace")
                body["message"] = text.removesuffix("\n")
            body["event"] = {"id": f"{ids}-{index}"}
            body["fluent"] = {"tag": tag}
            if record:
                node = body
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = record
            try:
                value = dumps(body, default=jsonable)[:-1] + suffix
            except orjson.JSONEncodeError:
                value = dumps(clean(body))[:-1] + suffix
            if len(value) > self.max_record_bytes:
                value = self.cut(body, tag)
            values.append(value)
            size += len(value)
            if size >= STEP_BYTES:
                yield values
                values, size = [], 0
        if values:
            yield values

    def cut(self, body: dict[str, Any], tag: str) -> bytes:
        """A record past max_record_bytes: the map's other fields go, the message is cut."""
        METRICS.truncated.inc()
        text = clean(body.get("message", "")).encode()
        short: dict[str, Any] = {
            "@timestamp": body["@timestamp"],
            "message": "",
            "event": body["event"],
            "fluent": {"tag": clean(tag)[:CUT_TAG_CHARS]},
            "tags": ["truncated"],
        }
        room = self.max_record_bytes - len(orjson.dumps(short)) + 1 - len(self.suffix)
        while True:
            short["message"] = text[: max(room, 0)].decode("utf-8", "ignore")
            value = orjson.dumps(short)[:-1] + self.suffix
            over = len(value) - self.max_record_bytes
            if over <= 0 or room <= 0:
                return value
            # JSON escapes make text longer than its bytes, never shorter: cut that much more.
            room -= over


def kafka_key(tag: str) -> str:
    """A tag as a record key; a long one stands as its digest (one tag, one partition)."""
    data = tag.encode("utf-8", "surrogateescape")
    if len(data) <= MAX_KEY_BYTES:
        return tag
    digest = hashlib.blake2b(data, digest_size=16)
    return f"tag-{digest.hexdigest()}"


class PeerPods:
    """A peer's address -> its pod's metadata, from the enricher's cache.

    The address index is rebuilt when the cache changes, never per event. Pods that share an
    address (host network) cannot be told apart: their peers get no pod metadata.
    """

    def __init__(self, enricher: Enricher) -> None:
        self.enricher = enricher
        self.version = -1
        self.by_ip: dict[str, dict[str, str]] = {}

    def info(self, address: str) -> PodInfo | None:
        if self.enricher.version != self.version:
            self.rebuild()
        meta = self.by_ip.get(address)
        return None if meta is None else self.enricher.lookup(meta)

    def rebuild(self) -> None:
        self.version = self.enricher.version
        self.by_ip = self.enricher.pods_by_address()


@dataclass(eq=False, slots=True)
class Batch:
    key: str
    values: list[bytes]
    done: Done
    """Called on any thread."""
    sent: int = 0
    topic: str | None = None


class Handoff:
    """Batches from the listener's thread to the sink.

    A sink's `send` may wait for room by serving deliveries (Kafka polls its producer): from
    this thread, that would run the agent's delivery callbacks here, beside the agent's own
    thread. So batches are offered (`Sink.offer`, which never waits); a batch the sink has no
    room for waits (and its connection is soon not read) until the main loop made room.
    """

    def __init__(self, sink: Sink, loop: asyncio.AbstractEventLoop) -> None:
        self.sink = sink
        self.loop = loop
        self.waiting: deque[Batch] = deque()

    def submit(self, batch: Batch) -> None:
        if self.waiting:
            self.waiting.append(batch)
        elif not self.offer(batch):
            self.waiting.append(batch)
            self.loop.call_later(RETRY_SECONDS, self.retry)

    def retry(self) -> None:
        while self.waiting:
            if not self.offer(self.waiting[0]):
                self.loop.call_later(RETRY_SECONDS, self.retry)
                return
            self.waiting.popleft()

    def offer(self, batch: Batch) -> bool:
        """False when the sink has no room for the rest of the batch yet."""
        if not batch.values:
            batch.done(True)
            return True
        key = batch.key.encode("utf-8", "surrogateescape")
        try:
            batch.sent = self.sink.offer(key, batch.values, batch.sent, batch.done, batch.topic)
        except (OSError, ValueError) as exc:
            METRICS.delivery_errors.inc()
            log.error("the sink refused forwarded events: %s", exc)
            batch.done(False)
            return True
        if batch.sent < len(batch.values):
            return False
        # The sink holds its own copy until delivery: this one would be held twice.
        batch.values = []
        return True


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


class Connection(asyncio.Protocol):
    """One client: its stream of messages, its handshake, its chunks in flight."""

    def __init__(self, server: ForwardServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self.peer = "?"
        self.stream = unpacker(server.max_frame_bytes + READ_MARGIN)
        self.fed = 0
        self.frame_start = 0
        """Stream offset where the message being received began."""
        self.encoder = RecordEncoder(server.object_path, server.max_record_bytes, server.meta)
        self.key: str | None = None
        """The peer's container id, when its pod has only one: the Kafka key."""
        self.topic, self.fallback = server.topics.render(server.meta)
        """Where the peer's records go: the --topic template over its pod's fields, as the
        agent's records are routed; without its pod (no API, a peer off the pod network),
        the fields are missing and the records go to the fallback topic."""
        self.meta_version = -1
        self.uid = secrets.token_hex(6)
        self.frames = 0
        self.message: Message | None = None
        """The message whose records are being handed to the sink; the next waits for it."""
        self.in_flight = 0
        """Bytes of records handed to the sink and not yet delivered."""
        self.charged = 0
        """Bytes this connection holds in the budget."""
        self.nonce: bytes | None = None
        """Set while the handshake is not done."""
        self.paused = False
        """Not read while its records in flight are past IN_FLIGHT_BYTES."""
        self.starved = False
        """Not read while the memory budget is exhausted."""
        self.closed = False
        self.last = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address = str(peer[0]).removeprefix("::ffff:")
            self.peer = f"{self.address}:{peer[1]}"
        if len(server.connections) >= server.max_connections:
            ERRORS.labels("refused").inc()
            log.warning(
                "forward client %s refused: forward_max_connections=%d reached",
                self.peer,
                server.max_connections,
            )
            self.closed = True
            transport.abort()
            return
        server.connections.add(self)
        CONNECTIONS.set(len(server.connections))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Peers that vanish without a FIN are found out even with no idle timeout.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.last = server.loop.time()
        if server.budget.exhausted():
            self.starve()
        self.update()
        if server.shared_key:
            self.nonce = os.urandom(16)
            self.write(["HELO", {"nonce": self.nonce, "auth": "", "keepalive": True}])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self.server
        server.connections.discard(self)
        CONNECTIONS.set(len(server.connections))
        if server.finisher is self:
            server.finisher = None
        # What it buffered goes with it; records in flight stay charged until they settle.
        self.message = None
        self.fed = self.frame_start
        self.charge()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last = self.server.loop.time()
        BYTES.inc(len(data))
        self.fed += len(data)
        try:
            self.stream.feed(data)
        except msgpack.BufferFull:
            limit = self.server.max_frame_bytes
            self.cut("too_large", f"a message is over forward_max_frame_bytes={limit}")
            return
        self.pump()

    def pump(self) -> None:
        """Reads messages and hands their records on while the bounds allow, then reading
        stops (records in flight past IN_FLIGHT_BYTES, or the budget exhausted) until
        deliveries make room."""
        server = self.server
        limit = server.max_frame_bytes
        try:
            while not self.closed:
                message = self.message
                if message is not None:
                    if self.blocked():
                        return
                    values = None if message.batches is None else next(message.batches, None)
                    if values is not None:
                        self.deliver(message, values)
                        continue
                    message.batches = None
                    self.message = None
                    if message.outstanding == 0:
                        self.answer(message)
                try:
                    frame = self.stream.unpack()
                except msgpack.OutOfData:
                    break
                # The unpacker drops what it parsed of an unfinished message: the size of
                # one is counted from where it began.
                start, self.frame_start = self.frame_start, self.stream.tell()
                if self.frame_start - start > limit:
                    raise TooLarge(f"a message is over forward_max_frame_bytes={limit}")
                self.handle(frame, self.frame_start - start)
            if not self.closed and self.fed - self.frame_start > limit:
                raise TooLarge(f"a message is over forward_max_frame_bytes={limit}")
        except msgpack.BufferFull:
            self.cut("too_large", f"a message is over forward_max_frame_bytes={limit}")
        except ProtocolError as exc:
            self.cut(exc.reason, str(exc))
        except (ValueError, TypeError, OverflowError, msgpack.UnpackException, zlib.error) as exc:
            self.cut("malformed", f"not msgpack of the forward protocol: {exc!r}")
        self.charge()
        if self.closed:
            return
        if server.finisher is self and not self.unfinished():
            server.finisher = None
        if server.budget.exhausted() and server.finisher is not self:
            self.starve()

    def unfinished(self) -> bool:
        """In the middle of receiving a message, or of handing its records on."""
        return self.message is not None or self.fed > self.frame_start

    def blocked(self) -> bool:
        """Whether the message being read must wait for deliveries; reading stops meanwhile."""
        self.charge()
        if self.in_flight > IN_FLIGHT_BYTES:
            self.paused = True
            self.update()
            return True
        if self.server.budget.exhausted() and self.server.finisher is not self:
            self.starve()
            return True
        return False

    def charge(self) -> None:
        """Tells the budget what this connection holds: bytes of an unfinished message, the
        message being read, records in flight."""
        held = self.fed - self.frame_start + self.in_flight
        if self.message is not None:
            held += self.message.size
        if held != self.charged:
            self.server.budget.take(held - self.charged)
            self.charged = held

    def starve(self) -> None:
        if not self.starved:
            self.starved = True
            self.server.budget.paused("forward")
            self.server.hungry.append(self)
            self.server.feed_soon()
        self.update()

    def reading(self) -> bool:
        return not (self.closed or self.paused or self.starved or self.server.draining)

    def update(self) -> None:
        """Reads the socket unless a bound or the drain says not to (idempotent)."""
        if self.transport is None or self.closed:
            return
        if self.reading():
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def handle(self, frame: Any, size: int) -> None:
        if self.nonce is not None:
            self.handshake(frame, self.nonce)
            return
        if type(frame) is not list or len(frame) < 2 or type(frame[0]) is not str:
            raise ProtocolError("a message is not an array starting with a tag")
        tag, body = frame[0], frame[1]
        entries: Iterable[Any]
        if type(body) is list:
            option = self.option(frame, 2)
            entries = body
        elif isinstance(body, bytes | str):
            option = self.option(frame, 2)
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
                    return
                pieces = inflated(packed, bound)
            elif compressed != "text":
                raise ProtocolError(f"unknown compression {compressed!r}")
            entries = entries_of(pieces, self.server.max_frame_bytes + STEP_BYTES)
        else:
            option = self.option(frame, 3)
            entries = [frame[1:3]]
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
        self.message = Message(key, chunk, batches, size, topic=self.topic, fallback=self.fallback)

    def skip(self, tag: str, option: dict[str, Any], detail: str) -> None:
        """A message read whole and refused for its size: counted, logged, and its chunk
        acknowledged, as the same chunk sent again would be refused again, for ever."""
        ERRORS.labels("too_large").inc()
        log.error(
            "forward client %s: a message tagged %r skipped: %s", self.peer, tag[:200], detail
        )
        chunk = option.get("chunk")
        if isinstance(chunk, str | bytes):
            self.write({"ack": chunk})

    def option(self, frame: list[Any], at: int) -> dict[str, Any]:
        """The option map, which is the item at `at` when there is one."""
        if not at <= len(frame) <= at + 1:
            raise ProtocolError(f"a message of {len(frame)} items")
        option = frame[at] if len(frame) > at else None
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
            self.write(["PONG", False, "shared_key mismatch", "", ""])
            self.cut("auth", "shared key mismatch")
            return
        own = server.hostname.encode()
        proof = hashlib.sha512(salt + own + nonce + key).hexdigest()
        self.write(["PONG", True, "", server.hostname, proof])
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

    def deliver(self, message: Message, values: list[bytes]) -> None:
        server = self.server
        size = sum(map(len, values))
        loop = server.loop
        EVENTS.inc(len(values))

        def done(ok: bool) -> None:
            # The stopped listener has nobody to answer.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.settled, message, size, ok)

        self.in_flight += size
        message.outstanding += 1
        server.pending += 1
        if message.fallback is not None:
            METRICS.topic_fallbacks.labels(message.fallback).inc(len(values))
        server.handoff.submit(Batch(message.key, values, done, topic=message.topic))

    def settled(self, message: Message, size: int, ok: bool) -> None:
        self.in_flight -= size
        message.outstanding -= 1
        self.server.pending -= 1
        self.charge()
        if self.closed:
            return
        if not ok:
            # The client sends unacknowledged chunks again once the connection is gone.
            self.cut("delivery", "the sink failed to deliver its events")
            return
        if message.outstanding == 0 and message.batches is None:
            self.answer(message)
        if self.paused and self.in_flight <= IN_FLIGHT_BYTES // 2:
            self.paused = False
            self.update()
            self.pump()

    def answer(self, message: Message) -> None:
        """Every record of the message is delivered: the chunk, if any, is acknowledged."""
        if message.chunk is not None:
            self.write({"ack": message.chunk})

    def write(self, message: Any) -> None:
        assert self.transport is not None
        self.transport.write(msgpack.packb(message))

    def cut(self, reason: str, detail: str) -> None:
        ERRORS.labels(reason).inc()
        log.warning("forward client %s cut off: %s", self.peer, detail)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Heartbeat(asyncio.DatagramProtocol):
    """Fluentd's UDP heartbeat: any datagram is answered with one zero byte."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(b"\0", addr)


class ForwardServer:
    """The listener's thread and loop; `start`, then `drain` at a signal, `stop` at the end."""

    def __init__(
        self,
        config: Config,
        sink: Sink,
        enricher: Enricher | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.host = config.forward_host if host is None else host
        self.port = config.forward_port if port is None else port
        self.sink = sink
        self.hostname = config.node_name
        self.shared_key = config.forward_shared_key
        self.max_frame_bytes = config.forward_max_frame_bytes
        self.max_connections = config.forward_max_connections
        self.idle_timeout = config.forward_idle_timeout
        self.object_path = config.forward_object
        # What the producer takes, also with the stdout and file sinks: records are the same.
        self.max_record_bytes = min(config.max_record_bytes, largest_record(config.kafka))
        self.meta: dict[str, Any] = {"host.name": config.node_name, "input.type": "forward"}
        self.topics = Topics(config.topic, config.topic_fallback, config.node_name)
        self.peers = PeerPods(enricher) if enricher is not None else None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="forward", daemon=True)
        self.handoff = Handoff(sink, self.loop)
        self.connections: set[Connection] = set()
        self.budget = Budget(config.memory_limit) if budget is None else budget
        self.hungry: deque[Connection] = deque()
        """Connections not read while the budget is exhausted, in the order they stopped."""
        self.finisher: Connection | None = None
        """The one connection read on while the budget is exhausted, until the message it is
        in the middle of is received and handed on: when unfinished messages hold all of
        the budget, nothing else would ever give memory back. It passes the budget by at
        most one message and IN_FLIGHT_BYTES."""
        self.feeding = False
        self.pending = 0
        """Batches handed to the sink whose outcome the loop has not seen yet."""
        self.draining = False
        self.server: asyncio.Server | None = None
        self.heartbeat: asyncio.DatagramTransport | None = None

    def start(self) -> None:
        """Listens (raises OSError when it cannot) and serves from the listener's thread."""
        self.thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.open(), self.loop).result()
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()
            raise

    async def open(self) -> None:
        self.server = await self.loop.create_server(
            lambda: Connection(self), self.host or None, self.port, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]
        try:
            self.heartbeat, _ = await self.loop.create_datagram_endpoint(
                Heartbeat, local_addr=(self.host or "0.0.0.0", self.port)
            )
        except OSError as exc:
            log.warning("forward: no UDP heartbeat on port %d: %s", self.port, exc)
        if self.idle_timeout:
            self.loop.call_later(SWEEP_SECONDS, self.sweep)
        log.info("forward protocol listening on %s:%d", self.host or "*", self.port)

    def sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.connections):
            if not conn.closed and conn.in_flight == 0 and now - conn.last > self.idle_timeout:
                log.info("forward client %s silent for %.0f s: closed", conn.peer, now - conn.last)
                conn.close()
        self.loop.call_later(SWEEP_SECONDS, self.sweep)

    def feed_soon(self) -> None:
        if not self.feeding:
            self.feeding = True
            self.loop.call_later(FEED_SECONDS, self.feed)

    def feed(self) -> None:
        """Connections paused for the budget read again as it has room: as many as one read
        each fits in, oldest first, so the budget is passed by at most one read."""
        self.feeding = False
        budget = self.budget
        resumed = 0
        while self.hungry and budget.room() > resumed * READ_BYTES:
            conn = self.hungry.popleft()
            conn.starved = False
            if not conn.closed:
                resumed += 1
                conn.update()
                conn.pump()
        if self.hungry and budget.exhausted() and self.finisher is None:
            unfinished = [c for c in self.hungry if not c.closed and c.unfinished()]
            if unfinished:
                conn = max(unfinished, key=lambda c: c.charged)
                self.hungry.remove(conn)
                conn.starved = False
                self.finisher = conn
                conn.update()
                conn.pump()
        if self.hungry:
            self.feed_soon()

    def drain(self) -> None:
        """Takes nothing more: no new connection, no more reading. Safe from a signal handler."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.pause_all)

    def pause_all(self) -> None:
        self.draining = True
        if self.server is not None:
            self.server.close()
        if self.heartbeat is not None:
            self.heartbeat.close()
        for conn in self.connections:
            conn.update()

    def stop(self, timeout: float) -> None:
        """Answers what was delivered, then closes everything.

        Called once the agent's loop is over: nothing else polls the sink any more, so this
        thread serves the deliveries of what is still in flight, for up to `timeout` s.
        """
        if not self.thread.is_alive():
            return
        self.drain()
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self.sink.poll(0.05)
        if self.pending:
            log.warning("forward: %d batches undelivered at stop, not acknowledged", self.pending)
        with contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(self.close_all(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    async def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()
        # Closing transports write out what they hold (acks) before they go.
        deadline = self.loop.time() + 2
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
