"""Tracking through the fleet on the demo clip: two real workers (results out of order), `rtai tracker`,
scored against the clip's identities with motmetrics and against Ultralytics' in-process model.track.
Plus the class filter (no boxes, no events) and snapshots served by the API, with the same workers."""

from __future__ import annotations

import json
import time

import cv2
import motmetrics as mm
import numpy as np
import pytest
from fastapi.testclient import TestClient

from common import desired, keys, ledger
from common.config import DEMO_CLIP, ProducerSettings
from common.images import encode_frame
from common.models import OWN_WEIGHTS
from common.wire import unpackb
from devkit.synth import clip_identities

from ..helpers import wait_for
from .fleet import sink

N_FRAMES = 90
WORKER = ("worker", "--burst", "--threads", "1")
SLOW_OK = {"RTAI_MAX_FRAME_AGE_MS": "600000"}  # two CPU workers on a shared machine: no frame goes stale


def clip(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    frames = []
    while len(frames) < n:
        ok, img = cap.read()
        assert ok
        frames.append(img)
    cap.release()
    return frames


def push(r, stream: str, frames: list[np.ndarray], analytics: dict) -> None:
    settings = dict(batch_size=2, model="rtai-shapes", imgsz=320, queue_bound=10_000, analytics=analytics)
    desired.put(r, ProducerSettings(stream=stream, source="demo", **settings))
    s = sink(r, stream, **settings)
    for i in range(0, len(frames), 2):
        assert s.push([encode_frame(img, seq=0, t_capture=time.time(), imgsz=320) for img in frames[i : i + 2]])


def iou_distance(a: np.ndarray, b: np.ndarray, *, max_iou: float) -> np.ndarray:
    """motmetrics' iou_matrix (1 - IoU, NaN beyond max_iou) for xywh boxes; its own uses np.asfarray (NumPy < 2)."""
    if len(a) == 0 or len(b) == 0:
        return np.empty((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = a[:, None, 2:].prod(axis=2) + b[None, :, 2:].prod(axis=2) - inter
    dist = 1 - inter / union
    dist[dist > max_iou] = np.nan
    return dist


def idf1(truth: list[list[tuple]], hyp: list[list[tuple[int, list[float]]]]) -> tuple[float, int]:
    """IDF1 and identity switches of hyp ((id, xyxy) per frame) against truth ((id, cls, x1, y1, x2, y2))."""
    acc = mm.MOTAccumulator(auto_id=True)
    for gt, hy in zip(truth, hyp, strict=True):
        g = np.array([[x1, y1, x2 - x1, y2 - y1] for _i, _c, x1, y1, x2, y2 in gt]).reshape(-1, 4)
        h = np.array([[b[0], b[1], b[2] - b[0], b[3] - b[1]] for _t, b in hy]).reshape(-1, 4)
        acc.update([t[0] for t in gt], [t for t, _b in hy], iou_distance(g, h, max_iou=0.5))
    summary = mm.metrics.create().compute(acc, metrics=["idf1", "num_switches"], name="x")
    return float(summary["idf1"].iloc[0]), int(summary["num_switches"].iloc[0])


def ultralytics_track(frames: list[np.ndarray]) -> list[list[tuple[int, list[float]]]]:
    from ultralytics import YOLO  # noqa: PLC0415

    model = YOLO(str(OWN_WEIGHTS), task="detect")
    out = []
    for img in frames:
        res = model.track(img, persist=True, tracker="bytetrack.yaml", imgsz=320, conf=0.25, verbose=False)[0]
        ids = [] if res.boxes.id is None else [int(i) for i in res.boxes.id.tolist()]
        out.append(list(zip(ids, res.boxes.xyxy.tolist(), strict=True)))
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fleet_tracking_on_the_demo_clip_matches_the_identities_and_filters_classes(r, procs):
    frames = clip(N_FRAMES)
    push(r, "demo", frames, {"track": {}, "snapshots": True})
    push(r, "only", frames[:10], {"track": {}, "classes": ["circle"]})
    procs.rtai("tracker")
    workers = [procs.rtai(*WORKER, env=SLOW_OK) for _ in range(2)]
    for stream, n, timeout in (("demo", N_FRAMES, 150), ("only", 10, 30)):
        try:
            wait_for(lambda s=stream, n=n: int(r.hget(keys.track_stats(s), "tracked") or 0) == n, timeout=timeout)
        except AssertionError as exc:  # say where the frames went (skipped, late) and what the fleet did
            raise AssertionError(f"{stream}: {r.hgetall(keys.track_stats(stream))}, {ledger.read(r, stream)}") from exc
    for w in workers:
        assert procs.finish(w, timeout=30) == 0, procs.output(w)
    # a filtered class: circles only, although every frame shows squares and triangles too
    filtered = [unpackb(f[b"r"]) for _id, f in r.xrange(keys.history("only"))]
    assert {b[5] for res in filtered for b in res["boxes"]} == {0}
    only_events = [e for _id, f in r.xrange(keys.EVENT_LOG) if (e := json.loads(f[b"e"]))["stream"] == "only"]
    assert only_events and {e["class"] for e in only_events} == {"circle"}
    arrival = [unpackb(f[b"r"])["seq"] for _id, f in r.xrange(keys.history("demo"))]
    tracked = [unpackb(f[b"t"]) for _id, f in r.xrange(keys.tracks_history("demo"))]
    assert [t["seq"] for t in tracked] == list(range(N_FRAMES))
    ours = [[(b[6], b[:4]) for b in t["boxes"]] for t in tracked]
    truth = clip_identities(seed=7, n_frames=N_FRAMES)
    f1, switches = idf1(truth, ours)
    theirs, their_switches = idf1(truth, ultralytics_track(frames))
    print(f"fleet IDF1 {f1:.3f} ({switches} switches), model.track {theirs:.3f} ({their_switches}); "
          f"results out of order: {arrival != sorted(arrival)}")  # fmt: skip
    assert f1 >= 0.9 and switches <= 2
    assert f1 >= theirs - 0.02
    # snapshots: the frame of an event is kept past the pending TTL and served with its boxes
    event = next(e for _id, f in r.xrange(keys.EVENT_LOG) if (e := json.loads(f[b"e"]))["stream"] == "demo")
    assert event["snapshot"] == f"demo/{event['seq']}"
    assert r.ttl(keys.snapshot("demo", event["seq"])) > keys.SNAPSHOT_PENDING_TTL_S
    from control.api.app import create_app  # noqa: PLC0415

    api = TestClient(create_app(procs.redis_url))
    plain = api.get(f"/api/v1/realtime-ai/snapshot/{event['snapshot']}")
    drawn = api.get(f"/api/v1/realtime-ai/snapshot/{event['snapshot']}?boxes=1")
    assert plain.status_code == drawn.status_code == 200 and plain.headers["content-type"] == "image/jpeg"
    assert plain.content != drawn.content
    assert api.get("/api/v1/realtime-ai/snapshot/demo/999999").status_code == 404
    got = api.get("/api/v1/realtime-ai/events", params={"stream": "demo", "type": "appeared"}).json()
    assert got and all(e["type"] == "appeared" and e["stream"] == "demo" for e in got)
    assert 'rtai_events_total{stream="demo",type="appeared"}' in api.get("/metrics").text
