"""A realistic node's logs for the benchmarks, written as fast as Python can.

Content comes from harness/nodewriter (the same runtimes the end-to-end tests play): never
repeated (every event carries its own sequence number, time and random fields); Docker
lines as dockerd's Go encoder writes them (`<>&` as `\\u003c \\u003e \\u0026`, non-ASCII
as UTF-8, messages over 16 KiB cut into pieces); CRI lines as containerd writes them (P/F
partials cut at byte boundaries).

Mixes:

- `access`: access logs (quotes, a few non-ASCII user names), Docker json-file.
- `node`: access logs, JSON-structured application logs (escaped quotes, nested values),
  Java (logback) and Python logs with stack traces (tabs), non-ASCII and escape-heavy
  text, a few lines over 16 KiB; Docker json-file.
- `node-cri`: the same under containerd (CRI format).
- `node-multiline`: `node` with the Java containers' traces grouped by the collector
  (`multiline_flags`).

    .venv/bin/python bench/corpus.py --mix node --megabytes 64 --root /tmp/corpus
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

from harness.nodewriter import WORDS, NodeWriter, Rotation, Spec

MIXES = ("access", "node", "node-cri", "node-multiline")

NODE_KINDS = (
    ("access", 0.46),
    ("java", 0.20),
    ("python", 0.15),
    ("json", 0.06),
    ("unicode", 0.02),
    ("big", 0.01),
)
"""Content kinds of the `node` mix and their share of its lines: about a tenth of the lines
hold non-ASCII text (the json kind's users and words, the unicode kind's text)."""

ASCII_WORDS = tuple(word for word in WORDS if word.isascii())
"""The words of the kinds whose non-ASCII text should come only from their fields (users)."""
VARIED = ("unicode", "big")
"""Kinds that keep the full, half non-ASCII vocabulary."""

STEP = 2000
"""Lines generated between writes."""


class Corpus(NamedTuple):
    lines: int
    bytes: int
    non_ascii: int
    """Lines holding a non-ASCII byte."""
    over_16k: int
    """Messages over 16 KiB (written as several runtime lines)."""
    flags: list[str]
    """Collector flags the mix needs (multi-line grouping)."""


def specs(mix: str, containers: int) -> list[Spec]:
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {', '.join(MIXES)}")
    runtime = "cri" if mix == "node-cri" else "docker"
    kinds = (("access", 1.0),) if mix == "access" else NODE_KINDS
    out = []
    for n in range(containers):
        kind, weight = kinds[n % len(kinds)]
        out.append(
            Spec(
                "bench",
                f"{kind}-{n}-7d9f5-x2k4q",
                "app",
                runtime,
                kind,
                weight=weight,
                multiline=mix == "node-multiline" and kind == "java",
                labels={"app": f"{kind}-{n}"},
                vocabulary=() if kind in VARIED else ASCII_WORDS,
            )
        )
    return out


def write(root: Path, mix: str, megabytes: float, containers: int = 12, seed: int = 0) -> Corpus:
    """About `megabytes` MB of the mix's logs under root/docker and root/log."""
    unrotated = Rotation(max_bytes=None)
    writer = NodeWriter(
        root,
        specs(mix, containers),
        docker_rotation=unrotated,
        cri_rotation=unrotated,
        emit=lambda _record: None,
        seed=seed,
        docker_links=False,
    )
    target = megabytes * 1e6
    while writer.bytes_written < target:
        writer.step(STEP)
    writer.finish()
    writer.close()
    non_ascii = over = 0
    for container in writer.containers:
        data = container.path.read_bytes()
        non_ascii += sum(1 for line in data.split(b"\n") if not line.isascii())
        over += data.count(b"\n") - data.count(b'\\n","stream"') if mix != "node-cri" else 0
        over += data.count(b" P ") if mix == "node-cri" else 0
    flags = writer.multiline_flags()
    return Corpus(writer.lines_written, writer.bytes_written, non_ascii, over, flags)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--mix", choices=MIXES, default="node")
    parser.add_argument("--megabytes", type=float, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    corpus = write(Path(args.root), args.mix, args.megabytes, seed=args.seed)
    print(
        f"{corpus.lines} lines, {corpus.bytes / 1e6:.1f} MB, "
        f"{corpus.non_ascii / corpus.lines:.1%} non-ASCII, {corpus.over_16k} 16 KiB pieces; "
        f"collector flags: {' '.join(corpus.flags)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
