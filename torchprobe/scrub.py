"""``torchprobe.scrub``: the name plugins used before the package had
subpackages, for :mod:`torchprobe.common.scrub` (``register(secret)``).

This module *is* that module (the same object in ``sys.modules``). New code
calls :func:`torchprobe.register_secret`.
"""

import sys

from torchprobe.common import scrub as _scrub

sys.modules[__name__] = _scrub
