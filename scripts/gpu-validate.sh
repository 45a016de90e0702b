#!/usr/bin/env bash
# Validate torchprobe on a machine with an NVIDIA GPU.
#
#   scripts/gpu-validate.sh [OUTPUT_DIR]
#
# Installs torchprobe (and its misbehaving test plugins) into the current
# Python, where torch, click and nvidia-ml-py are already present, runs each
# scenario under a hard time limit, and writes into OUTPUT_DIR:
#   results.jsonl  one JSON object per scenario: expected, rc, seconds, ok
#   log.txt        every command and its whole output
# Exit status: 0 when every scenario met its expectation.
# FULL_SUITE=0 skips the run of the rest of the test suite (minutes).
set -u
out="${1:-${OUT:-./gpu-validation-out}}"
mkdir -p "$out"
log="$out/log.txt"
results="$out/results.jsonl"
: >"$log"
: >"$results"
py="${PYTHON:-python3}"
failures=0

say() { printf '%s\n' "$*" | tee -a "$log"; }

# scenario NAME LIMIT EXPECTED_RC COMMAND...: run it, record rc and wall time.
scenario() {
  local name=$1 limit=$2 expect=$3
  shift 3
  say "=== $name (expect rc=$expect, limit ${limit}s): $*"
  local start end rc
  start=$(date +%s.%N)
  timeout -k 2 "$limit" "$@" >"$out/$name.out" 2>&1
  rc=$?
  end=$(date +%s.%N)
  cat "$out/$name.out" >>"$log"
  local seconds ok
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.3f", b-a}')
  ok=$([ "$rc" = "$expect" ] && echo true || echo false)
  [ "$ok" = true ] || failures=$((failures + 1))
  say "--- $name: rc=$rc seconds=$seconds ok=$ok"
  printf '{"scenario": "%s", "expected_rc": %s, "rc": %s, "seconds": %s, "ok": %s}\n' \
    "$name" "$expect" "$rc" "$seconds" "$ok" >>"$results"
}

say "# $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.used,memory.total \
  --format=csv >>"$log" 2>&1
"$py" -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)' \
  >>"$log" 2>&1

"$py" -m pip install -q --no-deps --no-build-isolation . ./tests/plugins >>"$log" 2>&1 \
  || { say "install failed"; exit 1; }
bin="$(dirname "$(command -v "$py")")"
export PATH="$bin:$PATH"

# 1. The default set passes, text and JSON; compare with nvidia-smi's own time.
scenario default-text 120 0 torchprobe --timeout 60
scenario default-json 120 0 torchprobe --timeout 60 --format json -v
scenario nvidia-smi 30 0 nvidia-smi --query-gpu=memory.used,memory.total --format=csv
scenario nvml-only 30 0 torchprobe nvml --format json

# 2. The probe's CUDA footprint while it runs, and nothing left afterwards.
(
  for _ in $(seq 1 200); do
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader
    nvidia-smi --query-gpu=memory.used --format=csv,noheader
    sleep 0.05
  done
) >"$out/footprint-samples.txt" 2>&1 &
sampler=$!
scenario tensor-cuda 120 0 torchprobe --timeout 60 --format json tensor:device=cuda:0
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
sort "$out/footprint-samples.txt" | uniq -c | sort -rn | head -20 >>"$log"
scenario nothing-left 30 0 bash -c \
  '[ -z "$(nvidia-smi --query-compute-apps=pid --format=csv,noheader)" ]'

# The diagnostics report: real device name, memory, driver and CUDA versions.
scenario report-text 60 0 torchprobe --report
scenario report-json 60 0 torchprobe --report --format json

# Device selection: torch honours CUDA_VISIBLE_DEVICES, NVML does not; the
# details map torch's devices to NVML's by UUID.
scenario visible-devices 120 0 env CUDA_VISIBLE_DEVICES=0 torchprobe --timeout 60 \
  --format json cuda tensor:device=cuda:0 nvml

# A check hung in a CUDA kernel is killed at its timeout and frees the GPU.
scenario cuda-hang 60 1 torchprobe --timeout 30 cudaspin:seconds=600,timeout=3
scenario cuda-hang-nothing-left 30 0 bash -c \
  'sleep 1; [ -z "$(nvidia-smi --query-compute-apps=pid --format=csv,noheader)" ]'

# The compute probe through the driver API, without torch: it passes, and its
# wall time and GPU memory beside nvml's and tensor's (the targets: at most 3x
# nvml's wall time, at most half of tensor's memory; benchmarks group driver).
scenario driver-json 60 0 torchprobe --timeout 30 --format json cuda:backend=driver
scenario driver-nvml-cuda 120 0 torchprobe --timeout 60 --format json cuda:backend=driver \
  nvml cuda
