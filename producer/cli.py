"""`rtai producer`: feed one video source to the fleet."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click
import redis

from common.config import DECODES, ProducerSettings, build, env_value, redis_url
from common.exitcodes import EXIT_OK, EXIT_SOURCE
from common.proctitle import set_title
from common.states import StreamState


@click.command()
@click.option(
    "--source", default=None, help="rtsp://, http:// URL, video file, or demo (the bundled clip) [env RTAI_SOURCE]."
)
@click.option("--stream", default=None, help="Stream id, e.g. cam1 [env RTAI_STREAM].")
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--max-fps", type=float, default=None, help="Frames per second to sample (default 30).")
@click.option("--batch-size", type=int, default=None, help="Frames per job (default 4).")
@click.option("--imgsz", type=int, default=None, help="Long side frames are resized to (default 320).")
@click.option("--model", default=None, help="Model workers use for this stream (default rtai-shapes).")
@click.option("--conf", type=float, default=None, help="Confidence threshold (default 0.25).")
@click.option("--encoding", type=click.Choice(["jpeg", "raw"]), default=None, help="Frame encoding (jpeg).")
@click.option("--jpeg-quality", type=int, default=None, help="JPEG quality 10-100 (default 90).")
@click.option("--queue-bound", type=int, default=None, help="Batches queued before new ones are dropped.")
@click.option(
    "--max-batch-wait-ms", type=float, default=None, help="A partly filled batch leaves after this (default 0)."
)
@click.option(
    "--credit-flow/--no-credit-flow",
    default=None,
    help="Sample only while the stream has room: about one queued batch per worker (default on).",
)
@click.option(
    "--fresh-batches/--no-fresh-batches",
    default=None,
    help="While the stream has no room, the waiting batch takes each new frame in place of its own (default on).",
)
@click.option("--loop/--no-loop", default=None, help="Loop a video file.")
@click.option("--half/--no-half", default=None, help="FP16 for this stream on CUDA workers (default: the worker's).")
@click.option(
    "--decode",
    type=click.Choice(DECODES),
    default=None,
    help="Video decode: auto-cpu (default: PyAV from 1280x720 up, OpenCV below), cpu (OpenCV), pyav "
    "(converts straight to the size sent: for HD and 4K), keyframes (PyAV, keyframes only), vaapi (PyAV "
    "on VAAPI, else the CPU), nvdec (NVIDIA GPU), auto (NVDEC where available, else auto-cpu) [env RTAI_DECODE].",
)
@click.option(
    "--motion",
    is_flag=True,
    help="Motion gating: send a sampled frame to inference only when something moved or objects are in view "
    "(held frames counted skipped_static; thresholds in analytics_settings.motion).",
)
@click.option(
    "--motion-mask",
    "motion_masks",
    multiple=True,
    help="x1,y1,x2,y2: a normalized rectangle motion gating ignores, e.g. a clock overlay "
    "(repeatable; implies --motion).",
)
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--max-reconnects", type=int, default=None, help="Give up (state error) after N failed opens.")
@click.option("--max-streams", type=int, default=None, help="Daemon mode: most streams this process runs.")
@click.option(
    "--streams-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Daemon mode: declare the streams of this YAML camera list first.",
)
def producer(max_streams: int | None, streams_file: Path | None, **flags: object) -> None:
    """Decode a video source and feed its frames to the fleet.

    Without --source (and RTAI_SOURCE), run as a daemon: claim streams declared with `rtai stream
    add` or the REST API, and take over the streams of producer daemons that die.
    """
    if flags["source"] is None and env_value("source") is None:
        _daemon(flags.get("redis_url"), max_streams, streams_file)  # type: ignore[arg-type]
        return
    motion = motion_flags(bool(flags.pop("motion")), flags.pop("motion_masks"))  # type: ignore[arg-type]
    if motion is not None:
        flags["analytics"] = {"motion": motion}
    settings = build(ProducerSettings, **flags)
    from common.redis_client import connect  # noqa: PLC0415
    from common.shards import Shards  # noqa: PLC0415

    from .runner import StreamProducer  # noqa: PLC0415

    set_title(f"rtai-producer:{settings.stream}")
    # The shard that holds the stream (the only one, unless the URL names several); fails fast on a wrong URL.
    client = connect(Shards.from_url(settings.redis_url).url_for(settings.stream))
    prod = StreamProducer(settings, client=client)

    def _stop(_signum: int, _frame: object) -> None:
        prod.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    baseline = _produced(prod.client, settings.stream)
    prod.run()
    summary = _summary(prod.client, settings.stream, prod.source.state.value, prod.source.reason)
    now = _produced(prod.client, settings.stream)
    if baseline is not None and now is not None and baseline + prod.sink.counted > now:
        lost = baseline + prod.sink.counted - now
        summary += (
            f"; Redis lost {lost} of the {prod.sink.counted} frames this producer counted (acknowledged "
            "writes that did not survive a restart from empty or a failover)"
        )
    click.echo(summary, err=True)
    sys.exit(EXIT_SOURCE if prod.source.state == StreamState.ERROR else EXIT_OK)


def motion_flags(motion: bool, masks: tuple[str, ...]) -> dict[str, object] | None:
    """--motion and --motion-mask as an analytics `motion` map (None: gating off)."""
    from common.analytics_settings import motion_map  # noqa: PLC0415

    try:
        return motion_map(motion, masks)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--motion-mask") from exc


def _produced(client: object, stream: str) -> int | None:
    """The stream's `produced` counter now (None when Redis cannot say)."""
    from common import ledger  # noqa: PLC0415

    try:
        return int(ledger.read(client, stream)[ledger.PRODUCED])  # type: ignore[arg-type]
    except redis.RedisError:
        return None


