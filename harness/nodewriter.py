"""A Kubernetes node's container runtimes, writing logs the way Docker and kubelet do.

Used by the end-to-end tests (tests/e2e), the latency bench (bench/e2e_latency.py) and by hand:

    .venv/bin/python harness/nodewriter.py --root /tmp/node --rate 2000 --duration 60 \\
        --truth /tmp/node/truth.jsonl --manifest /tmp/node/pods.json

writes under `ROOT/docker` (Docker's `/var/lib/docker/containers`) and `ROOT/log` (`/var/log`:
`pods/` and `containers/`), i.e. `python -m collector --docker-root ROOT/docker --log-root
ROOT/log`.

What it plays:

- Docker json-file containers: `<id>/<id>-json.log` plus `config.v2.json` carrying the
  `io.kubernetes.*` labels kubelet sets; lines encoded as Docker's Go encoder does (`<>&`
  escaped, invalid UTF-8 as U+FFFD); messages over 16 KiB cut into 16384-byte pieces without
  their trailing newline (a message of exactly n*16 KiB gets an empty last piece, as Docker's
  copier gives); as with cri-dockerd, `log/pods/<ns>_<pod>_<uid>/<container>/0.log` and the
  `log/containers/` link point at the json file. Rotation as `--log-opt max-size/max-file`:
  before a write that finds the file full, `.N-2`..`.1` move up one, the current file becomes
  `.1`, the oldest goes.
- CRI (containerd) containers: `log/pods/<ns>_<pod>_<uid>/<container>/0.log` in the CRI format
  (`<RFC3339Nano> <stream> <P|F> <text>`), messages cut into 16384-byte pieces tagged `P` --
  at byte boundaries, as containerd does, so a UTF-8 character may be cut in two -- and the
  `log/containers/<pod>_<ns>_<container>-<id>.log` symlink. Rotation as kubelet does it:
  rotated files beyond `max_files - 2` are removed, the previous rotated file is gzipped
  (`.tmp`, renamed to `.gz`, the original unlinked), the current file is renamed to
  `0.log.<YYYYmmdd-HHMMSS>`, and the runtime writes a few more lines into the renamed file
  before it reopens `0.log` (kubelet's ReopenContainerLog call is not instant). Kubelet
  rotates at most every 10 s, so it never meets two rotations in one second; at the faster
  rotations used here a taken name moves on to the next second.

Content per container: access logs, JSON logs, Java (logback) and Python logs with stack
traces, lines far over 16 KiB, non-ASCII and escape-heavy text.

Ground truth: one `Truth` per logical record -- after the runtime's 16 KiB pieces are joined
and, for containers marked `multiline` (the collector is configured to group their stack
traces), with each trace as one record -- giving its container (`namespace/pod/container`),
stream, exact message, the runtime timestamp of its first line and the wall-clock time at
which its last byte was written to the file. `--truth` writes them as JSON lines.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

PIECE = 16 * 1024
"""Docker's copier buffer and containerd's max_container_log_line_size: the 16 KiB split."""

CONTENTS = ("access", "json", "java", "python", "big", "unicode", "bulk", "probe")
MULTILINE_CONTENTS = {"java": "java", "python": "python"}
"""Content kinds with stack traces, and the collector's multiline preset that groups them."""


class Truth(NamedTuple):
    """One logical record as the collector should ship it."""

    container: str
    """`namespace/pod/container`, as in the record's kubernetes fields."""
    runtime: str
    stream: str
    message: str
    time: str
    """The runtime's timestamp of the record's first line (RFC 3339, UTC)."""
    written: float
    """time.time() just after the record's last byte was written to the file."""
    lines: int
    """Lines in the file that make up the record (16 KiB pieces and trace lines)."""

    def json(self) -> bytes:
        return orjson.dumps(self._asdict())


class Event(NamedTuple):
    """What an application prints at once: one or more lines on one stream."""

    stream: str
    lines: list[str]
    grouped: bool = False
    """A stack trace: one record when the collector groups the container's traces."""


