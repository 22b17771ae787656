"""One pipeline subscribed by pattern to several topics: each committed to its end, nothing
lost or doubled across rebalances, and a topic made after it started is read too."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from elasticsearch import Elasticsearch

from harness.collector_run import new_topic
from harness.pipeline_run import (
    ids,
    produce,
    record,
    start_pipeline,
    wait_for_commits,
    wait_for_count,
)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(60)


def test_a_pattern_over_two_topics_commits_each_to_its_end_across_rebalances(
    tmp_path: Path, kafka_bootstrap: str, elasticsearch_url: str, es: Elasticsearch, prefix: str
) -> None:
    base = f"route{uuid.uuid4().hex[:10]}"
    first = new_topic(kafka_bootstrap, 3, name=f"{base}.shop")
    second = new_topic(kafka_bootstrap, 3, name=f"{base}.bank")
    group = f"group-{base}"
    # Partition n of one topic beside partition n of the other: offsets kept per partition
    # number alone would commit one topic's offsets to the other. Small bulks and a short
    # session, so rebalances happen mid-batch.
    flags = (
        *("--group", group, "--dead-letter-topic", f"{base}-dlq", "--metadata-refresh", "1s"),
        *("--bulk-bytes", "200000", "--kafka", "session.timeout.ms=6000"),
    )

    def member() -> subprocess.Popen[bytes]:
        return start_pipeline(
            tmp_path, kafka_bootstrap, elasticsearch_url, f"^{base}\\..*", prefix, *flags
        )

    total = 30_000
    records = [record(n, prefix) for n in range(total)]
    members = [member(), member()]
    try:
        produce(kafka_bootstrap, first, records[: total // 3])
        produce(kafka_bootstrap, second, records[total // 3 : total // 2])
        members.append(member())
        produce(kafka_bootstrap, first, records[total // 2 : 2 * total // 3])
        members[0].kill()
        members[0].wait()
        # Made after the members subscribed: read once the topic list is looked at again.
        third = new_topic(kafka_bootstrap, 2, name=f"{base}.web")
        produce(kafka_bootstrap, second, records[2 * total // 3 : 5 * total // 6])
        produce(kafka_bootstrap, third, records[5 * total // 6 :])
        assert wait_for_count(es, prefix, total, timeout=240) == total
        for topic in (first, second, third):
            assert wait_for_commits(kafka_bootstrap, topic, timeout=120, group=group), topic
    finally:
        for m in members:
            stop(m)
    assert sorted(ids(es, prefix)) == sorted(f"{prefix}-{n}" for n in range(total))
