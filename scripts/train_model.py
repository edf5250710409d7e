"""Train the project's own model (YOLO11n on synthetic shapes) on the CPU, and make the demo clip.

  PYTHONPATH=. .venv/bin/python scripts/train_model.py train --epochs 40 --time-h 0.5
  PYTHONPATH=. .venv/bin/python scripts/train_model.py clip
  PYTHONPATH=. .venv/bin/python scripts/train_model.py evaluate

Nothing is downloaded: the network is built from yolo11n.yaml and trained from scratch.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")

from common import synth  # noqa: E402
from common.config import ASSETS_DIR  # noqa: E402

WEIGHTS = ASSETS_DIR / "rtai-shapes.pt"
CLIP = ASSETS_DIR / "demo.mp4"
CLIP_GT = ASSETS_DIR / "demo.gt.json"
TRAIN_SEED, HOLDOUT_SEED, CLIP_SEED = 1000, 5000, 7


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
    from ultralytics import YOLO, settings  # noqa: PLC0415

    settings.update({"sync": False})
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
    best = Path(model.trainer.best)
    shutil.copy(best, WEIGHTS)
    click.echo(f"trained in {time.time() - t0:.0f} s; best weights copied to {WEIGHTS}")


@cli.command()
def clip() -> None:
    """Write the demo clip and its ground truth (seed 7, never used for training)."""
    synth.make_clip(CLIP, CLIP_GT, seed=CLIP_SEED, n_frames=300)
    click.echo(f"wrote {CLIP} ({CLIP.stat().st_size} bytes) and {CLIP_GT}")


@cli.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("build/holdout"), show_default=True)
@click.option("--n", default=300, show_default=True)
def evaluate(workdir: Path, n: int) -> None:
    """mAP on fresh held-out scenes, and precision/recall on every frame of the demo clip."""
    import cv2  # noqa: PLC0415
    from ultralytics import YOLO  # noqa: PLC0415

    sys.path.insert(0, str(ROOT / "tests"))
    from metrics import match  # noqa: PLC0415

    data = synth.write_dataset(workdir, seed=HOLDOUT_SEED, n_train=1, n_val=n, imgsz=320)
    model = YOLO(str(WEIGHTS), task="detect")
    metrics = model.val(data=str(data), imgsz=320, device="cpu", plots=False, verbose=False, batch=16)
    truth = json.loads(CLIP_GT.read_text())["frames"]
    cap = cv2.VideoCapture(str(CLIP))
    tp = fp = fn = 0
    for boxes in truth:
        ok, img = cap.read()
        if not ok:
            break
        res = model.predict(img, imgsz=320, conf=0.25, verbose=False)[0]
        pred = [(int(c), b) for c, b in zip(res.boxes.cls.tolist(), res.boxes.xyxy.tolist(), strict=True)]
        t, p, f = match(pred, [(int(g[0]), g[1:5]) for g in boxes], 0.5)
        tp, fp, fn = tp + t, fp + p, fn + f
    report = {
        "holdout_images": n,
        "mAP50": round(float(metrics.box.map50), 4),
        "mAP50-95": round(float(metrics.box.map), 4),
        "clip_frames": len(truth),
        "clip_precision": round(tp / max(1, tp + fp), 4),
        "clip_recall": round(tp / max(1, tp + fn), 4),
    }
    click.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    cli()
