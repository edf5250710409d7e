"""Train the project's own model (YOLO11n on synthetic shapes) on the CPU, and make the demo clip.

  .venv/bin/python -m scripts.train_model train --epochs 40 --time-h 0.6
  .venv/bin/python -m scripts.train_model clip
  .venv/bin/python -m scripts.train_model evaluate      # also writes common/assets/MODEL.md

Nothing is downloaded: the network is built from yolo11n.yaml and trained from scratch, and Ultralytics is kept off
the network (YOLO_OFFLINE, no telemetry or logging integrations, no font download).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

os.environ.setdefault("YOLO_OFFLINE", "1")

from common.config import ASSETS_DIR
from devkit import synth

WEIGHTS = ASSETS_DIR / "rtai-shapes.pt"
MODEL_MD = ASSETS_DIR / "MODEL.md"
CLIP = ASSETS_DIR / "demo.mp4"
CLIP_GT = ASSETS_DIR / "demo.gt.json"
TRAIN_SEED, HOLDOUT_SEED, CLIP_SEED = 1000, 5000, 7
INFO_NAME = "train_info.json"


def _no_font(font: str = "Arial.ttf") -> None:
    """Stand-in for ultralytics' check_font, which would try to download Arial.ttf; plots are off anyway."""
    return None


def _offline() -> None:
    """Keep Ultralytics off the network for everything below (its settings file persists these choices)."""
    import ultralytics.data.utils as ul_data_utils  # noqa: PLC0415
    from ultralytics import settings  # noqa: PLC0415

    off = ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
    if any(settings.get(k) for k in off):
        settings.update(dict.fromkeys(off, False))
    ul_data_utils.check_font = _no_font  # check_det_dataset() calls it to fetch a font for plots


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@click.group()
def cli() -> None:
    """Train and evaluate the rtai-shapes model; make the demo clip."""


