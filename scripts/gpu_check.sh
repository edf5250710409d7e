#!/usr/bin/env bash
# The GPU checks, in one short go, on a host with an NVIDIA GPU (the CI machines have none):
#   1. the GPU-marked tests (FP16 replicas on every GPU, the GPU benchmark report)
#   2. rtai gpus: specs, strategy, FP32 vs FP16 frames/s
#   3. GPU JPEG decode (nvJPEG through torchvision) against OpenCV on the CPU
#   4. fleet vs direct on cuda:0 with one worker, then two workers sharing the GPU
# Writes its reports to $OUT (or /tmp/rtai-gpu-check). Usage: bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp/rtai-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('GPU:', torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
$PY -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.txt"
$PY -m control gpus --json --frames 200 | tee "$OUT/gpus.json"
$PY - <<'PY' | tee "$OUT/jpeg_decode.json"
import json, time
import cv2, numpy as np, torch
from torchvision.io import decode_jpeg
from devkit import synth
rng = np.random.default_rng(0)
jpegs = [cv2.imencode(".jpg", synth.render_scene(rng, width=1280, height=720)[0])[1].tobytes() for _ in range(64)]
t0 = time.perf_counter(); [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]; cpu = time.perf_counter() - t0
data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
decode_jpeg(data[:4], device="cuda"); torch.cuda.synchronize()
t0 = time.perf_counter(); decode_jpeg(data, device="cuda"); torch.cuda.synchronize(); gpu = time.perf_counter() - t0
print(json.dumps({"frames": 64, "size": "1280x720", "cpu_opencv_ms_per_frame": round(1000 * cpu / 64, 3),
                  "gpu_nvjpeg_ms_per_frame": round(1000 * gpu / 64, 3)}))
PY
for workers in 1 2; do
  $PY -m benchmarks.fleet_vs_direct --device cuda:0 --workers "$workers" --frames 800 --batch-size 8 --imgsz 640 \
    | tee "$OUT/fleet_cuda_${workers}w.json"
done
