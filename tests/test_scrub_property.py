"""Property tests of the secret scrubber (torchprobe.common.scrub): a registered
secret, embedded in any text in any of the forms output gives it, never
survives — through :func:`clean` and through the stream that wraps stdout,
however the text is cut into writes."""

from __future__ import annotations

import base64
import io
import json
from urllib.parse import quote, quote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from torchprobe.common import scrub

secrets = st.text(min_size=scrub.MIN_LENGTH, max_size=40)
# No lone surrogates: a URL's user that is not UTF-8 is refused when the option
# is parsed ("not UTF-8 text"), so it never reaches the scrubber as a user.
users = st.text(
    alphabet=st.characters(blacklist_characters=":", blacklist_categories=("Cs",)), max_size=12
)
filler = st.text(max_size=60)


def encoded(secret: str, user: str) -> list[str]:
    return [
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        base64.b64encode(f"{user}:{secret}".encode()).decode(),
    ]


@settings(max_examples=150, deadline=None)
@given(secret=secrets, user=users, before=filler, after=filler, which=st.integers(0, 6))
def test_a_registered_secret_never_survives(secret: str, user: str, before: str, after: str,
                                            which: int) -> None:  # fmt: skip
    scrub.register_basic(user, secret)
    form = encoded(secret, user)[which]
    cleaned = scrub.clean(before + form + after)
    assert form not in cleaned
    assert secret not in cleaned
    assert not any(f in cleaned for f in scrub.registered())


@settings(max_examples=200, deadline=None)
@given(secret=secrets, before=filler, after=filler, data=st.data())
def test_the_stream_scrubs_a_secret_written_in_pieces(secret: str, before: str, after: str,
                                                      data: st.DataObject) -> None:  # fmt: skip
    scrub.register(secret)
    text = before + secret + after
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    target = io.StringIO()
    stream = scrub.Stream(target)
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        stream.write(text[start:end])
    stream.flush()
    assert secret not in target.getvalue()
    assert target.getvalue() == scrub.clean(text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_text_without_a_secret_is_left_alone(text: str) -> None:
    if not any(f in text for f in scrub.registered()):
        assert scrub.clean(text) == text


@given(short=st.text(min_size=1, max_size=scrub.MIN_LENGTH - 1), text=filler)
def test_a_short_value_is_not_searched_for(short: str, text: str) -> None:
    scrub.register(short)
    assert short not in scrub.registered()
    if not any(f in short + text for f in scrub.registered()):
        assert scrub.clean(short + text) == short + text
