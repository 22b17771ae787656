"""CPU cost per line of the record processing of issue 20, before it is wired in.

    PYTHONPATH=. .venv/bin/python bench/processing_cost.py [--lines 20000] [--rounds 3]

Times, in CPU microseconds per line (process time, so a busy machine inflates it less than
wall time), each of `structured.parse` (mode auto), `levels.detect`, `Redactor.text` (the
built-in rules), `Redactor.apply` (on what parse gave) and `Redactor.clean` on whole 64 KiB
reads of the same lines as Docker writes them (the check that lets a read skip redaction),
and for scale the cost of encoding a record-sized dict with orjson, the encode stage's own
per-record work.

Lines are never repeated (every round makes new ones): access and Java/Python lines and
non-ASCII text from bench/nodewriter.py's content, JSON lines as zap, pino, logrus and
python-json-logger write them, klog lines and a few secrets; per kind and as a node's mix
(column n-a%: the share of lines holding non-ASCII characters):

    access 42%, JSON app logs 25%, Java/Python with a level 15%, klog 8%,
    non-ASCII text 8% (with the access lines' own, about 10% in all), lines holding a
    secret 2%

Each figure is the median of the rounds; the spread (min..max) follows it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.levels import detect
from collector.redact import Redactor, rules
from collector.structured import parse
from harness.nodewriter import WORDS, Content, docker_json

ASCII_WORDS = [w for w in WORDS if w.isascii()]

MIX = (
    ("access", 0.42),
    ("json", 0.25),
    ("java/python", 0.15),
    ("klog", 0.08),
    ("non-ascii", 0.08),
    ("secret", 0.02),
)


class Lines:
    """Never-repeated lines of each kind."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.content = {
            kind: Content(kind, f"bench/{kind}", self.rng)
            for kind in ("access", "json", "java", "python", "unicode")
        }
        self.seq = 0

    def text(self, kind: str) -> str:
        self.seq += 1
        if kind == "access":
            return self.first("access")
        if kind == "json":
            return self.json()
        if kind == "java/python":
            return self.java_python()
        if kind == "klog":
            return self.klog()
        if kind == "non-ascii":
            return self.non_ascii()
        return self.secret()

    def first(self, kind: str) -> str:
        """The first line of the content's next event (traces are multiline records)."""
        while True:
            lines = self.content[kind].next().lines
            if lines[0] and not lines[0].startswith(("\t", "Traceback", "java.")):
                return lines[0]

    def json(self) -> str:
        """An application's JSON log line, as zap, pino, logrus or python-json-logger write."""
        r = self.rng
        level = r.choice(("debug", "info", "info", "info", "info", "warn", "error"))
        style = r.randrange(4)
        body: dict[str, Any]
        if style == 0:  # zap
            body = {
                "level": level,
                "ts": 1764496800.0 + self.seq / 1000,
                "caller": f"orders/handler.go:{r.randrange(20, 400)}",
                "msg": f"{r.choice(('order placed', 'cart updated', 'payment failed'))}",
                "order_id": self.seq,
                "duration": f"{r.random() * 80:.3f}ms",
            }
        elif style == 1:  # pino
            body = {
                "level": {"debug": 20, "info": 30, "warn": 40, "error": 50}[level],
                "time": 1764496800000 + self.seq,
                "pid": 1,
                "hostname": f"web-{r.randrange(10)}",
                "req": {"id": self.seq, "method": "GET", "url": f"/api/items/{self.seq}"},
                "responseTime": r.randrange(1, 900),
                "msg": "request completed",
            }
        elif style == 2:  # logrus
            body = {
                "level": level,
                "msg": f"processed batch {self.seq} of {r.randrange(10, 99)} items",
                "time": "2026-11-30T10:00:00Z",
                "worker": r.randrange(8),
            }
        else:  # python-json-logger
            body = {
                "asctime": "2026-11-30 10:00:00,123",
                "levelname": level.upper(),
                "name": "app.views",
                "message": f"request {self.seq} handled for user {r.randrange(10**6)}",
                "trace_id": f"{r.getrandbits(64):016x}",
            }
        return orjson.dumps(body).decode()

    def java_python(self) -> str:
        """A logback or Python logging line (bench/nodewriter.py's layouts, ASCII words)."""
        r = self.rng
        level = r.choice(("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"))
        stamp = f"2026-11-30 10:{r.randrange(60):02d}:{r.randrange(60):02d}"
        words = " ".join(r.choice(ASCII_WORDS) for _ in range(r.randrange(2, 8)))
        if r.random() < 0.5:
            return (
                f"{stamp}.{r.randrange(1000):03d} {level} [http-nio-8080-exec-{r.randrange(20)}] "
                f"c.e.shop.OrderService - order {self.seq} {words}"
            )
        return f"{stamp},{r.randrange(1000):03d} {level} app.views: request {self.seq} {words}"

    def klog(self) -> str:
        r = self.rng
        return (
            f"{r.choice('IIIIWE')}1130 10:{r.randrange(60):02d}:{r.randrange(60):02d}."
            f"{r.randrange(10**6):06d}       1 reflector.go:{r.randrange(100, 900)}] "
            f"Watch close - *v1.Pod total {self.seq} items received"
        )

    def non_ascii(self) -> str:
        while True:
            text = self.first("unicode")
            if not text.isascii():
                return text

    def secret(self) -> str:
        token = "".join(self.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(16))
        return self.rng.choice(
            (
                f"GET /api/{self.seq} Authorization: Bearer eyJ{token}abc.{token}",
                f"connecting to db user=app password={token.lower()} seq={self.seq}",
                f'{{"msg":"login {self.seq}","user":"bob","password":"{token}"}}',
                f"using key AKIA{token} for upload {self.seq}",
            )
        )

    def batch(self, kind: str, n: int) -> list[str]:
        if kind != "mix":
            return [self.text(kind) for _ in range(n)]
        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]
        return [self.text(k) for k in self.rng.choices(kinds, weights, k=n)]