@dataclass
class Rotation:
    """Log rotation settings: Docker's max-size/max-file, kubelet's containerLogMax*."""

    max_bytes: int | None = 10 * 1024 * 1024
    every: float | None = None
    """Rotate on time as well (seconds), for tests that want many rotations."""
    max_files: int = 5
    """Docker: current + rotated files kept; kubelet: the same, the older ones gzipped."""
    gzip_level: int = 1
    """kubelet gzips at the default level 6; the format is the same, 1 is cheaper here."""
    late_lines: int = 2
    """CRI: lines the runtime still writes into a renamed file before it reopens 0.log."""
    first: float | None = None
    """Seconds to the first time-based rotation (default: `every` times 0.5 to 1.5)."""


@dataclass
class Spec:
    """One container of one pod on this node."""

    namespace: str
    pod: str
    container: str
    runtime: str
    """docker or cri"""
    content: str
    weight: float = 1.0
    """Share of the node's line rate."""
    multiline: bool = False
    """The collector groups this container's stack traces (so the ground truth does)."""
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    image: str = "registry.example/shop/app:1.4.2"
    deployment: str | None = None
    vocabulary: tuple[str, ...] = ()
    """Words the content draws from (default WORDS, about half of them non-ASCII)."""

    def __post_init__(self) -> None:
        if self.runtime not in ("docker", "cri"):
            raise ValueError(f"runtime must be docker or cri, not {self.runtime!r}")
        if self.content not in CONTENTS:
            raise ValueError(f"content must be one of {', '.join(CONTENTS)}")
        if not self.uid:
            digest = hashlib.sha256(f"{self.namespace}/{self.pod}".encode()).hexdigest()
            self.uid = (
                f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
            )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"

    @property
    def cid(self) -> str:
        """The container id; the same formula as harness/k8s_api.container_id (restart 0)."""
        return hashlib.sha256(f"{self.uid}/{self.container}/0".encode()).hexdigest()

    def manifest(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "pod": self.pod,
            "uid": self.uid,
            "container": self.container,
            "container_id": self.cid,
            "runtime": self.runtime,
            "image": self.image,
            "labels": self.labels,
            "annotations": self.annotations,
            "deployment": self.deployment,
            "content": self.content,
            "multiline": MULTILINE_CONTENTS.get(self.content) if self.multiline else None,
        }


def default_node(containers: int = 12, seed: int = 0) -> list[Spec]:
    """A mixed node: Docker and CRI, every content kind, a few two-container pods.

    Java containers are marked multiline (the collector is to get `--multiline
    '*/*-java-*/*=java'` or equivalent), Python ones carry the pod annotation
    `logferry.io/multiline: python`.
    """
    rng = random.Random(seed)
    # Every content kind under both runtimes within the first twelve pods.
    combos = [
        ("access", "docker"),
        ("json", "cri"),
        ("java", "docker"),
        ("python", "cri"),
        ("big", "cri"),
        ("unicode", "docker"),
        ("java", "cri"),
        ("python", "docker"),
        ("big", "docker"),
        ("unicode", "cri"),
        ("access", "cri"),
        ("json", "docker"),
    ]
    namespaces = ["shop", "payments", "web"]
    specs: list[Spec] = []
    n = 0
    while len(specs) < containers:
        kind, runtime = combos[n % len(combos)]
        ns = namespaces[n % len(namespaces)]
        app = f"{kind}-{n}"
        deployment = app
        pod_name = f"{app}-7d9f{rng.randrange(16**4):04x}-{rng.randrange(36**5):05x}"
        labels = {"app": app, "app.kubernetes.io/name": app, "tier": kind}
        annotations: dict[str, str] = {}
        multiline = kind in MULTILINE_CONTENTS
        if kind == "python":
            annotations["logferry.io/multiline"] = "python"
        specs.append(
            Spec(
                ns,
                pod_name,
                "app",
                runtime,
                kind,
                weight=0.5 if kind == "big" else 1.0,
                multiline=multiline,
                labels=labels,
                annotations=annotations,
                image=f"registry.example/{ns}/{app}:1.{n}.0",
                deployment=deployment,
            )
        )
        # Every fifth pod has an access-logging sidecar.
        if n % 5 == 4 and len(specs) < containers:
            specs.append(
                Spec(
                    ns,
                    pod_name,
                    "proxy",
                    runtime,
                    "access",
                    weight=0.5,
                    labels=labels,
                    annotations=annotations,
                    image="registry.example/mesh/proxy:1.22",
                    deployment=deployment,
                )
            )
        n += 1
    return specs


# --- content ----------------------------------------------------------------------------------

