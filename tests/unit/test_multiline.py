import itertools
import re

import pytest

from collector.multiline import MultilineRule, rule_for
from tests.unit.bounded import ends


def group(rule: MultilineRule, lines: list[str]) -> list[list[str]]:
    """What the joiner does with one stream: each line continues the held record or starts one."""
    groups: list[list[str]] = []
    for line in lines:
        if groups and rule.continues(groups[-1][0], groups[-1][-1], line):
            groups[-1].append(line)
        else:
            groups.append([line])
    return groups


def records(rule: MultilineRule, *blocks: str) -> list[str]:
    """Feed the blocks' lines one by one and give back the records, lines joined by newlines."""
    lines = [line for block in blocks for line in block.split("\n")]
    return ["\n".join(g) for g in group(rule, lines)]


# --- java ------------------------------------------------------------------------------------

JAVA_BEFORE = "2026-11-27T10:00:00.001Z INFO  c.x.Foo - starting worker pool size=4"
JAVA_TRACE = """\
Exception in thread "main" java.lang.IllegalStateException: boom
\tat com.x.Foo.bar(Foo.java:12)
\tat com.x.Foo.main(Foo.java:5)
\tSuppressed: java.io.IOException: close failed
\t\tat com.x.Store.close(Store.java:95)
\t\tat com.x.Foo.bar(Foo.java:13)
\t\t... 1 more
Caused by: java.io.IOException: disk
\tat com.x.Store.write(Store.java:88)
\tat com.x.Foo.bar(Foo.java:10)
\t... 1 more"""
JAVA_BETWEEN = "2026-11-27T10:00:01.000Z INFO  c.x.Foo - shutting down"
JAVA_NO_SUFFIX = """\
com.x.Foo: msg
\tat com.x.Foo.bar(Foo.java:12)
\tat java.base/java.lang.Thread.run(Thread.java:1583)"""
JAVA_AFTER = "2026-11-27T10:00:02.000Z WARN  c.x.Foo - retrying in 5s"


def test_java_trace_with_causes_is_one_record_between_log_lines() -> None:
    rule = rule_for("java")
    blocks = (JAVA_BEFORE, JAVA_TRACE, JAVA_BETWEEN, JAVA_NO_SUFFIX, JAVA_AFTER)
    assert records(rule, *blocks) == list(blocks)


LOGBACK_LINE = "2026-11-27 10:00:00.123 ERROR [main] c.x.App - request failed"
LOGBACK_TRACE = """\
java.lang.RuntimeException: x
\tat com.x.App.handle(App.java:42) ~[app.jar:1.0]
\tat com.x.App.main(App.java:17) [app.jar:1.0]
Caused by: java.sql.SQLException: connection reset
\tat org.h2.Driver.exec(Driver.java:100) ~[h2.jar:2.2]
\tat com.x.App.handle(App.java:40) ~[app.jar:1.0]
... 3 common frames omitted"""
LOGBACK_AFTER = "2026-11-27 10:00:00.456 INFO  [main] c.x.App - recovered"


def test_java_exception_header_starts_its_own_record_after_a_log_line() -> None:
    # Fluent Bit's rule: the header is never glued to the log line before it.
    rule = rule_for("java")
    assert records(rule, LOGBACK_LINE, LOGBACK_TRACE, LOGBACK_AFTER) == [
        LOGBACK_LINE,
        LOGBACK_TRACE,
        LOGBACK_AFTER,
    ]


def test_first_line_regex_keeps_the_logback_line_with_its_trace() -> None:
    rule = rule_for(r"^\d{4}-\d{2}-\d{2} ")
    assert rule.name == r"^\d{4}-\d{2}-\d{2} "
    assert records(rule, LOGBACK_LINE, LOGBACK_TRACE, LOGBACK_AFTER, LOGBACK_AFTER) == [
        LOGBACK_LINE + "\n" + LOGBACK_TRACE,
        LOGBACK_AFTER,
        LOGBACK_AFTER,
    ]


def test_first_line_regex_is_searched_not_anchored() -> None:
    rule = rule_for("ERROR|INFO")
    lines = ["[main] INFO ready", "  detail", "[main] ERROR failed", "no level here"]
    assert group(rule, lines) == [lines[:2], lines[2:]]


