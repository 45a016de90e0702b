"""The CHECK:KEY=VALUE syntax and the duration grammar (fixed interface)."""

from __future__ import annotations

import pytest

from torchprobe.base import Option, UsageError
from torchprobe.engine.spec import format_check, parse_occurrence
from torchprobe.options import boolean, duration, integer, listof, number, text

OPTIONS = {
    o.key: o
    for o in (
        Option("url", text),
        Option("status", listof(text)),
        Option("header", text, repeatable=True),
        Option("insecure", boolean, default=False),
        Option("max-memory", number(0, 100), default=98.0),
        Option("count", integer(1)),
        Option("token", text, secret=True),
        Option("needed", text, required=False),
    )
}


def parse(token: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return parse_occurrence(token, OPTIONS, env or {})


def test_only_the_first_colon_separates_the_name() -> None:
    occ = parse("http:url=http://127.0.0.1:5000/health")
    assert occ.check == "http"
    assert occ.values["url"] == "http://127.0.0.1:5000/health"


def test_a_comma_starts_an_option_only_at_depth_0_before_a_key() -> None:
    occ = parse("http:url=http://h/q?a=1,2&c=3,status=200|204,count=2")
    assert occ.values["url"] == "http://h/q?a=1,2&c=3"
    assert occ.values["status"] == ["200", "204"]
    assert occ.values["count"] == 2


def test_a_misspelt_key_after_a_comma_is_a_usage_error_with_a_suggestion() -> None:
    with pytest.raises(UsageError) as info:
        parse("http:url=http://127.0.0.1:18080/ping?v=1,conut=2")
    assert str(info.value) == (
        "check 'http': unknown option 'conut' (did you mean 'count'?); "
        "write \\, for a literal comma"
    )


def test_an_unknown_key_with_nothing_close_has_no_suggestion() -> None:
    with pytest.raises(UsageError) as info:
        parse("http:url=http://h/q?a=1,zzqx=2")
    assert str(info.value) == "check 'http': unknown option 'zzqx'; write \\, for a literal comma"


def test_a_misspelt_first_key_gets_a_suggestion_and_the_list() -> None:
    suggestion = r"unknown option 'hedaer' \(did you mean 'header'\?\) \(options: "
    with pytest.raises(UsageError, match=suggestion):
        parse("http:hedaer=A: 1")


@pytest.mark.parametrize(
    ("token", "value"),
    [
        ('http:url={"a":1,"b":2},count=2', '{"a":1,"b":2}'),
        ("http:url=[1,2,3,4],count=2", "[1,2,3,4]"),
        ('http:url=m{model="x",version="1"},count=2', 'm{model="x",version="1"}'),
        ("http:url=f(a=1,b=2),count=2", "f(a=1,b=2)"),
        ('http:url="a,b=1",count=2', '"a,b=1"'),
        ('http:url=[{"k":"v,w=1"},(x,y=2)],count=2', '[{"k":"v,w=1"},(x,y=2)]'),
        ('http:url={"q":"say \\"hi,x=1\\""},count=2', '{"q":"say \\"hi,x=1\\""}'),
        ('http:url="[",count=2', '"["'),
        ("http:url=a),b],count=2", "a),b]"),
    ],
)
def test_commas_inside_brackets_and_quotes_never_split(token: str, value: str) -> None:
    occ = parse(token)
    assert occ.values["url"] == value
    assert occ.values["count"] == 2


def test_a_declared_key_inside_brackets_does_not_start_an_option() -> None:
    occ = parse('http:url={"a":1,count=3}')
    assert occ.values == {"url": '{"a":1,count=3}'}


def test_an_unclosed_bracket_or_quote_is_part_of_the_value() -> None:
    assert parse("http:count=2,url=http://h/?q=[x").values["url"] == "http://h/?q=[x"
    assert parse('http:url=a"b, c').values["url"] == 'a"b, c'


@pytest.mark.parametrize(
    ("token", "opener", "key", "hidden"),
    [
        ("http:url=http://h/?q=[x,count=2", "[", "url", "count"),
        ('http:url=a"b,count=2', '"', "url", "count"),
        ("http:count=2,url=f(a,b=1", "(", "url", "b"),
        ("http:url={,x=1},status={a,count=2", "{", "status", "count"),
    ],
)
def test_an_unclosed_bracket_that_would_hide_an_option_is_a_usage_error(
    token: str, opener: str, key: str, hidden: str
) -> None:
    with pytest.raises(UsageError) as info:
        parse(token)
    assert str(info.value) == (
        f"check 'http': {opener!r} in option {key!r} is never closed, which would make "
        f"',{hidden}=' part of its value; close it, or write \\{opener} for a literal {opener!r}"
    )


def test_a_backslash_makes_a_bracket_or_quote_literal_outside_quotes() -> None:
    occ = parse(r"http:url=a\[b\"c\(,count=2")
    assert occ.values == {"url": 'a[b"c(', "count": 2}
    # Inside quotes \" is JSON's escaped quote: kept, and it closes nothing.
    assert parse(r'http:url="a\"b,count=1"').values == {"url": r'"a\"b,count=1"'}
    # Any other backslash is itself.
    assert parse(r"http:url=C:\x\\y").values["url"] == r"C:\x\\y"


def test_format_option_writes_what_parses_back() -> None:
    token = format_check("http", [("url", 'http://h/?a=1,b=[2"'), ("needed", "${X}")])
    assert token == r"http:url=http://h/?a=1\,b=\[2\",needed=$${X}"
    assert parse(token).values == {"url": 'http://h/?a=1,b=[2"', "needed": "${X}"}
    with pytest.raises(ValueError, match="'url': a value ending in '\\\\' must be the last"):
        format_check("http", [("url", "x\\"), ("count", "1")])


def test_a_comma_not_before_a_key_stays_in_the_value() -> None:
    occ = parse("http:url=http://h/a,b/c,d, e=1,status=200|204")
    assert occ.values["url"] == "http://h/a,b/c,d, e=1"
    assert occ.values["status"] == ["200", "204"]


def test_repeatable_option_collects_every_occurrence() -> None:
    occ = parse("http:url=u,header=A: 1,header=B: x, y")
    assert occ.values["header"] == ["A: 1", "B: x, y"]


def test_non_repeatable_option_given_twice_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="'url' given more than once"):
        parse("http:url=a,url=b")


