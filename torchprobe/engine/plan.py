"""Planning a run: every CHECK argument parsed and validated before anything runs.

A :class:`Planned` is one check occurrence on its way through the engine: which
check, where it runs, its timeout, its phase, and finally its results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torchprobe.base import Check, Option, Outcome, Status, UsageError
from torchprobe.common.deadline import Deadline
from torchprobe.engine.spec import Occurrence, parse_occurrence, split_name
from torchprobe.results import Result, reason_of

__all__ = ["MAX_CHECKS", "Planned", "instantiate", "plan", "readiness_refused"]

#: The most checks in one run. Planning, failing and reporting cost time per
#: check that no deadline can interrupt (5000 http checks: 0.35 s to plan and
#: as much to report, on 2 shared cores); up to this many end by the deadline.
MAX_CHECKS = 5000


class Planned:
    """One check occurrence, validated and ready to run."""

    __slots__ = (
        "index", "occurrence", "cls", "reference", "plugin", "worker",
        "instance", "timeout", "clock", "phase", "started", "limit", "results", "declared",
    )  # fmt: skip

    def __init__(self, index: int, occurrence: Occurrence, cls: type[Check] | None,
                 reference: str, plugin: bool, instance: Check | None) -> None:  # fmt: skip
        self.index = index
        self.occurrence = occurrence
        self.cls = cls
        self.reference = reference
        self.plugin = plugin
        self.instance = instance
        # The instance's worker: its options may choose one (cuda:backend=driver).
        chooser = instance if instance is not None else cls
        self.worker: str | None = None if chooser is None else chooser.worker
        if plugin:
            self.worker = f"plugin:{occurrence.check}"
        default = cls.timeout if cls is not None else 5.0
        self.timeout: float = occurrence.timeout or (
            instance.timeout if instance is not None else default
        )
        #: The deadline it runs under once started, granted from the round's.
        self.clock = Deadline(0.0, self.timeout)
        self.phase = "waiting to start"
        self.started: float | None = None
        self.limit: float | None = None
        self.results: list[Result] | None = None
        #: A plugin's readiness, as its worker reports it (None until then).
        self.declared: bool | None = None

    @property
    def readiness(self) -> bool | None:
        """Whether it checks readiness; for a plugin, None until its worker says.
        Asked only when wanted: a run of thousands of checks need not."""
        if self.instance is not None:
            return self.instance.checks_readiness()
        return self.declared

    def finish(self, outcomes: Sequence[Outcome], duration: float, error: str | None = None,
               reason: str | None = None) -> None:  # fmt: skip
        """Its results. ``reason`` is why it failed when the engine, not the
        check, ended it (see :data:`~torchprobe.results.REASONS`); else each
        outcome's status says it (with ``error``, a traceback: ``error``)."""
        occurrence = self.occurrence
        self.results = [
            Result(
                check=occurrence.check,
                name=occurrence.label if o.target is None else f"{occurrence.label}[{o.target}]",
                status=o.status,
                message=o.message,
                duration=duration,
                details=o.details,
                options=occurrence.shown,
                error=error,
                reason=reason_of(o.status, error, reason),
            )
            for o in outcomes
        ]

    def fail(self, message: str, duration: float = 0.0, error: str | None = None,
             reason: str = "error") -> None:  # fmt: skip
        self.finish([Outcome(Status.FAIL, message)], duration, error, reason)


def instantiate(cls: type[Check], token: str, environ: Mapping[str, str]
                ) -> tuple[Check, Occurrence]:  # fmt: skip
    """Parse ``token`` against the check class's declared options and make the
    check; a bad option or value is a UsageError naming the check."""
    from torchprobe.common.errors import describe_exception

    name = token.partition(":")[0]
    occurrence = parse_occurrence(
        token, {o.key: o for o in cls.options}, environ, accept_any=cls.accept_any
    )
    values = dict(occurrence.values)
    if occurrence.timeout is not None:
        values["timeout"] = occurrence.timeout
    try:
        return cls(**values), occurrence
    except UsageError:
        raise
    except (TypeError, ValueError) as exc:
        raise UsageError(f"check {name!r}: {describe_exception(exc)}") from None


def readiness_refused(occurrence: Occurrence, check: Check,
                      flag: str = "--restart-after") -> UsageError:  # fmt: skip
    """The usage error of ``flag`` (``--restart-after``, ``serve --live``) with a
    check that judges readiness."""
    shown = ",".join(f"{k}={v}" for k, v in occurrence.shown.items())
    spelled = repr(f"{occurrence.check}:{shown}" if shown else occurrence.check)
    if getattr(check, "mode", None) == "ready" and "mode" not in occurrence.shown:
        spelled += " (mode=ready is its default)"
    live = any(o.key == "mode" and _accepts(o, "live") for o in check.options)
    hint = f"{occurrence.check}:mode=live, " if live else ""
    return UsageError(
        f"{flag}: {spelled} checks readiness; not ready (a model loading, a server "
        f"at capacity) is no reason to restart: use a liveness check ({hint}"
        "status-file:mode=live, a /health or /live endpoint)"
    )


def _accepts(option: Option, value: str) -> bool:
    try:
        option.parse(value)
    except ValueError:
        return False
    return True


def plan(tokens: Sequence[str], environ: Mapping[str, str]) -> list[Planned]:
    """Parse and validate every CHECK before anything runs.

    Built-in checks are validated here; a plugin's options are validated in
    its worker, since its code is never imported in this process.
    """
    from torchprobe.engine import registry

    if len(tokens) > MAX_CHECKS:
        raise UsageError(f"{len(tokens)} checks: at most {MAX_CHECKS} in one run")
    planned: list[Planned] = []
    for index, token in enumerate(tokens):
        name, _ = split_name(token)
        if name in registry.RESERVED:
            raise registry.reserved_error(name)
        cls = registry.builtin(name)
        if cls is not None:
            instance, occurrence = instantiate(cls, token, environ)
            planned.append(Planned(index, occurrence, cls, registry.BUILTIN[name], False, instance))
            continue
        reference = registry.plugins().get(name)
        if reference is None:
            raise UsageError(f"unknown check {name!r} (torchprobe --list shows the checks)")
        occurrence = parse_occurrence(token, None, environ, accept_any=True)
        planned.append(Planned(index, occurrence, None, reference, True, None))
    _label(planned)
    return planned


def _label(planned: list[Planned]) -> None:
    """Give repeated occurrences distinct names: http, http#2, ..."""
    named = [p.occurrence for p in planned if "name" in p.occurrence.shown]
    keys = [o.name_key for o in named]
    for occurrence in named:
        if keys.count(occurrence.name_key) > 1:
            shown = occurrence.shown["name"]  # *** for a name from the environment
            raise UsageError(f"name={shown!r} is given to more than one check")
    taken = {o.label for o in named}
    seen: dict[str, int] = {}
    for p in planned:
        if "name" in p.occurrence.shown:
            continue
        base = p.occurrence.check
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base}#{seen[base]}"
        while label in taken:
            seen[base] += 1
            label = f"{base}#{seen[base]}"
        taken.add(label)
        p.occurrence.label = label
