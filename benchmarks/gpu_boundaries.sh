#!/usr/bin/env bash
# One prepared GPU run for issue 22 (15 minutes of device time in all): a half-width W-Net with a
# boundary head trained from scratch (wnetcli/models/boundaries-train.toml) on BSDS500 train and
# the photos, its schedule fitted to WNET_GPU_TRAIN seconds (default 330) from a 40-step probe,
# stopped with SIGINT at that budget if the fit was optimistic (the trainer saves at the step
# boundary), then exported with both outputs (probs, boundaries).
#
# Here, before the call:   make gpu-stage, and the teacher targets cached in .gpu/teacher (a CPU
#                          `wnet train ... --boundaries-from default --teacher-cache .gpu/teacher`
#                          fills it in its first minutes)
# The call (device tool):  run command="bash benchmarks/gpu_boundaries.sh" carry=[".gpu"] timeout_s=450
# What comes back ($OUT): gpu-boundaries.onnx, log.jsonl, config.json, session.log.
# WNET_GPU_DEVICE=cpu WNET_GPU_CONFIG=(a tiny config) WNET_GPU_TRAIN=60 runs the same steps on a
# CPU: a smoke test of the script.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
out=${OUT:-runs/gpu-out}
budget=${WNET_GPU_TRAIN:-330}
config=${WNET_GPU_CONFIG:-wnetcli/models/boundaries-train.toml}
device=${WNET_GPU_DEVICE:-cuda}
data=(--data .gpu/data/train --data .gpu/data/photos)
common=(--config "$config" --boundaries-from default --teacher-cache .gpu/teacher --device "$device")
mkdir -p "$out" runs
say() { echo "== $(date +%T) [${SECONDS}s] $*"; }
{
say "environment"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
ls .gpu/teacher/*/ | head -1; ls .gpu/teacher/*/*.png | wc -l

say "probe: 40 steps"
"$python" -m wnetcli train "${data[@]}" --out runs/gpu-probe "${common[@]}" --iterations 40 --checkpoint-every 0
step=$("$python" -c "
import json, statistics
rows = [json.loads(l) for l in open('runs/gpu-probe/log.jsonl') if '\"seconds\"' in l]
print(statistics.median(r['seconds'] for r in rows[1:]))")
echo "step seconds: $step"
left=$((budget - SECONDS))
"$python" - "$step" "$left" "$config" <<'PY' > runs/gpu-fitted.json
import json, sys, tomllib
step, seconds = float(sys.argv[1]), float(sys.argv[2])
settings = tomllib.load(open(sys.argv[3], "rb"))
# 0.85: data loading and checkpoints are not in the measured step time.
iterations = max(50, int(0.85 * seconds / step) // 10 * 10)
settings.update(iterations=iterations, lr_decay_every=max(1, iterations // 2), checkpoint_every=max(10, iterations // 10))
json.dump(settings, sys.stdout, indent=1)
PY
cat runs/gpu-fitted.json

say "training"
timeout -s INT "$((budget - SECONDS + 20))" "$python" -m wnetcli train "${data[@]}" --out runs/gpu-bnd \
    --config runs/gpu-fitted.json --boundaries-from default --teacher-cache .gpu/teacher --device "$device"
echo "train exit status $?"
tail -n 2 runs/gpu-bnd/log.jsonl

say "export"
"$python" -m wnetcli export runs/gpu-bnd/last.pt --out "$out/gpu-boundaries.onnx" --tolerance 0.01
cp runs/gpu-bnd/log.jsonl runs/gpu-bnd/config.json "$out/"
ls -l "$out"
say "done"
} 2>&1 | tee "$out/session.log"
