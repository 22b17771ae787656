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
import socket
import threading
import time
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import msgpack
from prometheus_client import Counter, Gauge

from collector.budget import Budget
from collector.config import Config
from collector.encode import Unencodable
from collector.forward_delivery import Delivery, Handoff
from collector.forward_framing import ERRORS, Framing, ProtocolError
from collector.route import Topics
from collector.sink import Sink, largest_record

if TYPE_CHECKING:
    # The kubernetes client is imported only where enrichment is configured.
    from collector.enrich import Enricher, PodInfo

log = logging.getLogger("collector.forward")

CONNECTIONS = Gauge("logferry_collector_forward_connections", "Open forward protocol connections")
BYTES = Counter("logferry_collector_forward_bytes", "Bytes received by the forward listener")
READ_BYTES = 256 * 1024
"""The most one read of a socket brings (asyncio's): the budget's overshoot per connection."""
ACK_PAUSES = Counter(
    "logferry_collector_forward_unread_ack_pauses",
    "Times a forward connection was not read because its client left acks unread past "
    "the transport's high-water mark",
)
SWEEP_SECONDS = 1.0
FEED_SECONDS = 0.02
"""How often connections paused for the budget look for room again."""


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
        self.framing = Framing(server, self.write)
        self.delivery = Delivery(self)
        self.closed = False
        self.last = 0.0
        self.unread_acks = False
        """Not read while replies wait past the transport's high-water mark: a client that
        reads no acks would otherwise have them held here without bound."""

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
                    if server.finisher is self:
                        # Its message is handed on: the budget bounds it as the others again,
                        # else it read on past the budget up to IN_FLIGHT_BYTES.
                        server.finisher = None
                        if delivery.blocked():
                            return
                message = self.framing.next_message()
                if message is None:
                    break
                delivery.message = message
        except msgpack.BufferFull:
            self.cut("too_large", f"a message is over forward_max_frame_bytes={limit}")
        except ProtocolError as exc:
            self.cut(exc.reason, str(exc))
        except Unencodable as exc:
            self.cut("malformed", str(exc))
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
        return not (
            self.closed
            or delivery.paused
            or delivery.starved
            or self.unread_acks
            or self.server.draining
        )

    def pause_writing(self) -> None:
        ACK_PAUSES.inc()
        self.unread_acks = True
        self.update()

    def resume_writing(self) -> None:
        self.unread_acks = False
        self.update()
        if not self.closed:
            self.pump()

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
            if not conn.reading():
                # Not read by the listener's choice: the client may be sending all along,
                # and closing it would lose what its socket holds.
                conn.last = now
                continue
            idle = now - conn.last > self.idle_timeout
            if not conn.closed and conn.delivery.in_flight == 0 and idle:
                ERRORS.labels("idle").inc()
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
