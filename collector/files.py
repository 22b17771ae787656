"""Which files the agent holds open, and each one's life: found, opened, identified, let go.

A scan merges what discovery found by identity (device + inode: one file reached by two
paths is one file), opens what is new within `max_open_files`, and groups files by the
folder they live in (one container). A file is identified once its first line is complete
(format, checkpoint, encoder); it is released once no path reaches it, or it is rotated,
read to its end and delivered; it is let go earlier when excluded, unreadable, or past the
bounds on deleted files held open. Checkpoints are saved from here: a file's holds the end
of what the sink acknowledged.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.annotate import Annotator
from collector.budget import FileReads
from collector.checkpoint import Checkpoints
from collector.config import Config
from collector.decode import DECODERS, Decoder, detect
from collector.discover import GZIPPED_DOCKER, Discovery, Found, docker_named
from collector.encode import Encoder
from collector.fastpath import FAST_PATHS, FastPaths
from collector.gztail import GzipTail, started
from collector.join import Joiner
from collector.metrics import METRICS
from collector.schedule import Scheduler
from collector.tail import FINGERPRINT_BYTES, Tail
from collector.wakeup import Wakeup

if TYPE_CHECKING:
    from collector.enrich import PodInfo

# The agent's parts log under its name, as before they were parts: one name to filter on.
log = logging.getLogger("collector.agent")

ROTATE_WAIT = 5.0
"""Seconds a rotated or deleted file goes unwritten before a last line without its newline
is taken as ended: the runtime writes to a file kubelet renamed until it reopens its log (a
moment), as Fluent Bit's Rotate_Wait (5 s) allows for."""

UNSEEN_MARGIN = 60.0
"""Seconds before the previous run's last save from which a .gz without a checkpoint is
taken as never seen: a file that old would have been seen and checkpointed by that run."""

Identity = tuple[int, int]
"""A file's device and inode."""


@dataclass(eq=False)
class File:
    tail: Tail
    path: str
    group: Group
    rotated: bool
    mtime: float
    instance: str
    """Which run of the container wrote it (`instance_of`)."""
    seen: bool = True
    encoder: Encoder | None = None
    decode: Decoder | None = None
    fast: FastPaths | None = None
    acked: int = 0
    """End of the bytes whose records the sink acknowledged: what the checkpoint holds."""

    def committable(self) -> int:
        held = self.group.joiner.held_from(self)
        return self.tail.offset if held is None else min(held, self.tail.offset)


@dataclass(eq=False)
class Group:
    """The files of one container (one folder): current, rotated and unlinked-but-open."""

    folder: str
    joiner: Joiner
    meta: dict[str, Any]
    born: float = field(default_factory=time.monotonic)
    files: list[File] = field(default_factory=list)
    info: PodInfo | None = None
    """What the Kubernetes API said about this container, once it said anything."""
    seen_version: int = -1
    unanswered: bool = False
    """Its records went without metadata because the API had not answered at all yet."""
    in_flight: int = 0
    failed: bool = False
    """A batch failed for good: checkpoints of this group stay where they are this run."""

    @property
    def key(self) -> str:
        return str(self.meta.get("container.id") or self.folder)

    @property
    def pod(self) -> str:
        """Whose rate limit the container shares: its pod's uid, else its own folder."""
        return str(self.meta.get("kubernetes.pod.uid") or self.folder)


