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


def _wide_report() -> dict:
    report = {**REPORT, "streams": dict(REPORT["streams"])}
    report["streams"]["entrance-camera-north-2"] = {
        **REPORT["streams"]["cam1"],
        "reason": "cannot open rtsp://***@10.0.0.5:554/h264: connection refused by 10.0.0.5:554; gave up after 9 tries",
    }
    return report


@pytest.mark.timeout(10)
@pytest.mark.parametrize("width", [80, 100, 120])
def test_watch_fits_the_terminal_with_whole_headers_and_one_line_reasons(width):
    console = Console(record=True, width=width)
    console.print(status_view.view(_wide_report(), width))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= width, "\n".join(lines)
    header = next(line for line in lines if "STREAM" in line)
    for name in ("STREAM", "STATE", "PROD", "PUB", "DROP", "FPS", "P99ms"):
        cells = header.replace("┃", " ").replace("│", " ")
        assert f" {name} " in f" {cells} ", f"{name} cut or missing at {width}: {header}"
    reasons = [line for line in lines if "reason:" in line]
    assert len(reasons) == 2, "one line per reason, never wrapped word by word"
    assert any(line.startswith("entrance-camera-north-2: reason: cannot open") for line in reasons)
    if width >= 120:
        assert " FLIGHT " in header.replace("┃", " "), "every column at full width"


def test_status_strips_control_characters_from_redis_strings():
    from control.printable import printable  # noqa: PLC0415
    from control.status import render  # noqa: PLC0415

    hostile = {**REPORT, "streams": {"cam1": {**REPORT["streams"]["cam1"], "reason": "x\x1b]0;pwned\x07\x1b[2Jy"}}}
    for text in (render(printable(hostile)), _export(status_view.view(hostile))):
        assert "\x1b" not in text and "\x07" not in text
        assert "x?]0;pwned??[2Jy" in text


def _export(renderable) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_latency_percentiles_tell_how_the_stream_is_now_not_since_start(r):
    """The first seconds (no worker yet, a backlog) must not hold p99 up once latency settled."""
    from common import keys  # noqa: PLC0415
    from common.wire import Result, encode_result  # noqa: PLC0415
    from control import status  # noqa: PLC0415

    def add(seq: int, t_done: float, latency_s: float) -> None:
        t = t_done - latency_s
        res = Result(stream="cam", seq=seq, batch=seq, t_capture=t, t_enqueue=t, t_start=t, t_done=t_done,
                     worker="w", gpu="cpu", model="m", w=64, h=48, boxes=[])  # fmt: skip
        r.xadd(keys.history("cam"), {"r": encode_result(res)})

    now = 1_800_000_000.0
    for i in range(100):  # the start: 4 s late, 30 s ago
        add(i, now - 40 + i * 0.1, 4.0)
    for i in range(100, 200):  # since: 40 ms, the last 10 s
        add(i, now - 10 + (i - 100) * 0.1, 0.04)
    got = status.latency(r, "cam")["latency_ms"]
    assert got["p99"] == pytest.approx(40, abs=1) and got["p50"] == pytest.approx(40, abs=1), got
