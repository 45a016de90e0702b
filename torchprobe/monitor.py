"""``torchprobe.monitor``: the public name of :mod:`torchprobe.inprocess.monitor`.

This module *is* that module (the same object in ``sys.modules``), so
``from torchprobe.monitor import Monitor`` and patching its attributes keep
working as before the package had subpackages.
"""

import sys

from torchprobe.inprocess import monitor as _monitor

sys.modules[__name__] = _monitor