PATHS = [
    "/api/v1/orders",
    "/api/v1/cart/items",
    "/healthz",
    "/static/app.3f9a.js",
    "/search?q=caf%C3%A9",
    "/api/v1/payments/authorize",
    "/login?next=%2Faccount",
]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "curl/8.5.0",
    "kube-probe/1.31",
    "Go-http-client/1.1",
]
USERS = ["alice", "bob", "zoë", "jürgen", "łukasz", "søren", "小明", "أحمد", "иван", "😀user"]
WORDS = [
    "order",
    "cart",
    "payment",
    "retry",
    "timeout",
    "déjà",
    "naïve",
    "straße",
    "日本語",
    "테스트",
    "Ωμέγα",
    "עברית",
    "🚀",
    "👍🏽",
    "e\u0301",
    "\u200d",
    "x",
    "0x7f",
    "null",
    "{}",
]
TRICKY = [
    'quotes "inside" and \\backslashes\\',
    "tab\there\tand\tthere",
    "\x1b[31mred\x1b[0m ANSI colours",
    "html <b>bold</b> & <i>more</i>",
    "line separator \u2028 and paragraph \u2029",
    "ends with a backslash \\",
    "ends with backslash-n \\n",
    '{"log":"not really","stream":"stdout","time":"2026-11-27T02:20:49Z"}',
    "2026-11-27T02:20:49Z stdout F looks like CRI",
    "%s %d %(name)s {} {0}",
    "   leading and trailing spaces   ",
    "bell \x07 and escape \x1b and delete \x7f",
    "\ufeffbyte order mark",
    "replacement \ufffd char",
]
JAVA_CLASSES = [
    "com.example.shop.OrderService",
    "com.example.shop.web.OrderController",
    "org.springframework.web.servlet.FrameworkServlet",
    "org.apache.catalina.core.ApplicationFilterChain",
    "java.base/java.util.concurrent.ThreadPoolExecutor",
]


