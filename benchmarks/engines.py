"""Frames/s of the worker's detector per engine: Ultralytics' predictor, the tensor path (PyTorch) and
ONNX Runtime (or TensorRT on CUDA), at several imgsz and batch sizes, in one run, round-robin, on the
same threads; one table with each engine's ratio to Ultralytics' predictor in every cell.

Each measurement is what a worker does with a batch: JPEG frames as a producer sends them for that
imgsz (devkit scenes, imgsz x imgsz*3/4) decoded by the worker's decode pool, then the detector's
`predict` (`--decoded`: the model alone on decoded frames). Repetitions go round-robin over the
grid, the engines' order rotating within each cell, and each cell reports its median. Threads: torch
is held at `--threads` through Ultralytics' resets (worker/threads.py) and the count is read inside
every forward pass; ONNX Runtime sessions get the same count; OMP_WAIT_POLICY=PASSIVE, as in a
worker. ONNX files are exported once (one dynamic-batch file per imgsz) into a scratch weights dir
unless RTAI_WEIGHTS_DIR is set.

    python -m benchmarks.engines [--threads 2] [--imgsz 320 640] [--batch 1 4 8] [--frames 32] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="rtai-shapes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--engines", nargs="+", default=["ultralytics", "torch", "onnx"])
    ap.add_argument("--frames", type=int, default=32, help="frames per measurement")
    ap.add_argument("--reps", type=int, default=5, help="round-robin repetitions (the median is reported)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N (FP16 on CUDA)")
    ap.add_argument("--decoded", action="store_true", help="model alone: decoded frames in, no JPEG decode")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = ap.parse_args()
    command = "python -m benchmarks.engines " + shlex.join(sys.argv[1:])

    from common.config import apply_worker_thread_env  # noqa: PLC0415

    apply_worker_thread_env()  # before torch loads, as a worker does
    os.environ.setdefault("RTAI_WEIGHTS_DIR", tempfile.mkdtemp(prefix="rtai-bench-weights-"))
    load_before = os.getloadavg()

    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from common.images import encode_frame  # noqa: PLC0415
    from devkit import synth  # noqa: PLC0415
    from worker import engine_cache, threads  # noqa: PLC0415
    from worker.decode import decode_frames  # noqa: PLC0415
    from worker.engines import build  # noqa: PLC0415

    threads.hold(args.threads)
    max_batch = max(args.batch)
    cuda = args.device.startswith("cuda")
    # ONNX is exported with a dynamic batch (one file); TensorRT engines are static: one per batch size.
    exports = [("onnx", max_batch)] if "onnx" in args.engines else []
    exports += [("engine", b) for b in args.batch] if "tensorrt" in args.engines else []
    for fmt, b in exports:
        for imgsz in args.imgsz:
            engine_cache.export(args.model, fmt, half=cuda, batch=b, imgsz=imgsz, device=args.device)
    threads.hold(args.threads)  # the exporter's device setup reset them
    rng = np.random.default_rng(0)
    frames = {
        s: [
            encode_frame(synth.render_scene(rng, width=s, height=s * 3 // 4)[0], seq=i, t_capture=0.0, imgsz=s)
            for i in range(args.frames)
        ]
        for s in args.imgsz
    }
    decoded = {s: decode_frames(fs) for s, fs in frames.items()}
    dets: dict[tuple[str, int], Any] = {}
    for e in args.engines:
        for b in args.batch if e == "tensorrt" else [max_batch]:
            dets[(e, b)] = build(
                args.model, device=args.device, half=cuda, engine=e, engine_batch=b if e == "tensorrt" else max_batch
            )

    def detector(engine: str, batch: int) -> Any:
        return dets[(engine, batch if engine == "tensorrt" else max_batch)]

    def run(engine: str, imgsz: int, batch: int) -> tuple[float, float]:
        """Frames/s (wall clock) and CPU ms per frame (all of this process's threads)."""
        det = detector(engine, batch)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, args.frames, batch):
            if args.decoded:
                images = decoded[imgsz][i : i + batch]
            else:
                images = decode_frames(frames[imgsz][i : i + batch])
            det.predict(images, conf=0.25, imgsz=imgsz)
        if cuda:
            torch.cuda.synchronize()
        return args.frames / (time.perf_counter() - t0), 1000 * (time.process_time() - c0) / args.frames

    def threads_in(engine: str, imgsz: int, batch: int) -> str:
        """The threads the last measurement of this cell ran on: torch's, read inside the forward
        pass, or the ONNX Runtime session's intra-op pool (its letterbox and NMS run on torch's)."""
        runner = getattr(detector(engine, batch), "_runner", lambda _: None)(imgsz)
        if runner is not None and hasattr(runner, "threads"):
            return f"ort{runner.threads}/torch{torch.get_num_threads()}"
        return f"torch{threads.seen()}"

    cells = [(s, b) for s in args.imgsz for b in args.batch]
    names = list(args.engines)
    for s, b in cells:  # warm-up: every engine at every shape once
        for e in names:
            run(e, s, b)
    fps: dict[tuple[str, int, int], list[float]] = {(e, s, b): [] for e in names for s, b in cells}
    cpu: dict[tuple[str, int, int], list[float]] = {(e, s, b): [] for e in names for s, b in cells}
    seen: dict[str, set[str]] = {e: set() for e in names}
    for rep in range(args.reps):
        for s, b in cells:
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for e in order:
                wall, cpu_ms = run(e, s, b)
                fps[(e, s, b)].append(wall)
                cpu[(e, s, b)].append(cpu_ms)
                seen[e].add(threads_in(e, s, b))
    rows = []
    for s, b in cells:
        base = statistics.median(fps[("ultralytics", s, b)]) if "ultralytics" in names else None
        for e in names:
            med = statistics.median(fps[(e, s, b)])
            row = {
                "engine": e,
                "imgsz": s,
                "batch": b,
                "fps": round(med, 1),
                "runs": [round(x, 1) for x in fps[(e, s, b)]],
                "cpu_ms_per_frame": round(statistics.median(cpu[(e, s, b)]), 1),
            }
            if base:
                row["x_ultralytics"] = round(med / base, 2)
                row["cpu_x_ultralytics"] = round(
                    statistics.median(cpu[("ultralytics", s, b)]) / row["cpu_ms_per_frame"], 2
                )
            rows.append(row)
    report = {
        "command": command,
        "model": args.model,
        "device": args.device,
        "input": "decoded frames (model alone)" if args.decoded else "JPEG batches (worker decode + detect)",
        "threads_seen": {e: sorted(v) for e, v in seen.items()},
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "engine_in_use": {f"{e} imgsz {s}": _engine_name(detector(e, max_batch), s) for e in names for s in args.imgsz},
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "frames": args.frames,
        "reps": args.reps,
        "rows": rows,
    }
    print(json.dumps(report, indent=1) if args.json else table(report, names))


