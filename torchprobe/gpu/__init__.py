"""What torchprobe knows about NVIDIA GPUs outside torch: NVML, the one way in
to the driver's view (:mod:`.nvml`); the facts of the machine that decide
whether its GPUs can be used (:mod:`.host`); what is wrong and what to do
about it (:mod:`.hints`, one GPU's readings :mod:`.health`); and critical GPU
events (Xid) — their meaning and policy (:mod:`.xid`), the watch on NVML's
event sets (:mod:`.xidwatch`) and what the monitor keeps of them
(:mod:`.xidstate`).

The checks, the ``--report`` diagnostics and the monitor import from here;
nothing here imports them. Importing this package loads no module.
"""
