"""Settings from a YAML file, then the environment, then flags (later wins).

One table of options drives all three sources and `--help`, so they cannot drift apart. A
wrong setting stops the program at start with one line naming it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

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
    commands: tuple[str, ...] = ()
    """The subcommands that take it (none: the program has no subcommands, or all take it)."""
    null: str | None = None
    """The text a null in the file (null, ~, no value) stands for; None: the default stays.
    The old loader gave a null to the option as the text None, which a few options read
    as their word none: files written for it keep that meaning."""

    def for_command(self, command: str | None) -> bool:
        return not self.commands or command is None or command in self.commands


class Parser(argparse.ArgumentParser):
    """Usage mistakes become one line naming them, not a page of usage."""

    def error(self, message: str) -> NoReturn:
        raise SettingError(f"{message} (`{self.prog} --help` lists the settings)")


def version() -> str:
    try:
        return importlib.metadata.version("logferry")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


LARGEST = 2**53
"""The largest number a setting takes: past it a float loses whole numbers, and a size or a
duration given with 400 digits overflowed deep inside the program."""

LONGEST = 365 * 86400.0
"""The longest duration a setting takes, in seconds: time.sleep refuses some longer ones."""


def bounded(value: int, text: str) -> int:
    if value > LARGEST:
        raise ValueError(f"must be at most {LARGEST}, got {text.strip()[:40]!r}")
    return value


def whole_number(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"must be a whole number, got {text!r}") from None
    return bounded(value, text)


def positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"must be a positive whole number, got {text!r}")
    return bounded(value, text)


def port(text: str) -> int:
    value = whole_number(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port from 0 to 65535 (0: off), got {text}")
    return value


# Decimal units as Kubernetes and Docker write them (5MB, 100k), binary with an i (64KiB).
SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}  # fmt: skip
SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def size(text: str) -> int:
    """A positive number of bytes: 5000000, 5MB, 5 MB, 64KiB, 1.5MiB."""
    found = SIZE.fullmatch(text)
    unit = SIZE_UNITS.get(found.group(2).lower()) if found else None
    amount = float(found.group(1)) * unit if found and unit else 0.0
    if amount > LARGEST:
        raise ValueError(f"must be at most {LARGEST} bytes, got {text.strip()[:40]!r}")
    value = int(amount)
    if value <= 0:
        raise ValueError(f"must be a size such as 5000000, 5MB or 64KiB, got {text!r}")
    return value


DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}
DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*")


def seconds(text: str) -> float:
    """Zero or more seconds: 30, 30s, 500ms, 2m, 1h."""
    found = DURATION.fullmatch(text)
    if found is None:
        raise ValueError(f"must be a duration such as 30s, 500ms or 2m, got {text!r}")
    value = float(found.group(1)) * DURATION_UNITS[found.group(2)]
    if value > LONGEST:
        raise ValueError(f"must be at most a year, got {text.strip()[:40]!r}")
    return value


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        # The value may well be a password typed with the wrong separator: not echoed.
        raise ValueError("expected KEY=VALUE, got no '=' (the value is not shown)")
    return key.strip(), value.strip()


def parser(prog: str, description: str, options: Sequence[Option]) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=description)
    p.add_argument("--config", help="YAML file with settings (keys as the flags, with _)")
    p.add_argument("--version", action="version", version=f"logferry {version()}")
    for o in options:
        flag = "--" + o.name.replace("_", "-")
        extra = f" (env {o.env})" if o.env else ""
        shown = f" [default: {o.default}]" if o.default not in (None, "", [], {}, False) else ""
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
            given = [item for item in items if item is not None and str(item).strip() != ""]
            return [convert_one(option, item) for item in given]
        return convert_one(option, value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SettingError(f"setting {option.name} ({source}): {exc}") from exc


def convert_one(option: Option, value: Any) -> Any:
    if option.kind is boolean and isinstance(value, bool):
        return value
    if isinstance(value, dict | list):
        raise ValueError(f"expected a single value, got {type(value).__name__}")
    return option.kind(str(value))


class YamlBoolean(str):
    """A plain scalar YAML 1.1 reads as a boolean (yes, Off, TRUE...), kept as the text
    written: an option of ours reads its own words (`kubernetes: on`), while a kafka map
    takes it as the boolean the old loader gave librdkafka."""

    @property
    def truth(self) -> bool:
        return self.lower() in ("yes", "on", "true")


class TextLoader(yaml.BaseLoader):
    """YAML whose scalars are all text, each option reading its own, and whose keys are
    each given once. YAML 1.1's guesses changed what was written: a password 012345 was
    read as the octal 5349, `node_name: 1:20` as 80 seconds; a key given twice silently
    took the last value. Only its nulls and booleans are still told apart (as YAML 1.1
    does: unquoted), for what files written for the old loader meant by them."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        assert isinstance(node, yaml.MappingNode)
        seen: set[str] = set()
        for key_node, _ in node.value:
            key = str(self.construct_object(key_node, deep=deep))
            name = key.replace("-", "_")
            if name in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice", key_node.start_mark
                )
            seen.add(name)
        return super().construct_mapping(node, deep)


