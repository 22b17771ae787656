"""What the pipeline makes of bulk replies a node does not give on cue, against the real
Kafka and the real Elasticsearch behind the test proxy (tests/integration/es_proxy.py).

A 200 whose body accounts for fewer documents than were sent, or is no bulk reply at all
(an empty body, a proxy's HTML page), comes from what stands between us and the node: the
proxy gives it in place of the node's reply, the node having indexed the request. A
per-item 401 or 403 (missing rights, a write-blocked index) and a per-item 404 are put by
the proxy in place of chosen documents, which it keeps from the node.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from harness.collector_run import new_topic
from harness.pipeline_run import ids, produce, record, start_pipeline, wait_for_commits
from harness.wait import until
from pipeline.config import parse
from pipeline.indexer import Indexer, client
from pipeline.readiness import Readiness
from tests.integration.es_proxy import proxy
from tests.integration.test_pipeline import dead_letters, stop
from tests.integration.test_pipeline_busy_items import committed

JSON = "application/json"


def items(*results: dict[str, Any]) -> tuple[int, bytes, str]:
    return 200, orjson.dumps({"errors": True, "items": [{"create": r} for r in results]}), JSON


UNACCOUNTED = [
    items({"status": 429}),
    items({"status": 201}, {"status": 201}, {"status": 201}, {"status": 201}),
    (200, b'{"errors":true}', JSON),
    (200, b"{}", JSON),
    (200, b'{"errors":"false"}', JSON),
    (200, b"", JSON),
    (200, b"<html>down for maintenance</html>", "text/html"),
    (200, b"[]", JSON),
    (200, b'{"errors":true,"items":[1,2,3]}', JSON),
    (200, b'{"errors":true,"items":[{},{},{}]}', JSON),
    (200, b'{"errors":true,"items":[{"create":{"status":"201"}},{},{}]}', JSON),
]
"""One item for three documents, four for three, errors without items, an empty object,
errors not a boolean, an empty body, an HTML page, a JSON array, items that are not
objects, items without a result, a status that is not a number."""


def letters_written(bootstrap: str, topic: str) -> int:
    """Letters in the topic's dead-letter topic (0 when it was never made)."""
    name = f"{topic}.dlq"
    found = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics
    if name not in found:
        return 0
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "letters-written"})
    try:
        partitions = found[name].partitions
        return sum(
            probe.get_watermark_offsets(TopicPartition(name, p), timeout=30)[1] for p in partitions
        )
    finally:
        probe.close()


def test_replies_that_do_not_account_for_every_document_send_the_bulk_again(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    """Nothing of such a bulk is taken as indexed or refused: it is sent again whole, each
    document is in the index once, nothing is dead-lettered, and the offsets are committed
    once a reply accounts for every document."""
    topic = new_topic(kafka_bootstrap, partitions=1)
    total = 600
    with proxy(elasticsearch_url, lambda _id, _before: False) as (url, state):
        state.replies = list(UNACCOUNTED)
        pipeline = start_pipeline(tmp_path, kafka_bootstrap, url, topic, prefix)
        try:
            produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(total)])
            assert wait_for_commits(kafka_bootstrap, topic, timeout=120)
        finally:
            stop(pipeline)
    assert state.replies == []
    for replaced in state.replaced:
        later = {i for bulk in state.bulk_ids[state.bulk_ids.index(replaced) + 1 :] for i in bulk}
        assert set(replaced) <= later, "a bulk answered unaccounted was sent again"
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(total))
    assert letters_written(kafka_bootstrap, topic) == 0


def test_documents_refused_for_want_of_rights_are_sent_again_not_dead_lettered(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    """A write block or missing rights is the cluster's state, which an operator mends, not
    the documents' fault: what was refused so is indexed once the cluster takes it."""
    topic = new_topic(kafka_bootstrap, partitions=1)
    total = 300
    blocked = {f"{prefix}-{n}" for n in range(0, total, 10)}
    forbidden = {f"{prefix}-{n}" for n in range(5, total, 10)}
    block = {
        "status": 403,
        "error": {
            "type": "cluster_block_exception",
            "reason": "index [logs] blocked by: [FORBIDDEN/8/index write (api)];",
        },
    }
    unauthorized = {
        "status": 401,
        "error": {"type": "security_exception", "reason": "unable to authenticate"},
    }

    def refuse(doc_id: str, before: int) -> bool:
        return doc_id in blocked | forbidden and before < 2

    with proxy(elasticsearch_url, refuse) as (url, state):
        state.refusal = block
        pipeline = start_pipeline(tmp_path, kafka_bootstrap, url, topic, prefix)
        try:
            produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(total // 2)])
            assert wait_for_commits(kafka_bootstrap, topic, timeout=120)
            state.refusal = unauthorized
            produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(total // 2, total)])
            assert wait_for_commits(kafka_bootstrap, topic, timeout=120)
        finally:
            stop(pipeline)
    assert set(state.refused) == blocked | forbidden
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(total))
    assert letters_written(kafka_bootstrap, topic) == 0


def test_a_document_whose_index_is_missing_is_dead_lettered_with_the_reason(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    """As Logstash's dead-letter queue takes a 404: the index was deleted or may not be
    created, and a document sent again for ever would hold its partition's commits."""
    topic = new_topic(kafka_bootstrap, partitions=1)
    missing = f"{prefix}-7"
    with proxy(elasticsearch_url, lambda doc_id, _before: doc_id == missing) as (url, state):
        state.refusal = {
            "status": 404,
            "error": {"type": "index_not_found_exception", "reason": "no such index [x]"},
        }
        pipeline = start_pipeline(tmp_path, kafka_bootstrap, url, topic, prefix)
        try:
            produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(20)])
            assert wait_for_commits(kafka_bootstrap, topic, timeout=120)
        finally:
            stop(pipeline)
    (letter,) = dead_letters(kafka_bootstrap, topic, 1)
    assert letter["offset"] == 7
    assert letter["error"] == "index_not_found_exception: no such index [x]"
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(20) if n != 7)


