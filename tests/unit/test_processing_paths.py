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
from collector.process import Processor, scanned
from collector.structured import Limits
from harness.nodewriter import PIECE, cri_pieces, docker_json, docker_pieces
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
    '10.1.2.3 - - [30/Nov/2026:10:00:00 +0000] "GET /?a=1&b=2 HTTP/1.1" 500 12 "-" "curl"',
    "12:00:01.5 WARN slow",
    "2026/11/30 10:00:00 [error] 7#7: upstream timed out",
    "10:00 ERROR",
    "1234",
    "7",
    # First bytes that name no level (collector.fastpath.NO_LEVEL_*) and their near misses.
    '  File "/app/shop/views.py", line 42, in checkout',
    "    raise PaymentError(order)",
    '\t{"level":"error","msg":"tab before an object"}',
    ' \t {"level":"warn","msg":"blanks before an object"}',
    "\r ERROR after a carriage return",
    "   ",
    "\t",
    "#7 0x7f3a in main () ERROR",
    "» déjà vu ERROR",
    "日本語のログ WARN",
    "\\\\server\\share ERROR",
    '"quoted" ERROR first',
    "-- ERROR after dashes",
    "(error) in parentheses",
    "12:3- odd",
    "1234-x ERROR",
    "2026-",
    "2026/11/30",
    "99:99 WARN",
    "123.4 ms ERROR",
]
SPELLINGS = [
    *("p", "\\u0070", "a", "\\u0061", "ssw", "\\u0053", "ord", "\\u0064", "=", "\\u003d"),
    *("hunter2", "\\\\", "\\u0022", '"', ":", "{", "}", " ", "\\u00e9", "ERROR", "\\u0045RROR"),
    *("Bearer ", "\\u0062earer ", "abcdefghijklmnop0123"),
]
"""Pieces of texts that spell keywords, levels and JSON with escapes, as a file may."""
texts = (
    st.sampled_from(TEXTS)
    | st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
        max_size=60,
    )
    | st.lists(st.sampled_from(SPELLINGS), max_size=12).map("".join)
)


def clean(text: str) -> bool:
    """Holds no keyword of a redaction rule."""
    return PROCESSOR.secrets(text.encode()) == []


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
    # One joiner for the read, as the agent's: a runtime piece waits there for its rest.
    joiner = Joiner(None, 2**20, timeout=3600.0)

    def general(raw: bytes, at: int) -> list[bytes]:
        out: list[Record] = []
        joiner.push(None, at, DECODERS[kind](raw), out)
        return [enc.encode(r) for r in out]

    def parsed(time: bytes, escaped: bytes, stream: bytes, at: int) -> list[bytes]:
        text = orjson.loads(b'"' + escaped + b'"')
        record = Record(None, at, time.decode(), stream.decode(), text, ())
        return [enc.encode(record, scanned(escaped))]

    data = b"\n".join(lines)
    secrets = PROCESSOR.secrets(data)
    if secrets is None:
        return None
    levelled = Levelled(
        enc.level_template,
        lambda text: PROCESSOR.fast_level(text, enc.mode),
        general,
        lambda: joiner.pieces,
        parsed,
        lambda data: PROCESSOR.levelless(data, enc.mode),
        secrets,
    )
    found = FAST_PATHS[kind].chunk(data, offset, enc.template, 1 << 20, levelled)
    if found is None:
        return None
    assert found.lines == len(lines)
    return found.values


def as_json(values: list[bytes]) -> list[dict[str, Any]]:
    """Records as JSON (the fast path keeps Docker's own escapes, \\u003c for <); a line
    without the runtime's time gets the time it was read, which two runs cannot share."""
    records = [orjson.loads(v) for v in values]
    for record in records:
        if "parse_error" in record.get("tags", ()):
            del record["@timestamp"]
    return records


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
            want = as_json(general_path(kind, raws, offset, enc))
            assert as_json(fast) == want, (kind, lines)


def runtime_lines(kind: str, text: str, stream: str) -> list[bytes]:
    """One message as the runtime writes it: 16 KiB pieces past 16 KiB."""
    if kind == "docker":
        pieces, _ = docker_pieces(text)
        return [docker_json(piece, stream, STAMP).rstrip(b"\n") for piece in pieces]
    prefix = f"{STAMP} {stream} ".encode()
    return [prefix + tag + b" " + body for tag, body in cri_pieces(text)]