def _summary(client: object, stream: str, state: str, reason: str) -> str:
    """What the stream's ledger says, in the ledger's own words (frames, not batches)."""
    from common import ledger  # noqa: PLC0415

    try:
        counts = ledger.read(client, stream)  # type: ignore[arg-type]
    except redis.RedisError as exc:
        return f"stream {stream}: final state {state}; its ledger is unreadable ({exc})"
    drops = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in counts.items() if k.startswith("dropped_") and v)
    return (
        f"stream {stream}: {counts['produced']} frames produced, {counts['published']} published, "
        f"{ledger.dropped(counts)} dropped{f' ({drops})' if drops else ''}, {counts['failed']} failed, "
        + (f"{counts['skipped_static']} skipped static (motion gating), " if counts["skipped_static"] else "")
        + f"{counts['in_flight']} in flight; final state {state}"
        + (f" ({reason})" if reason else "")
    )


def _daemon(url: str | None, max_streams: int | None, streams_file: Path | None) -> None:
    from common import desired  # noqa: PLC0415
    from common.redis_client import connect, wait_until_up  # noqa: PLC0415

    from .daemon import ProducerDaemon  # noqa: PLC0415

    # A wrong URL for the home shard (the desired state and claims) fails fast, saying why; another
    # shard that does not answer stops only its own streams (the daemon runs the others meanwhile).
    connect(redis_url(url).split()[0]).close()
    daemon = ProducerDaemon(redis_url(url), max_streams=max_streams)
    set_title("rtai-producer-daemon")
    if streams_file is not None:
        if streams_file.is_file():
            client = daemon.client
            wait_until_up(client, what="producer daemon")
            data_for = daemon.shards.for_stream if daemon.shards.sharded else None
            declared, marker = desired.declare_file(client, streams_file, daemon.redis_url, data_for=data_for)
            daemon.watch_file(streams_file, marker)
            click.echo(f"declared {len(declared)} stream(s) from {streams_file}", err=True)
        else:
            click.echo(f"no camera list at {streams_file}; claiming declared streams only", err=True)

    def _stop(_signum: int, _frame: object) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    daemon.run()