def construct_null(loader: yaml.BaseLoader, node: yaml.Node) -> None:
    return None


def construct_boolean(loader: yaml.BaseLoader, node: yaml.Node) -> YamlBoolean:
    assert isinstance(node, yaml.ScalarNode)
    return YamlBoolean(node.value)


# YAML 1.1's spellings, as PyYAML's SafeLoader resolves them (it matches from the start).
NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
BOOLEAN = re.compile(
    r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"
)
TextLoader.add_implicit_resolver("tag:yaml.org,2002:null", NULL, ["~", "n", "N", ""])
TextLoader.add_implicit_resolver("tag:yaml.org,2002:bool", BOOLEAN, list("yYnNtTfFoO"))
TextLoader.add_constructor("tag:yaml.org,2002:null", construct_null)
TextLoader.add_constructor("tag:yaml.org,2002:bool", construct_boolean)


def librdkafka_map(given: dict[Any, Any]) -> dict[str, Any]:
    """A kafka map from the file as the old loader gave it to librdkafka: a boolean as true
    or false (librdkafka refuses yes, no, on and off), a null left out, for librdkafka's
    default (it refused a null: `cannot be set to empty value`)."""
    return {
        str(key): ("true" if value.truth else "false") if isinstance(value, YamlBoolean) else value
        for key, value in given.items()
        if value is not None
    }


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message in one line: it spans two to four, each naming the file again."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
        if exc.context and exc.context_mark is not None:
            since = exc.context_mark
            text += f" ({exc.context} from line {since.line + 1}, column {since.column + 1})"
        return text
    if isinstance(exc, yaml.reader.ReaderError):
        return f"position {exc.position}: character #x{exc.character:04x}: {exc.reason}"
    return " ".join(str(exc).split())


def settings_file(path: str) -> dict[Any, Any]:
    """The --config file's mapping; raises SettingError, in one line, for a file that is
    missing, no UTF-8 text, no YAML or no mapping."""
    where = f"setting config ({path})"
    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.load(f, Loader=TextLoader) or {}
    except OSError as exc:
        raise SettingError(f"{where}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SettingError(f"{where}: not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except yaml.YAMLError as exc:
        raise SettingError(f"{where}: {yaml_problem(exc)}") from exc
    except RecursionError as exc:
        # PyYAML composes nested collections recursively: a few thousand levels overflow.
        raise SettingError(f"{where}: nested too deeply") from exc
    if not isinstance(loaded, dict):
        got = "a list" if isinstance(loaded, list) else "a single value"
        raise SettingError(f"{where}: must hold a mapping of settings, got {got}")
    return loaded


def load(
    prog: str,
    description: str,
    options: Sequence[Option],
    argv: Sequence[str] | None,
    command: str | None = None,
) -> dict[str, Any]:
    """The merged settings; raises SettingError naming the first wrong one.

    With a command, only its options are flags and read from the environment; a YAML file may
    still hold the others (one ConfigMap serves every command), which keep their defaults.
    """
    taking = [o for o in options if o.for_command(command)]
    args = parser(prog, description, taking).parse_args(argv)
    values: dict[str, Any] = {o.name: o.default for o in options}
    by_name = {o.name: o for o in options}
    if args.config:
        loaded = settings_file(args.config)
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            if name not in by_name:
                raise SettingError(f"setting {key} (in {args.config}): unknown setting")
            option = by_name[name]
            if not option.for_command(command):
                continue
            if value is None:
                if option.null is None:
                    continue
                value = option.null
            if isinstance(option.default, dict):
                if not isinstance(value, dict):
                    raise SettingError(f"setting {key} (in {args.config}): expected a mapping")
                values[name] = librdkafka_map(value)
            else:
                values[name] = convert(option, value, args.config)
    for option in taking:
        if option.env and os.environ.get(option.env, "") != "":
            values[option.name] = convert(option, os.environ[option.env], f"env {option.env}")
    for option in taking:
        given = getattr(args, option.name)
        if given is None:
            continue
        if isinstance(option.default, dict):
            pairs = dict(convert(Option(option.name, [], "", key_value, many=True), given, "flag"))
            values[option.name] = {**values[option.name], **pairs}
        else:
            values[option.name] = convert(option, given, "flag")
    return values
