"""The dead-letter topic: one letter per record that cannot be indexed, acknowledged before
the record's offset may be committed.

A letter holds the record's text (base64, `record_encoding`, when it is not UTF-8, so that
it can be sent again as it was), its Kafka time, and carries its headers. A letter the
topic refuses as too large is cut to fit: the record's text is shortened and marked as
cut, and when that is not enough its headers are dropped (counted); the reason, the target
index and the record's topic, partition, offset and key stay whole. Any other refusal
(the topic missing, no rights, the broker away) is retried with backoff, without end: the
caller commits nothing meanwhile and reports itself not ready with the reason.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, Message, Producer

from pipeline.metrics import METRICS
from pipeline.readiness import Readiness

TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
SOURCE = "dead-letter topic"


class Letter:
    """A refused record's letter; `limit` bounds its size once the topic refused it whole."""

    __slots__ = ("head", "headers", "key", "limit", "record", "size")

    def __init__(self, message: Message, index: str | None, reason: str) -> None:
        value = message.value() or b""
        self.key: bytes | None = message.key()
        self.headers: list[tuple[str, bytes | None]] = message.headers() or []
        """The record's own headers, as Kafka Connect's dead-letter queue keeps them."""
        self.head: dict[str, Any] = {
            "error": reason,
            "index": index,
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
        }
        kind, stamp = message.timestamp()
        if kind != TIMESTAMP_NOT_AVAILABLE:
            # In the letter, not as the letter's Kafka time: a record read a week late
            # would fall to the dead-letter topic's retention at once.
            self.head["timestamp"] = stamp
        try:
            self.record = value.decode()
        except UnicodeDecodeError:
            # Kept byte for byte, to be sent again: replaced, the text would not be it.
            self.record = base64.b64encode(value).decode()
            self.head["record_encoding"] = "base64"
        self.size = len(value)
        self.limit: int | None = None

    def body(self) -> bytes:
        whole = orjson.dumps({**self.head, "record": self.record})
        if self.limit is None or len(whole) <= self.limit:
            return whole
        # The most bytes of the record whose letter fits: JSON escapes make a byte of the
        # record take one to six in the letter, so the count is searched for, in halves.
        raw = self.record.encode()
        fits, over = 0, len(raw)
        while over - fits > 1:
            middle = (fits + over) // 2
            if len(self.cut(raw, middle)) <= self.limit:
                fits = middle
            else:
                over = middle
        return self.cut(raw, fits)

    def cut(self, raw: bytes, keep: int) -> bytes:
        if "record_encoding" in self.head:
            # Whole base64 quanta: the cut record still decodes, to the record's first bytes.
            keep -= keep % 4
        # "ignore" drops only a character the cut split: the prefix is valid UTF-8.
        text = raw[:keep].decode("utf-8", "ignore")
        return orjson.dumps(
            {**self.head, "record": text, "record_cut": True, "record_bytes": self.size}
        )

    def shrink(self, refused: int) -> bool:
        """The topic refused `refused` bytes as too large: aim at half. With the record cut
        to nothing already, the record's headers are dropped (counted in the letter), and the
        record tried whole again. False when there are none left to drop: only a larger limit
        on the topic can help then."""
        if self.limit is not None and len(self.body()) > self.limit:
            if not self.headers:
                return False
            self.head["headers_dropped"] = len(self.headers)
            self.headers = []
            self.limit = None
            return True
        self.limit = refused // 2
        return True


class DeadLetters:
    def __init__(
        self,
        producer: Producer,
        topic: str,
        health: Readiness,
        idle: Callable[[], None],
        wait: Callable[[float], float],
        stopping: Callable[[], bool],
        stop_grace: float,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.health = health
        self.idle = idle
        """Keeps the consumer in its group while letters are unacknowledged."""
        self.wait = wait
        self.stopping = stopping
        self.stop_grace = stop_grace
        """Seconds a shutdown waits for letters still unacknowledged."""

    def deliver(self, letters: list[Letter]) -> bool:
        """True once every letter is acknowledged; False only when stopping first."""
        todo = letters
        delay = 0.1
        alone = False
        while todo:
            failed = self.attempt(todo, alone)
            if failed is None:
                return False
            again: list[Letter] = []
            blocked: list[tuple[Letter, KafkaError]] = []
            for letter, error in failed:
                if error.code() in TOO_LARGE and alone and letter.shrink(len(letter.body())):
                    again.append(letter)
                elif error.code() in TOO_LARGE and not alone:
                    # Letters sent together share a record batch, which the topic's limit
                    # bounds as a whole: judge each one on its own before cutting it.
                    again.append(letter)
                else:
                    blocked.append((letter, error))
            alone = alone or any(error.code() in TOO_LARGE for _, error in failed)
            if blocked:
                letter, error = blocked[0]
                METRICS.dead_letter_failures.inc(len(blocked))
                if error.code() in TOO_LARGE:
                    why = f"takes no letter of {len(letter.body())} bytes even with the record cut"
                else:
                    why = f"refuses letters: {error.str()}"
                self.health.problem(
                    SOURCE,
                    f"dead-letter topic {self.topic} {why}; not committing, retrying",
                    str(error.code()),
                )
                if self.stopping():
                    return False
                delay = self.wait(delay)
                for letter, _ in blocked:
                    # Perhaps the topic takes more now: cut again only if it still must.
                    letter.limit = None
            todo = again + [letter for letter, _ in blocked]
        self.health.solved(SOURCE)
        METRICS.dead_lettered.inc(len(letters))
        METRICS.dead_letters_cut.inc(sum(letter.limit is not None for letter in letters))
        return True

    def attempt(self, letters: list[Letter], alone: bool) -> list[tuple[Letter, KafkaError]] | None:
        """Produce the letters (`alone`: each in a request of its own) and wait for every
        answer: the refused ones with their error; None when stopping and they are still
        unanswered after `stop_grace`."""
        if alone:
            failed: list[tuple[Letter, KafkaError]] = []
            for letter in letters:
                answer = self.attempt([letter], False)
                if answer is None:
                    return None
                failed += answer
            return failed
        failed = []
        for letter in letters:
            while True:
                try:
                    self.producer.produce(
                        self.topic,
                        letter.body(),
                        letter.key,
                        headers=letter.headers,
                        on_delivery=functools.partial(answered, failed, letter),
                    )
                    break
                except BufferError:
                    self.producer.poll(0.1)
                except KafkaException as exc:
                    # Refused before sending, e.g. beyond the producer's message.max.bytes.
                    failed.append((letter, exc.args[0]))
                    break
        give_up = None
        while self.producer.flush(0.5):
            self.idle()
            if self.stopping():
                give_up = give_up or time.monotonic() + self.stop_grace
                if time.monotonic() > give_up:
                    return None
        return failed


def answered(
    failed: list[tuple[Letter, KafkaError]],
    letter: Letter,
    error: KafkaError | None,
    _message: Message,
) -> None:
    if error is not None:
        failed.append((letter, error))
