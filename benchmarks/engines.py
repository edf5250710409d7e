"""CPU frames/s of the worker's detector per engine: Ultralytics' predictor, the tensor path (PyTorch)
and ONNX Runtime, at several imgsz and batch sizes, in one run, round-robin, on the same threads.

Each measurement is what a worker does with a batch of JPEG frames: decode + detect (Ultralytics:
OpenCV decode then its predictor; tensor path and ONNX Runtime: `predict_jpeg`). Frames are devkit
scenes at imgsz x imgsz*3/4 (what a producer sends for that imgsz). ONNX files are exported once into
a scratch weights dir. Prints one JSON document.

    python -m benchmarks.engines [--threads 2] [--imgsz 320 640] [--batch 1 4 8] [--frames 32] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="rtai-shapes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--engines", nargs="+", default=["ultralytics", "torch", "onnx"])
    ap.add_argument("--frames", type=int, default=32, help="frames per measurement")
    ap.add_argument("--reps", type=int, default=3, help="round-robin repetitions (the median is reported)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N (FP16 on CUDA)")
    ap.add_argument("--decoded", action="store_true", help="model alone: decoded frames in, no JPEG decode")
    args = ap.parse_args()
    os.environ.setdefault("RTAI_WEIGHTS_DIR", tempfile.mkdtemp(prefix="rtai-bench-weights-"))

    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from devkit import synth  # noqa: PLC0415
    from worker import engine_cache  # noqa: PLC0415
    from worker.engines import build  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    max_batch = max(args.batch)
    cuda = args.device.startswith("cuda")
    # ONNX is exported with a dynamic batch (one file); TensorRT engines are static: one per batch size.
    exports = [("onnx", max_batch)] if "onnx" in args.engines else []
    exports += [("engine", b) for b in args.batch] if "tensorrt" in args.engines else []
    for fmt, b in exports:
        for imgsz in args.imgsz:
            engine_cache.export(args.model, fmt, half=cuda, batch=b, imgsz=imgsz, device=args.device)
    rng = np.random.default_rng(0)
    jpegs = {
        s: [
            cv2.imencode(".jpg", synth.render_scene(rng, width=s, height=s * 3 // 4)[0])[1].tobytes()
            for _ in range(args.frames)
        ]
        for s in args.imgsz
    }
    dets = {}
    for e in sorted(args.engines, key=lambda name: name != "ultralytics"):
        for b in args.batch if e == "tensorrt" else [max_batch]:
            dets[(e, b)] = build(
                args.model, device=args.device, half=cuda, engine=e, engine_batch=b if e == "tensorrt" else max_batch
            )
        if e == "ultralytics":  # its setup reset torch's threads: set them before ONNX sessions open
            torch.set_num_threads(args.threads)
    decoded = {s: [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in js] for s, js in jpegs.items()}
    onnx = dets.get(("onnx", max_batch))
    ort_threads = {f"imgsz {s}": onnx._runner(s).threads for s in args.imgsz if onnx._runner(s)} if onnx else {}

    def run(engine: str, imgsz: int, batch: int) -> float:
        det = dets[(engine, batch)] if engine == "tensorrt" else dets[(engine, max_batch)]
        data = (decoded if args.decoded else jpegs)[imgsz]
        t0 = time.perf_counter()
        for i in range(0, len(data), batch):
            chunk = data[i : i + batch]
            if args.decoded:
                det.predict(chunk, conf=0.25, imgsz=imgsz)
            elif engine == "ultralytics":
                images = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in chunk]
                det.predict(images, conf=0.25, imgsz=imgsz)
            else:
                det.predict_jpeg(chunk, conf=0.25, imgsz=imgsz)
        if cuda:
            torch.cuda.synchronize()
        return len(data) / (time.perf_counter() - t0)

    cells = [(e, s, b) for s in args.imgsz for b in args.batch for e in args.engines]
    for e, s, b in cells:  # warm-up: every shape once
        run(e, s, b)
    # Ultralytics' select_device (its predictor's and exporter's setup) resets torch's threads to
    # cpu_count - 1: set them again after every setup, and record what each measurement ran with.
    torch.set_num_threads(args.threads)
    seen_threads: set[int] = set()
    fps: dict[tuple[str, int, int], list[float]] = {c: [] for c in cells}
    for _ in range(args.reps):
        for c in cells:
            fps[c].append(run(*c))
            seen_threads.add(torch.get_num_threads())
    rows = []
    for s in args.imgsz:
        for b in args.batch:
            base = statistics.median(fps[("ultralytics", s, b)]) if "ultralytics" in args.engines else None
            for e in args.engines:
                med = statistics.median(fps[(e, s, b)])
                row = {
                    "engine": e,
                    "imgsz": s,
                    "batch": b,
                    "fps": round(med, 1),
                    "runs": [round(x, 1) for x in fps[(e, s, b)]],
                }
                if base:
                    row["x_ultralytics"] = round(med / base, 2)
                rows.append(row)
    print(
        json.dumps(
            {
                "model": args.model,
                "device": args.device,
                "input": "decoded frames (model alone)" if args.decoded else "JPEG bytes (decode + detect)",
                "torch_threads": sorted(seen_threads),
                "ort_intra_op_threads": ort_threads,
                "load_avg": os.getloadavg(),
                "frames": args.frames,
                "reps": args.reps,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