@pytest.mark.parametrize(
    "line",
    [
        "\tat com.x.Foo.bar(Foo.java:12)",
        "    at com.x.Foo.bar(Foo.java:12)",
        "\t... 5 more",
        "Caused by: java.io.IOException: disk",
        "\tCaused by: java.io.IOException: disk",
        "\tSuppressed: java.io.IOException: close failed",
        "... 3 common frames omitted",
        "\t... 3 common frames omitted",
        "Wrapped by: java.lang.RuntimeException: x",
        "nested exception is: java.io.IOException: y",
        "   at App.Program.Main(String[] args) in /src/Program.cs:line 9",
        "   --- End of inner exception stack trace ---",
        "--- End of stack trace from previous location where exception was thrown ---",
    ],
)
def test_java_continuation_lines(line: str) -> None:
    header = "java.lang.RuntimeException: x"
    assert rule_for("java").continues(header, header, line)


@pytest.mark.parametrize(
    "line",
    [
        "    some indented text",
        "\tattribute=1",
        "java.lang.IllegalStateException: another one",
        "Caused by nothing in particular",
        "...5 more",
    ],
)
def test_java_lines_that_only_resemble_continuations(line: str) -> None:
    header = "java.lang.RuntimeException: x"
    assert not rule_for("java").continues(header, "\tat com.x.A.b(A.java:1)", line)


def test_java_blank_line_only_inside_a_header_gap() -> None:
    # `new Exception("text\n")` prints a blank line between the header and the frames.
    trace = "java.lang.Exception: message ending in newlines\n\n\n\tat com.x.A.b(A.java:1)"
    after = "2026-11-27T10:00:03.000Z INFO  next"
    assert records(rule_for("java"), trace, "", "", after) == [trace, "", "", after]


def test_java_rmi_nested_exception_on_the_next_line() -> None:
    trace = (
        "java.rmi.ConnectException: Connection refused to host: 10.0.0.5; nested exception is: \n"
        "\tjava.net.ConnectException: Connection refused\n"
        "\tat java.base/sun.nio.ch.Net.connect0(Native Method)\n"
        "\tat java.rmi/sun.rmi.transport.tcp.TCPEndpoint.newSocket(TCPEndpoint.java:624)"
    )
    assert records(rule_for("java"), trace, JAVA_AFTER) == [trace, JAVA_AFTER]


# --- python ----------------------------------------------------------------------------------

PY_BEFORE = "2026-11-27 10:00:00,123 ERROR service.handlers: request failed"
PY_CHAINED = """\
Traceback (most recent call last):
  File "/app/service/handlers.py", line 41, in load_user
    return USERS[user_id]
           ~~~~~^^^^^^^^^
KeyError: 'u-42'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/app/service/handlers.py", line 58, in handle
    user = load_user(request.user_id)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/app/service/handlers.py", line 43, in load_user
    raise UserMissing(user_id)
service.errors.UserMissing: u-42

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/usr/lib/python3.11/site-packages/gunicorn/workers/sync.py", line 135, in handle
    self.handle_request(listener, req, client, addr)
  File "/app/service/handlers.py", line 60, in handle
    raise HTTPError(500) from exc
service.errors.HTTPError: 500"""
PY_AFTER = "2026-11-27 10:00:00,130 INFO service.handlers: GET /users/u-42 500 7ms"
PY_RECURSION = """\
Traceback (most recent call last):
  File "/app/walk.py", line 9, in <module>
    walk(tree)
  File "/app/walk.py", line 5, in walk
    return walk(node.parent)
           ^^^^^^^^^^^^^^^^^
  [Previous line repeated 996 more times]
RecursionError: maximum recursion depth exceeded"""
PY_BARE = """\
Traceback (most recent call last):
  File "/app/worker.py", line 88, in run
    time.sleep(5)
KeyboardInterrupt"""


def test_python_chained_traceback_is_one_record_between_log_lines() -> None:
    rule = rule_for("python")
    blocks = (PY_BEFORE, PY_CHAINED, PY_AFTER, PY_RECURSION, PY_AFTER, PY_BARE, PY_AFTER)
    # The logger.exception() message line stays a record of its own (Fluent Bit does the same).
    assert records(rule, *blocks) == list(blocks)


def test_python_traceback_keeps_one_trailing_blank_line() -> None:
    # Without lookahead the blank line could still be followed by a chain message.
    rule = rule_for("python")
    assert records(rule, PY_BARE, "", "", PY_AFTER) == [PY_BARE + "\n", "", PY_AFTER]


def test_python_traceback_header_at_the_end_of_a_log_line() -> None:
    trace = """\
2026-11-27 10:00:00,123 ERROR worker Traceback (most recent call last):
  File "/app/worker.py", line 12, in run
    job()
ValueError: bad"""
    assert records(rule_for("python"), trace, PY_AFTER) == [trace, PY_AFTER]


