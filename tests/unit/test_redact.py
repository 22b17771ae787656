from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import redact
from collector.redact import BUILTIN_RULES, Redactor, rules, user_rule
from collector.structured import parse
from tests.unit.bounded import ends

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"
PEM_BODY = "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"

BUILTIN = Redactor(rules())


@pytest.mark.parametrize(
    ("text", "redacted", "hits"),
    [
        # bearer tokens
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer [REDACTED:bearer]", ("bearer",)),
        (f"auth=bearer\t{JWT} ok", "auth=bearer\t[REDACTED:bearer] ok", ("bearer",)),
        (
            f'{{"authorization":"Bearer {JWT}"}}',
            '{"authorization":"Bearer [REDACTED:bearer]"}',
            ("bearer",),
        ),
        # password= values
        (
            "login user=bob password=hunter2 ok",
            "login user=bob password=[REDACTED:password] ok",
            ("password",),
        ),
        ("DB_PASSWORD=s3cr3t!", "DB_PASSWORD=[REDACTED:password]", ("password",)),
        ("url?user=a&passwd=x&y=1", "url?user=a&passwd=[REDACTED:password]&y=1", ("password",)),
        ('password="two words"', 'password="[REDACTED:password]"', ("password",)),
        ('msg="a password=\\"x y\\""', 'msg="a password=\\"[REDACTED:password]\\""', ("password",)),
        # "password": values
        (
            '{"user":"bob","password":"hunter2"}',
            '{"user":"bob","password":"[REDACTED:password]"}',
            ("password",),
        ),
        ('{"Password" : "a\\"b"}', '{"Password" : "[REDACTED:password]"}', ("password",)),
        ('{"new_password":123456}', '{"new_password":[REDACTED:password]}', ("password",)),
        (
            '{"msg":"{\\"password\\":\\"x\\"}"}',
            '{"msg":"{\\"password\\":\\"[REDACTED:password]\\"}"}',
            ("password",),
        ),
        ("{'password': 'hunter2'}", "{'password': '[REDACTED:password]'}", ("password",)),
        # AWS keys
        (
            "using AKIAIOSFODNN7EXAMPLE now",
            "using [REDACTED:aws_access_key] now",
            ("aws_access_key",),
        ),
        ('"key":"ASIAY34FZKBOKMUTVV7A"', '"key":"[REDACTED:aws_access_key]"', ("aws_access_key",)),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key = [REDACTED:aws_secret_key]",
            ("aws_secret_key",),
        ),
        # private key blocks, also as escaped JSON and cut short
        (
            f"key: -----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY----- done",
            "key: [REDACTED:private_key] done",
            ("private_key",),
        ),
        (
            f'{{"k":"-----BEGIN PRIVATE KEY-----\\n{PEM_BODY}\\n-----END PRIVATE KEY-----\\n"}}',
            '{"k":"[REDACTED:private_key]\\n"}',
            ("private_key",),
        ),
        (
            f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}",
            "[REDACTED:private_key]",
            ("private_key",),
        ),
        # several rules in one text
        (
            f"password=x Bearer {JWT} AKIAIOSFODNN7EXAMPLE",
            "password=[REDACTED:password] Bearer [REDACTED:bearer] [REDACTED:aws_access_key]",
            ("aws_access_key", "password", "bearer"),
        ),
        # false positives that must stay
        ("the bearer of bad news", "the bearer of bad news", ()),
        ("uses Bearer authentication", "uses Bearer authentication", ()),
        ("password reset email sent", "password reset email sent", ()),
        ("password= (empty)", "password= (empty)", ()),
        ("wrong password: try again", "wrong password: try again", ()),
        ('{"password_reset":true}', '{"password_reset":true}', ()),
        ("AKIA is a prefix", "AKIA is a prefix", ()),
        ("akiaiosfodnn7example", "akiaiosfodnn7example", ()),
        ("XAKIAIOSFODNN7EXAMPLE", "XAKIAIOSFODNN7EXAMPLE", ()),
        ("trip to Asia and Eurasia", "trip to Asia and Eurasia", ()),
        (
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
            (),
        ),
        ("-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE-----", ()),
        ("the private key was rotated", "the private key was rotated", ()),
        ("secret santa", "secret santa", ()),
        ("GET /index.html 200", "GET /index.html 200", ()),
        ("", "", ()),
        # already redacted text is left alone and not counted again
        ("password=[REDACTED:password]", "password=[REDACTED:password]", ()),
        ('{"password":"[REDACTED:password]"}', '{"password":"[REDACTED:password]"}', ()),
        ("Bearer [REDACTED:bearer]", "Bearer [REDACTED:bearer]", ()),
    ],
)
def test_builtin_rules(text: str, redacted: str, hits: tuple[str, ...]) -> None:
    assert BUILTIN.text(text) == (redacted, hits)


