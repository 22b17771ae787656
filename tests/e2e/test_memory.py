"""Peak memory of the collector under what a node throws at it, against --memory-limit.

Forward clients each send one gzip message that inflates to 100 MB while many files end in a
long line still being written; the collector process's peak RSS (VmHWM) stays within
--memory-limit + 64 MiB, and once the lines end every line and event is in Kafka, once.
The `long` variant is the issue's size: 1,000 files ending in a 1 MiB line, two clients.
And with Kafka stopped while the node writes (5 MB/s for 20 s; `long`: 20 MB/s for 30 s)
after a 100 MB line: the same bound, and every line delivered once Kafka is back.
"""

from __future__ import annotations

import signal
import threading
import time
import zlib
from pathlib import Path

import msgpack
import pytest

from harness.collector_run import consume, new_topic, start_collector
from harness.wait import until
from tests.servers import Outage
from tests.unit.logfiles import append, cri_line
from tests.unit.test_forward import Client, free_port

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
LIMIT = 128 * MIB
EVENT_PAD = "p" * 1000
INFLATED = 100 * 1000 * 1000


def gzip_message(client: int) -> tuple[bytes, int]:
    """A gzip member inflating to about 100 MB of [time, {message}] events, and their count."""
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    out: list[bytes] = []
    size = count = 0
    while size < INFLATED:
        events = b"".join(
            msgpack.packb([1764210000, {"message": f"{client}-{count + i:07d} {EVENT_PAD}"}])
            for i in range(1000)
        )
        size += len(events)
        count += 1000
        out.append(compressor.compress(events))
    out.append(compressor.flush())
    return b"".join(out), count


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize(
    ("files", "line_bytes", "clients"),
    [
        pytest.param(100, 600 * 1024, 1, id="100-files"),
        pytest.param(1000, MIB, 2, id="1000-files", marks=pytest.mark.long),
    ],
)
def test_peak_rss_stays_within_the_memory_limit(
    tmp_path: Path, kafka_bootstrap: str, files: int, line_bytes: int, clients: int
) -> None:
    logs = []
    for n in range(files):
        folder = tmp_path / "log" / "pods" / f"mem_pod-{n}_uid{n}" / "app"
        folder.mkdir(parents=True)
        log = folder / "0.log"
        append(log, *(cri_line(f"{n} line {i}") for i in range(20)))
        append(log, cri_line(f"{n} long ")[:-1] + b"z" * line_bytes)
        logs.append(log)
    messages = [gzip_message(c) for c in range(clients)]
    topic = new_topic(kafka_bootstrap)
    port = free_port()
    process = start_collector(
        tmp_path, kafka_bootstrap, topic,
        "--kubernetes", "off", "--memory-limit", str(LIMIT),
        "--forward-port", str(port), "--forward-host", "127.0.0.1",
    )  # fmt: skip
    expected = files * 21 + sum(count for _, count in messages)
    try:
        connected = [until(lambda: connect(port), timeout=30) for _ in messages]
        acks: list[object] = []

        def send(client: Client, body: bytes, chunk: str) -> None:
            client.send("mem", body, {"compressed": "gzip", "chunk": chunk})
            acks.append(client.receive(600))

        senders = [
            threading.Thread(target=send, args=(client, body, f"c{c}"))
            for c, (client, (body, _)) in enumerate(zip(connected, messages, strict=True))
        ]
        for t in senders:
            t.start()
        for t in senders:
            t.join(600)
        assert sorted(acks, key=str) == [{"ack": f"c{c}"} for c in range(clients)]
        for log in logs:
            append(log, b"\n")
        total = 0
        ids: set[str] = set()
        file_lines: set[str] = set()
        long_lines: set[str] = set()
        events: set[str] = set()
        for record in consume(kafka_bootstrap, topic, expected, timeout=900):
            total += 1
            ids.add(record["event"]["id"])
            text = record["message"]
            if " long " in text[:16]:
                n = text.split(" ", 1)[0]
                long_lines.add(n)
                tail = text[len(n) + 6 :]
                assert set(tail) == {"z"}
                assert len(tail) == line_bytes or record["tags"] == ["truncated"]
            elif " line " in text:
                file_lines.add(text)
            else:
                events.add(text.split(" ", 1)[0])
        peak = peak_rss(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0
    print(f"peak RSS {peak / MIB:.0f} MiB with --memory-limit {LIMIT // MIB} MiB")
    assert total == expected, f"{total} records of {expected}"
    assert len(ids) == expected, "some record arrived twice"
    assert len(file_lines) == files * 20
    assert len(long_lines) == files
    assert len(events) == sum(count for _, count in messages)
    assert peak <= LIMIT + 64 * MIB, f"peak RSS {peak / MIB:.0f} MiB"


def connect(port: int) -> Client | None:
    try:
        return Client(port)
    except ConnectionRefusedError:
        return None


@pytest.mark.parametrize(
    ("rate", "seconds"),
    [
        pytest.param(5 * MIB, 20, id="5MB/s-20s"),
        pytest.param(20 * MIB, 30, id="20MB/s-30s", marks=pytest.mark.long),
    ],
)
def test_kafka_away_while_the_node_writes_holds_memory_and_loses_nothing(
    tmp_path: Path, kafka_bootstrap: str, kafka_outage: Outage, rate: int, seconds: int
) -> None:
    """A 100 MB line, then Kafka stopped while the node writes `rate` for `seconds`: reading
    pauses at the budget (the files are the buffer), RSS stays within --memory-limit + 64 MiB,
    and when Kafka is back every line arrives once."""
    logs = []
    for n in range(20):
        folder = tmp_path / "log" / "pods" / f"busy_pod-{n}_uid{n}" / "app"
        folder.mkdir(parents=True)
        logs.append(folder / "0.log")
    append(logs[0], cri_line("huge ")[:-1] + b"h" * (100 * 1000 * 1000) + b"\n")
    topic = new_topic(kafka_bootstrap)
    process = start_collector(
        tmp_path, kafka_bootstrap, topic, "--kubernetes", "off", "--memory-limit", str(LIMIT),
        "--max-record-bytes", "512KiB",
    )  # fmt: skip
    written = 1
    try:
        kafka_outage.stop()
        # Unique lines of about 200 bytes, a tenth of a second's worth at a time.
        pad = "w" * 160
        deadline = time.monotonic() + seconds
        tick = time.monotonic()
        while time.monotonic() < deadline:
            batch = rate // 10 // 200
            for n, log in enumerate(logs):
                part = batch // len(logs)
                append(log, *(cri_line(f"{n}-{written + i:09d} {pad}") for i in range(part)))
                written += part
            tick += 0.1
            time.sleep(max(0.0, tick - time.monotonic()))
        during = peak_rss(process.pid)
        kafka_outage.start()
        ids: set[str] = set()
        huge = total = 0
        for record in consume(kafka_bootstrap, topic, written, timeout=900):
            total += 1
            ids.add(record["event"]["id"])
            huge += record["message"].startswith("huge ")
        peak = peak_rss(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    print(f"peak RSS {during / MIB:.0f} MiB while Kafka was away, {peak / MIB:.0f} MiB in all")
    assert huge == 1
    assert len(ids) == written, f"{len(ids)} distinct records of {written} lines"
    assert total == written, f"{total - written} records arrived twice"
    assert peak <= LIMIT + 64 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
