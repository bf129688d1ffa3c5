#!/usr/bin/env bash
# The GPU path's measurements in one prepared run, for a GPU box whose time is scarce: most
# important first, each step under its own time limit, so a run cut short still returns what it
# measured. From the checkout's root (on a lent machine: bash .devpack/run.sh 'bash scripts/gpu-measure.sh'):
#   OUT=folder bash scripts/gpu-measure.sh      (default results/gpu-<UTC time>)
# Writes there: machine.txt, tests.log (the webgpu tests on the real GPU), training.log and
# perf-training.json (npm run bench on webgpu), torch.json (PyTorch on the same GPU, where it
# exists), sweep.log and perf-sweep.json (the 36-cell sweep: wasm on every core against webgpu).
set -u
out=${OUT:-${RESULTS:-results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}}
mkdir -p "$out"
step() { echo "== $(date -u +%T) $*" | tee -a "$out/steps.log"; }

step machine
{ date -u; node --version; nproc; free -g | head -2; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1; } > "$out/machine.txt"

step "webgpu tests (correctness of every kernel on this GPU)"
timeout 240 node node_modules/uvu/bin.js -r tsx test '(backend|webgpu-kernels|webgpu)\.test\.ts$' > "$out/tests.log" 2>&1
echo "tests exit $?" >> "$out/steps.log"

step "training speed on webgpu (batches 128 and 1,024, dispatches, GPU time per kernel)"
timeout 300 node --import tsx scripts/bench.ts --backends webgpu --training-only > "$out/training.log" 2>&1
echo "bench exit $?" >> "$out/steps.log"
cp results/perf.json "$out/perf-training.json" 2>/dev/null

step "PyTorch on the same GPU"
torch=$(ls /tmp/devpack/torch_student.py ../shared/device/torch_student.py 2>/dev/null | head -1)
[[ -n $torch ]] && timeout 120 python3 "$torch" cuda > "$out/torch.json" 2> "$out/torch.err"

step "the 36-cell sweep: wasm on every core against webgpu (-c threads : cells per thread)"
timeout 420 node --import tsx scripts/bench.ts --backends webgpu --students mlp --batches 128 --training-only \
  --gpu-sweep "16:1,1:1,1:8,4:8,auto" > "$out/sweep.log" 2>&1
echo "sweep exit $?" >> "$out/steps.log"
cp results/perf.json "$out/perf-sweep.json" 2>/dev/null
step done
