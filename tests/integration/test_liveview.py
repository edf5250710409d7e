"""Live view plumbing on a real Redis: the producer's previews, and the cookie that opens /live."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from common import keys
from common.images import encode_frame
from common.wire import unpackb
from producer.preview import REUSE_MAX_BYTES, WATCHED_WIDTH, PreviewWriter, preview_jpeg

P = "/api/v1/realtime-ai"


def _frames(n: int, *, size: tuple[int, int], t0: float, fps: float) -> list:
    w, h = size  # a camera-like picture (gradients and a block), not noise: JPEG sizes as in real use
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    img[h // 4 : h // 2, w // 4 : w // 2] = (30, 200, 90)
    return [encode_frame(img, seq=0, t_capture=t0 + i / fps, imgsz=max(size)) for i in range(n)]


def test_a_small_batch_jpeg_is_reused_and_a_large_one_is_downscaled():
    small = _frames(1, size=(320, 240), t0=0, fps=1)[0]
    large = _frames(1, size=(1280, 720), t0=0, fps=1)[0]
    assert len(small.data) <= REUSE_MAX_BYTES
    assert preview_jpeg(small) == (small.data, True)
    data, reused = preview_jpeg(large)
    assert not reused and len(data) < len(large.data) / 4
    from common.images import jpeg_size  # noqa: PLC0415

    assert jpeg_size(data) == (320, 180)


def test_previews_carry_their_frame_seq_a_short_ttl_and_the_rate_rises_while_watched(r):
    writer = PreviewWriter(r, "cam1", fps=4, watched_fps=10)
    frames = _frames(20, size=(320, 240), t0=time.time(), fps=20)  # one second of video at 20 fps
    with r.pubsub() as ps:
        ps.subscribe(keys.preview_channel("cam1"))
        ps.get_message(timeout=1)
        for i in range(0, 20, 4):
            writer.offer(frames[i : i + 4], seq0=100 + i)
        pushed = []
        while (msg := ps.get_message(timeout=0.5)) is not None:
            pushed.append(unpackb(msg["data"]))
    assert [p["seq"] for p in pushed] == [100, 105, 110, 115]  # 4 a second, each named by its frame's seq
    assert pushed[1]["jpeg"] == frames[5].data and pushed[1]["t"] == frames[5].t_capture
    stored = unpackb(r.get(keys.preview("cam1")))
    assert stored["seq"] == 115 and 0 < r.ttl(keys.preview("cam1")) <= keys.PREVIEW_TTL_S

    r.set(keys.preview_watch("cam1"), 1, ex=keys.PREVIEW_WATCH_TTL_S)  # a stream page is open
    watched = PreviewWriter(r, "cam1", fps=4, watched_fps=10)
    for i in range(0, 20, 4):
        watched.offer(frames[i : i + 4], seq0=200 + i)
    assert watched.written == 10 and watched.reused == 10


def test_a_watched_stream_gets_a_large_preview_from_the_captured_picture(r):
    """A stream page (keys.preview_watch) is sent the camera at WATCHED_WIDTH, made from the picture
    as captured, not the 320 px batch frame scaled up; tiles keep the small one."""
    from common.images import jpeg_size  # noqa: PLC0415

    t0 = time.time()
    w, h = 1920, 1080
    picture = np.zeros((h, w, 3), np.uint8)
    picture[:, : w // 2] = (40, 160, 220)
    frames = [encode_frame(picture, seq=0, t_capture=t0 + i / 10, imgsz=320) for i in range(4)]
    assert (frames[0].dw, frames[0].dh) == (320, 180)
    tile = PreviewWriter(r, "cam2", fps=10, watched_fps=10)
    tile.offer(frames[:2], seq0=0, images=[picture, picture])  # not watched: pictures are ignored
    assert jpeg_size(unpackb(r.get(keys.preview("cam2")))["jpeg"]) == (320, 180) and tile.large == 0

    r.set(keys.preview_watch("cam2"), 1, ex=keys.PREVIEW_WATCH_TTL_S)
    page = PreviewWriter(r, "cam2", fps=10, watched_fps=10)
    assert page.watched
    page.offer(frames[2:], seq0=2, images=[picture, None])
    stored = unpackb(r.get(keys.preview("cam2")))
    assert page.large == 1 and page.written == 2
    assert stored["seq"] == 3 and jpeg_size(stored["jpeg"]) == (320, 180), "no picture kept: the batch frame"
    page.offer([encode_frame(picture, seq=0, t_capture=t0 + 1, imgsz=320)], seq0=4, images=[picture])
    stored = unpackb(r.get(keys.preview("cam2")))
    assert jpeg_size(stored["jpeg"]) == (WATCHED_WIDTH, 540) and (stored["w"], stored["h"]) == (w, h)


def test_a_producer_sends_a_watched_stream_page_the_large_preview(r, procs, tmp_path):
    """A real producer on a 1280x720 clip at imgsz 320: its previews grow to the page's width while
    the watch flag is set, and shrink back to tile size when it lapses."""
    import cv2  # noqa: PLC0415

    from common.images import jpeg_size  # noqa: PLC0415

    from ..helpers import wait_for  # noqa: PLC0415

    clip = tmp_path / "hd.mp4"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (1280, 720))
    for i in range(40):
        img = np.full((720, 1280, 3), 60, np.uint8)
        img[200:400, 20 * i : 20 * i + 200] = (0, 200, 255)
        out.write(img)
    out.release()
    prod = procs.rtai(
        "producer", "--stream", "hd", "--source", str(clip), "--loop", "--imgsz", "320", "--max-fps", "10"
    )

    def size() -> tuple[int, int] | None:
        raw = r.get(keys.preview("hd"))
        return jpeg_size(unpackb(raw)["jpeg"]) if raw else None

    assert wait_for(size, timeout=60, what="a preview") == (320, 180)
    r.set(keys.preview_watch("hd"), 1, ex=3)
    wait_for(lambda: size() == (WATCHED_WIDTH, 540), timeout=15, what="the watched (large) preview")
    wait_for(lambda: size() == (320, 180), timeout=20, what="the tile preview once the page is gone")
    prod.terminate()
    procs.finish(prod)


def test_live_endpoints_take_a_cookie_that_opens_nothing_else(redis_server):
    from control.api.app import create_app  # noqa: PLC0415
    from control.api.routers.live import COOKIE  # noqa: PLC0415

    client = TestClient(create_app(redis_server, token="s3cret"))
    assert client.get(f"{P}/live").status_code == 401
    assert client.post(f"{P}/live/session").status_code == 401
    resp = client.post(f"{P}/live/session", headers={"Authorization": "Bearer s3cret"})
    assert resp.status_code == 200 and resp.json() == {"token_required": True}
    cookie = resp.cookies[COOKIE]
    assert "s3cret" not in cookie
    set_cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and f"path={P}/live".lower() in set_cookie
    bare = TestClient(create_app(redis_server, token="s3cret"))
    bare.cookies.set(COOKIE, cookie)  # sent to every path: the cookie still opens nothing but /live
    assert bare.get(f"{P}/services").status_code == 401
    forged = TestClient(create_app(redis_server, token="s3cret"))
    forged.cookies.set(COOKIE, "forged")
    assert forged.get(f"{P}/live").status_code == 401


@pytest.mark.parametrize("path", ["/", "/stream/cam1", "/static/app.js", "/static/app.css"])
def test_the_page_is_served_without_a_token(redis_server, path):
    from control.api.app import create_app  # noqa: PLC0415

    resp = TestClient(create_app(redis_server, token="s3cret")).get(path)
    assert resp.status_code == 200 and len(resp.content) > 500
