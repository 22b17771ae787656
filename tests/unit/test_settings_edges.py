"""Settings nobody chose: huge numbers, files that are not text, YAML's guesses, keys given
twice, names Kafka refuses. Each is one line naming the setting, never a traceback, and a
value is used as it was written, but for what files written for YAML 1.1 meant by a null
or by a boolean in a kafka map."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from collector.config import OPTIONS as COLLECTOR_OPTIONS
from collector.config import parse as collector_settings
from logferry.settings import SettingError
from pipeline.config import parse as pipeline_settings

HUGE = "9" * 400
RUN = ["run", "--bootstrap-servers", "k:9092", "--elasticsearch-url", "http://e:9200"]


def collector(*flags: str, config: Path | None = None) -> object:
    extra = ["--config", str(config)] if config else []
    return collector_settings(["--sink", "stdout", "--node-name", "n", *extra, *flags])


@pytest.mark.parametrize(
    ("flag", "value", "name"),
    [
        ("--max-record-bytes", HUGE, "max_record_bytes"),
        ("--max-record-bytes", "1e309", "max_record_bytes"),
        ("--rate-limit", f"{HUGE}MiB/s", "rate_limit"),
        ("--rate-limit", f"{HUGE}/s", "rate_limit"),
        ("--max-open-files", HUGE, "max_open_files"),
        ("--wake-delay", "99999999999999999999", "wake_delay"),
        ("--wake-delay", "40", "wake_delay"),
        ("--poll-interval", "1h", "poll_interval"),
        ("--memory-limit", "1", "memory_limit"),
    ],
)
def test_a_collector_setting_out_of_bounds_is_one_line(flag: str, value: str, name: str) -> None:
    with pytest.raises(SettingError, match=f"setting {name}"):
        collector(flag, value)


@pytest.mark.parametrize(
    ("flags", "name"),
    [
        (["--bulk-bytes", HUGE], "bulk_bytes"),
        (["--metadata-refresh", HUGE], "metadata_refresh"),
        (["--metadata-refresh", "10000000"], "metadata_refresh"),
        (["--group", ""], "group"),
        (["--group", " g"], "group"),
        (["--dead-letter-topic", "bad topic name"], "dead_letter_topic"),
        (["--dead-letter-topic", ""], "dead_letter_topic"),
        (["--topic", "a b"], "topic"),
        (["--kafka", "group.id=other"], "kafka"),
        (["--kafka", "bootstrap.servers=elsewhere:9092"], "kafka"),
        (["--kafka", "enable.auto.commit=true"], "kafka"),
        (["--elasticsearch-url", "http://admin:S3cret@localhost:99999"], "elasticsearch_url"),
        (["--elasticsearch-url", "http://[::1:19200"], "elasticsearch_url"),
    ],
)
def test_a_pipeline_setting_it_cannot_use_is_one_line(flags: list[str], name: str) -> None:
    with pytest.raises(SettingError, match=f"setting {name}") as raised:
        pipeline_settings([*RUN, *flags])
    assert "S3cret" not in str(raised.value)


def test_a_ca_bundle_is_pem_and_for_https(tmp_path: Path) -> None:
    """A file that is no PEM bundle was taken, and every request then failed as if the
    node could not be reached; on http:// the client refused TLS options with a traceback."""
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    der = tmp_path / "ca.der"
    der.write_bytes(b"0\x82\x03\x0c0\x82\x01\xf4")
    https = [*RUN[:3], "--elasticsearch-url", "https://e:9200"]
    assert pipeline_settings([*https, "--elasticsearch-ca-certs", str(pem)])
    for flags in (
        [*RUN, "--elasticsearch-ca-certs", str(pem)],
        [*https, "--elasticsearch-ca-certs", str(der)],
    ):
        with pytest.raises(SettingError, match="setting elasticsearch_ca_certs"):
            pipeline_settings(flags)


def test_a_password_split_by_a_comma_is_not_shown() -> None:
    with pytest.raises(SettingError) as raised:
        pipeline_settings([*RUN, "--elasticsearch-url", "http://a:S3,cret@localhost:9200"])
    assert "S3" not in str(raised.value)
    assert "cret" not in str(raised.value)


def test_consumer_settings_the_pipeline_does_not_own_are_taken() -> None:
    config = pipeline_settings([*RUN, "--kafka", "auto.offset.reset=latest"])
    assert config.kafka == {"auto.offset.reset": "latest"}


def test_a_config_file_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "binary.yaml"
    file.write_bytes(b"\xff\xfe\x00b")
    with pytest.raises(SettingError, match="setting config"):
        collector(config=file)


@pytest.mark.parametrize(
    "text",
    ["sink: stdout\nsink: kafka\n", "max_open_files: 5\nmax-open-files: 16\n"],
)
def test_a_key_given_twice_in_the_file_is_refused(tmp_path: Path, text: str) -> None:
    file = tmp_path / "twice.yaml"
    file.write_text(text)
    with pytest.raises(SettingError, match="given twice"):
        collector(config=file)