def test_redacting_twice_changes_nothing_more() -> None:
    text = f'password=a "password":"b" Bearer {JWT} AKIAIOSFODNN7EXAMPLE'
    once, _ = BUILTIN.text(text)
    assert BUILTIN.text(once) == (once, ())


@pytest.mark.parametrize(
    ("spec", "text", "redacted"),
    [
        (r"email=[\w.+-]+@[\w-]+\.[\w.]+", "mail bob@example.com now", "mail [REDACTED:email] now"),
        (
            r"card=\b\d{4}(?:[ -]?\d{4}){3}\b",
            "card 4111 1111 1111 1111 ok",
            "card [REDACTED:card] ok",
        ),
        (r"session=sid=(?P<secret>\w+)", "sid=abc123; path=/", "sid=[REDACTED:session]; path=/"),
        (r"iban=(?i)\bDE\d{20}\b", "to de89370400440532013000.", "to [REDACTED:iban]."),
        (r"email=[\w.+-]+@[\w-]+\.[\w.]+", "no address here", "no address here"),
    ],
)
def test_user_rules(spec: str, text: str, redacted: str) -> None:
    redactor = Redactor(rules([user_rule(spec)], builtin=False))
    name = spec.partition("=")[0]
    assert redactor.text(text) == (redacted, (name,) if redacted != text else ())


def test_user_rule_named_as_a_builtin_replaces_it() -> None:
    stricter = user_rule(r"password=password=(?P<secret>\S{8,})")
    redactor = Redactor(rules([stricter]))
    assert [r.name for r in redactor.rules].count("password") == 1
    assert redactor.text("password=short")[0] == "password=short"
    assert redactor.text("password=longenough")[0] == "password=[REDACTED:password]"


