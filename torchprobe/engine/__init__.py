"""The engine: from CHECK arguments to results, every check under a deadline.

- :mod:`~torchprobe.engine.spec` parses one ``NAME:key=value,...`` argument,
  :mod:`~torchprobe.engine.registry` and :mod:`~torchprobe.engine.plugins`
  find the check class, :mod:`~torchprobe.engine.plan` instantiates it.
- :mod:`~torchprobe.engine.loop` runs a plan: in-process checks in threads,
  the rest in worker processes (:mod:`~torchprobe.engine.workerproc` starts
  them, :mod:`~torchprobe.engine.worker` is their main, the two speak
  :mod:`~torchprobe.engine.protocol`) and kills what runs past its deadline.
- :mod:`~torchprobe.engine.runner` calls one check and turns whatever it does
  into outcomes; :mod:`~torchprobe.engine.reap` ends what a check left behind.

The engine never imports the command line, the renderers or the report.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Interrupted", "Planned", "plan", "run"]


def __getattr__(name: str) -> "Any":
    # Lazy, so that ``python -m torchprobe.engine.worker`` imports only what
    # a worker needs.
    if name in __all__:
        from torchprobe.engine import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'torchprobe.engine' has no attribute {name!r}")