@PATHS
@given(
    st.lists(
        st.tuples(
            texts.filter(clean),
            st.sampled_from(["stdout", "stderr"]),
            st.integers(0, 2 * PIECE),
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, 2**40),
)
@example([("grüße 日本 🚀 INFO", "stdout", PIECE), ("ERROR x", "stderr", 0)], 0)
def test_a_read_with_runtime_pieces_takes_the_chunk_path_around_them(
    lines: list[tuple[str, str, int]], offset: int
) -> None:
    """A message over 16 KiB (runtime pieces) goes the general path, the lines around it
    stay on the chunk path; non-ASCII text too. Same records either way. (A read with a
    secret's keyword goes the general path whole.)"""
    enc = encoder()
    for kind in ("docker", "cri"):
        raws = [
            raw
            for text, stream, pad in lines
            for raw in runtime_lines(kind, text + "é" * (pad // 2) if pad > PIECE else text, stream)
        ]
        fast = chunk_path(kind, raws, offset, enc)
        assert fast is not None, (kind, lines)
        assert as_json(fast) == as_json(general_path(kind, raws, offset, enc)), (kind, lines)


def test_the_chunk_path_takes_a_read_without_secrets_and_leaves_json_lines_to_the_general():
    enc = encoder()
    plain = [t for t in TEXTS if clean(t)]
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


def test_a_keyword_spelled_with_escapes_is_still_redacted_on_the_chunk_path() -> None:
    """No runtime writes `\\u0041` for A, but a file may: the read looks clean, the line
    is not, and its secret is hidden as the general path hides it."""
    enc = encoder()
    raws = [
        b'{"log":"key \\u0041KIAABCDEFGHIJKLMNOP \\"quoted\\" \\u003c\\n",'
        b'"stream":"stdout","time":"' + STAMP.encode() + b'"}',
        b'{"log":"login p\\u0061ssword=hunter2 ok\\n","stream":"stdout","time":"'
        + STAMP.encode()
        + b'"}',
        docker_json('GET /a?b=1&c=2 "curl" <x>\n', "stdout", STAMP).rstrip(b"\n"),
        b'{"log":"10.0.0.1 \\"p\\u0061ssword=hunter2\\"\\n","stream":"stdout","time":"'
        + STAMP.encode()
        + b'"}',
        # A JSON object whose key spells `password` with an escape the app wrote (Docker
        # then escapes its backslash): the field is hidden by its key once parsed.
        b'{"log":"{\\"user\\":\\"bob\\",\\"p\\\\u0061ssword\\":\\"hunter2\\"}\\n",'
        b'"stream":"stdout","time":"' + STAMP.encode() + b'"}',
        # The same escape in a plain line: JSON's spelling, so read as the word it spells.
        b'{"log":"login p\\\\u0061ssword=hunter2 ok\\n","stream":"stdout","time":"'
        + STAMP.encode()
        + b'"}',
    ]
    fast = chunk_path("docker", raws, 0, enc)
    assert fast is not None
    records = as_json(fast)
    assert records == as_json(general_path("docker", raws, 0, enc))
    assert "hunter2" not in orjson.dumps(records).decode()
    assert "AKIA" not in records[0]["message"]
    assert "redacted" in records[0]["tags"]
    assert "hunter2" not in records[1]["message"]
    assert "redacted" in records[1]["tags"]
    assert records[2]["message"] == 'GET /a?b=1&c=2 "curl" <x>'
    assert "hunter2" not in records[3]["message"]
    assert records[4]["json"] == {"user": "bob", "password": "[REDACTED:password]"}


def test_escapes_at_the_head_of_a_line_give_the_same_records_on_the_chunk_path() -> None:
    """Docker writes none of these escapes, but a file may hold them: a text that starts
    with an escaped blank, brace or angle bracket is asked for its level (and parsed), one
    that starts with an escaped quote or backslash names none; between runs of access
    lines the records are the general path's."""
    enc = encoder()
    access = docker_json('10.0.0.7 - - "GET / HTTP/1.1" 200 5\n', "stdout", STAMP).rstrip(b"\n")
    heads = [
        b'\\u0020{\\"level\\":\\"error\\",\\"msg\\":\\"x\\"}',
        b'\\u007b\\"level\\":\\"warn\\",\\"msg\\":\\"y\\"}',
        b'\\t\\u007b\\"level\\":\\"warn\\"}',
        b"\\u003cerror\\u003e tagged",
        b'\\"ERROR\\" quoted',
        b"\\\\ ERROR backslash",
        b"\\/ ERROR slash",
        b"\\n\\nERROR after newlines",
        b"\\u0031\\u0030.0.0.1 - - GET",
    ]
    raws = [access] * 3
    for head in heads:
        raws += [b'{"log":"' + head + b'\\n","stream":"stderr","time":"' + STAMP.encode() + b'"}']
        raws += [access] * 3
    for mode in ("auto", "none"):
        mode_enc = encoder(mode)
        fast = chunk_path("docker", raws, 7, mode_enc)
        assert fast is not None
        assert as_json(fast) == as_json(general_path("docker", raws, 7, mode_enc)), mode
    levels = [r["log"].get("level") for r in as_json(chunk_path("docker", raws, 0, enc) or [])]
    assert (levels.count("error"), levels.count("warn")) == (2, 2)


SECRETS = [
    '10.0.0.7 - - [30/Nov/2026:10:00:00 +0000] "GET /login?password=hunter2 HTTP/1.1" 200 5',
    "ERROR login failed for bob password=hunter2",
    "auth: Bearer abcdefghijklmnopqrstuvwxyz012345 sent",
]
"""Secrets in a line that names no level (filled in bulk) and in lines asked for theirs."""


def test_a_secret_anywhere_in_a_read_is_redacted_on_the_chunk_path() -> None:
    """A read holding a keyword stays on the chunk path but for the lines that hold one,
    which the general path redacts: first, middle and last line of the read, and a
    keyword's letters split over two lines (no keyword in either: nothing to hide)."""
    enc = encoder()
    access = '10.0.0.7 - - [30/Nov/2026:10:00:00 +0000] "GET /cart HTTP/1.1" 200 5'
    reads = [
        [secret if n == where else access for n in range(3)]
        for secret in SECRETS
        for where in (0, 1, 2)
    ]
    reads.append([access, "login user=bob pass", "word=hunter2 ok", access])
    for texts in reads:
        for kind in ("docker", "cri"):
            if kind == "docker":
                raws = [docker_json(t + "\n", "stdout", STAMP).rstrip(b"\n") for t in texts]
            else:
                raws = [cri_raw(t, "stdout") for t in texts]
            fast = chunk_path(kind, raws, 11, enc)
            assert fast is not None, (kind, texts)
            want = general_path(kind, raws, 11, enc)
            assert as_json(fast) == as_json(want), (kind, texts)
            for value in fast:
                assert b"hunter2" not in value or b"word=hunter2 ok" in value, value
                assert b"abcdefghijklmnop" not in value, value
            redacted = [b"redacted" in value for value in fast]
            assert redacted == [any(s in t for s in SECRETS) for t in texts], (kind, texts)


FRAGMENTS = [b"a", b"ERROR ", b" ", b"\xc3\xa4", b"\xe6\x97\xa5", b"\xf0\x9f\x9a\x80", b"\xc3",
             b"\xa4", b"\xe6\x97", b"\xf0\x9f", b"\x9a\x80", b"\xff", b"\xed\xa0\x80"]  # fmt: skip
"""Whole characters of 1-4 bytes and their pieces: a lead byte cut from its continuation,
a lone continuation, a byte UTF-8 never holds, an encoded surrogate."""


@PATHS
@given(
    st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=6).map(b"".join), min_size=1),
    st.booleans(),
)
@example([b"ok \xc3", b"\xa4 ok"], True)
@example([b"ok \xf0\x9f", b"\x9a\x80"], False)
def test_bytes_that_are_not_utf8_give_the_general_paths_records_on_the_chunk_path(
    texts: list[bytes], levels: bool
) -> None:
    """A read's non-ASCII texts are validated together: a character cut over two lines
    (its lead byte ending one, its continuation starting the next) must not pass for one.
    Every record is the general path's: invalid bytes replaced, tagged invalid_utf8."""
    enc = encoder() if levels else Encoder("/var/log/pods/shop_p_u/app/0.log", "0" * 16, META)
    for kind in ("docker", "cri"):
        if kind == "docker":
            frame = b'","stream":"stdout","time":"' + STAMP.encode() + b'"}'
            raws = [b'{"log":"' + text + b"\\n" + frame for text in texts]
        else:
            raws = [STAMP.encode() + b" stdout F " + text for text in texts]
        if levels:
            fast = chunk_path(kind, raws, 5, enc)
        else:
            found = FAST_PATHS[kind].chunk(b"\n".join(raws), 5, enc.template, 1 << 20)
            fast = None if found is None else found.values
        if fast is not None:
            assert as_json(fast) == as_json(general_path(kind, raws, 5, enc)), (kind, texts)


def test_a_path_that_is_not_utf8_is_shipped_spelled_not_a_crash(tmp_path: Path) -> None:
    """Linux names are bytes: a pod folder or container name that is not UTF-8 stopped the
    collector at every start (its records could not be written as JSON)."""
    folder = os.fsencode(tmp_path / "log" / "pods" / "shop_c\xe4rt_0f1e") + b"/ap\xffp"
    os.makedirs(folder)
    with open(folder + b"/0.log", "wb") as f:
        f.write(b"2026-11-30T10:00:00Z stdout F hello\n2026-11-30T10:00:01Z stdout F ERROR x\n")
    done = subprocess.run(
        [sys.executable, "-m", "collector", "--once", "--sink", "stdout",
         "--docker-root", str(tmp_path / "docker"), "--log-root", str(tmp_path / "log"),
         "--state-dir", str(tmp_path / "state"), "--metrics-port", "0"],
        capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [r["message"] for r in records] == ["hello", "ERROR x"]
    assert all(r["log"]["file"]["path"].endswith("/ap\\xffp/0.log") for r in records)
    assert records[0]["kubernetes"]["container"]["name"] == "ap\\xffp"
