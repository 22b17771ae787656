from __future__ import annotations

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from collector.levels import LEVELS, detect, normalise, undated


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("info", "info"),
        ("INFO", "info"),
        (" Info ", "info"),
        ("WARNING", "warn"),
        ("warn", "warn"),
        ("Err", "error"),
        ("ERROR", "error"),
        ("severe", "error"),
        ("CRITICAL", "fatal"),
        ("crit", "fatal"),
        ("panic", "fatal"),
        ("emerg", "fatal"),
        ("notice", "info"),
        ("verbose", "trace"),
        ("dbg", "debug"),
        ("E", "error"),
        ("w", "warn"),
        # pino / bunyan
        (10, "trace"),
        (20, "debug"),
        (30, "info"),
        (40, "warn"),
        (50, "error"),
        (60, "fatal"),
        ("30", "info"),
        # syslog severities
        (0, "fatal"),
        (3, "error"),
        (4, "warn"),
        (5, "info"),
        (6, "info"),
        (7, "debug"),
        # nothing known
        (35, None),
        (8, None),
        (-1, None),
        (30.0, None),
        (True, None),
        (False, None),
        (None, None),
        ("", None),
        ("loud", None),
        ("x", None),
        ({"level": "info"}, None),
        (["error"], None),
    ],
)
def test_normalise_parsed_values(value: object, level: str | None) -> None:
    assert normalise(value) == level


@pytest.mark.parametrize(
    ("text", "level"),
    [
        # a leading level word
        ("ERROR could not connect", "error"),
        ("WARN disk at 91%", "warn"),
        ("[WARN] disk at 91%", "warn"),
        ("[error] boom", "error"),
        ("<error> boom", "error"),
        ("Error: file not found", "error"),
        ("warning: deprecated flag", "warn"),
        ("INFO:root:started", "info"),
        ("WARNING:urllib3:retrying", "warn"),
        ("DBG cache miss", "debug"),
        ("INF server started", "info"),
        ("FATAL out of memory", "fatal"),
        ("CRITICAL: db down", "fatal"),
        ("PANIC: nil map", "fatal"),
        ("ERROR\tdisk full", "error"),
        ("WARN", "warn"),
        # after a timestamp
        ("2026-11-30 10:00:00,123 ERROR app.views: request 7 failed", "error"),
        ("2026-11-30 10:00:00.123 INFO [http-nio-8080-exec-1] c.e.Svc - ok", "info"),
        ("2026-11-30T10:00:00.123Z  WARN 1 --- [main] c.e.App : slow", "warn"),
        ("10:00:00.123 [main] DEBUG c.e.A - x", "debug"),
        ("2026/11/30 10:00:00 [error] 7#7: *1 open() failed", "error"),
        ("2026/11/30 10:00:00 ERROR msg from slog", "error"),
        ("[2026-11-30 10:00:00] ERROR something", "error"),
        ("2026-11-30 10:00:00 +0000 [warn] x", "warn"),
        # klog / glog
        ("E1130 10:00:00.123456       1 reflector.go:138] failed to list", "error"),
        ("I1130 10:00:00.123456       1 main.go:10] starting", "info"),
        ("W1130 10:00:00.123456 1 x.go:1] slow", "warn"),
        ("F1130 10:00:00.123456 1 x.go:1] dead", "fatal"),
        # logfmt
        ('time="2026-11-30T10:00:00Z" level=warning msg="disk"', "warn"),
        ("level=error msg=x", "error"),
        ('ts=1 level="info" msg=x', "info"),
        # syslog priority
        ("<11>Nov 30 10:00:00 host app: x", "error"),
        ("<14>Nov 30 10:00:00 host app: x", "info"),
        # nothing to say
        ("", None),
        ("   ERROR indented", None),
        ("Debug mode enabled", None),
        ("error rates fell by half", None),
        ("information is power", None),
        ("Errors: 0", None),
        ("ERRORS 0", None),
        ("E", None),
        ("E1130", None),
        ("Eleven monkeys 10:00", None),
        ('10.1.2.3 - - [30/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 500 12', None),
        ('10.1.2.3 - ERROR [30/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 500 12', None),
        ("42 user: hello", None),
        ("java.lang.IllegalStateException: boom", None),
        ("\tat com.example.Foo.bar(Foo.java:10)", None),
        ('{"level":"error"}', None),
        ("mylevel=error", None),
        ("<999>x", None),
        ("<x>", None),
        ("[unclosed", None),
        ("2026-11-30 10:00:00", None),
        ("日本語 ERROR", None),
    ],
)
def test_detect_in_plain_text(text: str, level: str | None) -> None:
    assert detect(text) == level