class OpenFiles:
    def __init__(self, config: Config, reads: FileReads, annotator: Annotator) -> None:
        self.config = config
        self.reads = reads
        self.annotator = annotator
        self.checkpoints = Checkpoints(config.state_dir)
        self.discovery = Discovery(
            config.docker_root, config.log_root, config.include, config.exclude
        )
        self.files: dict[Identity, File] = {}
        self.groups: dict[str, Group] = {}
        self.finished: dict[Identity, tuple[int, float, str | None]] = {}
        """Files read to their end and let go, with their size and mtime then: not opened
        again. The mtime tells a new file on a reused inode that happens to be as long. With
        the fingerprint of its checkpoint, kept while the file is on disk: forgotten after
        a day, a restart read a rotated file Docker or kubelet still kept again whole."""
        self.waiting = 0
        """Files found that max_open_files kept from being opened at the last scan."""
        self.queued: dict[Identity, float] = {}
        """Since when each of those has waited (monotonic seconds)."""
        self.opened: set[Identity] = set()
        """Every file opened in this run, for the --once summary."""
        self.scanned = False
        # --once reads everything there is and stops: nothing to wait for.
        self.wakeup = Wakeup(config.inotify and not config.once)
        """Tells which files were written (collector.wakeup)."""
        self.schedule = Scheduler(config.read_quantum, config.rate_limit, self.wakeup.polling)
        """Told which containers have lines to read (collector.schedule)."""
        self.polled: set[str] = set()
        """Containers with a file inotify could not watch: visited every turn."""
        for name, root in (("docker_root", config.docker_root), ("log_root", config.log_root)):
            if not os.path.isdir(root):
                log.warning("%s %s is not a folder: no logs will be found there", name, root)

    # --- scan -------------------------------------------------------------------------------

    def scan(self) -> None:
        merged: dict[Identity, list[Found]] = {}
        for found in self.discovery.scan():
            merged.setdefault((found.dev, found.ino), []).append(found)
        if not self.scanned:
            self.scanned = True
            self.say_found(merged)
        for file in self.files.values():
            file.seen = False
        # Identities not on disk any more can come back only as new files (inode reuse).
        self.finished = {k: v for k, v in self.finished.items() if k in merged}
        self.queued = {k: v for k, v in self.queued.items() if k in merged}
        items: Iterable[tuple[Identity, list[Found]]] = merged.items()
        if self.waiting:
            self.make_room(self.waiting)
            # Those that waited longest for a slot first: every file has its turn.
            items = sorted(items, key=lambda item: self.queued.get(item[0], math.inf))
        waiting = behind = 0
        now = time.monotonic()
        for identity, paths in items:
            file = self.files.get(identity)
            if file is None:
                size = paths[0].size
                done = self.finished.get(identity)
                if done is not None and done[:2] == (size, paths[0].mtime):
                    if done[2]:
                        self.checkpoints.touch(done[2])
                    continue
                if size == 0:
                    continue
                # Excluded first: a file never to be opened waits for no slot.
                if self.annotator.excluded(merged_meta(paths)):
                    continue
                if len(self.files) >= self.config.max_open_files:
                    waiting += 1
                    self.queued.setdefault(identity, now)
                    continue
                file = self.open(identity, paths)
                if file is None:
                    continue
                self.queued.pop(identity, None)
            file.seen = True
            file.rotated = all(p.rotated for p in paths)
            mtime = max(p.mtime for p in paths)
            # Written without growing: rewritten in place (copytruncate to the same size),
            # which the read's own check tells from a touch.
            rewritten = mtime != file.mtime
            file.mtime = mtime
            file.path = preferred(paths).path
            if file.encoder is not None:
                file.encoder.rename(file.path)
            if file.tail.fingerprint:
                self.checkpoints.touch(file.tail.fingerprint)
            # A .gz's own size is not its content's.
            size = file.tail.size() if isinstance(file.tail, GzipTail) else paths[0].size
            behind += max(0, size - file.tail.offset)
            if size != file.tail.offset or rewritten:
                # The safety net under inotify: what no event reported is read now.
                self.schedule.mark(file.group.folder)
        METRICS.behind.set(behind)
        if waiting and waiting != self.waiting:
            log.warning("max_open_files=%d reached: %d files wait", len(self.files), waiting)
        self.waiting = waiting
        METRICS.files_waiting.set(waiting)
        for group in self.groups.values():
            group.files.sort(key=age)
        self.bound_deleted()
        METRICS.files_open.set(len(self.files))
        self.wakeup.watch_folders(self.discovery.folders)
        self.schedule.forget_pods({g.pod for g in self.groups.values()})

    def say_found(self, merged: dict[Identity, list[Found]]) -> None:
        """What the first scan found, so a wrong root or glob shows at start."""
        folders = {os.path.dirname(preferred(paths).real) for paths in merged.values()}
        log.info("found %d log files of %d containers", len(merged), len(folders))
        if not merged and (self.config.include or self.config.exclude):
            log.warning(
                "no log file passes include %s and exclude %s yet",
                self.config.include,
                self.config.exclude,
            )

    # --- open and identify ------------------------------------------------------------------

    def open(self, identity: Identity, paths: list[Found]) -> File | None:
        best = preferred(paths)
        folder = os.path.dirname(best.real)
        kind = GzipTail if best.gzipped else Tail
        try:
            tail = kind.open(best.path, folder, self.config.max_record_bytes + 64 * 1024)
        except OSError as exc:
            log.warning("cannot open %s: %s", best.path, exc)
            return None
        if (tail.dev, tail.ino) != identity:
            # Replaced between the scan and the open: the next scan sees the new file.
            tail.close()
            return None
        if isinstance(tail, GzipTail) and not self.unfinished(tail, best):
            tail.close()
            return None
        group = self.groups.get(folder)
        meta = merged_meta(paths)
        if group is None:
            joiner = Joiner(
                self.annotator.multiline_rule(meta),
                self.config.max_record_bytes,
                self.config.multiline_timeout,
                self.config.partial_timeout,
                lambda file: file.instance,
            )
            group = self.groups[folder] = Group(folder, joiner, meta)
        else:
            group.meta.update(meta)
        file = File(tail, best.path, group, best.rotated, best.mtime, instance_of(best.real))
        group.files.append(file)
        self.files[identity] = file
        self.opened.add(identity)
        if not self.wakeup.follow(identity, tail.fd) and not self.wakeup.polling:
            self.polled.add(folder)
        self.schedule.mark(folder)
        log.debug("opened %s", best.path)
        return file

    def unfinished(self, tail: GzipTail, found: Found) -> bool:
        """Whether a .gz holds what was never read of a file: then it is read.

        That is the rest of a file begun before a restart and not read to its end, or a
        whole file written after the previous run last saved its checkpoints (kubelet
        rotated it twice while the collector was away). Older files without a checkpoint
        are history from before the collector knew them; a .gz whose original is still
        there or still open is read through the original.
        """
        if os.path.exists(found.path.removesuffix(".gz")):
            return False
        identified = tail.identify()
        if identified and any(
            # A container's newer files wait, open but not yet identified, while an
            # older one is read: identified here, or the .gz would be a second reader.
            f.tail.folder == tail.folder
            and f.tail.identify()
            and f.tail.fingerprint == tail.fingerprint
            for f in self.files.values()
        ):
            return False
        resume = self.checkpoints.get(tail.fingerprint) if tail.fingerprint else None
        stopped = self.checkpoints.saved_at
        if resume is None and identified:
            begun = started(tail.first_bytes(FINGERPRINT_BYTES))
            if begun is not None and begun >= stopped - UNSEEN_MARGIN:
                resume = 0
        # The gzip trailer holds the content's length modulo 2**32.
        if resume is None or resume % 2**32 == tail.isize:
            self.finished[(found.dev, found.ino)] = (found.size, found.mtime, tail.fingerprint)
            return False
        METRICS.gzip_files_read.inc()
        log.info("reading the rest of %s from %d", found.path, resume)
        return True

    def identify(self, file: File) -> bool:
        """Once the first line is complete: format, checkpoint, encoder."""
        tail = file.tail
        if not tail.identify():
            return False
        assert tail.fingerprint is not None
        kind = detect(tail.first_bytes(512), docker_named(os.path.basename(file.path)))
        file.decode = DECODERS[kind]
        file.fast = FAST_PATHS[kind]
        resume = self.checkpoints.get(tail.fingerprint)
        if resume is not None and resume <= tail.size():
            tail.seek(resume)
            file.acked = resume
            log.debug("resuming %s at %d", file.path, resume)
        file.encoder = self.annotator.encoder(file, "docker" if kind == "docker" else "cri")
        return True

    def restart(self, file: File) -> bool:
        """copytruncate: the file holds new content, read from its start; True once identified.

        What joining holds of the old content will never be completed, and its offsets are
        not the new content's: it is handed to a stand-in for the old content (`replaced`),
        so it is shipped alone, under the old content's ids, and no checkpoint waits for it.
        """
        log.info("%s was truncated; reading it from the start", file.path)
        replaced(file)
        file.tail.restart()
        file.encoder = None
        file.acked = 0
        return self.identify(file)

    # --- letting go -------------------------------------------------------------------------

    def releasable(self, file: File) -> bool:
        """A file no path reaches any more, or a rotated one, read to its end and delivered."""
        if file.seen and not file.rotated:
            return False
        tail = file.tail
        return (
            tail.size() == tail.offset == file.acked and file.group.joiner.held_from(file) is None
        )

    def make_room(self, wanted: int) -> None:
        """Up to `wanted` files read to their end and delivered are let go, least recently
        written first, for files waiting for a slot: kept open until they are rotated, the
        files past max_open_files were never read. One written to again waits its turn."""
        idle = [
            f
            for f in self.files.values()
            if f.encoder is not None
            and f.tail.size() == f.tail.offset == f.acked
            and f.group.joiner.held_from(f) is None
        ]
        for file in sorted(idle, key=lambda f: f.mtime)[:wanted]:
            METRICS.files_made_room.inc()
            self.release(file)

    def ended_unfinished(self, file: File) -> bool:
        """A rotated file, or one no path reaches, read to its end but for a last line
        without its newline and not written to for ROTATE_WAIT: that line is never
        finished (the runtime writes to the new file), and the file would be held for
        ever, its line unsent."""
        if file.seen and not file.rotated:
            return False
        tail = file.tail
        if tail.unread() or tail.size() == tail.offset or file.encoder is None:
            return False
        return time.time() - os.fstat(tail.fd).st_mtime >= ROTATE_WAIT

    def release(self, file: File) -> None:
        self.save_file(file)
        identity = (file.tail.dev, file.tail.ino)
        st = os.fstat(file.tail.fd)
        self.finished[identity] = (st.st_size, st.st_mtime, file.tail.fingerprint)
        del self.files[identity]
        file.group.files.remove(file)
        self.reads.forget(file.tail)
        self.wakeup.unfollow(identity)
        file.tail.close()
        log.debug("released %s", file.path)

    def let_go(self, file: File, reason: str, why: str) -> None:
        """Close a file before its end; what it held unread is counted and said once."""
        unread = max(0, file.tail.size() - file.tail.offset)
        METRICS.files_let_go.labels(reason).inc()
        METRICS.unread_bytes_let_go.labels(reason).inc(unread)
        level = logging.INFO if reason == "excluded" else logging.WARNING
        log.log(level, "let go of %s with %d bytes unread: %s", file.path, unread, why)
        self.release(file)

    def exclude(self, group: Group) -> None:
        """A pod or container excluded after its files were opened: they are closed.

        What is written until then is skipped for good (the checkpoint moves to the end),
        so lifting the exclusion later does not ship what was excluded; what joining held
        of it is dropped.
        """
        for file in list(group.files):
            if file.encoder is not None:
                file.acked = file.tail.size()
            self.let_go(file, "excluded", "its pod or container is excluded")
        group.joiner.pieces.clear()
        group.joiner.groups.clear()
        if group.in_flight == 0:
            self.drop(group)

    def drop(self, group: Group) -> None:
        """A container with no file left, nothing held and nothing in flight."""
        del self.groups[group.folder]
        self.schedule.forget(group.folder)
        self.polled.discard(group.folder)

    def reconfigure(self, config: Config) -> None:
        """New include/exclude: files they no longer select are let go (reason `excluded`).

        Their checkpoints stay, so selecting them again later resumes where reading stopped.
        """
        self.config = config
        self.discovery.include, self.discovery.exclude = config.include, config.exclude
        for file in list(self.files.values()):
            if not self.discovery.wanted(file.path):
                self.let_go(file, "excluded", "no longer selected by include/exclude")

    def bound_deleted(self) -> None:
        """Files deleted on disk but still open keep their space: past the bounds (count and
        bytes), the oldest are let go, so a broker away for long cannot fill the node's disk."""
        deleted: list[tuple[float, int, File]] = []
        for file in self.files.values():
            try:
                st = os.fstat(file.tail.fd)
            except OSError:
                continue
            if st.st_nlink == 0:
                deleted.append((st.st_mtime, st.st_size, file))
        deleted.sort(key=lambda d: d[0])
        total = sum(d[1] for d in deleted)
        files, limit = self.config.max_deleted_files, self.config.max_deleted_bytes
        while deleted and (len(deleted) > files or total > limit):
            _, size, file = deleted.pop(0)
            total -= size
            why = f"deleted files held open exceed max_deleted_files={files} or "
            self.let_go(file, "deleted_limit", why + f"max_deleted_bytes={limit}")
        METRICS.deleted_open_files.set(len(deleted))
        METRICS.deleted_open_bytes.set(total)

    # --- checkpoints ------------------------------------------------------------------------

    def save_file(self, file: File) -> None:
        if file.tail.fingerprint is not None and file.encoder is not None:
            self.checkpoints.set(file.tail.fingerprint, file.acked, file.path)

    def save(self) -> None:
        for file in self.files.values():
            self.save_file(file)
        self.checkpoints.save()

    def close(self) -> None:
        for file in self.files.values():
            file.tail.close()
        self.wakeup.close()