def stamp_ns(ns: int) -> str:
    """RFC3339Nano as Go prints it (trailing zeros of the fraction trimmed), UTC."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction:
        return f"{head}.{fraction:09d}".rstrip("0") + "Z"
    return head + "Z"


class Content:
    """Events of one container; `seq` makes most messages unique, which eases diagnosis."""

    def __init__(
        self, kind: str, key: str, rng: random.Random, vocabulary: Sequence[str] = ()
    ) -> None:
        self.kind = kind
        self.vocabulary = vocabulary or WORDS
        self.key = key
        self.rng = rng
        self.seq = 0
        self.make: Callable[[], Event] = getattr(self, f"make_{kind}")
        self.queue: list[Event] = []
        """Events already decided on: a trace after the log line that announces it."""

    def next(self) -> Event:
        if self.queue:
            return self.queue.pop(0)
        self.seq += 1
        return self.make()

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(self.vocabulary) for _ in range(n))

    def clock(self) -> str:
        now = time.time()
        return (
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"
        )

    def access_line(self) -> str:
        r = self.rng
        ip = f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"
        when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        method = r.choice(("GET", "GET", "GET", "POST", "PUT", "DELETE"))
        status = r.choice((200, 200, 200, 201, 204, 301, 404, 500, 503))
        return (
            f"{ip} - {r.choice(USERS) if r.random() < 0.1 else '-'} [{when}] "
            f'"{method} {r.choice(PATHS)}&req={self.seq} HTTP/1.1" {status} '
            f'{r.randrange(20, 90000)} "-" "{r.choice(AGENTS)}" rt={r.random():.3f}'
        )

    def make_access(self) -> Event:
        return Event("stdout", [self.access_line()])

    def make_probe(self) -> Event:
        return Event("stdout", [f"probe {self.key} seq={self.seq} {self.words(4)}"])

    def make_json(self) -> Event:
        r = self.rng
        if r.random() < 0.01:
            return Event("stdout", [""])
        body = {
            "ts": datetime.now(UTC).isoformat(),
            "level": r.choice(("debug", "info", "info", "info", "warn", "error")),
            "logger": "shop.checkout",
            "msg": f"{r.choice(('order placed', 'cart updated', 'payment failed'))} {self.seq}",
            "user": r.choice(USERS),
            "latency_ms": round(r.random() * 250, 2),
            "tags": [self.words(1), self.words(1)],
            "note": r.choice(TRICKY) if r.random() < 0.1 else None,
        }
        return Event(
            "stdout" if body["level"] != "error" else "stderr", [orjson.dumps(body).decode()]
        )

    def make_java(self) -> Event:
        r = self.rng
        level = r.choice(("INFO", "INFO", "DEBUG", "WARN"))
        words = self.words(3)
        if r.random() < 0.1:
            # logback: the ERROR line, then the trace (a record of its own: see multiline.py).
            level, words = "ERROR", "failed"
            self.queue.append(self.java_trace())
        thread = f"http-nio-8080-exec-{r.randrange(1, 20)}"
        return Event(
            "stdout",
            [f"{self.clock()} {level} [{thread}] c.e.shop.OrderService - order {self.seq} {words}"],
        )

    def java_trace(self) -> Event:
        r = self.rng
        lines = [f"java.lang.IllegalStateException: order {self.seq} not placed: {self.words(2)}"]
        for _ in range(r.randrange(3, 12)):
            cls = r.choice(JAVA_CLASSES)
            lines.append(f"\tat {cls}.handle({cls.rsplit('.', 1)[1]}.java:{r.randrange(20, 900)})")
        if r.random() < 0.5:
            lines.append(
                f"Caused by: java.sql.SQLTransientConnectionException: pool empty {self.seq}"
            )
            for _ in range(r.randrange(2, 6)):
                lines.append(
                    "\tat com.zaxxer.hikari.pool.HikariPool.getConnection"
                    f"(HikariPool.java:{r.randrange(100, 200)})"
                )
            lines.append(f"\t... {r.randrange(5, 60)} more")
        return Event("stdout", lines, grouped=True)

    def make_python(self) -> Event:
        r = self.rng
        roll = r.random()
        if roll < 0.45:
            return Event(
                "stdout",
                [f'10.1.2.3 - - "GET /items/{self.seq} HTTP/1.1" 200 {r.randrange(100, 5000)}'],
            )
        stamp = self.clock().replace(".", ",")
        if roll < 0.9:
            return Event("stderr", [f"{stamp} INFO app.views: request {self.seq} {self.words(3)}"])
        # logger.exception(): the message line, then the traceback.
        self.queue.append(self.python_trace())
        return Event("stderr", [f"{stamp} ERROR app.views: request {self.seq} failed"])

    def python_trace(self) -> Event:
        r = self.rng
        lines = ["Traceback (most recent call last):"]
        for _ in range(r.randrange(1, 5)):
            lines.append(f'  File "/app/shop/views.py", line {r.randrange(10, 400)}, in handle')
            lines.append(f"    result = service.place(order_id={self.seq})")
        if r.random() < 0.4:
            lines.append(f"KeyError: 'order-{self.seq}'")
            lines.append("")
            lines.append("During handling of the above exception, another exception occurred:")
            lines.append("")
            lines.append("Traceback (most recent call last):")
            lines.append('  File "/app/shop/views.py", line 88, in handle')
            lines.append("    raise RuntimeError(msg)")
        lines.append(f"RuntimeError: request {self.seq} failed: {self.words(2)}")
        return Event("stderr", lines, grouped=True)

    def big_text(self, size: int) -> str:
        """About `size` bytes of text, plenty of it multi-byte."""
        parts: list[str] = [f"seq={self.seq} payload="]
        total = 0
        while total < size:
            word = self.rng.choice(self.vocabulary)
            parts.append(word)
            total += len(word.encode()) + 1
        return " ".join(parts)

    def make_big(self) -> Event:
        r = self.rng
        if r.random() < 0.15:
            size = r.choice((PIECE - 40, PIECE, 2 * PIECE, r.randrange(PIECE + 1, 5 * PIECE)))
            return Event(r.choice(("stdout", "stderr")), [self.big_text(size)])
        return Event("stdout", [f"batch {self.seq} {self.words(6)}"])

    def make_bulk(self) -> Event:
        """Bytes for the MB/s tests: 0.5 to 6 KiB lines, now and then one over 16 KiB."""
        r = self.rng
        size = r.randrange(PIECE + 1, 3 * PIECE) if r.random() < 0.02 else r.randrange(500, 6000)
        return Event("stdout", [self.big_text(size)])

    def make_unicode(self) -> Event:
        r = self.rng
        roll = r.random()
        if roll < 0.03:
            return Event("stdout", [""])
        if roll < 0.3:
            return Event(r.choice(("stdout", "stderr")), [f"{self.seq} {r.choice(TRICKY)}"])
        return Event("stdout", [f"{self.seq} {r.choice(USERS)}: {self.words(r.randrange(2, 12))}"])


# --- the runtimes -----------------------------------------------------------------------------

HTML_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def go_text(piece: bytes) -> str:
    """Bytes as Go's JSON encoder writes them into a string: each invalid byte as U+FFFD."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    i = 0
    while i < len(piece):
        for width in (1, 2, 3, 4):
            try:
                out.append(piece[i : i + width].decode("utf-8"))
                i += width
                break
            except UnicodeDecodeError:
                continue
        else:
            out.append("\ufffd")
            i += 1
    return "".join(out)


