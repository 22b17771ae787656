"""Reading and batching on their own (collector.reader): which file is read next, records
cut to what one message takes, and checkpoints that follow the sink's acknowledgements."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from collector.annotate import Annotator
from collector.budget import Budget, FileReads
from collector.files import OpenFiles
from collector.reader import Reader
from collector.sink import Done
from tests.unit.logfiles import ListSink, append, cri_line, settings


class FailingFirst(ListSink):
    """Reports the first batch as failed for good (the sink gave up on it), the rest as sent."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def send(self, key: str, values: list[bytes], done: Done, topic: str | None = None) -> None:
        self.batches += 1
        if self.batches == 1:
            done(False)
        else:
            super().send(key, values, done)


class Raw(ListSink):
    """Keeps the bytes of each record as sent."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[bytes] = []

    def send(self, key: str, values: list[bytes], done: Done, topic: str | None = None) -> None:
        self.values += values
        super().send(key, values, done)


def reader(tmp: Path, sink: ListSink, *flags: str) -> Reader:
    config = settings(tmp, *flags)
    budget = Budget(config.memory_limit)
    reads = FileReads(budget)
    annotator = Annotator(config, None)
    return Reader(config, OpenFiles(config, reads, annotator), annotator, reads, budget, sink)


def cri_file(tmp: Path) -> Path:
    folder = tmp / "log" / "pods" / "shop_cart-7d9f_0f1e2d3c" / "app"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "0.log"


def test_the_oldest_file_is_read_first_and_released_once_delivered(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("rotated 1"), cri_line("rotated 2"))
    rotated = log.with_name("0.log.20261127-020000")
    os.rename(log, rotated)
    append(log, cri_line("current"))
    sink = ListSink()
    r = reader(tmp_path, sink)
    r.files.scan()
    (group,) = r.files.groups.values()
    found = r.next_chunk(group)
    assert found is not None
    file, chunk = found
    assert file.path == str(rotated)
    r.process(file, chunk, 0.0)
    assert sink.messages() == ["rotated 1", "rotated 2"]

    found = r.next_chunk(group)
    assert found is not None
    assert found[0].path == str(log)
    assert [f.path for f in group.files] == [str(log)], "the rotated file, delivered, is let go"


def test_a_newer_file_is_read_while_the_oldest_has_no_complete_first_line(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    first = cri_line("rotated")
    append(log, first[:-1])
    rotated = log.with_name("0.log.20261127-020000")
    os.rename(log, rotated)
    append(log, cri_line("current"))
    r = reader(tmp_path, ListSink())
    r.files.scan()
    (group,) = r.files.groups.values()
    found = r.next_chunk(group)
    assert found is not None
    assert found[0].path == str(log), "a first line that may never end holds nothing back"
    append(rotated, b"\n")
    found = r.next_chunk(group)
    assert found is not None
    assert found[0].path == str(rotated), "finished after all, it is read"


def test_checkpoints_advance_only_when_the_sink_acknowledges(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, *(cri_line(f"line {n}") for n in range(3)))
    sink = ListSink()
    sink.hold = True
    r = reader(tmp_path, sink)
    r.files.scan()
    assert r.turn()
    (file,) = r.files.files.values()
    assert file.acked == 0
    assert not r.idle(), "a batch in flight"
    sink.release()
    assert file.acked == log.stat().st_size
    assert r.idle()


def test_after_a_batch_failed_for_good_the_container_keeps_its_checkpoints(
    tmp_path: Path,
) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("lost"))
    sink = FailingFirst()
    # Polled: no agent here takes the write event that brings the container back.
    r = reader(tmp_path, sink, "--inotify", "false")
    r.files.scan()
    assert r.turn()
    append(log, cri_line("sent"))
    while r.turn():
        pass
    (file,) = r.files.files.values()
    assert sink.messages() == ["sent"]
    assert file.acked == 0, "read again after a restart, the lost record with it"


def test_a_record_over_the_message_size_is_cut_to_fit_and_tagged(tmp_path: Path) -> None:
    log = cri_file(tmp_path)
    append(log, cri_line("x" * 6000), cri_line("short"))
    sink = Raw()
    r = reader(tmp_path, sink, "--kafka", "message.max.bytes=4096")
    r.files.scan()
    while r.turn():
        pass
    big, short = sink.values
    assert len(big) <= 4096 - 512
    cut = orjson.loads(big)
    assert cut["tags"] == ["truncated"]
    assert cut["message"] == "x" * len(cut["message"])
    assert len(cut["message"]) > 3000, "cut to fit, not emptied"
    assert "tags" not in orjson.loads(short)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("é" * 6000, id="two bytes a character"),
        pytest.param('{"msg":"' + "m" * 3000 + '","user":"alice"}', id="parsed: text held twice"),
    ],
)
def test_a_record_cut_to_fit_keeps_as_much_text_as_fits(tmp_path: Path, text: str) -> None:
    """Cutting as many characters as the record is bytes over emptied these: their text
    counts more than once per character in the record's bytes."""
    log = cri_file(tmp_path)
    append(log, cri_line(text))
    sink = Raw()
    r = reader(tmp_path, sink, "--kafka", "message.max.bytes=4096")
    r.files.scan()
    while r.turn():
        pass
    (value,) = sink.values
    assert len(value) <= r.message_limit
    record = orjson.loads(value)
    assert record["tags"] == ["truncated"]
    assert text.startswith(record["message"])
    assert len(value) > r.message_limit - 512, "no more cut than needed to fit, within a margin"
