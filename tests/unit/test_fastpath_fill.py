"""The chunk path fills a file's record template by joining its pieces around each line's
fields (collector.fastpath.filled): byte for byte what `template % fields` gives, for
every template a file may have (a `%` in its path, fingerprint or metadata is `%%` there)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import fastpath
from collector.encode import Encoder

STAMP = b"2026-11-30T10:00:00.123456789Z"
ODD = "100%s %d %% %%s %i"
"""What a %-template must keep as text: conversions, an escaped percent, and a stray one."""


def missing() -> Encoder:
    """Without pod metadata: its tag goes into the template too."""
    encoder = Encoder("/x.log", "f", {"host.name": "n"})
    encoder.update({"host.name": "n%"}, missing=True)
    return encoder


ENCODERS = [
    Encoder("/var/log/pods/shop_p_u/app/0.log", "0123456789abcdef", {"host.name": "n"}),
    Encoder(
        f"/var/log/pods/shop_{ODD}_u/app/0.log",
        f"fp{ODD}",
        {"host.name": ODD, "kubernetes.namespace": "%", "container.id": "%%"},
    ),
    missing(),
]


def by_format(
    template: bytes,
    times: Sequence[bytes],
    texts: Sequence[bytes],
    streams: Sequence[bytes],
    starts: Sequence[int],
) -> list[bytes]:
    fields = zip(times, texts, streams, starts, strict=True)
    return [template % (t, x, s, o, o) for t, x, s, o in fields]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_filling_by_pieces_gives_the_template_bytes(encoder: Encoder) -> None:
    times = (STAMP, STAMP[:20] + b"Z", STAMP)
    texts = (b"GET /cart 200", b"100% %s %d %%", b"")
    streams = (b"stdout", b"stderr", b"stdout")
    # Two lines at least: each line's offset fills both of its holes, not the next line's.
    starts = [0, 17, 2**40]
    filled = list(fastpath.filled(encoder.template, times, texts, streams, starts))
    assert filled == by_format(encoder.template, times, texts, streams, starts)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
            st.sampled_from(["stdout", "stderr"]),
        ),
        min_size=1,
        max_size=10,
    ),
    st.integers(0, 2**50),
    st.sampled_from(ENCODERS),
)
def test_the_chunk_paths_give_the_template_bytes_for_every_line(
    lines: list[tuple[str, str]], offset: int, encoder: Encoder
) -> None:
    """Both runtimes' chunk paths (no processor: the levelless fill) against %-formatting
    each line; lines the paths decline (a backslash or quote in CRI text) prove nothing."""
    raws = [f"{STAMP.decode()} {stream} F {text}".encode() for text, stream in lines]
    data = b"\n".join(raws)
    found = fastpath.cri_chunk(data, offset, encoder.template, 1 << 20)
    if found is None:
        return
    assert found.lines == len(raws)
    got = found.values
    starts: list[int] = []
    at = offset
    for raw in raws:
        starts.append(at)
        at += len(raw) + 1
    texts = fastpath.cri_escaped(tuple(t.encode() for t, _ in lines), data)
    want = by_format(
        encoder.template,
        [STAMP] * len(lines),
        texts,
        [s.encode() for _, s in lines],
        starts,
    )
    assert got == want


def test_a_template_without_five_holes_is_refused() -> None:
    with pytest.raises(ValueError, match="five holes"):
        fastpath.pieces(b'{"only":"%s"}')
