"""The live view's matching, without Redis: a tracked stream's picture waits for its tracked frame
(track ids, zones), and goes out with its plain result when the tracked frame is late."""

from __future__ import annotations

import json

import pytest

from common import keys
from common.wire import Result, encode_result, packb
from control.api import livefeed
from control.api.livefeed import TRACK_WAIT_S, LiveFeed, Page


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(livefeed.time, "monotonic", c)
    return c


def _feed(tracking: set[str]) -> tuple[LiveFeed, Page]:
    feed = LiveFeed("redis://unused", client=None)  # type: ignore[arg-type]
    feed.tracking = frozenset(tracking)
    page = Page(None)
    feed.pages.add(page)
    return feed, page


def _frames(page: Page) -> list[dict]:
    out = []
    while not page.queue.empty():
        event, data = page.queue.get_nowait().decode().split("\n")[:2]
        assert event == "event: frame"
        out.append(json.loads(data.removeprefix("data: ")))
    return out


def _result(seq: int) -> bytes:
    box = [10.0, 20.0, 50.0, 80.0, 0.9, 1]
    return encode_result(
        Result(stream="cam", seq=seq, batch=0, t_capture=1.0, t_enqueue=1.0, t_start=1.1, t_done=1.2,
               worker="w", gpu="cpu", model="m", w=320, h=240, boxes=[box])
    )  # fmt: skip


def _preview(seq: int) -> bytes:
    return packb({"seq": seq, "w": 320, "h": 240, "t": 1.0, "jpeg": b"\xff\xd8"})


def _tracked(seq: int) -> bytes:
    boxes = [[11.0, 21.0, 51.0, 81.0, 0.9, 1, 7, ["door"]]]
    return packb({"v": 1, "stream": "cam", "seq": seq, "t_capture": 1.0, "t_done": 1.2, "t_tracked": 2.0,
                  "model": "m", "w": 320, "h": 240, "boxes": boxes})  # fmt: skip


def test_a_tracked_stream_is_drawn_with_its_tracked_frame(clock):
    feed, page = _feed({"cam"})
    feed._on_preview("cam", _preview(4))
    feed._on_result("cam", _result(4))
    feed._flush_unmatched()
    # The result alone does not do (its tracked frame is coming): the tile stays live without boxes.
    assert [f["boxes"] for f in _frames(page)] == [None]
    feed._on_tracked("cam", _tracked(4))
    [frame] = _frames(page)
    assert frame["seq"] == 4 and frame["boxes"] == [[11.0, 21.0, 51.0, 81.0, 0.9, 1]]
    assert frame["tracks"] == [7] and frame["zones"] == [["door"]]


def test_a_late_tracked_frame_lets_the_plain_result_through(clock):
    feed, page = _feed({"cam"})
    feed._on_preview("cam", _preview(4))
    feed._on_result("cam", _result(4))
    feed._flush_unmatched()
    assert [f["boxes"] for f in _frames(page)] == [None]
    clock.now += TRACK_WAIT_S + 0.2
    feed._flush_unmatched()
    [frame] = _frames(page)
    assert frame["seq"] == 4 and frame["boxes"] == [[10.0, 20.0, 50.0, 80.0, 0.9, 1]] and "tracks" not in frame
    feed._on_tracked("cam", _tracked(4))  # too late: that picture is on screen already
    assert _frames(page) == []


def test_an_untracked_stream_is_drawn_with_its_result_whichever_comes_first(clock):
    feed, page = _feed(set())
    feed._on_preview("cam", _preview(4))
    feed._on_result("cam", _result(4))
    feed._on_result("cam", _result(6))
    feed._on_preview("cam", _preview(6))
    assert [(f["seq"], f["boxes"][0][0]) for f in _frames(page)] == [(4, 10.0), (6, 10.0)]


def test_a_malformed_tracked_frame_is_ignored_and_the_result_drawn_later(clock):
    feed, page = _feed({"cam"})
    feed._on_preview("cam", _preview(4))
    bad = packb({"seq": 4, "t_capture": 1.0, "t_tracked": 2.0, "boxes": [[1, 2, 3]]})
    feed.receive(keys.tracks_channel("cam").encode(), bad)  # dropped and counted, never raised
    feed._on_result("cam", _result(4))
    clock.now += TRACK_WAIT_S + 0.2
    feed._flush_unmatched()
    assert [f["boxes"] for f in _frames(page)] == [[[10.0, 20.0, 50.0, 80.0, 0.9, 1]]]
    assert feed.status()["bad_messages"] == {"malformed": 1}
