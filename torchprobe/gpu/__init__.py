"""What torchprobe knows about NVIDIA GPUs outside torch: critical GPU
events (Xid) — their meaning and policy (:mod:`.xid`), the watch on NVML's
event sets (:mod:`.xidwatch`) and what the monitor keeps of them
(:mod:`.xidstate`).
"""
