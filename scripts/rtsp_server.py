#!/usr/bin/python3
"""A real RTSP server for tests and demos: Debian's GStreamer RTSP server, run by /usr/bin/python3.

  /usr/bin/python3 scripts/rtsp_server.py --port 8554 --frames DIR --fps 15   # JPEG frames, looped
  /usr/bin/python3 scripts/rtsp_server.py --port 8554 --pattern              # live test pattern
  /usr/bin/python3 scripts/rtsp_server.py --port 8554 --stamp --fps 30       # capture time burnt in

--stamp burns each frame's wall time (ms since the epoch, taken as the frame is made) into its top
rows as STAMP_BITS black/white blocks, most significant bit first; devkit/stamp.py reads it back
after H.264, so glass-to-result latency can be measured on any consumer of the stream.

Serves rtsp://127.0.0.1:PORT/stream as H.264 (x264enc tune=zerolatency). Prints READY when it
listens. Needs python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly}.
"""

import argparse
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

#: Bits of the burnt-in timestamp, and the height of its stripe (keep in step with devkit/stamp.py).
STAMP_BITS = 48
STAMP_ROWS = 16


def stamp_frame(base: bytearray, width: int, ms: int) -> bytes:
    """An I420 frame: `base` with `ms` written as STAMP_BITS blocks across the top of the Y plane."""
    block = width // STAMP_BITS
    frame = bytearray(base)
    row = bytearray(width)
    for i in range(STAMP_BITS):
        bit = (ms >> (STAMP_BITS - 1 - i)) & 1
        row[i * block : (i + 1) * block] = (b"\xeb" if bit else b"\x10") * block
    for y in range(STAMP_ROWS):
        frame[y * width : (y + 1) * width] = row
    return bytes(frame)


class StampSource:
    """Feeds the appsrc of the shared media with stamped frames at the stream's rate."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        w, h = args.width, args.height
        self.base = bytearray(b"\x60" * (w * h) + b"\x80" * (w * h // 2))
        self.appsrc = None
        self.n = 0

    def on_configure(self, _factory, media) -> None:
        self.appsrc = media.get_element().get_child_by_name("src")
        self.n = 0

    def tick(self) -> bool:
        if self.appsrc is not None:
            # A moving bar below the stripe, so the encoder sees motion like a real camera's.
            a = self.args
            frame = bytearray(stamp_frame(self.base, a.width, int(time.time() * 1000)))
            x = (self.n * 8) % a.width
            for y in range(STAMP_ROWS * 2, a.height):
                frame[y * a.width + x : y * a.width + min(x + 32, a.width)] = b"\xc0" * (min(x + 32, a.width) - x)
            buf = Gst.Buffer.new_wrapped(bytes(frame))
            buf.duration = Gst.SECOND // a.fps
            self.n += 1
            if self.appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                self.appsrc = None  # the media went away (no client); the next one configures again
        return True


def pipeline(args: argparse.Namespace) -> str:
    enc = (
        f"videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
        f"key-int-max={args.fps} bitrate={args.bitrate} ! rtph264pay name=pay0 pt=96 config-interval=1"
    )
    if args.stamp:
        return (
            f"( appsrc name=src is-live=true format=time do-timestamp=true caps=video/x-raw,format=I420,"
            f"width={args.width},height={args.height},framerate={args.fps}/1 ! {enc} )"
        )
    if args.pattern:
        return (
            f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={args.width},height={args.height},"
            f"framerate={args.fps}/1 ! {enc} )"
        )
    # The frames' own size unless --width/--height ask for another (then scaled on the way out).
    scale = ""
    if args.size_given:
        scale = f" ! videoscale ! video/x-raw,width={args.width},height={args.height}"
    return (
        f"( multifilesrc location={args.frames}/%05d.jpg index=0 loop=true "
        f'caps="image/jpeg,framerate={args.fps}/1" ! jpegdec{scale} ! {enc} )'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--mount", default="/stream")
    parser.add_argument("--frames", help="directory of 00000.jpg, 00001.jpg, ... served in a loop")
    parser.add_argument("--pattern", action="store_true", help="serve a live test pattern")
    parser.add_argument("--stamp", action="store_true", help="serve frames with their wall time burnt in")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--width", type=int, default=None, help="default 320 (--frames: the frames' own)")
    parser.add_argument("--height", type=int, default=None, help="default 240 (--frames: the frames' own)")
    parser.add_argument("--bitrate", type=int, default=1500, help="kbit/s")
    args = parser.parse_args()
    if not args.pattern and not args.frames and not args.stamp:
        parser.error("give --frames DIR, --pattern or --stamp")
    args.size_given = args.width is not None or args.height is not None
    args.width = args.width or 320
    args.height = args.height or 240

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(args))
    factory.set_shared(True)
    if args.stamp:
        stamper = StampSource(args)
        factory.connect("media-configure", stamper.on_configure)
        GLib.timeout_add(max(1, 1000 // args.fps), stamper.tick)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
