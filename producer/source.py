"""A video source read on its own thread that keeps only the newest frame.

RTSP and HTTP sources are read as fast as they arrive (so latency never builds up); files are
paced at their own frame rate and can loop. A source that cannot be opened, ends, or stays
connected without sending frames (stalled) is reopened with exponential backoff.

Sample before you convert: every frame is decoded (`grab`), but only a frame the consumer will
sample is converted (`retrieve`: BGR, or with PyAV JPEG-ready YUV at the size sent): the consumer says when
it next wants one (`want_from`), and from then on each new frame is converted until it takes one.
At 5 samples a second from a 30 fps camera that converts about one frame in three instead of every
frame; the newest-frame rule is unchanged (a converted frame is at most one source frame older than
the tick that takes it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2

from common.backoff import Backoff
from common.config import DEFAULT_DECODE, apply_capture_options, extra_capture_option
from common.images import Picture, picture_size
from common.sources import redact
from common.states import StreamState

from .capture import AvCapture, CvCapture, has_hwdevice
from .probe import PROBE_TIMEOUT_S, why_not_open

log = logging.getLogger(__name__)

#: FFmpeg's NVDEC (CUVID) decoders, tried in order for `--decode nvdec|auto`.
NVDEC_DECODERS = ("h264_cuvid", "hevc_cuvid")
#: OPENCV_FFMPEG_CAPTURE_OPTIONS is read when a capture opens: one open at a time may change it.
_options_lock = threading.Lock()
#: Set once an NVDEC open failed in this process: `auto` then stops trying (and paying an open) each time.
_nvdec_missing = threading.Event()

StateCallback = Callable[[StreamState, str], None]

#: One decode thread: ~37 ms from camera to frame for 640x480@30 H.264, against ~74 ms with
#: OpenCV's default (frame-threaded decode on every core), measured with the stamped source.
CAPTURE_DECODE_THREADS = 1


#: `auto-cpu` decodes a camera this large (width x height; 1280x720 and up) with PyAV, a smaller one with OpenCV.
PYAV_FROM_PIXELS = 1280 * 720

#: The decode modes that read through PyAV (producer/capture.py).
PYAV_DECODES = ("pyav", "keyframes", "vaapi")
#: Set once VAAPI was found missing in this process: warned once, then PyAV on the CPU each time.
_vaapi_missing = threading.Event()


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    index: int
    t_capture: float
    #: BGR, or YUV planes from PyAV when the source was asked for them (`yuv`).
    image: Picture
    #: The camera's frame size (w, h); the image may be smaller (PyAV converts at the size sent).
    size: tuple[int, int] = (0, 0)

    @property
    def camera_size(self) -> tuple[int, int]:
        return self.size if self.size != (0, 0) else picture_size(self.image)


def is_live(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


class VideoSource:
    def __init__(
        self,
        url: str,
        *,
        loop: bool = False,
        open_timeout_s: float = 5.0,
        stall_timeout_s: float = 5.0,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        max_reconnects: int | None = None,
        on_state: StateCallback | None = None,
        decode: str = DEFAULT_DECODE,
        max_side: int = 16_384,
        yuv: bool = False,
    ) -> None:
        self.url = url
        #: One of common.config.DECODES (auto-cpu: _open_by_size); `decoder` is what the last open uses.
        self.decode = decode
        #: PyAV converts frames straight to this long side (the size the producer sends; the runner
        #: raises it while a stream page wants a larger preview).
        self.max_side = max_side
        #: Hand on YUV planes (`YuvImage`) where the decoder can (PyAV), for a consumer that encodes
        #: JPEG: no BGR copy is made. OpenCV's decoders give BGR whatever this says.
        self.yuv = yuv
        self.decoder = "cpu"
        #: What logs, reasons and the thread name show: the URL without its password.
        self.shown = redact(url)
        self.live = is_live(url)
        self.loop = loop
        self.open_timeout_s = open_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.max_reconnects = max_reconnects
        self._on_state = on_state
        self._cond = threading.Condition()
        self._latest: CapturedFrame | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtai-source:{self.shown}", daemon=True)
        self.state = StreamState.CONNECTING
        self.reason = ""
        #: The decoder threads OpenCV applied to the open live capture (None: none open yet / a file).
        self.decode_threads: int | None = None
        #: Monotonic time from which grabbed frames are converted (0: every frame; see want_from).
        self._want_at = 0.0
        #: Frames decoded, and of those converted to BGR (the rest were never sampled).
        self.grabbed = 0
        self.converted = 0

    # -- consumer side -------------------------------------------------------------------
    def start(self) -> VideoSource:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=self.open_timeout_s + 2)

    @property
    def finished(self) -> bool:
        """True once the source will deliver nothing more (file ended, gave up, stopped)."""
        return not self._thread.is_alive()

    def want_from(self, t_mono: float) -> None:
        """The consumer's next sample is due at about `t_mono`: frames grabbed before then need no
        conversion (newest() asks for one at once when none is ready)."""
        self._want_at = t_mono

    def newest(self, after: int, timeout: float) -> CapturedFrame | None:
        """The newest converted frame with index > after, waiting up to timeout for one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._latest is None or self._latest.index <= after:
                self._want_at = 0.0  # none ready: convert the next frame grabbed
            while self._latest is None or self._latest.index <= after:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set() or not self._thread.is_alive():
                    return None
                self._cond.wait(min(left, 0.1))
            return self._latest

    # -- reader thread -------------------------------------------------------------------
    def _set_state(self, state: StreamState, reason: str = "") -> None:
        if state == self.state and reason == self.reason:
            return
        self.state, self.reason = state, reason
        log.info("source %s: %s %s", self.shown, state.value, reason)
        if self._on_state is not None:
            self._on_state(state, reason)

    def _open(self) -> CvCapture | AvCapture:
        if self.decode in PYAV_DECODES:
            self.decoder = self.decode
            return self._open_pyav()
        if self.decode in ("nvdec", "auto"):
            cap = self._open_nvdec()
            if cap is not None:
                return CvCapture(cap, live=self.live)
            if self.decode == "nvdec":
                return CvCapture(cv2.VideoCapture(), live=self.live)
        if self.decode in ("auto-cpu", "auto"):
            return self._open_by_size()
        self.decoder = "cpu"
        return CvCapture(self._open_cpu(), live=self.live)

    def _open_by_size(self) -> CvCapture | AvCapture:
        """`auto-cpu` (and `auto` without NVDEC): the cheaper CPU decoder for the camera's size.

        OpenCV opens the source (as `cpu` would: a camera that cannot be reached costs one open
        timeout, not two) and reports its size. Below PYAV_FROM_PIXELS OpenCV keeps it: its full-size
        BGR conversion is small there and it measured the cheaper. From 1280x720 up the capture is
        reopened with PyAV, which converts only sampled frames, straight to the size sent
        (BENCHMARKS.md: 1080p H.264 at 30 fps costs 1.6x FFmpeg's decode through PyAV, 2.7-3x through
        OpenCV). Should PyAV not open what OpenCV did, OpenCV opens it again."""
        cv = self._open_cpu()
        width, height = cv.get(cv2.CAP_PROP_FRAME_WIDTH), cv.get(cv2.CAP_PROP_FRAME_HEIGHT)
        self.decoder = "cpu"
        if not cv.isOpened() or width * height < PYAV_FROM_PIXELS:
            return CvCapture(cv, live=self.live)
        cv.release()
        av_cap = self._open_pyav()
        if av_cap.is_open():
            self.decoder = "pyav"
            log.info("source %s: %dx%d: decoding with PyAV", self.shown, width, height)
            return av_cap
        why = redact(av_cap.open_error)
        log.warning("source %s: PyAV could not open it (%s): decoding with OpenCV", self.shown, why)
        return CvCapture(self._open_cpu(), live=self.live)

    def _open_pyav(self) -> AvCapture:
        url = self.url
        if not self.live:
            url = url.removeprefix("file://")
        if self.decode == "vaapi" and not _vaapi_missing.is_set():
            if has_hwdevice("vaapi"):
                cap = self._av(url, hwaccel="vaapi")
                if cap.is_open():
                    return cap
                why = cap.open_error
            else:
                why = "the FFmpeg PyAV loaded has no VAAPI"
            log.warning("source %s: VAAPI not available (%s): decoding on the CPU", self.shown, redact(why))
            _vaapi_missing.set()
        if self.decode == "vaapi":
            self.decoder = "pyav"
        cap = self._av(url)
        if not cap.is_open():
            log.debug("source %s: PyAV could not open it: %s", self.shown, redact(cap.open_error))
        return cap

    def _av(self, url: str, hwaccel: str | None = None) -> AvCapture:
        return AvCapture(
            url,
            live=self.live,
            open_timeout_s=self.open_timeout_s,
            read_timeout_s=self.stall_timeout_s,
            max_side=self.max_side,
            keyframes=self.decode == "keyframes",
            threads=CAPTURE_DECODE_THREADS,
            hwaccel=hwaccel,
        )

    def _open_nvdec(self) -> cv2.VideoCapture | None:
        """A capture decoding on the GPU with FFmpeg's `h264_cuvid`/`hevc_cuvid`, or None.

        Why OpenCV's FFmpeg backend and not PyAV or PyNvVideoCodec: the producer already reads every
        source through OpenCV (RTSP options, open/read timeouts, reconnects, file pacing), and
        OpenCV takes the decoder by name from OPENCV_FFMPEG_CAPTURE_OPTIONS (`video_codec;...`), so
        NVDEC is one option on the same open, with no second demuxer and no new dependency. It works
        where OpenCV links an FFmpeg built with CUVID (a GPU image's system OpenCV/FFmpeg); the pip
        wheel's FFmpeg has no CUVID, so there the open fails and `auto` falls back to the CPU."""
        if self.decode == "auto" and _nvdec_missing.is_set():
            return None
        for codec in NVDEC_DECODERS:
            with _options_lock, extra_capture_option(f"video_codec;{codec}"):
                cap = self._open_cpu()
            if cap.isOpened() and cap.grab():
                self.decoder = "nvdec"
                log.info("source %s: decoding with NVDEC (%s)", self.shown, codec)
                return cap
            cap.release()
        if not _nvdec_missing.is_set():
            tried = "/".join(NVDEC_DECODERS)
            log.warning("source %s: NVDEC (%s) not available: decoding on the CPU", self.shown, tried)
        _nvdec_missing.set()
        return None

    def _open_cpu(self) -> cv2.VideoCapture:
        if not self.live:
            path = self.url.removeprefix("file://")
            if not Path(path).exists():
                return cv2.VideoCapture()
            return cv2.VideoCapture(path)
        apply_capture_options()
        # The decoder's thread count is a codec option OpenCV sets itself (to the core count: frame
        # threading, one frame more of delay); OPENCV_FFMPEG_CAPTURE_OPTIONS' `threads` never reaches it.
        params = [
            cv2.CAP_PROP_N_THREADS,
            CAPTURE_DECODE_THREADS,
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.stall_timeout_s * 1000),
        ]
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)

    def _run(self) -> None:
        failures = 0
        index = 0
        while not self._stop.is_set():
            cap = self._open()
            if not cap.is_open():
                failures += 1
                reason = f"cannot open {self.shown}"
                if self.live and not self._stop.is_set():
                    cause = why_not_open(self.url, min(PROBE_TIMEOUT_S, self.open_timeout_s))
                    reason += f": {cause}" if cause else ""
                if self.decode == "nvdec":
                    reason += " with NVDEC (--decode nvdec; auto falls back to the CPU)"
                if not self.live:
                    # The same reason whether the file is missing, unreadable or not a video: a
                    # reason shown through the API must not tell which files exist.
                    self._set_state(StreamState.ERROR, reason)
                    return
                if self.max_reconnects is not None and failures > self.max_reconnects:
                    self._set_state(StreamState.ERROR, f"{reason}; gave up after {failures} tries")
                    return
                self._set_state(StreamState.RECONNECTING, reason)
                self._backoff(failures)
                continue
            self.decode_threads = cap.decode_threads
            ended, index = self._read_until_break(cap, index)
            cap.release()
            if ended:
                self._set_state(StreamState.STOPPED, "end of file")
                return
            failures += 1
            if self.max_reconnects is not None and failures > self.max_reconnects:
                self._set_state(StreamState.ERROR, f"{self.reason}; gave up after {failures} tries")
                return
            self._backoff(failures)
        self._set_state(StreamState.STOPPED, "stopped")

    def _read_until_break(self, cap: CvCapture | AvCapture, index: int) -> tuple[bool, int]:
        """Read frames until the source breaks (False) or a file ends (True)."""
        fps = cap.fps
        period = 1.0 / fps if (not self.live and 1.0 <= fps <= 240.0) else 0.0
        t_next = time.monotonic()
        last_frame = time.monotonic()
        got_any = False
        while not self._stop.is_set():
            ok = cap.grab()
            now_mono = time.monotonic()
            self.grabbed += int(ok)
            if not ok:
                if not self.live:
                    if self.loop and got_any:
                        cap.rewind()
                        got_any = False
                        continue
                    return True, index
                if got_any and now_mono - last_frame >= self.stall_timeout_s * 0.9:
                    self._set_state(StreamState.STALLED, f"no frame for {now_mono - last_frame:.1f} s")
                else:
                    self._set_state(StreamState.RECONNECTING, "stream ended or read failed")
                return False, index
            if period:  # a file: the frame is due at its own time, and is wanted or not from then
                t_next += period
                delay = t_next - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    t_next = time.monotonic()
            image, size = None, (0, 0)
            if cap.keyframes or time.monotonic() >= self._want_at:  # keyframes are few: each is kept
                image, size = cap.retrieve(self.max_side, yuv=self.yuv)
                self.converted += int(image is not None)
            got_any = True
            last_frame = time.monotonic()
            if self.state != StreamState.RUNNING:
                self._set_state(StreamState.RUNNING, "")
            if image is None:  # decoded, never to be sampled: not converted
                index += 1
                continue
            frame = CapturedFrame(index=index, t_capture=time.time(), image=image, size=size)
            index += 1
            with self._cond:
                self._latest = frame
                self._cond.notify_all()
        return False, index

    def _backoff(self, failures: int) -> None:
        self._stop.wait(Backoff(first=self.reconnect_min_s, cap=self.reconnect_max_s).delay(failures))
