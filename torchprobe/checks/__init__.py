"""The built-in checks, one module per check. Each imports its heavy
dependencies (torch, pynvml, ssl) inside the check, never at module level.

Two modules here are libraries the checks share, not checks: ``judge`` (an
answer's status and JSON) and ``_torch`` (importing torch). The network layer
under the HTTP checks is :mod:`torchprobe.net`.
"""

from torchprobe import __version__

#: What every HTTP request of a check says it comes from (the network layer
#: knows no product name: :func:`torchprobe.net.http.exchange` takes it).
USER_AGENT = f"torchprobe/{__version__}"
