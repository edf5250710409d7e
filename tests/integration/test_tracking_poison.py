"""One poison result (a box class of inf or 3.4e38, an infinite coordinate) costs its frame, counted as
`bad`: the tracker goes on tracking that stream and every other."""

from __future__ import annotations

import pytest

from common import keys
from common.wire import packb, unpackb
from control.api.analytics_metrics import families

from ..helpers import wait_for
from .test_tracking import declare, publish, result, stats, trajectories


def poison(stream: str, seq: int, box: list) -> bytes:
    message = unpackb(result(stream, seq, []))
    message["boxes"] = [box]
    return packb(message)


@pytest.mark.timeout(40)
def test_poison_results_are_skipped_and_counted_and_tracking_goes_on(r, procs):
    frames = trajectories(12)
    declare(r, "door")
    declare(r, "yard")
    tracker = procs.rtai("tracker")
    wait_for(lambda: r.exists(keys.track_claim("door"), keys.track_claim("yard")) == 2, timeout=15, what="claims")
    bad_boxes = [
        [10.0, 10.0, 50.0, 50.0, 0.9, float("inf")],
        [10.0, 10.0, 50.0, 50.0, 0.9, 3.4e38],
        [10.0, float("-inf"), 50.0, 50.0, 0.9, 0],
        [10.0, 10.0, 1e300, 50.0, 0.9, 0],
        [10.0, 10.0, 50.0, 50.0, float("nan"), 0],
    ]
    for seq, box in enumerate(bad_boxes):
        r.xadd(keys.history("door"), {"r": poison("door", seq, box)})
    publish(r, "door", frames, list(range(len(bad_boxes), 12)))
    publish(r, "yard", frames, list(range(12)))
    wait_for(lambda: r.xlen(keys.tracks_history("yard")) == 12, timeout=15, what="yard tracked")
    wait_for(lambda: r.xlen(keys.tracks_history("door")) == 12 - len(bad_boxes), timeout=15, what="door tracked")
    assert stats(r, "door")["bad"] == len(bad_boxes)
    frames_family = {f[0]: f[3] for f in families(r)}["rtai_tracking_frames_total"]
    assert ({"stream": "door", "outcome": "bad"}, float(len(bad_boxes))) in frames_family  # on /metrics
    assert tracker.poll() is None, procs.output(tracker)
    # A restarted tracker reads the same entries from the start again: still alive, still tracking.
    r.delete(keys.track_position("door"), keys.tracks_history("door"))
    tracker.kill()
    tracker.wait(timeout=10)
    again = procs.rtai("tracker")
    wait_for(lambda: r.xlen(keys.tracks_history("door")) == 12 - len(bad_boxes), timeout=20, what="door again")
    assert again.poll() is None, procs.output(again)
