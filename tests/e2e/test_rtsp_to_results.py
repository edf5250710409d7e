"""End to end with real parts: GStreamer RTSP server -> rtai producer -> Redis/RQ -> two CPU
workers with the project's own YOLO model -> results, checked against the clip's ground truth and
against a direct in-process Ultralytics predict on the very frames the workers saw."""

from __future__ import annotations

import json

import pytest

from common import keys
from common.images import decode_frame
from common.wire import decode_batch, decode_result
from devkit import synth

from ..conftest import CLIP_GT, MODEL
from ..helpers import wait_for
from ..integration.fleet import counts
from ..metrics import match

pytestmark = [pytest.mark.rtsp, pytest.mark.timeout(300)]


def _alive(r) -> list[str]:
    return [n.decode() for n in r.smembers(keys.WORKERS) if r.exists(keys.worker_alive(n.decode()))]


def _run_fleet(r, procs, rtsp_url: str, *, frames: int, encoding: str):
    """Capture `frames` frames into the queue with the fleet paused, snapshot exactly what the
    workers will see, then let two workers loose at the same moment."""
    r.set(keys.RQ_SUSPENDED, 1)
    workers = [procs.rtai("worker", "--threads", "1", log=f"worker{i}.log") for i in range(2)]
    wait_for(lambda: len(_alive(r)) == 2, timeout=90, what="two workers with the model loaded")
    producer = procs.rtai(
        "producer",
        "--source",
        rtsp_url,
        "--stream",
        "e2e",
        "--max-fps",
        "10",
        "--batch-size",
        "4",
        "--imgsz",
        "320",
        "--max-frames",
        str(frames),
        "--encoding",
        encoding,
        "--no-credit-flow",  # the workers are held back: the batches must queue, not be skipped
    )
    assert procs.finish(producer, timeout=120) == 0, procs.output(producer)
    batches = [decode_batch(r.get(k)) for k in r.keys(keys.batch_blob("e2e", "*"))]
    r.delete(keys.RQ_SUSPENDED)
    wait_for(lambda: counts(r, "e2e")["in_flight"] == 0, timeout=120, what="every frame accounted for")
    results = {}
    for _id, fields in r.xrange(keys.history("e2e")):
        res = decode_result(fields[b"r"])
        assert res.seq not in results, "a frame was published twice"
        results[res.seq] = res
    per_worker = {name: int(r.hget(keys.worker(name), "frames") or 0) for name in _alive(r)}
    for w in workers:
        w.terminate()
        assert procs.finish(w, timeout=30) == 0, procs.output(w)
    return batches, results, per_worker


def _direct(batches):
    """Ultralytics predict in-process on the same decoded frames, batched as the workers batched."""
    from ultralytics import YOLO  # noqa: PLC0415

    model = YOLO(str(MODEL), task="detect")
    out = {}
    for b in batches:
        images = [decode_frame(f) for f in b.frames]
        for frame, res in zip(b.frames, model.predict(images, imgsz=320, conf=0.25, verbose=False), strict=True):
            xyxy = res.boxes.xyxy.tolist()
            cls = [int(c) for c in res.boxes.cls.tolist()]
            out[frame.seq] = [(k, box) for k, box in zip(cls, xyxy, strict=True)]
    return out


def _boxes(result) -> list[tuple[int, list[float]]]:
    return [(int(b[5]), b[:4]) for b in result.boxes]


def test_rtsp_clip_through_two_workers_matches_truth_and_direct_predict(r, procs, rtsp_clip):
    n = 48
    batches, results, per_worker = _run_fleet(r, procs, rtsp_clip, frames=n, encoding="jpeg")

    c = counts(r, "e2e")
    assert (c["produced"], c["published"], c["failed"], c["dropped_stale"], c["in_flight"]) == (n, n, 0, 0, 0)
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), f"both workers took work: {per_worker}"
    assert sum(per_worker.values()) == n

    truth = json.loads(CLIP_GT.read_text())
    tp = fp = fn = 0
    undecoded = 0
    for b in batches:
        for frame in b.frames:
            index = synth.decode_frame_index(decode_frame(frame))
            if index is None or index >= len(truth["frames"]):
                undecoded += 1
                continue
            gt = [(int(g[0]), g[1:5]) for g in truth["frames"][index]]
            t, p, f = match(_boxes(results[frame.seq]), gt, 0.5)
            tp, fp, fn = tp + t, fp + p, fn + f
    assert undecoded == 0, "every frame's index barcode survived RTSP + JPEG"
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall, tp, fp, fn)

    direct = _direct(batches)
    for seq, expected in direct.items():
        got = _boxes(results[seq])
        assert sorted(k for k, _ in got) == sorted(k for k, _ in expected), f"frame {seq}: classes differ"
        t, _, _ = match(got, expected, 0.9)
        assert t == len(expected), f"frame {seq}: boxes differ from direct predict: {got} vs {expected}"


def test_lossless_frames_give_identical_boxes(r, procs, rtsp_clip):
    batches, results, _ = _run_fleet(r, procs, rtsp_clip, frames=16, encoding="raw")
    direct = _direct(batches)
    assert len(direct) == 16
    for seq, expected in direct.items():
        got = sorted(_boxes(results[seq]))
        want = sorted(expected)
        assert [k for k, _ in got] == [k for k, _ in want]
        for (_, a), (_, b) in zip(got, want, strict=True):
            # Identical up to the 0.1 px rounding of the published boxes.
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 0.05 + 1e-6, (seq, a, b)
