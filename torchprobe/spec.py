"""``torchprobe.spec``: the name tools used before the package had
subpackages, for :mod:`torchprobe.engine.spec` (``format_option(key, value)``).

This module *is* that module (the same object in ``sys.modules``). New code
calls :func:`torchprobe.format_option`.
"""

import sys

from torchprobe.engine import spec as _spec

sys.modules[__name__] = _spec
