#!/usr/bin/env bash
# One prepared GPU session, for when a session is lent the device machine (15 minutes of device
# time in all, at most 10 per command). It does, within WNET_GPU_BUDGET seconds (default 480):
#
#   1. the CUDA tests (the N-cut loss on CUDA against the CPU, a CUDA training run);
#   2. training-step timings on CUDA (benchmarks/bench_train_step.py: the small preset and the
#      paper's full-width network at batch 10, then wnetcli/models/gpu-train.toml);
#   3. a half-width W-Net trained from scratch on BSDS500 train + the photos with
#      gpu-train.toml, its schedule (iterations, learning-rate halving, dropout switch) fitted
#      to the time left from the measured step time; stopped with SIGINT at the budget if the
#      fit was optimistic, which saves the last completed step;
#   4. its ONNX export (wnet export, checked against PyTorch) and the encoder's throughput in
#      PyTorch on CUDA (benchmarks/bench_torch_encoder.py: batch 1, 8, 16, float32 and bf16).
#
# Here, before the call:   make gpu-stage      (copies the training images into .gpu/, ignored)
# The call (device tool):  run  command="bash benchmarks/gpu_session.sh"  carry=[".gpu"]
#                               timeout_s=570
# What comes back ($OUT, at most 8 files of 16 MiB): session.log, results.tar (config, training
# log, timings, sample sheets), gpu.onnx and last.pt split into 15 MB parts. Back here:
#   mkdir -p runs/gpu && cat FILES_AT/last.pt.part-* > runs/gpu/last.pt && tar -xf FILES_AT/results.tar -C runs/gpu
# then score gpu.onnx on train with benchmarks/tune_pipeline.py --model, as the model card says.
#
# WNET_GPU_CONFIG names another training config. WNET_GPU_DEVICE=cpu WNET_GPU_BUDGET=240
# WNET_GPU_CONFIG=wnetcli/models/default-train.toml runs the same steps on a CPU (a smoke test of the
# script; the step timings of the full-width network are skipped there).
set -uo pipefail

budget=${WNET_GPU_BUDGET:-480}
device=${WNET_GPU_DEVICE:-cuda}
data=${WNET_GPU_DATA:-.gpu/data}
python=${PYTHON:-python3}
out=${OUT:-runs/gpu-out}
run=${WNET_GPU_RUN:-runs/gpu}
config=${WNET_GPU_CONFIG:-wnetcli/models/gpu-train.toml}
# Seconds kept after training for the export, the throughput figures and the packing.
reserve=${WNET_GPU_RESERVE:-100}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"

say() { echo "== $(date +%T) [${SECONDS}s] $*"; }

session() {
say "environment"
[ -d "$data/train" ] && [ -d "$data/photos" ] || { echo "no $data/train and $data/photos: run make gpu-stage and carry .gpu"; exit 2; }
if [ -e "$run/last.pt" ]; then echo "$run already holds a run: move it away first"; exit 2; fi
mkdir -p "$run.extra"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: none"
"$python" -c "import torch, onnx, onnxruntime as ort; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'onnx', onnx.__version__, 'onnxruntime', ort.__version__, ort.get_available_providers())"
nproc

say "CUDA tests"
# Not the onnxruntime CUDA session test: the machine has only the CPU build of onnxruntime.
"$python" -m pytest -q -p no:cacheprovider tests/test_losses.py tests/test_training.py -k cuda 2>&1 | tail -15

say "training-step timings"
if [ "$device" = cuda ]; then
    "$python" benchmarks/bench_train_step.py --device cuda --paper-batch 10 --repeats 5 > "$run.extra/train_step.json"
    cat "$run.extra/train_step.json"
fi
"$python" benchmarks/bench_train_step.py --device "$device" --repeats 5 --config "$config" \
    > "$run.extra/train_step_config.json"
cat "$run.extra/train_step_config.json"

say "fitting the schedule"
train_seconds=$((budget - SECONDS - reserve))
if [ "$train_seconds" -lt 30 ]; then echo "only ${train_seconds}s left to train: raise WNET_GPU_BUDGET"; exit 3; fi
"$python" - "$run.extra/train_step_config.json" "$train_seconds" "$run.extra/fitted.json" "$config" <<'EOF'
import json, sys, tomllib
timing, seconds, target = json.load(open(sys.argv[1]))["results"][0], float(sys.argv[2]), sys.argv[3]
settings = tomllib.load(open(sys.argv[4], "rb"))
# 0.8: data loading, sample sheets and checkpoints are not in the measured step time.
iterations = max(20, int(0.8 * seconds / timing["step_s"]) // 10 * 10)
settings.update(iterations=iterations, lr_decay_every=iterations // 2, dropout_switch_step=iterations // 2,
                checkpoint_every=max(10, iterations // 20), sample_every=max(10, iterations // 4))
json.dump(settings, open(target, "w"), indent=1)
print(f"step {timing['step_s']:.4f} s -> {iterations} iterations in {seconds:.0f} s")
EOF

say "training"
timeout -s INT "$train_seconds" "$python" -m wnetcli train --data "$data/train" --data "$data/photos" --out "$run" \
    --config "$run.extra/fitted.json" --device "$device"
echo "train exit status $?"
tail -n 3 "$run/log.jsonl"

say "export"
"$python" -m wnetcli export "$run/last.pt" --out "$out/gpu.onnx" --tolerance 0.01

say "encoder throughput"
"$python" benchmarks/bench_torch_encoder.py --checkpoint "$run/last.pt" --device "$device" \
    $([ "$device" = cuda ] || echo "--batches 1 --reps 1 --rounds 1") > "$run.extra/encoder.json"
cat "$run.extra/encoder.json"

say "packing"
cp "$run/config.json" "$run/log.jsonl" "$run.extra/"
cp -r "$run/samples" "$run.extra/" 2>/dev/null
tar -cf "$out/results.tar" -C "$run.extra" .
split -b 15000000 -d "$run/last.pt" "$out/last.pt.part-"
sha256sum "$run/last.pt" "$out/gpu.onnx"
ls -l "$out"
say "done"
}

session 2>&1 | tee "$out/session.log"