def test_file_values_are_the_text_written_not_yamls_guesses(tmp_path: Path) -> None:
    """YAML 1.1 read 012345 as the octal 5349 and 1:20 as 80 seconds."""
    file = tmp_path / "values.yaml"
    file.write_text(
        "node_name: 1:20\nkubernetes: on\nkafka:\n  sasl.password: 012345\n  linger.ms: 5\n"
    )
    config = collector_settings(["--sink", "stdout", "--config", str(file)])
    assert config.node_name == "1:20"
    assert config.kubernetes == "on"
    assert config.kafka["sasl.password"] == "012345"
    pipeline_file = tmp_path / "pipeline.yaml"
    pipeline_file.write_text("elasticsearch_password: 012345\ngroup: 0777\n")
    settings = pipeline_settings([*RUN, "--config", str(pipeline_file)])
    assert settings.elasticsearch_password == "012345"
    assert settings.group == "0777"


def test_the_bootstrap_servers_setting_wins_over_the_same_key_in_the_kafka_map(
    tmp_path: Path,
) -> None:
    file = tmp_path / "kafka.yaml"
    file.write_text("kafka:\n  bootstrap.servers: localhost:1\n")
    config = collector_settings(
        ["--config", str(file), "--bootstrap-servers", "localhost:19092", "--node-name", "n"]
    )
    assert config.kafka["bootstrap.servers"] == "localhost:19092"


YAML_BOOLEANS = [
    *("yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"),
    *("no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"),
]


@pytest.mark.parametrize("word", YAML_BOOLEANS)
def test_a_yaml_boolean_in_the_kafka_map_reaches_librdkafka_as_true_or_false(
    tmp_path: Path, word: str
) -> None:
    """Files written for the old loader (YAML 1.1) hold `socket.keepalive.enable: yes`:
    given as the text yes, librdkafka refused it at start."""
    truth = "true" if word.lower() in ("yes", "on", "true") else "false"
    file = tmp_path / "kafka.yaml"
    file.write_text(f"kafka:\n  socket.keepalive.enable: {word}\n")
    config = collector(config=file)
    assert config.kafka == {"socket.keepalive.enable": truth}  # type: ignore[attr-defined]
    Producer(config.kafka)  # type: ignore[attr-defined]
    pipeline = pipeline_settings([*RUN, "--config", str(file)])
    assert pipeline.kafka == {"socket.keepalive.enable": truth}


def test_a_quoted_word_in_the_file_stays_the_text_written(tmp_path: Path) -> None:
    """YAML 1.1 reads only plain scalars as booleans and nulls: quotes keep a password
    `off` or a node named `null`."""
    file = tmp_path / "quoted.yaml"
    file.write_text("node_name: 'null'\nkafka:\n  sasl.password: \"off\"\n  client.id: '~'\n")
    config = collector_settings(["--sink", "stdout", "--config", str(file)])
    assert config.node_name == "null"
    assert config.kafka == {"sasl.password": "off", "client.id": "~"}


@pytest.mark.parametrize(
    "given",
    [
        "--kafka=enable.idempotence=no",
        "--kafka=enable.idempotence=Off",
        "--kafka=enable.idempotence=FALSE",
        "enable.idempotence: no",
        "enable.idempotence: OFF",
        "enable.idempotence: 'no'",
        "enable.idempotence: False",
    ],
)
def test_every_word_for_false_turns_idempotence_off_and_is_refused(
    tmp_path: Path, given: str
) -> None:
    """Checkpoints need idempotence: `enable.idempotence: no` passed the check as the text
    no, and the collector stopped on librdkafka's own word instead of saying why."""
    if given.startswith("--"):
        flags = [given]
    else:
        file = tmp_path / "kafka.yaml"
        file.write_text(f"kafka:\n  {given}\n")
        flags = ["--config", str(file)]
    with pytest.raises(SettingError, match=r"enable\.idempotence=\w+ is refused: checkpoints"):
        collector(*flags)


NULLS = ["null", "Null", "NULL", "~", ""]


@pytest.mark.parametrize("null", NULLS)
def test_a_null_in_the_file_leaves_the_default(tmp_path: Path, null: str) -> None:
    """The old loader gave a null to the option as the text None: a duration or a switch
    was refused, a topic, a log level or a glob became `None`."""
    file = tmp_path / "nulls.yaml"
    names = ("topic", "log_level", "multiline_timeout", "inotify", "max_open_files", "kafka")
    file.write_text("".join(f"{name}: {null}\n" for name in (*names, "include", "multiline")))
    config = collector(config=file)
    for name in names:
        option = next(o for o in COLLECTOR_OPTIONS if o.name == name)
        assert getattr(config, name) == option.default, name
    assert config.include == []  # type: ignore[attr-defined]
    assert config.multiline == []  # type: ignore[attr-defined]
    pipeline_file = tmp_path / "pipeline.yaml"
    pipeline_file.write_text(f"group: {null}\nelasticsearch_password: {null}\nkafka: {null}\n")
    pipeline = pipeline_settings([*RUN, "--config", str(pipeline_file)])
    assert (pipeline.group, pipeline.elasticsearch_password) == ("logferry-pipeline", "")
    assert pipeline.kafka == {}


