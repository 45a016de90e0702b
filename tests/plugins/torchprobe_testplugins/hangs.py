"""A plugin module whose import hangs holding the GIL."""

import ctypes

ctypes.PyDLL(None).sleep(60)


def check() -> None:
    pass
