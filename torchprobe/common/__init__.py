"""Leaf modules every layer may use: bounded file I/O (:mod:`.safeio`), the
one reader of ``/proc`` (:mod:`.procfs`), the one secret scrubber
(:mod:`.scrub`), strict JSON (:mod:`.jsonout`), where files outlive a process
(:mod:`.paths`), the state directory of ``--restart-after`` and of progress
(:mod:`.statedir`, :mod:`.progress_state`) and the status directory's
contract between the monitor that writes it and the ``status-file`` check
that reads it (:mod:`.statusdir`, its document typed in :mod:`.status_doc`).

They import nothing of torchprobe's but each other and the public
:mod:`torchprobe.base` / :mod:`torchprobe.options`.
"""