PY_GROUP = """\
  + Exception Group Traceback (most recent call last):
  |   File "/app/batch.py", line 30, in run
  |     async with asyncio.TaskGroup() as tg:
  |   File "/usr/lib/python3.11/asyncio/taskgroups.py", line 147, in __aexit__
  |     raise me from None
  | ExceptionGroup: unhandled errors in a TaskGroup (2 sub-exceptions)
  +-+---------------- 1 ----------------
    | Exception Group Traceback (most recent call last):
    |   File "/app/batch.py", line 12, in fetch_all
    | ExceptionGroup: fetch failed (1 sub-exception)
    +-+---------------- 1 ----------------
      | Traceback (most recent call last):
      |   File "/app/batch.py", line 8, in fetch
      | ConnectionError: reset by peer
      +------------------------------------
    +---------------- 2 ----------------
    | Traceback (most recent call last):
    |   File "/app/batch.py", line 20, in store
    | TypeError: bad row
    +------------------------------------

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/app/main.py", line 7, in <module>
    asyncio.run(main())
RuntimeError: batch failed"""


def test_python_exception_group_chained_into_a_traceback() -> None:
    assert records(rule_for("python"), PY_GROUP, PY_AFTER) == [PY_GROUP, PY_AFTER]


def test_python_exception_group_ends_on_its_bottom_border() -> None:
    group_only = PY_GROUP.split("\n\n", 1)[0]
    # A time-first line would pass for a closing `Name:` line if the border did not end it.
    after = "10:00:01 worker: ready"
    assert records(rule_for("python"), group_only, after) == [group_only, after]


def test_python_exception_group_chained_after_a_traceback() -> None:
    trace = """\
Traceback (most recent call last):
  File "/app/batch.py", line 40, in run
    cleanup(tmp)
OSError: [Errno 28] No space left on device

During handling of the above exception, another exception occurred:

  + Exception Group Traceback (most recent call last):
  |   File "/app/batch.py", line 44, in run
  |     raise ExceptionGroup("cleanup failed", errors)
  | ExceptionGroup: cleanup failed (1 sub-exception)
  +-+---------------- 1 ----------------
    | PermissionError: [Errno 13] Permission denied: '/data/tmp'
    +------------------------------------"""
    assert records(rule_for("python"), trace, PY_AFTER) == [trace, PY_AFTER]


def test_python_indented_line_after_the_closing_line_starts_a_record() -> None:
    indented = "    at least the traceback above is over"
    assert records(rule_for("python"), PY_BARE, indented) == [PY_BARE, indented]


def test_python_second_traceback_after_a_log_line_is_its_own_record() -> None:
    rule = rule_for("python")
    assert records(rule, PY_BARE, PY_AFTER, PY_BARE) == [PY_BARE, PY_AFTER, PY_BARE]


# --- go --------------------------------------------------------------------------------------

GO_BEFORE = '{"level":"info","ts":"2026-11-27T10:00:00Z","msg":"listening","addr":":8080"}'
GO_INDEX = """\
panic: runtime error: index out of range [5] with length 3

goroutine 1 [running]:
main.lookup(...)
\t/app/main.go:12
main.main()
\t/app/main.go:21 +0x1d
exit status 2"""
GO_ALL = """\
panic: runtime error: invalid memory address or nil pointer dereference
[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x47e1d6]

goroutine 7 [running]:
main.(*Server).handle(0x0, {0x4b2f1a, 0x3})
\t/app/server.go:44 +0x16
main.(*Server).worker(0xc000012345, 0xc00001c0c0)
\t/app/server.go:30 +0x85
created by main.(*Server).Start in goroutine 1
\t/app/server.go:21 +0x6c

goroutine 1 [chan receive]:
main.(*Server).Wait(...)
\t/app/server.go:52
main.main()
\t/app/main.go:15 +0x9e

goroutine 8 [select, 2 minutes]:
net/http.(*persistConn).writeLoop(0xc0000b2000)
\t/usr/local/go/src/net/http/transport.go:2444 +0xf0
created by net/http.(*Transport).dialConn in goroutine 7
\t/usr/local/go/src/net/http/transport.go:1800 +0x1585
exit status 2"""
GO_DEADLOCK = """\
fatal error: all goroutines are asleep - deadlock!

goroutine 1 gp=0xc000002380 m=0 mp=0x5a4e20 [semacquire]:
sync.runtime_Semacquire(0xc000012118?)
\t/usr/local/go/src/runtime/sema.go:62 +0x25
sync.(*WaitGroup).Wait(0xc000012110?)
\t/usr/local/go/src/sync/waitgroup.go:116 +0x48
main.main()
\t/app/main.go:18 +0x8a"""
GO_HTTP = """\
2026/11/27 10:00:04 http: panic serving 10.1.2.3:51234: runtime error: slice bounds out of range
goroutine 33 [running]:
net/http.(*conn).serve.func1()
\t/usr/local/go/src/net/http/server.go:1898 +0xbe
panic({0x6c2f40?, 0xc0000a4000?})
\t/usr/local/go/src/runtime/panic.go:770 +0x132
main.parse(...)
\t/app/parse.go:9
...additional frames elided..."""
GO_REPANIC = """\
panic: first [recovered]
\tpanic: second

goroutine 1 [running]:
main.main.func1()
\t/app/main.go:9 +0x4c
main.main()
\t/app/main.go:12 +0x2f"""
GO_AFTER = 'time=2026-11-27T10:00:05Z level=info msg="restarted" attempt=2'
GO_AFTER_CALL = "2026/11/27 10:00:06 retry (attempt 3)"


