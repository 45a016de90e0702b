"""Property tests of the option parser: what format_option writes parses back
exactly, and no option string makes the parser fail with anything but a
UsageError."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchprobe.base import Option, UsageError
from torchprobe.engine import registry
from torchprobe.engine.spec import format_check, format_option, parse_occurrence
from torchprobe.options import text

KEYS = ("a", "bb", "c-d", "e_f", "url")
OPTIONS = {k: Option(k, text) for k in KEYS}
#: The characters the syntax gives a meaning to, and a few that it does not.
SYNTAX = ',\\=[]{}()"$:|x1 '
ENV = {"X": "from-env", "PW": "p,w"}

values = st.text(alphabet=SYNTAX, max_size=30)
option_lists = st.lists(
    st.tuples(st.sampled_from(KEYS), values), unique_by=lambda kv: kv[0], max_size=len(KEYS)
)
PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _writable(options: list[tuple[str, str]]) -> bool:
    return not any(v.endswith("\\") for _, v in options[:-1])


@PROPERTIES
@given(option_lists)
def test_written_options_parse_back_exactly(options: list[tuple[str, str]]) -> None:
    if not _writable(options):
        with pytest.raises(ValueError, match="must be the last option"):
            format_check("c", options)
        return
    token = format_check("c", options)
    occurrence = parse_occurrence(token, OPTIONS, ENV)
    assert occurrence.values == {k.replace("-", "_"): v for k, v in options}
    assert occurrence.secrets == []  # ${ written as $${ reads no variable


@PROPERTIES
@given(option_lists)
def test_written_options_parse_back_for_a_check_taking_any_key(
    options: list[tuple[str, str]],
) -> None:
    if not _writable(options):
        return
    token = format_check("p", options)
    for declared in ({}, None):
        occurrence = parse_occurrence(token, declared, ENV, accept_any=True)
        assert occurrence.values == {k.replace("-", "_"): v for k, v in options}


@PROPERTIES
@given(st.lists(st.sampled_from(["plain", ",", "${X}", "${PW}", "[", "}", '"']), max_size=8))
def test_expand_keeps_variables_and_still_escapes_commas(parts: list[str]) -> None:
    value = "".join(parts)
    occurrence = parse_occurrence("c:" + format_option("a", value, expand=True), OPTIONS, ENV)
    assert occurrence.values["a"] == value.replace("${X}", "from-env").replace("${PW}", "p,w")
    assert bool(occurrence.secrets) == ("${" in value)


# JSON documents whose strings hold the syntax's characters, JSON's own
# escapes among them: a backslash before a comma or a closing quote, a
# ",word=" inside a string (no "$": "${" reads the environment, in JSON too).
json_text = st.text(alphabet=',\\=[]{}()":x1 \n', max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=12,
)


@PROPERTIES
@given(json_values, st.booleans())
def test_a_json_value_needs_no_escaping_before_or_after_another_option(
    document: object, compact: bool
) -> None:
    """The promise of the revised syntax: a JSON body is written as it is,
    whatever commas, brackets, quotes, '=' and backslashes its strings hold."""
    value = json.dumps(document, separators=(",", ":") if compact else None)
    for token in (f"c:a={value}", f"c:a={value},bb=1", f"c:bb=1,a={value},url=u"):
        occurrence = parse_occurrence(token, OPTIONS, ENV)
        assert occurrence.values["a"] == value, token
        assert json.loads(occurrence.values["a"]) == document


@PROPERTIES
@given(st.lists(st.tuples(st.sampled_from(["model", "version", "le"]), json_text), max_size=4))
def test_a_label_matcher_needs_no_escaping(labels: list[tuple[str, str]]) -> None:
    """A Prometheus selector, its label values escaped as the exposition
    format escapes them (backslash, double quote, newline)."""

    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    value = "m{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels) + "} 1"
    occurrence = parse_occurrence(f"c:a={value},bb=2", OPTIONS, ENV)
    assert occurrence.values == {"a": value, "bb": "2"}


def test_format_option_refuses_a_key_the_parser_cannot_read() -> None:
    for key in ("", "1a", "a b", "a=b", "a,b"):
        with pytest.raises(ValueError, match="is not an option name"):
            format_option(key, "v")


CHECKS = sorted(registry.BUILTIN)
# Random text, and text built from the syntax's own pieces (far likelier to
# reach the deeper branches: keys that exist, brackets, escapes, variables).
option_strings = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.sampled_from([*SYNTAX, ",url=", ",status=", ",name=", ",timeout=", ",header=",
                         ",contains=", ",device=", ",model=", "${X}", "${NOPE}", "$${", "\\,",
                         "http://127.0.0.1:1/", "cuda:0", "2xx", "\udcff", "\x00", "é"]),
        max_size=25,
    ).map("".join),
)  # fmt: skip


@PROPERTIES
@given(st.sampled_from(CHECKS), option_strings)
def test_no_option_string_breaks_the_parser_but_with_a_usage_error(check: str, rest: str) -> None:
    cls = registry.builtin(check)
    assert cls is not None
    declared = {o.key: o for o in cls.options}
    try:
        parse_occurrence(f"{check}:{rest}", declared, ENV)
    except UsageError as exc:
        message = str(exc)
        assert message and "\n" not in message
    try:
        parse_occurrence(f"{check}:{rest}", None, ENV, accept_any=True)
    except UsageError as exc:
        assert "\n" not in str(exc)


#: A secret's characters: none of them is in the option strings above, so a
#: message that holds one took it from the secret.
SECRET_ALPHABET = "αβγδεζηθ"


# KEY=VALUE lists whose values hold ${X} among the syntax's pieces: likelier
# than random text to get past the first option and reach every message.
secret_pieces = st.lists(st.sampled_from(["${X}", "${X}", "x", "1", "2s", ":", "/", "[", "}", ",",
                                          "\\,", " ", "é", "200", "cuda:0", "http://h/"]),
                         min_size=1, max_size=5).map("".join)  # fmt: skip
secret_options = st.lists(
    st.tuples(st.sampled_from(["name", "timeout", "url", "address", "device", "header",
                               "contains", "model", "status", "mode", "nosuch"]), secret_pieces),
    min_size=1, max_size=4,
).map(lambda kvs: ",".join(f"{k}={v}" for k, v in kvs))  # fmt: skip


@PROPERTIES
@given(st.sampled_from(CHECKS), st.one_of(option_strings, secret_options),
       st.text(alphabet=SECRET_ALPHABET, min_size=1, max_size=12))  # fmt: skip
def test_no_option_string_lets_a_secret_through_the_parser(
    check: str, rest: str, secret: str
) -> None:
    """What the parser says (a usage error, the options and the name it
    shows) never holds a value read from the environment, however short."""
    if set(rest) & set(SECRET_ALPHABET):
        return
    cls = registry.builtin(check)
    assert cls is not None
    environ = {"X": secret, "PW": secret}
    for declared, accept_any in (({o.key: o for o in cls.options}, False), (None, True)):
        try:
            occurrence = parse_occurrence(f"{check}:{rest}", declared, environ,
                                          accept_any=accept_any)  # fmt: skip
        except UsageError as exc:
            assert secret not in str(exc)
            continue
        assert secret not in repr(occurrence.shown) and secret not in occurrence.label
