"""The engine ↔ worker pipe: every event survives its JSON line, and a line
that is not an event is dropped, never a crash of the engine."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchprobe.base import Outcome, Status
from torchprobe.engine import protocol
from torchprobe.engine.protocol import (
    Done,
    Job,
    JobItem,
    Secrets,
    Setup,
    Start,
    Usage,
    Valid,
    decode_event,
    encode,
)  # fmt: skip

EVENTS = [
    Usage("check 'x': unknown option 'y'"),
    Secrets(["s3cr3t", "czNjcjN0"]),
    Valid(3, "mine", {"url": "http://h/"}, ["tok"], 2.5, True),
    Valid(4, "p", {}, [], 5.0, None),
    Setup(7),
    Start(7, 1.25, True),
    Start(8, 5.0),
    Done(
        7,
        [Outcome(Status.PASS, "ok", {"n": 1}, "cpu"), Outcome(Status.FAIL, "bad")],
        "Traceback ...",
        0.5,
        "timeout",
    ),  # fmt: skip
    Done(9, [], None, 0.0),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips(event: protocol.Event) -> None:
    line = encode(event)
    assert line.endswith("\n") and line.count("\n") == 1
    decoded = decode_event(line)
    assert decoded is not None and type(decoded) is type(event)
    assert encode(decoded) == line  # outcomes compare by their encoding
    if not isinstance(event, Done):
        assert decoded == event and decode_event(line.encode()) == event


def test_a_job_round_trips() -> None:
    job = Job([JobItem(0, "tensor", "tensor:device=cpu", "m:C", False, True)], 123.5, "cut")
    assert Job.decode(job.encode()) == job


@pytest.mark.parametrize(
    "line",
    [
        "", "not json", "[]", "null", '"start"', '{"t": "start"}', '{"t": ["start"]}',
        '{"t": "nope", "index": 1}', '{"t": "result", "index": 1, "outcomes": [{"status": "??"}],'
        ' "error": null, "duration": 0}', '{"t": "result", "index": 1, "outcomes": 5,'
        ' "error": null, "duration": 0}', '{"t": "setup", "index": 1, "extra": 2}',
    ],
)  # fmt: skip
def test_a_line_that_is_not_an_event_is_dropped(line: str) -> None:
    event = decode_event(line)
    # an unknown extra field is ignored; everything else here is no event at all
    assert event is None or event == Setup(1)


@given(st.text(max_size=200))
def test_no_text_makes_the_decoder_raise(text: str) -> None:
    decode_event(text)
    decode_event(json.dumps({"t": "start", "index": text, "timeout": text}))