def test_go_panics_are_one_record_each_between_log_lines() -> None:
    rule = rule_for("go")
    blocks = (
        GO_BEFORE,
        GO_INDEX,
        GO_AFTER,
        GO_ALL,
        GO_AFTER,
        GO_DEADLOCK,
        GO_AFTER_CALL,
        GO_HTTP,
        GO_AFTER,
        GO_REPANIC,
        GO_AFTER,
    )
    assert records(rule, *blocks) == list(blocks)


def test_go_trace_does_not_keep_a_blank_line_after_exit_status() -> None:
    assert records(rule_for("go"), GO_INDEX, "", GO_AFTER) == [GO_INDEX, "", GO_AFTER]


def test_go_frames_do_not_continue_a_record_that_is_not_a_panic() -> None:
    rule = rule_for("go")
    lines = [GO_AFTER, "", "goroutine 1 [running]:", "main.main()", "\t/app/main.go:21 +0x1d"]
    assert group(rule, lines) == [[GO_AFTER], [""], [lines[2]], [lines[3]], [lines[4]]]


@pytest.mark.parametrize(
    "line",
    ["'(' * 1_000_000", "'goroutine 1 ' + '[ ' * 500_000"],
    ids=["parentheses after a frame", "brackets in a goroutine header"],
)
def test_go_lines_of_a_megabyte_are_matched_in_linear_time(line: str) -> None:
    """A call's shape (`\\S+\\(.*\\)`) tried on a line of parentheses read the rest of the line
    again from each one: 64 KiB took 13.7 s, and the collector ships nothing meanwhile."""
    code = (
        "from collector.multiline import rule_for; "
        f"assert not rule_for('go').continues('panic: x', '\\t/a.go:1', {line})"
    )
    assert ends(code)


# --- every rule ------------------------------------------------------------------------------

ORDINARY = [
    "2026-11-27T10:00:00.000Z INFO  server started on :8080",
    '{"level":"error","ts":1764237600.1,"msg":"upstream timeout","err":"deadline exceeded"}',
    'time=2026-11-27T10:00:01Z level=warn msg="slow query" duration=2.3s',
    '10.1.2.3 - - [27/Nov/2026:10:00:02 +0000] "GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/1.31"',
    "INFO:root:cache warmed",
    "10:00:03 worker: ready",
    "Error: connection refused",
    "java.lang.RuntimeException: logged on one line",
    "Traceback (most recent call last):",
    "panic: recovered and logged",
    "main.main()",
    "goroutine leak check passed",
    "exit status 0",
    "2026/11/27 10:00:05 done (took 3s)",
    "W1127 10:00:06.123456       1 reflector.go:561] watch of *v1.Pod ended",
    "",
]


@pytest.mark.parametrize("spec", ["java", "python", "go"])
def test_presets_never_glue_ordinary_lines(spec: str) -> None:
    rule = rule_for(spec)
    assert group(rule, ORDINARY) == [[line] for line in ORDINARY]
    # A blank line may legitimately follow a line that looks like a trace header.
    for first, line in itertools.permutations(filter(None, ORDINARY), 2):
        assert not rule.continues(first, first, line), (first, line)


@pytest.mark.parametrize("spec", ["java", "python", "go"])
def test_presets_by_name(spec: str) -> None:
    assert rule_for(spec).name == spec


@pytest.mark.parametrize("spec", ["(unclosed", "[a-", r"a{99999999999}", "(?P<x"])
def test_invalid_regex_raises_value_error_naming_it(spec: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(spec))):
        rule_for(spec)


def test_empty_spec_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid multiline rule ''"):
        rule_for("")
