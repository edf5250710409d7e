#!/usr/bin/python3
"""A real RTSP server for tests and demos: Debian's GStreamer RTSP server, run by /usr/bin/python3.

  /usr/bin/python3 scripts/rtsp_server.py --port 8554 --frames DIR --fps 15   # JPEG frames, looped
  /usr/bin/python3 scripts/rtsp_server.py --port 8554 --pattern              # live test pattern

Serves rtsp://127.0.0.1:PORT/stream as H.264 (x264enc tune=zerolatency). Prints READY when it
listens. Needs python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly}.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def pipeline(args: argparse.Namespace) -> str:
    enc = (
        f"videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
        f"key-int-max={args.fps} bitrate={args.bitrate} ! rtph264pay name=pay0 pt=96 config-interval=1"
    )
    if args.pattern:
        return (
            f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={args.width},height={args.height},"
            f"framerate={args.fps}/1 ! {enc} )"
        )
    return (
        f"( multifilesrc location={args.frames}/%05d.jpg index=0 loop=true "
        f'caps="image/jpeg,framerate={args.fps}/1" ! jpegdec ! {enc} )'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--mount", default="/stream")
    parser.add_argument("--frames", help="directory of 00000.jpg, 00001.jpg, ... served in a loop")
    parser.add_argument("--pattern", action="store_true", help="serve a live test pattern")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--bitrate", type=int, default=1500, help="kbit/s")
    args = parser.parse_args()
    if not args.pattern and not args.frames:
        parser.error("give --frames DIR or --pattern")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(args))
    factory.set_shared(True)
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
