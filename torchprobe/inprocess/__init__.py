"""Inside the serving process: the monitor (:mod:`.monitor`, public as
:mod:`torchprobe.monitor`), how it classifies a CUDA error as sticky
(:mod:`.sticky`) and the thread that writes its status file
(:mod:`.statuswriter`).

The monitor never imports the command line or the engine's loop: it runs
checks in its own process through :mod:`torchprobe.engine.plan` and
:mod:`torchprobe.engine.runner`.
"""