@pytest.mark.parametrize("null", NULLS)
def test_a_null_parser_or_rate_limit_means_none_as_it_did(tmp_path: Path, null: str) -> None:
    """The old loader's text None was these settings' word none: no parsing, no limit."""
    file = tmp_path / "nulls.yaml"
    file.write_text(f"parser: {null}\nrate_limit: {null}\n")
    config = collector(config=file)
    assert config.parser == "none"  # type: ignore[attr-defined]
    assert config.rate_limit is None  # type: ignore[attr-defined]


def test_a_null_in_a_list_or_the_kafka_map_is_left_out(tmp_path: Path) -> None:
    """librdkafka refused a null (`cannot be set to empty value`); its own default stays."""
    file = tmp_path / "nulls.yaml"
    file.write_text(
        "include:\n  -\n  - '*.log'\n  - ~\nkafka:\n  linger.ms: ~\n  compression.type: zstd\n"
    )
    config = collector(config=file)
    assert config.include == ["*.log"]  # type: ignore[attr-defined]
    assert config.kafka == {"compression.type": "zstd"}  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["null\n", "~\n", "--- NULL\n", "", "# only a comment\n"])
def test_a_file_of_only_null_or_nothing_holds_no_settings(tmp_path: Path, text: str) -> None:
    file = tmp_path / "empty.yaml"
    file.write_text(text)
    assert collector(config=file).max_open_files == 1024  # type: ignore[attr-defined]
    assert pipeline_settings([*RUN, "--config", str(file)]).kafka == {}


@pytest.mark.parametrize(
    ("setting", "name"),
    [
        ("request.required.acks=1", "request.required.acks"),
        ("metadata.broker.list=elsewhere:9092", "metadata.broker.list"),
    ],
)
def test_a_librdkafka_alias_of_a_key_the_pipeline_owns_is_refused(setting: str, name: str) -> None:
    """request.required.acks is acks to librdkafka and was silently replaced by the
    producer's acks=all; metadata.broker.list beat --bootstrap-servers."""
    with pytest.raises(
        SettingError, match=re.escape(f"setting kafka: {name} is the pipeline's own")
    ):
        pipeline_settings([*RUN, "--kafka", setting])


def test_the_collector_checks_acks_under_its_alias_too() -> None:
    with pytest.raises(SettingError, match=re.escape("request.required.acks=1 is refused")):
        collector("--kafka", "request.required.acks=1")


REPO = Path(__file__).resolve().parents[2]
PROGRAMS = {
    "collector": ["--sink", "stdout", "--node-name", "n"],
    "pipeline": RUN,
}


def started(program: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LOGFERRY_"))}
    return subprocess.run(
        [sys.executable, "-m", program, *PROGRAMS[program], "--config", str(config)],
        capture_output=True,
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        timeout=60,
        text=True,
    )


def test_a_yaml_syntax_error_is_one_line_with_its_line_and_column(tmp_path: Path) -> None:
    """PyYAML's message is four lines, each naming the file again."""
    file = tmp_path / "broken.yaml"
    file.write_text("sink: stdout\nnode_name: [a\n")
    for program in PROGRAMS:
        done = started(program, file)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            f"{program}: setting config ({file}): line 3, column 1: expected ',' or ']', "
            "but got '<stream end>' (while parsing a flow sequence from line 2, column 12)"
        ]


BAD_FILES = {
    "tab": (b"sink: stdout\n\tnode_name: a\n", "line 2, column 1: found character '\\t'"),
    "twice": (b"sink: stdout\nsink: kafka\n", "line 2, column 1: 'sink' is given twice"),
    "two documents": (b"a: 1\n---\nb: 2\n", "line 2, column 1: but found another document"),
    "nested deeply": (b"a: " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    "a list": (b"- sink: stdout\n", "must hold a mapping of settings, got a list"),
    "a word": (b"sink\n", "must hold a mapping of settings, got a single value"),
    "not utf-8": (b"\xff\xfe\x00b", "not UTF-8 text: invalid start byte at byte 0"),
    "control characters": (b"\x00\x01\x02", "position 0: character #x0000"),
}


@pytest.mark.parametrize("case", BAD_FILES)
@pytest.mark.parametrize("program", PROGRAMS)
def test_a_config_file_it_cannot_use_is_one_line_and_exit_2(
    tmp_path: Path, program: str, case: str
) -> None:
    content, problem = BAD_FILES[case]
    file = tmp_path / "settings.yaml"
    file.write_bytes(content)
    done = started(program, file)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"{program}: setting config ({file}): {problem}"), line


@pytest.mark.parametrize(
    ("name", "problem"), [("missing.yaml", "No such file or directory"), ("", "Is a directory")]
)
@pytest.mark.parametrize("program", PROGRAMS)
def test_a_config_path_that_is_no_file_is_one_line_and_exit_2(
    tmp_path: Path, program: str, name: str, problem: str
) -> None:
    path = tmp_path / name
    done = started(program, path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{program}: setting config ({path}): cannot read: {problem}"
    ]
