"""``torchprobe serve``: the sidecar that runs checks in rounds and answers probes.

Two sets of checks, ``--live`` and ``--ready``, each run by a thread of its own
(:mod:`torchprobe.serve.rounds`) every interval in the one engine
(:func:`torchprobe.engine.loop.run`); an HTTP server (:mod:`torchprobe.serve.http`)
answers ``/live``, ``/ready``, ``/healthz`` and ``/metrics`` from the last verdict
of each set held in memory, so no check ever runs on a request's path.
docs/serve.md describes the endpoints and their bounds.
"""
