"""Kafka topic names, as both programs take them in their settings."""

from __future__ import annotations

import re

LEGAL = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def legal(name: str) -> bool:
    """A name Kafka accepts for a topic."""
    return name not in (".", "..") and LEGAL.fullmatch(name) is not None


def topic_name(text: str) -> str:
    """The settings' check of a plain topic name."""
    if not legal(text):
        raise ValueError(
            f"must be a Kafka topic name ([a-zA-Z0-9._-], 1 to 249 characters), got {text!r}"
        )
    return text
