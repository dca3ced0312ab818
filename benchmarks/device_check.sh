#!/usr/bin/env bash
# The prepared device run for a lent GPU session (one H100/H200, ~15 minutes in all, no network there): the two
# GPU benchmarks that wait for a card, each bounded so that both fit one 10-minute command.
#   here:   pip download --no-deps bitsandbytes -d .whl      (the device has no bitsandbytes and no network)
#   device: run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=600)
# Results land in $OUT (gpu_eval.json/.log, train_step.json/.log); record card, date and numbers in RESULTS.md.
set -u
OUT="${OUT:-/tmp/medbench-device}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
if ls .whl/bitsandbytes-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/bitsandbytes-*.whl && export PYTHONPATH=/tmp/site
fi
# evaluation: the 11B Mllama, every path (issue 14); the most wanted rows first, each row written to the JSON as it
# is measured, so the timeout only loses the last ones. ~6 minutes at the probe's rates (naive ~9 samples/s).
timeout 350 python3 benchmarks/gpu_eval_throughput.py --families mllama --batches 32,64,128 --samples 256 \
    --paths naive,fast,compiled,valid-tiles,static \
    --json "$OUT/gpu_eval.json" 2>&1 | grep -v "Loading weights" | tee "$OUT/gpu_eval.log"
# batch building on this machine's CPU (one thread, Mllama's real 4-tile processor): can it feed the GPU?
timeout 45 python3 benchmarks/hf_inputs.py --families mllama --reps 3 2>&1 | grep -v "Loading weights" \
    | tee "$OUT/hf_inputs.log"
# training: LoRA and QLoRA steps at batch 1/4/8 (issue 13); ~3 minutes
timeout 180 python3 benchmarks/train_step.py --steps 2 --json "$OUT/train_step.json" 2>&1 | tee "$OUT/train_step.log"
