"""Which CUDA errors poison a process for good.

After a "sticky" error the CUDA runtime's documentation says the same thing
each time: the process's context is unusable and "the process must be
terminated and relaunched to continue using CUDA". Every later CUDA call in
that process fails, while a fresh process gets a fresh, working context — so
only the serving process itself can see it, and only a restart helps.

torch ≥ 2.8 raises these as ``torch.AcceleratorError`` with ``error_code``
(the ``cudaError_t`` value); older torch raises a ``RuntimeError`` whose
message starts "CUDA error:". Out-of-memory is never sticky, whichever way it
is raised: ``torch.OutOfMemoryError``, or ``AcceleratorError`` code 2 ("CUDA
error: out of memory"), which is what a full GPU gives at context creation.
"""

from __future__ import annotations

from torchprobe.common.status_doc import Sticky

__all__ = ["STICKY_CODES", "StickyError", "classify", "classify_text"]

#: cudaError_t values after which the context cannot be used again.
STICKY_CODES: dict[int, str] = {
    214: "uncorrectable ECC error encountered",
    220: "uncorrectable NVLink error detected during the execution",
    700: "an illegal memory access was encountered",
    702: "the launch timed out and was terminated",
    710: "device-side assert triggered",
    714: "hardware stack error",
    715: "an illegal instruction was encountered",
    716: "misaligned address",
    717: "operation not supported on global/shared address space",
    718: "invalid program counter",
    719: "unspecified launch failure",
}

_OUT_OF_MEMORY = 2
_MESSAGES = {text: code for code, text in STICKY_CODES.items()}


class StickyError:
    """A sticky CUDA error as the monitor records it."""

    __slots__ = ("code", "type", "message")

    def __init__(self, code: int | None, type_: str, message: str) -> None:
        self.code = code
        self.type = type_
        self.message = message

    def as_dict(self, at: float) -> Sticky:
        """The state document's ``sticky``, seen at ``at`` (``time.time()``)."""
        return {"code": self.code, "type": self.type, "message": self.message, "at": at}

    def __repr__(self) -> str:
        return f"StickyError({self.code}, {self.type}: {self.message!r})"


def classify_text(code: int | None, message: str) -> int | None:
    """The sticky error code that ``code`` or ``message`` shows, or None.

    With a code, the code decides. Without one, only a message that starts
    "CUDA error:" (how torch words a CUDA runtime error) can be sticky, and
    only when it names one of the sticky errors.
    """
    if code is not None:
        return code if code in STICKY_CODES else None
    text = " ".join(message.split())
    if not text.lower().startswith("cuda error:"):
        return None
    detail = text[len("cuda error:") :].strip().lower()
    for known, known_code in _MESSAGES.items():
        if detail.startswith(known):
            return known_code
    return None


def classify(exc: BaseException) -> StickyError | None:
    """A :class:`StickyError` when ``exc`` (or an exception it was raised
    from) is a sticky CUDA error; None otherwise, out-of-memory included."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _classify_one(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _classify_one(exc: BaseException) -> StickyError | None:
    if type(exc).__name__ == "OutOfMemoryError":
        return None
    raw = getattr(exc, "error_code", None)
    code = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    if code == _OUT_OF_MEMORY:
        return None
    message = " ".join(str(exc).split())
    if not isinstance(exc, RuntimeError) and code is None:
        return None
    sticky = classify_text(code, message)
    if sticky is None:
        return None
    return StickyError(sticky, type(exc).__name__, message[:500])