def test_builtins_can_be_turned_off() -> None:
    assert Redactor(rules(builtin=False)).text("password=x") == ("password=x", ())
    assert len(rules()) == len(BUILTIN_RULES)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("nameonly", "NAME=REGEX"),
        ("=abc", "NAME=REGEX"),
        ("bad name=abc", "NAME=REGEX"),
        ("x=", "NAME=REGEX"),
        ("x=(unclosed", "rule x: not a regular expression"),
        ("x=a*", "rule x: the regex matches the empty string"),
    ],
)
def test_user_rule_errors_name_the_problem(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        user_rule(spec)


def test_parsed_fields_by_value_and_by_key() -> None:
    text = (
        '{"msg":"login for bob","password":"hunter2","db":{"passwd":1234,"host":"h"},'
        f'"headers":{{"authorization":"Bearer {JWT}"}},"keys":["AKIAIOSFODNN7EXAMPLE","x"],'
        '"passwords":["a","b"],"password_policy":{"min":8},"password_set":true,'
        '"aws_secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","n":null}'
    )
    p = parse(text)
    message, original, hits = BUILTIN.apply(p.message or text, p.original, p.fields)
    assert message == "login for bob"
    assert p.fields == {
        "password": "[REDACTED:password]",
        "db": {"passwd": "[REDACTED:password]", "host": "h"},
        "headers": {"authorization": "Bearer [REDACTED:bearer]"},
        "keys": ["[REDACTED:aws_access_key]", "x"],
        "passwords": ["[REDACTED:password]", "[REDACTED:password]"],
        "password_policy": {"min": 8},
        "password_set": True,
        "aws_secret_access_key": "[REDACTED:aws_secret_key]",
        "n": None,
    }
    assert original is not None
    assert "hunter2" not in original
    assert JWT not in original
    assert "AKIAIOSFODNN7EXAMPLE" not in original
    assert "wJalrXUtnFEMI" not in original
    assert set(hits) == {"password", "bearer", "aws_access_key", "aws_secret_key"}
    assert len(hits) == len(set(hits))


def test_message_taken_from_a_parsed_field_is_redacted() -> None:
    p = parse('{"msg":"retry with password=hunter2","level":"warn"}')
    message, original, hits = BUILTIN.apply(p.message or "", p.original, p.fields)
    assert message == "retry with password=[REDACTED:password]"
    assert original == '{"msg":"retry with password=[REDACTED:password]","level":"warn"}'
    assert hits == ("password",)


def test_a_keyword_spelled_with_unicode_escapes_is_still_found_in_fields() -> None:
    text = '{"note":"\\u0070assword=hunter2"}'
    p = parse(text)
    message, _, hits = BUILTIN.apply(text, None, p.fields)
    assert p.fields == {"note": "password=[REDACTED:password]"}
    assert message == '{"note":"password=[REDACTED:password]"}'
    assert hits == ("password",)


@pytest.mark.parametrize(
    "text",
    [
        '{"p\\u0061ssword":"hunter2","level":"info"}',
        '{"msg":"login","PASS\\u0057ORD":"hunter2"}',
        '{"msg":"login","db":{"\\u0070\\u0061\\u0073\\u0073wd":"hunter2"}}',
        '{"note":"say \\u0022password\\u0022: \\u0022hunter2\\u0022"}',
        '{"note":"password\\u003dhunter2"}',
        '{"msg":"a \\\\ b","password":"hunter2"}',
        "login p\\u0061ssword\\u003dhunter2 ok",
    ],
)
def test_a_secret_spelled_with_unicode_escapes_leaves_no_trace(text: str) -> None:
    """JSON may spell any character as `\\uXXXX`: a key or `=` so spelled hides the
    secret from a rule reading the text, though every parser reads it plainly. The
    record's text (message or event.original) must not keep what its fields hide."""
    p = parse(text)
    message = text if p.message is None else p.message
    message, original, hits = BUILTIN.apply(message, p.original, p.fields)
    assert "hunter2" not in f"{message} {original} {p.fields}"
    assert hits == ("password",)


SECRET_FORMS = [
    '{{"{key}":"{value}"}}',
    '{{"msg":"m","{key}":"{value}","n":1}}',
    '{{"a":{{"{key}":"{value}"}}}}',
    '{{"note":"{key}={value}"}}',
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["password", "db_passwd", "PassWord", "user.password"]),
    st.lists(st.booleans(), min_size=12, max_size=12),
    st.sampled_from(SECRET_FORMS),
)
def test_a_secret_is_hidden_however_its_key_is_spelled(
    key: str, escape: list[bool], form: str
) -> None:
    written = "".join(
        f"\\u{ord(c):04x}" if escape[i % len(escape)] else c for i, c in enumerate(key)
    )
    text = form.format(key=written, value="hunter2-17")
    p = parse(text)
    message = text if p.message is None else p.message
    message, original, hits = BUILTIN.apply(message, p.original, p.fields)
    assert "hunter2" not in f"{message} {original} {p.fields}", text
    assert hits == ("password",)


def test_a_text_spelled_with_escapes_keeps_its_meaning_once_redacted() -> None:
    text = '{"p\\u0061ssword":"hunter2","note":"\\u00e9 \\u0022q\\u0022 \\\\u0070","level":"info"}'
    redacted, hits = BUILTIN.text(text)
    assert hits == ("password",)
    assert json.loads(redacted) == {
        "password": "[REDACTED:password]",
        "note": 'é "q" \\u0070',
        "level": "info",
    }
    # nothing to hide: the text is left as written, escapes and all
    harmless = '{"a":"\\u00e9 \\u003c p\\u0061ss \\\\u0070assword"}'
    assert BUILTIN.text(harmless) == (harmless, ())
    assert BUILTIN.clean(harmless)
    assert not BUILTIN.clean("p\\u0061ssword=x")


