"""torchprobe's benchmark suite: ``python -m benchmarks`` (``--quick``, ``--json PATH``).

Every target is a ratio (or a memory figure) measured side by side in one run:
the commands compared are run alternately (A B, B A, ...), after warm-ups, and
compared by their medians, because the machines this runs on are shared and
noisy and an absolute time means nothing there. See docs/performance.md.

- :mod:`benchmarks.harness`: running and timing a command, alternation, results.
- :mod:`benchmarks.servers`: the local HTTP servers the ``http`` targets call.
- :mod:`benchmarks.cli_targets`: start-up, HTTP, torch and NVML targets.
- :mod:`benchmarks.concurrency`: N slow endpoints in one run, and the plot.
- :mod:`benchmarks.inprocess`: the monitor and its endpoints in a served app.
- :mod:`benchmarks.report`: the table, the JSON document, the exit status.
"""
