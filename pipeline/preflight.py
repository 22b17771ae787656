"""Before consuming: is Elasticsearch there, and has `pipeline setup` installed the templates?

Said in one sentence, the one /readyz gives: records read before the templates exist would
be indexed with Elasticsearch's guessed mappings, which no later setup can mend.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from elastic_transport import ApiError, TransportError
from elasticsearch import Elasticsearch

from pipeline.config import shown
from pipeline.setup import template_states

log = logging.getLogger("pipeline")


class Trouble(NamedTuple):
    kind: str
    """What went wrong, without the details that change from one try to the next."""
    text: str


def problem(es: Elasticsearch, url: str) -> Trouble | None:
    """What keeps the indexer from starting, None when nothing does."""
    where = f"Elasticsearch at {shown(url)}"
    try:
        es.info()
        missing, outdated = template_states(es)
    except ApiError as exc:
        if exc.meta.status == 403:
            # Rights to index need not include reading templates: index, and say so.
            log.warning("%s: cannot check the index templates (403): going on unchecked", where)
            return None
        return Trouble(str(exc.meta.status), f"{where} answered {exc.meta.status}: {exc.message}")
    except TransportError as exc:
        return Trouble("unreachable", f"{where} cannot be reached: {exc.message}")
    if missing:
        names = ", ".join(missing)
        return Trouble(
            "templates",
            f"{where} lacks the index templates {names}: run `python -m pipeline setup`",
        )
    if outdated:
        log.warning(
            "%s: index templates %s differ from this version's: run `python -m pipeline setup`",
            where,
            ", ".join(outdated),
        )
    return None