def test_booleans_are_true_or_false_only() -> None:
    assert parse("http:insecure=true").values["insecure"] is True
    assert parse("http:insecure=false").values["insecure"] is False
    with pytest.raises(UsageError, match="option 'insecure'.*not a boolean"):
        parse("http:insecure=yes")


def test_unknown_option_names_the_check_and_lists_the_options() -> None:
    with pytest.raises(UsageError, match=r"check 'http': unknown option 'bogus' \(options: .*url"):
        parse("http:bogus=1")


def test_bad_value_names_the_check_and_the_option() -> None:
    with pytest.raises(UsageError, match=r"check 'http': option 'max-memory': .*above the maximum"):
        parse("http:max-memory=120")
    with pytest.raises(UsageError, match=r"option 'count': 'x' is not an integer"):
        parse("http:count=x")


def test_missing_equals_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse("http:url")


def test_required_option() -> None:
    options = {"url": Option("url", text, required=True)}
    with pytest.raises(UsageError, match="option 'url' is required"):
        parse_occurrence("http", options, {})


def test_environment_variables_are_substituted_and_secret() -> None:
    occ = parse("http:url=http://h/,header=Authorization: Bearer ${TOKEN}", {"TOKEN": "s3cr3t"})
    assert occ.values["header"] == ["Authorization: Bearer s3cr3t"]
    assert occ.shown["header"] == ["***"]
    assert "Authorization: Bearer s3cr3t" in occ.secrets


def test_double_dollar_is_a_literal_and_not_secret() -> None:
    occ = parse("http:url=http://h/$${NOT}", {"NOT": "x"})
    assert occ.values["url"] == "http://h/${NOT}"
    assert occ.shown["url"] == "http://h/${NOT}"
    assert occ.secrets == []


def test_unset_environment_variable_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="environment variable 'MISSING' is not set"):
        parse("http:url=${MISSING}")


def test_secret_option_is_redacted_and_bad_secret_values_are_not_echoed() -> None:
    occ = parse("http:token=hunter22")
    assert occ.shown["token"] == "***"
    options = {"n": Option("n", integer(), secret=True)}
    with pytest.raises(UsageError) as info:
        parse_occurrence("x:n=hunter22", options, {})
    assert "hunter22" not in str(info.value)


def test_name_and_timeout_are_accepted_by_every_check() -> None:
    occ = parse("http:url=u,name=primary,timeout=500ms")
    assert occ.label == "primary"
    assert occ.timeout == pytest.approx(0.5)
    with pytest.raises(UsageError, match="option 'name'"):
        parse("http:name=two words")
    with pytest.raises(UsageError, match="option 'name': '' may hold only"):
        parse("http:url=u,name=")


def test_accept_any_takes_undeclared_keys_as_text() -> None:
    occ = parse_occurrence("p:a=1,b=x,y,c=3", {}, {}, accept_any=True)
    assert occ.values == {"a": "1", "b": "x,y", "c": "3"}


def test_accept_any_splits_at_depth_0_only() -> None:
    occ = parse_occurrence('p:a={"x":1,"y":2},b=[1,c=2],c=3', {}, {}, accept_any=True)
    assert occ.values == {"a": '{"x":1,"y":2}', "b": "[1,c=2]", "c": "3"}


def test_a_plugin_before_its_code_is_loaded_splits_at_every_depth_0_key() -> None:
    occ = parse_occurrence("p:a=1,typo=2", None, {}, accept_any=True)
    assert occ.values == {"a": "1", "typo": "2"}


@pytest.mark.parametrize(
    ("text_", "seconds"),
    [("2", 2.0), ("2.5", 2.5), ("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), (".5", 0.5)],
)
def test_duration_grammar(text_: str, seconds: float) -> None:
    assert duration(text_) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "0", "-1", "2h", "1e3", "abc", "1.2.3", "0ms"])
def test_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        duration(bad)


def test_bad_check_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="a check is NAME"):
        parse(":url=x")


def test_accept_any_repeated_key_collects_a_list() -> None:
    occ = parse_occurrence("p:path=a,path=b,one=1", {}, {}, accept_any=True)
    assert occ.values == {"path": ["a", "b"], "one": "1"}
    assert occ.shown == {"path": ["a", "b"], "one": "1"}
