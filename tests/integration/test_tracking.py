"""The tracking stage with real `rtai tracker` processes, fed results as workers write them (history
stream), out of order, with a frame missing: zones, lines, ordering, skips, takeover, ids."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from common import desired, keys
from common.config import ProducerSettings
from common.wire import unpackb
from devkit.results import encoded_result

from ..helpers import wait_for

W, H = 640, 480
ANALYTICS = {
    "track": {"reorder_wait_s": 0.3},
    "zones": [{"name": "entrance", "points": [[0.10, 0.20], [0.55, 0.20], [0.55, 0.95], [0.10, 0.95]]}],
    "lines": [{"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}],
}


def declare(r, stream: str, analytics: dict = ANALYTICS) -> None:
    desired.put(r, ProducerSettings(stream=stream, source="demo", analytics=analytics))


def trajectories(n: int) -> list[list[list[float]]]:
    """Boxes of n frames: A walks left->right, B right->left (lower), C stays in a corner (class 1)."""
    frames = []
    for f in range(n):
        u = f / (n - 1)
        ax, bx = (0.03 + 0.94 * u) * W, (0.97 - 0.94 * u) * W
        frames.append(
            [
                [ax - 20, 0.45 * H - 40, ax + 20, 0.45 * H, 0.9, 0],
                [bx - 20, 0.75 * H - 40, bx + 20, 0.75 * H, 0.85, 0],
                [580.0, 20.0, 620.0, 60.0, 0.8, 1],
            ]
        )
    return frames


def result(stream: str, seq: int, boxes: list) -> bytes:
    return encoded_result(stream, seq, boxes, w=W, h=H, model="rtai-shapes")


def publish(r, stream: str, frames: list, seqs: list[int]) -> None:
    for seq in seqs:
        r.xadd(keys.history(stream), {"r": result(stream, seq, frames[seq])})


def out_of_order(seqs: list[int], rng: random.Random) -> list[int]:
    """Two workers: neighbouring batches of 2 frames finish in either order."""
    pairs = [seqs[i : i + 4] for i in range(0, len(seqs), 4)]
    out = []
    for p in pairs:
        out += p[2:] + p[:2] if rng.random() < 0.5 else p
    return out


def stats(r, stream: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(keys.track_stats(stream)).items()}


def events_of(r, stream: str) -> list[dict]:
    return [json.loads(f[b"e"]) for _id, f in r.xrange(keys.EVENT_LOG)]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_zones_and_lines_each_once_with_direction_in_order_with_a_frame_skipped(r, procs):
    n = 90
    frames = trajectories(n)
    declare(r, "door")
    procs.rtai("tracker")
    seqs = [s for s in range(n) if s != 40]  # frame 40 never arrives (dropped upstream)
    publish(r, "door", frames, out_of_order(seqs, random.Random(3)))
    wait_for(lambda: stats(r, "door").get("tracked", 0) == n - 1, timeout=30, what="all frames tracked")
    assert stats(r, "door")["skipped"] == 1
    tracked = [unpackb(f[b"t"]) for _id, f in r.xrange(keys.tracks_history("door"))]
    assert [t["seq"] for t in tracked] == seqs  # in order, 40 skipped
    ids = {b[6] for t in tracked for b in t["boxes"]}
    assert len(ids) == 3  # one identity per object for the whole clip
    ev = [(e["type"], e.get("zone") or e.get("line"), e.get("direction"), e["track"]) for e in events_of(r, "door")]
    a, b = tracked[0]["boxes"][0][6], tracked[0]["boxes"][1][6]
    for tid, direction in ((a, "in"), (b, "out")):
        mine = [e for e in ev if e[3] == tid]
        assert [e[:3] for e in mine if e[0] == "crossed"] == [("crossed", "gate", direction)]
        assert [e[0] for e in mine if e[1] == "entrance"] == ["entered", "left"]
    assert not [e for e in ev if e[0] in ("entered", "crossed") and e[3] not in (a, b)]
    first = events_of(r, "door")[0]
    assert {"id", "stream", "seq", "t", "class", "track", "snapshot"} <= set(first)
    assert r.hget(keys.zone_counts("door"), "entrance") == b"0"
    # the CLI: recent events, recent tracked frames
    ev_cli = procs.rtai("events", "door", "--replay", "3", "--count", "3", "--timeout", "10")
    tr_cli = procs.rtai("subscribe", "--tracks", "door", "--replay", "2", "--count", "2", "--timeout", "10", "--json")
    tr_text = procs.rtai("subscribe", "--tracks", "door", "--replay", "1", "--count", "1", "--timeout", "10")
    assert procs.finish(ev_cli, timeout=30) == 0 and procs.finish(tr_cli, timeout=30) == 0
    assert procs.finish(tr_text, timeout=30) == 0
    # Text by default, as `subscribe` prints results: "door #SEQ: #TRACK label conf [box] in zone, ..."
    (line,) = [ln for ln in procs.output(tr_text).splitlines() if ln.startswith("door #")]
    assert line.startswith(f"door #{seqs[-1]}: #") and "[" in line
    printed = [json.loads(line) for line in procs.output(ev_cli).splitlines() if line.startswith("{")]
    assert len(printed) == 3 and all(e["stream"] == "door" for e in printed)
    frames_out = [json.loads(line) for line in procs.output(tr_cli).splitlines() if line.startswith("{")]
    assert [f["seq"] for f in frames_out] == seqs[-2:] and len(frames_out[0]["boxes"][0]) == 8


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_killed_tracker_is_replaced_within_3_s_and_ids_never_repeat(r, procs):
    n = 240
    frames = trajectories(n)
    declare(r, "cam")
    first = procs.rtai("-v", "tracker", "--name", "t1")
    second = procs.rtai("-v", "tracker", "--name", "t2")
    for p in (first, second):  # both loaded (under load, importing Ultralytics takes seconds)
        wait_for(lambda p=p: "claiming streams" in procs.output(p), timeout=30, what="tracker up")
    wait_for(lambda: r.get(keys.track_claim("cam")), timeout=15, what="a tracker claims the stream")
    owner = r.get(keys.track_claim("cam")).decode()
    victim = first if owner == "t1" else second
    order = out_of_order(list(range(n)), random.Random(5))
    publish(r, "cam", frames, order[:120])
    wait_for(lambda: stats(r, "cam").get("tracked", 0) >= 100, timeout=20, what="half the frames tracked")
    before = {b[6] for _id, f in r.xrange(keys.tracks_history("cam")) for b in unpackb(f[b"t"])["boxes"]}
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    t_kill = time.monotonic()
    publish(r, "cam", frames, order[120:])
    new_owner = wait_for(
        lambda: (o := r.get(keys.track_claim("cam"))) and o.decode() != owner and o, timeout=10, what="takeover"
    )
    taken = time.monotonic() - t_kill
    assert taken < 3.0, taken
    assert new_owner.decode() in ("t1", "t2")
    wait_for(lambda: sum(stats(r, "cam").get(k, 0) for k in ("tracked", "skipped")) == n, timeout=20, what="all")
    tracked = [unpackb(f[b"t"]) for _id, f in r.xrange(keys.tracks_history("cam"))]
    seqs = [t["seq"] for t in tracked]
    assert len(seqs) == len(set(seqs)) == stats(r, "cam")["tracked"]  # no frame tracked twice
    assert seqs == sorted(seqs)
    after = {b[6] for t in tracked if t["seq"] > max(s for s in seqs if s < 100) for b in t["boxes"]}
    late_ids = after - before
    assert late_ids and min(late_ids) > max(before)  # new tracks after the takeover, under ids never used