def test_documents_for_a_closed_index_wait_until_it_is_opened(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    """A closed index is the cluster's state, as a write block is: the node refuses its
    documents with index_closed_exception (400), which dead-lettered them, leaving the index
    without them once an operator opened it again."""
    topic = new_topic(kafka_bootstrap, partitions=1)
    index = f"{prefix}-shop-2026.11.27"
    es.indices.create(index=index)
    es.indices.close(index=index)
    pipeline = start_pipeline(tmp_path, kafka_bootstrap, elasticsearch_url, topic, prefix)
    try:
        produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(10)])
        others = {f"{prefix}-{n}" for n in range(10) if n % 3}
        until(lambda: set(ids(es, prefix)) == others, 120, "the other indices' documents")
        # Record 0 is for the closed index: nothing is committed past it.
        assert committed(kafka_bootstrap, topic) < 1
        es.indices.open(index=index)
        assert wait_for_commits(kafka_bootstrap, topic, timeout=120)
    finally:
        stop(pipeline)
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(10))
    assert letters_written(kafka_bootstrap, topic) == 0


def test_the_loop_is_alive_while_a_slow_node_answers(
    kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    """Waiting for a bulk's answer is no stalled loop: the request's timeout (60 s) is past
    the liveness bound (30 s), and the liveness probe failed while a slow node answered,
    which had the pod restarted again and again. Here the bound is 1 s and the node takes
    several."""
    topic = new_topic(kafka_bootstrap, partitions=1)
    # Small bulks, many of them: the loop waits for answers once 2 x bulks_in_flight are out.
    produce(kafka_bootstrap, topic, [record(n, prefix) for n in range(2000)])
    with proxy(elasticsearch_url, lambda _id, _before: False) as (url, state):
        state.held.clear()
        config = parse(
            ["run", "--bootstrap-servers", kafka_bootstrap, "--elasticsearch-url", url,
             "--topic", topic, "--group", f"group-{topic}", "--dead-letter-topic",
             f"{topic}.dlq", "--index", prefix + "-{kubernetes.namespace}-{@timestamp:%Y.%m.%d}",
             "--bulk-bytes", "20KB"]
        )  # fmt: skip
        health = Readiness(stall_after=1.0)
        indexer = Indexer(config, client(config), health)
        running = threading.Thread(target=indexer.run, daemon=True)
        running.start()
        try:
            until(lambda: state.at_once >= 2, 60, "bulks at the node")
            stalls = 0
            for _ in range(20):
                stalls += not health.alive()
                time.sleep(0.2)
            state.held.set()
            assert wait_for_commits(kafka_bootstrap, topic, timeout=120)
        finally:
            state.held.set()
            indexer.stopping = True
            running.join(60)
    assert stalls == 0
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(2000))


def test_records_without_an_event_id_are_stored_once_when_their_bulk_is_sent_again(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    """Another producer's records, without `event.id`: the node indexed the bulk, the
    reply was lost, the bulk went again. Elasticsearch made a new id at each send (20
    documents for 10 records); the record's place in Kafka is its id now."""
    topic = new_topic(kafka_bootstrap, partitions=1)
    records = [record(n, prefix) for n in range(10)]
    for r in records:
        del r["event"]
    with proxy(elasticsearch_url, lambda _id, _before: False) as (url, state):
        state.replies = [(200, b"", JSON)]
        pipeline = start_pipeline(tmp_path, kafka_bootstrap, url, topic, prefix)
        try:
            produce(kafka_bootstrap, topic, records)
            assert wait_for_commits(kafka_bootstrap, topic, timeout=120)
        finally:
            stop(pipeline)
    assert state.replies == []
    assert sorted(ids(es, prefix)) == sorted(f"kafka:{topic}:0:{n}" for n in range(10))
