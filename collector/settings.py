"""Settings from a YAML file, then the environment, then flags (later wins).

One table of options drives all three sources and `--help`, so they cannot drift apart. A
wrong setting stops the program at start with one line naming it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml


class SettingError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class Option:
    name: str
    """The YAML key; the flag is the same with dashes."""
    default: Any
    help: str
    kind: Callable[[str], Any] = str
    """Turns a string (environment, flag) into the value; also checks YAML scalars."""
    env: str | None = None
    many: bool = False
    """A list: the flag repeats, the environment splits on commas, YAML gives a list."""
    switch: bool = False
    """A flag without a value."""


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"must be a positive whole number, got {text}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port from 0 to 65535 (0: off), got {text}")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"must be zero or more seconds, got {text}")
    return value


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        # The value may well be a password typed with the wrong separator: not echoed.
        raise ValueError("expected KEY=VALUE, got no '=' (the value is not shown)")
    return key.strip(), value.strip()


def parser(prog: str, description: str, options: Sequence[Option]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", help="YAML file with settings (keys as the flags, with _)")
    for o in options:
        flag = "--" + o.name.replace("_", "-")
        extra = f" (env {o.env})" if o.env else ""
        shown = f" [default: {o.default}]" if o.default not in (None, [], {}, False) else ""
        text = (o.help + extra + shown).replace("%", "%%")
        if o.switch:
            p.add_argument(flag, dest=o.name, action="store_true", default=None, help=text)
        elif o.many or isinstance(o.default, dict):
            p.add_argument(flag, dest=o.name, action="append", default=None, help=text)
        else:
            p.add_argument(flag, dest=o.name, default=None, help=text)
    return p


def convert(option: Option, value: Any, source: str) -> Any:
    try:
        if option.many:
            items = value if isinstance(value, list) else str(value).split(",")
            return [convert_one(option, item) for item in items if str(item).strip() != ""]
        return convert_one(option, value)
    except (TypeError, ValueError) as exc:
        raise SettingError(f"setting {option.name} ({source}): {exc}") from exc


def convert_one(option: Option, value: Any) -> Any:
    if option.kind is boolean and isinstance(value, bool):
        return value
    if isinstance(value, dict | list):
        raise ValueError(f"expected a single value, got {type(value).__name__}")
    return option.kind(str(value))


def load(
    prog: str, description: str, options: Sequence[Option], argv: Sequence[str] | None
) -> dict[str, Any]:
    """The merged settings; raises SettingError naming the first wrong one."""
    args = parser(prog, description, options).parse_args(argv)
    values: dict[str, Any] = {o.name: o.default for o in options}
    by_name = {o.name: o for o in options}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingError(f"setting config: cannot read {args.config}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise SettingError(f"setting config: {args.config} must hold a mapping")
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            if name not in by_name:
                raise SettingError(f"setting {key} (in {args.config}): unknown setting")
            option = by_name[name]
            if isinstance(option.default, dict):
                if not isinstance(value, dict):
                    raise SettingError(f"setting {key} (in {args.config}): expected a mapping")
                values[name] = {str(k): v for k, v in value.items()}
            else:
                values[name] = convert(option, value, args.config)
    for option in options:
        if option.env and os.environ.get(option.env, "") != "":
            values[option.name] = convert(option, os.environ[option.env], f"env {option.env}")
    for option in options:
        given = getattr(args, option.name)
        if given is None:
            continue
        if isinstance(option.default, dict):
            pairs = dict(convert(Option(option.name, [], "", key_value, many=True), given, "flag"))
            values[option.name] = {**values[option.name], **pairs}
        else:
            values[option.name] = convert(option, given, "flag")
    return values
