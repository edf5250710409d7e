import numpy as np
import pytest
from rich.console import Console

from control import status_view
from control.status import percentile

REPORT = {
    "streams": {
        "cam1": {
            "state": "error",
            "reason": "cannot open rtsp://***@cam/1",
            "source": "",
            "model": "rtai-shapes",
            "queue_depth": 3,
            "clock_offset_s": 9.0,
            "ledger": {"produced": 10, "published": 6, "failed": 1, "in_flight": 2, "dropped_stale": 1},
            "latency_ms": {"p50": 41.5, "p95": None, "p99": None},
            "fps_out": 2.5,
            "samples": 6,
        }
    },
    "workers": {
        "w1": {"device": "cuda:0", "gpu": "0", "state": "busy", "alive": True, "frames": 7, "failed": 0, "fps": "3.1",
               "gpu_utilization_pct": "55"},
        "w2": {"device": "cpu", "gpu": "cpu", "state": "idle", "alive": False, "frames": 0, "failed": 0},
    },
    "fleet": {"rejected_jobs": 2},
}  # fmt: skip


def test_percentile_is_the_nearest_rank_value():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert [percentile(values, p) for p in (0, 50, 95, 100)] == [1.0, 3.0, 5.0, 5.0]
    assert percentile([], 50) is None
    rng = np.random.default_rng(1)
    many = list(rng.random(501))
    assert percentile(many, 99) in many


@pytest.mark.timeout(10)
def test_watch_tables_show_what_status_shows():
    console = Console(record=True, width=160)
    console.print(status_view.view(REPORT))
    text = console.export_text()
    cam1 = next(line for line in text.splitlines() if "cam1" in line)
    # state, produced, published, dropped, failed, in flight, queue, fps out, p50, p99
    assert [c.strip() for c in cam1.split("│")[2:12]] == ["error", "10", "6", "1", "1", "2", "3", "2.5", "41.5", "-"]
    assert "reason: cannot open rtsp://***@cam/1" in text and "clock offset +9.0 s" in text
    w1 = [c.strip() for c in next(line for line in text.splitlines() if "w1" in line).split("│")[1:-1]]
    assert w1[:4] == ["w1", "cuda:0", "busy", "yes"] and w1[7] == "55"
    w2 = [c.strip() for c in next(line for line in text.splitlines() if "w2" in line).split("│")[1:-1]]
    assert w2[3] == "no" and w2[7] == "-"
    assert "fleet: rejected_jobs=2" in text
