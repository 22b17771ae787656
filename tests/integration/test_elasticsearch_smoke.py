"""The search node the suite uses is a real Elasticsearch: templates, bulk, search, aggregations."""

from __future__ import annotations

import uuid

from elasticsearch import Elasticsearch, helpers

DOCUMENTS = 10_000
NAMESPACES = ("default", "kube-system", "payments", "web")


def test_bulk_indexed_documents_are_counted_exactly(elasticsearch_url: str) -> None:
    es = Elasticsearch(elasticsearch_url, request_timeout=60)
    prefix = f"smoke-{uuid.uuid4().hex[:8]}"
    es.indices.put_index_template(
        name=prefix,
        index_patterns=[f"{prefix}-*"],
        template={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {
                "properties": {
                    "@timestamp": {"type": "date_nanos"},
                    "message": {"type": "text"},
                    "kubernetes": {
                        "properties": {"namespace": {"type": "keyword"}},
                    },
                }
            },
        },
    )
    index = f"{prefix}-logs"
    actions = (
        {
            "_index": index,
            "_id": str(n),
            "@timestamp": f"2026-11-27T02:20:{n % 60:02d}.123456789Z",
            "message": f"line {n} from the smoke test",
            "kubernetes": {"namespace": NAMESPACES[n % len(NAMESPACES)]},
        }
        for n in range(DOCUMENTS)
    )
    indexed, errors = helpers.bulk(es, actions, chunk_size=2000, raise_on_error=False)
    assert (indexed, errors) == (DOCUMENTS, [])
    es.indices.refresh(index=index)

    mapping = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["@timestamp"]["type"] == "date_nanos"
    assert es.count(index=index, query={"match": {"message": "smoke"}})["count"] == DOCUMENTS

    result = es.search(
        index=index,
        size=0,
        aggs={"by_namespace": {"terms": {"field": "kubernetes.namespace", "size": 10}}},
    )
    counts = {b["key"]: b["doc_count"] for b in result["aggregations"]["by_namespace"]["buckets"]}
    assert counts == {ns: DOCUMENTS // len(NAMESPACES) for ns in NAMESPACES}

    es.indices.delete(index=index)
    es.indices.delete_index_template(name=prefix)
    es.close()
