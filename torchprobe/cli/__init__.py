"""The command line: options, where the checks come from, rounds, and what
surrounds a run (profiles, ``--list``, ``--log`` and the textfile, restarts).

``torchprobe.cli:main`` is the click command; the console script enters
through :mod:`torchprobe._entry`, which installs its signal handlers first.
Nothing below the command line imports this package.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> "Any":
    # Lazy: importing torchprobe.cli.restart (say) must not import click.
    if name == "main":
        from torchprobe.cli.command import main

        return main
    raise AttributeError(f"module 'torchprobe.cli' has no attribute {name!r}")
