"""The CHECK:KEY=VALUE syntax and the duration grammar (fixed interface)."""

from __future__ import annotations

import pytest

from torchprobe.base import Option, UsageError
from torchprobe.options import boolean, duration, integer, listof, number, text
from torchprobe.spec import parse_occurrence

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


def test_a_comma_starts_an_option_only_before_a_declared_key() -> None:
    occ = parse("http:url=http://h/q?a=1,b=2&c=3,status=200|204,count=2")
    assert occ.values["url"] == "http://h/q?a=1,b=2&c=3"
    assert occ.values["status"] == ["200", "204"]
    assert occ.values["count"] == 2


def test_escaped_comma_is_literal_even_before_a_key() -> None:
    occ = parse(r"http:url=http://h/?x=1\,count=3")
    assert occ.values["url"] == "http://h/?x=1,count=3"
    assert "count" not in occ.values


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


def test_accept_any_takes_undeclared_keys_as_text() -> None:
    occ = parse_occurrence("p:a=1,b=x,y,c=3", {}, {}, accept_any=True)
    assert occ.values == {"a": "1", "b": "x,y", "c": "3"}


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