def _engine_name(det: Any, imgsz: int) -> str:
    name = getattr(det, "engine_name", None)
    return name(imgsz) if name else "ultralytics"


def table(report: dict[str, Any], names: list[str]) -> str:
    """One row per imgsz x batch: each engine's median frames/s and its ratio to Ultralytics'."""
    by_cell: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for row in report["rows"]:
        by_cell.setdefault((row["imgsz"], row["batch"]), {})[row["engine"]] = row
    lines = [
        f"{report['model']} on {report['device']}, {report['input']}, {report['frames']} frames x "
        f"{report['reps']} round-robin reps: median frames/s (x: ratio to ultralytics in the same cell), "
        "then CPU ms per frame of all threads (x: ultralytics' CPU ms over this engine's)",
        f"threads seen: {report['threads_seen']}; OMP_WAIT_POLICY={report['omp_wait_policy']}",
        f"load average before {report['load_before']}, after {report['load_after']}",
        "| imgsz | batch | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for (s, b), row in by_cell.items():
        cells = []
        for e in names:
            r = row[e]
            ratio = cpu_ratio = ""
            if "x_ultralytics" in r and e != "ultralytics":
                ratio, cpu_ratio = f" ({r['x_ultralytics']:.2f}x)", f" ({r['cpu_x_ultralytics']:.2f}x)"
            cells.append(f"{r['fps']:.1f}{ratio}, {r['cpu_ms_per_frame']:.1f} ms{cpu_ratio}")
        lines.append(f"| {s} | {b} | " + " | ".join(cells) + " |")
    lines.append(f"command: {report['command']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
