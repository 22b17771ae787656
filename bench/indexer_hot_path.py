"""The indexer's own work per record, without Kafka or Elasticsearch: a fixed set of
records through `Indexer.add` (document building, the batch), `flush` (the bulk body, the
offsets' ticket) and `settle` (the reply, the ledger), against an Elasticsearch stand-in
that answers every bulk `errors: false` as the node's filtered reply does. What the
process costs beyond this is librdkafka's fetching and the HTTP client.

    PYTHONPATH=. .venv/bin/python bench/indexer_hot_path.py --records 20000 --repeat 5

prints CPU microseconds per record (process time, the best of `--repeat` passes).
`--instructions` counts instructions instead, which a busy machine does not disturb: one
pass under valgrind's callgrind, counted only inside the pass (the `min()` over the
passes), divided by the records. The bulk requests are sent from the indexer's sender
thread, outside that count: a few per run, their cost is not per record.

The records are `--file` (one per line; `bench/indexer_throughput.py`'s node mix with pod
metadata when written by `--write`), else made here from that mix.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

from confluent_kafka import Message

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.indexer_throughput import realistic  # noqa: E402
from pipeline.config import parse  # noqa: E402
from pipeline.indexer import CONSUME_BATCH, Indexer, client  # noqa: E402

PARTITIONS = 6


class Reply(dict[str, Any]):
    @property
    def body(self) -> dict[str, Any]:
        return self


class Node:
    """Answers a bulk as the node does when every document was created, read through the
    client's response serializer. One item stands for all: the serializer reads no further
    than `errors` when it is false, and counting the body's documents here would cost the
    measure a search through every record."""

    def __init__(self, indexer_es: Any) -> None:
        serializer = indexer_es.transport.serializers.get_serializer("application/json")
        self.loads = serializer.loads

    def bulk(self, operations: bytes, filter_path: list[str]) -> Reply:
        return Reply(self.loads(b'{"errors":false,"items":[{"create":{"status":201}}]}'))


def messages(values: list[bytes]) -> list[Message]:
    stamp = int(time.time() * 1000)
    return [
        Message(
            topic="bench",
            partition=n % PARTITIONS,
            offset=n // PARTITIONS,
            value=value,
            timestamp=(1, stamp),
        )
        for n, value in enumerate(values)
    ]


def one_pass(indexer: Indexer, consumed: list[Message]) -> float:
    """CPU seconds to take every message through the indexer, in the batches consume() gives."""
    started = time.process_time()
    for at in range(0, len(consumed), CONSUME_BATCH):
        indexer.add(consumed[at : at + CONSUME_BATCH], "2026-12-01T04:00:00.000000Z")
        while indexer.batch_bytes >= indexer.config.bulk_bytes:
            indexer.flush()
    while indexer.pending():
        indexer.flush()
    while indexer.in_flight:
        indexer.settle()
    return time.process_time() - started


def instructions(records: int, file: Path | None) -> float:
    """Instructions per record of one pass, counted by callgrind."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "callgrind.out"
        subprocess.run(
            [
                "valgrind", "--tool=callgrind", "--toggle-collect=builtin_min",
                f"--callgrind-out-file={out}", sys.executable, __file__,
                "--records", str(records), "--repeat", "1",
                *(["--file", str(file)] if file else []),
            ],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if totals is None:
        raise SystemExit("callgrind wrote no totals")
    return int(totals.group(1)) / records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--file", type=Path, help="records, one per line")
    parser.add_argument("--write", action="store_true", help="make --file from the node mix")
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    args = parser.parse_args()
    if args.instructions:
        print(f"{instructions(args.records, args.file):,.0f} instructions per record")
        return
    if args.file and args.write:
        args.file.write_bytes(b"\n".join(realistic(args.records, 0)) + b"\n")
    if args.file:
        with args.file.open("rb") as lines:
            values = [line.rstrip(b"\n") for line in islice(lines, args.records)]
    else:
        values = realistic(args.records, 0)
    config = parse(
        ["run", "--bootstrap-servers", "127.0.0.1:1", "--elasticsearch-url", "http://127.0.0.1:1"]
    )
    es = client(config)
    indexer = Indexer(config, Node(es))  # type: ignore[arg-type]
    consumed = messages(values)
    best = min(one_pass(indexer, consumed) for _ in range(args.repeat))
    size = sum(map(len, values)) / len(values)
    print(
        f"{len(values)} records of {size:.0f} B on average: {best / len(values) * 1e6:.2f} CPU-us "
        f"per record (the best of {args.repeat} passes)"
    )


if __name__ == "__main__":
    main()