def test_nothing_to_hide_returns_everything_unchanged() -> None:
    p = parse('{"msg":"order placed","user":"bob","n":[1,{"a":"b"}]}')
    fields = {"user": "bob", "n": [1, {"a": "b"}]}
    assert BUILTIN.apply(p.message or "", p.original, p.fields) == ("order placed", p.original, ())
    assert p.fields == fields
    assert BUILTIN.apply("plain text line") == ("plain text line", None, ())


def test_user_rules_reach_field_values_the_raw_text_would_hide() -> None:
    # anchored: matches the parsed value, never the JSON text around it
    redactor = Redactor(rules([user_rule(r"token=^tok_\w+$")]))
    p = parse('{"t":"tok_abc"}')
    assert redactor.apply('{"t":"tok_abc"}', None, p.fields)[2] == ("token",)
    assert p.fields == {"t": "[REDACTED:token]"}


@pytest.mark.parametrize(
    "text",
    [
        "password " + "a-" * 500_000,
        "password " + '"a.' * 300_000,
        "'password' " + "'a" * 500_000,
        '\\"password\\" ' + '\\"a' * 300_000,
        'password="' + "\\a" * 500_000,
        "bearer " + "a" * 1_000_000,
        "-----BEGIN PRIVATE KEY-----" * 40_000,
        "aws_secret_access_key" * 50_000,
        "AKIA" * 250_000,
        '"password": [' + " " * 1_000_000,
    ],
    ids=[
        "dotted",
        "quoted",
        "single",
        "escaped",
        "unclosed",
        "bearer",
        "begin",
        "aws",
        "akia",
        "list",
    ],
)
def test_a_megabyte_of_near_misses_is_searched_in_linear_time(text: str) -> None:
    # The whole record is searched: a rule that backtracks quadratically over such a run
    # holds the collector for an hour (the 'dotted' case did before the key's `\b[\w.-]*`
    # prefix went); here each takes milliseconds, and the suite's timeout is the bound.
    redacted, _ = BUILTIN.text(text)
    assert len(redacted) <= len(text)


def test_whole_lines_as_the_runtime_wrote_them_can_be_checked_at_once() -> None:
    lines = [
        b'{"log":"GET /a 200 \\u003cb\\u003e\\n","stream":"stdout","time":"2026-11-30T10:00:00Z"}',
        b"2026-11-30T10:00:00.1Z stderr F plain text \xc3\xbc",
    ]
    assert BUILTIN.clean(b"\n".join(lines))
    leaky = b'{"log":"{\\"PassWord\\":\\"x\\"}\\n","stream":"stdout","time":"2026-11-30T10:00:00Z"}'
    assert not BUILTIN.clean(b"\n".join([*lines, leaky]))
    # an escape that may spell a keyword once the line's own JSON is parsed
    escaped = b'{"log":"{\\"a\\":\\"\\\\u0070assword=x\\"}\\n","stream":"stdout"}'
    assert BUILTIN.clean(escaped)
    assert not BUILTIN.clean(escaped, parsed=True)
    # user rules have no keywords: nothing is clean
    assert not Redactor(rules([user_rule("x=abc")])).clean(b"zzz")