def docker_json(log: str, stream: str, stamp: str) -> bytes:
    """One json-file line as dockerd writes it (HTML-safe escapes, U+2028/9 escaped)."""
    raw = orjson.dumps({"log": log, "stream": stream, "time": stamp})
    if (
        b"<" in raw
        or b">" in raw
        or b"&" in raw
        or b"\xe2\x80\xa8" in raw
        or b"\xe2\x80\xa9" in raw
    ):
        text = raw.decode().translate(HTML_ESCAPES)
        raw = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()
    return raw + b"\n"


def docker_pieces(message: str) -> tuple[list[str], str]:
    """The `log` values Docker writes for one message, and the message they decode to."""
    data = message.encode()
    if len(data) < PIECE:
        return [message + "\n"], message
    pieces = [go_text(data[i : i + PIECE]) for i in range(0, len(data), PIECE)]
    if len(data) % PIECE == 0:
        pieces.append("")
    joined = "".join(pieces)
    pieces[-1] += "\n"
    return pieces, joined


def cri_pieces(message: str) -> list[tuple[bytes, bytes]]:
    """(tag, bytes) as containerd writes them: 16 KiB byte cuts, tagged P, the last F."""
    data = message.encode()
    if len(data) <= PIECE:
        return [(b"F", data)]
    cuts = [data[i : i + PIECE] for i in range(0, len(data), PIECE)]
    return [(b"P", c) for c in cuts[:-1]] + [(b"F", cuts[-1])]


