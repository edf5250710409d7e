"""The two ways producer/source.py reads a video: OpenCV's FFmpeg backend, or PyAV (FFmpeg's own API).

Both answer the same few calls: `grab` takes the source's next frame (decoded, or skipped by a
keyframes-only decoder), `retrieve` converts the frame grabbed, `rewind` starts a file again.

- `CvCapture` (`--decode cpu`, the default, and `nvdec`): cv2.VideoCapture. `retrieve` converts to
  BGR at full size; the producer resizes afterwards.
- `AvCapture` (`--decode pyav` and `keyframes`): PyAV. `retrieve` converts straight from the
  decoder's YUV at the size the producer sends (its long side at most `max_side`), in one swscale
  call on one context kept for the stream. For a JPEG stream it converts to JPEG's own layout
  (full-range BT.601 YUV 4:2:0, `YuvImage`) and the JPEG is encoded from those planes: no BGR copy
  is ever made. 1080p to 640x360 costs about 1.0 ms that way, 1.6 ms to BGR, and 3.2 ms with a new
  swscale context a frame as `frame.to_ndarray` makes (measured here, one thread).
  With `keyframes`, the decoder skips every frame but keyframes (FFmpeg's `skip_frame=nokey`), so a
  GOP-30 camera costs about a twentieth of its full decode. The frames handed on are the keyframes
  only, e.g. one a second.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator

import av
import av.error
import cv2
import numpy as np
from av.codec.hwaccel import HWAccel, hwdevices_available
from av.video.reformatter import Colorspace, VideoReformatter

from common.images import Picture, YuvImage, fit_size

log = logging.getLogger(__name__)

#: swscale's filter for the scaled conversion: area averaging, as the producer's own resize uses.
SCALE_INTERPOLATION = "AREA"
#: swscale threads: one. The conversion runs on the source's own thread, as the decode does; more
#: threads cost more CPU in all for the same frame (a camera per thread is how a host scales).
SCALE_THREADS = 1


def has_hwdevice(kind: str) -> bool:
    """The FFmpeg PyAV loaded can drive this kind of device (vaapi, cuda, qsv...); a host without one
    still fails at open, and then falls back."""
    return kind in hwdevices_available()


def _plane(frame: av.VideoFrame, i: int) -> np.ndarray:
    """Plane i of a planar frame as a 2-D view of its pixels (the row padding left out)."""
    plane = frame.planes[i]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
    return rows[: plane.height, : plane.width]


class CvCapture:
    """cv2.VideoCapture behind the calls producer/source.py makes."""

    def __init__(self, cap: cv2.VideoCapture, *, live: bool) -> None:
        self.cap = cap
        self.live = live
        #: Keyframes only: every frame decoded is worth converting (never with OpenCV).
        self.keyframes = False

    def is_open(self) -> bool:
        return bool(self.cap.isOpened())

    @property
    def fps(self) -> float:
        return float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)

    @property
    def decode_threads(self) -> int | None:
        return int(self.cap.get(cv2.CAP_PROP_N_THREADS)) if self.live else None

    def grab(self) -> bool:
        return bool(self.cap.grab())

    def retrieve(self, max_side: int | None = None, *, yuv: bool = False) -> tuple[np.ndarray | None, tuple[int, int]]:
        """The frame grabbed as BGR at full size (None if it cannot be converted), and the camera's
        (w, h). OpenCV converts to BGR whatever `yuv` asks."""
        ok, image = self.cap.retrieve()
        if not ok or image is None:
            return None, (0, 0)
        return image, (image.shape[1], image.shape[0])

    def rewind(self) -> None:
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def release(self) -> None:
        self.cap.release()


class AvCapture:
    """PyAV's demuxer and decoder behind the same calls; `open_error` says why an open failed."""

    def __init__(
        self,
        url: str,
        *,
        live: bool,
        open_timeout_s: float,
        read_timeout_s: float,
        max_side: int,
        keyframes: bool = False,
        threads: int = 1,
        hwaccel: str | None = None,
    ) -> None:
        self.live = live
        self.keyframes = keyframes
        self.max_side = max_side
        self.threads = threads
        self.open_error = ""
        #: Packets the decoder refused (a broken frame is skipped, never the end of the source).
        self.bad_packets = 0
        self._container: av.container.InputContainer | None = None
        self._frame: av.VideoFrame | None = None
        #: One swscale context for the whole stream. `frame.reformat` makes a new one for each frame,
        #: with a pool of scaling threads started and stopped each time: twice the CPU (measured here,
        #: 1080p to 640x360: 3.2 against 1.6 ms a frame).
        self._reformatter = VideoReformatter()
        self._pending: deque[av.VideoFrame] = deque()
        options = {"rtsp_transport": "tcp"} if url.startswith(("rtsp://", "rtsps://")) else {}
        #: The device decoding, e.g. "vaapi" (None: the CPU); FFmpeg falls back to software by itself
        #: for a stream the device cannot decode.
        self.hwaccel = hwaccel
        accel = HWAccel(device_type=hwaccel, allow_software_fallback=True) if hwaccel else None
        try:
            container = av.open(url, options=options, timeout=(open_timeout_s, read_timeout_s), hwaccel=accel)
        except (av.error.FFmpegError, OSError) as exc:
            self.open_error = str(exc)
            return
        if not container.streams.video:
            container.close()
            self.open_error = "no video stream"
            return
        self._container = container
        self._stream = container.streams.video[0]
        ctx = self._stream.codec_context
        ctx.thread_count = threads  # one decode thread: the least delay from camera to frame (see source.py)
        if keyframes:
            ctx.skip_frame = "NONKEY"
        self._packets = self._demux()

    def _demux(self) -> Iterator[av.Packet]:
        assert self._container is not None
        return self._container.demux(self._stream)

    def is_open(self) -> bool:
        return self._container is not None

    @property
    def fps(self) -> float:
        rate = self._stream.average_rate if self._container is not None else None
        return float(rate) if rate else 0.0

    @property
    def decode_threads(self) -> int | None:
        return self.threads if self.live else None

    def grab(self) -> bool:
        """The source's next frame: decoded (or, keyframes only, skipped); False when the source ended
        or broke (a read error or timeout).

        A decoder with B-frames gives pictures a few packets late and the last ones at the end, so
        the pictures wait in a queue: each grab hands on one, and reads packets only when none waits.
        Keyframes only, each grab is one packet (files are paced per grab), with its picture or none."""
        if self._container is None:
            return False
        if not self.keyframes and self._pending:
            self._frame = self._pending.popleft()
            return True
        while True:
            try:
                packet = next(self._packets)
            except StopIteration:
                return False
            except (av.error.FFmpegError, OSError) as exc:
                log.debug("pyav: read failed: %s", exc)
                return False
            frames = self._decode(packet)
            if self.keyframes:
                if packet.size == 0 and not frames:  # the flush packet at the end: nothing more
                    return False
                self._frame = frames[-1] if frames else None
                return True
            self._pending.extend(frames)
            if self._pending:
                self._frame = self._pending.popleft()
                return True
            if packet.size == 0:
                return False

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        ctx = self._stream.codec_context
        try:
            frames: list[av.VideoFrame] = packet.decode()
            if self.keyframes and packet.is_keyframe:
                # Drain it now: with B-frames the decoder holds a picture back until later pictures
                # come, and skipped ones never do (a keyframe came out two GOPs late). The next
                # picture decoded is the next keyframe, so starting the decoder afresh costs nothing.
                frames += ctx.decode(None)
                ctx.flush_buffers()
        except av.error.FFmpegError as exc:  # a broken packet costs its frame, never the source
            log.debug("pyav: decode failed: %s", exc)
            self.bad_packets += 1
            return []
        return frames

    def retrieve(self, max_side: int | None = None, *, yuv: bool = False) -> tuple[Picture | None, tuple[int, int]]:
        """The frame grabbed, scaled in the same step to fit max_side (default: the one given at open),
        and the camera's (w, h); the picture is None when the grab decoded no picture (a skipped
        non-keyframe). As BGR, or with `yuv` as the JPEG-ready YUV planes (`YuvImage`): half the
        conversion, and the JPEG is encoded from them with no BGR copy (BENCHMARKS.md)."""
        frame = self._frame
        if frame is None:
            return None, (0, 0)
        w, h = frame.width, frame.height
        dw, dh = fit_size(w, h, max_side or self.max_side)
        if yuv:
            # JPEG's matrix (BT.601, full range) from whatever the camera tags (an HD camera: BT.709).
            out = self._reformatter.reformat(
                frame,
                format="yuvj420p",
                width=dw,
                height=dh,
                interpolation=SCALE_INTERPOLATION,
                dst_colorspace=Colorspace.ITU601,
                threads=SCALE_THREADS,
            )
            return YuvImage(*(_plane(out, i) for i in range(3))), (w, h)
        bgr = self._reformatter.reformat(
            frame, format="bgr24", width=dw, height=dh, interpolation=SCALE_INTERPOLATION, threads=SCALE_THREADS
        )
        return np.ascontiguousarray(bgr.to_ndarray()), (w, h)

    def rewind(self) -> None:
        if self._container is None:
            return
        self._container.seek(0)
        self._stream.codec_context.flush_buffers()
        self._packets = self._demux()
        self._frame = None
        self._pending.clear()

    def release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
