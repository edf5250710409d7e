"""Synthetic shape scenes with exact ground truth: training data, demo clips and a frame-index barcode.

Every image carries a 12-bit frame-index barcode in a strip along its top-left edge; objects always lie below it.
Boxes are ``(cls, x1, y1, x2, y2)`` in pixels, ``cls`` indexing :data:`CLASSES`.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("circle", "square", "triangle")

Box = tuple[int, float, float, float, float]

# --- frame-index barcode -------------------------------------------------------------------------------------------
BARCODE_BITS = 12
BARCODE_X = 4  # left edge of the first cell
BARCODE_Y = 2  # top edge of the cells
BARCODE_CELL_W = 10
BARCODE_CELL_H = 8
BARCODE_MARGIN = 2  # mid-grey border around the cells
BARCODE_REF_WIDTH = 320  # cell coordinates are for an image this wide; other sizes scale them
STRIP_BOTTOM = BARCODE_Y + BARCODE_CELL_H + BARCODE_MARGIN  # 12: first image row below the strip
OBJECT_TOP = STRIP_BOTTOM + 2  # objects start at this row or lower

_BORDER_GREY = 128
_DARK_MAX = 96  # a cell centre at most this bright reads 0 ...
_LIGHT_MIN = 160  # ... at least this bright reads 1; anything between makes the code unreadable

MIN_SIZE = 18
MAX_SIZE = 90


def draw_frame_index(img: np.ndarray, index: int) -> np.ndarray:
    """Draw ``index`` (0 .. 2**BARCODE_BITS - 1) as black/white cells, most significant bit first, in place.

    The cells sit on a mid-grey strip along the top edge; coordinates are for a 320-wide image and scale with width.
    Returns ``img`` for chaining.
    """
    if not 0 <= index < 2**BARCODE_BITS:
        raise ValueError(f"frame index {index} does not fit in {BARCODE_BITS} bits")
    s = img.shape[1] / BARCODE_REF_WIDTH
    x0 = BARCODE_X - BARCODE_MARGIN
    x1 = BARCODE_X + BARCODE_BITS * BARCODE_CELL_W + BARCODE_MARGIN
    y1 = BARCODE_Y + BARCODE_CELL_H + BARCODE_MARGIN
    grey = (_BORDER_GREY,) * 3 if img.ndim == 3 else _BORDER_GREY
    img[0 : round(y1 * s), round(x0 * s) : round(x1 * s)] = grey
    for bit in range(BARCODE_BITS):
        on = (index >> (BARCODE_BITS - 1 - bit)) & 1
        cx = BARCODE_X + bit * BARCODE_CELL_W
        img[
            round(BARCODE_Y * s) : round((BARCODE_Y + BARCODE_CELL_H) * s),
            round(cx * s) : round((cx + BARCODE_CELL_W) * s),
        ] = 255 if on else 0
    return img


def decode_frame_index(img: np.ndarray) -> int | None:
    """Read the frame index drawn by :func:`draw_frame_index`, or None where no clean barcode is found.

    Works on BGR or grey images of any size with the 4:3 aspect of the original (cell coordinates scale with
    ``width / 320``), after H.264 and JPEG compression. There is no checksum: an image whose strip area is uniformly
    black or white reads as 0 or 4095; a mid-grey or noisy one usually reads as None.
    """
    if img is None or img.ndim not in (2, 3) or img.shape[1] < BARCODE_REF_WIDTH // 4:
        return None
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    s = grey.shape[1] / BARCODE_REF_WIDTH
    cy = (BARCODE_Y + BARCODE_CELL_H / 2) * s
    half_w = max(0.5, BARCODE_CELL_W * s * 0.2)
    half_h = max(0.5, BARCODE_CELL_H * s * 0.2)
    ya, yb = int(math.floor(cy - half_h)), int(math.ceil(cy + half_h))
    if yb > grey.shape[0]:
        return None
    value = 0
    for bit in range(BARCODE_BITS):
        cx = (BARCODE_X + (bit + 0.5) * BARCODE_CELL_W) * s
        xa, xb = int(math.floor(cx - half_w)), int(math.ceil(cx + half_w))
        mean = float(grey[ya:yb, xa:xb].mean())
        if mean <= _DARK_MAX:
            on = 0
        elif mean >= _LIGHT_MIN:
            on = 1
        else:
            return None
        value = (value << 1) | on
    return value


# --- backgrounds ---------------------------------------------------------------------------------------------------
def _luma(bgr: np.ndarray) -> np.ndarray:
    return bgr[..., 0] * 0.114 + bgr[..., 1] * 0.587 + bgr[..., 2] * 0.299


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _gradient(rng: np.random.Generator, w: int, h: int, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.7:  # linear, random direction
        a = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(a) + yy * math.sin(a)
    else:  # radial around a random centre
        t = np.hypot(xx - rng.uniform(0, w), yy - rng.uniform(0, h))
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    return c0 + (c1 - c0) * t[..., None]


def _noise_texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth random texture: a few octaves of upsampled noise around a random base colour."""
    base = _random_colour(rng)
    out = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((4, 1.0), (12, 0.5), (40, 0.25)):
        small = rng.normal(0, 1, size=(max(2, cells * h // w), cells, 3)).astype(np.float32)
        out += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return base + out * rng.uniform(10, 45)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    kind = rng.choice(["flat", "gradient", "texture", "gradient+texture"], p=[0.2, 0.3, 0.25, 0.25])
    if kind == "flat":
        bg = np.broadcast_to(_random_colour(rng), (h, w, 3)).copy()
    elif kind == "gradient":
        bg = _gradient(rng, w, h, _random_colour(rng), _random_colour(rng))
    elif kind == "texture":
        bg = _noise_texture(rng, w, h)
    else:
        bg = 0.5 * _gradient(rng, w, h, _random_colour(rng), _random_colour(rng)) + 0.5 * _noise_texture(rng, w, h)
    return np.clip(bg, 0, 255).astype(np.float32)


def _draw_distractors(rng: np.random.Generator, img: np.ndarray) -> None:
    """Lines, thin streaks and small irregular blobs that are not objects."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 5))):
        colour = tuple(float(c) for c in _random_colour(rng))
        kind = rng.random()
        if kind < 0.5:
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p0, p1, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind < 0.75:  # elongated ellipse: never circle-like
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            major = int(rng.integers(15, 50))
            axes = (major, max(1, int(major / rng.uniform(3.5, 8))))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        else:  # small irregular blob
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            n = int(rng.integers(7, 12))
            ang = np.sort(rng.uniform(0, 2 * math.pi, n))
            rad = rng.uniform(2, 7, n)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).round().astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)


# --- shapes --------------------------------------------------------------------------------------------------------
@dataclass
class _Shape:
    cls: int
    cx: float
    cy: float
    size: float  # circle diameter, square side, triangle circumdiameter
    angle: float  # radians
    colour: tuple[float, float, float]

    def points(self) -> np.ndarray:
        """Polygon vertices (float, pixels) for square and triangle; a fine polygon for the circle."""
        if self.cls == 0:
            n = 64
            r = self.size / 2
        elif self.cls == 1:
            n = 4
            r = self.size / math.sqrt(2)
        else:
            n = 3
            r = self.size / 2
        offset = math.pi / 4 if self.cls == 1 else -math.pi / 2
        a = self.angle + offset + np.arange(n) * 2 * math.pi / n
        return np.stack([self.cx + r * np.cos(a), self.cy + r * np.sin(a)], 1)

    @property
    def radius(self) -> float:
        """Radius of a circle that contains the shape at any rotation."""
        return self.size / 2 if self.cls != 1 else self.size / math.sqrt(2)

    def box(self) -> tuple[float, float, float, float]:
        if self.cls == 0:
            r = self.size / 2
            return self.cx - r, self.cy - r, self.cx + r, self.cy + r
        p = self.points()
        return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())

    def draw(self, img: np.ndarray, *, outline: tuple[float, float, float] | None = None) -> None:
        shift = 4  # sub-pixel precision for cv2 drawing
        k = 1 << shift
        if self.cls == 0:
            centre = (round(self.cx * k), round(self.cy * k))
            cv2.circle(img, centre, round(self.size / 2 * k), self.colour, -1, cv2.LINE_AA, shift)
            if outline is not None:
                cv2.circle(img, centre, round(self.size / 2 * k), outline, 1, cv2.LINE_AA, shift)
            return
        pts = (self.points() * k).round().astype(np.int32)
        cv2.fillPoly(img, [pts], self.colour, cv2.LINE_AA, shift)
        if outline is not None:
            cv2.polylines(img, [pts], True, outline, 1, cv2.LINE_AA, shift)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> tuple[float, float]:
    """IoU and intersection over the smaller box's area."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    aa = (a[2] - a[0]) * (a[3] - a[1])
    ab = (b[2] - b[0]) * (b[3] - b[1])
    return inter / max(1e-6, aa + ab - inter), inter / max(1e-6, min(aa, ab))


def _contrasting_colour(rng: np.random.Generator, local: np.ndarray) -> tuple[float, float, float]:
    """A colour that stands out against ``local`` (the mean background colour under the object)."""
    best, best_score = _random_colour(rng), -1.0
    for _ in range(40):
        c = _random_colour(rng)
        dl = abs(float(_luma(c) - _luma(local)))
        dc = float(np.linalg.norm(c - local))
        score = min(dl / 60.0, dc / 130.0)
        if score >= 1.0:
            return (float(c[0]), float(c[1]), float(c[2]))
        if score > best_score:
            best, best_score = c, score
    return (float(best[0]), float(best[1]), float(best[2]))


def _box_tuple(s: _Shape, w: int, h: int) -> Box:
    x1, y1, x2, y2 = s.box()
    return (s.cls, max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))


def _place_shapes(rng: np.random.Generator, bg: np.ndarray, n: int, w: int, h: int, *, max_size: float) -> list[_Shape]:
    shapes: list[_Shape] = []
    for _ in range(n * 30):
        if len(shapes) == n:
            break
        cls = int(rng.integers(0, len(CLASSES)))
        size = float(math.exp(rng.uniform(math.log(MIN_SIZE), math.log(max_size))))
        angle = float(rng.uniform(-0.3, 0.3)) if cls == 1 else float(rng.uniform(0, 2 * math.pi))
        if cls == 1:
            size /= math.cos(abs(angle)) + math.sin(abs(angle))  # keep the rotated box within the size range
        probe = _Shape(cls, 0.0, 0.0, size, angle, (0.0, 0.0, 0.0))
        bx1, by1, bx2, by2 = probe.box()
        if bx2 - bx1 > w - 2 or by2 - by1 > h - OBJECT_TOP - 1:
            continue
        cx = float(rng.uniform(-bx1, w - bx2))
        cy = float(rng.uniform(OBJECT_TOP - by1, h - by2))
        shape = _Shape(cls, cx, cy, size, angle, (0.0, 0.0, 0.0))
        box = shape.box()
        if any(iou >= 0.3 or small >= 0.35 for iou, small in (_iou(box, s.box()) for s in shapes)):
            continue
        x1, y1, x2, y2 = (int(v) for v in box)
        local = bg[max(0, y1) : y2 + 1, max(0, x1) : x2 + 1].reshape(-1, 3).mean(0)
        shape.colour = _contrasting_colour(rng, local)
        shapes.append(shape)
    return shapes


def _finish(rng: np.random.Generator, img: np.ndarray, *, sigma: float, blur: bool) -> np.ndarray:
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.2)))
    if sigma > 0:
        img = img + rng.normal(0, sigma, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def render_scene(
    rng: np.random.Generator,
    *,
    width: int = 320,
    height: int = 240,
    n_objects: int | None = None,
    frame_index: int | None = None,
) -> tuple[np.ndarray, list[Box]]:
    """One random scene: a BGR uint8 image and its boxes ``(cls, x1, y1, x2, y2)`` in pixels.

    ``n_objects`` defaults to a random 1-6 (fewer where they do not fit without overlap); ``frame_index`` defaults to
    a random barcode value.
    """
    n = int(rng.integers(1, 7)) if n_objects is None else n_objects
    bg = _background(rng, width, height)
    img = bg.copy()
    _draw_distractors(rng, img)
    max_size = min(MAX_SIZE, 0.9 * (height - OBJECT_TOP), 0.9 * width)
    shapes = _place_shapes(rng, bg, n, width, height, max_size=max_size)
    for s in shapes:
        b, g, r = s.colour
        s.draw(img, outline=(0.5 * b, 0.5 * g, 0.5 * r) if rng.random() < 0.2 else None)
    index = int(rng.integers(0, 2**BARCODE_BITS)) if frame_index is None else frame_index
    draw_frame_index(img, index)
    out = _finish(rng, img, sigma=float(rng.uniform(0, 8)), blur=bool(rng.random() < 0.3))
    return out, [_box_tuple(s, width, height) for s in shapes]


# --- demo clip -----------------------------------------------------------------------------------------------------
def _clip_background(t: float, w: int, h: int, texture: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Dark-to-mid gradient whose colours drift slowly with time ``t`` (seconds), plus a fixed texture."""
    c0 = 55 + 35 * np.sin(0.21 * t + phases[0:3])
    c1 = 70 + 40 * np.sin(0.13 * t + phases[3:6])
    xx = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    mix = 0.6 * xx + 0.4 * yy
    return (c0 * (1 - mix) + c1 * mix).astype(np.float32) + texture


def _clip_frames(seed: int, n_frames: int, w: int, h: int, fps: int) -> tuple[list[np.ndarray], list[list[Box]]]:
    rng = np.random.default_rng(seed)
    texture = _noise_texture(rng, w, h)
    texture = 0.5 * (texture - texture.mean(axis=(0, 1)))
    phases = rng.uniform(0, 2 * math.pi, 6)
    n = int(rng.integers(3, 6))
    shapes: list[_Shape] = []
    velocities: list[np.ndarray] = []
    spins: list[float] = []
    classes = [i % len(CLASSES) for i in range(n)]  # every class appears
    rng.shuffle(classes)
    for cls in classes:
        for _ in range(200):
            size = float(rng.uniform(26, 70))
            # squares stay near axis-aligned (as in render_scene); triangles take any rotation
            angle = float(rng.uniform(-0.25, 0.25)) if cls == 1 else float(rng.uniform(0, 2 * math.pi))
            s = _Shape(cls, 0.0, 0.0, size, angle, (0.0, 0.0, 0.0))
            r = s.radius
            s.cx = float(rng.uniform(r + 1, w - r - 1))
            s.cy = float(rng.uniform(OBJECT_TOP + r + 1, h - r - 1))
            if all(math.hypot(s.cx - o.cx, s.cy - o.cy) > r + o.radius + 4 for o in shapes):
                break
        else:
            continue
        while True:  # bright, saturated colours: the background stays dark to mid grey
            c = _random_colour(rng)
            if _luma(c) > 150 or (c.max() - c.min() > 150 and c.max() > 200):
                break
        s.colour = (float(c[0]), float(c[1]), float(c[2]))
        speed = rng.uniform(20, 60) / fps  # pixels per frame
        a = rng.uniform(0, 2 * math.pi)
        shapes.append(s)
        velocities.append(np.array([speed * math.cos(a), speed * math.sin(a)]))
        spins.append(float(rng.uniform(-1.0, 1.0)) / fps if cls == 2 else 0.0)  # only triangles spin

    frames: list[np.ndarray] = []
    truth: list[list[Box]] = []
    for f in range(n_frames):
        img = _clip_background(f / fps, w, h, texture, phases)
        for s in shapes:
            s.draw(img)
        draw_frame_index(img, f)
        frames.append(_finish(rng, img, sigma=3.0, blur=False))
        truth.append([_box_tuple(s, w, h) for s in shapes])
        # move: constant velocity, bounce off the edges (below the strip) and elastically off each other
        for s, v, spin in zip(shapes, velocities, spins, strict=True):
            s.cx += float(v[0])
            s.cy += float(v[1])
            s.angle += spin
            r = s.radius
            if s.cx - r < 0 or s.cx + r > w:
                v[0] = -v[0]
                s.cx = min(max(s.cx, r), w - r)
            if s.cy - r < OBJECT_TOP or s.cy + r > h:
                v[1] = -v[1]
                s.cy = min(max(s.cy, OBJECT_TOP + r), h - r)
        for i in range(len(shapes)):
            for j in range(i + 1, len(shapes)):
                a, b = shapes[i], shapes[j]
                d = np.array([b.cx - a.cx, b.cy - a.cy])
                dist = float(np.linalg.norm(d))
                if dist >= a.radius + b.radius + 2 or dist == 0:
                    continue
                nrm = d / dist
                rel = float(np.dot(velocities[i] - velocities[j], nrm))
                if rel > 0:  # approaching: exchange the normal components
                    velocities[i] -= rel * nrm
                    velocities[j] += rel * nrm
    return frames, truth


def _write_mp4(frames: list[np.ndarray], path_mp4: Path, width: int, height: int, fps: int) -> None:
    """H.264 mp4 of BGR frames (GOP one second), bit-exact for the same frames; needs the ffmpeg binary."""
    path_mp4.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        "ffmpeg", "-y", "-loglevel", "error", "-nostdin",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-crf", "18", "-g", str(fps),
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        str(path_mp4),
    ]  # fmt: skip
    proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")


def make_clip(
    path_mp4: Path, gt_path: Path, *, seed: int, n_frames: int = 300, width: int = 320, height: int = 240, fps: int = 15
) -> None:
    """Write an H.264 mp4 of 3-5 moving shapes (each frame barcoded with its index) and its JSON ground truth.

    Needs the ``ffmpeg`` binary. Ground truth: ``{"classes", "fps", "width", "height", "frames": [[[cls, x1, y1,
    x2, y2], ...], ...]}``, one list per frame in frame order.
    """
    if n_frames > 2**BARCODE_BITS:
        raise ValueError(f"at most {2**BARCODE_BITS} frames fit the frame-index barcode")
    frames, truth = _clip_frames(seed, n_frames, width, height, fps)
    path_mp4, gt_path = Path(path_mp4), Path(gt_path)
    _write_mp4(frames, path_mp4, width, height, fps)
    gt_path.parent.mkdir(parents=True, exist_ok=True)
    gt = {
        "classes": list(CLASSES),
        "fps": fps,
        "width": width,
        "height": height,
        "frames": [[[c, round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)] for c, x1, y1, x2, y2 in boxes]
                   for boxes in truth],
    }  # fmt: skip
    gt_path.write_text(json.dumps(gt, separators=(",", ":")) + "\n")


# --- YOLO dataset --------------------------------------------------------------------------------------------------
def _write_split(root: Path, split: str, rng: np.random.Generator, n: int, width: int, height: int) -> None:
    img_dir = root / "images" / split
    lbl_dir = root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, boxes = render_scene(rng, width=width, height=height)
        quality = int(rng.integers(60, 96))
        cv2.imwrite(str(img_dir / f"{i:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        lines = [
            f"{c} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
            f"{(y2 - y1) / height:.6f}"
            for c, x1, y1, x2, y2 in boxes
        ]
        (lbl_dir / f"{i:06d}.txt").write_text("".join(line + "\n" for line in lines))


def write_dataset(root: Path, *, seed: int, n_train: int, n_val: int, imgsz: int = 320) -> Path:
    """Write an Ultralytics YOLO dataset of ``imgsz`` x ``imgsz*3/4`` scenes under ``root``; returns data.yaml.

    Train and val draw from different seeds (``seed`` and ``seed + 1``), so they never share a scene.
    """
    root = Path(root).resolve()
    width, height = imgsz, imgsz * 3 // 4
    _write_split(root, "train", np.random.default_rng(seed), n_train, width, height)
    _write_split(root, "val", np.random.default_rng(seed + 1), n_val, width, height)
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASSES))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(f"path: {json.dumps(str(root))}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return data_yaml


# --- identities (tracking ground truth) ----------------------------------------------------------------------------


def clip_identities(
    *, seed: int, n_frames: int = 300, width: int = 320, height: int = 240, fps: int = 15
) -> list[list[tuple[int, int, float, float, float, float]]]:
    """Per frame, ``(identity, cls, x1, y1, x2, y2)`` of every shape of the clip ``make_clip`` writes.

    Regenerates the clip's scene (the same random draws, nothing written) and numbers each shape by the
    order it was placed in, which is the order of the boxes in the clip's ``demo.gt.json``.
    """
    _frames, truth = _clip_frames(seed, n_frames, width, height, fps)
    return [[(i, c, x1, y1, x2, y2) for i, (c, x1, y1, x2, y2) in enumerate(boxes)] for boxes in truth]


# --- a quiet clip: static most of the time, a shape crossing now and then (motion gating) -----------------------
#: The frame-index barcode's strip as a normalized rectangle (x1, y1, x2, y2) at any clip size: a
#: motion mask leaves it out, as a camera's clock overlay would be.
def barcode_rect(width: int, height: int) -> tuple[float, float, float, float]:
    scale = width / BARCODE_REF_WIDTH
    right = (BARCODE_X + BARCODE_BITS * BARCODE_CELL_W + BARCODE_MARGIN + 2) * scale
    return (0.0, 0.0, min(1.0, right / width), min(1.0, (STRIP_BOTTOM + 1) * scale / height))


def quiet_clip_frames(
    *, seed: int, n_frames: int, width: int, height: int, fps: int, crossings: int, speed_px_s: float = 110.0
) -> tuple[list[np.ndarray], list[list[Box]]]:
    """A fixed background with sensor noise; `crossings` shapes, one at a time and evenly spread over
    the clip, each entering at the left edge and leaving at the right at `speed_px_s`."""
    rng = np.random.default_rng(seed)
    texture = _noise_texture(rng, width, height)
    texture = 0.5 * (texture - texture.mean(axis=(0, 1)))
    background = _clip_background(0.0, width, height, texture, rng.uniform(0, 2 * math.pi, 6))
    slot = n_frames / max(1, crossings)
    walkers: list[tuple[int, _Shape]] = []  # (first frame, shape)
    for i in range(crossings):
        size = float(rng.uniform(40, 60))
        s = _Shape(i % len(CLASSES), 0.0, 0.0, size, float(rng.uniform(-0.2, 0.2)), (0.0, 0.0, 0.0))
        s.cy = float(rng.uniform(OBJECT_TOP + s.radius + 4, height - s.radius - 4))
        c = _random_colour(rng)
        while _luma(c) < 170:
            c = _random_colour(rng)
        s.colour = (float(c[0]), float(c[1]), float(c[2]))
        walkers.append((int(i * slot + slot * 0.3), s))
    frames: list[np.ndarray] = []
    truth: list[list[Box]] = []
    for f in range(n_frames):
        img = background.copy()
        boxes: list[Box] = []
        for start, s in walkers:
            s.cx = -s.radius + (f - start) * speed_px_s / fps
            if f >= start and s.box()[0] < width:
                s.draw(img)
                x1, y1, x2, y2 = s.box()
                if x2 > 0:
                    boxes.append((s.cls, max(0.0, x1), y1, min(float(width), x2), y2))
        draw_frame_index(img, f % 2**BARCODE_BITS)
        frames.append(_finish(rng, img, sigma=2.0, blur=False))
        truth.append(boxes)
    return frames, truth


def make_quiet_clip(
    path_mp4: Path,
    *,
    seed: int,
    n_frames: int,
    width: int = 320,
    height: int = 240,
    fps: int = 10,
    crossings: int = 4,
    speed_px_s: float = 110.0,
) -> list[list[Box]]:
    """Write quiet_clip_frames as an H.264 mp4; returns its per-frame boxes."""
    frames, truth = quiet_clip_frames(
        seed=seed, n_frames=n_frames, width=width, height=height, fps=fps, crossings=crossings, speed_px_s=speed_px_s
    )
    _write_mp4(frames, Path(path_mp4), width, height, fps)
    return truth