def replaced(file: File) -> None:
    """Records joining holds from a file's content that was truncated away go on as records
    of a stand-in for that content: its encoder (the old ids), and another run of the
    container, so the new content's first line ends them instead of running on into it. Not
    among its group's files, it holds back no checkpoint: the old content is gone, its bytes
    cannot be read again anyway."""
    joiner = file.group.joiner
    if joiner.held_from(file) is None:
        return
    old = File(
        file.tail,
        file.path,
        file.group,
        file.rotated,
        file.mtime,
        f"{file.instance} before truncation",
        encoder=file.encoder,
        decode=file.decode,
        fast=file.fast,
    )
    joiner.hand_over(file, old)


def merged_meta(paths: list[Found]) -> dict[str, Any]:
    """What all the paths that reach one file tell about it."""
    meta: dict[str, Any] = {}
    for p in paths:
        meta.update(p.meta)
    return meta


def instance_of(real: str) -> str:
    """The run of its container a log file is from: its name up to `.log`.

    kubelet gives each run of a CRI container a file of its own in the container's folder
    (`0.log`, `1.log` after a restart) and rotates a run's file into `0.log.<time>`, later
    `.gz`: all of run 0. Docker rotates `<id>-json.log` into `<id>-json.log.1`, and a restarted
    Docker container writes on in the same file: one run as far as names can tell.
    """
    return os.path.basename(real).partition(".log")[0]


def preferred(paths: list[Found]) -> Found:
    """The name shown in log.file.path: the real file over a symlink, pods over containers."""
    return min(paths, key=lambda p: (p.path != p.real, "/containers/" in p.path, p.path))


def age(file: File) -> tuple[int, float, str]:
    """Oldest first: rotated files hold lines written before the current one.

    kubelet compresses every rotated file but the newest, so a .gz is older than any
    rotated file left plain; a .gz's mtime is when it was compressed, its name tells when
    it was rotated (Docker's `.2.gz` is older than its `.1.gz`). A file no path reaches
    any more keeps the kind and mtime it was last seen with: a current file renamed and
    unlinked between two scans is still older than the new current one, yet newer than a
    rotated file left unread.
    """
    if isinstance(file.tail, GzipTail):
        docker = GZIPPED_DOCKER.search(file.path)
        return (1, -int(docker.group(1)) if docker else 0.0, file.path)
    return (2 if file.rotated else 3, file.mtime, file.path)
