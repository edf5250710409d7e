"""Motion gating through the real fleet: one quiet clip (static, a shape crossing now and then) fed by two
`rtai producer` processes, one with `--motion`, to a real worker and `rtai tracker`. The gated stream
sends far fewer frames to inference, its ledger balances with `skipped_static`, and its
entered/left/crossed events are exactly the ungated stream's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from common import desired, keys, ledger
from common.config import ProducerSettings
from devkit.synth import barcode_rect, make_quiet_clip

from ..helpers import wait_for

FPS = 10
N_FRAMES = 240
ZONE = {"name": "middle", "points": [[0.35, 0.05], [0.65, 0.05], [0.65, 0.95], [0.35, 0.95]]}
LINE = {"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}
COMPARED = ("entered", "left", "crossed")


def events(r, stream: str) -> list[dict]:
    return [e for _id, f in r.xrange(keys.EVENT_LOG) if (e := json.loads(f[b"e"]))["stream"] == stream]


def key(e: dict) -> tuple:
    return (e["type"], e.get("class"), e.get("zone"), e.get("line"), e.get("direction"), e.get("why"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_motion_gating_sends_fewer_frames_and_keeps_every_event(r, procs, tmp_path: Path):
    clip = tmp_path / "quiet.mp4"
    truth = make_quiet_clip(clip, seed=5, n_frames=N_FRAMES, fps=FPS, crossings=3, speed_px_s=140.0)
    mask = ",".join(str(round(v, 3)) for v in barcode_rect(320, 240))  # the frame-index strip changes every frame
    analytics = {"track": {}, "zones": [ZONE], "lines": [LINE]}
    for stream in ("plain", "gated"):  # the tracker reads the zones and lines from the desired state
        desired.put(r, ProducerSettings(stream=stream, source=str(clip), analytics=analytics))
    # Sampling faster than the clip's 30 fps: each tick waits for the next frame, so a late tick
    # rarely skips one (at 30 against 30, one loaded run sampled 239 of the 240).
    common = ("--source", str(clip), "--max-fps", "60", "--imgsz", "320", "--batch-size", "1")
    common += ("--no-credit-flow", "--queue-bound", "100000", "--model", "rtai-shapes")
    env = {"RTAI_MAX_FRAME_AGE_MS": "600000"}  # a shared CPU: no frame goes stale, so both runs see every frame
    procs.rtai("tracker")
    worker = procs.rtai("worker", "--threads", "2", env=env)
    plain = procs.rtai("producer", "--stream", "plain", *common)
    gated = procs.rtai("producer", "--stream", "gated", *common, "--motion-mask", mask)
    for prod in (plain, gated):
        assert procs.finish(prod, timeout=120) == 0, procs.output(prod)
    for stream in ("plain", "gated"):
        wait_for(lambda s=stream: ledger.balanced(ledger.read(r, s)), timeout=60, what=f"{stream} drained")
        published = ledger.read(r, stream)["published"]
        wait_for(
            lambda s=stream, n=published: int(r.hget(keys.track_stats(s), "tracked") or 0) == n,
            timeout=30,
            what=f"{stream} tracked",
        )
    worker.terminate()
    plain_counts, gated_counts = ledger.read(r, "plain"), ledger.read(r, "gated")
    # Every frame sampled is accounted for; a tick late by a whole frame on a loaded CPU samples the
    # newer frame (the newest-frame rule), so a run may sample a frame or two fewer than the clip has.
    for c in (plain_counts, gated_counts):
        assert N_FRAMES - 2 <= c["produced"] <= N_FRAMES, (plain_counts, gated_counts)
    assert plain_counts["published"] == plain_counts["produced"] and plain_counts["skipped_static"] == 0
    sent = gated_counts["published"]
    assert gated_counts["skipped_static"] == gated_counts["produced"] - sent, gated_counts
    object_frames = sum(1 for boxes in truth if boxes)
    print(f"gated: {sent} of {N_FRAMES} frames to inference ({object_frames} show an object)")
    assert object_frames <= sent <= object_frames + N_FRAMES // 4, "static frames were sent, or object frames held"
    ungated, gated_events = Counter(map(key, events(r, "plain"))), Counter(map(key, events(r, "gated")))
    compared = {k: v for k, v in ungated.items() if k[0] in COMPARED}
    assert sum(compared.values()) >= 3 * 3, f"each crossing enters, leaves and crosses: {ungated}"
    print("ungated events", dict(ungated), "gated events", dict(gated_events))
    assert {k: v for k, v in gated_events.items() if k[0] in COMPARED} == compared
    assert "skipped static (motion gating)" in procs.output(gated)