def cpu_us(fn: Callable[[Any], object], items: list[Any]) -> float:
    start = time.process_time_ns()
    for item in items:
        fn(item)
    return (time.process_time_ns() - start) / 1000 / len(items)


READ = 64 * 1024
"""Bytes the collector reads from a file at once."""


def read_us(redactor: Redactor, batch: list[str]) -> float:
    """`Redactor.clean` on whole reads of Docker json-file lines, per line."""
    reads: list[bytes] = []
    lines: list[bytes] = []
    size = 0
    for text in batch:
        line = docker_json(text, "stdout", "2026-11-30T10:00:00.123456789Z")
        lines.append(line)
        size += len(line)
        if size >= READ:
            reads.append(b"".join(lines))
            lines, size = [], 0
    reads.append(b"".join(lines))
    return cpu_us(redactor.clean, reads) * len(reads) / len(batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=20000, help="lines per kind and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20)
    args = ap.parse_args()

    lines = Lines(args.seed)
    redactor = Redactor(rules())

    def apply(p: tuple[str, Any]) -> object:
        text, parsed = p
        message = parsed.message if parsed.message is not None else text
        return redactor.apply(message, parsed.original, parsed.fields)

    def encode(text: str) -> bytes:
        return orjson.dumps(
            {
                "@timestamp": "2026-11-30T10:00:00.123456789Z",
                "message": text,
                "stream": "stdout",
                "event": {"id": "f00dfeed-123456"},
                "log": {"file": {"path": "/var/log/pods/x/y/0.log"}, "offset": 123456},
            }
        )

    measures: dict[str, Callable[[list[str]], float]] = {
        "parse(auto)": lambda batch: cpu_us(parse, batch),
        "detect": lambda batch: cpu_us(detect, batch),
        "redact.text": lambda batch: cpu_us(redactor.text, batch),
        "redact.apply": lambda batch: cpu_us(apply, [(t, parse(t)) for t in batch]),
        "clean(read)": lambda batch: read_us(redactor, batch),
        "encode (scale)": lambda batch: cpu_us(encode, batch),
    }
    kinds = [*(k for k, _ in MIX), "mix"]
    print(
        f"CPU µs per line, median of {args.rounds} rounds of {args.lines:,} new lines "
        f"(min..max); python {sys.version.split()[0]}"
    )
    print(f"{'kind':<12} {'bytes':>6} {'n-a%':>5} " + " ".join(f"{m:>20}" for m in measures))
    for kind in kinds:
        results: dict[str, list[float]] = {m: [] for m in measures}
        sizes: list[int] = []
        non_ascii: list[float] = []
        for _ in range(args.rounds):
            batch = lines.batch(kind, args.lines)
            sizes.append(sum(len(t.encode()) for t in batch) // len(batch))
            non_ascii.append(sum(not t.isascii() for t in batch) / len(batch))
            for name, measure in measures.items():
                results[name].append(measure(batch))
        cells = [
            f"{statistics.median(v):6.2f} ({min(v):.2f}..{max(v):.2f})" for v in results.values()
        ]
        share = f"{100 * statistics.median(non_ascii):.0f}"
        print(
            f"{kind:<12} {statistics.median(sizes):>6} {share:>5} "
            + " ".join(f"{c:>20}" for c in cells)
        )


if __name__ == "__main__":
    main()