@pytest.mark.parametrize(
    "text",
    [
        "'passwd' * 175_000",
        "'\"' + 'passwd' * 175_000",
        "\"'\" + 'passwd' * 175_000",
        "'\\\\\"' + 'passwd' * 175_000",
    ],
    ids=["a run of passwd", "a quoted run", "a single-quoted run", "an escaped quoted run"],
)
def test_a_megabyte_of_keywords_is_searched_in_linear_time(text: str) -> None:
    """A password key's name is read up to 64 characters on either side of `passw`: with
    no bound, each `passw` of a long run had the rest of the run read again (256 KiB took
    160 CPU-seconds, and the collector ships nothing meanwhile)."""
    code = f"from collector.redact import Redactor, rules; Redactor(rules()).text({text})"
    assert ends(code)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('{"msg":"x","password":["hunter2"]}', "hunter2"),
        ('{"msg":"c","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}', "wJalr"),
        ('{"msg":"c","secret_access_key":"short\\"one"}', "short"),
        ('{"level":"info","secret_access_key":"shortsecret"}', "shortsecret"),
        ('{"msg":"password changed","password":{"old":"hunter1","new":"hunter2"}}', "hunter"),
        ('{"msg":"login","db_password":{"value":"hunter2"}}', "hunter2"),
        ('{"msg":"copy","secret_access_key":"s3cr3tvalue","note":"was s3cr3tvalue"}', "s3cr3t"),
    ],
    ids=[
        "a list under password",
        "an AWS secret key by its key alone",
        "a short one with a quote",
        "the whole text as message",
        "an object under password",
        "an object under db_password",
        "a copy under another key",
    ],
)
def test_what_a_key_hides_in_the_fields_the_text_does_not_keep(text: str, secret: str) -> None:
    """The record's text (event.original, or message when it is the whole text) is kept
    in Elasticsearch beside the fields: what the fields hide by their key must not stay in
    it, nor in a copy of it under another key."""
    p = parse(text)
    message = text if p.message is None else p.message
    message, original, hits = BUILTIN.apply(message, p.original, p.fields)
    assert secret not in f"{message} {original} {p.fields}"
    assert hits


def test_a_value_hidden_by_its_key_is_hidden_in_the_text_only_where_it_stands_whole() -> None:
    p = parse('{"msg":"x","password":["hunter2"],"note":"hunter22 hunter2 xhunter2"}')
    _, original, _ = BUILTIN.apply(p.message or "", p.original, p.fields)
    assert original == (
        '{"msg":"x","password":[REDACTED:password],"note":"hunter22 [REDACTED:password] xhunter2"}'
    )
    assert p.fields == {
        "password": ["[REDACTED:password]"],
        "note": "hunter22 [REDACTED:password] xhunter2",
    }


@pytest.mark.parametrize(
    ("text", "message", "fields", "original"),
    [
        (
            '{"password":0,"retries":0,"msg":"exit 0"}',
            "exit 0",
            {"password": "[REDACTED:password]", "retries": 0},
            '{"password":[REDACTED:password],"retries":0,"msg":"exit 0"}',
        ),
        (
            '{"password":"1","user":"1","msg":"step 1 of 3: ok"}',
            "step 1 of 3: ok",
            {"password": "[REDACTED:password]", "user": "1"},
            '{"password":"[REDACTED:password]","user":"1","msg":"step 1 of 3: ok"}',
        ),
        (
            '{"password":{"new":"x","old":"a"},"msg":"a x b","path":"/a/x"}',
            "a x b",
            {
                "password": {"new": "[REDACTED:password]", "old": "[REDACTED:password]"},
                "path": "/a/x",
            },
            '{"password":[REDACTED:password],"msg":"a x b","path":"/a/x"}',
        ),
        (
            '{"db_password":"info","level":"info","msg":"password changed"}',
            "password changed",
            {"db_password": "[REDACTED:password]", "level": "info"},
            '{"db_password":"[REDACTED:password]","level":"info","msg":"password changed"}',
        ),
        (
            '{"password":123456,"port":123456,"msg":"on 123456"}',
            "on 123456",
            {"password": "[REDACTED:password]", "port": 123456},
            '{"password":[REDACTED:password],"port":123456,"msg":"on 123456"}',
        ),
    ],
    ids=["a zero", "a one", "letters in an object", "a level's name", "a number"],
)
def test_a_value_too_short_or_not_a_string_is_hidden_only_under_its_key(
    text: str, message: str, fields: dict[str, Any], original: str
) -> None:
    """`0`, `1`, `x` or `info` under a password key stand whole in many places that are no
    copy of it (a retry count, a step, a level): only a value of the length of a secret is
    hidden wherever else it stands."""
    p = parse(text)
    assert BUILTIN.apply(p.message or "", p.original, p.fields) == (
        message,
        original,
        ("password",),
    )
    assert p.fields == fields


