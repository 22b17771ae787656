"""What the indexer makes of each bulk reply, through the real client, against a local HTTP
stand-in for Elasticsearch.

A stand-in because a real node does not give these replies on cue: a 200 whose body
accounts for fewer documents than were sent, or is no bulk reply at all (an empty body, a
proxy's HTML page), comes from what stands between us and the node; a per-item 403
cluster_block_exception needs a write-blocked index. Kafka is replaced by a consumer that
records commits and a producer that records dead letters: what is checked is which
documents were sent again, what was committed, and what was dead-lettered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from confluent_kafka import Message, TopicPartition

from pipeline import indexer
from pipeline.config import parse
from pipeline.indexer import Indexer, client

JSON = "application/json"
PARTITION = ("logs", 0)
STAMP = "2026-11-27T02:00:00.000000Z"

Reply = tuple[int, str, bytes]
"""(status, content type, body)."""


def created(ids: list[str]) -> Reply:
    """The node's reply when every document was created, as the indexer's filter_path
    leaves it."""
    items = [{"create": {"status": 201}} for _ in ids]
    return 200, JSON, orjson.dumps({"errors": False, "items": items})


def items(*results: dict[str, Any]) -> Reply:
    return 200, JSON, orjson.dumps({"errors": True, "items": [{"create": r} for r in results]})


@dataclass
class StandIn:
    url: str = ""
    replies: list[Reply] = field(default_factory=list)
    """The next bulk replies, in order; then every document is created."""
    bulks: list[list[str]] = field(default_factory=list)
    """The `_id`s of each bulk request, in the order they came."""


@pytest.fixture
def elasticsearch() -> Iterator[StandIn]:
    stand_in = StandIn()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.answer(200, JSON, b'{"version":{"number":"8.19.7"}}')

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ids = [orjson.loads(line)["create"]["_id"] for line in body.splitlines()[::2] if line]
            stand_in.bulks.append(ids)
            self.answer(*(stand_in.replies.pop(0) if stand_in.replies else created(ids)))

        def answer(self, status: int, kind: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Consumer:
    """The consumer the indexer pauses, polls and commits through; no records come."""

    def __init__(self, _config: dict[str, Any]) -> None:
        self.commits: list[dict[tuple[str, int], int]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append({(o.topic, o.partition): o.offset for o in offsets})

    def consume(self, _count: int, _timeout: float) -> list[Message]:
        return []

    def pause(self, _partitions: list[TopicPartition]) -> None:
        pass

    def resume(self, _partitions: list[TopicPartition]) -> None:
        pass


class Producer:
    """The dead-letter topic, acknowledging every letter."""

    def __init__(self, _config: dict[str, Any]) -> None:
        self.letters: list[dict[str, Any]] = []
        self.waiting: list[tuple[bytes, Callable[[None, None], None]]] = []

    def produce(
        self, _topic: str, value: bytes, _key: bytes | None, on_delivery: Callable[..., None]
    ) -> None:
        self.waiting.append((value, on_delivery))

    def flush(self, _timeout: float) -> int:
        for value, on_delivery in self.waiting:
            self.letters.append(orjson.loads(value))
            on_delivery(None, None)
        self.waiting = []
        return 0

    def poll(self, _timeout: float) -> int:
        return 0


@pytest.fixture
def pipeline(elasticsearch: StandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[Indexer]:
    monkeypatch.setattr(indexer, "Consumer", Consumer)
    monkeypatch.setattr(indexer, "Producer", Producer)
    config = parse(
        ["run", "--bootstrap-servers", "127.0.0.1:1", "--elasticsearch-url", elasticsearch.url]
    )
    made = Indexer(config, client(config))
    made.assigned = {PARTITION}
    try:
        yield made
    finally:
        made.sender.shutdown()


def index(pipeline: Indexer, count: int) -> None:
    """Consume `count` records of one partition, send them in one bulk and settle it."""
    records = [
        orjson.dumps({"@timestamp": STAMP, "message": f"line {n}", "event": {"id": f"id-{n}"}})
        for n in range(count)
    ]
    pipeline.add(
        [
            Message(topic=PARTITION[0], partition=PARTITION[1], offset=n, value=v)
            for n, v in enumerate(records)
        ],
        STAMP,
    )
    pipeline.flush()
    pipeline.settle()


def commits(pipeline: Indexer) -> list[dict[tuple[str, int], int]]:
    consumer = pipeline.consumer
    assert isinstance(consumer, Consumer)
    return consumer.commits


def letters(pipeline: Indexer) -> list[dict[str, Any]]:
    producer = pipeline.producer
    assert isinstance(producer, Producer)
    return producer.letters


ALL = ["id-0", "id-1", "id-2"]


def test_a_clean_reply_commits_the_bulk_at_once(elasticsearch: StandIn, pipeline: Indexer) -> None:
    index(pipeline, 3)
    assert elasticsearch.bulks == [ALL]
    assert commits(pipeline) == [{PARTITION: 3}]


@pytest.mark.parametrize(
    "reply",
    [
        items({"status": 429}),
        items({"status": 201}, {"status": 201}, {"status": 201}, {"status": 201}),
        (200, JSON, b'{"errors":true}'),
        (200, JSON, b"{}"),
        (200, JSON, b'{"errors":"false"}'),
        (200, JSON, b""),
        (200, "text/html", b"<html>down for maintenance</html>"),
        (200, JSON, b"[]"),
        (200, JSON, b'{"errors":true,"items":[1,2,3]}'),
        (200, JSON, b'{"errors":true,"items":[{},{},{}]}'),
        (200, JSON, b'{"errors":true,"items":[{"create":{"status":"201"}},{},{}]}'),
    ],
    ids=[
        "one item for three documents",
        "four items for three documents",
        "errors without items",
        "empty object",
        "errors not a boolean",
        "empty body",
        "html page",
        "json array",
        "items not objects",
        "items without a result",
        "status not a number",
    ],
)
def test_a_reply_that_does_not_account_for_every_document_is_sent_again(
    elasticsearch: StandIn, pipeline: Indexer, reply: Reply
) -> None:
    """Nothing of the bulk is taken as indexed or refused: the whole bulk is sent again,
    and its offsets are committed only once a reply accounts for every document."""
    elasticsearch.replies = [reply]
    index(pipeline, 3)
    assert elasticsearch.bulks == [ALL, ALL]
    assert commits(pipeline) == [{PARTITION: 3}]
    assert letters(pipeline) == []


@pytest.mark.parametrize(
    "refusal",
    [
        {
            "status": 403,
            "error": {
                "type": "cluster_block_exception",
                "reason": "index [logs] blocked by: [FORBIDDEN/8/index write (api)];",
            },
        },
        {
            "status": 401,
            "error": {"type": "security_exception", "reason": "unable to authenticate"},
        },
    ],
)
def test_documents_refused_for_want_of_rights_are_sent_again_not_dead_lettered(
    elasticsearch: StandIn, pipeline: Indexer, refusal: dict[str, Any]
) -> None:
    """A write block or missing rights is the cluster's state, which an operator mends,
    not the documents' fault."""
    elasticsearch.replies = [items({"status": 201}, refusal, {"status": 201})]
    index(pipeline, 3)
    assert elasticsearch.bulks == [ALL, ["id-1"]]
    assert commits(pipeline) == [{PARTITION: 3}]
    assert letters(pipeline) == []


def test_documents_refused_for_their_content_are_dead_lettered(
    elasticsearch: StandIn, pipeline: Indexer
) -> None:
    elasticsearch.replies = [
        items(
            {"status": 201},
            {"status": 400, "error": {"type": "document_parsing_exception", "reason": "x"}},
            {"status": 404, "error": {"type": "index_not_found_exception", "reason": "y"}},
        )
    ]
    index(pipeline, 3)
    assert elasticsearch.bulks == [ALL]
    assert commits(pipeline) == [{PARTITION: 3}]
    assert [(letter["offset"], letter["error"]) for letter in letters(pipeline)] == [
        (1, "document_parsing_exception: x"),
        (2, "index_not_found_exception: y"),
    ]
