"""Per container, what its pod says: the metadata its records carry and the settings it gets.

The node's settings choose a container's multi-line rule (`--multiline` globs) and parser
(`--parser`); its pod's annotations, once the Kubernetes API answered, override both and may
exclude it. The `Annotator` builds each file's encoder from that, brings the encoders and the
joiner up to date when the API says something new, and tells the reader whether a
container's records wait for the API or are excluded.

A container the API does not know yet waits `metadata_wait` for its pod (the watch may tell
of a new pod after its first lines), counted from when the API first answered if that came
later than its files: after a restart every container is found at once, while the first
lists may take seconds on a loaded node, and counting from the files would send whole
backlogs without metadata. Until that first answer the wait is `metadata_sync_wait`.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import TYPE_CHECKING, Any

from collector.config import Config
from collector.encode import Encoder
from collector.metrics import METRICS
from collector.multiline import MultilineRule, rule_for
from collector.process import Processor
from collector.structured import Limits, mode

if TYPE_CHECKING:
    # The kubernetes client is imported only where enrichment is configured.
    from collector.enrich import Enricher, PodInfo
    from collector.files import File, Group

# The agent's parts log under its name, as before they were parts: one name to filter on.
log = logging.getLogger("collector.agent")


def processor(config: Config) -> Processor:
    """The encode stage's text work (parsing, levels, redaction) the settings ask for."""
    return Processor(
        Limits(config.parse_max_chars, config.parse_max_depth, config.parse_max_fields),
        config.redact,
        config.redact_builtin,
    )


class Annotator:
    def __init__(self, config: Config, enricher: Enricher | None) -> None:
        self.config = config
        self.enricher = enricher
        self.processor = processor(config)

    def excluded(self, meta: dict[str, Any]) -> bool:
        """Excluded by annotation, as far as the API said yet."""
        if self.enricher is None:
            return False
        info = self.enricher.lookup(meta)
        return info is not None and info.excluded

    def metadata(self, group: Group, now: float) -> bool:
        """Take what the API knows of the group's pod; False while its records should wait."""
        enricher = self.enricher
        if enricher is None:
            return True
        if group.seen_version != enricher.version:
            group.seen_version = enricher.version
            info = enricher.lookup(group.meta)
            # A pod purged after its grace keeps the metadata its files already had.
            if info is not None and info != group.info:
                self.apply(group, info)
        if group.info is None:
            return self.waited(group, enricher, now)
        return not group.info.excluded

    def waited(self, group: Group, enricher: Enricher, now: float) -> bool:
        """Whether a container the API has not told of has waited long enough."""
        # Deadlines as `start + wait`, not `now - start >= wait`: the difference of two
        # clock readings can fall a rounding short of the wait the sum reaches.
        answered = enricher.answered_at
        if answered is not None:
            return now >= max(group.born, answered) + self.config.metadata_wait
        if now < group.born + self.config.metadata_sync_wait:
            return False
        if not group.unanswered:
            group.unanswered = True
            METRICS.metadata_sync_expired.inc()
            log.warning(
                "kubernetes API: no answer to the first lists in metadata_sync_wait=%gs: "
                "records of %s go without pod metadata until it answers",
                self.config.metadata_sync_wait,
                group.folder,
            )
        return True

    def apply(self, group: Group, info: PodInfo) -> None:
        group.info = info
        group.joiner.rule = self.group_rule(group)
        for file in group.files:
            if file.encoder is not None:
                file.encoder.mode = self.parser_mode(group)
                file.encoder.update(self.record_meta(group), missing=False)

    def encoder(self, file: File, runtime: str) -> Encoder:
        """The encoder of a newly identified file; `runtime` where the path did not say."""
        assert file.tail.fingerprint is not None
        group = file.group
        meta = self.record_meta(group)
        meta.setdefault("container.runtime", runtime)
        encoder = Encoder(
            file.path, file.tail.fingerprint, meta, self.processor, self.parser_mode(group)
        )
        if self.enricher is not None and group.info is None:
            encoder.update(meta, missing=True)
        return encoder

    def reconfigure(self, config: Config, groups: list[Group]) -> None:
        """New parsing, redaction and multi-line settings for every open container."""
        self.config = config
        self.processor = processor(config)
        for group in groups:
            group.joiner.rule = self.group_rule(group)
            group.joiner.timeout = config.multiline_timeout
            for file in group.files:
                if file.encoder is not None:
                    file.encoder.processor = self.processor
                    file.encoder.mode = self.parser_mode(group)

    def group_rule(self, group: Group) -> MultilineRule | None:
        """The group's multi-line rule: its pod's annotation when valid, else the node's."""
        rule = self.multiline_rule(group.meta)
        wanted = group.info.multiline if group.info is not None else None
        if wanted:
            try:
                rule = rule_for(wanted)
            except ValueError as exc:
                log.warning("pod annotation ignored for %s: %s", group.folder, exc)
        return rule

    def parser_mode(self, group: Group) -> str:
        """The container's parser: its pod's annotation when valid, else the node's."""
        wanted = group.info.parser if group.info is not None else None
        if wanted is not None:
            try:
                return mode(wanted)
            except ValueError as exc:
                log.warning("pod annotation ignored for %s: parser %s", group.folder, exc)
        return self.config.parser

    def record_meta(self, group: Group) -> dict[str, Any]:
        meta = dict(group.meta)
        if group.info is not None:
            meta.update(group.info.fields)
        meta["host.name"] = self.config.node_name
        return meta

    def multiline_rule(self, meta: dict[str, Any]) -> MultilineRule | None:
        """The node's rule for a container: the first `--multiline` glob its name matches."""
        name = "/".join(
            str(meta.get(k, ""))
            for k in ("kubernetes.namespace", "kubernetes.pod.name", "kubernetes.container.name")
        )
        for glob, rule in self.config.multiline:
            if fnmatch.fnmatchcase(name, glob):
                return rule
        return None
