"""What a real camera costs the producer, against FFmpeg decoding the same source alone (issue 20).

    .venv/bin/python -m benchmarks.cameras --seconds 12 --reps 2 --keyframes

Makes its sources with FFmpeg (testsrc2 at 30 fps, 4 Mbit/s: `h264` 1920x1080 H.264 GOP 30,
`h265` the same in H.265, `4k` 3840x2160 H.264 GOP 30; `gop10` 1080p H.264 GOP 10 for the
keyframes rows; `vga` 640x480 H.264 GOP 30, a camera's substream), then in one run, round-robin over `--reps`:
- FFmpeg decoding each source alone, paced (`ffmpeg -re -threads 1 -i clip -f null -`);
- `rtai producer --source clip --imgsz 640 --max-fps F --decode D` for each source, decoder and F,
  with a no-op worker behind it (with `--motion`, once more with motion gating on: the check's cost,
  since testsrc2 always moves);
- with `--keyframes`, `--decode keyframes` on `h264` at `--max-fps 1` and on `gop10` at 3.
Each row: cores (CPU-seconds per second of wall time, from /proc: user + system, every thread,
after a 2 s warm-up), the ratio to FFmpeg's decode of the same source in the same round, the
producer's peak memory (VmHWM), and the age of the frame a sampling tick takes (now minus its
capture stamp, median; measured after the rounds on the source itself, ticks at random phase).
With `--daemon 1,4,8,16`: that many cameras (the same file, declared with `rtai stream add`) in one
producer daemon at `--max-fps 5`, the daemon's CPU per camera and its frames sampled per camera a
second (a daemon runs each camera on its own thread: when its CPU stops growing with the cameras,
something serialises them). `PYTHONPATH=<tree>` measures another checkout with the same venv.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import click

from common.config import role_command
from control.redis_server import PrivateRedis

TICKS = os.sysconf("SC_CLK_TCK")


#: name -> (size, codec, GOP) of the sources the benchmark makes.
SOURCES = {
    "h264": ("1920x1080", "libx264", 30),
    "h265": ("1920x1080", "libx265", 30),
    "4k": ("3840x2160", "libx264", 30),
    "gop10": ("1920x1080", "libx264", 10),
    "vga": ("640x480", "libx264", 30),  # a substream: which decoder is the cheaper for small frames
}


def make_clip(path: Path, seconds: float, size: str = "1920x1080", codec: str = "libx264", gop: int = 30) -> Path:
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30", "-t", str(seconds),
             "-c:v", codec, "-b:v", "4M", "-g", str(gop), "-pix_fmt", "yuv420p", "-preset", "veryfast",
             *(["-x265-params", f"keyint={gop}:log-level=error"] if codec == "libx265" else []), str(path)],
            check=True,
        )  # fmt: skip
    return path


def source_clip(root: Path, name: str, seconds: float) -> Path:
    size, codec, gop = SOURCES[name]
    old = root / "1080p-h264-gop30.mp4"  # the name earlier runs used for `h264`
    if name == "h264" and old.exists():
        return old
    return make_clip(root / f"{name}.mp4", seconds, size=size, codec=codec, gop=gop)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_run(cmd: list[str], seconds: float, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(cores, peak MB) of `cmd` over `seconds` after a 2 s warm-up, then it is stopped."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0), peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure(cmd: list[str], seconds: float, env: dict[str, str] | None = None) -> float:
    """Cores (CPU-seconds per second) of `cmd` over `seconds` after a 2 s warm-up, then it is stopped."""
    return measure_run(cmd, seconds, env)[0]


@click.command()
@click.option("--seconds", type=float, default=15.0, show_default=True, help="Measuring window of each run.")
@click.option("--reps", type=int, default=2, show_default=True)
@click.option("--fps", "rates", default="5,30", show_default=True, help="--max-fps values of the producer.")
@click.option("--imgsz", type=int, default=640, show_default=True)
@click.option("--sources", default="h264,h265,4k", show_default=True, help="Sources to measure (h264, h265, 4k, vga).")
@click.option("--decodes", default="auto-cpu,cpu", show_default=True, help="--decode values to compare.")
@click.option("--keyframes", is_flag=True, help="Also --decode keyframes: GOP 30 at --max-fps 1, GOP 10 at 3.")
@click.option("--daemon", "daemon_counts", default="", help="Camera counts for one producer daemon, e.g. 1,4,8,16.")
@click.option(
    "--motion", is_flag=True, help="Also each rate with --motion (testsrc2 always moves: the check's cost, all sent)."
)
def main(
    seconds: float,
    reps: int,
    rates: str,
    imgsz: int,
    sources: str,
    decodes: str,
    keyframes: bool,
    daemon_counts: str,
    motion: bool,
) -> None:
    root = Path(tempfile.gettempdir()) / "rtai-cameras"
    root.mkdir(exist_ok=True)
    names = sources.split(",") + (["gop10"] if keyframes else [])
    if keyframes and "h264" not in names:
        names.insert(0, "h264")
    clips = {name: source_clip(root, name, seconds + 10) for name in names}
    server = PrivateRedis()
    env = {**os.environ, "RTAI_REDIS_URL": server.url}
    worker = subprocess.Popen(
        role_command("control", "worker", "--detector", "noop", "--preload", ""), env=env, stdout=subprocess.DEVNULL
    )
    #: (source, run) -> cores, ratios to the source's decode, peak MB (one each round)
    rows: dict[tuple[str, str], tuple[list[float], list[float], list[float]]] = {}
    #: (source, run) -> (decode, rate) for the frame-age measurement
    plans: dict[tuple[str, str], tuple[str, float]] = {}

    def add(key: tuple[str, str], cores: float, ratio: float, mb: float) -> None:
        got = rows.setdefault(key, ([], [], []))
        got[0].append(cores)
        got[1].append(ratio)
        got[2].append(mb)

    try:
        if daemon_counts:
            counts = [int(n) for n in daemon_counts.split(",")]
            _daemon_scaling(env, clips[names[0]], seconds, imgsz, counts, decodes.split(",")[0])
            return
        for _ in range(reps):
            for src, path in clips.items():
                ffmpeg = ["ffmpeg", "-v", "error", "-re", "-threads", "1", "-i", str(path), "-f", "null", "-"]
                decode, mb = measure_run(ffmpeg, seconds)
                add((src, "ffmpeg decode"), decode, 1.0, mb)
                runs: list[tuple[str, str, list[str]]] = []
                if src != "gop10":
                    for dec in decodes.split(","):
                        for rate in rates.split(","):
                            for gate in ([], ["--motion"]) if motion else ([],):
                                runs.append((dec, rate, gate))
                if keyframes and src in ("h264", "gop10"):
                    runs.append(("keyframes", "1" if src == "h264" else "3", []))
                for dec, rate, gate in runs:
                    cmd = role_command("control", "producer", "--source", str(path), "--stream", "cam", "--loop")
                    cmd += ["--imgsz", str(imgsz), "--max-fps", rate, "--decode", dec, *gate]
                    cores, mb = measure_run(cmd, seconds, env)
                    key = (src, f"--decode {dec} --max-fps {rate}{' --motion' if gate else ''}")
                    add(key, cores, cores / decode, mb)
                    plans[key] = (dec, float(rate))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        server.stop()
    ages = {key: _ages(clips[key[0]], dec, rate, imgsz) for key, (dec, rate) in plans.items()}
    click.echo(f"sources: testsrc2 30 fps 4 Mbit/s ({', '.join(clips)}); imgsz {imgsz}; {seconds:.0f} s a run")
    click.echo(f"load {os.getloadavg()[0]:.2f}; cores {os.cpu_count()}")
    click.echo("| source | run | cores (median) | each round | x FFmpeg's decode | peak MB | frame age at a tick |")
    click.echo("|---|---|---|---|---|---|---|")
    for (src, name), (values, ratios, mbs) in rows.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        age = ages.get((src, name))
        shown = f"{statistics.median(age) * 1000:.0f} ms (max {max(age) * 1000:.0f})" if age else "-"
        click.echo(
            f"| {src} | {name} | {statistics.median(values):.2f} | {each} | {statistics.median(ratios):.2f} "
            f"| {max(mbs):.0f} | {shown} |"
        )


def _ages(clip: Path, decode: str, rate: float, imgsz: int, ticks: int = 20) -> list[float]:
    """Sample a source as the producer does (about one tick every 1/rate s, at a random phase, as a
    camera's would be; the newest frame): how old is the frame each tick takes (now minus its
    capture stamp)."""
    import random  # noqa: PLC0415

    from producer.source import VideoSource  # noqa: PLC0415

    src = VideoSource(str(clip), decode=decode, max_side=imgsz, loop=True).start()
    ages, rng = [], random.Random(1)
    try:
        frame = src.newest(-1, timeout=5)
        assert frame is not None
        last, tick = frame.index, time.monotonic()
        for _ in range(ticks):
            tick += rng.uniform(0.5, 1.5) / rate
            src.want_from(tick - 0.02)  # as producer/runner.py does (WANT_SLACK_S)
            time.sleep(max(0.0, tick - time.monotonic()))
            frame = src.newest(last, timeout=2)  # a frame newer than the last one taken, as the runner asks
            if frame is not None:
                last = frame.index
                ages.append(time.time() - frame.t_capture)
    finally:
        src.stop()
    return ages


def _sampled(env: dict[str, str], streams: list[str]) -> int:
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(env["RTAI_REDIS_URL"])
    return sum(int(client.hget(f"rtai:ledger:{s}", "produced") or 0) for s in streams)


def _daemon_scaling(
    env: dict[str, str], clip: Path, seconds: float, imgsz: int, counts: list[int], decode: str = "cpu"
) -> None:
    click.echo(f"--decode {decode}")
    click.echo("| cameras in one daemon | daemon cores | cores a camera | frames sampled a camera a second |")
    click.echo("|---|---|---|---|")
    for n in counts:
        streams = [f"d{n}c{i}" for i in range(n)]
        for stream in streams:
            add = role_command("control", "stream", "add", stream, "--source", str(clip), "--loop")
            subprocess.run(
                [*add, "--max-fps", "5", "--imgsz", str(imgsz), "--decode", decode],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        proc = subprocess.Popen(role_command("control", "producer"), env=env, stdout=subprocess.DEVNULL)
        try:
            time.sleep(4.0)
            c0, t0, f0 = cpu_seconds(proc.pid), time.monotonic(), _sampled(env, streams)
            time.sleep(seconds)
            cores = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
            fps = (_sampled(env, streams) - f0) / (time.monotonic() - t0) / n
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            for stream in streams:
                subprocess.run(role_command("control", "stream", "rm", stream, "--purge"), env=env, check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        click.echo(f"| {n} | {cores:.2f} | {cores / n:.3f} | {fps:.2f} |")
    click.echo(f"load {os.getloadavg()[0]:.2f}; cores {os.cpu_count()}")


if __name__ == "__main__":
    main()