class Container:
    """One container's log file(s): buffering, rotation, ground truth."""

    def __init__(
        self,
        spec: Spec,
        node: NodeWriter,
        rotation: Rotation,
        rng: random.Random,
    ) -> None:
        self.spec = spec
        self.node = node
        self.rotation = rotation
        self.content = Content(spec.content, spec.key, rng, spec.vocabulary)
        self.grouping = spec.multiline and spec.content in MULTILINE_CONTENTS
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.pending: list[tuple[str, str, str, int]] = []
        """Records whose last line is in the buffer: (stream, message, time, lines)."""
        self.debt = 0.0
        self.size = 0
        self.next_rotation: float | None = None
        if rotation.every:
            first = rotation.first
            if first is None:
                first = rotation.every * (0.5 + rng.random())
            self.next_rotation = time.monotonic() + first
        self.late = 0
        """CRI: lines still to go into the renamed file before 0.log is reopened."""
        self.rotations = 0
        self.file: IO[bytes] | None = None
        if spec.runtime == "docker":
            self.folder = node.docker_root / spec.cid
            self.path = self.folder / f"{spec.cid}-json.log"
        else:
            self.folder = (
                node.log_root / "pods" / f"{spec.namespace}_{spec.pod}_{spec.uid}" / spec.container
            )
            self.path = self.folder / "0.log"

    # --- layout ----------------------------------------------------------------------------

    def create(self) -> None:
        spec = self.spec
        self.folder.mkdir(parents=True, exist_ok=True)
        pod_dir = self.node.log_root / "pods" / f"{spec.namespace}_{spec.pod}_{spec.uid}"
        link = (
            self.node.log_root
            / "containers"
            / (f"{spec.pod}_{spec.namespace}_{spec.container}-{spec.cid}.log")
        )
        link.parent.mkdir(parents=True, exist_ok=True)
        if spec.runtime == "docker":
            config = {
                "ID": spec.cid,
                "Name": f"/k8s_{spec.container}_{spec.pod}_{spec.namespace}_{spec.uid}_0",
                "Created": datetime.now(UTC).isoformat(),
                "Config": {
                    "Image": spec.image,
                    "Labels": {
                        "io.kubernetes.pod.namespace": spec.namespace,
                        "io.kubernetes.pod.name": spec.pod,
                        "io.kubernetes.pod.uid": spec.uid,
                        "io.kubernetes.container.name": spec.container,
                        "io.kubernetes.container.restartCount": "0",
                        "io.kubernetes.docker.type": "container",
                    },
                },
                "LogPath": str(self.path),
            }
            (self.folder / "config.v2.json").write_bytes(orjson.dumps(config))
            if self.node.docker_links:
                # cri-dockerd: kubelet's pod log path links to the json file.
                pod_log = pod_dir / spec.container / "0.log"
                pod_log.parent.mkdir(parents=True, exist_ok=True)
                if not pod_log.is_symlink():
                    pod_log.symlink_to(self.path)
                if not link.is_symlink():
                    link.symlink_to(pod_log)
        elif not link.is_symlink():
            link.symlink_to(self.path)
        self.open_current()

    def open_current(self) -> None:
        self.file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self.size = self.file.tell()

    # --- writing ---------------------------------------------------------------------------

    def produce(self, lines: float, now_ns: int) -> int:
        """Add events worth `lines` lines (carrying over the excess); returns lines added."""
        self.debt += lines
        added = 0
        while self.debt > 0:
            event = self.content.next()
            n = self.add(event, now_ns + added)
            added += n
            self.debt -= n
        return added

    def add(self, event: Event, now_ns: int) -> int:
        """Buffer one event's lines; returns how many lines went to the file."""
        docker = self.spec.runtime == "docker"
        stream = event.stream
        written = 0
        group_time = ""
        group_lines = 0
        for text in event.lines:
            stamp = stamp_ns(now_ns + written)
            if docker:
                pieces, message = docker_pieces(text)
                for piece in pieces:
                    self.line(docker_json(piece, stream, stamp))
                n = len(pieces)
            else:
                message = text
                prefix = f"{stamp} {stream} ".encode()
                parts = cri_pieces(text)
                for tag, body in parts:
                    self.line(prefix + tag + b" " + body + b"\n")
                n = len(parts)
            written += n
            if event.grouped and self.grouping:
                if not group_time:
                    group_time = stamp
                group_lines += n
            else:
                self.pending.append((stream, message, stamp, n))
        if group_lines:
            # A trace's lines are short: no 16 KiB pieces, so the message is the text.
            self.pending.append((stream, "\n".join(event.lines), group_time, group_lines))
        return written

    def line(self, data: bytes) -> None:
        if self.late == 0 and self.due():
            self.rotate()
        self.buffer.append(data)
        self.buffered += len(data)
        if self.late:
            self.late -= 1
            if self.late == 0:
                self.flush(emit=False)
                self.reopen()

    def due(self) -> bool:
        """Time to rotate: the file is full (checked before a write, as Docker does) or,
        with `every`, its time has come."""
        limit = self.rotation.max_bytes
        if limit is not None and self.size + self.buffered >= limit:
            return True
        return self.next_rotation is not None and time.monotonic() >= self.next_rotation

    def flush(self, emit: bool = True) -> None:
        if self.buffer:
            assert self.file is not None
            data = b"".join(self.buffer)
            self.file.write(data)
            self.size += len(data)
            self.node.lines_written += len(self.buffer)
            self.node.bytes_written += len(data)
            self.buffer.clear()
            self.buffered = 0
        if emit and self.pending:
            written = time.time()
            key, runtime, emit_record = self.spec.key, self.spec.runtime, self.node.emit
            for stream, message, stamp, lines in self.pending:
                emit_record(Truth(key, runtime, stream, message, stamp, written, lines))
            self.pending.clear()

    # --- rotation --------------------------------------------------------------------------

    def rotate(self) -> None:
        self.flush(emit=False)
        self.rotations += 1
        if self.rotation.every is not None:
            self.next_rotation = time.monotonic() + self.rotation.every
        if self.spec.runtime == "docker":
            self.rotate_docker()
        else:
            self.rotate_kubelet()

    def rotate_docker(self) -> None:
        """moby's LogFile.rotate: drop the oldest, shift .1.. up, current to .1, reopen."""
        assert self.file is not None
        self.file.close()
        keep = max(self.rotation.max_files, 2)
        name = str(self.path)
        oldest = Path(f"{name}.{keep - 1}")
        if oldest.exists():
            oldest.unlink()
        for i in range(keep - 1, 1, -1):
            source = Path(f"{name}.{i - 1}")
            if source.exists():
                source.rename(f"{name}.{i}")
        self.path.rename(f"{name}.1")
        self.open_current()

    def rotated_files(self) -> list[Path]:
        """kubelet's `0.log.*` glob, oldest first (the timestamps sort)."""
        return sorted(self.folder.glob(f"{self.path.name}.*"))

    def rotate_kubelet(self) -> None:
        """kubelet's containerLogManager.rotateLog."""
        rotated = self.rotated_files()
        # cleanupUnusedLogs: leftovers of an interrupted compression.
        for p in rotated:
            if p.name.endswith(".tmp"):
                p.unlink()
        rotated = [p for p in rotated if not p.name.endswith(".tmp")]
        # removeExcessLogs: keep max_files - 2 rotated files, the newest.
        keep = max(self.rotation.max_files - 2, 0)
        while len(rotated) > keep:
            rotated.pop(0).unlink()
        # compressLog: every uncompressed rotated file, via .tmp, then unlink the original.
        for p in rotated:
            if p.name.endswith(".gz"):
                continue
            tmp = Path(f"{p}.tmp")
            with open(p, "rb") as src, gzip.open(tmp, "wb", self.rotation.gzip_level) as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            tmp.rename(f"{p}.gz")
            p.unlink()
        # rotateLatestLog: rename, then the runtime reopens 0.log (a few lines later).
        when = int(time.time())
        while True:
            name = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
            target = Path(f"{self.path}.{name}")
            if not target.exists() and not Path(f"{target}.gz").exists():
                break
            when += 1
        self.path.rename(target)
        if self.rotation.late_lines > 0:
            self.late = self.rotation.late_lines
        else:
            self.reopen()

    def reopen(self) -> None:
        assert self.file is not None
        self.file.close()
        self.open_current()

    def close(self) -> None:
        if self.late:
            self.late = 0
            self.flush()
            self.reopen()
        self.flush()
        if self.file is not None:
            self.file.close()
            self.file = None


