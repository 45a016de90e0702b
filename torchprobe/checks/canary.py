"""The inference canary of the model-server presets: ``infer=``, ``expect=``, ``content-type=``.

A server's health endpoints say what the server thinks of itself; a wedged
worker (a hung kernel, a stuck collective) leaves them answering "healthy".
The canary sends one real inference request and judges the answer:

- ``infer=JSON`` is the request body; ``infer=@PATH`` reads it from a regular
  file of at most 1 MiB on every run (so a rotated sample is picked up);
- ``expect=PATH=VALUE`` (repeatable) compares the answer's JSON like the
  ``http`` check's ``json=``; without it any 2xx with a JSON body passes;
- a canary that times out names the health endpoint that did answer, and in
  how long: that contrast is the diagnosis of a wedged worker.

A canary is load: it belongs in readiness and startup probes, never in
``mode=live`` (the presets refuse the combination).
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from typing import Any

from torchprobe.base import CheckFailed, Option, UsageError
from torchprobe.checks.judge import JsonOption, json_mismatch
from torchprobe.common.safeio import read_regular
from torchprobe.options import text

__all__ = ["BODY_MAX", "Body", "CANARY_OPTIONS", "read_body"]

#: The largest request body ``infer=@PATH`` sends.
BODY_MAX = 1024 * 1024
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Body:
    """``infer=``: inline JSON, or a file read on every run."""

    inline: bytes | None = None
    path: str | None = None

    def read(self, content_type: str) -> bytes:
        """The bytes to send; ``ValueError`` says why there are none."""
        if self.inline is not None:
            return self.inline
        data = read_body(self.path or "")
        if _is_json(content_type):
            try:
                json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise ValueError(
                    f"infer=@{self.path}: not JSON ({_reason(exc)}); "
                    "content-type= sends another kind of body"
                ) from None
        return data


def read_body(path: str) -> bytes:
    """A regular file of at most :data:`BODY_MAX` bytes; ``ValueError`` says why not.

    Read as every file torchprobe only reads is (:mod:`torchprobe.common.safeio`):
    opened non-blocking and checked to be a regular file before a byte is
    read, so a FIFO or a device named by mistake never hangs the probe.
    """
    where = f"infer=@{path}"
    try:
        return read_regular(path, BODY_MAX)
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise ValueError(f"{where}: over the 1 MiB limit") from None
        if exc.errno in (errno.EISDIR, errno.EINVAL) and "regular" in str(exc.strerror):
            raise ValueError(f"{where}: {exc.strerror}") from None
        raise ValueError(f"{where}: cannot read it: {exc.strerror or exc}") from None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_TYPE or media.endswith("+json")


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return "not UTF-8 text"


class _BodyOption:
    """``infer=JSON`` or ``infer=@PATH``."""

    type_name = "JSON|@PATH"

    def __call__(self, value: str) -> Body:
        if value.startswith("@"):
            path = value[1:]
            if not path:
                raise ValueError("@PATH names no file (infer=@/etc/probe/sample.json)")
            return Body(path=path)
        try:
            json.loads(value)
        except ValueError as exc:
            raise ValueError(
                f"not JSON ({_reason(exc)}); infer=@PATH reads the body from a file"
            ) from None
        return Body(inline=value.encode("utf-8"))


CANARY_OPTIONS = (
    Option(
        "infer",
        _BodyOption(),
        help="one real inference request (JSON, or @PATH read every run, at most 1 MiB)",
    ),
    Option(
        "expect",
        JsonOption(),
        repeatable=True,
        help="the inference answer has VALUE at PATH: expect=0.label=cat",
    ),
    Option("content-type", text, help="infer= is sent as this (default application/json)"),
)


def validate(check: Any) -> None:
    """The usage errors of the canary options, raised when the check is built."""
    infer: Body | None = getattr(check, "infer", None)
    generate = bool(getattr(check, "generate", False))
    name = f"check {check.name!r}"
    if check.mode == "live" and (infer is not None or generate):
        given = "infer=" if infer is not None else "generate=true"
        raise UsageError(
            f"{name}: {given} sends inference, which mode=live never does (liveness must "
            "not queue behind user requests); use it with mode=ready, in a readiness probe"
        )
    if infer is None:
        for option in ("expect", "content-type"):
            if getattr(check, option.replace("-", "_"), None):
                raise UsageError(f"{name}: {option}= is for the answer of infer=, not given")
        return
    try:
        infer.read(content_type(check))
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None


def content_type(check: Any) -> str:
    return str(getattr(check, "content_type", None) or JSON_TYPE)


def body(check: Any) -> bytes:
    """The canary's body of this run (a file is re-read); fails the check if unreadable."""
    infer: Body = check.infer
    try:
        return infer.read(content_type(check))
    except ValueError as exc:
        raise CheckFailed(str(exc)) from None


def judge(check: Any, document: Any, answered: str) -> str:
    """``expect=`` on the answer: the first mismatch fails, naming path, expected and got."""
    for path, expected in getattr(check, "expect", None) or []:
        problem = json_mismatch(document, path, expected)
        if problem:
            raise CheckFailed(f"wrong answer: {answered}, but {problem}")
    return "answer as expected" if getattr(check, "expect", None) else "answered"
