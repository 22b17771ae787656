"""What one forward connection's records do once read: delivered, then acknowledged.

A message's records go to the sink a batch at a time (through the Handoff); its
chunk is answered with `{"ack": chunk}` only once the sink delivered every batch, and a batch
the sink failed for good cuts the connection unanswered, so the client sends the chunk
again. Backpressure: a connection is not read while its records in flight are past
IN_FLIGHT_BYTES, nor while the memory budget is exhausted; what it holds (a message being
received, the message being read, records in flight) is charged to the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Counter

from collector.forward_framing import Message
from collector.metrics import METRICS
from collector.sink import Done, Sink

if TYPE_CHECKING:
    from collector.forward import Connection

log = logging.getLogger("collector.forward")

EVENTS = Counter("logferry_collector_forward_events", "Events received by the forward listener")

IN_FLIGHT_BYTES = 8 * 1024 * 1024
"""Records of one connection not yet delivered past which it is not read: backpressure."""
RETRY_SECONDS = 0.01


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


class Delivery:
    """One connection's message being handed on, its records in flight, and its bounds."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.server = conn.server
        self.message: Message | None = None
        """The message whose records are being handed to the sink; the next waits for it."""
        self.in_flight = 0
        """Bytes of records handed to the sink and not yet delivered."""
        self.charged = 0
        """Bytes this connection holds in the budget."""
        self.paused = False
        """Not read while its records in flight are past IN_FLIGHT_BYTES."""
        self.starved = False
        """Not read while the memory budget is exhausted."""

    def step(self) -> bool:
        """Hands the message's next batch to the sink: False once all were (the message is
        then done with, and answered if nothing of it is still in flight)."""
        message = self.message
        assert message is not None
        values = None if message.batches is None else next(message.batches, None)
        if values is not None:
            self.deliver(message, values)
            return True
        message.batches = None
        self.message = None
        if message.outstanding == 0:
            self.answer(message)
        return False

    def blocked(self) -> bool:
        """Whether the message being read must wait for deliveries; reading stops meanwhile."""
        self.charge()
        if self.in_flight > IN_FLIGHT_BYTES:
            self.paused = True
            self.conn.update()
            return True
        if self.server.budget.exhausted() and self.server.finisher is not self.conn:
            self.starve()
            return True
        return False

    def charge(self) -> None:
        """Tells the budget what this connection holds: bytes of an unfinished message, the
        message being read, records in flight."""
        held = self.conn.framing.buffered() + self.in_flight
        if self.message is not None:
            held += self.message.size
        if held != self.charged:
            self.server.budget.take(held - self.charged)
            self.charged = held

    def starve(self) -> None:
        if not self.starved:
            self.starved = True
            self.server.budget.paused("forward")
            self.server.hungry.append(self.conn)
            self.server.feed_soon()
        self.conn.update()

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
        conn = self.conn
        if conn.closed:
            return
        if not ok:
            # The client sends unacknowledged chunks again once the connection is gone.
            conn.cut("delivery", "the sink failed to deliver its events")
            return
        if message.outstanding == 0 and message.batches is None:
            self.answer(message)
        if self.paused and self.in_flight <= IN_FLIGHT_BYTES // 2:
            self.paused = False
            conn.update()
            conn.pump()

    def answer(self, message: Message) -> None:
        """Every record of the message is delivered: the chunk, if any, is acknowledged."""
        if message.chunk is not None:
            self.conn.write({"ack": message.chunk})
