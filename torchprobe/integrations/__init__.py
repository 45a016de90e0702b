"""Framework adapters for the in-process monitor (:mod:`torchprobe.inprocess.monitor`).

One module per framework, each importing its framework at module level so
that only an app that uses it pays for it: :mod:`.flask` (Flask, any WSGI
server), :mod:`.asgi` (any ASGI server; Starlette routes on request). Both serve
``/health``, ``/ready`` and ``/metrics`` from the monitor's cached state, with
the answers built in :mod:`.metrics`. Nothing here is imported by
``import torchprobe`` or ``import torchprobe.inprocess.monitor``.
"""
