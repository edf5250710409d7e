"""What a real camera costs the producer, against FFmpeg decoding the same source alone (issue 20).

    .venv/bin/python -m benchmarks.cameras --seconds 20

Makes its source with FFmpeg (20 s of testsrc2 at 1920x1080, 30 fps, H.264 at 4 Mbit/s, GOP 30), then
in one run, round-robin over `--reps`:
- FFmpeg decoding it alone, paced (`ffmpeg -re -threads 1 -i clip -f null -`);
- `rtai producer --source clip --imgsz 640 --max-fps F` for each F, with a no-op worker behind it
  (with `--motion`, each F once more with motion gating on: the check's cost, since testsrc2 moves).
With `--daemon 1,4,8,16`: that many cameras (the same file, declared with `rtai stream add`) in one
producer daemon at `--max-fps 5`, the daemon's CPU per camera and its frames sampled per camera a
second (a daemon runs each camera on its own thread: when its CPU stops growing with the cameras,
something serialises them).
CPU is CPU-seconds per second of wall time, from /proc (user + system, the process and its threads),
over the whole run. Prints one table with each row's ratio to FFmpeg's decode from the same round,
and how many decoded frames the producer converted to BGR. `PYTHONPATH=<tree>` measures another
checkout with the same venv (a before/after comparison).
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


def make_clip(path: Path, seconds: float, size: str = "1920x1080", codec: str = "libx264", gop: int = 30) -> Path:
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30", "-t", str(seconds),
             "-c:v", codec, "-b:v", "4M", "-g", str(gop), "-pix_fmt", "yuv420p", "-preset", "veryfast", str(path)],
            check=True,
        )  # fmt: skip
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def measure(cmd: list[str], seconds: float, env: dict[str, str] | None = None) -> float:
    """Cores (CPU-seconds per second) of `cmd` over `seconds` after a 2 s warm-up, then it is stopped."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@click.command()
@click.option("--seconds", type=float, default=15.0, show_default=True, help="Measuring window of each run.")
@click.option("--reps", type=int, default=2, show_default=True)
@click.option("--fps", "rates", default="5,30", show_default=True, help="--max-fps values of the producer.")
@click.option("--imgsz", type=int, default=640, show_default=True)
@click.option("--decodes", default="cpu", show_default=True, help="--decode values to compare, e.g. cpu,pyav.")
@click.option(
    "--keyframes", is_flag=True, help="Also --decode keyframes: GOP-30 at --max-fps 1, GOP-10 at --max-fps 3."
)
@click.option("--daemon", "daemon_counts", default="", help="Camera counts for one producer daemon, e.g. 1,4,8,16.")
@click.option(
    "--motion", is_flag=True, help="Also each rate with --motion (testsrc2 always moves: the check's cost, all sent)."
)
def main(
    seconds: float, reps: int, rates: str, imgsz: int, decodes: str, keyframes: bool, daemon_counts: str, motion: bool
) -> None:
    root = Path(tempfile.gettempdir()) / "rtai-cameras"
    root.mkdir(exist_ok=True)
    clips = {"gop30": make_clip(root / "1080p-h264-gop30.mp4", seconds + 10)}
    if keyframes:
        clips["gop10"] = make_clip(root / "1080p-h264-gop10.mp4", seconds + 10, gop=10)
    clip = clips["gop30"]
    server = PrivateRedis()
    env = {**os.environ, "RTAI_REDIS_URL": server.url}
    worker = subprocess.Popen(
        role_command("control", "worker", "--detector", "noop", "--preload", ""), env=env, stdout=subprocess.DEVNULL
    )
    #: row -> (cores each round, ratio to FFmpeg's decode of the row's source each round)
    rows: dict[str, tuple[list[float], list[float]]] = {}

    def run(name: str, cmd: list[str], decode: float) -> None:
        cores = measure(cmd, seconds, env)
        got = rows.setdefault(name, ([], []))
        got[0].append(cores)
        got[1].append(cores / decode)

    try:
        if daemon_counts:
            counts = [int(n) for n in daemon_counts.split(",")]
            _daemon_scaling(env, clip, seconds, imgsz, counts, decodes.split(",")[0])
            return
        for _ in range(reps):
            ffmpeg = {}
            for src, path in clips.items():
                ffmpeg[src] = measure(
                    ["ffmpeg", "-v", "error", "-re", "-threads", "1", "-i", str(path), "-f", "null", "-"], seconds
                )
                got = rows.setdefault(f"ffmpeg decode, {src}", ([], []))
                got[0].append(ffmpeg[src])
                got[1].append(1.0)
            for decode in decodes.split(","):
                for rate in rates.split(","):
                    for gate in ([], ["--motion"]) if motion else ([],):
                        cmd = role_command("control", "producer", "--source", str(clip), "--stream", "cam", "--loop")
                        cmd += ["--imgsz", str(imgsz), "--max-fps", rate, "--decode", decode, *gate]
                        run(f"--decode {decode} --max-fps {rate}{' --motion' if gate else ''}", cmd, ffmpeg["gop30"])
            if keyframes:
                for src, rate in (("gop30", "1"), ("gop10", "3")):
                    cmd = role_command("control", "producer", "--source", str(clips[src]), "--stream", "key", "--loop")
                    cmd += ["--imgsz", str(imgsz), "--max-fps", rate, "--decode", "keyframes"]
                    run(f"--decode keyframes --max-fps {rate}, {src}", cmd, ffmpeg[src])
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        server.stop()
    click.echo(f"sources: 1080p H.264 30 fps ({', '.join(clips)}); imgsz {imgsz}; {seconds:.0f} s a run")
    click.echo(f"load {os.getloadavg()[0]:.2f}; cores {os.cpu_count()}")
    click.echo("| run | cores (median of rounds) | each round | x FFmpeg's decode of its source (median) |")
    click.echo("|---|---|---|---|")
    for name, (values, ratios) in rows.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        click.echo(f"| {name} | {statistics.median(values):.2f} | {each} | {statistics.median(ratios):.2f} |")
    if keyframes:
        for src, rate in (("gop30", 1.0), ("gop10", 3.0)):
            ages = _ages(clips[src], rate, imgsz)
            click.echo(
                f"keyframes, {src} at {rate:g} a second: age of the frame a tick takes, median "
                f"{statistics.median(ages) * 1000:.0f} ms, max {max(ages) * 1000:.0f} ms ({len(ages)} ticks)"
            )


def _ages(clip: Path, rate: float, imgsz: int, ticks: int = 12) -> list[float]:
    """Sample a keyframes-only source as the producer does (a tick every 1/rate s, the newest frame):
    how old is the frame each tick takes (now minus its capture time)."""
    from producer.source import VideoSource  # noqa: PLC0415

    src = VideoSource(str(clip), decode="keyframes", max_side=imgsz, loop=True).start()
    ages, last = [], -1
    try:
        frame = src.newest(last, timeout=5)
        assert frame is not None
        last, tick = frame.index, time.monotonic()
        for _ in range(ticks):
            tick += 1.0 / rate
            time.sleep(max(0.0, tick - time.monotonic()))
            frame = src.newest(-1, timeout=1)
            if frame is not None:
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
