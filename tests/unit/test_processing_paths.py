"""Structured fields, levels and redaction give the same records on every path.

A read of plain runtime lines takes the chunk fast path, which fills a template with each
line's level and leaves lines that need parsing (JSON objects) to the general path; the
general path processes every record in the encoder. Both must give the same records, and
what a user sees in a record is checked on the real collector's output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collector.decode import DECODERS
from collector.encode import Encoder
from collector.fastpath import FAST_PATHS, Levelled
from collector.join import Joiner, Record
from collector.process import Processor
from collector.structured import Limits
from harness.nodewriter import docker_json
from tests.unit.logfiles import append, docker_container

REPO = Path(__file__).resolve().parents[2]
PROCESSOR = Processor(Limits(), [], builtin=True)
META = {"container.id": "c" * 64, "kubernetes.namespace": "shop", "host.name": "node-a"}
STAMP = "2026-11-30T10:00:00.123456789Z"

TEXTS = [
    "GET /cart 200 512 0.003",
    "ERROR payment failed for order 17",
    "[WARN] disk 91% full",
    "2026-11-30 10:00:00,123 ERROR app.views: request 185 failed",
    "E1130 10:00:00.123456    1 reflector.go:123] watch failed",
    "level=info msg=started port=8080",
    '{"level":"error","msg":"checkout failed","order":{"id":17,"items":[1,2]}}',
    '  {"severity":"WARNING","message":"slow","ms":812}',
    '{"msg": "no level", "n": 1.5}',
    '{"broken": ',
    '["a", "json", "array"]',
    "<html> & 'quotes' \"double\" \\ backslash",
    "token: Bearer abcdefghijklmnopqrstuvwxyz012345",
    "login user=bob password=hunter2 ok",
    "aws key AKIAABCDEFGHIJKLMNOP in env",
    '{"level":"info","msg":"db","password":"s3cret"}',
    "Debug mode enabled",
    "\tat com.shop.Cart.add(Cart.java:42)",
    "grüße 日本 🚀 INFO",
]
texts = st.sampled_from(TEXTS) | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=60
)


def encoder(mode: str = "auto") -> Encoder:
    return Encoder("/var/log/pods/shop_p_u/app/0.log", "0123456789abcdef", META, PROCESSOR, mode)


def cri_raw(text: str, stream: str) -> bytes:
    return f"{STAMP} {stream} F {text}".encode()


def general_path(kind: str, lines: list[bytes], offset: int, enc: Encoder) -> list[bytes]:
    joiner = Joiner(None, 2**20, timeout=3600.0)
    out: list[Record] = []
    for raw in lines:
        joiner.push(None, offset, DECODERS[kind](raw), out)
        offset += len(raw) + 1
    return [enc.encode(r) for r in out]


def chunk_path(kind: str, lines: list[bytes], offset: int, enc: Encoder) -> list[bytes] | None:
    def general(raw: bytes, at: int) -> list[bytes]:
        return general_path(kind, [raw], at, enc)

    levelled = Levelled(
        enc.level_template, lambda text: PROCESSOR.fast_level(text, enc.mode), general
    )
    data = b"\n".join(lines)
    if not PROCESSOR.clean(data):
        return None
    return FAST_PATHS[kind].chunk(data, offset, enc.template, 1 << 20, levelled)


PATHS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PATHS
@given(
    st.lists(st.tuples(texts, st.sampled_from(["stdout", "stderr"])), min_size=1, max_size=8),
    st.sampled_from(["auto", "none", "json", "logfmt"]),
    st.integers(0, 2**40),
)
@example([(t, "stdout") for t in TEXTS], "auto", 0)
def test_both_paths_give_the_same_records(
    lines: list[tuple[str, str]], mode: str, offset: int
) -> None:
    enc = encoder(mode)
    for kind in ("docker", "cri"):
        if kind == "docker":
            raws = [docker_json(text + "\n", stream, STAMP).rstrip(b"\n") for text, stream in lines]
        else:
            raws = [cri_raw(text, stream) for text, stream in lines]
        fast = chunk_path(kind, raws, offset, enc)
        if fast is not None:
            # As JSON: the fast path keeps Docker's own escapes (\u003c for <).
            want = [orjson.loads(v) for v in general_path(kind, raws, offset, enc)]
            assert [orjson.loads(v) for v in fast] == want, (kind, lines)


def test_the_chunk_path_takes_a_read_without_secrets_and_leaves_json_lines_to_the_general():
    enc = encoder()
    # ASCII only: a read with other text is not the chunk path's (yet).
    plain = [t for t in TEXTS if PROCESSOR.clean(t.encode()) and t.isascii()]
    raws = [docker_json(text + "\n", "stdout", STAMP).rstrip(b"\n") for text in plain]
    fast = chunk_path("docker", raws, 0, enc)
    assert fast is not None
    records = [orjson.loads(v) for v in fast]
    assert records == [orjson.loads(v) for v in general_path("docker", raws, 0, enc)]
    levels = {r["message"]: r["log"].get("level") for r in records}
    assert levels["ERROR payment failed for order 17"] == "error"
    assert levels["checkout failed"] == "error"
    assert levels["GET /cart 200 512 0.003"] is None


def records_of(tmp_path: Path, lines: list[str], *flags: str) -> list[dict[str, Any]]:
    log = docker_container(tmp_path / "docker", "e" * 64)
    append(log, *[docker_json(text + "\n", "stdout", STAMP) for text in lines])
    done = subprocess.run(
        [sys.executable, "-m", "collector", "--once", "--sink", "stdout",
         "--docker-root", str(tmp_path / "docker"), "--log-root", str(tmp_path / "log"),
         "--state-dir", str(tmp_path / "state"), "--metrics-port", "0", *flags],
        capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def test_what_a_user_finds_in_processed_records(tmp_path: Path) -> None:
    first, json_log, klog, secret, plain = records_of(
        tmp_path,
        [
            "2026-11-30 10:00:00,123 ERROR app.views: request 185 failed",
            '{"level":"warn","msg":"slow query","db":{"ms":812,"table":"orders"}}',
            "I1130 10:00:00.123456    1 main.go:12] started",
            "retrying with password=hunter2 now",
            "GET /cart 200",
        ],
    )
    assert first["log"]["level"] == "error"
    assert first["message"].endswith("request 185 failed")
    assert json_log["message"] == "slow query"
    assert json_log["json"] == {"level": "warn", "db": {"ms": 812, "table": "orders"}}
    assert json_log["log"]["level"] == "warn"
    assert orjson.loads(json_log["event"]["original"])["msg"] == "slow query"
    assert klog["log"]["level"] == "info"
    assert "hunter2" not in orjson.dumps(secret).decode()
    assert "[REDACTED:password]" in secret["message"]
    assert "redacted" in secret["tags"]
    assert "level" not in plain["log"]
    assert "json" not in plain


def test_parser_none_and_user_rules(tmp_path: Path) -> None:
    (json_log, card) = records_of(
        tmp_path,
        ['{"level":"error","msg":"x"}', "card 4111-1111-1111-1111 declined"],
        "--parser", "none", "--redact", r"card=\d{4}(?:-\d{4}){3}",
    )  # fmt: skip
    assert json_log["message"] == '{"level":"error","msg":"x"}'
    assert "json" not in json_log
    assert card["message"] == "card [REDACTED:card] declined"
