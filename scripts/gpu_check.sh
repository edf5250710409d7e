#!/usr/bin/env bash
# The GPU proof, in one run, on a host with an NVIDIA GPU (the CI machines have none):
#   1. a fresh venv with the repo installed (or PY=... to reuse one; WHEELS=dir for an offline host)
#   2. the GPU-marked tests (tensor path FP16, TensorRT export and use, FP16 replicas ...)
#   3. YOLO11s: `rtai models pull yolo11s` (needs network; else yolo11s.yaml, random weights) and
#      its FP16 TensorRT engine at imgsz 640 (batch 32), cached under RTAI_WEIGHTS_DIR/engines
#   4. model-alone frames/s: PyTorch FP16 (tensor path and Ultralytics) and TensorRT FP16, batch 1/8/32
#   5. end to end through the fleet: 8 and 32 synthetic 1080p streams, producers on this host, two
#      workers sharing the GPU: results/s and latency p50/p99
#   6. rtai gpus (which engines exist per GPU, and their speed)
# Writes one JSON summary (and each step's output) to $OUT (or the first argument, or /tmp/rtai-gpu-check).
#
#   bash scripts/gpu_check.sh [OUT_DIR]
#   bash scripts/gpu_check.sh --dry-run [OUT_DIR]   # same steps on the CPU with tiny sizes (CI, no GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT=${1:-${OUT:-/tmp/rtai-gpu-check}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export RTAI_WEIGHTS_DIR=${RTAI_WEIGHTS_DIR:-$OUT/weights}
mkdir -p "$RTAI_WEIGHTS_DIR"
log() { echo "== $*" | tee -a "$OUT/steps.log" >&2; }

# -- 1. environment ---------------------------------------------------------------------------------
if [[ -z "${PY:-}" ]]; then
  VENV=${VENV:-$OUT/venv}
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "fresh venv in $VENV"
    python3 -m venv "$VENV"
    PIP=("$VENV/bin/pip" install -q)
    [[ -n "${WHEELS:-}" ]] && PIP+=(--no-index --find-links "$WHEELS")
    "${PIP[@]}" -e ".[dev]" 2>&1 | tail -3 >&2
    [[ $DRY == 1 ]] || "${PIP[@]}" tensorrt 2>&1 | tail -1 >&2 || log "tensorrt not installable: TensorRT steps will say so"
  fi
  PY=$VENV/bin/python
fi

if [[ $DRY == 1 ]]; then
  DEVICE=cpu MODEL=rtai-shapes IMGSZ=320 BATCHES="1 4" FMT=onnx ENGINES="ultralytics torch onnx"
  STREAMS="2" SIZE=320x240 SECONDS_=4 FRAMES=8 TESTS="tests/integration/test_engines.py -k cuda"
else
  DEVICE=cuda:0 MODEL=yolo11s IMGSZ=640 BATCHES="1 8 32" FMT=engine ENGINES="ultralytics torch tensorrt"
  STREAMS="8 32" SIZE=1920x1080 SECONDS_=20 FRAMES=256 TESTS="-m gpu tests"
  $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
    > "$OUT/device.txt"
fi
log "device: $(cat "$OUT/device.txt" 2>/dev/null || echo cpu)"

# -- 2. GPU-marked tests ----------------------------------------------------------------------------
log "tests: $TESTS"
# shellcheck disable=SC2086  # word splitting of TESTS is wanted
$PY -m pytest -q -p no:cacheprovider $TESTS > "$OUT/gpu_tests.txt" 2>&1 && TESTS_RC=0 || TESTS_RC=$?
tail -3 "$OUT/gpu_tests.txt" >&2

# -- 3. the model and its engine --------------------------------------------------------------------
if [[ $DRY == 0 ]]; then
  if ! RTAI_ALLOW_DOWNLOADS=1 $PY -m control models pull yolo11s >> "$OUT/steps.log" 2>&1; then
    log "yolo11s.pt not downloadable: yolo11s.yaml (random weights; speed is the same, boxes are not)"
    MODEL=yolo11s.yaml
  fi
fi
# The fleet's workers use a batch-8 engine (the producers' batch); the model-alone step exports its own.
log "export $MODEL -> $FMT imgsz $IMGSZ batch 8"
$PY -m control models export "$MODEL" --format "$FMT" --half --batch 8 --imgsz "$IMGSZ" --device "$DEVICE" \
  > "$OUT/export.txt" 2>&1 && EXPORT_RC=0 || EXPORT_RC=$?
tail -2 "$OUT/export.txt" >&2

# -- 4. model alone ---------------------------------------------------------------------------------
log "model alone: $ENGINES, batch $BATCHES"
# shellcheck disable=SC2086
$PY -m benchmarks.engines --device "$DEVICE" --model "$MODEL" --imgsz "$IMGSZ" --batch $BATCHES --engines $ENGINES \
  --frames "$FRAMES" --reps 3 --decoded --json > "$OUT/model_alone.json" 2> "$OUT/model_alone.err" || log "model alone failed"

# -- 5. end to end ----------------------------------------------------------------------------------
for n in $STREAMS; do
  log "fleet: $n streams of $SIZE, 2 workers on $DEVICE"
  $PY -m benchmarks.fleet_streams --device "$DEVICE" --workers 2 --streams "$n" --fps 30 --size "$SIZE" \
    --imgsz "$IMGSZ" --batch-size 8 --engine-batch 8 --model "$MODEL" --seconds "$SECONDS_" --warmup 10 \
    > "$OUT/fleet_${n}.json" 2> "$OUT/fleet_${n}.err" || log "fleet with $n streams failed"
done
# The worker's prefetch on a GPU (auto = settle there): the first stream count again with off and detect.
n=${STREAMS%% *}
for p in off detect; do
  log "fleet: $n streams, prefetch $p"
  $PY -m benchmarks.fleet_streams --device "$DEVICE" --workers 2 --streams "$n" --fps 30 --size "$SIZE" \
    --imgsz "$IMGSZ" --batch-size 8 --engine-batch 8 --model "$MODEL" --seconds "$SECONDS_" --warmup 10 \
    --prefetch "$p" > "$OUT/prefetch_${p}_${n}.json" 2> "$OUT/prefetch_${p}_${n}.err" || log "prefetch $p failed"
done

# -- 6. rtai gpus -----------------------------------------------------------------------------------
$PY -m control gpus --json --variant "$MODEL" --imgsz "$IMGSZ" --frames "$FRAMES" > "$OUT/gpus.json" 2> "$OUT/gpus.err" \
  || log "rtai gpus failed"

# -- summary ----------------------------------------------------------------------------------------
$PY - "$OUT" "$TESTS_RC" "$EXPORT_RC" "$MODEL" <<'PY' | tee "$OUT/summary.json"
import json, sys
from pathlib import Path
out, tests_rc, export_rc, model = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None
device = (out / "device.txt").read_text().strip() if (out / "device.txt").exists() else "cpu"
print(json.dumps({
    "device": device,
    "model": model,
    "gpu_tests": {"rc": tests_rc, "tail": (out / "gpu_tests.txt").read_text().strip().splitlines()[-1:]},
    "export": {"rc": export_rc, "tail": (out / "export.txt").read_text().strip().splitlines()[-1:]},
    "model_alone": load("model_alone.json"),
    "fleet": [load(p.name) for p in sorted(out.glob("fleet_*.json"))],
    "prefetch": {p.stem: load(p.name) for p in sorted(out.glob("prefetch_*.json"))},
    "engines": (load("gpus.json") or {}).get("engines"),
}, indent=1))
PY