def test_a_password_spelled_as_a_rule_name_leaves_the_marks_whole() -> None:
    p = parse('{"user":"bob","password":"password","msg":"x"}')
    _, original, _ = BUILTIN.apply(p.message or "", p.original, p.fields)
    assert p.fields == {"user": "bob", "password": "[REDACTED:password]"}
    # The key is hidden too: a copy of the secret may be a key (a map of tokens to users).
    assert original == '{"user":"bob","[REDACTED:password]":"[REDACTED:password]","msg":"x"}'


class CountingRe:
    """The `re` module as collector.redact sees it, keeping every pattern it is given."""

    TAKING_A_PATTERN = frozenset(
        ("compile", "search", "match", "fullmatch", "sub", "subn", "split", "findall", "finditer")
    )

    def __init__(self) -> None:
        self.patterns: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(re, name)
        if name not in self.TAKING_A_PATTERN:
            return attr

        def counted(pattern: str, *args: Any, **kwargs: Any) -> Any:
            self.patterns.append(pattern)
            return attr(pattern, *args, **kwargs)

        return counted


def test_many_values_hidden_by_their_key_are_searched_for_with_one_bounded_pattern(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """250 values under `passwords` in a record of 240 fields took 0.56 s: each value had a
    regex of its own, run on every field. A record has one pattern, of COPIES values at
    most; those beyond are hidden where their key stands, in the fields and the text."""
    secrets = [f"secret{i:03d}" for i in range(250)]
    others = {f"f{i}": f"value {i}" for i in range(240)}
    text = json.dumps(
        {"msg": f"rotated {secrets[0]}", "passwords": secrets, **others}, separators=(",", ":")
    )
    p = parse(text)
    counting = CountingRe()
    monkeypatch.setattr(redact, "re", counting)
    message, original, hits = BUILTIN.apply(p.message or "", p.original, p.fields)
    assert len(counting.patterns) == 1
    assert sum(s in counting.patterns[0] for s in secrets) <= redact.COPIES
    assert message == "rotated [REDACTED:password]"
    assert p.fields == {"passwords": ["[REDACTED:password]"] * 250, **others}
    assert original is not None
    assert not any(s in original for s in secrets)
    assert hits == ("password",)


def test_an_object_under_a_password_key_in_plain_text_is_hidden() -> None:
    text = 'user update {"password": {"new": "hunter2"}} done'
    assert BUILTIN.text(text) == (
        'user update {"password": [REDACTED:password]} done',
        ("password",),
    )


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("x Authorization: Bearer eyJhbGciOiJI", "x Authorization: Bearer [REDACTED:bearer]"),
        ("key=AKIAIOSFOD", "key=[REDACTED:aws_access_key]"),
        ('{"db_password": "hunt', '{"db_password": "[REDACTED:password]'),
        ("aws_secret_access_key=wJalrXUtn", "aws_secret_access_key=[REDACTED:aws_secret_key]"),
        (
            "login password=hunter2 ok and then Bearer ab",
            "login password=[REDACTED:password] ok and then Bearer [REDACTED:bearer]",
        ),
    ],
)
def test_a_text_cut_inside_a_secret_hides_the_head_of_it(text: str, hidden: str) -> None:
    """Cut at --max-record-bytes, a secret's head is too short for its rule to see."""
    assert BUILTIN.apply(text, cut=True)[0] == hidden
    assert BUILTIN.apply(text)[0] != hidden


@pytest.mark.parametrize(
    "text",
    [
        "a cut text that ends in words",
        "Bearer of bad news",
        "password=[REDACTED:password]",
        # A word, not the head of an access key id: the prefix alone is no secret.
        "deploying to region ASIA",
        "key=AKIA",
    ],
)
def test_a_cut_text_without_a_secret_begun_at_its_end_is_left_as_it_is(text: str) -> None:
    assert BUILTIN.apply(text, cut=True)[0] == BUILTIN.apply(text)[0]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            f"tls_key_password=-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----",
            PEM_BODY,
        ),
        ("Bearer  aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrX"),
    ],
    ids=["a key after a password's name", "a secret key's name after bearer"],
)
def test_one_rule_does_not_hide_the_context_another_needs(text: str, secret: str) -> None:
    assert secret not in BUILTIN.text(text)[0]
