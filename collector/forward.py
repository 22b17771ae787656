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
import logging
import math
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import msgpack
import orjson
from msgpack import ExtType, Timestamp
from prometheus_client import Counter, Gauge

from collector.budget import Budget
from collector.config import Config
from collector.encode import nest
from collector.forward_delivery import Delivery, Handoff
from collector.forward_framing import ERRORS, STEP_BYTES, Framing, ProtocolError
from collector.metrics import METRICS
from collector.sink import Sink, largest_record

if TYPE_CHECKING:
    # The kubernetes client is imported only where enrichment is configured.
    from collector.enrich import Enricher, PodInfo

log = logging.getLogger("collector.forward")

CONNECTIONS = Gauge("logferry_collector_forward_connections", "Open forward protocol connections")
BYTES = Counter("logferry_collector_forward_bytes", "Bytes received by the forward listener")
READ_BYTES = 256 * 1024
"""The most one read of a socket brings (asyncio's): the budget's overshoot per connection."""
CUT_TAG_CHARS = 1024
"""A cut record keeps at most this much of its tag: a tag alone may not overflow a record."""
SWEEP_SECONDS = 1.0
FEED_SECONDS = 0.02
"""How often connections paused for the budget look for room again."""


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


class Connection(asyncio.Protocol):
    """One client: its socket, read while its bounds allow (collector.forward_delivery) and
    turned into messages (collector.forward_framing)."""

    def __init__(self, server: ForwardServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        encoder = RecordEncoder(server.object_path, server.max_record_bytes, server.meta)
        self.framing = Framing(server, encoder, self.write)
        self.delivery = Delivery(self)
        self.closed = False
        self.last = 0.0

    @property
    def peer(self) -> str:
        return self.framing.peer

    @property
    def paused(self) -> bool:
        return self.delivery.paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            address = self.framing.address = str(peer[0]).removeprefix("::ffff:")
            self.framing.peer = f"{address}:{peer[1]}"
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
            self.delivery.starve()
        self.update()
        self.framing.hello()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self.server
        server.connections.discard(self)
        CONNECTIONS.set(len(server.connections))
        if server.finisher is self:
            server.finisher = None
        # What it buffered goes with it; records in flight stay charged until they settle.
        self.delivery.message = None
        self.framing.drop()
        self.delivery.charge()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last = self.server.loop.time()
        BYTES.inc(len(data))
        try:
            self.framing.feed(data)
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
        delivery = self.delivery
        limit = server.max_frame_bytes
        try:
            while not self.closed:
                if delivery.message is not None:
                    if delivery.blocked():
                        return
                    if delivery.step():
                        continue
                message = self.framing.next_message()
                if message is None:
                    break
                delivery.message = message
        except msgpack.BufferFull:
            self.cut("too_large", f"a message is over forward_max_frame_bytes={limit}")
        except ProtocolError as exc:
            self.cut(exc.reason, str(exc))
        except (ValueError, TypeError, OverflowError, msgpack.UnpackException, zlib.error) as exc:
            self.cut("malformed", f"not msgpack of the forward protocol: {exc!r}")
        delivery.charge()
        if self.closed:
            return
        if server.finisher is self and not self.unfinished():
            server.finisher = None
        if server.budget.exhausted() and server.finisher is not self:
            delivery.starve()

    def unfinished(self) -> bool:
        """In the middle of receiving a message, or of handing its records on."""
        return self.delivery.message is not None or self.framing.receiving()

    def reading(self) -> bool:
        delivery = self.delivery
        return not (self.closed or delivery.paused or delivery.starved or self.server.draining)

    def update(self) -> None:
        """Reads the socket unless a bound or the drain says not to (idempotent)."""
        if self.transport is None or self.closed:
            return
        if self.reading():
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

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
            idle = now - conn.last > self.idle_timeout
            if not conn.closed and conn.delivery.in_flight == 0 and idle:
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
            conn.delivery.starved = False
            if not conn.closed:
                resumed += 1
                conn.update()
                conn.pump()
        if self.hungry and budget.exhausted() and self.finisher is None:
            unfinished = [c for c in self.hungry if not c.closed and c.unfinished()]
            if unfinished:
                conn = max(unfinished, key=lambda c: c.delivery.charged)
                self.hungry.remove(conn)
                conn.delivery.starved = False
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
