#!/usr/bin/env bash
# Benchmark 6, on a CUDA machine: bench/gpu.sh [--no-write] [--samples N]   (from anywhere; <= 8 minutes)
#
# Training throughput on the real-world shape (~885,000 samples, the small MLP) at batch 32 and at
# batch 4096 (bf16 autocast), in-process against a minimal eager loop on the same GPU, plus real
# training sessions through `trainhost worker --gpu 0`: the device the job saw, samples/s, and device
# memory before/after. Appends a section to bench/RESULTS.md. Exit status: 0 all goals met,
# 1 a goal missed, 2 no CUDA here (nothing run), 124 over the 8-minute cap.
set -u
cd "$(dirname "$0")/.." || exit 2
PY="${PY:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
    echo "bench/gpu.sh: no $PY; run 'make TORCH=torch==2.13.0+cu128 setup' (a CUDA build of torch) first" >&2
    exit 2
fi
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "bench/gpu.sh: no NVIDIA driver here (nvidia-smi not found); this benchmark needs a CUDA GPU. Nothing was run." >&2
    exit 2
fi
nvidia-smi --query-gpu=index,name,memory.used,memory.total,driver_version --format=csv,noheader || true
# bench.gpu checks torch's view too (a CPU-only torch build says so and exits 2).
exec timeout --signal=TERM --kill-after=30 480 "$PY" -m bench.gpu "$@"