@pytest.mark.parametrize(
    ("text", "level"),
    [
        # log4j / logback `[%-5p]`, `[%5p]` and Python `[%(levelname)-8s]` pad inside the brackets
        ("2026-11-27 02:20:49,123 [INFO ] com.shop.Cart - added", "info"),
        ("2026-11-27 02:20:49,123 [WARN ] com.shop.Cart - slow", "warn"),
        ("2026-11-27 02:20:49,123 [ERROR] com.shop.Cart - boom", "error"),
        ("2026-11-27 02:20:49,123 [ INFO] com.shop.Cart - added", "info"),
        ("2026-11-27 02:20:49,123 [INFO ]com.shop.Cart - added", "info"),
        ("2026-11-27T02:20:49.123Z [main] [WARN ] c.s.Cart - slow", "warn"),
        ("[2026-11-27 02:20:49] [INFO ] started", "info"),
        ("[INFO ] com.shop.Cart - added", "info"),
        ("[ WARN] com.shop.Cart - slow", "warn"),
        ("[WARNING ] app: retrying", "warn"),
        ("[    INFO] app: started", "info"),
        # `%-5p` unbracketed: the padding is just more white space
        ("2026-11-27 02:20:49,123 INFO  com.shop.Cart - added", "info"),
        ("02:20:49.123 [main] WARN  c.s.Cart - slow", "warn"),
        # a thread name first, no date (slf4j-simple's default layout)
        ("[main] WARN  c.s.Cart - slow", "warn"),
        ("[http-nio-8080-exec-11] ERROR c.e.shop.OrderService - boom", "error"),
        ("[main] [INFO ] c.s.Cart - added", "info"),
        # the padding is no licence for other words
        ("[INFORMATION ] x", "info"),
        ("[ INFORMATION] x", "info"),
        ("2026-11-27 02:20:49 [WARNING_COUNT=3 ] x", None),
        ("2026-11-27 02:20:49 [IN FO] x", None),
        ("2026-11-27 02:20:49 [ INFO ] x", None),
        ("[main] [req-7] WARN x", None),
        ("[main] Warn about x", None),
        ("[main]", None),
        ("[ ] Error handling", None),
        ("[", None),
        ("[Tue Nov 30 10:00:00 2026] [error] x", None),
    ],
)
def test_detect_padded_and_threaded_brackets(text: str, level: str | None) -> None:
    assert detect(text) == level


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("E, [2026-11-27T02:20:49.123456 #1234] ERROR -- : boom", "error"),
        ("I, [2026-11-27T02:20:49.123456 #1234]  INFO -- : started", "info"),
        ("W, [2026-11-27T02:20:49.123456 #1234]  WARN -- sidekiq: slow", "warn"),
        ("D, [2026-11-27T02:20:49.123456 #1234] DEBUG -- : x", "debug"),
        ("F, [2026-11-27T02:20:49.123456 #1234] FATAL -- : dead", "fatal"),
        # The letter is the logger's own severity, not a `level=` in the message.
        ("I, [2026-11-27T02:20:49.123456 #1234]  INFO -- : level=error x", "info"),
        # UNKNOWN (`A`, `ANY`): logged whatever the threshold, with no severity.
        ("A, [2026-11-27T02:20:49.123456 #1234]   ANY -- : x", None),
        ("A, [2026-11-27T02:20:49.123456 #1234]   ANY -- : level=error", None),
        # the shape without its date, or another letter, is prose
        ("I, Robot level=info", "info"),
        ("E, [see above] ERROR", None),
        ("X, [2026-11-27T02:20:49.123456 #1234] ERROR -- : x", None),
    ],
)
def test_detect_ruby_logger_lines(text: str, level: str | None) -> None:
    assert detect(text) == level


@pytest.mark.parametrize(
    ("text", "level"),
    [
        # syslog's alert (1) sits between emerg (0) and crit (2): fatal, like both of them,
        # however it is written; prose needs the same `:` or capitals as `Critical:`
        ("Alert: disk 91% full", "fatal"),
        ("Critical: disk 91% full", "fatal"),
        ("Emergency: disk 91% full", "fatal"),
        ("ALERT disk 91% full", "fatal"),
        ("CRIT disk 91% full", "fatal"),
        ("2026/11/30 10:00:00 [alert] 7#7: worker exited", "fatal"),
        ("2026/11/30 10:00:00 [crit] 7#7: worker exited", "fatal"),
        ("<9>Nov 30 10:00:00 host app: x", "fatal"),
        ("Alert disk 91% full", None),
        ("Critical disk 91% full", None),
        ("alerts sent: 3", None),
    ],
)
def test_alert_ranks_with_crit_and_emerg(text: str, level: str | None) -> None:
    assert detect(text) == level
    assert normalise("alert") == normalise("crit") == normalise("emerg") == normalise(1)


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("INFORMATION x", "info"),
        ("[INFORMATION] x", "info"),
        ("WARNING_COUNT=3", None),
        ("WARNING_COUNT=3 level=info", "info"),
        ("2026-11-27 02:20:49 WARNING_COUNT=3", None),
        ("2026-11-27 02:20:49 INFORMATION x", "info"),
        ("INFOS 3", None),
        ("[WARN", None),
        ("[WARN ", None),
        ("2026-11-27 02:20:49 [WARN", None),
        ("E, x", None),
        ("E, [", None),
        ("I, [2026", None),
    ],
)
def test_words_near_a_level_keep_their_reading(text: str, level: str | None) -> None:
    """What these gave before padded brackets and Ruby's layout were read: unchanged."""
    assert detect(text) == level


def test_every_result_is_one_of_the_six() -> None:
    produced = {normalise(v) for v in ("trace", "debug", "info", "warn", "error", "fatal")}
    assert produced == set(LEVELS)


@given(
    st.text(alphabet=st.sampled_from('0123456789:-/. \\"[]<>&é日ERORWAN'), max_size=30)
    | st.text(max_size=30)
)
@example("10.1.2.3 - - ERROR")
@example("2026/11/30 [error] x")
@example("12:00:01 WARN x")
def test_undated_lines_have_no_level(text: str) -> None:
    """`undated` judges the escaped bytes without decoding them: never a line with a level."""
    escaped = orjson.dumps(text)[1:-1]
    if undated(escaped):
        assert detect(text) is None