(
  for _ in $(seq 1 200); do
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader
    sleep 0.02
  done
) >"$out/driver-footprint-samples.txt" 2>&1 &
sampler=$!
for i in 1 2 3; do scenario "driver-$i" 60 0 torchprobe --timeout 30 cuda:backend=driver; done
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
sort "$out/driver-footprint-samples.txt" | uniq -c | sort -rn | head -20 >>"$log"
"$py" -c 'import json, sys
for c in json.load(open(sys.argv[1]))["checks"]:
    d = c["details"].get("device")
    mem = (d["memory_total"] - d["memory_free"]) / 2**20 if isinstance(d, dict) and "memory_free" in d else None
    print("driver-nvml-cuda", c["name"], c["status"], "seconds", c["duration"], "gpu_used_MiB_seen_in_context", mem)' \
  "$out/driver-nvml-cuda.out" >>"$log" 2>&1
scenario driver-benchmarks 300 0 "$py" -m benchmarks --only driver,nvml \
  --json "$out/driver-benchmarks.json"
scenario driver-nothing-left 30 0 bash -c \
  'sleep 1; [ -z "$(nvidia-smi --query-compute-apps=pid --format=csv,noheader)" ]'

# 3. A GIL-holding hang beside the GPU checks is killed at its timeout.
scenario hang-killed 60 1 torchprobe --timeout 30 tensor:device=cuda:0 \
  gilhang:seconds=120,timeout=2

# 4. tensor:verify=matmul: time, error and memory per dtype (the JSON of each
#    scenario is in OUTPUT_DIR/matmul-*.out; the summary lines go to the log),
#    and a product made wrong on purpose (the wrongmatmul test plugin) caught.
for dtype in float16 bfloat16 float32; do
  scenario "matmul-$dtype" 120 0 torchprobe --timeout 60 --format json \
    "tensor:device=cuda:0,verify=matmul,dtype=$dtype"
done
scenario matmul-tf32 120 0 torchprobe --timeout 60 --format json \
  tensor:device=cuda:0,verify=matmul,dtype=float32,tf32=true
scenario matmul-float16-4096 120 0 torchprobe --timeout 90 --format json \
  tensor:device=cuda:0,verify=matmul,size=4096,timeout=60
scenario matmul-wrong 120 1 torchprobe --timeout 60 wrongmatmul:device=cuda:0,verify=matmul
for f in "$out"/matmul-float*.out "$out"/matmul-tf32.out; do
  "$py" -c 'import json, sys
d = json.load(open(sys.argv[1]))["checks"][0]["details"]
print(sys.argv[1].rsplit("/", 1)[-1], d["dtype"], d["size"], "tf32" if d["tf32"] else "",
      "error", d["error"], "tolerance", d["tolerance"], "seconds", d["seconds"],
      "memory_extra_MiB", round((d["memory_extra"] or 0) / 2**20, 1))' "$f" >>"$log" 2>&1
done

# The monitor's Xid watch: the NVML event set registers on the real GPU from an
# unprivileged serving process (xid.state "watching"), and a run without an
# Xid stays live (the status document's xid field is recorded in the log).
scenario xid-watch 60 0 bash -c '
  d=$(mktemp -d)
  "$0" tests/monitor_worker.py "$d" --device cuda:0 >/dev/null 2>&1 &
  pid=$!
  sleep 4
  "$0" -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(d[\"xid\"]), \"live\", d[\"live\"]); sys.exit(0 if d[\"xid\"][\"state\"] == \"watching\" and d[\"live\"] else 1)" "$d/$pid.json"
  watching=$?
  torchprobe status-file:path="$d"
  rc=$?
  kill "$pid"
  [ "$watching" = 0 ] && exit "$rc"
  exit 1' "$py"
# The same watch in the serve sidecar's process of its own
# (python -m torchprobe.serve.xid): its first line says "watching" with every
# GPU's UUID, and it ends at the end of its stdin.
scenario xid-sidecar-child 60 0 "$py" -c '
import json, subprocess, sys
p = subprocess.Popen([sys.executable, "-m", "torchprobe.serve.xid"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
first = json.loads(p.stdout.readline())
print(first)
p.stdin.close()
rc = p.wait(10)
print("exit", rc)
ok = first.get("state") == "watching" and first.get("gpus") and rc == 0
sys.exit(0 if ok else 1)'

# 5. The test suite: the gpu-marked tests (among them a real device-side assert
#    and a real out-of-memory error beside the in-process monitor), then the rest.
scenario pytest-gpu 300 0 "$py" -m pytest -q -m gpu -rA tests/test_gpu.py \
  tests/checks/test_cuda_driver.py
if [ "${FULL_SUITE:-1}" != 0 ]; then
  scenario pytest-rest 400 0 "$py" -m pytest -q -x -m "not gpu" -p no:cacheprovider
fi

say "# failures: $failures"
[ "$failures" = 0 ]