class NodeWriter:
    """Writes the containers' logs at a steady line rate; collects the ground truth.

    `emit` receives every Truth once its last byte is in the file (by default they are kept
    in `records`); `truth` also writes them as JSON lines.
    """

    def __init__(
        self,
        root: Path | str,
        specs: Sequence[Spec],
        *,
        rate: float = 1000.0,
        docker_rotation: Rotation | None = None,
        cri_rotation: Rotation | None = None,
        truth: Path | str | None = None,
        emit: Callable[[Truth], None] | None = None,
        seed: int = 0,
        docker_links: bool = True,
        tick: float = 0.01,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.docker_root = self.root / "docker"
        self.log_root = self.root / "log"
        self.specs = list(specs)
        self.rate = rate
        self.docker_links = docker_links
        self.tick = tick
        self.records: list[Truth] = []
        self.truth_file: IO[bytes] | None = open(truth, "ab") if truth else None  # noqa: SIM115
        self.extra_emit = emit
        self.lines_written = 0
        self.bytes_written = 0
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        docker_rotation = docker_rotation or Rotation()
        cri_rotation = cri_rotation or Rotation()
        self.containers = [
            Container(
                s,
                self,
                docker_rotation if s.runtime == "docker" else cri_rotation,
                random.Random(self.rng.random()),
            )
            for s in self.specs
        ]
        keys = [s.key for s in self.specs]
        if len(set(keys)) != len(keys):
            raise ValueError("two containers with the same namespace/pod/container")
        for c in self.containers:
            c.create()
        total = sum(s.weight for s in self.specs)
        self.shares = [s.weight / total for s in self.specs]

    def emit(self, record: Truth) -> None:
        if self.extra_emit is None:
            self.records.append(record)
        else:
            self.extra_emit(record)
        if self.truth_file is not None:
            self.truth_file.write(record.json() + b"\n")

    # --- running ---------------------------------------------------------------------------

    def run(self, duration: float | None = None, lines: int | None = None) -> None:
        """Write until `duration` seconds passed, `lines` lines were written, or stop()."""
        if duration is None and lines is None:
            raise ValueError("give a duration, a line count, or both")
        start = time.monotonic()
        done = 0
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                elapsed = now - start
                if duration is not None and elapsed >= duration:
                    break
                due = self.rate * elapsed - done
                if lines is not None:
                    due = min(due, lines - done)
                    if due <= 0 and done >= lines:
                        break
                if due < 1:
                    self.stopping.wait(self.tick)
                    continue
                with self.lock:
                    done += self.step(due)
        finally:
            with self.lock:
                self.finish()

    def step(self, due: float) -> int:
        now_ns = time.time_ns()
        added = 0
        for container, share in zip(self.containers, self.shares, strict=True):
            added += container.produce(due * share, now_ns)
        for container in self.containers:
            container.flush()
        return added

    def finish(self) -> None:
        for container in self.containers:
            container.close()
        if self.truth_file is not None:
            self.truth_file.flush()

    def start(self, duration: float | None = None, lines: int | None = None) -> NodeWriter:
        def body() -> None:
            try:
                self.run(duration, lines)
            except BaseException as exc:
                self.error = exc
                raise

        self.thread = threading.Thread(target=body, name="nodewriter", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.join()

    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                raise TimeoutError("the node writer did not finish")
        if self.error is not None:
            raise RuntimeError("the node writer failed") from self.error

    def close(self) -> None:
        if self.truth_file is not None:
            self.truth_file.close()
            self.truth_file = None

    # --- what was written --------------------------------------------------------------------

    def rotations(self, runtime: str | None = None) -> int:
        return sum(c.rotations for c in self.containers if runtime in (None, c.spec.runtime))

    def manifest(self) -> list[dict[str, Any]]:
        return [s.manifest() for s in self.specs]

    def multiline_flags(self, annotated: bool = False) -> list[str]:
        """`--multiline` flags for the Java containers; with `annotated`, also for those that
        carry the `logferry.io/multiline` pod annotation (for a collector without the API)."""
        flags = []
        for s in self.specs:
            if not s.multiline:
                continue
            rule = MULTILINE_CONTENTS.get(s.content)
            if s.content == "java" or (annotated and rule):
                flags.append(f"--multiline={s.namespace}/{s.pod}/{s.container}={rule}")
        return flags


def read_truth(path: Path | str) -> Iterator[Truth]:
    with open(path, "rb") as f:
        for line in f:
            yield Truth(**orjson.loads(line))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write container logs like Docker and kubelet do, with ground truth."
    )
    parser.add_argument("--root", required=True, help="writes ROOT/docker and ROOT/log")
    parser.add_argument("--containers", type=int, default=12)
    parser.add_argument("--rate", type=float, default=1000.0, help="lines per second")
    parser.add_argument("--duration", type=float, help="seconds to write")
    parser.add_argument("--lines", type=int, help="lines to write")
    parser.add_argument("--truth", help="ground truth, one JSON record a line")
    parser.add_argument("--manifest", help="the containers (pods, ids, labels) as JSON")
    parser.add_argument("--rotate-bytes", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--rotate-every", type=float, help="also rotate every N seconds")
    parser.add_argument("--max-files", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.duration is None and args.lines is None:
        parser.error("give --duration or --lines")
    rotation = Rotation(args.rotate_bytes, args.rotate_every, args.max_files)
    writer = NodeWriter(
        args.root,
        default_node(args.containers, args.seed),
        rate=args.rate,
        docker_rotation=rotation,
        cri_rotation=rotation,
        truth=args.truth,
        emit=lambda _record: None,
        seed=args.seed,
    )
    if args.manifest:
        Path(args.manifest).write_bytes(orjson.dumps(writer.manifest(), option=orjson.OPT_INDENT_2))
    started = time.monotonic()
    try:
        writer.run(args.duration, args.lines)
    except KeyboardInterrupt:
        pass
    finally:
        writer.close()
    took = time.monotonic() - started
    print(
        f"{writer.lines_written} lines, {writer.bytes_written / 1e6:.1f} MB in {took:.1f} s "
        f"({writer.lines_written / took:.0f} lines/s), {writer.rotations()} rotations",
        file=sys.stderr,
    )
    print("collector flags: " + " ".join(writer.multiline_flags()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