@cli.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("build/train"), show_default=True)
@click.option("--n-train", default=1000, show_default=True)
@click.option("--n-val", default=200, show_default=True)
@click.option("--epochs", default=40, show_default=True)
@click.option("--time-h", default=0.5, show_default=True, help="Ultralytics' cap on training time (hours).")
@click.option("--threads", default=2, show_default=True)
@click.option("--resume-from", type=click.Path(path_type=Path), default=None)
def train(
    workdir: Path, n_train: int, n_val: int, epochs: int, time_h: float, threads: int, resume_from: Path | None
) -> None:
    """Generate a dataset and train YOLO11n on it from scratch."""
    import torch  # noqa: PLC0415
    from ultralytics import YOLO  # noqa: PLC0415

    _offline()
    torch.set_num_threads(threads)
    data = workdir / "data" / "data.yaml"
    if not data.exists():
        synth.write_dataset(workdir / "data", seed=TRAIN_SEED, n_train=n_train, n_val=n_val, imgsz=320)
    model = YOLO(str(resume_from) if resume_from else "yolo11n.yaml")
    t0 = time.time()
    model.train(
        data=str(data),
        epochs=epochs,
        time=time_h,
        imgsz=320,
        batch=16,
        device="cpu",
        workers=2,
        plots=False,
        amp=False,
        pretrained=False,
        project=str(workdir.resolve()),
        name="run",
        exist_ok=True,
        close_mosaic=5,
        patience=100,
        cos_lr=True,
        verbose=False,
    )
    wall = time.time() - t0
    best = Path(model.trainer.best)
    shutil.copy(best, WEIGHTS)
    info = {
        "command": ".venv/bin/python -m scripts.train_model " + " ".join(sys.argv[1:]),
        "wall_s": round(wall, 1),
        "epochs_run": int(model.trainer.epoch) + 1,
        "threads": threads,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "resumed_from": str(resume_from) if resume_from else None,
    }
    (workdir / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    click.echo(f"trained in {wall:.0f} s; best weights copied to {WEIGHTS}")


@cli.command()
def clip() -> None:
    """Write the demo clip and its ground truth (seed 7, never used for training)."""
    synth.make_clip(CLIP, CLIP_GT, seed=CLIP_SEED, n_frames=300)
    click.echo(f"wrote {CLIP} ({CLIP.stat().st_size} bytes) and {CLIP_GT}")


def _train_info(train_dir: Path) -> dict[str, Any]:
    """What the training run recorded; for a run that predates train_info.json, rebuilt from Ultralytics' files."""
    path = train_dir / INFO_NAME
    if path.exists():
        return json.loads(path.read_text())
    rows = list(csv.DictReader((train_dir / "run" / "results.csv").open()))
    args = dict(
        line.split(": ", 1) for line in (train_dir / "run" / "args.yaml").read_text().splitlines() if ": " in line
    )
    n_train = len(list((train_dir / "data" / "images" / "train").glob("*.jpg")))
    n_val = len(list((train_dir / "data" / "images" / "val").glob("*.jpg")))
    return {
        "command": (
            f".venv/bin/python -m scripts.train_model train --workdir {train_dir} --n-train {n_train} "
            f"--n-val {n_val} --epochs {args.get('epochs')} --time-h {args.get('time')}"
        ),
        "wall_s": round(float(rows[-1]["time"]), 1) if rows else None,
        "epochs_run": len(rows),
        "threads": 2,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "resumed_from": None,
    }


def _write_model_md(report: dict[str, Any], info: dict[str, Any]) -> None:
    per_class = "\n".join(f"| {name} | {ap50:.3f} | {ap:.3f} |" for name, ap50, ap in report["per_class"])
    wall = info.get("wall_s")
    wall_txt = f"{wall / 60:.1f} min ({wall:.0f} s)" if wall else "unknown"
    text = f"""# rtai-shapes.pt: the project's own detection model

`common/assets/rtai-shapes.pt` is an Ultralytics **YOLO11n** detector (2.59 M parameters, built from
`yolo11n.yaml`) trained **from scratch** (no pretrained weights) on synthetic scenes from `devkit/synth.py`.
It needs no download at run time.

- Classes: {", ".join(f"`{i}` {name}" for i, name in enumerate(synth.CLASSES))}
- Input: 320 px (`imgsz=320`); trained on 320x240 scenes (flat, gradient and noise-texture backgrounds,
  distractor lines and blobs, 1-6 objects of 18-90 px, gaussian noise, slight blur, JPEG quality 60-95).
  Every scene carries the frame-index barcode strip along the top edge, which the model learns to ignore.
- Weights file: {report["weights_bytes"] / 1e6:.1f} MB.

## Reproduce

```sh
{info["command"]}
.venv/bin/python -m scripts.train_model clip       # common/assets/demo.mp4 + demo.gt.json
.venv/bin/python -m scripts.train_model evaluate   # the numbers below, and this file
```

Training data: seed {TRAIN_SEED} (train) and {TRAIN_SEED + 1} (val), generated into `build/` (not committed).
Ultralytics' `time=` cap makes the number of epochs depend on the machine's speed, so a rerun on another
machine gives a similar, not bit-identical, model.

## Training

- Machine: {info.get("cpu")}, {info.get("cpu_count")} CPU cores, no GPU; `torch.set_num_threads({info.get("threads")})`,
  `workers=2`, `device="cpu"`, `amp=False`.
- Wall time: {wall_txt} for {info.get("epochs_run")} epochs{
        f" (continued from {info['resumed_from']})" if info.get("resumed_from") else ""
    }.
- Settings: batch 16, AdamW (Ultralytics' `optimizer=auto`), cosine LR, mosaic with `close_mosaic=5`,
  default HSV/translate/scale/fliplr augmentation.

## Accuracy

Held-out set: {report["holdout_images"]} fresh scenes (seed {HOLDOUT_SEED + 1}), `model.val(imgsz=320)`:

| class | mAP50 | mAP50-95 |
|---|---|---|
| **all** | **{report["mAP50"]:.3f}** | **{report["mAP50-95"]:.3f}** |
{per_class}

Demo clip `common/assets/demo.mp4` (seed {CLIP_SEED}, {report["clip_frames"]} frames, 320x240, H.264), every frame
decoded with OpenCV and predicted at `imgsz=320`, `conf=0.25`, matched to `demo.gt.json` greedily by IoU >= 0.5 with
the same class: precision **{report["clip_precision"]:.3f}**, recall **{report["clip_recall"]:.3f}**
({report["clip_tp"]} TP, {report["clip_fp"]} FP, {report["clip_fn"]} FN); {report["clip_ms_per_frame"]:.0f} ms per
frame on this CPU.
"""
    MODEL_MD.write_text(text)


@cli.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("build/holdout"), show_default=True)
@click.option("--n", default=300, show_default=True)
@click.option("--train-dir", type=click.Path(path_type=Path), default=Path("build/train"), show_default=True)
@click.option("--write-md/--no-write-md", default=True, show_default=True, help="Also write common/assets/MODEL.md.")
def evaluate(workdir: Path, n: int, train_dir: Path, write_md: bool) -> None:
    """mAP on fresh held-out scenes, and precision/recall on every frame of the demo clip."""
    import cv2  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from ultralytics import YOLO  # noqa: PLC0415

    from tests.metrics import match  # noqa: PLC0415

    _offline()
    torch.set_num_threads(2)
    data = synth.write_dataset(workdir, seed=HOLDOUT_SEED, n_train=1, n_val=n, imgsz=320)
    model = YOLO(str(WEIGHTS), task="detect")
    metrics = model.val(data=str(data), imgsz=320, device="cpu", plots=False, verbose=False, batch=16)
    truth = json.loads(CLIP_GT.read_text())["frames"]
    cap = cv2.VideoCapture(str(CLIP))
    tp = fp = fn = 0
    frames = 0
    t0 = time.perf_counter()
    for boxes in truth:
        ok, img = cap.read()
        if not ok:
            break
        frames += 1
        res = model.predict(img, imgsz=320, conf=0.25, device="cpu", verbose=False)[0]
        pred = [(int(c), b) for c, b in zip(res.boxes.cls.tolist(), res.boxes.xyxy.tolist(), strict=True)]
        t, p, f = match(pred, [(int(g[0]), g[1:5]) for g in boxes], 0.5)
        tp, fp, fn = tp + t, fp + p, fn + f
    ms = (time.perf_counter() - t0) * 1000 / max(1, frames)
    cap.release()
    if frames != len(truth):
        raise click.ClickException(f"{CLIP} has {frames} frames, ground truth has {len(truth)}")
    ap50, ap = metrics.box.all_ap[:, 0], metrics.box.all_ap.mean(1)
    per_class = [
        (metrics.names[int(c)], float(ap50[i]), float(ap[i])) for i, c in enumerate(metrics.box.ap_class_index)
    ]
    report = {
        "holdout_images": n,
        "mAP50": round(float(metrics.box.map50), 4),
        "mAP50-95": round(float(metrics.box.map), 4),
        "per_class": per_class,
        "clip_frames": frames,
        "clip_precision": round(tp / max(1, tp + fp), 4),
        "clip_recall": round(tp / max(1, tp + fn), 4),
        "clip_tp": tp,
        "clip_fp": fp,
        "clip_fn": fn,
        "clip_ms_per_frame": round(ms, 1),
        "weights_bytes": WEIGHTS.stat().st_size,
    }
    click.echo(json.dumps(report, indent=2))
    if write_md:
        _write_model_md(report, _train_info(train_dir))
        click.echo(f"wrote {MODEL_MD}")


if __name__ == "__main__":
    cli()
